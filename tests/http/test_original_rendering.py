"""The "download original" over real sockets: each canvas of a 3.0 and a 2.1 manifest whose
master the image service sends as it is (``core/passthrough.py``) offers it as a
``rendering``, and the object page links it; fetched from the shim, that link is the master's
very bytes. A master whose bytes are not the answer (larger than the limits, CMYK, 16 bits, a
pyramid TIFF) offers nothing, and the manifests stay valid."""

from __future__ import annotations

import json
import random
import re
import subprocess
from collections.abc import Iterator
from html import unescape
from pathlib import Path
from typing import Any

import pytest
from PIL import Image

from tests.presentation_checks import check_v2, check_v3
from tests.support import Process, need_tool, start_shim, write_config

W, H = 600, 400
LIMIT = 1000  # iiif.max_width and max_height: p5 is wider
# canvas (1-based) -> (master file, IIIF format, media type, name shown), or None: not offered
MASTERS: dict[int, tuple[str, str, str, str] | None] = {
    1: ("p1.jpg", "jpg", "image/jpeg", "JPEG"),
    2: ("p2.png", "png", "image/png", "PNG"),
    3: ("p3.tif", "tif", "image/tiff", "TIFF"),
    4: ("p4.webp", "webp", "image/webp", "WebP"),
    5: None,  # wider than the limits: full/max is not the original
    6: None,  # CMYK
    7: None,  # 16 bits
    8: None,  # a pyramid TIFF (several pages)
}


def _noise(mode: str, size: tuple[int, int], seed: int) -> Image.Image:
    rng = random.Random(seed)
    return Image.frombytes(mode, size, rng.randbytes(size[0] * size[1] * len(mode)))


@pytest.fixture(scope="module")
def root(tmp_path_factory: pytest.TempPathFactory) -> Path:
    root = tmp_path_factory.mktemp("original-rendering")
    book = root / "objects" / "book"
    book.mkdir(parents=True)
    _noise("RGB", (W, H), 1).save(book / "p1.jpg", quality=93)  # not what a re-encoding makes
    _noise("RGBA", (W, H), 2).save(book / "p2.png", compress_level=1)
    _noise("RGB", (W, H), 3).save(book / "p3.tif")
    _noise("RGB", (W, H), 4).save(book / "p4.webp", quality=80)
    _noise("RGB", (LIMIT + 200, 300), 5).save(book / "p5.jpg", quality=90)
    Image.new("CMYK", (W, H), (0, 255, 255, 0)).save(book / "p6.jpg")
    Image.new("I;16", (W, H), 40000).save(book / "p7.png")
    _noise("RGB", (W, H), 8).save(root / "flat.png")
    tiled = "tile,pyramid,tile-width=128,tile-height=128"
    subprocess.run(
        [need_tool("vips"), "copy", str(root / "flat.png"), f"{book / 'p8.tif'}[{tiled}]"],
        check=True,
    )
    return root


@pytest.fixture(scope="module")
def shim(root: Path) -> Iterator[Process]:
    config = write_config(
        root / "shim.yaml",
        f"""
        iiif: {{max_width: {LIMIT}, max_height: {LIMIT}}}
        backends:
          objects:
            type: files
            root: "{root / "objects"}"
            extensions: [".jpg", ".png", ".tif", ".webp"]
        routes:
          - {{backend: objects}}
        presentation:
          language: en
          sources:
            scans: {{type: folder, backend: objects}}
        """,
    )
    proc = start_shim(config, root)
    yield proc
    proc.stop()


def _json(shim: Process, path: str) -> dict[str, Any]:
    resp = shim.get(path)
    assert resp.status == 200, resp.text
    doc: dict[str, Any] = json.loads(resp.body)
    return doc


def _local(url: str) -> str:
    """The path of a URL the shim gave (its public base is this very server)."""
    return re.sub(r"^https?://[^/]+", "", url)


def _fetched_is_the_master(shim: Process, url: str, master: Path, media_type: str) -> None:
    resp = shim.get(_local(url))
    assert resp.status == 200, resp.text
    assert resp.header("Content-Type") == media_type
    assert resp.body == master.read_bytes()  # the very bytes, never re-encoded


def test_a_3_0_canvas_offers_its_original_as_a_rendering(shim: Process, root: Path) -> None:
    doc = _json(shim, "/iiif/presentation/3/book/manifest")
    assert check_v3(doc) == []
    canvases = doc["items"]
    assert len(canvases) == len(MASTERS)
    for index, canvas in enumerate(canvases, start=1):
        expected = MASTERS[index]
        if expected is None:
            assert "rendering" not in canvas, (index, canvas["rendering"])
            continue
        name, fmt, media_type, shown = expected
        (rendering,) = canvas["rendering"]
        assert rendering["id"].endswith(f"/iiif/3/book%2Fp{index}/full/max/0/default.{fmt}")
        assert rendering["type"] == "Image"
        assert rendering["format"] == media_type
        assert rendering["label"] == {"en": [f"Original image ({shown}, {W} x {H})"]}
        assert (rendering["width"], rendering["height"]) == (W, H)
        _fetched_is_the_master(shim, rendering["id"], root / "objects" / "book" / name, media_type)


def test_a_2_1_canvas_offers_its_original_as_a_rendering(shim: Process, root: Path) -> None:
    doc = _json(shim, "/iiif/presentation/2/book/manifest")
    assert check_v2(doc) == []
    canvases = doc["sequences"][0]["canvases"]
    assert len(canvases) == len(MASTERS)
    for index, canvas in enumerate(canvases, start=1):
        expected = MASTERS[index]
        if expected is None:
            assert "rendering" not in canvas, (index, canvas["rendering"])
            continue
        name, fmt, media_type, shown = expected
        rendering = canvas["rendering"]
        assert rendering["@id"].endswith(f"/iiif/2/book%2Fp{index}/full/full/0/default.{fmt}")
        assert rendering["format"] == media_type
        assert rendering["label"] == f"Original image ({shown}, {W} x {H})"
        _fetched_is_the_master(shim, rendering["@id"], root / "objects" / "book" / name, media_type)


def test_the_object_page_links_each_original(shim: Process, root: Path) -> None:
    resp = shim.get("/objects/book")
    assert resp.status == 200, resp.text
    links = re.findall(r'<a href="([^"]+)" download>Download original</a> \(([^)]*)\)', resp.text)
    offered = {i: m for i, m in MASTERS.items() if m is not None}
    assert len(links) == len(offered), links
    for (href, shown), (index, (name, fmt, media_type, fmt_name)) in zip(
        links, offered.items(), strict=True
    ):
        url = unescape(href)
        assert url.endswith(f"/iiif/3/book%2Fp{index}/full/max/0/default.{fmt}")
        assert unescape(shown) == f"{fmt_name}, {W} x {H}"
        _fetched_is_the_master(shim, url, root / "objects" / "book" / name, media_type)
