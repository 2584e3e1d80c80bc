"""The ``http`` backend against a real nginx (and a delaying upstream, ``tests/faulty.py``), and
upstream faults mapped to IIIF errors. The shim is served in process (``tests/inprocess.py``)."""

from __future__ import annotations

import json
import re
import socket
import threading
import time
from collections.abc import Iterator
from pathlib import Path

import pytest

from tests.inprocess import InProcessShim
from tests.support import Process, free_port, log_lines, request, start_faulty, write_config


@pytest.fixture(scope="module")
def silent_port() -> Iterator[int]:
    """A server that accepts connections and never answers (for timeouts)."""
    listener = socket.socket()
    listener.bind(("127.0.0.1", 0))
    listener.listen(16)
    held: list[socket.socket] = []
    stop = threading.Event()

    def accept() -> None:
        listener.settimeout(0.2)
        while not stop.is_set():
            try:
                held.append(listener.accept()[0])
            except TimeoutError:
                continue

    thread = threading.Thread(target=accept, daemon=True)
    thread.start()
    yield listener.getsockname()[1]
    stop.set()
    thread.join(2)
    for conn in held:
        conn.close()
    listener.close()


@pytest.fixture(scope="module")
def delaying(images: Path, tmp_path_factory: pytest.TempPathFactory) -> Iterator[Process]:
    """An upstream that answers each request for the test images after a second."""
    proc = start_faulty(images, tmp_path_factory.mktemp("delaying"))
    yield proc
    proc.stop()


@pytest.fixture(scope="module")
def web(
    nginx: Process,
    delaying: Process,
    silent_port: int,
    tmp_path_factory: pytest.TempPathFactory,
) -> Iterator[InProcessShim]:
    tmp = tmp_path_factory.mktemp("web")
    origin = f"http://127.0.0.1:{nginx.port}"
    faults = "".join(
        f'  - {{match: "^{name}/(?P<rest>.+)$", backend: {name}, id: "{{rest}}"}}\n'
        for name in ("broken", "refused", "silent", "tiny", "delayed")
    )
    config = write_config(
        tmp / "web.yaml",
        f"""\
iiif: {{max_width: 5000, max_height: 5000, max_area: 16000000, tile_size: 256}}
backends:
  web: {{type: http, url: "{origin}/{{id}}"}}
  masters: {{type: http, url: "{origin}/{{id}}.png"}}
  broken: {{type: http, url: "{origin}/broken/{{id}}"}}
  refused: {{type: http, url: "http://127.0.0.1:{free_port()}/{{id}}"}}
  silent: {{type: http, url: "http://127.0.0.1:{silent_port}/{{id}}", timeout: 1}}
  tiny: {{type: http, url: "{origin}/{{id}}", max_bytes: 100000}}
  delayed: {{type: http, url: "http://127.0.0.1:{delaying.port}/delay/1/{{id}}"}}
routes:
{faults}  - {{match: "^ms:(?P<rest>.+)$", backend: masters, id: "{{rest}}"}}
  - {{backend: web}}
""",
    )
    served = InProcessShim(config)
    yield served
    served.stop()


def access_log(nginx: Process, needle: str) -> list[str]:
    return log_lines(nginx.log.parent / "nginx-access.log", needle)


def test_info_and_pixels_over_http(web: InProcessShim, nginx: Process) -> None:
    resp = web.get("/iiif/3/quad.png/info.json")
    assert resp.status == 200, resp.text
    doc = json.loads(resp.body)
    assert (doc["width"], doc["height"]) == (300, 200)
    assert doc["id"] == f"http://127.0.0.1:{web.port}/iiif/3/quad.png"
    im = web.get("/iiif/3/quad.png/150,100,150,100/75,/!90/default.png").image()
    assert im.size == (50, 75)
    assert im.convert("RGB").getpixel((10, 10)) == (255, 255, 255)
    img = web.get("/iiif/3/quad.png/full/max/0/default.jpg")
    assert img.header("ETag") and img.header("Last-Modified")  # from nginx's validators
    assert web.get("/iiif/2/ms:quad/full/100,/0/gray.jpg").image().size == (100, 67)


def test_info_reads_only_the_header(web: InProcessShim, nginx: Process, images: Path) -> None:
    assert web.get("/iiif/3/rings.jp2/info.json").status == 200
    assert web.get("/iiif/2/rings.jp2/info.json").status == 200  # cached facts: no new call
    lines = access_log(nginx, "GET /rings.jp2 ")
    assert len(lines) == 1 and '" 206 ' in lines[0], lines
    sent = int(lines[0].split('" 206 ')[1].split()[0])
    assert sent <= 256 * 1024 < (images / "rings.jp2").stat().st_size  # not the whole master


def _facts_lookups(web: InProcessShim) -> dict[str, float]:
    text = web.get("/metrics").text
    found = re.findall(
        r'iiif_shim_cache_lookups_total\{result="(\w+)",tier="facts"\} ([0-9.]+)', text
    )
    return {result: float(count) for result, count in found}


def test_identical_concurrent_lookups_share_one_upstream_call(
    web: InProcessShim, delaying: Process
) -> None:
    """Ten requests for one image's facts at once, from an upstream that takes a second: all
    ten miss the cache (so they did overlap) and the upstream is asked once."""
    before = _facts_lookups(web)
    results = []

    def fetch() -> None:
        results.append(web.get("/iiif/3/delayed%2Fquad.png/info.json").status)

    threads = [threading.Thread(target=fetch) for _ in range(10)]
    for t in threads:
        t.start()
    for t in threads:
        t.join(30)
    assert results == [200] * 10
    after = _facts_lookups(web)
    assert after.get("miss", 0) - before.get("miss", 0) == 10  # the ten lookups overlapped
    stats = json.loads(request(delaying.port, "/_stats").body)
    assert stats["paths"].get("/delay/1/quad.png") == 1, stats  # ... and shared one call


def test_upstream_faults(web: InProcessShim, nginx: Process) -> None:
    cases = [
        ("/iiif/3/missing.png/info.json", 404, "no such image"),
        ("/iiif/3/broken%2Fquad.png/info.json", 502, "backend 'broken' answered HTTP 500"),
        ("/iiif/3/refused%2Fquad.png/info.json", 502, "backend 'refused' is unreachable"),
        ("/iiif/3/not-an-image.jpg/info.json", 502, "did not return an image"),
        ("/iiif/3/tiny%2Fchart.jpg/full/max/0/default.jpg", 502, "larger than max_bytes"),
    ]
    for path, status, fragment in cases:
        resp = web.get(path)
        assert resp.status == status, (path, resp.text)
        assert fragment in resp.text, (path, resp.text)
        assert str(nginx.port) not in resp.text  # never the upstream URL
        assert resp.header("Access-Control-Allow-Origin") == "*"


def test_upstream_timeout_is_504(web: InProcessShim) -> None:
    started = time.monotonic()
    resp = web.get("/iiif/3/silent%2Fquad.png/info.json")
    assert resp.status == 504
    assert "backend 'silent' did not answer within 1s" in resp.text
    assert time.monotonic() - started < 10


def test_same_pixels_as_files(web: InProcessShim, images: Path) -> None:
    via_http = web.get("/iiif/3/chart.jpg/2000,1000,1000,1000/250,/0/default.png").image()
    assert via_http.size == (250, 250)
    from PIL import Image

    with Image.open(images / "chart.jpg") as src:
        direct = src.crop((2000, 1000, 3000, 2000)).resize((250, 250))
    diffs = [
        abs(a - b) for a, b in zip(via_http.convert("RGB").tobytes(), direct.tobytes(), strict=True)
    ]
    assert sum(diffs) / len(diffs) < 6
