"""Several processes on one port (``--processes 2``), over real sockets: both workers answer,
metrics are summed over them, SIGHUP replaces them one at a time without a failed request, a
bad file on SIGHUP changes nothing, a killed worker is replaced (with a backoff when it cannot
start), SIGTERM drains and exits 0, the access log cannot be forged, and a port in use is one
line."""

from __future__ import annotations

import http.server
import json
import os
import re
import signal
import socket
import subprocess
import sys
import threading
from collections.abc import Iterator
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path

import pytest

from tests.support import (
    Process,
    log_lines,
    refused,
    request,
    start_shim,
    wait_until,
    write_config,
)

SERVE = [sys.executable, "-m", "iiif_shim", "serve"]
TWO = ("--processes", "2")
HEALTH_COUNTER = 'iiif_shim_requests_total{backend="-",endpoint="health",status="200",version="-"}'


def _config(tmp: Path, images: Path, title: str = "first", server: str = "") -> Path:
    return write_config(
        tmp / "shim.yaml",
        f"""\
server:
  shutdown_timeout: 20
{server}
landing: {{title: "{title}"}}
backends:
  local: {{type: files, root: "{images}"}}
routes:
  - {{backend: local}}
""",
    )


@pytest.fixture(scope="module")
def pair(images: Path, tmp_path_factory: pytest.TempPathFactory) -> Iterator[Process]:
    tmp = tmp_path_factory.mktemp("processes")
    proc = start_shim(_config(tmp, images), tmp, *TWO)
    wait_until(lambda: len(_workers(proc.port)) == 2, "both workers answering")
    yield proc
    proc.stop()


def _health(port: int) -> dict[str, int]:
    answer = request(port, "/health", timeout=10)
    assert answer.status == 200
    process: dict[str, int] = json.loads(answer.body)["process"]
    return process


def _healths(port: int, count: int) -> list[dict[str, int]]:
    """``count`` answers of /health, each over a fresh connection, four at a time."""
    with ThreadPoolExecutor(4) as pool:
        return list(pool.map(lambda _: _health(port), range(count)))


def _workers(port: int) -> dict[int, int]:
    """Worker slot -> pid, as seen over 30 fresh connections."""
    return {p["worker"]: p["pid"] for p in _healths(port, 30)}


def _parent(pid: int) -> int:
    status = Path(f"/proc/{pid}/status").read_text()
    return int(re.search(r"^PPid:\s*(\d+)", status, re.M).group(1))  # type: ignore[union-attr]


def _metric(port: int, sample: str) -> float:
    text = request(port, "/metrics").text
    for line in text.splitlines():
        if line.startswith(sample + " "):
            return float(line.rsplit(" ", 1)[1])
    return 0.0


def _gone(pid: int) -> bool:
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return True
    return False


def test_both_workers_answer_with_their_own_pid(pair: Process) -> None:
    seen = _healths(pair.port, 40)
    assert {p["processes"] for p in seen} == {2}
    by_worker = {p["worker"]: p["pid"] for p in seen}
    assert set(by_worker) == {0, 1}
    assert len(set(by_worker.values())) == 2 and pair.proc.pid not in by_worker.values()
    for pid in by_worker.values():
        assert _parent(pid) == pair.proc.pid  # workers of the supervisor started by the test
    assert len({(p["worker"], p["pid"]) for p in seen}) == 2  # each slot has one pid


def test_metrics_are_summed_over_the_workers(pair: Process) -> None:
    before = _metric(pair.port, HEALTH_COUNTER)
    seen = _healths(pair.port, 40)
    served = {pid: sum(p["pid"] == pid for p in seen) for pid in {p["pid"] for p in seen}}
    assert len(served) == 2 and min(served.values()) >= 1, served  # both did part of it
    for _ in range(6):  # scrapes answered by either worker say the same
        assert _metric(pair.port, HEALTH_COUNTER) - before == 40
    assert _metric(pair.port, "iiif_shim_processes") == 2
    assert request(pair.port, "/iiif/3/quad/full/64,/0/default.png").status == 200
    text = request(pair.port, "/metrics").text
    assert 'iiif_shim_pillow_seconds_count{step="encode"}' in text
    assert "iiif_shim_client_connections " in text and "iiif_shim_image_jobs " in text


def _hammer(port: int, paths: list[str], stop: threading.Event, out: list[tuple[int, str]]) -> None:
    while not stop.is_set():
        for path in paths:
            try:
                answer = request(port, path, timeout=20)
                out.append((answer.status, answer.text if path == "/health" else ""))
            except OSError as exc:
                out.append((-1, repr(exc)))


def test_sighup_replaces_the_workers_one_at_a_time_without_a_failed_request(
    pair: Process, images: Path
) -> None:
    old = _workers(pair.port)
    config = pair.log.parent / "shim.yaml"  # written by _config
    reloads = pair.log.read_text().count("reloaded the configuration")
    stop, results = threading.Event(), list[tuple[int, str]]()
    paths = ["/iiif/3/quad/info.json", "/iiif/3/quad/full/90,/0/default.png", "/health", "/"]
    clients = [threading.Thread(target=_hammer, args=(pair.port, paths, stop, results))]
    clients += [threading.Thread(target=_hammer, args=(pair.port, paths[:1], stop, results))]
    for client in clients:
        client.start()
    try:
        _config(config.parent, images, title="second")
        pair.proc.send_signal(signal.SIGHUP)
        wait_until(
            lambda: pair.log.read_text().count("reloaded the configuration") > reloads,
            "reloaded",
        )
        wait_until(lambda: all(_gone(pid) for pid in old.values()), "the old workers gone")
        served = len(results)
        wait_until(lambda: len(results) >= served + 10, "some more requests, to the new workers")
    finally:
        stop.set()
        for client in clients:
            client.join(30)
    failed = [r for r in results if r[0] != 200]
    assert len(results) > 40 and not failed, failed[:5]
    new = _workers(pair.port)
    assert set(new) == {0, 1} and not set(new.values()) & set(old.values())
    pids = {json.loads(text)["process"]["pid"] for status, text in results if text}
    assert pids & set(old.values()) and pids & set(new.values())  # served by old, then new
    assert "<h1>second</h1>" in request(pair.port, "/").text


def test_a_bad_file_on_sighup_changes_nothing(pair: Process, images: Path) -> None:
    old = _workers(pair.port)
    config = pair.log.parent / "shim.yaml"  # written by _config
    title = re.search(r"<h1>(.*?)</h1>", request(pair.port, "/").text).group(1)  # type: ignore[union-attr]
    good = config.read_text()
    refused = pair.log.read_text().count("reload refused")
    config.write_text("backends: {local: {type: nope}}\nroutes: []\n")
    try:
        pair.proc.send_signal(signal.SIGHUP)
        wait_until(lambda: pair.log.read_text().count("reload refused") > refused, "refused")
    finally:
        config.write_text(good)
    assert "backends.local.type: unknown type 'nope'" in pair.log.read_text()
    # the refusal is logged once the supervisor has decided: no worker was or will be replaced
    assert _workers(pair.port) == old
    assert f"<h1>{title}</h1>" in request(pair.port, "/").text


def test_a_killed_worker_is_replaced(pair: Process) -> None:
    old = _workers(pair.port)
    os.kill(old[1], signal.SIGKILL)
    wait_until(lambda: _workers(pair.port).get(1) not in (None, old[1]), "worker 1 replaced")
    new = _workers(pair.port)
    assert new[0] == old[0] and _parent(new[1]) == pair.proc.pid
    assert "worker 1 killed by SIGKILL after" in pair.log.read_text()
    assert request(pair.port, "/iiif/3/quad/info.json").status == 200


def test_a_worker_that_cannot_start_is_retried_with_a_backoff(pair: Process) -> None:
    old = _workers(pair.port)
    config = pair.log.parent / "shim.yaml"  # written by _config
    good = config.read_text()
    log_before = len(pair.log.read_text())
    config.write_text("backends: {local: {type: nope}}\nroutes: []\n")  # new workers fail
    try:
        os.kill(old[0], signal.SIGKILL)
        wait_until(
            lambda: "starting another in 2s" in pair.log.read_text()[log_before:],
            "a second retry",
        )
        assert _workers(pair.port) == {1: old[1]}  # the other one serves meanwhile
    finally:
        config.write_text(good)
    wait_until(lambda: len(_workers(pair.port)) == 2, "worker 0 back", limit=60)
    retries = re.findall(
        r"worker 0 .*starting another in (\S+)s", pair.log.read_text()[log_before:]
    )
    assert retries[:3] == ["0.5", "1", "2"]  # doubling, never a tight loop


def _proc_env(pid: int, name: str) -> str:
    for item in Path(f"/proc/{pid}/environ").read_bytes().split(b"\0"):
        key, _, value = item.partition(b"=")
        if key.decode() == name:
            return value.decode()
    raise AssertionError(f"{name} not in the environment of {pid}")


class _Held(http.server.BaseHTTPRequestHandler):
    """A backend whose first answer waits until the test releases it: a request in flight."""

    arrived = threading.Event()
    release = threading.Event()
    body = b""

    def do_GET(self) -> None:
        if self.path != "/" and not _Held.arrived.is_set():  # "/": the health checks
            _Held.arrived.set()
            _Held.release.wait(30)
        self.send_response(200)
        self.send_header("Content-Type", "image/png")
        self.send_header("Content-Length", str(len(self.body)))
        self.end_headers()
        self.wfile.write(self.body)

    def log_message(self, format: str, *args: object) -> None:
        pass


def test_sigterm_drains_a_request_in_flight_and_exits_0(tmp_path: Path, images: Path) -> None:
    _Held.body = (images / "quad.png").read_bytes()
    backend = http.server.ThreadingHTTPServer(("127.0.0.1", 0), _Held)
    threading.Thread(target=backend.serve_forever, daemon=True).start()
    held = f"  held: {{type: http, url: 'http://127.0.0.1:{backend.server_port}/{{id}}'}}\n"
    config = _config(tmp_path, images)
    config.write_text(
        config.read_text()
        .replace("backends:\n", "backends:\n" + held)
        .replace("routes:\n", "routes:\n  - {match: '^held-', backend: held}\n")
    )
    proc = start_shim(config, tmp_path, *TWO)
    try:
        wait_until(lambda: len(_workers(proc.port)) == 2, "both workers answering")
        pids = _workers(proc.port)
        run_dir = Path(_proc_env(pids[0], "IIIF_SHIM_RUN_DIR"))
        assert run_dir.is_dir() and (run_dir / "metrics").is_dir()
        assert _proc_env(pids[1], "PROMETHEUS_MULTIPROC_DIR") == str(run_dir / "metrics")
        results: list[int] = []
        client = threading.Thread(
            target=lambda: results.append(
                request(proc.port, "/iiif/3/held-quad/full/64,/0/default.png", timeout=60).status
            )
        )
        client.start()
        assert _Held.arrived.wait(30)  # the request is in flight, held by its backend
        proc.proc.send_signal(signal.SIGTERM)
        wait_until(lambda: refused(proc.port), "refusing connections")  # nobody accepts any more
        assert client.is_alive() and not results
        _Held.release.set()
        client.join(60)
        assert results == [200]
        assert proc.proc.wait(30) == 0
    finally:
        _Held.release.set()
        backend.shutdown()
        proc.stop()
    log = proc.log.read_text()
    assert log.index("stopping: no new connections") < log.index("GET /iiif/3/held-quad/")
    assert log.index("GET /iiif/3/held-quad/") < log.index("stopped")
    assert all(_gone(pid) for pid in pids.values())
    assert not run_dir.exists()


def test_a_port_in_use_is_one_line(tmp_path: Path, images: Path) -> None:
    with socket.socket() as taken:
        taken.bind(("127.0.0.1", 0))
        taken.listen()
        port = taken.getsockname()[1]
        done = subprocess.run(
            [*SERVE, "--config", str(_config(tmp_path, images)), "--port", str(port), *TWO],
            capture_output=True,
            text=True,
            timeout=60,
        )
    assert done.returncode == 1
    assert done.stderr.strip().splitlines() == [
        f"iiif-shim: cannot listen on 127.0.0.1:{port}: the port is already in use"
    ]
    assert "Traceback" not in done.stderr


def test_one_process_has_no_supervisor(tmp_path: Path, images: Path) -> None:
    proc = start_shim(_config(tmp_path, images), tmp_path)  # start_shim: --processes 1
    try:
        assert _health(proc.port) == {"pid": proc.proc.pid, "worker": 0, "processes": 1}
        assert _metric(proc.port, "iiif_shim_processes") == 1
    finally:
        proc.stop()
    log = proc.log.read_text()
    assert "INFO iiif_shim: iiif-shim" in log and "worker" not in log  # as before: no pids


def _parse_combined(line: str) -> list[str]:
    """The quoted fields of a combined log line, unescaped as Apache escapes them."""
    fields = re.findall(r'"((?:[^"\\]|\\.)*)"', line)
    return [
        re.sub(
            r"\\(x[0-9a-f]{2}|.)",
            lambda m: chr(int(m[1][1:], 16)) if m[1][0] == "x" else _UNESCAPE.get(m[1], m[1]),
            field,
        )
        .encode("latin-1")
        .decode("utf-8")
        for field in fields
    ]


_UNESCAPE = {"b": "\b", "n": "\n", "r": "\r", "t": "\t", "v": "\v"}
FORGERY = 'x" 200 "- \\ café\tend'  # a quote, a backslash, UTF-8 and a tab


@pytest.mark.parametrize("fmt", ["combined", "json"])
def test_the_access_log_cannot_be_forged(tmp_path: Path, images: Path, fmt: str) -> None:
    shim = start_shim(_config(tmp_path, images, server=f"  access_log: {fmt}"), tmp_path)
    try:
        with socket.create_connection(("127.0.0.1", shim.port), timeout=10) as sock:
            sock.sendall(
                b'GET /health?q="x HTTP/1.1\r\nHost: 127.0.0.1\r\nConnection: close\r\n'
                + b"User-Agent: "
                + FORGERY.encode()
                + b"\r\nReferer: "
                + FORGERY[::-1].encode()
                + b"\r\n\r\n"
            )
            assert sock.recv(100).startswith(b"HTTP/1.1 200 ")
        (line,) = log_lines(shim.log, "/health?q=")
    finally:
        shim.stop()
    if fmt == "combined":
        assert line.isascii() and "\t" not in line
        assert _parse_combined(line) == [
            'GET /health?q="x HTTP/1.1',
            FORGERY[::-1],
            FORGERY,
        ]
        assert r'"GET /health?q=\"x HTTP/1.1"' in line and r"caf\xc3\xa9\tend" in line
    else:
        record = json.loads(line)
        assert record["path"] == '/health?q="x'
        assert (record["user_agent"], record["referer"]) == (FORGERY, FORGERY[::-1])
