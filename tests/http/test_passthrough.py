"""Large answers that need no work pass through as they arrive (``passthrough.py``).

A master on nginx is the answer to ``full/max/0/default.jpg`` as it is: its bytes go out
untouched. A stand-in upstream that holds back the rest of a master until the client has seen
its first bytes shows they are streamed, not buffered; one that cuts the body shows a cut
stream is never passed off as complete; one whose master does not match its header goes the
buffered way and its checks.
"""

from __future__ import annotations

import http.client
import io
import random
import threading
import time
from collections.abc import Iterator
from dataclasses import dataclass, field
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from pathlib import Path

import pytest
from PIL import Image

from tests.support import Process, free_port, need_tool, nginx_config, start_shim, write_config

WIDTH, HEIGHT = 2000, 1500  # 3 MP: above the size that streams


def _master(width: int, height: int, seed: int) -> bytes:
    """A noisy JPEG (large, so its body spans many chunks)."""
    rng = random.Random(seed)
    im = Image.frombytes("RGB", (width, height), rng.randbytes(width * height * 3))
    buf = io.BytesIO()
    im.save(buf, "JPEG", quality=90)
    return buf.getvalue()


@dataclass
class Upstream:
    """Masters by path; ``/held/...`` waits for ``release`` after the first 64 KiB of a full
    GET, ``/cut/...`` closes after them, ``/liar/...`` answers Range requests with one image
    and full GETs with a bigger one."""

    masters: dict[str, bytes]
    bigger: bytes
    release: threading.Event = field(default_factory=threading.Event)

    def handler(self) -> type[BaseHTTPRequestHandler]:
        upstream = self

        class Handler(BaseHTTPRequestHandler):
            def log_message(self, *args: object) -> None:
                pass

            def do_GET(self) -> None:
                mode, _, name = self.path.strip("/").partition("/")
                body = upstream.masters.get(name)
                if body is None:
                    self.send_error(404)
                    return
                ranged = self.headers.get("Range")
                if mode == "liar" and not ranged:
                    body = upstream.bigger
                if ranged:
                    last = int(ranged.split("-")[1])
                    part = body[: last + 1]
                    self.send_response(206)
                    self.send_header("Content-Range", f"bytes 0-{len(part) - 1}/{len(body)}")
                    self.send_header("Content-Length", str(len(part)))
                    self.send_header("ETag", '"v1"')
                    self.end_headers()
                    self.wfile.write(part)
                    return
                self.send_response(200)
                self.send_header("Content-Type", "image/jpeg")
                self.send_header("Content-Length", str(len(body)))
                self.send_header("ETag", '"v1"')
                self.end_headers()
                first = 64 * 1024
                self.wfile.write(body[:first])
                self.wfile.flush()
                if mode == "cut":
                    self.close_connection = True
                    return
                if mode == "held":
                    upstream.release.wait(30)
                self.wfile.write(body[first:])

        return Handler


@pytest.fixture(scope="module")
def masters(tmp_path_factory: pytest.TempPathFactory) -> Path:
    folder = tmp_path_factory.mktemp("masters")
    (folder / "big.jpg").write_bytes(_master(WIDTH, HEIGHT, 1))
    return folder


@pytest.fixture(scope="module")
def upstream(masters: Path) -> Iterator[tuple[Upstream, int]]:
    body = (masters / "big.jpg").read_bytes()
    state = Upstream({"big.jpg": body}, _master(WIDTH + 400, HEIGHT, 2))
    server = ThreadingHTTPServer(("127.0.0.1", 0), state.handler())
    thread = threading.Thread(target=server.serve_forever, daemon=True)
    thread.start()
    yield state, server.server_address[1]
    state.release.set()
    server.shutdown()
    server.server_close()


@pytest.fixture(scope="module")
def shim(
    masters: Path, upstream: tuple[Upstream, int], tmp_path_factory: pytest.TempPathFactory
) -> Iterator[Process]:
    tmp = tmp_path_factory.mktemp("passthrough")
    nginx_bin = need_tool("nginx", "/usr/sbin/nginx")
    port = free_port()
    conf = nginx_config(masters, port, tmp)
    web = Process([nginx_bin, "-c", str(conf), "-p", str(tmp)], port, tmp / "nginx.log")
    origin = f"http://127.0.0.1:{upstream[1]}"
    modes = ("held", "cut", "liar")
    stand_ins = "".join(f'  {m}: {{type: http, url: "{origin}/{m}/{{id}}"}}\n' for m in modes)
    routes = "".join(
        f'  - {{match: "^{m}:(?P<rest>.+)$", backend: {m}, id: "{{rest}}"}}\n' for m in modes
    )
    config = write_config(
        tmp / "shim.yaml",
        f"""\
backends:
  web: {{type: http, url: "http://127.0.0.1:{port}/{{id}}"}}
{stand_ins}routes:
{routes}  - {{backend: web}}
""",
    )
    proc = start_shim(config, tmp)
    yield proc
    proc.stop()
    web.stop()


def _get(port: int, path: str) -> tuple[http.client.HTTPConnection, http.client.HTTPResponse]:
    conn = http.client.HTTPConnection("127.0.0.1", port, timeout=20)
    conn.request("GET", path)
    return conn, conn.getresponse()


def test_a_master_that_is_the_answer_goes_out_untouched(shim: Process, masters: Path) -> None:
    master = (masters / "big.jpg").read_bytes()
    resp = shim.get("/iiif/3/big.jpg/full/max/0/default.jpg")
    assert resp.status == 200
    assert resp.header("Content-Type") == "image/jpeg"
    assert resp.header("Content-Length") == str(len(master))
    assert resp.header("ETag") and resp.header("Access-Control-Allow-Origin") == "*"
    assert resp.body == master  # passed through: the very bytes, not a second encoding
    with Image.open(io.BytesIO(resp.body)) as im:
        assert im.size == (WIDTH, HEIGHT)
    # anything else is rendered: a PNG of it, or a smaller one
    png = shim.get("/iiif/3/big.jpg/full/max/0/default.png")
    assert png.status == 200 and png.body[:4] == b"\x89PNG"
    half = shim.get("/iiif/3/big.jpg/full/1000,/0/default.jpg")
    with Image.open(io.BytesIO(half.body)) as im:
        assert im.size == (1000, 750)
    # HEAD: the headers, no body
    conn = http.client.HTTPConnection("127.0.0.1", shim.port, timeout=20)
    conn.request("HEAD", "/iiif/3/big.jpg/full/max/0/default.jpg")
    head = conn.getresponse()
    assert head.status == 200 and head.read() == b""
    assert head.getheader("Content-Length") == str(len(master))
    conn.close()


def test_first_bytes_reach_the_client_before_the_backend_has_sent_the_rest(
    shim: Process, upstream: tuple[Upstream, int], masters: Path
) -> None:
    state, _ = upstream
    state.release.clear()
    conn, resp = _get(shim.port, "/iiif/3/held:big.jpg/full/max/0/default.jpg")
    try:
        assert resp.status == 200
        # the backend holds the rest until released: a buffering server would send nothing
        first = resp.read1(16 * 1024)
        assert first[:3] == b"\xff\xd8\xff"
    finally:
        state.release.set()
    assert first + resp.read() == (masters / "big.jpg").read_bytes()
    conn.close()


def test_a_stream_cut_by_the_backend_is_never_complete(shim: Process) -> None:
    conn, resp = _get(shim.port, "/iiif/3/cut:big.jpg/full/max/0/default.jpg")
    assert resp.status == 200  # the status went out with the first bytes
    with pytest.raises(http.client.IncompleteRead):
        resp.read()
    conn.close()
    assert shim.get("/health").status == 200


def test_a_master_unlike_its_header_goes_the_checked_way(shim: Process) -> None:
    # the master read for the image is larger than the facts said: not streamed, refused
    resp = shim.get("/iiif/3/liar:big.jpg/full/max/0/default.jpg")
    assert resp.status == 502
    assert "asked" in resp.text


def test_backend_connections_are_kept_alive(tmp_path: Path, masters: Path) -> None:
    """Requests to a backend reuse the connections of its pool instead of opening one each."""
    body = (masters / "big.jpg").read_bytes()
    peers: set[tuple[str, int]] = set()
    served = 0

    class KeepAlive(BaseHTTPRequestHandler):
        protocol_version = "HTTP/1.1"

        def log_message(self, *args: object) -> None:
            pass

        def do_GET(self) -> None:
            nonlocal served
            peers.add(self.client_address)
            served += 1
            ranged = self.headers.get("Range")
            part = body[: int(ranged.split("-")[1]) + 1] if ranged else body
            self.send_response(206 if ranged else 200)
            self.send_header("Content-Type", "image/jpeg")
            self.send_header("Content-Length", str(len(part)))
            self.send_header("ETag", '"k1"')
            self.end_headers()
            self.wfile.write(part)

    server = ThreadingHTTPServer(("127.0.0.1", 0), KeepAlive)
    threading.Thread(target=server.serve_forever, daemon=True).start()
    config = write_config(
        tmp_path / "shim.yaml",
        f"""\
cache: {{image_bytes: 0, decoded_bytes: 0}}
backends:
  web: {{type: http, url: "http://127.0.0.1:{server.server_address[1]}/{{id}}", \
max_connections: 2}}
routes:
  - {{backend: web}}
""",
    )
    shim = start_shim(config, tmp_path)
    try:
        for width in range(100, 1100, 100):  # ten different renders, nothing cached
            assert shim.get(f"/iiif/3/big.jpg/full/{width},/0/default.jpg").status == 200
    finally:
        shim.stop()
        server.shutdown()
        server.server_close()
    assert served >= 10
    assert len(peers) <= 2, peers  # the pool's two connections at most, each used again


def test_a_client_that_leaves_mid_stream_is_neither_an_error_nor_the_backends_fault(
    shim: Process, upstream: tuple[Upstream, int]
) -> None:
    state, _ = upstream
    state.release.clear()
    conn, resp = _get(shim.port, "/iiif/3/held:big.jpg/full/max/0/default.jpg")
    try:
        assert resp.status == 200 and resp.read1(16 * 1024)[:3] == b"\xff\xd8\xff"
        conn.sock.close()  # gone with most of the body unread
        conn.close()
    finally:
        state.release.set()
    for _ in range(50):  # the shim notices when it next writes
        metrics = shim.get("/metrics").text
        if 'endpoint="image"' in metrics:
            break
        time.sleep(0.1)
    lines = [line for line in metrics.splitlines() if line.startswith("iiif_shim_requests")]
    assert not [line for line in lines if 'status="500"' in line], lines
    held = [
        line
        for line in metrics.splitlines()
        if line.startswith("iiif_shim_backend_requests") and 'backend="held"' in line
    ]
    faults = ("timeout", "reset", "truncated", "http_5xx")  # what would count against it
    assert held and not [line for line in held if any(f'"{f}"' in line for f in faults)], held
    assert "unexpected error" not in shim.log.read_text()
