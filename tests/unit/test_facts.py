"""Typed source facts: their check at the boundary, their JSON form, and the plan's cache key."""

from __future__ import annotations

import contextlib
import dataclasses
import io
import json
import struct
from typing import Any

import pytest
from PIL import Image

from iiif_shim.backends.iiif import read_service
from iiif_shim.base.errors import BackendError, NotAnImage
from iiif_shim.core.planner import plan
from iiif_shim.iiif.info import TileGrid
from iiif_shim.iiif.profile import Colour, Version
from iiif_shim.iiif.request import parse_image_request
from iiif_shim.iiif.resolve import Limits, resolve
from iiif_shim.imaging.cost import Allowance
from iiif_shim.imaging.fetched import Fetched, Parts, Ranges
from iiif_shim.imaging.j2k import codestream
from iiif_shim.imaging.pillow import decode, read_header
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


def test_facts_cached_before_they_carried_a_codestream_are_read_and_refused() -> None:
    """An entry written by an earlier release reads back as facts without the layout, which
    the check refuses (a cached entry: a miss, the facts read again, ``tests/unit/test_cache.py``;
    counted as one tile, a tiled master's view was refused as over the budget for an hour)."""
    old = {"width": 6000, "height": 4000, "format": "JPEG2000", "mode": "RGB"}
    assert from_json(old) == SourceInfo(6000, 4000, format="JPEG2000", mode="RGB")
    with pytest.raises(BackendError, match="without its codestream's layout"):
        checked(from_json(old), "files")
    assert checked(SourceInfo(6000, 4000, format="JPEG", mode="RGB"), "files")


def hostile_jp2(components: int, width: int, height: int, tile: int = 1, tail: int = 0) -> bytes:
    """A JP2 of a few hundred bytes whose SIZ states ``components`` and ``tile`` x ``tile``
    tiles over ``width`` x ``height`` (one empty tile-part), with a ``free`` box before its
    codestream (Pillow then leaves SIZ to ``j2k.py``) and ``tail`` bytes after it."""
    siz = struct.pack(">HIIIIIIIIH", 0, width, height, 0, 0, tile, tile, 0, 0, components)
    siz += b"\x07\x01\x01" * components
    cs = b"\xff\x4f\xff\x51" + struct.pack(">H", len(siz) + 2) + siz
    cs += b"\xff\x52" + struct.pack(">HBBHBBBBBB", 12, 0, 0, 1, 0, 0, 4, 4, 0, 1)
    cs += b"\xff\x5c" + struct.pack(">HBB", 4, 0x40, 8 << 3)
    cs += b"\xff\x90" + struct.pack(">HHIBB", 10, 0, 14, 0, 1) + b"\xff\x93\xff\xd9"

    def box(kind: bytes, payload: bytes) -> bytes:
        return struct.pack(">I", 8 + len(payload)) + kind + payload

    ihdr = box(b"ihdr", struct.pack(">IIHBBBB", height, width, 3, 7, 7, 0, 0))
    colr = box(b"colr", bytes([1, 0, 0]) + struct.pack(">I", 16))
    head = b"\x00\x00\x00\x0cjP  \r\n\x87\n" + box(b"ftyp", b"jp2 \0\0\0\0jp2 ")
    return (
        head + box(b"jp2h", ihdr + colr) + box(b"free", bytes(8)) + box(b"jp2c", cs) + bytes(tail)
    )


@pytest.mark.parametrize(
    ("components", "side", "problem"),
    [
        # OpenJPEG set up 1.1 KB for each component of each tile before Pillow refused more
        # than 4 (measured: 289 MB for 16 tiles, 626 MB for 36; the files are 49 KB)
        (16384, 4, "16384 components (at most 4"),
        (5, 64, "5 components (at most 4"),
        # 65,535 tiles of a pixel, of about 12 KB each: 760 MB for a file of a few KB
        (3, 256, "65536 tiles (at most 16384"),
    ],
)
def test_a_hostile_jpeg_2000_header_is_refused_from_its_facts(
    components: int, side: int, problem: str
) -> None:
    """What OpenJPEG would set up before decoding anything, and what Pillow cannot render
    anyway: refused from the header's facts as a 502 naming the backend, before a decode."""
    data = hostile_jp2(components, side, side)
    header = read_header(Fetched(data=data, described="t"), len(data))
    assert header.codestream is not None and header.codestream.components == components
    info = SourceInfo(side, side, format="JPEG2000", mode="RGB", codestream=header.codestream)
    with pytest.raises(BackendError) as err:
        checked(info, "files")
    assert err.value.status == 502 and problem in err.value.public_text()
    ordinary = Codestream(256, 256, 5, 4, 8)  # RGBA, a gigapixel image in 256x256 tiles
    assert ordinary.tiles(32768, 32768) == 16384
    assert checked(SourceInfo(32768, 32768, format="JPEG2000", codestream=ordinary), "files")


class _Counted(io.BytesIO):
    """Bytes in memory that count what is read of them."""

    taken = 0

    def read(self, size: int | None = -1) -> bytes:
        out = super().read(size)
        self.taken += len(out)
        return out


def test_a_jpeg_2000_header_is_read_in_a_bounded_number_of_bytes() -> None:
    """A SIZ length of 1 read the rest of the file (``read(-1)``: 627 MB for a master with
    300 MB after its codestream); it is a header that cannot be read, after a few bytes."""
    data = bytearray(hostile_jp2(3, 64, 64, 64, tail=4 << 20))
    at = data.find(b"\xff\x4f\xff\x51") + 4
    data[at : at + 2] = b"\x00\x01"
    fp = _Counted(bytes(data))
    assert codestream(fp, len(data), walk=True) is None
    assert fp.taken < 1024
    with pytest.raises(NotAnImage):
        read_header(Fetched(data=bytes(data), described="t"), len(data))


def test_a_box_length_past_any_file_is_a_header_that_cannot_be_read() -> None:
    """A box of 2**64 - 1 bytes (an XL length) before the codestream: seeking past it raised
    OverflowError on bytes in memory (an http master of 4 MiB or less), a bare 500 for its
    info.json and every image; now a bad header (502) like any other, for every reader."""
    tiled = _jp2((64, 64), 2)
    at = tiled.find(b"jp2c") - 4
    xl = tiled[:at] + struct.pack(">I4sQ", 1, b"free", 2**64 - 1) + tiled[at:]
    assert codestream(io.BytesIO(xl)) is None and codestream(io.BytesIO(xl), len(xl)) is None
    with pytest.raises(NotAnImage) as err:
        read_header(Fetched(data=xl, described="t"), len(xl))
    assert err.value.status == 502
    # Pillow finds the codestream its own way: decoded, or refused as not an image
    with contextlib.suppress(NotAnImage):
        decode(Fetched(data=xl, described="t"), 4, Allowance(10**9, 10**9, (2000, 1500)))


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
    # an engine that needs only the size reads no layout, and walks no tile-part
    assert read_header(Fetched(data=tiled, described="t"), layout=False).codestream is None


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
