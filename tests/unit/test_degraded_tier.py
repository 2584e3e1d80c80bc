"""The degraded tier of a restricted image: its limits (``Limits.degraded``), its info.json
(what it offers is all servable within them), and plans that never ask a scaling backend for
more than the tier's scale, under a key of their own."""

from __future__ import annotations

import math
from collections.abc import Iterator
from typing import Any

import pytest

from iiif_shim.base.errors import BadRequest
from iiif_shim.core.planner import plan
from iiif_shim.export.plan import (
    canonical_tiles,
    leaflet_tiles,
    mirador_tiles,
    openseadragon_tiles,
)
from iiif_shim.iiif.info import Offer, TileGrid, image_info
from iiif_shim.iiif.profile import Format, Version
from iiif_shim.iiif.request import parse_image_request
from iiif_shim.iiif.resolve import Box, Limits, height_for_width, resolve
from iiif_shim.model.facts import SourceInfo
from iiif_shim.model.plan import Capabilities, SourceRef

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


def test_regions_are_never_served_above_the_tier_scale() -> None:
    # a 512x512 region at full resolution: its pixels at the tier's scale at most
    assert resolved("0,0,512,512/max/0/default.jpg") == (85, 85)
    with pytest.raises(BadRequest):
        resolved("0,0,512,512/512,/0/default.jpg")
    with pytest.raises(BadRequest):
        resolved("full/1200,/0/default.jpg")
    assert resolved("0,0,512,512/512,/0/default.jpg", SERVER) == (512, 512)


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


def test_plan_never_asks_a_scaling_backend_above_the_tier() -> None:
    req = parse_image_request(Version.V3, "x", "0,0,4096,4096", "682,", "0", "default.jpg")
    r = resolve(req, 6000, 4000, TIER)
    pyramid = Capabilities(region=True, reductions=True)
    grid = TileGrid(256, 256, (1, 2, 4, 8, 16, 32))
    scale = TIER.tier_scale
    assert scale is not None
    free = plan(r, pyramid, grid, source=REF)
    capped = plan(r, pyramid, grid, source=REF, tier="degraded:1000", tier_scale=scale)
    assert max(free.native.delivered_size()) > 4096 // 6  # level 4: 1024 px
    assert max(capped.native.delivered_size()) <= 4096 // 6  # level 8: 512 px
    scaler = Capabilities(region=True, size=True)
    req = parse_image_request(Version.V3, "x", "0,0,600,600", "100,", "0", "default.jpg")
    r = resolve(req, 6000, 4000, TIER)
    assert plan(r, scaler, source=REF, tier_scale=scale).native.size == (100, 100)
    # the tier is part of the key: the same pixels, two entries
    same = plan(r, scaler, source=REF)
    assert same.key != plan(r, scaler, source=REF, tier="degraded:1000").key
    assert same.key == plan(r, scaler, source=REF).key


@pytest.mark.parametrize(
    ("path", "version"),
    [
        ("3000,2000,1,1/1,1/0/default.png", Version.V3),
        ("3000,2000,1,1/max/0/default.png", Version.V3),
        ("3000,2000,1,1/1,/0/default.png", Version.V2),
        ("3000,2000,1,1/full/0/default.png", Version.V2),
        ("pct:50,50,0.01,0.01/max/0/default.png", Version.V3),
        ("3000,2000,59,59/max/0/default.png", Version.V3),
        ("3000,2000,6000,59/max/0/default.png", Version.V3),
        ("5999,3999,1,1/max/0/default.png", Version.V3),  # the corner: the tier's own last
        ("3000,3999,60,1/max/0/default.png", Version.V3),  # pixel covers 40 rows, not 1
    ],
)
def test_regions_smaller_than_a_tier_pixel_are_refused(path: str, version: Version) -> None:
    with pytest.raises(BadRequest, match="smaller than one pixel of this tier"):
        resolved(path, SMALL, version)


def test_outputs_average_at_least_a_tier_pixel_of_the_image() -> None:
    assert resolved("3000,2000,60,60/max/0/default.png", SMALL) == (1, 1)
    assert resolved("3000,2000,61,61/1,1/0/default.png", SMALL) == (1, 1)
    assert resolved("3000,2000,61,61/max/0/default.png", SMALL) == (1, 1)
    with pytest.raises(BadRequest):  # twice the tier's scale
        resolved("3000,2000,61,61/2,2/0/default.png", SMALL)
    with pytest.raises(BadRequest):
        resolved("3000,2000,119,119/2,/0/default.png", SMALL, Version.V2)
    assert resolved("3000,2000,119,119/!50,50/0/default.png", SMALL) == (1, 1)
    assert resolved("3000,2000,120,120/2,/0/default.png", SMALL, Version.V2) == (2, 2)
    # the bottom edge: the tier is 100x67, its last row covers rows 3960..3999 (40 rows)
    assert resolved("0,3960,6000,40/max/0/default.png", SMALL) == (100, 1)
    assert resolved("0,3960,6000,40/100,1/0/default.png", SMALL) == (100, 1)
    with pytest.raises(BadRequest):  # 40 rows that are not the tier's last row
        resolved("0,3900,6000,40/100,1/0/default.png", SMALL)


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
        (777, 4093, 300, 256),
        (4097, 4097, 1000, 256),
        (4097, 1025, 512, 256),
    ],
)
def test_every_tile_viewers_build_from_the_degraded_info_is_served(
    width: int, height: int, max_size: int, tile: int
) -> None:
    """The tiles OpenSeadragon, Mirador, Leaflet and the canonical forms build from the degraded
    info.json at the levels it offers (and its ``sizes``) all resolve, and a backend that scales
    is never asked for more than the tier has of them. Finer levels (OpenSeadragon asks every
    level down to the full resolution) are refused, save where the tier has those pixels (an
    edge tile as thin as the tier's last column)."""
    limits = SERVER.degraded(max_size, width, height)
    scale = limits.tier_scale
    assert scale is not None
    least = scale.least_factor()
    source = SourceInfo(width=width, height=height)
    scaler = Capabilities(region=True, size=True)
    pyramid = Capabilities(region=True, reductions=True)
    grid = TileGrid(256, 256, tuple(1 << n for n in range(12)))
    served = refused = 0
    for version in (Version.V3, Version.V2):
        base = f"http://h/degraded/{version.value}/x"
        doc = image_info(version, base, source, Offer(frozenset(Format), limits, tile))
        assert min(doc["tiles"][0]["scaleFactors"]) == least
        within, finer = tier_tiles(doc, version, least)
        for region_text, size in within + finer:
            req = parse_image_request(version, "x", region_text, size, "0", "default.jpg")
            if (region_text, size) in finer:  # refused unless the tier has those pixels
                try:
                    r = resolve(req, width, height, limits)
                except BadRequest:
                    refused += 1
                    continue
                assert limits.scale_allows(r.region, r.width, r.height, width, height)
                continue
            try:
                r = resolve(req, width, height, limits)
            except BadRequest as exc:
                pytest.fail(f"{version.value} {region_text}/{size}: {exc}")
            served += 1
            most = scale.most_of(r.region, width, height)
            for caps in (scaler, pyramid):
                native = plan(r, caps, grid, source=REF, tier_scale=scale).native
                delivered = native.delivered_size()
                assert delivered[0] <= most[0] and delivered[1] <= most[1], (region_text, size)
    assert served > 4 and refused > 0


def test_the_tier_never_has_more_pixels_than_its_virtual_image() -> None:
    """Along an axis, disjoint regions together never get more than ``ceil(W*s)`` pixels."""
    scale = SMALL.tier_scale
    assert scale is not None
    for step in (1, 7, 59, 60, 61, 119, 512, 1000):
        for full in (6000, 4000):
            total = sum(
                scale.most(start, min(step, full - start), full) for start in range(0, full, step)
            )
            assert total <= math.ceil(full * 100 / 6000)
    assert scale.most_of(Box(0, 0, 6000, 4000), 6000, 4000) == (100, 67)
