"""Upstream bodies cost at most about their size, and only when their pixels are needed.

A shim process of its own for each measurement (its peak resident memory, VmHWM, is read from
``/proc`` before and after one request) in front of ``tests/faulty.py``: a 250 MB TIFF whose
directory is at the end (served with and without ``Range``), and gzip bodies that inflate to
300 MiB. Memory, not time, is what is asserted, with generous margins.
"""

from __future__ import annotations

import json
from collections.abc import Iterator
from pathlib import Path

import pytest

from tests.support import Process, request, start_faulty, start_shim, write_config

BIG = 250_000_000  # bytes of the large master (16000 x 15625 grey pixels)
BOMB = 300 * 1024 * 1024  # what the gzip bodies inflate to (about 300 KiB on the wire)
MB = 1024 * 1024


@pytest.fixture(scope="module")
def upstream(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Process]:
    server = start_faulty(tmp_path_factory.mktemp("bodies-root"), tmp_path_factory.mktemp("up"))
    yield server
    server.stop()


@pytest.fixture
def shim(upstream: Process, tmp_path: Path) -> Iterator[Process]:
    """A fresh shim (its peak memory is its own) whose backends all have room for BIG."""
    base = f"http://127.0.0.1:{upstream.port}"
    kinds = ("tailtiff", "tailtiffwhole", "gzipbomb", "gzipimage")
    backends = "".join(
        f'  {kind}: {{type: http, url: "{base}/{kind}/{{id}}", timeout: 60}}\n' for kind in kinds
    )
    routes = "".join(
        f'  - {{match: "^{kind}:(?P<n>[0-9]+)$", backend: {kind}, id: "{{n}}"}}\n' for kind in kinds
    )
    config = write_config(
        tmp_path / "shim.yaml",
        "server: {health_interval: 3600, memory_budget: 2147483648}\n"
        "cache: {decoded_bytes: 0}\n"
        f"backends:\n{backends}routes:\n{routes}",
    )
    process = start_shim(config, tmp_path)
    # warmed up: the libraries a request loads are loaded before the peak is read
    assert process.get("/iiif/3/tailtiff:100000/info.json").status == 200
    assert process.get("/iiif/3/tailtiff:100000/full/64,/0/default.jpg").status == 200
    yield process
    process.stop()


def _peak(process: Process) -> int:
    for line in Path(f"/proc/{process.proc.pid}/status").read_text().splitlines():
        if line.startswith("VmHWM:"):
            return int(line.split()[1]) * 1024
    raise AssertionError("no VmHWM")


def _rise(shim: Process, path: str, status: int) -> int:
    """How much one request for ``path`` raised the shim's peak memory, in bytes."""
    before = _peak(shim)
    resp = shim.get(path, timeout=120)
    assert resp.status == status, (resp.status, resp.text[:300])
    return _peak(shim) - before


def _asked(upstream: Process, path: str) -> int:
    return int(json.loads(request(upstream.port, "/_stats").body)["paths"].get(path, 0))


def test_info_of_a_master_with_its_header_at_the_end_reads_ranges(
    shim: Process, upstream: Process
) -> None:
    """The directory of the TIFF is 250 MB in: it is fetched by a second Range request, not by
    reading the master (which raised the peak by about 734 MB)."""
    before = _asked(upstream, f"/tailtiff/{BIG}")
    rise = _rise(shim, f"/iiif/3/tailtiff:{BIG}/info.json", 200)
    doc = json.loads(shim.get(f"/iiif/3/tailtiff:{BIG}/info.json").body)
    assert (doc["width"], doc["height"]) == (16000, 15625)
    assert rise < BIG // 10, f"info.json raised the peak by {rise / MB:.0f} MB"
    assert _asked(upstream, f"/tailtiff/{BIG}") - before <= 3  # the first bytes, then the tail


def test_info_from_a_server_that_ignores_range_is_not_held_in_memory(shim: Process) -> None:
    """A server that sends the whole master for a Range request: the body is read once, to a
    temporary file, and its header found there."""
    rise = _rise(shim, f"/iiif/3/tailtiffwhole:{BIG}/info.json", 200)
    assert rise < BIG // 10, f"info.json raised the peak by {rise / MB:.0f} MB"


def test_an_image_of_a_large_master_costs_about_its_pixels(shim: Process) -> None:
    """The pixels are needed: the master is decoded (250 MB of grey), its body is held once
    at most (it raised the peak by about 1 GB)."""
    rise = _rise(shim, f"/iiif/3/tailtiff:{BIG}/full/256,/0/default.jpg", 200)
    assert rise < BIG * 1.5, f"the image raised the peak by {rise / MB:.0f} MB"


@pytest.mark.parametrize(
    ("path", "words"),
    [
        # a gzip body of zeros: its first bytes, inflated, are not an image's
        (f"/iiif/3/gzipbomb:{BOMB}/info.json", "did not return an image"),
        (f"/iiif/3/gzipbomb:{BOMB}/full/64,/0/default.jpg", "did not return an image"),
        # a JPEG's first bytes, then zeros: the master is read whole, and refused as encoded
        (f"/iiif/3/gzipimage:{BOMB}/info.json", "image body encoded as 'gzip'"),
        (f"/iiif/3/gzipimage:{BOMB}/full/64,/0/default.jpg", "image body encoded as 'gzip'"),
    ],
)
def test_a_compressed_image_body_is_refused_without_inflating_it(
    shim: Process, path: str, words: str
) -> None:
    """We ask for ``identity``: an image body that comes gzip-encoded anyway is a 502, the
    bomb never inflated (it raised the server's peak by about 1.5 GB)."""
    before = _peak(shim)
    resp = shim.get(path, timeout=120)
    rise = _peak(shim) - before
    assert resp.status == 502, (resp.status, resp.text[:300])
    assert words in resp.text, resp.text
    assert rise < 32 * MB, f"the gzip body raised the peak by {rise / MB:.0f} MB"
