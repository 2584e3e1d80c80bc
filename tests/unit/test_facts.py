"""Typed source facts: their check at the boundary, their JSON form, and the plan's cache key."""

from __future__ import annotations

import json

import pytest

from iiif_shim.backends.iiif import read_service
from iiif_shim.base.errors import BackendError
from iiif_shim.core.planner import plan
from iiif_shim.iiif.info import TileGrid
from iiif_shim.iiif.profile import Colour, Version
from iiif_shim.iiif.request import parse_image_request
from iiif_shim.iiif.resolve import Limits, resolve
from iiif_shim.model.facts import (
    Level,
    Pyramid,
    PyramidFacts,
    SourceInfo,
    checked,
    from_json,
    to_json,
)
from iiif_shim.model.plan import Capabilities, SourceRef
from tests.unit.test_backend_protocols import IIPSRV_INFO


def examples() -> list[SourceInfo]:
    pyramid = Pyramid.halving(1001, 777, 254, 254, overlap=1)
    return [
        SourceInfo(300, 200, Colour.GRAY, "PNG", "L", "v1", 1.5e9),
        SourceInfo(1001, 777, tiles=pyramid.grid, native=PyramidFacts(pyramid, "jpeg")),
        read_service(IIPSRV_INFO),
    ]


@pytest.mark.parametrize("info", examples(), ids=["file", "pyramid", "service"])
def test_json_round_trip(info: SourceInfo) -> None:
    text = json.dumps(to_json(info))
    assert from_json(json.loads(text)) == info
    assert checked(info, "b") is info


@pytest.mark.parametrize(
    ("info", "problem"),
    [
        (SourceInfo(0, 10), "size 0x10"),
        (SourceInfo(10, 2**21), "size"),
        (SourceInfo(100, 100, tiles=TileGrid(0, 256, (1,))), "tile size"),
        (SourceInfo(100, 100, tiles=TileGrid(256, 256, ())), "scale factors"),
        (SourceInfo(100, 100, tiles=TileGrid(256, 256, (1, 3))), "scale factors"),
        (SourceInfo(100, 100, tiles=TileGrid(256, 256, (2, 4))), "scale factors"),
        (
            SourceInfo(
                100,
                100,
                native=PyramidFacts(Pyramid(100, 100, 64, 64, (Level(1, 100, 100),), 64), "jpg"),
            ),
            "overlap",
        ),
        (
            SourceInfo(
                100,
                100,
                native=PyramidFacts(
                    Pyramid(100, 100, 64, 64, (Level(1, 100, 100), Level(2, 90, 50))), "jpg"
                ),
            ),
            "level 1/2",
        ),
        (
            SourceInfo(100, 100, native=PyramidFacts(Pyramid.halving(200, 100, 64, 64), "jpg")),
            "pyramid size",
        ),
    ],
)
def test_malformed_facts_are_a_502_naming_the_backend(info: SourceInfo, problem: str) -> None:
    with pytest.raises(BackendError) as err:
        checked(info, "legacy")
    assert err.value.status == 502
    assert "backend 'legacy'" in err.value.public_text() and problem in err.value.public_text()


def _plan(size: str, version: Version = Version.V3, quality: int = 85, v: str | None = "1"):  # type: ignore[no-untyped-def]
    req = parse_image_request(version, "x", "full", size, "0", "default.jpg")
    resolved = resolve(req, 400, 300, Limits(1000, 1000))
    return plan(resolved, Capabilities(), None, quality, SourceRef("b", "x", v))


def test_cache_key_is_everything_that_changes_the_bytes() -> None:
    key = _plan("200,").key
    assert key is not None and key == _plan("200,").key
    assert _plan("200,", Version.V2).key == key  # the same pixels in either version
    assert _plan("201,").key != key
    assert _plan("200,", quality=90).key != key
    assert _plan("200,", v="2").key != key
    assert _plan("200,", v=None).key is None and _plan("200,", v=None).etag is None
    assert _plan("200,").etag == f'"{key[:32]}"'
