"""Test helpers: real processes on 127.0.0.1, a raw HTTP client, the test images.

Tests that need a real server start it here on a free port and stop it afterwards. A missing
server or tool is a test failure (never a skip): ``bash deploy/test.sh`` installs them all.
"""

from __future__ import annotations

import http.client
import io
import os
import shutil
import socket
import subprocess
import sys
import textwrap
import time
from collections.abc import Callable
from dataclasses import dataclass
from email.message import Message
from pathlib import Path
from urllib.parse import unquote_to_bytes

import pytest
from PIL import Image

ROOT = Path(__file__).resolve().parent.parent
SHARED_FIXTURES = ROOT.parent / "shared" / "fixtures"
VALIDATOR_ID = "67352ccc-d1b0-11e1-89ae-279075081939"
BUNDLED = ROOT / "iiif_shim" / "defaults" / "images"


def need_tool(name: str, path: str | None = None) -> str:
    """The path of an external program the tests need; its absence fails the test."""
    found = path if path and os.access(path, os.X_OK) else shutil.which(name)
    if not found:
        pytest.fail(f"{name} is not installed: run `bash deploy/test.sh`, which installs it")
    return found


def need_root(what: str) -> None:
    """Skip a test that only root can set up (a device node, an immutable folder) when not
    root; in CI (``CI=true``, run as root) that is a failure, not a skip."""
    if os.geteuid() != 0:
        if os.environ.get("CI") == "true":
            pytest.fail(f"{what} needs root, and CI runs as root")
        pytest.skip(f"{what} needs root")


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


def wait_for_port(port: int, proc: subprocess.Popen[bytes], log: Path, timeout: float = 20) -> None:
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        if proc.poll() is not None:
            raise RuntimeError(f"process exited with {proc.returncode}:\n{log.read_text()}")
        try:
            with socket.create_connection(("127.0.0.1", port), timeout=0.5):
                return
        except OSError:
            time.sleep(0.05)
    proc.kill()
    raise RuntimeError(f"nothing listening on {port} after {timeout}s:\n{log.read_text()}")


@dataclass
class Response:
    status: int
    headers: Message
    body: bytes

    def header(self, name: str) -> str | None:
        return self.headers.get(name)

    def image(self) -> Image.Image:
        im = Image.open(io.BytesIO(self.body))
        im.load()
        return im

    @property
    def text(self) -> str:
        return self.body.decode("utf-8", "replace")


def request(
    port: int,
    path: str,
    method: str = "GET",
    headers: dict[str, str] | None = None,
    timeout: float = 30,
) -> Response:
    """Send ``path`` exactly as given (no re-encoding), return status, headers and body."""
    conn = http.client.HTTPConnection("127.0.0.1", port, timeout=timeout)
    try:
        conn.putrequest(method, path, skip_accept_encoding=True)
        for k, v in (headers or {}).items():
            conn.putheader(k, v)
        conn.endheaders()
        resp = conn.getresponse()
        body = resp.read()
        return Response(resp.status, resp.headers, body)
    finally:
        conn.close()


class Process:
    """A server process started for the tests, with its log kept for failure messages."""

    def __init__(
        self,
        args: list[str],
        port: int,
        log: Path,
        env: dict[str, str] | None = None,
        cwd: Path | None = None,
        clean_env: bool = False,
    ) -> None:
        self.port = port
        self.log = log
        self._log_file = log.open("wb")
        self.proc = subprocess.Popen(
            args,
            stdout=self._log_file,
            stderr=subprocess.STDOUT,
            env=dict(env or {}) if clean_env else {**os.environ, **(env or {})},
            cwd=cwd,
        )
        wait_for_port(port, self.proc, log)

    def stop(self) -> None:
        if self.proc.poll() is None:
            self.proc.terminate()
            try:
                self.proc.wait(10)
            except subprocess.TimeoutExpired:
                self.proc.kill()
                self.proc.wait(5)
        self._log_file.close()

    def get(self, path: str, **kwargs: object) -> Response:
        return request(self.port, path, **kwargs)  # type: ignore[arg-type]


def wait_until(ok: Callable[[], bool], what: str, limit: float = 30) -> None:
    """Wait for a condition (polled every 20 ms, never a fixed pause); fails the test, naming
    ``what``, if it does not hold within ``limit`` seconds."""
    deadline = time.monotonic() + limit
    while not ok():
        if time.monotonic() > deadline:
            pytest.fail(f"not {what} after {limit}s")
        time.sleep(0.02)


def refused(port: int) -> bool:
    """Whether nothing accepts connections on ``port`` any more."""
    try:
        socket.create_connection(("127.0.0.1", port), timeout=1).close()
    except OSError:
        return True
    return False


def nginx_resolves(path: str) -> str:
    """The path nginx serves for a request path: percent-decoded once, ``//`` merged, dot
    segments removed (``..`` above the root stays at the root), a trailing ``/`` kept. The
    tests' own model, written from nginx's behaviour, never the shim's code."""
    decoded = unquote_to_bytes(path).decode("utf-8", "replace")
    out: list[str] = []
    for segment in decoded.split("/"):
        if segment in ("", "."):
            continue
        if segment == "..":
            if out:
                out.pop()
            continue
        out.append(segment)
    trailing = decoded.endswith("/") and bool(out)
    return "/" + "/".join(out) + ("/" if trailing else "")


def log_lines(log: Path, needle: str, count: int = 1, timeout: float = 10) -> list[str]:
    """Lines of a server's access log containing ``needle``, once there are at least ``count``
    of them: servers log after answering (lighttpd in batches), so the lines a test caused may
    come a moment later. Fails the test if they do not come within ``timeout``."""
    lines: list[str] = []

    def enough() -> bool:
        lines[:] = [line for line in log.read_text().splitlines() if needle in line]
        return len(lines) >= count

    wait_until(enough, f"{count} lines with {needle!r} in {log.name}", timeout)
    return lines


def start_shim(config: Path, tmp: Path, *extra: str, env: dict[str, str] | None = None) -> Process:
    port = free_port()
    log = tmp / f"shim-{port}.log"
    args = [
        sys.executable,
        "-m",
        "iiif_shim",
        "serve",
        "--config",
        str(config),
        "--port",
        str(port),
        *(() if "--processes" in extra else ("--processes", "1")),  # one unless asked
        *extra,
    ]
    return Process(args, port, log, env=env)


def validator_image() -> Path:
    path = SHARED_FIXTURES / f"{VALIDATOR_ID}.png"
    return path if path.exists() else BUNDLED / f"{VALIDATOR_ID}.png"


def make_images(folder: Path) -> Path:
    """The test image set, written once per session."""
    folder.mkdir(parents=True, exist_ok=True)
    shutil.copy(validator_image(), folder / f"{VALIDATOR_ID}.png")
    shutil.copy(BUNDLED / "chart.jpg", folder / "chart.jpg")
    shutil.copy(BUNDLED / "rings.jp2", folder / "rings.jp2")
    # 300x200 quadrants: red, green / blue, white (the spec's example size)
    quad = Image.new("RGB", (300, 200), (255, 0, 0))
    quad.paste((0, 255, 0), (150, 0, 300, 100))
    quad.paste((0, 0, 255), (0, 100, 150, 200))
    quad.paste((255, 255, 255), (150, 100, 300, 200))
    quad.save(folder / "quad.png")
    quad.save(folder / "quad-tif.tif")
    gray = Image.linear_gradient("L").resize((400, 300))
    gray.save(folder / "gray.png")
    Image.new("RGBA", (120, 80), (0, 128, 0, 128)).save(folder / "alpha.png")
    Image.new("CMYK", (64, 48), (0, 255, 255, 0)).save(folder / "cmyk.jpg")
    Image.new("I;16", (50, 40), 40000).save(folder / "deep.png")
    (folder / "sub").mkdir(exist_ok=True)
    quad.save(folder / "sub" / "page 1.png")
    (folder / "not-an-image.jpg").write_text("<html>I am an error page</html>\n")
    (folder / "truncated.jpg").write_bytes((BUNDLED / "chart.jpg").read_bytes()[:5000])
    secret = folder.parent / f"{folder.name}-outside.png"
    quad.save(secret)
    (folder / "escape.png").symlink_to(secret)
    return folder


def write_config(path: Path, body: str) -> Path:
    path.write_text(textwrap.dedent(body))
    return path


def nginx_config(
    root: Path,
    port: int,
    workdir: Path,
    aliases: dict[str, Path] | None = None,
    extra: str = "",
) -> Path:
    more = extra
    extra = "".join(
        f"        location {url} {{ alias {path}/; }}\n" for url, path in (aliases or {}).items()
    )
    return nginx_main(
        workdir,
        f"""    access_log {workdir}/nginx-access.log;
    types {{ image/jpeg jpg; image/png png; image/tiff tif; image/jp2 jp2; }}
    default_type application/octet-stream;
    server {{
        listen 127.0.0.1:{port};
        root {root};
        location /broken/ {{ return 500; }}
{extra}{more}    }}
""",
    )


def nginx_main(
    workdir: Path, http: str, *, connections: int = 256, error_log: str = "nginx-error.log"
) -> Path:
    """``workdir/nginx.conf``: nginx in the foreground with its pid, error log and temporary
    folders in ``workdir`` (as root, its workers root too), and ``http`` (its access log,
    types, servers) as the body of the http block."""
    user = "user root;\n" if os.geteuid() == 0 else ""
    conf = workdir / "nginx.conf"
    conf.write_text(
        f"""{user}worker_processes 1;
daemon off;
pid {workdir}/nginx.pid;
error_log {workdir}/{error_log} warn;
events {{ worker_connections {connections}; }}
http {{
    client_body_temp_path {workdir}/tmp-body;
    proxy_temp_path {workdir}/tmp-proxy;
    fastcgi_temp_path {workdir}/tmp-fastcgi;
    uwsgi_temp_path {workdir}/tmp-uwsgi;
    scgi_temp_path {workdir}/tmp-scgi;
{http}}}
"""
    )
    return conf


def start_faulty(root: Path, workdir: Path) -> Process:
    """The misbehaving upstream of ``tests/faulty.py`` on a free port, serving ``root``."""
    port = free_port()
    args = [sys.executable, "-m", "tests.faulty", "--port", str(port), "--root", str(root)]
    return Process(args, port, workdir / "faulty.log", cwd=ROOT)


def start_redis(workdir: Path, port: int | None = None) -> Process:
    """A real redis-server on 127.0.0.1 (no persistence), for the shared cache tier."""
    binary = need_tool("redis-server", "/usr/bin/redis-server")
    port = port or free_port()
    workdir.mkdir(parents=True, exist_ok=True)
    args = [binary, "--bind", "127.0.0.1", "--port", str(port), "--save", "", "--appendonly", "no"]
    return Process([*args, "--dir", str(workdir)], port, workdir / f"redis-{port}.log")


def memory_of(pid: int) -> dict[str, int]:
    """VmRSS and VmHWM (its peak) of a running process, in bytes."""
    found = {}
    for line in Path(f"/proc/{pid}/status").read_text().splitlines():
        key, _, value = line.partition(":")
        if key in ("VmRSS", "VmHWM"):
            found[key] = int(value.split()[0]) * 1024
    if len(found) != 2:
        raise AssertionError(f"no VmRSS/VmHWM for process {pid}")
    return found


def peak_rss_mb(code: str) -> float:
    """Run ``code`` in a fresh interpreter; its peak resident memory in MB (VmHWM: that of
    its own memory, where getrusage's maxrss would also count the parent's before exec)."""
    probe = textwrap.dedent(code) + (
        "\nfrom pathlib import Path\n"
        "line = next(l for l in Path('/proc/self/status').read_text().splitlines()"
        " if l.startswith('VmHWM:'))\n"
        "print(int(line.split()[1]) / 1024)\n"
    )
    done = subprocess.run(
        [sys.executable, "-c", probe],
        capture_output=True,
        text=True,
        timeout=120,
        check=True,
        cwd=ROOT,
    )
    return float(done.stdout.strip().splitlines()[-1])
