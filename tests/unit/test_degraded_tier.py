"""The degraded tier of a restricted image: its limits (``Limits.degraded``), its info.json
(what it offers is all servable within them), and plans that never ask a scaling backend for
more than the tier's scale, under a key of their own."""

from __future__ import annotations

import math

import pytest

from iiif_shim.base.errors import BadRequest
from iiif_shim.core.planner import plan
from iiif_shim.iiif.info import Offer, TileGrid, image_info
from iiif_shim.iiif.profile import Format, Version
from iiif_shim.iiif.request import parse_image_request
from iiif_shim.iiif.resolve import Limits, resolve
from iiif_shim.model.facts import SourceInfo
from iiif_shim.model.plan import Capabilities, SourceRef

SERVER = Limits(max_width=12000, max_height=12000, max_area=100_000_000)
TIER = SERVER.degraded(1000, 6000, 4000)
SOURCE = SourceInfo(width=6000, height=4000)
REF = SourceRef("b", "x", "v1")


def resolved(path: str, limits: Limits = TIER, version: Version = Version.V3) -> tuple[int, int]:
    region, size, rotation, qf = path.split("/")
    r = resolve(parse_image_request(version, "x", region, size, rotation, qf), 6000, 4000, limits)
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
    req = parse_image_request(Version.V3, "x", "0,0,4096,4096", "683,", "0", "default.jpg")
    r = resolve(req, 6000, 4000, TIER)
    pyramid = Capabilities(region=True, reductions=True)
    grid = TileGrid(256, 256, (1, 2, 4, 8, 16, 32))
    scale = TIER.max_scale
    assert scale is not None
    free = plan(r, pyramid, grid, source=REF)
    capped = plan(r, pyramid, grid, source=REF, tier="degraded:1000", max_scale=scale)
    assert max(free.native.delivered_size()) > math.ceil(4096 * scale)  # level 4: 1024 px
    assert max(capped.native.delivered_size()) <= math.ceil(4096 * scale)  # level 8: 512 px
    scaler = Capabilities(region=True, size=True)
    req = parse_image_request(Version.V3, "x", "0,0,600,600", "100,", "0", "default.jpg")
    r = resolve(req, 6000, 4000, TIER)
    assert plan(r, scaler, source=REF, max_scale=scale).native.size == (100, 100)
    # the tier is part of the key: the same pixels, two entries
    same = plan(r, scaler, source=REF)
    assert same.key != plan(r, scaler, source=REF, tier="degraded:1000").key
    assert same.key == plan(r, scaler, source=REF).key
