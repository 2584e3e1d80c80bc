"""Typed source facts: their check at the boundary, their JSON form, and the plan's cache key."""

from __future__ import annotations

import dataclasses
import io
import json
from typing import Any

import pytest
from PIL import Image

from iiif_shim.backends.iiif import read_service
from iiif_shim.base.errors import BackendError
from iiif_shim.core.planner import plan
from iiif_shim.iiif.info import TileGrid
from iiif_shim.iiif.profile import Colour, Version
from iiif_shim.iiif.request import parse_image_request
from iiif_shim.iiif.resolve import Limits, resolve
from iiif_shim.imaging.fetched import Fetched, Parts, Ranges
from iiif_shim.imaging.j2k import codestream
from iiif_shim.imaging.pillow import read_header
from iiif_shim.model.facts import (
    Codestream,
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
        SourceInfo(
            6000, 4000, format="JPEG2000", mode="RGB", codestream=Codestream(1024, 1024, 5, 3, 8)
        ),
    ]


@pytest.mark.parametrize("info", examples(), ids=["file", "pyramid", "service", "jp2"])
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
        (SourceInfo(100, 100, codestream=Codestream(0, 64, 5, 3, 8)), "JPEG 2000 tile size"),
        (SourceInfo(100, 100, codestream=Codestream(64, 64, 40, 3, 8)), "JPEG 2000 levels"),
        (SourceInfo(100, 100, codestream=Codestream(64, 64, 5, 3, 8, nbytes=-1)), "size -1"),
    ],
)
def test_malformed_facts_are_a_502_naming_the_backend(info: SourceInfo, problem: str) -> None:
    with pytest.raises(BackendError) as err:
        checked(info, "legacy")
    assert err.value.status == 502
    assert "backend 'legacy'" in err.value.public_text() and problem in err.value.public_text()


def test_facts_cached_before_they_carried_a_codestream_are_still_read() -> None:
    """The codestream layout is optional: an entry written without it reads back as facts
    without it (counted as one tile, as if nothing compressed: ``cost._j2k``), not an error."""
    old = {"width": 6000, "height": 4000, "format": "JPEG2000", "mode": "RGB"}
    assert from_json(old) == SourceInfo(6000, 4000, format="JPEG2000", mode="RGB")


def _jp2(tile: tuple[int, int] | None, levels: int = 6, raw: bool = False) -> bytes:
    buf = io.BytesIO()
    noise = Image.effect_noise((2000, 1500), 40).convert("RGB")
    options: dict[str, Any] = {"tile_size": tile, "num_resolutions": levels}
    noise.save(buf, "JPEG2000", no_jp2=raw, **options)
    return buf.getvalue()


@pytest.mark.parametrize("raw", [False, True], ids=["jp2", "j2k"])
def test_a_jpeg_2000s_tiling_levels_and_sizes_come_from_its_header(raw: bool) -> None:
    tiled, whole = _jp2((512, 512), 4, raw), _jp2(None, 6, raw)
    found = read_header(Fetched(data=tiled, described="t"), len(tiled)).codestream
    assert found is not None
    assert (found.tile_width, found.tile_height, found.levels) == (512, 512, 3)
    assert (found.components, found.depth, found.nbytes) == (3, 8, len(tiled))
    # the largest of its 12 tiles: more than an even share of the file, less than all of it
    assert found.tile_bytes is not None and len(tiled) / 12 < found.tile_bytes < len(tiled)
    one = read_header(Fetched(data=whole, described="t"), len(whole)).codestream
    assert one is not None and (one.tile_width, one.tile_height, one.levels) == (2000, 1500, 5)
    assert one.tile_bytes is not None and len(whole) - 1000 < one.tile_bytes < len(whole)
    # read by ranges (a remote master): the header's bytes only, no walk through its tiles
    parts = Parts(len(tiled))
    parts.add(0, tiled[:4096])
    remote = read_header(Fetched(reader=Ranges(parts), described="t"), len(tiled)).codestream
    assert remote == dataclasses.replace(found, tile_bytes=None)
    assert codestream(io.BytesIO(b"\x00\x00\x00\x0cjP  " + tiled[12:100])) is None
    assert read_header(Fetched(data=_png(), described="t")).codestream is None


def _png() -> bytes:
    buf = io.BytesIO()
    Image.new("L", (8, 8)).save(buf, "PNG")
    return buf.getvalue()


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
