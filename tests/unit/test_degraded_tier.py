"""The degraded tier of a restricted image: a virtual image, the image halved until it fits
in ``max_size`` (``ceil(W/k)`` x ``ceil(H/k)`` pixels, ``k`` a power of two), presented at the
image's size (``Limits.degraded``, ``TierScale``): any region at any output within its limits
resolves (the zoom levels viewers build from ``width``/``height``), the plan takes whole
``k`` x ``k`` blocks from the backend at scale ``1/k`` (never more, never a grid shifted by a
pixel, never more blocks than the region covers), and the engine makes the answer from those
pixels alone, each the mean of its block (``Steps.virtual``), under a key of its own."""

from __future__ import annotations

import io
import math
from collections.abc import Iterator
from typing import Any

import pytest
from PIL import Image, ImageChops, ImageStat

from iiif_shim.base.errors import BadRequest, NotImplementedFeature
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


# the reviewer's tier: 100 px of a 6000x4000 master, one tier pixel is 64x64 of its pixels
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
    assert min(factors) == 8  # 6000 halved three times fits in 1000
    top = factors[-1]
    assert math.ceil(6000 / top) <= 512
    for sf in factors:  # every tile of every level is servable
        w, h = resolved(f"0,0,{512 * sf},{512 * sf}/512,/0/default.jpg")
        assert (w, h) == (512, 512) or max(w, h) <= 512
    grid = SourceInfo(width=6000, height=4000, tiles=TileGrid(256, 256, (1, 2, 4)))
    doc = image_info(Version.V3, "http://h/degraded/3/x", grid, offer)
    assert doc["tiles"][0]["scaleFactors"] == [8, 16, 32]
    # a native grid without the tier's level: the tier's tiles still start at it
    grid = SourceInfo(width=6000, height=4000, tiles=TileGrid(256, 256, (1, 4, 16, 64)))
    doc = image_info(Version.V3, "http://h/degraded/3/x", grid, offer)
    assert doc["tiles"][0]["scaleFactors"] == [8, 16, 64]
    assert {"type": "Size", "width": 750, "height": 500} in doc["sizes"]  # the virtual image


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
    # 6000 / 1000: a block is 8 image pixels and 1 virtual pixel
    assert tier_plan("0,0,600,600/75,/0/default.jpg", SCALER).native.size == (75, 75)
    # a tile OpenSeadragon asks at full resolution: the tier's 75 pixels, scaled up after
    finer = tier_plan("0,0,600,600/600,/0/default.jpg", SCALER)
    assert finer.native.size == (75, 75) and finer.steps.scale == (600, 600)
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
    """The review's attacks (100 px of 6000: a tier pixel is 64x64 of the image) gave the
    master's pixels: now the backend is asked for whole 64x64 blocks at one pixel each (or the
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
            assert native.region.w >= 64 * w - 64 and native.region.h >= 64 * h - 64


def test_shifted_regions_read_the_same_virtual_pixels() -> None:
    """Regions a pixel apart ask the backend for the same blocks (so their difference says
    nothing of the pixels between), also where the long side shares no factor with
    ``max_size`` (1031 px to 300: blocks of 4 pixels, the virtual image 258 x 175)."""
    a = tier_plan("3000,2000,30,30/max/0/default.png", SCALER, SMALL)
    b = tier_plan("3001,2001,30,30/max/0/default.png", SCALER, SMALL)
    blocks = tier_plan("2944,1984,128,64/2,1/0/default.png", SCALER, SMALL)
    assert a.native == b.native == blocks.native
    assert blocks.native.region == Box(2944, 1984, 128, 64) and blocks.native.size == (2, 1)
    odd = SERVER.degraded(300, 1031, 700)
    scale = odd.tier_scale
    assert scale is not None and scale.block == 4
    for pair in (((0, 0), (1, 1)), ((500, 300), (501, 301)), ((1026, 695), (1025, 694))):
        seen = {
            tier_plan(f"{x},{y},5,5/max/0/default.png", SCALER, odd, (1031, 700)).native
            for x, y in pair
        }
        assert len(seen) == 1, seen
        (native,) = seen
        assert native.region.w <= 12 and native.region.h <= 12  # its blocks, not the image
    assert scale.virtual(Box(0, 0, 1031, 700), 1031, 700)[1] == (258, 175)


def test_the_virtual_image_is_the_image_halved_until_it_fits() -> None:
    """``ceil(W/k)`` x ``ceil(H/k)``, its long side between ``max_size/2`` and ``max_size``;
    blocks partition it: disjoint block-aligned regions together never have more pixels along
    an axis."""
    for limits, (width, height) in (
        (SMALL, (6000, 4000)),
        (TIER, (6000, 4000)),
        (SERVER.degraded(700, 5001, 3333), (5001, 3333)),
        (SERVER.degraded(300, 777, 4093), (777, 4093)),
    ):
        scale = limits.tier_scale
        assert scale is not None
        whole = scale.virtual(Box(0, 0, width, height), width, height)[1]
        k = scale.block
        assert k & (k - 1) == 0
        assert whole == (math.ceil(width / k), math.ceil(height / k))
        assert scale.size // 2 < max(whole) <= scale.size
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
        (6001, 4001, 1000, 512),
        (5997, 3999, 300, 256),
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
    least = scale.block
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
    the colour around that tier pixel, an average of 64x64 of the master, not its own pixel.
    Both engines, from bytes (libvips decodes them itself) and from a decoded image."""
    master = Image.effect_noise((600, 400), 80).convert("RGB")
    data = io.BytesIO()
    master.save(data, "PNG")
    virtual = (10, 7)  # 600x400 halved 6 times: blocks of 64 pixels
    reference = master.reduce(64)
    run = engine_named(engine)
    allowance = Allowance(10**9, 2**30)
    for x, y in ((300, 200), (0, 0), (599, 399), (123, 321)):
        steps = Steps(
            Box(x, y, 1, 1),
            (1, 1),
            False,
            0,
            Quality.DEFAULT,
            Format.PNG,
            virtual=virtual,
            frame=(600, 400),
            block=64,
        )
        own = master.getpixel((x, y))
        around = reference.resize(
            (1, 1), Image.Resampling.LANCZOS, box=(x / 64, y / 64, (x + 1) / 64, (y + 1) / 64)
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
        Box(240, 180, 60, 60),
        (60, 60),
        False,
        0,
        Quality.DEFAULT,
        Format.PNG,
        virtual=virtual,
        frame=(600, 400),
        block=64,
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
        # 64 image pixels a tier pixel (the last column and row of blocks: what the image has)
        assert 64 * (native.size[0] - 1) < native.region.w <= 64 * native.size[0]
        assert 64 * (native.size[1] - 1) < native.region.h <= 64 * native.size[1]
        assert native.region.x % 64 == 0 and native.region.y % 64 == 0
        region = the_plan.resolved.region
        crop = the_plan.steps.crop
        assert crop is not None
        assert (native.region.x + crop.x, native.region.y + crop.y) == (region.x, region.y)


def test_the_memory_estimate_counts_the_virtual_pixels_not_the_crop() -> None:
    """A backend that scales delivers the tier's 512 pixels of a 4096-pixel region: finishing
    holds those (and the output), not the region's 4096x4096 at full resolution."""
    from iiif_shim.imaging.cost import cost

    the_plan = tier_plan("0,0,4096,4096/500,500/0/default.jpg", SCALER)
    assert the_plan.native.size == (512, 500)
    source = SourceInfo(width=6000, height=4000)
    assert cost(the_plan, source).finish < 4 * 4096 * 4096 // 8
    tile = tier_plan("100,100,1000,1000/500,500/0/default.jpg", SCALER)
    assert tile.steps.crop is not None
    assert cost(tile, source).finish < 4 * 1000 * 1000


@pytest.mark.parametrize(
    ("width", "height", "max_size", "k"),
    [(6001, 4001, 1000, 8), (5997, 3999, 1000, 8), (6001, 4001, 300, 32), (5997, 3999, 300, 32)],
)
def test_a_tile_of_an_image_of_any_size_asks_the_backend_for_its_blocks_alone(
    width: int, height: int, max_size: int, k: int
) -> None:
    """A long side that shares no factor with ``max_size`` (most real sizes) made a block the
    whole image: every tile asked the backend for the whole image at the tier's scale. Now a
    block is ``k`` pixels (a power of two): a tile of the tier's levels is asked as itself at
    exactly ``1/k`` (a scaler: its own pixels; a pyramid: its level ``k``), a tile finer than
    the tier as the few blocks around it."""
    limits = SERVER.degraded(max_size, width, height)
    scale = limits.tier_scale
    assert scale is not None and scale.block == k
    assert max(scale.pixels(width), scale.pixels(height)) <= max_size
    size = (width, height)
    span = 256 * k  # one tile of OpenSeadragon's level k
    corners = {(0, 0), (span, span), (width // span * span, height // span * span)}
    for x, y in sorted((x, y) for x, y in corners if x < width and y < height):
        w, h = min(span, width - x), min(span, height - y)
        out = (-(-w // k), -(-h // k))
        path = f"{x},{y},{w},{h}/{out[0]},{out[1]}/0/default.jpg"
        scaled = tier_plan(path, SCALER, limits, size)
        assert scaled.native.region == Box(x, y, w, h), path
        assert scaled.native.size == out
        assert scaled.steps.virtual == out and scaled.steps.block == k
        level = tier_plan(path, PYRAMID, limits, size)
        assert level.native.region == Box(x, y, w, h) and level.native.reduction == k
    # a tile at the full resolution (finer than the tier): the blocks it touches, scaled
    finer = tier_plan("3001,2001,256,256/256,256/0/default.jpg", SCALER, limits, size)
    region = finer.native.region
    assert region.x == 3001 // k * k and region.y == 2001 // k * k
    assert region.w <= 256 + 2 * k and region.h <= 256 + 2 * k
    assert finer.native.size == (region.w // k, region.h // k)


def test_a_pyramid_is_never_asked_for_a_level_finer_than_the_tier_when_it_has_one() -> None:
    """6001 px to 1000: the tier is level 8. A pyramid with it gives it; one without gives the
    next coarser level (the region widened to that level's grid), never a finer one; only when
    every level is finer is the coarsest taken (the engine averages it down)."""
    limits = SERVER.degraded(1000, 6001, 4001)
    req = parse_image_request(Version.V3, "x", "2048,2048,2048,1024", "256,128", "0", "default.jpg")
    r = resolve(req, 6001, 4001, limits)

    def on(levels: tuple[int, ...]) -> Any:
        grid = TileGrid(256, 256, levels)
        return plan(r, PYRAMID, grid, source=REF, tier_scale=limits.tier_scale).native

    assert on((1, 2, 4, 8, 16)).reduction == 8
    sparse = on((1, 4, 16, 64))
    assert sparse.reduction == 16
    assert sparse.region.x % 16 == 0 and sparse.region.w % 16 == 0
    assert on((1, 2)).reduction == 2  # all finer: the coarsest there is


@pytest.mark.parametrize("engine", ["pillow", "vips"])
def test_each_tier_pixel_is_the_mean_of_its_block(engine: str) -> None:
    """601x401 of noise to 100: blocks of 8 (the virtual image 76 x 51, the last column and
    row of blocks cut by the edge). A tile of the tier's own level is exactly those means,
    edges included, with either engine, from the whole master (a file the shim reads) or from
    a delivery at a finer power of two (a pyramid's level 2)."""
    master = Image.effect_noise((601, 401), 80).convert("RGB")
    data = io.BytesIO()
    master.save(data, "PNG")
    reference = master.reduce(8)
    assert reference.size == (76, 51)
    limits = SERVER.degraded(100, 601, 401)
    run = engine_named(engine)
    allowance = Allowance(10**9, 2**30)
    for region, size, box in (
        ("0,0,512,401", "64,51", (0, 0, 64, 51)),
        ("512,0,89,401", "12,51", (64, 0, 76, 51)),
        ("full", "76,51", (0, 0, 76, 51)),
        ("592,392,9,9", "2,2", (74, 49, 76, 51)),  # two blocks, the second of one pixel
    ):
        req = parse_image_request(Version.V3, "x", region, size, "0", "default.png")
        resolved_ = resolve(req, 601, 401, limits)
        the_plan = plan(resolved_, FILE, None, source=REF, tier_scale=limits.tier_scale)
        want = reference.crop(box)
        bodies = [
            run.render(Fetched(data=data.getvalue(), described="m"), the_plan.steps, allowance)
        ]
        if region == "full":
            bodies.append(pillow.finish(pillow.Decoded(master.reduce(2), 601, 401), the_plan.steps))
        for body in bodies:
            got = Image.open(io.BytesIO(body)).convert("RGB")
            assert got.size == want.size, (region, got.size)
            worst = max(high for _, high in ImageChops.difference(got, want).getextrema())
            assert worst <= 1, (region, worst)


def test_an_upscale_refused_on_the_tier_says_the_tier_does_not_upscale() -> None:
    with pytest.raises(NotImplementedFeature, match="the degraded tier does not upscale"):
        resolved("3000,2000,1,1/^100,100/0/default.png")
    with pytest.raises(NotImplementedFeature, match="no max_width or max_area"):
        resolved("3000,2000,1,1/^100,100/0/default.png", Limits())
