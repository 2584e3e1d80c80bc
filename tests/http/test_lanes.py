"""Admission by kind, through real shim processes: metadata that stalls on many identifiers
leaves connections for images (a real stalling upstream, ``tests/faulty.py``), and PDFs and
cold manifests asked all at once do not crowd out the images asked beside them. Evidence is
statuses and counters, never timings: the deadlines here are far from what the work takes."""

from __future__ import annotations

import contextlib
import http.client
import io
import threading
from collections.abc import Iterator
from pathlib import Path

import pytest
from PIL import Image

from tests.support import Process, Response, start_faulty, start_shim, wait_until, write_config

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


def _jpeg(size: tuple[int, int], colour: tuple[int, int, int]) -> bytes:
    out = io.BytesIO()
    Image.new("RGB", size, colour).save(out, "JPEG", quality=80)
    return out.getvalue()


def test_pdfs_and_manifests_do_not_crowd_out_images(tmp_path: Path) -> None:
    """Ten PDFs of thirty 1800x1200 pages and ten cold manifests of 300 canvases each, all
    asked at once, while images are asked without pause: every image is served; PDFs and
    manifests are served or, beyond what their lanes admit, get 503 with Retry-After."""
    root = tmp_path / "objects"
    tiny, page = _jpeg((60, 40), (200, 200, 200)), _jpeg((1800, 1200), (180, 40, 40))
    for m in range(10):
        (root / f"m{m}").mkdir(parents=True)
        for c in range(300):  # every canvas its own file: every facts lookup is cold
            (root / f"m{m}" / f"c{c}.jpg").write_bytes(tiny)
        (root / f"p{m}").mkdir()
        for c in range(30):
            (root / f"p{m}" / f"c{c}.jpg").write_bytes(page)
    master = root / "master.jpg"
    Image.effect_noise((2000, 1500), 40).convert("RGB").save(master, quality=90)
    config = write_config(
        tmp_path / "shim.yaml",
        f"""
        server: {{workers: 2, request_timeout: 300, health_interval: 3600}}
        cache: {{image_bytes: 0}}
        backends:
          objects: {{type: files, root: "{root}"}}
        routes:
          - {{backend: objects}}
        presentation:
          sources:
            scans: {{type: folder, backend: objects}}
        """,
    )
    shim = start_shim(config, tmp_path)
    try:
        documents: dict[str, Response] = {}
        images: list[Response] = []
        done = threading.Event()

        def document(path: str) -> None:
            documents[path] = shim.get(path, timeout=300)

        def stream(lane: int) -> None:
            n = 0
            while not done.is_set() or n < 5:  # at least five each, then as long as the rest
                size = 100 + lane * 100 + n % 50  # each a new rendering (the image cache is off)
                images.append(shim.get(f"/iiif/3/master.jpg/full/{size},/0/default.jpg"))
                n += 1

        streams = [threading.Thread(target=stream, args=(i,)) for i in range(3)]
        for t in streams:
            t.start()
        asked = [f"/iiif/presentation/3/m{m}/manifest" for m in range(10)]
        asked += [f"/iiif/presentation/p{m}/pdf" for m in range(10)]
        threads = [threading.Thread(target=document, args=(path,)) for path in asked]
        for t in threads:
            t.start()
        for t in threads:
            t.join(400)
        done.set()
        for t in streams:
            t.join(120)
        failed = [(r.status, r.text) for r in images if r.status != 200]
        assert not failed, f"{len(failed)} of {len(images)} images refused: {failed[:3]}"
        for path, resp in documents.items():
            assert resp.status in (200, 503), (path, resp.status, resp.text)
            if resp.status == 503:
                assert resp.header("Retry-After") and "busy" in resp.text, (path, resp.text)
        assert len(documents) == 20
        served = [path for path, resp in documents.items() if resp.status == 200]
        assert any(p.endswith("/manifest") for p in served)
        assert any(p.endswith("/pdf") for p in served)
    finally:
        shim.stop()


def test_cold_manifests_leave_connections_for_info_json(tmp_path: Path, upstream: Process) -> None:
    """A manifest of eight canvases whose facts never come (as many lookups at once as a
    document makes) on a backend of eight connections, then the info.json of another image
    of that backend: documents' facts hold at most half of what metadata may, so it gets a
    connection and is served (it waited behind them for `pool_timeout`, then 503)."""
    rows = ["object,image"] + [f"cold,stall~c{i}.jpg" for i in range(STALLED)]
    (tmp_path / "objects.csv").write_text("\n".join(rows) + "\n")
    config = write_config(
        tmp_path / "shim.yaml",
        f"""
        server: {{health_interval: 3600, shutdown_timeout: 1}}
        backends:
          up:
            type: http
            url: "http://127.0.0.1:{upstream.port}/{{fault}}/{{file}}"
            max_connections: {STALLED}
            timeout: 60
        routes:
          - {{match: "^(?P<fault>stall|ok)~(?P<file>[^/~]+)$", backend: up, id: "{{id}}"}}
        presentation:
          sources:
            catalogue: {{type: csv, path: objects.csv, columns: {{object: object, image: image}}}}
        """,
    )
    shim = start_shim(config, tmp_path)
    try:

        def manifest() -> None:  # answered when the shim stops: by then nobody listens
            with contextlib.suppress(OSError, http.client.HTTPException):
                shim.get("/iiif/presentation/3/cold/manifest", timeout=90)

        threading.Thread(target=manifest, daemon=True).start()
        in_use = "iiif_shim_backend_connections_in_use"
        waiting = "iiif_shim_backend_connections_waiting"
        wait_until(
            lambda: _gauge(shim, in_use, "up") + _gauge(shim, waiting, "up") >= STALLED,
            f"the manifest's {STALLED} facts lookups holding or waiting for a connection",
            30,
        )
        info = shim.get("/iiif/3/ok~page.jpg/info.json", timeout=60)
        assert info.status == 200, info.text
        assert _gauge(shim, in_use, "up") < STALLED - 2  # the manifest holds half of six
    finally:
        shim.stop()


def _metric(shim: Process, sample: str) -> float:
    for line in shim.get("/metrics").text.splitlines():
        if line.startswith(sample + " "):
            return float(line.split()[-1])
    return 0.0


def test_a_stalled_object_source_leaves_manifests_their_lookups(
    tmp_path: Path, upstream: Process
) -> None:
    """Two collections of a catalogue whose every record stalls (eight objects each, as many
    as a document looks up at once, sixteen in all: the process's whole gate of lookups) are
    pending; a manifest of another source is served meanwhile, they still pending (their
    record fetches held the gate, and the manifest waited until they gave up)."""
    objects = ", ".join(f"o{i}" for i in range(8))
    rows = ["object,image", "book,ok~page.jpg", "book,ok~page.jpg"]
    (tmp_path / "objects.csv").write_text("\n".join(rows) + "\n")
    base = f"http://127.0.0.1:{upstream.port}"
    config = write_config(
        tmp_path / "shim.yaml",
        f"""
        server: {{health_interval: 3600, shutdown_timeout: 1, request_timeout: 20}}
        backends:
          up: {{type: http, url: "{base}/{{fault}}/{{file}}"}}
        routes:
          - {{match: "^(?P<fault>stall|ok)~(?P<file>[^/~]+)$", backend: up, id: "{{id}}"}}
        presentation:
          sources:
            stalled:
              type: json
              objects: [{objects}]
              url: "{base}/stall/{{object}}"
              fields: {{images: "$.images[*]"}}
              timeout: 120
            catalogue: {{type: csv, path: objects.csv, columns: {{object: object, image: image}}}}
        """,
    )
    shim = start_shim(config, tmp_path)
    try:
        answered: list[int] = []

        def collection() -> None:
            with contextlib.suppress(OSError, http.client.HTTPException):
                answered.append(
                    shim.get("/iiif/presentation/3/collection/stalled", timeout=90).status
                )

        lookups = 'iiif_shim_cache_lookups_total{result="miss",tier="record"}'
        for n in (8, 16):  # one after the other: the second's lookups join the first's fetches
            threading.Thread(target=collection, daemon=True).start()
            wait_until(lambda n=n: _metric(shim, lookups) >= n, f"{n} records looked up", 30)
        manifest = shim.get("/iiif/presentation/3/book/manifest", timeout=60)
        assert manifest.status == 200, manifest.text
        assert answered == [], "the manifest waited for the stalled collections to give up"
    finally:
        shim.stop()
