"""Admission by kind, through real shim processes: metadata that stalls on many identifiers
leaves connections for images (a real stalling upstream, ``tests/faulty.py``). Evidence is
statuses and counters, never timings: the deadlines here are far from what the work takes."""

from __future__ import annotations

import contextlib
import http.client
import threading
from collections.abc import Iterator
from pathlib import Path

import pytest
from PIL import Image

from tests.support import Process, start_faulty, start_shim, wait_until, write_config

STALLED = 8  # identifiers whose metadata stalls: as many as the backend has connections


@pytest.fixture(scope="module")
def upstream(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Process]:
    root = tmp_path_factory.mktemp("lanes-root")
    Image.new("RGB", (800, 600), (20, 120, 200)).save(root / "page.jpg", quality=85)
    proc = start_faulty(root, tmp_path_factory.mktemp("lanes-upstream"))
    yield proc
    proc.stop()


def _gauge(shim: Process, name: str, backend: str) -> float:
    sample = f'{name}{{backend="{backend}"}} '
    for line in shim.get("/metrics").text.splitlines():
        if line.startswith(sample):
            return float(line.split()[-1])
    return 0.0


def test_stalled_metadata_leaves_connections_for_images(tmp_path: Path, upstream: Process) -> None:
    """Eight identifiers whose facts never come (one request each, as many as the backend has
    connections), then an image whose facts are known: it gets a connection and is served,
    instead of waiting for the stalls (20 s here) and getting 503."""
    config = write_config(
        tmp_path / "shim.yaml",
        f"""
        server: {{health_interval: 3600, shutdown_timeout: 1}}
        backends:
          up:
            type: http
            url: "http://127.0.0.1:{upstream.port}/{{fault}}/{{file}}"
            max_connections: {STALLED}
            pool_timeout: 20
            timeout: 60
        routes:
          - {{match: "^(?P<fault>stall|ok)~(?P<file>[^/~]+)$", backend: up, id: "{{id}}"}}
        """,
    )
    shim = start_shim(config, tmp_path)
    try:
        assert shim.get("/iiif/3/ok~page.jpg/info.json").status == 200  # its facts are known

        def stall(i: int) -> None:  # answered when the shim stops: by then nobody listens
            with contextlib.suppress(OSError, http.client.HTTPException):
                shim.get(f"/iiif/3/stall~s{i}.jpg/info.json", timeout=90)

        stalls = [threading.Thread(target=stall, args=(i,), daemon=True) for i in range(STALLED)]
        for t in stalls:
            t.start()
        in_use = "iiif_shim_backend_connections_in_use"
        waiting = "iiif_shim_backend_connections_waiting"
        wait_until(
            lambda: _gauge(shim, in_use, "up") + _gauge(shim, waiting, "up") >= STALLED,
            f"{STALLED} metadata requests holding or waiting for a connection",
            30,
        )
        assert _gauge(shim, in_use, "up") < STALLED  # metadata holds fewer than all of them
        image = shim.get("/iiif/3/ok~page.jpg/full/200,/0/default.jpg", timeout=60)
        assert image.status == 200, image.text
        assert image.image().size == (200, 150)
    finally:
        shim.stop()
