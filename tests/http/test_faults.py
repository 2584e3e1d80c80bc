"""Faults survived: every way an upstream can misbehave is answered 502/503/504 within the
backend's timeout + 1 s, memory stays bounded, and the next good request works.

The misbehaving upstream is ``tests/faulty.py`` (a raw-socket server, for faults real servers
cannot be made to produce); the real crash is iipsrv's, killed and restarted under load.
"""

from __future__ import annotations

import json
import subprocess
import threading
import time
from collections.abc import Iterator
from pathlib import Path

import pytest
from PIL import Image

from tests.faulty import png_bomb
from tests.servers import IipServer, make_tiff
from tests.support import (
    VALIDATOR_ID,
    Process,
    Response,
    free_port,
    memory_of,
    need_tool,
    request,
    start_faulty,
    start_shim,
    wait_until,
    write_config,
)

TIMEOUT = 2.0  # every faulty backend's timeout
CLOSED_PORT = free_port()  # nothing listens there: connections are refused
FAULTS = {
    # backend: (URL template on the faulty server, extra settings)
    "ok": ("ok/{id}", ""),
    "refuse": ("refuse/{id}", ""),
    "reset": ("reset/{id}", ""),
    "stall": ("stall/{id}", ""),
    "slow": ("slow/{id}", ""),
    "html200": ("html200/{id}", ""),
    "truncated": ("truncated/{id}", ", probe_bytes: 1024"),
    "wrongtype": ("wrongtype/{id}", ""),
    "garbage": ("garbage/{id}", ""),
    "oversize": ("oversize/{id}", ""),
    "nolength": ("nolength/{id}", ""),
    "flaky": ("flaky/2/{id}", ""),
    "failing": ("status/503/{id}", ", breaker_failures: 3, breaker_reset: 0.5, retries: 0"),
}


def _yaml(port: int) -> str:
    base = f"http://127.0.0.1:{port}"
    limits = f"timeout: {TIMEOUT}, connect_timeout: 1, max_bytes: 5000000"
    backends = "".join(
        f'  {name}: {{type: http, url: "{base}/{path}", {limits}{extra}}}\n'
        for name, (path, extra) in FAULTS.items()
    )
    backends += (
        f"  gzip: {{type: template, {limits}, max_metadata_bytes: 65536,\n"
        f'    info: {{url: "{base}/gzipbomb/{{id}}", width: {{json: w}}, height: {{json: h}}}},\n'
        f'    image: {{url: "{base}/ok/{{id}}"}}}}\n'
        f"  jsonbomb: {{type: template, {limits}, max_metadata_bytes: 65536,\n"
        f'    info: {{url: "{base}/jsonbomb/x?{{id}}", width: {{json: w}}, height: {{json: h}}}},\n'
        f'    image: {{url: "{base}/ok/{{id}}"}}}}\n'
        f'  tiles: {{type: deepzoom, url: "{base}/ok/{{id}}.dzi", {limits}}}\n'
    )
    backends += (  # metadata answered well, images failing once: the image is not retried
        f"  imgflaky: {{type: template, {limits},\n"
        f'    info: {{url: "{base}/ok/meta.json?{{id}}",\n'
        f"      width: {{json: w}}, height: {{json: h}}}},\n"
        f'    image: {{url: "{base}/flaky/1/{{id}}"}}}}\n'
        f"  closed: {{type: http, {limits},\n"
        f'    url: "http://127.0.0.1:{CLOSED_PORT}/{{id}}"}}\n'
    )
    for name, share in (("pool", 2), ("unshared", 4)):
        # facts from a small JSON; each output size is its own upstream request
        backends += (
            f"  {name}: {{type: template, {limits}, max_connections: 4,\n"
            f"    max_connections_per_image: {share}, pool_timeout: 1,\n"
            f'    info: {{url: "{base}/ok/meta.json?{{file}}", width: {{json: w}}, '
            "height: {json: h}},\n"
            f'    image: {{url: "{base}/{{fault}}/{{file}}?s={{width}},{{height}}", '
            "size: exact}}\n"
        )
    routes = "".join(
        f'  - {{match: "^{name}:(?P<rest>[^/]*)$", backend: {name}, id: "{{rest}}"}}\n'
        for name in [*FAULTS, "gzip", "jsonbomb", "tiles", "imgflaky", "closed"]
    )
    for name in ("pool", "unshared"):
        routes += (
            f'  - {{match: "^{name}:(?P<fault>[a-z]+)~(?P<file>[^/~]+)$", backend: {name}, '
            'id: "{file}"}\n'
        )
    return (
        "server: {health_interval: 3600, memory_budget: 268435456}\n"
        f"backends:\n{backends}routes:\n{routes}"
    )


@pytest.fixture(scope="module")
def faulty(tmp_path_factory: pytest.TempPathFactory) -> Iterator[tuple[Process, Process]]:
    root = tmp_path_factory.mktemp("faulty-root")
    Image.new("RGB", (300, 200), (0, 120, 200)).save(root / "quad.png")
    (root / "meta.json").write_text('{"w": 300, "h": 200}')
    Image.effect_noise((1200, 900), 40).convert("RGB").save(root / "noise.jpg")
    # a DeepZoom pyramid whose first full-resolution tile is a decompression bomb
    need_tool("vips")
    subprocess.run(
        ["vips", "dzsave", str(root / "quad.png"), str(root / "bombed"), "--layout", "dz"],
        check=True,
        capture_output=True,
    )
    (root / "bombed_files" / "9" / "0_0.jpeg").write_bytes(png_bomb(20000, 20000))
    work = tmp_path_factory.mktemp("faulty")
    server = start_faulty(root, work)
    shim = start_shim(write_config(work / "shim.yaml", _yaml(server.port)), work)
    yield server, shim
    shim.stop()
    server.stop()


def _timed(shim: Process, path: str, **kw: object) -> tuple[Response, float]:
    started = time.monotonic()
    resp = shim.get(path, timeout=30, **kw)
    return resp, time.monotonic() - started


def _peak_rss_mb(pid: int) -> float:
    return memory_of(pid)["VmHWM"] / (1 << 20)


@pytest.mark.parametrize(
    ("identifier", "statuses", "words"),
    [
        ("closed:quad.png", {502}, "is unreachable (Connection refused)"),
        ("refuse:quad.png", {502}, "closed the connection"),
        ("reset:quad.png", {502}, "closed the connection"),
        ("stall:quad.png", {504}, "did not answer within 2s"),
        ("slow:quad.png", {504}, "did not answer within 2s"),
        ("html200:quad.png", {502}, "did not return an image"),
        ("truncated:noise.jpg", {502}, "broken or truncated body"),
        ("garbage:x.png", {502}, "did not return an image"),
        ("oversize:1000000000", {502}, "larger than max_bytes"),
        ("nolength:1000000000", {502}, "larger than max_bytes"),
        ("gzip:1000000000", {502}, "larger than max_metadata_bytes"),
        ("jsonbomb:x", {502}, "larger than max_metadata_bytes"),
        ("tiles:bombed", {502}, "20000x20000 tile for a 255x200 cell"),
    ],
)
def test_each_fault_is_a_clean_gateway_error(
    faulty: tuple[Process, Process], identifier: str, statuses: set[int], words: str
) -> None:
    _, shim = faulty
    resp, seconds = _timed(shim, f"/iiif/3/{identifier}/full/max/0/default.jpg")
    assert resp.status in statuses, (resp.status, resp.text)
    assert words in resp.text, resp.text
    assert seconds < TIMEOUT + 1, seconds
    assert resp.header("Access-Control-Allow-Origin") == "*"
    assert "127.0.0.1" not in resp.text and "Traceback" not in resp.text
    good = shim.get("/iiif/3/ok:quad.png/full/64,/0/default.jpg")
    assert good.status == 200  # and the next good request works


def test_a_declared_type_is_not_believed(faulty: tuple[Process, Process]) -> None:
    """``text/plain`` around PNG bytes is still a PNG: content is sniffed, never trusted."""
    _, shim = faulty
    assert shim.get("/iiif/3/wrongtype:quad.png/full/64,/0/default.jpg").status == 200


def test_metadata_is_retried_and_images_are_not(faulty: tuple[Process, Process]) -> None:
    server, shim = faulty
    request(server.port, "/_reset")
    resp = shim.get("/iiif/3/flaky:quad.png/info.json", headers={"X-Request-ID": "flaky-1"})
    assert resp.status == 200  # two 503s, then the answer, within one request
    stats = json.loads(request(server.port, "/_stats").body)
    assert stats["paths"]["/flaky/2/quad.png"] == 3
    assert server.log.read_text().count("/flaky/2/quad.png flaky flaky-1") == 3
    image = shim.get("/iiif/3/imgflaky:quad.png/full/64,/0/default.jpg")
    assert image.status == 502  # one 503 from the server, passed on, not retried
    stats = json.loads(request(server.port, "/_stats").body)
    assert stats["paths"]["/flaky/1/quad.png"] == 1
    assert shim.get("/iiif/3/imgflaky:quad.png/full/64,/0/default.jpg").status == 200


def test_a_failing_backend_opens_its_circuit(faulty: tuple[Process, Process]) -> None:
    server, shim = faulty
    request(server.port, "/_reset")
    for _ in range(3):
        assert shim.get("/iiif/3/failing:quad.png/info.json").status == 502
    sent = json.loads(request(server.port, "/_stats").body)["total"]
    refused, seconds = _timed(shim, "/iiif/3/failing:quad.png/info.json")
    assert refused.status == 503 and seconds < 0.5
    assert refused.header("Retry-After") == "1" and "is failing" in refused.text
    assert json.loads(request(server.port, "/_stats").body)["total"] == sent  # spared
    assert shim.get("/iiif/3/ok:quad.png/info.json").status == 200  # other backends unaffected
    # half-open once breaker_reset has passed: one trial goes through, fails, opens it again
    wait_until(lambda: shim.get("/iiif/3/failing:quad.png/info.json").status == 502, "a trial", 5)
    assert shim.get("/iiif/3/failing:quad.png/info.json").status == 503
    assert 'iiif_shim_backend_circuit_state{backend="failing"} 2.0' in shim.get("/metrics").text


def _count(server: Process, path: str) -> int:
    counted: int = json.loads(request(server.port, "/_stats").body)["paths"].get(path, 0)
    return counted


def _stall(server: Process, shim: Process, backend: str, n: int) -> list[threading.Thread]:
    """``n`` requests for sizes of one image whose every upstream request stalls."""
    threads = [
        threading.Thread(
            target=shim.get,
            args=(f"/iiif/3/{backend}:stall~q.png/full/{100 + i},/0/default.jpg",),
            kwargs={"timeout": 30},
            daemon=True,
        )
        for i in range(n)
    ]
    request(server.port, "/_reset")
    for t in threads:
        t.start()
    wait_until(lambda: _count(server, "/stall/q.png") >= n, f"{n} stalls holding connections", 10)
    return threads


def test_a_stalled_image_holds_only_its_share_of_the_pool(
    faulty: tuple[Process, Process],
) -> None:
    server, shim = faulty
    # without a share, four stalls take every connection: the next image waits, then 503 busy
    stalls = _stall(server, shim, "unshared", 4)
    starved, seconds = _timed(shim, "/iiif/3/unshared:ok~quad.png/full/max/0/default.jpg")
    assert starved.status == 503 and "busy: no connection was free within 1s" in starved.text
    assert starved.header("Retry-After") == "1" and seconds < 1.5
    for t in stalls:
        t.join()
    # with a share of two, the stalled image holds two; the others are served at once
    stalls = _stall(server, shim, "pool", 2)  # the other two wait for the share: no request
    served, seconds = _timed(shim, "/iiif/3/pool:ok~quad.png/full/max/0/default.jpg")
    assert served.status == 200 and seconds < 0.5
    for t in stalls:
        t.join()


def test_memory_stayed_bounded(faulty: tuple[Process, Process]) -> None:
    """After every fault above (a 1 GB gzip bomb, a 10 MB JSON, an 800 MB tile bomb, 1 GB
    bodies), the shim's peak memory is that of ordinary work."""
    _, shim = faulty
    for identifier in ("gzip:1000000000", "tiles:bombed", "oversize:1000000000"):
        assert shim.get(f"/iiif/3/{identifier}/full/max/0/default.jpg").status == 502
    assert _peak_rss_mb(shim.proc.pid) < 300


@pytest.fixture
def iip_alone(images: Path, tmp_path: Path) -> Iterator[IipServer]:
    (tmp_path / "tiff").mkdir()
    make_tiff(images / f"{VALIDATOR_ID}.png", tmp_path / "tiff" / "v.tif")
    (tmp_path / "work").mkdir()
    server = IipServer(tmp_path / "tiff", tmp_path / "work", ready="v.tif")
    yield server
    server.stop()


def test_iipsrv_killed_and_restarted_under_load(iip_alone: IipServer, tmp_path: Path) -> None:
    config = write_config(
        tmp_path / "shim.yaml",
        f"""
        server: {{health_interval: 3600}}
        cache: {{image_bytes: 0, info_ttl: 1}}
        backends:
          iip: {{type: iip, url: "{iip_alone.url}/fcgi-bin/iipsrv.fcgi", path: "{{id}}.tif",
                timeout: 3, breaker_failures: 5, breaker_reset: 1}}
        routes:
          - {{match: "^[a-z]+$", backend: iip}}
        """,
    )
    shim = start_shim(config, tmp_path)
    statuses: list[tuple[float, int]] = []
    stop = threading.Event()

    def load(worker: int) -> None:
        i = 0
        while not stop.is_set():
            i += 1
            x, y = (i * 37 + worker * 101) % 700, (i * 53) % 700
            path = f"/iiif/3/v/{x},{y},300,300/{100 + i % 50},/0/default.jpg"
            started = time.monotonic()
            status = request(shim.port, path, timeout=30).status
            statuses.append((time.monotonic() - started, status))

    workers = [threading.Thread(target=load, args=(w,)) for w in range(4)]
    try:
        for t in workers:
            t.start()
        wait_until(lambda: len(statuses) >= 20, "load before the crash")
        iip_alone.kill_iipsrv()
        wait_until(lambda: {502, 503} & {code for _, code in statuses[-8:]}, "the crash seen")
        during = len(statuses)
        iip_alone.restart_iipsrv()
        wait_until(lambda: len(statuses) > during and statuses[-1][1] == 200, "served again", 10)
        recovered_at = len(statuses)
        wait_until(lambda: len(statuses) >= recovered_at + 20, "load after the recovery")
    finally:
        stop.set()
        for t in workers:
            t.join()
        shim.stop()
    codes = {code for _, code in statuses}
    assert codes <= {200, 502, 503, 504}, codes
    assert {502, 503} & codes, codes  # the crash was seen ...
    assert recovered_at is not None  # ... and survived
    assert all(code == 200 for _, code in statuses[recovered_at + 4 :])
    assert max(seconds for seconds, _ in statuses) < 3 + 1
