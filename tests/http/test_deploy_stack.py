"""The systemd recipe (deploy/systemd/) works as shipped: its units' commands, run as systemd
would run them (paths moved into a temporary folder, free ports), start Redis, the shim with
two processes and deploy/nginx-proxy.conf in front; through nginx, ids carry the public URL,
both processes serve, fresh processes answer a second pass from Redis without asking the
backend, `systemctl reload` (ExecReload: SIGHUP) replaces the workers with no failed request,
and `systemctl stop` (KillSignal to the main process only) stops them all. The units pass
`systemd-analyze verify`, and the site's optional proxy_cache keys answers by public host."""

from __future__ import annotations

import json
import os
import re
import shlex
import signal
import subprocess
import sys
import threading
import time
from collections.abc import Iterator
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass, field
from pathlib import Path

import pytest
import yaml
from PIL import Image

from iiif_shim.config.settings import Settings, parse_settings
from iiif_shim.process.supervisor import KILL_GRACE
from tests.http.test_deploy import UPSTREAM, ask, nginx_with
from tests.support import ROOT, Process, Response, free_port, need_tool, nginx_config

UNITS = ROOT / "deploy" / "systemd"
# the secrets the recipe's credentials hold here (its units' LoadCredential=)
REDIS_PASSWORD = "stack-redis/pass+word=5e8c1a"  # as openssl rand -base64 makes them
PURGE_TOKEN = "stack-purge-token-93d0b7f4"
SITE = ROOT / "deploy" / "nginx-proxy.conf"
PROCESSES = 2
# quadrants of the master the backend serves: red, green / blue, white
COLOURS = {(0, 0): (255, 0, 0), (1, 0): (0, 255, 0), (0, 1): (0, 0, 255), (1, 1): (255,) * 3}
MASTER_SIZE = (1600, 1200)

Unit = dict[str, dict[str, list[str]]]


def read_unit(path: Path) -> Unit:
    """A unit file's settings, section -> key -> values in order (keys may repeat)."""
    unit: Unit = {}
    section: dict[str, list[str]] | None = None
    for raw in path.read_text().splitlines():
        line = raw.strip()
        if not line or line.startswith(("#", ";")):
            continue
        if line.startswith("["):
            section = unit.setdefault(line.strip("[]"), {})
            continue
        assert section is not None and "=" in line, f"{path.name}: {raw!r}"
        assert not line.endswith("\\"), f"{path.name}: continued lines are not read here"
        key, value = line.split("=", 1)
        section.setdefault(key.strip(), []).append(value.strip())
    return unit


def one(unit: Unit, key: str) -> str:
    (value,) = unit["Service"][key]
    return value


@dataclass
class Host:
    """Where this machine's copy of the recipe lives: the paths and ports the units name,
    moved into a temporary folder and onto free ports."""

    root: Path
    redis_port: int = field(default_factory=free_port)
    shim_port: int = field(default_factory=free_port)

    def moved(self, text: str) -> str:
        shim = Path(sys.executable).with_name("iiif-shim")
        assert shim.exists(), shim
        for old, new in (
            ("/opt/iiif-shim/.venv/bin/iiif-shim", str(shim)),
            ("/opt/iiif-shim", str(self.root / "opt")),
            ("/etc/iiif-shim/", f"{self.root}/etc/"),
            ("/run/iiif-shim-redis", str(self.root / "run")),
            ("${CREDENTIALS_DIRECTORY}", str(self.credentials)),
            ("/usr/bin/redis-server", need_tool("redis-server", "/usr/bin/redis-server")),
            ("--port 6379", f"--port {self.redis_port}"),
            (f"--processes {shipped_processes()}", f"--processes {PROCESSES}"),
        ):
            text = text.replace(old, new)
        return text

    def command(self, line: str, mainpid: int | None = None) -> list[str]:
        """An Exec line as systemd runs it: no prefix characters, $MAINPID the main process,
        ${CREDENTIALS_DIRECTORY} the unit's credentials, the rest split with shell-like quoting
        ("" is an empty argument)."""
        assert line[:1] not in "-@:+!", line
        if mainpid is not None:
            line = line.replace("$MAINPID", str(mainpid))
        line = self.moved(line)  # ${CREDENTIALS_DIRECTORY} too
        assert "$" not in line, line
        return shlex.split(line)

    @property
    def credentials(self) -> Path:
        """Where systemd would put the units' credentials ($CREDENTIALS_DIRECTORY)."""
        return self.root / "credentials"

    def write_credentials(self) -> None:
        """The files the recipe asks for in /etc/iiif-shim/credentials/ (moved)."""
        folder = Path(self.moved("/etc/iiif-shim/credentials"))
        folder.mkdir(parents=True, exist_ok=True)
        (folder / "redis_password").write_text(f"{REDIS_PASSWORD}\n")
        (folder / "redis.conf").write_text(f"requirepass {REDIS_PASSWORD}\n")
        (folder / "purge_token").write_text(PURGE_TOKEN + "\n")

    def environment(self, unit: Unit) -> dict[str, str]:
        """The unit's Environment=, and its LoadCredential= files copied to
        $CREDENTIALS_DIRECTORY as systemd does (a missing one fails the unit)."""
        pairs = (self.moved(v).split("=", 1) for v in unit["Service"].get("Environment", []))
        env = {key: value for key, value in pairs}
        loaded = unit["Service"].get("LoadCredential", [])
        if loaded:
            self.credentials.mkdir(exist_ok=True)
            for line in loaded:
                name, source = line.split(":", 1)
                target = self.credentials / name
                target.write_bytes(Path(self.moved(source)).read_bytes())
                target.chmod(0o400)
            env["CREDENTIALS_DIRECTORY"] = str(self.credentials)
        return env

    def workdir(self, unit: Unit) -> Path:
        path = Path(self.moved(one(unit, "WorkingDirectory")))
        assert self.root in path.parents
        path.mkdir(parents=True, exist_ok=True)
        return path


def shipped_processes() -> int:
    exec_start = one(read_unit(UNITS / "iiif-shim.service"), "ExecStart")
    found = re.search(r"--processes (\d+)", exec_start)
    assert found, exec_start
    return int(found.group(1))


def substituted(text: str, pairs: dict[str, str]) -> str:
    for old, new in pairs.items():
        assert text.count(old) == 1, old
        text = text.replace(old, new)
    return text


def make_master(folder: Path) -> Path:
    folder.mkdir(parents=True, exist_ok=True)
    width, height = MASTER_SIZE
    im = Image.new("RGB", MASTER_SIZE)
    for (col, row), colour in COLOURS.items():
        box = (col * width // 2, row * height // 2, (col + 1) * width // 2, (row + 1) * height // 2)
        im.paste(colour, box)
    for name in ("stack.png", "other.png"):
        im.save(folder / name)
    return folder


def children(pid: int) -> set[int]:
    found = set()
    for stat in Path("/proc").glob("[0-9]*/stat"):
        try:
            fields = stat.read_text().rsplit(")", 1)[1].split()
        except OSError:
            continue
        if int(fields[1]) == pid:
            found.add(int(stat.parent.name))
    return found


def sockets(port: int, state: str) -> set[str]:
    """Inodes of this machine's IPv4 TCP sockets with local port ``port`` in ``state``
    (0A: listening, 01: established)."""
    found = set()
    for line in Path("/proc/net/tcp").read_text().splitlines()[1:]:
        fields = line.split()
        if int(fields[1].rsplit(":", 1)[1], 16) == port and fields[3] == state:
            found.add(fields[9])
    return found


def holders(pids: set[int], inodes: set[str]) -> set[int]:
    """The processes among ``pids`` holding one of the sockets ``inodes``."""
    wanted = {f"socket:[{inode}]" for inode in inodes}
    found = set()
    for pid in pids:
        try:
            fds = list(Path(f"/proc/{pid}/fd").iterdir())
        except OSError:
            continue
        for fd in fds:
            try:
                if os.readlink(fd) in wanted:
                    found.add(pid)
                    break
            except OSError:
                continue
    return found


def redis_stat(port: int, name: str) -> int:
    cli = need_tool("redis-cli", "/usr/bin/redis-cli")
    done = subprocess.run(
        [cli, "-h", "127.0.0.1", "-p", str(port), "INFO", "stats"],
        capture_output=True,
        text=True,
        timeout=10,
        check=True,
        env={**os.environ, "REDISCLI_AUTH": REDIS_PASSWORD},
    )
    found = re.search(rf"^{name}:(\d+)", done.stdout, re.M)
    assert found, done.stdout
    return int(found.group(1))


@dataclass
class Stack:
    host: Host
    redis: Process
    shim: Process
    nginx: Process
    backend: Process
    units: dict[str, Unit]

    @property
    def mainpid(self) -> int:
        return self.shim.proc.pid

    def workers(self) -> set[int]:
        """The main process's children that hold the shim's listening socket."""
        return holders(children(self.mainpid), sockets(self.host.shim_port, "0A"))

    def backend_requests(self) -> list[str]:
        log = self.backend.log.parent / "nginx-access.log"
        return [line for line in log.read_text().splitlines() if "/masters/" in line]

    def reload(self) -> None:
        """`systemctl reload iiif-shim`: its ExecReload, run to completion."""
        exec_reload = one(self.units["iiif-shim"], "ExecReload")
        command = self.host.command(exec_reload, mainpid=self.mainpid)
        subprocess.run(command, check=True, timeout=10)

    def wait_for_new_workers(self, old: set[int], timeout: float = 60) -> set[int]:
        deadline = time.monotonic() + timeout
        while time.monotonic() < deadline:
            workers = self.workers()
            gone = not any(Path(f"/proc/{pid}").exists() for pid in old)  # exited and reaped
            if len(workers) == PROCESSES and not workers & old and gone:
                return workers
            time.sleep(0.1)
        pytest.fail(
            f"workers {old} not replaced: now {self.workers()}\n{self.shim.log.read_text()}"
        )


@pytest.fixture(scope="module")
def stack(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Stack]:
    root = tmp_path_factory.mktemp("systemd")
    host = Host(root)
    units = {
        name: read_unit(UNITS / f"{name}.service") for name in ("iiif-shim-redis", "iiif-shim")
    }
    started: list[Process] = []
    try:
        # the legacy image server the shipped config names (http://127.0.0.1:8080/masters/)
        masters = make_master(root / "www" / "masters")
        workdir = root / "backend"
        workdir.mkdir()
        backend_port = free_port()
        conf = nginx_config(masters.parent, backend_port, workdir)
        nginx = need_tool("nginx", "/usr/sbin/nginx")
        backend = Process(
            [nginx, "-c", str(conf), "-p", str(workdir)], backend_port, workdir / "out.log"
        )
        started.append(backend)

        host.write_credentials()
        redis_unit = units["iiif-shim-redis"]
        redis = Process(
            host.command(one(redis_unit, "ExecStart")),
            host.redis_port,
            root / "redis.log",
            env=host.environment(redis_unit),
            cwd=host.workdir(redis_unit),
        )
        started.append(redis)

        (root / "etc").mkdir(exist_ok=True)  # the credentials are in it already
        config = substituted(
            (UNITS / "shim.yaml").read_text(),
            {
                "port: 8182": f"port: {host.shim_port}",
                "redis://127.0.0.1:6379/": f"redis://127.0.0.1:{host.redis_port}/",
                "http://127.0.0.1:8080/masters/": f"http://127.0.0.1:{backend_port}/masters/",
            },
        )
        (root / "etc" / "shim.yaml").write_text(config)
        shim_unit = units["iiif-shim"]
        env = host.environment(shim_unit)
        cwd = host.workdir(shim_unit)
        for line in shim_unit["Service"].get("ExecStartPre", []):
            done = subprocess.run(
                host.command(line),
                env={**os.environ, **env},
                cwd=cwd,
                capture_output=True,
                text=True,
                timeout=60,
            )
            assert done.returncode == 0, done.stdout + done.stderr
            assert "warning" not in done.stdout + done.stderr, done.stdout + done.stderr
        shim = Process(
            host.command(one(shim_unit, "ExecStart")),
            host.shim_port,
            root / "shim.log",
            env=env,
            cwd=cwd,
        )
        started.append(shim)

        site = substituted(SITE.read_text(), {UPSTREAM: f"server 127.0.0.1:{host.shim_port};"})
        (root / "nginx").mkdir()
        front = nginx_with(site, root / "nginx")
        started.append(front)
        yield Stack(host, redis, shim, front, backend, units)
    finally:
        for proc in reversed(started):
            proc.stop()


def tile_urls(name: str) -> list[str]:
    base = f"/images/3/{name}"
    urls = [f"{base}/info.json", f"{base}/full/200,/0/default.png"]
    for x in range(0, MASTER_SIZE[0], 512):
        for y in range(0, MASTER_SIZE[1], 512):
            w, h = min(512, MASTER_SIZE[0] - x), min(512, MASTER_SIZE[1] - y)
            urls.append(f"{base}/{x},{y},{w},{h}/{w},/0/default.png")
    return urls


def check_answer(url: str, resp: Response, port: int) -> None:
    assert resp.status == 200, (url, resp.status, resp.text[:300])
    if url.endswith("/info.json"):
        info = json.loads(resp.body)
        assert info["id"] == f"http://127.0.0.1:{port}{url.removesuffix('/info.json')}"
        assert (info["width"], info["height"]) == MASTER_SIZE
        return
    pixels = resp.image().convert("RGB")
    region = url.split("/")[4]
    if region == "full":
        assert pixels.size == (200, 150)
        x, y, w, h = 0, 0, *MASTER_SIZE
    else:
        x, y, w, h = (int(v) for v in region.split(","))
        assert pixels.size == (w, h)
    # the colour at the middle of each corner of the region, by its place in the master
    for fx, fy in ((0.1, 0.1), (0.9, 0.1), (0.1, 0.9), (0.9, 0.9)):
        mx, my = x + fx * w, y + fy * h
        quadrant = (int(mx >= MASTER_SIZE[0] / 2), int(my >= MASTER_SIZE[1] / 2))
        seen = pixels.getpixel((int(fx * pixels.width), int(fy * pixels.height)))
        assert seen == COLOURS[quadrant], (url, fx, fy, seen)


def sweep(stack: Stack, urls: list[str], clients: int = 4) -> None:
    with ThreadPoolExecutor(clients) as pool:
        answers = list(pool.map(lambda url: ask(stack.nginx.port, url), urls))
    for url, resp in zip(urls, answers, strict=True):
        check_answer(url, resp, stack.nginx.port)


def test_the_units_pass_systemd_analyze_verify(tmp_path: Path) -> None:
    """The units as shipped, their paths moved to ones that exist here (verify checks that
    every command is executable)."""
    analyze = need_tool("systemd-analyze", "/usr/bin/systemd-analyze")
    paths = []
    for name in ("iiif-shim-redis.service", "iiif-shim.service"):
        path = tmp_path / name
        path.write_text(Host(tmp_path).moved((UNITS / name).read_text()))
        paths.append(str(path))
    done = subprocess.run([analyze, "verify", *paths], capture_output=True, text=True, timeout=60)
    assert done.returncode == 0 and done.stdout == done.stderr == "", done.stdout + done.stderr
    # and it reports what systemd would refuse or ignore
    bad = tmp_path / "iiif-shim.service"
    bad.write_text(bad.read_text().replace("KillMode=mixed", "KilMode=mixed"))
    done = subprocess.run([analyze, "verify", str(bad)], capture_output=True, text=True, timeout=60)
    assert "Unknown key" in done.stderr


def shipped_settings(tmp_path: Path) -> Settings:
    """deploy/systemd/shim.yaml as the unit reads it, with its credentials."""
    host = Host(tmp_path)
    host.write_credentials()
    env = host.environment(read_unit(UNITS / "iiif-shim.service"))
    config = UNITS / "shim.yaml"
    return parse_settings(yaml.safe_load(config.read_text()), config.parent, environ=env)


def test_the_units_keep_their_secrets_in_credentials(tmp_path: Path) -> None:
    """The Redis password and the purge token reach the shim and Redis through LoadCredential=
    files, never through the units or shim.yaml."""
    shim = read_unit(UNITS / "iiif-shim.service")
    redis = read_unit(UNITS / "iiif-shim-redis.service")
    shipped = (UNITS / "shim.yaml").read_text()
    assert "purge_token_file: ${CREDENTIALS_DIRECTORY}/purge_token" in shipped
    assert "redis_password_file: ${CREDENTIALS_DIRECTORY}/redis_password" in shipped
    assert {line.split(":")[0] for line in shim["Service"]["LoadCredential"]} == {
        "redis_password",
        "purge_token",
    }
    assert [line.split(":")[0] for line in redis["Service"]["LoadCredential"]] == ["redis.conf"]
    assert "--include ${CREDENTIALS_DIRECTORY}/redis.conf" in one(redis, "ExecStart")
    settings = shipped_settings(tmp_path)
    assert settings.cache.purge_token == PURGE_TOKEN
    assert settings.cache.redis == "redis://127.0.0.1:6379/0"
    assert settings.cache.redis_password == REDIS_PASSWORD


def test_the_units_run_what_they_promise(tmp_path: Path) -> None:
    shim = read_unit(UNITS / "iiif-shim.service")
    redis = read_unit(UNITS / "iiif-shim-redis.service")
    assert one(shim, "ExecReload") == "/bin/kill -HUP $MAINPID"
    # SIGTERM to the supervisor only; it stops the workers, each finishing its requests
    assert one(shim, "KillMode") == "mixed" and one(shim, "KillSignal") == "SIGTERM"
    settings = shipped_settings(tmp_path)
    # the supervisor kills a worker still draining KILL_GRACE seconds after shutdown_timeout
    assert int(one(shim, "TimeoutStopSec")) > settings.server.shutdown_timeout + KILL_GRACE
    assert settings.server.trust_forwarded and settings.cache.redis
    # Wants, not Requires: stopping Redis must not stop the shim
    assert "iiif-shim-redis.service" in shim["Unit"]["Wants"][0]
    assert "Requires" not in shim["Unit"] and "BindsTo" not in shim["Unit"]
    # a cache: nothing saved, evicted rather than refused when full
    args = shlex.split(one(redis, "ExecStart"))
    assert args[args.index("--save") + 1] == "" and args[args.index("--appendonly") + 1] == "no"
    assert args[args.index("--maxmemory-policy") + 1] == "allkeys-lru"


def test_ids_and_pixels_through_nginx_carry_the_public_url(stack: Stack) -> None:
    sweep(stack, tile_urls("other.png"))
    base = ask(stack.nginx.port, "/images/3/other.png")
    assert (
        base.header("Location")
        == f"http://127.0.0.1:{stack.nginx.port}/images/3/other.png/info.json"
    )


def test_both_processes_serve(stack: Stack) -> None:
    """nginx's connections to the shim, kept alive after a burst of concurrent requests, are
    held by both workers: the kernel spreads them over the processes sharing the port. More
    concurrent requests each round (each beyond those kept alive opens a new connection),
    within a bounded number of rounds."""
    workers = stack.workers()
    assert len(workers) == PROCESSES, (workers, children(stack.mainpid))
    urls = tile_urls("other.png")
    seen: set[int] = set()
    for clients in (8, 16, 24, 32, 32, 32):
        with ThreadPoolExecutor(clients) as pool:
            answers = list(
                pool.map(lambda i: ask(stack.nginx.port, urls[i % len(urls)]), range(clients))
            )
        assert [a.status for a in answers] == [200] * clients
        seen |= holders(workers, sockets(stack.host.shim_port, "01"))
        if seen == workers:
            break
    assert seen == workers, f"only {seen} of {workers} held nginx's connections"


def test_fresh_processes_answer_a_second_pass_from_redis(stack: Stack) -> None:
    urls = tile_urls("stack.png")
    before = len(stack.backend_requests())
    sweep(stack, urls)
    first = len(stack.backend_requests())
    assert first > before  # the first pass asked the backend
    # new processes, with empty memory: what they know, they know from Redis
    old = stack.workers()
    stack.reload()
    stack.wait_for_new_workers(old)
    hits = redis_stat(stack.host.redis_port, "keyspace_hits")
    sweep(stack, urls)
    assert len(stack.backend_requests()) == first, stack.backend_requests()[first:]
    assert redis_stat(stack.host.redis_port, "keyspace_hits") - hits >= len(urls)


def test_reload_replaces_the_workers_with_no_failed_request(stack: Stack) -> None:
    urls = tile_urls("other.png") + tile_urls("stack.png")
    failures: list[str] = []
    done: list[int] = []
    stop = threading.Event()

    def load() -> None:
        i = 0
        while not stop.is_set() and i < 5000:
            url = urls[i % len(urls)]
            try:
                resp = ask(stack.nginx.port, url)
                if resp.status != 200:
                    failures.append(f"{url}: {resp.status} {resp.text[:200]}")
            except OSError as exc:
                failures.append(f"{url}: {exc!r}")
            done.append(1)
            i += 1

    clients = [threading.Thread(target=load) for _ in range(3)]
    for client in clients:
        client.start()
    try:
        while len(done) < 30 and all(c.is_alive() for c in clients):
            time.sleep(0.05)
        old = stack.workers()
        mainpid = stack.mainpid
        stack.reload()
        new = stack.wait_for_new_workers(old)
        during = len(done)
        while len(done) < during + 30 and all(c.is_alive() for c in clients):
            time.sleep(0.05)
    finally:
        stop.set()
        for client in clients:
            client.join(60)
    assert failures == []
    assert len(done) >= 60 and len(new) == PROCESSES
    assert stack.shim.proc.poll() is None and stack.mainpid == mainpid  # the same service


def test_the_optional_proxy_cache_keys_answers_by_public_host(stack: Stack, tmp_path: Path) -> None:
    """The site with its proxy_cache lines uncommented: a second request is nginx's hit, and
    another public host gets its own ids, never the first host's."""
    site = SITE.read_text()
    enabled = re.sub(
        r"^(\s*)# ((proxy_cache\w*|proxy_no_cache|proxy_hide_header|add_header) .*)$",
        r"\1\2",
        site,
        flags=re.M,
    )
    assert enabled.count("proxy_cache ") >= 1 and "\n# proxy_cache_path" not in enabled
    assert re.search(r"^\s*proxy_no_cache \$iiif_not_cached;", enabled, re.M)
    enabled = substituted(enabled, {"/var/cache/nginx/iiif": str(tmp_path / "cache")})
    enabled = substituted(enabled, {UPSTREAM: f"server 127.0.0.1:{stack.host.shim_port};"})
    (tmp_path / "nginx").mkdir()
    proc = nginx_with(enabled, tmp_path / "nginx")
    try:
        path = "/images/3/other.png/info.json"

        def info(
            host: str, rid: str, accept: str | None = None
        ) -> tuple[Response, dict[str, object]]:
            headers = {"X-Request-ID": rid, **({"Accept": accept} if accept else {})}
            resp = ask(proc.port, path, host=host, headers=headers)
            assert resp.status == 200 and resp.header("X-Request-ID") == rid, resp.headers
            return resp, json.loads(resp.body)

        first, doc = info("a.example.org", "one")
        assert first.header("X-Cache-Status") == "MISS"
        again, doc_again = info("a.example.org", "two")
        assert again.header("X-Cache-Status") == "HIT" and doc_again == doc
        assert doc["id"] == "http://a.example.org/images/3/other.png"
        other, other_doc = info("b.example.org:8080", "three")
        assert other.header("X-Cache-Status") == "MISS"
        assert other_doc["id"] == "http://b.example.org:8080/images/3/other.png"
        # the shim's Vary: Accept keeps JSON-LD and plain JSON apart
        plain, _ = info("a.example.org", "four", accept="application/json")
        assert (plain.header("Content-Type") or "").startswith("application/json")
        ld = 'application/ld+json;profile="http://iiif.io/api/image/3/context.json"'
        linked, _ = info("a.example.org", "five", accept=ld)
        assert (linked.header("Content-Type") or "").startswith("application/ld+json")
    finally:
        proc.stop()


def test_stop_ends_every_process(stack: Stack) -> None:
    """`systemctl stop`: KillSignal to the main process only (KillMode=mixed); the supervisor
    stops its workers and exits 0 well within TimeoutStopSec. (Runs last: it ends the stack.)"""
    unit = stack.units["iiif-shim"]
    workers = stack.workers()
    assert len(workers) == PROCESSES
    stack.shim.proc.send_signal(getattr(signal, one(unit, "KillSignal")))
    assert stack.shim.proc.wait(int(one(unit, "TimeoutStopSec"))) == 0
    assert not any(Path(f"/proc/{pid}").exists() for pid in workers), workers
    assert "Traceback" not in stack.shim.log.read_text()
