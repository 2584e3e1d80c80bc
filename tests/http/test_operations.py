"""Operations, over real sockets: the operator's mistakes, slow and greedy clients, health,
metrics, request ids, configuration reload on SIGHUP and shutdown on SIGTERM."""

from __future__ import annotations

import io
import json
import signal
import socket
import subprocess
import sys
import threading
import time
from collections.abc import Iterator
from pathlib import Path

import pytest
from PIL import Image

from tests.support import (
    Process,
    free_port,
    log_lines,
    refused,
    request,
    start_shim,
    wait_until,
    write_config,
)

SERVE = [sys.executable, "-m", "iiif_shim", "serve"]


def _config(tmp: Path, images: Path, server: str = "", title: str = "first") -> Path:
    return write_config(
        tmp / "shim.yaml",
        f"""\
server:
  health_interval: 1
{server}
landing: {{title: "{title}"}}
backends:
  local: {{type: files, root: "{images}"}}
  gone: {{type: http, url: "http://127.0.0.1:9/{{id}}", connect_timeout: 0.5, timeout: 2}}
routes:
  - {{match: "^gone:(?P<rest>[^/]+)$", backend: gone, id: "{{rest}}"}}
  - {{backend: local}}
""",
    )


@pytest.fixture(scope="module")
def guarded(images: Path, tmp_path_factory: pytest.TempPathFactory) -> Iterator[Process]:
    tmp = tmp_path_factory.mktemp("guarded")
    server = (
        "  header_timeout: 1\n  body_timeout: 1\n  max_client_connections: 6\n"
        "  max_request_line: 2048\n  max_header_bytes: 4096\n  max_headers: 20\n"
        "  access_log: json\n"
    )
    proc = start_shim(_config(tmp, images, server), tmp)
    yield proc
    proc.stop()


# --- the operator's mistakes: one clear line, never a traceback ------------------------------


def _serve(tmp: Path, images: Path, *args: str) -> subprocess.CompletedProcess[str]:
    config = _config(tmp, images)
    return subprocess.run(
        [*SERVE, "--config", str(config), *args], capture_output=True, text=True, timeout=60
    )


def test_a_port_in_use_is_one_line(tmp_path: Path, images: Path) -> None:
    with socket.socket() as taken:
        taken.bind(("127.0.0.1", 0))
        taken.listen()
        port = taken.getsockname()[1]
        done = _serve(tmp_path, images, "--port", str(port))
    assert done.returncode == 1
    assert done.stderr.strip().splitlines()[-1] == (
        f"iiif-shim: cannot listen on 127.0.0.1:{port}: the port is already in use"
    )
    assert "Traceback" not in done.stderr and "http://127.0.0.1" not in done.stderr


@pytest.mark.parametrize(
    ("args", "status", "line"),
    [
        (("--port", "70000"), 2, "iiif-shim: --port 70000 is out of range (0 to 65535)"),
        (("--host", "192.0.2.1", "--port", "0"), 1, "this machine has no such address"),
        (("--host", "no-such-host.invalid", "--port", "0"), 1, "the host name does not resolve"),
    ],
)
def test_other_mistakes_are_one_line(
    tmp_path: Path, images: Path, args: tuple[str, ...], status: int, line: str
) -> None:
    done = _serve(tmp_path, images, *args)
    assert done.returncode == status, done.stderr
    assert "Traceback" not in done.stderr
    assert done.stderr.strip().splitlines()[-1].endswith(line), done.stderr


# --- slow and greedy clients -------------------------------------------------------------


def _raw(port: int, data: bytes, wait: float = 5) -> bytes:
    with socket.create_connection(("127.0.0.1", port), timeout=wait) as s:
        s.sendall(data)
        chunks = []
        while chunk := s.recv(65536):
            chunks.append(chunk)
        return b"".join(chunks)


def test_a_slowloris_is_cut_off_and_others_are_served(guarded: Process) -> None:
    started = time.monotonic()
    with socket.create_connection(("127.0.0.1", guarded.port), timeout=5) as slow:
        slow.sendall(b"GET /iiif/3/quad/info.json HTTP/1.1\r\n")
        reply = b""
        for _ in range(20):
            try:
                slow.sendall(b"X-A: b\r\n")
            except OSError:
                break
            time.sleep(0.2)
            assert guarded.get("/health").status == 200  # the rest are served meanwhile
        reply = slow.recv(65536)
    assert reply.startswith(b"HTTP/1.1 408") and b"Access-Control-Allow-Origin: *" in reply
    assert time.monotonic() - started < 4


def test_the_connection_cap_answers_503_with_cors(guarded: Process) -> None:
    idle = [socket.create_connection(("127.0.0.1", guarded.port)) for _ in range(6)]
    answers: list[bytes] = []
    try:
        # the idle ones count once the server has accepted them: then the next is refused
        wait_until(
            lambda: (
                answers.append(_raw(guarded.port, b"GET /health HTTP/1.1\r\nHost: x\r\n\r\n"))
                or answers[-1].startswith(b"HTTP/1.1 503")
            ),
            "a connection past the cap refused",
            limit=5,
        )
        assert b"Retry-After: 1" in answers[-1]
        assert b"Access-Control-Allow-Origin: *" in answers[-1]
    finally:
        for s in idle:
            s.close()
    wait_until(lambda: guarded.get("/health").status == 200, "served again once they closed", 5)


@pytest.mark.parametrize(
    ("head", "status"),
    [
        (b"GET /iiif/3/" + b"a" * 3000 + b"/info.json HTTP/1.1\r\nHost: x\r\n\r\n", b"414"),
        (b"GET / HTTP/1.1\r\nHost: x\r\nX-Big: " + b"b" * 5000 + b"\r\n\r\n", b"431"),
        (b"GET / HTTP/1.1\r\nHost: x\r\n" + b"X-A: b\r\n" * 30 + b"\r\n", b"431"),
        (b"GET / HTTP/1.1\r\nHost: x\r\nBad Header\r\n\r\n", b"400"),
        (b"\x16\x03\x01\x02\x00\x01\x00\x01\xfc\x03\x03" + b"\0" * 40 + b"\r\n\r\n", b"400"),
    ],
    ids=["long-url", "big-header", "many-headers", "malformed", "tls-hello"],
)
def test_refused_requests_carry_cors_and_no_internals(
    guarded: Process, head: bytes, status: bytes
) -> None:
    reply = _raw(guarded.port, head)
    assert reply[:9] in (b"HTTP/1.1 ", b"HTTP/1.0 ") and reply[9:12] == status, reply[:200]
    assert b"Access-Control-Allow-Origin: *" in reply
    body = reply.split(b"\r\n\r\n", 1)[1]
    assert b"Traceback" not in body and b"aiohttp" not in body and len(body) < 200


# --- health, metrics, request ids ----------------------------------------------------------


def test_health_ready_reports_each_backend(guarded: Process) -> None:
    alive = json.loads(guarded.get("/health").body)
    assert alive["status"] == "ok" and "memory" in alive
    for _ in range(50):
        ready = guarded.get("/health/ready")
        body = json.loads(ready.body)
        if all(
            b["state"] != "degraded" or b["reason"] != "not checked yet"
            for b in body["backends"].values()
        ):
            break
        time.sleep(0.1)
    assert ready.status == 200  # one backend is down, not all of them
    assert body["backends"]["local"]["state"] == "ok"
    assert body["backends"]["gone"]["state"] == "down"
    assert "unreachable" in body["backends"]["gone"]["reason"]
    assert body["status"] == "degraded" and ready.header("Cache-Control") == "no-store"


def test_the_favicon_is_an_icon_with_a_validator(guarded: Process) -> None:
    got = guarded.get("/favicon.ico")
    assert got.status == 200 and got.header("Content-Type") == "image/vnd.microsoft.icon"
    with Image.open(io.BytesIO(got.body)) as icon:
        assert icon.format == "ICO" and (32, 32) in icon.info["sizes"]
    again = guarded.get("/favicon.ico", headers={"If-None-Match": got.header("ETag") or "-"})
    assert again.status == 304 and again.body == b""


def test_metrics_and_request_ids(guarded: Process) -> None:
    given = guarded.get("/iiif/3/quad/info.json", headers={"X-Request-ID": "abc-123"})
    assert given.header("X-Request-ID") == "abc-123"
    made = guarded.get("/iiif/3/quad/full/64,/0/default.jpg")
    assert made.status == 200 and len(made.header("X-Request-ID") or "") == 32
    hostile = guarded.get("/health", headers={"X-Request-ID": "x" * 500})
    assert hostile.header("X-Request-ID") != "x" * 500  # not echoed into logs and headers
    assert guarded.get("/iiif/3/gone%3Aq/info.json").status == 502
    text = guarded.get("/metrics").text
    for fragment in (
        'iiif_shim_requests_total{backend="local",endpoint="info",status="200",version="3"}',
        'iiif_shim_requests_total{backend="gone",endpoint="info",status="502",version="3"}',
        'iiif_shim_backend_requests_total{backend="gone",outcome="refused"}',
        'iiif_shim_cache_lookups_total{result="miss",tier="facts"}',
        'iiif_shim_pillow_seconds_count{step="encode"}',
        'iiif_shim_backend_circuit_state{backend="gone"}',
        "iiif_shim_image_jobs ",
        "iiif_shim_client_connections ",
        'iiif_shim_request_seconds_bucket{endpoint="image",le="0.5",version="3"}',
    ):
        assert fragment in text, fragment
    log = guarded.log.read_text()
    access = [json.loads(line) for line in log.splitlines() if line.startswith("{")]
    assert any(a["request_id"] == "abc-123" and a["status"] == 200 for a in access)


# --- reload and shutdown -------------------------------------------------------------------


def _hammer(port: int, path: str, stop: threading.Event, statuses: list[int]) -> None:
    while not stop.is_set():
        try:
            statuses.append(request(port, path, timeout=10).status)
        except OSError:
            statuses.append(-1)


def test_sighup_reloads_a_valid_file_and_keeps_serving_on_a_bad_one(
    tmp_path: Path, images: Path
) -> None:
    config = _config(tmp_path, images, title="first")
    proc = start_shim(config, tmp_path)
    try:
        stop, statuses = threading.Event(), []
        threads = [
            threading.Thread(target=_hammer, args=(proc.port, p, stop, statuses))
            for p in ("/iiif/3/quad/info.json", "/iiif/3/quad/full/90,/0/default.png", "/")
        ]
        for t in threads:
            t.start()
        for title in ("second", "third"):
            _config(tmp_path, images, title=title)
            proc.proc.send_signal(signal.SIGHUP)
            heading = f"<h1>{title}</h1>"
            wait_until(lambda h=heading: h in proc.get("/").text, f"{title} served", 5)
        config.write_text("backends: {local: {type: nope}}\nroutes: []\n")
        proc.proc.send_signal(signal.SIGHUP)
        wait_until(lambda: "reload refused" in proc.log.read_text(), "the bad file refused", 10)
        stop.set()
        for t in threads:
            t.join()
        assert "<h1>third</h1>" in proc.get("/").text  # the bad file changed nothing
        assert len(statuses) > 30 and set(statuses) == {200}, sorted(set(statuses))
        log = proc.log.read_text()
        assert "reload refused" in log and "backends.local.type: unknown type 'nope'" in log
        assert proc.proc.poll() is None
    finally:
        proc.stop()


def test_sigterm_finishes_requests_in_flight_and_exits_0(tmp_path: Path, images: Path) -> None:
    folder = tmp_path / "images"
    folder.mkdir()
    Image.effect_noise((3000, 3000), 64).save(folder / "big.png")  # seconds to turn and encode
    config = _config(tmp_path, folder, server="  shutdown_timeout: 20\n")
    port = free_port()
    proc = Process([*SERVE, "--config", str(config), "--port", str(port)], port, tmp_path / "s.log")
    results: list[int] = []
    slow = threading.Thread(
        target=lambda: results.append(
            request(port, "/iiif/3/big/full/max/7.5/default.png", timeout=60).status
        )
    )
    slow.start()
    wait_until(lambda: "iiif_shim_image_jobs 1.0" in proc.get("/metrics").text, "rendering", 10)
    proc.proc.send_signal(signal.SIGTERM)
    wait_until(lambda: refused(port), "no longer accepting", 10)
    slow.join(60)
    assert results == [200]
    assert proc.proc.wait(30) == 0
    proc.stop()
    log = (tmp_path / "s.log").read_text()
    # the render was still running when the signal came, and was answered after it
    assert log.index("stopping: no new connections") < log.index("GET /iiif/3/big/")
    assert log.index("GET /iiif/3/big/") < log.index("stopped")


def test_the_unit_file_survives_signals() -> None:
    unit = (Path(__file__).parents[2] / "deploy" / "iiif-shim.service").read_text()
    assert "LimitNOFILE=" in unit and "ExecReload=/bin/kill -HUP $MAINPID" in unit
    assert "Restart=on-failure" in unit and "KillSignal=SIGTERM" in unit
    stop = int(next(line for line in unit.splitlines() if line.startswith("TimeoutStopSec="))[15:])
    assert stop > 30  # longer than the default shutdown_timeout


def test_a_purge_reads_its_path_as_the_router_does(tmp_path: Path, images: Path) -> None:
    """``/admin/%63ache`` is ``/admin/cache`` to the router: a purge of everything, not of an
    identifier made of the raw path's tail."""
    from tests.inprocess import InProcessShim

    token = "purge-token-0123456789abcdef"
    config = _config(tmp_path, images, title="purge")
    config.write_text(config.read_text() + f"cache: {{purge_token: {token}}}\n")
    shim = InProcessShim(config)
    auth = {"Authorization": f"Bearer {token}"}
    try:
        for path, purged in (
            ("/admin/%63ache", "*"),
            ("/admin/cache/", "*"),
            ("/%61dmin/cache/a%2Fb", "a/b"),
            ("/admin/cache/%65", "e"),
        ):
            resp = shim.get(path, method="DELETE", headers=auth)
            assert resp.status == 200, (path, resp.text)
            assert json.loads(resp.body)["purged"] == purged, path
        for path in ("/admin/cache/a/b", "/admin/cache//"):
            resp = shim.get(path, method="DELETE", headers=auth)
            assert resp.status == 404, (path, resp.status)
    finally:
        shim.stop()


def test_a_malformed_request_is_one_log_line(guarded: Process) -> None:
    """A request the HTTP parser refuses is logged as one line naming the reason, never as a
    traceback (the log is the operator's; a scanner must not fill it with stack frames)."""
    marker = "X-Marker-" + str(time.monotonic_ns())
    for head in (
        f"GET / HTTP/1.1\r\nHost: x\r\nBad Header: {marker}\r\n\r\n",
        f"GET / HTTP/1.1\r\nHost: x\r\nContent-Length: {marker}\r\n\r\n",
    ):
        assert _raw(guarded.port, head.encode())[9:12] == b"400"
    lines = log_lines(guarded.log, "Error handling request from 127.0.0.1: 400", count=2)
    assert any("Invalid header token" in line for line in lines), lines
    assert "Traceback" not in guarded.log.read_text()
