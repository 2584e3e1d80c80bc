"""The degraded tier of a restricted image: a virtual image of ``ceil(W*s)`` x ``ceil(H*s)``
pixels presented at the image's size (``Limits.degraded``, ``TierScale``): any region at any
output within its limits resolves (the zoom levels viewers build from ``width``/``height``),
the plan takes whole blocks of the virtual image from the backend at the tier's scale (never
more, never a grid shifted by a pixel), and the engine makes the answer from those pixels alone
(``Steps.virtual``), under a key of its own."""

from __future__ import annotations

import io
import math
from collections.abc import Iterator
from typing import Any

import pytest
from PIL import Image, ImageStat

from iiif_shim.base.errors import BadRequest
from iiif_shim.core.planner import plan
from iiif_shim.export.plan import (
    canonical_tiles,
    leaflet_tiles,
    mirador_tiles,
    openseadragon_tiles,
)
from iiif_shim.iiif.info import Offer, TileGrid, image_info
from iiif_shim.iiif.profile import Format, Quality, Version
from iiif_shim.iiif.request import parse_image_request
from iiif_shim.iiif.resolve import Box, Limits, height_for_width, resolve
from iiif_shim.imaging import pillow
from iiif_shim.imaging.cost import Allowance
from iiif_shim.imaging.fetched import Fetched
from iiif_shim.imaging.registry import engine_named
from iiif_shim.model.facts import SourceInfo
from iiif_shim.model.plan import Capabilities, SourceRef, Steps

SERVER = Limits(max_width=12000, max_height=12000, max_area=100_000_000)
TIER = SERVER.degraded(1000, 6000, 4000)
SOURCE = SourceInfo(width=6000, height=4000)
REF = SourceRef("b", "x", "v1")


# the reviewer's tier: 100 px of a 6000x4000 master, one tier pixel is 60x60 of its pixels
SMALL = SERVER.degraded(100, 6000, 4000)


def resolved(
    path: str,
    limits: Limits = TIER,
    version: Version = Version.V3,
    size: tuple[int, int] = (6000, 4000),
) -> tuple[int, int]:
    region, size_text, rotation, qf = path.split("/")
    req = parse_image_request(version, "x", region, size_text, rotation, qf)
    r = resolve(req, size[0], size[1], limits)
    return r.width, r.height


def test_max_and_confined_are_confined_to_the_tier() -> None:
    assert resolved("full/max/0/default.jpg") == (1000, 666)
    assert resolved("full/!5000,5000/0/default.jpg") == (1000, 666)
    assert resolved("full/max/0/default.jpg", SERVER) == (6000, 4000)
    assert resolved("full/max/0/default.jpg", TIER, Version.V2) == (1000, 666)
    with pytest.raises(BadRequest):  # as past any limit: `full` in 2.1 is the whole size
        resolved("full/full/0/default.jpg", TIER, Version.V2)


def test_any_region_at_any_size_within_the_limits_resolves() -> None:
    """A review's reproduction (2400x1600, max_size 300): OpenSeadragon's tiles at its own zoom
    levels were 400. The information is capped by the plan, not the output size."""
    tier = SERVER.degraded(300, 2400, 1600)
    for path in (
        "0,0,1200,1200/300,300/0/default.jpg",
        "0,0,600,600/300,300/0/default.jpg",
        "0,0,2400,1600/300,200/0/default.jpg",
        "1200,1200,1200,400/300,100/0/default.jpg",
    ):
        width, height = path.split("/")[1].split(",")
        assert resolved(path, tier, size=(2400, 1600)) == (int(width), int(height))
    assert resolved("0,0,512,512/max/0/default.jpg") == (512, 512)
    assert resolved("0,0,512,512/512,/0/default.jpg") == (512, 512)
    with pytest.raises(BadRequest):  # the output past maxWidth: as on any server
        resolved("full/1200,/0/default.jpg")
    with pytest.raises(BadRequest):  # no upscaling past the region's own pixels
        resolved("0,0,10,10/20,20/0/default.jpg")


def test_info_offers_only_what_the_tier_serves() -> None:
    offer = Offer(frozenset(Format), TIER, 512)
    doc = image_info(Version.V3, "http://h/degraded/3/x", SOURCE, offer)
    assert (doc["width"], doc["height"]) == (6000, 4000)
    assert (doc["maxWidth"], doc["maxHeight"]) == (1000, 1000)
    assert max(s["width"] for s in doc["sizes"]) == 1000
    factors = doc["tiles"][0]["scaleFactors"]
    assert min(factors) == 8  # 6000/1000 = 6: the first power of two at least that
    top = factors[-1]
    assert math.ceil(6000 / top) <= 512
    for sf in factors:  # every tile of every level is servable
        w, h = resolved(f"0,0,{512 * sf},{512 * sf}/512,/0/default.jpg")
        assert (w, h) == (512, 512) or max(w, h) <= 512
    grid = SourceInfo(width=6000, height=4000, tiles=TileGrid(256, 256, (1, 2, 4)))
    doc = image_info(Version.V3, "http://h/degraded/3/x", grid, offer)
    assert doc["tiles"][0]["scaleFactors"] == [8, 16, 32]


SCALER = Capabilities(region=True, size=True)
PYRAMID = Capabilities(region=True, reductions=True)
FILE = Capabilities()  # a file the shim reads itself
GRID = TileGrid(256, 256, (1, 2, 4, 8, 16, 32))


def tier_plan(
    path: str, caps: Capabilities, limits: Limits = TIER, size: Any = (6000, 4000)
) -> Any:
    region, size_text, rotation, qf = path.split("/")
    req = parse_image_request(Version.V3, "x", region, size_text, rotation, qf)
    r = resolve(req, size[0], size[1], limits)
    return plan(r, caps, GRID, source=REF, tier="degraded", tier_scale=limits.tier_scale)


def check_virtual(the_plan: Any, limits: Limits, width: int, height: int) -> None:
    """The plan asks for whole blocks of the virtual image covering the region, at no more
    than their virtual pixels, and has the engine bring anything else to them first."""
    scale = limits.tier_scale
    assert scale is not None
    region, native = the_plan.resolved.region, the_plan.native
    block, cells = scale.virtual(region, width, height)
    if native.region != Box(0, 0, width, height):
        assert native.region == block
    else:
        cells = (scale.pixels(width), scale.pixels(height))
    for start, length, full in ((block.x, block.w, width), (block.y, block.h, height)):
        assert start % scale.block == 0  # on both grids: the same pixels for every request
        assert (start + length) % scale.block == 0 or start + length == full
    delivered = native.delivered_size()
    # a pyramid whose deepest level is still finer than the tier: that level, brought down
    if native.size is not None or 0 < native.reduction < max(GRID.scale_factors):
        assert delivered[0] <= cells[0] and delivered[1] <= cells[1]
    # the engine brings what was delivered to the virtual pixels, the crop in the block's space
    assert the_plan.steps.virtual == cells
    assert the_plan.steps.frame == (native.region.w, native.region.h)


def test_plan_never_asks_a_scaling_backend_above_the_tier() -> None:
    capped = tier_plan("0,0,4096,4096/682,/0/default.jpg", PYRAMID)
    free_req = parse_image_request(Version.V3, "x", "0,0,4096,4096", "682,", "0", "default.jpg")
    free = plan(resolve(free_req, 6000, 4000, TIER), PYRAMID, GRID, source=REF)
    assert max(free.native.delivered_size()) > 4096 // 6  # level 4: 1024 px
    assert max(capped.native.delivered_size()) <= 4096 // 6  # level 8: 512 px
    # 6000 / 1000: a block is 6 image pixels and 1 virtual pixel
    assert tier_plan("0,0,600,600/100,/0/default.jpg", SCALER).native.size == (100, 100)
    # a tile OpenSeadragon asks at full resolution: the tier's 100 pixels, scaled up after
    finer = tier_plan("0,0,600,600/600,/0/default.jpg", SCALER)
    assert finer.native.size == (100, 100) and finer.steps.scale == (600, 600)
    for caps in (SCALER, PYRAMID, FILE):
        for path in (
            "0,0,600,600/600,/0/default.jpg",
            "5999,3999,1,1/max/0/default.png",
            "3001,2001,7,5/max/90/gray.png",
            "full/max/0/default.jpg",
        ):
            check_virtual(tier_plan(path, caps), TIER, 6000, 4000)
    # the tier is part of the key: the same pixels, two entries
    req = parse_image_request(Version.V3, "x", "0,0,600,600", "100,", "0", "default.jpg")
    r = resolve(req, 6000, 4000, TIER)
    same = plan(r, SCALER, source=REF)
    assert same.key != plan(r, SCALER, source=REF, tier="degraded:1000").key
    assert same.key == plan(r, SCALER, source=REF).key


@pytest.mark.parametrize(
    ("path", "version"),
    [
        ("3000,2000,1,1/1,1/0/default.png", Version.V3),
        ("3000,2000,1,1/max/0/default.png", Version.V3),
        ("3000,2000,1,1/1,/0/default.png", Version.V2),
        ("3000,2000,1,1/full/0/default.png", Version.V2),
        ("pct:50,50,0.01,0.01/max/0/default.png", Version.V3),
        ("3000,2000,59,59/max/0/default.png", Version.V3),
        ("3000,2000,61,61/2,2/0/default.png", Version.V3),
        ("3000,2000,6000,59/max/0/default.png", Version.V3),
        ("5999,3999,1,1/max/0/default.png", Version.V3),
        ("3000,3999,60,1/max/0/default.png", Version.V3),
    ],
)
def test_regions_smaller_than_a_tier_pixel_come_from_whole_tier_pixels(
    path: str, version: Version
) -> None:
    """The review's attacks (100 px of 6000: a tier pixel is 60x60 of the image) gave the
    master's pixels: now the backend is asked for whole 60x60 blocks at one pixel each (or the
    engine averages them to that), whatever the output."""
    region, size_text, rotation, qf = path.split("/")
    req = parse_image_request(version, "x", region, size_text, rotation, qf)
    r = resolve(req, 6000, 4000, SMALL)
    for caps in (SCALER, PYRAMID, FILE):
        the_plan = plan(r, caps, GRID, source=REF, tier="d", tier_scale=SMALL.tier_scale)
        check_virtual(the_plan, SMALL, 6000, 4000)
        native = the_plan.native
        if native.size is not None:
            w, h = native.size
            assert native.region.w >= 60 * w - 60 and native.region.h >= 40 * h - 40


def test_shifted_regions_read_the_same_virtual_pixels() -> None:
    """Regions a pixel apart ask the backend for the same block (so their difference says
    nothing of the pixels between), also where the tier's scale is not a whole number of
    image pixels (1031 px to 300: every 1031 image pixels are 300 of the tier)."""
    a = tier_plan("3000,2000,30,30/max/0/default.png", SCALER, SMALL)
    b = tier_plan("3001,2001,30,30/max/0/default.png", SCALER, SMALL)
    assert (
        a.native == b.native == tier_plan("3000,1980,60,60/1,1/0/default.png", SCALER, SMALL).native
    )
    odd = SERVER.degraded(300, 1031, 700)
    scale = odd.tier_scale
    assert scale is not None and (scale.block, scale.cells) == (1031, 300)
    seen = {
        tier_plan(f"{x},{y},5,5/max/0/default.png", SCALER, odd, (1031, 700)).native
        for x, y in ((0, 0), (1, 1), (500, 300), (1026, 695))
    }
    assert seen == {tier_plan("full/max/0/default.png", SCALER, odd, (1031, 700)).native}
    assert scale.virtual(Box(0, 0, 1031, 700), 1031, 700)[1] == (300, 204)


def test_the_virtual_image_is_ceil_w_s_by_ceil_h_s() -> None:
    """Blocks partition the virtual image: disjoint block-aligned regions together never have
    more than ``ceil(W*s)`` pixels along an axis."""
    for limits, (width, height) in (
        (SMALL, (6000, 4000)),
        (TIER, (6000, 4000)),
        (SERVER.degraded(700, 5001, 3333), (5001, 3333)),
        (SERVER.degraded(300, 777, 4093), (777, 4093)),
    ):
        scale = limits.tier_scale
        assert scale is not None
        whole = scale.virtual(Box(0, 0, width, height), width, height)[1]
        assert whole == (
            math.ceil(width * scale.value - 1e-9),
            math.ceil(height * scale.value - 1e-9),
        )
        for full, axis in ((width, 0), (height, 1)):
            total = 0
            for start in range(0, full, scale.block):
                box = (
                    Box(start, 0, min(scale.block, full - start), 1)
                    if axis == 0
                    else Box(0, start, 1, min(scale.block, full - start))
                )
                total += scale.virtual(box, width, height)[1][axis]
            assert total == whole[axis]


def tier_tiles(
    doc: dict[str, Any], version: Version, least: int
) -> tuple[list[tuple[str, str]], list[tuple[str, str]]]:
    """(region, size) of the tiles viewers build from a degraded info.json: those of the levels
    it offers (``least``: its first scale factor) and its ``sizes``, and the finer ones
    OpenSeadragon asks too. Left out: 2.1 ``w,`` of sliver tiles (see :func:`_sliver`)."""
    within: list[tuple[str, str]] = []
    finer: list[tuple[str, str]] = []
    for region, size in dict.fromkeys(_viewer_tiles(doc, version)):
        box = None if region == "full" else Box(*map(int, region.split(",")))
        if box is not None and size.endswith(",") and _sliver(box, size):
            continue  # its height is not the tile's, on any tier
        (within if box is None or _level(box, size) >= least else finer).append((region, size))
    return within, finer


def _viewer_tiles(doc: dict[str, Any], version: Version) -> Iterator[tuple[str, str]]:
    for source in (canonical_tiles, openseadragon_tiles, mirador_tiles, leaflet_tiles):
        yield from source(doc, version)
    for entry in doc.get("sizes") or []:
        w, h = entry["width"], entry["height"]
        yield "full", f"{w},{h}" if version is Version.V3 else f"{w},"


def _level(region: Box, size: str) -> int:
    """The coarsest power-of-two level a viewer's tile is of (its output is the region divided
    by it, rounded up): OpenSeadragon asks every level up to 1, finer than the tier too."""
    w_text, _, h_text = size.partition(",")
    found = 0
    for n in range(17):
        f = 1 << n
        if -(-region.w // f) == int(w_text) and (not h_text or -(-region.h // f) == int(h_text)):
            found = f
    return found


def _sliver(region: Box, size: str) -> bool:
    """A 2.1 ``w,`` whose height by the aspect ratio is not the tile's at its level (a tile one
    pixel wide: ``1,`` is the whole height of its region)."""
    level = _level(region, size) or 1
    return abs(height_for_width(int(size[:-1]), region.w, region.h) - -(-region.h // level)) > 1


@pytest.mark.parametrize(
    ("width", "height", "max_size", "tile"),
    [
        (6000, 4000, 100, 512),
        (6000, 4000, 1000, 512),
        (5001, 3333, 700, 512),
        (1200, 800, 100, 256),
        (2400, 1600, 300, 256),
        (777, 4093, 300, 256),
        (4097, 4097, 1000, 256),
        (4097, 1025, 512, 256),
    ],
)
def test_every_tile_viewers_build_from_the_degraded_info_is_served(
    width: int, height: int, max_size: int, tile: int
) -> None:
    """The tiles OpenSeadragon, Mirador, Leaflet and the canonical forms build from the degraded
    info.json (its levels and its sizes, and the finer levels OpenSeadragon asks from
    ``width``/``height`` and the viewport) all resolve, and every plan takes them from whole
    blocks of the virtual image at no more than its pixels."""
    limits = SERVER.degraded(max_size, width, height)
    scale = limits.tier_scale
    assert scale is not None
    least = scale.least_factor()
    source = SourceInfo(width=width, height=height)
    served = finer_served = 0
    for version in (Version.V3, Version.V2):
        base = f"http://h/degraded/{version.value}/x"
        doc = image_info(version, base, source, Offer(frozenset(Format), limits, tile))
        assert min(doc["tiles"][0]["scaleFactors"]) == least
        within, finer = tier_tiles(doc, version, least)
        for region_text, size in within + finer:
            req = parse_image_request(version, "x", region_text, size, "0", "default.jpg")
            try:
                r = resolve(req, width, height, limits)
            except BadRequest as exc:
                pytest.fail(f"{version.value} {region_text}/{size}: {exc}")
            served += 1
            finer_served += (region_text, size) in finer
            for caps in (SCALER, PYRAMID, FILE):
                the_plan = plan(r, caps, GRID, source=REF, tier_scale=scale)
                check_virtual(the_plan, limits, width, height)
    assert served > 4 and (finer_served > 0 or least == 1)


@pytest.mark.parametrize("engine", ["pillow", "vips"])
def test_the_engine_answers_from_the_virtual_pixels_alone(engine: str) -> None:
    """A 1x1 region of a file the shim reads itself (the whole master delivered): the engine
    brings the master to the tier's virtual pixels first (``Steps.virtual``), so the answer is
    the colour around that tier pixel, an average of 60x60 of the master, not its own pixel.
    Both engines, from bytes (libvips decodes them itself) and from a decoded image."""
    master = Image.effect_noise((600, 400), 80).convert("RGB")
    data = io.BytesIO()
    master.save(data, "PNG")
    virtual = (10, 7)  # 600x400 at 10/600
    reference = master.resize(virtual, Image.Resampling.BOX)
    run = engine_named(engine)
    allowance = Allowance(10**9, 2**30)
    for x, y in ((300, 200), (0, 0), (599, 399), (123, 321)):
        steps = Steps(
            Box(x, y, 1, 1), (1, 1), False, 0, Quality.DEFAULT, Format.PNG, virtual=virtual
        )
        own = master.getpixel((x, y))
        around = reference.resize(
            (1, 1), Image.Resampling.LANCZOS, box=(x / 60, y / 60, (x + 1) / 60, (y + 1) / 60)
        )
        for body in (
            run.render(Fetched(data=data.getvalue(), described="m"), steps, allowance),
            pillow.finish(pillow.Decoded(master, 600, 400), steps),
        ):
            got = Image.open(io.BytesIO(body)).convert("RGB").getpixel((0, 0))
            assert isinstance(got, tuple) and isinstance(own, tuple)
            want = around.getpixel((0, 0))
            assert isinstance(want, tuple)
            assert max(abs(g - w) for g, w in zip(got, want, strict=True)) <= 8, (got, want, own)
    # a 60x60 region scaled up to 60x60: smooth (the tier's pixels), where the master is noise
    steps = Steps(
        Box(240, 180, 60, 60), (60, 60), False, 0, Quality.DEFAULT, Format.PNG, virtual=virtual
    )
    body = run.render(Fetched(data=data.getvalue(), described="m"), steps, allowance)
    tile = Image.open(io.BytesIO(body)).convert("L")
    assert (
        ImageStat.Stat(tile).stddev[0]
        < ImageStat.Stat(master.convert("L").crop((240, 180, 300, 240))).stddev[0] / 4
    )


def test_a_backend_that_will_not_scale_small_gets_more_whole_blocks() -> None:
    """iipsrv-like upstreams are never asked for a side under ``min_size``: a 1x1 region's
    block (one tier pixel) is widened by whole blocks until it has that many, still at the
    tier's scale, never the unscaled region."""
    caps = Capabilities(region=True, size=True, min_size=8)
    for path in ("3000,2000,1,1/1,1/0/default.png", "5999,3999,1,1/max/0/default.png"):
        the_plan = tier_plan(path, caps, SMALL)
        native = the_plan.native
        assert native.size is not None and min(native.size) >= 8
        assert native.region.w == 60 * native.size[0]  # 60 image pixels a tier pixel
        assert native.region.h <= 60 * native.size[1]
        assert native.region.x % 60 == 0 and native.region.y % 60 == 0
        region = the_plan.resolved.region
        crop = the_plan.steps.crop
        assert crop is not None
        assert (native.region.x + crop.x, native.region.y + crop.y) == (region.x, region.y)


def test_the_memory_estimate_counts_the_virtual_pixels_not_the_crop() -> None:
    """A backend that scales delivers the tier's 683 pixels of a 4096-pixel region: finishing
    holds those (and the output), not the region's 4096x4096 at full resolution."""
    from iiif_shim.imaging.cost import cost

    the_plan = tier_plan("0,0,4096,4096/500,500/0/default.jpg", SCALER)
    assert the_plan.native.size == (683, 667)
    source = SourceInfo(width=6000, height=4000)
    assert cost(the_plan, source).finish < 4 * 4096 * 4096 // 8
    tile = tier_plan("100,100,1000,1000/500,500/0/default.jpg", SCALER)
    assert tile.steps.crop is not None
    assert cost(tile, source).finish < 4 * 1000 * 1000
