"""One contract, every backend and both image engines: the same IIIF requests, the same
expectations.

Each request goes to a shim over a different real server (``tests/shims.py``), rendering with
Pillow or with libvips (``imaging.engine``; ``tests/contract/engines.py``), all serving the
validator's 1000x1000 image of 10x10 flat coloured squares. Expectations do not come from the
shim's code: the output size is written in the table, and the colour at the centre of every
square that shows is found by mapping the output pixel back through the request's geometry
(region, scale, mirror, rotation) to the source image. The tolerance allows for the JPEG tiles
of pyramids and for resampling, not for wrong geometry: a square off by one is a different
colour.
"""

from __future__ import annotations

import io
from dataclasses import dataclass

import pytest
from PIL import Image

from tests.contract.engines import ENGINES, shims_for
from tests.shims import BACKEND_NAMES, BackendShim
from tests.support import validator_image

Point = tuple[float, float]


@dataclass(frozen=True)
class Case:
    path: str  # region/size/rotation/quality.format
    size: tuple[int, int]
    region: tuple[int, int, int, int]
    scaled: tuple[int, int]  # size before rotation
    turn: str = "0"  # "0", "90", "180", "270", with "!" for mirroring
    check: str = "colour"  # colour | gray | bitonal | alpha-corners | size


CASES = [
    Case("full/max/0/default.jpg", (1000, 1000), (0, 0, 1000, 1000), (1000, 1000)),
    Case("100,200,300,200/max/0/default.png", (300, 200), (100, 200, 300, 200), (300, 200)),
    Case("pct:10,20,40,30/200,/0/default.jpg", (200, 150), (100, 200, 400, 300), (200, 150)),
    Case("full/!300,250/0/default.png", (250, 250), (0, 0, 1000, 1000), (250, 250)),
    Case("250,250,500,500/300,100/0/default.png", (300, 100), (250, 250, 500, 500), (300, 100)),
    Case("0,0,512,512/256,256/0/default.jpg", (256, 256), (0, 0, 512, 512), (256, 256)),
    Case("512,512,488,488/244,244/0/default.jpg", (244, 244), (512, 512, 488, 488), (244, 244)),
    Case("square/max/90/default.png", (1000, 1000), (0, 0, 1000, 1000), (1000, 1000), "90"),
    Case("full/300,/180/default.png", (300, 300), (0, 0, 1000, 1000), (300, 300), "180"),
    Case("0,0,600,400/300,/270/default.png", (200, 300), (0, 0, 600, 400), (300, 200), "270"),
    Case("full/300,/!0/default.png", (300, 300), (0, 0, 1000, 1000), (300, 300), "!0"),
    Case(
        "200,100,600,400/300,/!90/default.png", (200, 300), (200, 100, 600, 400), (300, 200), "!90"
    ),
    Case("full/^1500,/0/default.jpg", (1500, 1500), (0, 0, 1000, 1000), (1500, 1500)),
    Case("900,900,100,100/max/0/default.webp", (100, 100), (900, 900, 100, 100), (100, 100)),
    Case("full/300,/0/gray.png", (300, 300), (0, 0, 1000, 1000), (300, 300), check="gray"),
    Case("full/300,/0/bitonal.png", (300, 300), (0, 0, 1000, 1000), (300, 300), check="bitonal"),
    Case("full/300,/0/color.gif", (300, 300), (0, 0, 1000, 1000), (300, 300)),
    Case("full/200,/0/default.tif", (200, 200), (0, 0, 1000, 1000), (200, 200)),
    Case("full/200,/0/default.jp2", (200, 200), (0, 0, 1000, 1000), (200, 200)),
    Case(
        "full/200,/30/default.png",
        (273, 273),
        (0, 0, 1000, 1000),
        (200, 200),
        check="alpha-corners",
    ),
    Case("998,998,2,2/1,1/0/default.png", (1, 1), (998, 998, 2, 2), (1, 1), check="size"),
]


SOURCE = Image.open(validator_image()).convert("RGB")


def to_source(case: Case, u: float, v: float) -> Point:
    """Output pixel centre -> source coordinates, undoing rotation, mirror and scale."""
    w, h = case.scaled
    mirror, degrees = case.turn.startswith("!"), int(case.turn.lstrip("!"))
    # undo the clockwise rotation: the output is the scaled image turned
    if degrees == 90:
        u, v = v, h - u
    elif degrees == 180:
        u, v = w - u, h - v
    elif degrees == 270:
        u, v = w - v, u
    if mirror:
        u = w - u
    x, y, rw, rh = case.region
    return x + u * rw / w, y + v * rh / h


def square_centres(case: Case) -> list[tuple[Point, Point]]:
    """(output point, source point): for each square whose centre shows, an output pixel that
    maps to within 12 source pixels of that centre (well clear of the square's edges)."""
    found: dict[Point, Point] = {}
    ow, oh = case.size
    step = max(1, min(ow, oh) // 60)
    for v in range(0, oh, step):
        for u in range(0, ow, step):
            sx, sy = to_source(case, u + 0.5, v + 0.5)
            centre = ((sx // 100) * 100 + 50, (sy // 100) * 100 + 50)
            if abs(sx - centre[0]) < 12 and abs(sy - centre[1]) < 12:
                found.setdefault(centre, (u + 0.5, v + 0.5))
    return [(out, centre) for centre, out in found.items()]


# Neighbouring squares differ by at least 27 in some channel, so a tolerance of 20 still
# catches a square off by one; it allows JPEG tiles (4:2:0 chroma) and resampling.
TOLERANCE = 20


def median_around(im: Image.Image, u: int, v: int) -> tuple[int, ...]:
    """Per-channel median of the 3x3 pixels around (u, v): one JPEG-noisy pixel is not a test."""
    box = im.crop((max(0, u - 1), max(0, v - 1), min(im.width, u + 2), min(im.height, v + 2)))
    bands = [sorted(band.tobytes()) for band in box.split()]
    return tuple(int(b[len(b) // 2]) for b in bands)


def luminance(rgb: tuple[int, ...]) -> float:
    r, g, b = rgb[:3]
    return 0.299 * r + 0.587 * g + 0.114 * b


def fetch(shim: BackendShim, case: Case) -> Image.Image:
    identifier = shim.validator_id
    resp = shim.process.get(f"/iiif/3/{identifier}/{case.path}")
    assert resp.status == 200, f"{shim.name} {case.path}: {resp.status} {resp.text[:200]}"
    fmt = case.path.rsplit(".", 1)[1]
    media = {
        "jpg": "image/jpeg",
        "png": "image/png",
        "webp": "image/webp",
        "gif": "image/gif",
        "tif": "image/tiff",
        "jp2": "image/jp2",
    }[fmt]
    assert resp.header("Content-Type") == media
    im = Image.open(io.BytesIO(resp.body))
    im.load()
    return im


@pytest.mark.servers
@pytest.mark.parametrize("case", CASES, ids=lambda c: c.path)
@pytest.mark.parametrize("backend", BACKEND_NAMES)
@pytest.mark.parametrize("engine", ENGINES)
def test_contract(request: pytest.FixtureRequest, engine: str, backend: str, case: Case) -> None:
    im = fetch(shims_for(request, engine)[backend], case)
    if case.check == "alpha-corners":  # rotated canvas: |w cos| + |h sin|, rounded either way
        assert all(abs(a - b) <= 2 for a, b in zip(im.size, case.size, strict=True)), im.size
    else:
        assert im.size == case.size, f"{backend}: {im.size} != {case.size}"
    if case.check == "size":
        return
    if case.check == "alpha-corners":
        rgba = im.convert("RGBA")
        assert rgba.getpixel((0, 0))[3] == 0 and rgba.getpixel((im.width // 2, im.height // 2))[3]
        return
    rgb = im.convert("RGB")
    centres = square_centres(case)
    assert centres, "the case must show at least one square"
    for (u, v), (sx, sy) in centres:
        got = median_around(rgb, int(u), int(v))
        want = SOURCE.getpixel((int(sx), int(sy)))
        assert isinstance(got, tuple) and isinstance(want, tuple)
        where = f"{backend} {case.path} at output {int(u)},{int(v)} (source {sx},{sy})"
        if case.check == "gray":
            assert max(got) - min(got) <= 6, f"{where}: {got} is not gray"
            assert abs(got[0] - luminance(want)) <= 14, f"{where}: {got} vs luma of {want}"
        elif case.check == "bitonal":
            assert got[0] in (0, 255) and got[0] == got[1] == got[2], f"{where}: {got}"
            if abs(luminance(want) - 128) > 20:  # clear of the threshold
                assert got[0] == (255 if luminance(want) >= 128 else 0), f"{where}: {got}"
        else:
            assert all(abs(a - b) <= TOLERANCE for a, b in zip(got, want, strict=False)), (
                f"{where}: {got} != {want}"
            )


@pytest.mark.servers
@pytest.mark.parametrize("backend", BACKEND_NAMES)
@pytest.mark.parametrize("engine", ENGINES)
def test_errors_are_the_same(request: pytest.FixtureRequest, engine: str, backend: str) -> None:
    shim = shims_for(request, engine)[backend]
    ident = shim.validator_id
    missing = "samples:999" if backend == "contentdm" else "no-such-image"
    assert shim.process.get(f"/iiif/3/{missing}/info.json").status == 404
    assert shim.process.get(f"/iiif/3/{ident}/1000,0,10,10/max/0/default.jpg").status == 400
    assert shim.process.get(f"/iiif/3/{ident}/full/1001,/0/default.jpg").status == 400
    info = shim.process.get(f"/iiif/3/{ident}/info.json")
    assert info.status == 200 and info.header("Access-Control-Allow-Origin") == "*"
