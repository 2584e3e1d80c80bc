"""Small inputs, huge memory: every decode is checked from its header first, costs are counted
in the bytes Pillow really stores, Pillow's own guard stays on, and rotation stays within the
limits. The attack is first shown to cost what it costs without these checks."""

from __future__ import annotations

import io
import math
import time
from typing import Any

import pytest
from PIL import Image

from iiif_shim.base.errors import BackendError, BadRequest, NotImplementedFeature
from iiif_shim.core.planner import plan
from iiif_shim.iiif.info import TileGrid
from iiif_shim.iiif.profile import Format, Quality, Version
from iiif_shim.iiif.request import parse_image_request
from iiif_shim.iiif.resolve import Box, Limits, resolve, rotated_size
from iiif_shim.imaging import cost, pillow
from iiif_shim.imaging.cost import Allowance
from iiif_shim.imaging.fetched import Fetched
from iiif_shim.imaging.pillow import Piece
from iiif_shim.imaging.settings import PILLOW_GUARD_PIXELS
from iiif_shim.model.facts import SourceInfo
from iiif_shim.model.plan import Capabilities, NativeOp, Steps
from tests.faulty import png_bomb
from tests.support import peak_rss_mb

GB = 1024**3
BOMB = png_bomb(20000, 20000)  # 1-bit, 400 M pixels: a few hundred kB, 800 MB decoded


def test_the_bomb_costs_hundreds_of_mb_when_decoded_blindly() -> None:
    assert len(BOMB) < 2_000_000
    blind = peak_rss_mb(
        """
        from PIL import Image
        from tests.faulty import png_bomb
        Image.MAX_IMAGE_PIXELS = None
        Image.open(__import__("io").BytesIO(png_bomb(20000, 20000))).convert("L")
        """
    )
    checked = peak_rss_mb(
        """
        from iiif_shim.imaging import cost, pillow
        from iiif_shim.base.errors import BackendError
        from iiif_shim.imaging.fetched import Fetched
        from tests.faulty import png_bomb
        try:
            pillow.decode(
                Fetched(data=png_bomb(20000, 20000), described="b"),
                1,
                cost.Allowance(500_000_000, 1 << 30, (256, 256)),
            )
        except BackendError:
            pass
        """
    )
    assert blind > 700 and checked < 150, (blind, checked)


def test_a_tile_larger_than_asked_is_refused_from_its_header() -> None:
    started = time.perf_counter()
    with pytest.raises(BackendError) as err:
        pillow.decode(Fetched(data=BOMB, described="b"), 1, Allowance(5 * 10**8, GB, (256, 256)))
    assert err.value.kind == "bomb" and err.value.status == 502
    assert "20000x20000 image where 256x256 was asked" in err.value.message
    assert time.perf_counter() - started < 1  # nothing was decoded


def test_the_bytes_a_mode_really_takes_are_counted() -> None:
    # a 1-bit pixel is a whole byte in Pillow, then a second one as L: 800 MB for this bomb
    assert cost.decode_bytes("1", 20000, 20000) == 800_000_000
    assert cost.decode_bytes("RGB", 100, 100) == 40_000  # RGB is stored 4 bytes a pixel
    with pytest.raises(BackendError) as err:
        pillow.decode(Fetched(data=BOMB, described="b"), 1, Allowance(5 * 10**8, 256 * 1024**2))
    assert err.value.kind == "bomb" and "800000000 bytes" in err.value.message


def test_max_source_pixels_and_pillows_own_guard() -> None:
    with pytest.raises(NotImplementedFeature):
        pillow.decode(Fetched(data=BOMB, described="b"), 1, Allowance(100_000_000, GB))
    assert Image.MAX_IMAGE_PIXELS == PILLOW_GUARD_PIXELS // 2  # on, not None
    huge = png_bomb(40000, 40000)  # 1.6 G pixels: Pillow refuses to open it at all
    with pytest.raises(BackendError) as err:
        pillow.decode(Fetched(data=huge, described="b"), 1, Allowance(10**9, 4 * GB))
    assert err.value.kind == "bomb"


def test_an_honest_image_decodes_within_its_allowance() -> None:
    buf = io.BytesIO()
    Image.new("RGB", (300, 200), (10, 20, 30)).save(buf, "PNG")
    need = cost.decode_bytes("RGB", 300, 200)
    decoded = pillow.decode(
        Fetched(data=buf.getvalue(), described="b"), 1, Allowance(10**6, need, (300, 200))
    )
    assert decoded.image.size == (300, 200) and decoded.nbytes == need


def test_a_stitched_tile_larger_than_its_cell_is_refused() -> None:
    piece = Piece(BOMB, (0, 0), (0, 0, 256, 256), (256, 256))
    with pytest.raises(BackendError) as err:
        pillow.stitch((0, 0, 256, 256), [piece], "backend 'dz'")
    assert err.value.kind == "bomb" and "20000x20000 tile for a 256x256 cell" in err.value.message


@pytest.mark.parametrize(
    ("source", "target"),
    [
        ((6000, 4000), (256, 171)),
        ((6000, 4000), (999, 666)),
        ((5000, 300), (100, 100)),
        ((1000, 1000), (333, 333)),
        ((7000, 7000), (1, 1)),
    ],
)
def test_the_reduction_step_pillow_really_makes_stays_within_the_costed_bound(
    source: tuple[int, int], target: tuple[int, int], monkeypatch: pytest.MonkeyPatch
) -> None:
    made: list[tuple[int, int]] = []
    real = Image.Image.reduce

    def reduce(self: Image.Image, *args: Any, **kwargs: Any) -> Image.Image:
        out = real(self, *args, **kwargs)
        made.append(out.size)
        return out

    monkeypatch.setattr(Image.Image, "reduce", reduce)
    w, h = source
    decoded = pillow.Decoded(Image.new("RGB", source), w, h)
    steps = Steps(None, target, False, 0, Quality.DEFAULT, Format.JPG)
    assert pillow.crop_and_scale(decoded, steps).size == target
    bound = cost._reduced_first(w, h, *target)
    assert all(mw * mh <= bound for mw, mh in made), (made, bound)


def _plan(size: str, info: SourceInfo, rotation: str = "0"):  # type: ignore[no-untyped-def]
    req = parse_image_request(Version.V3, "x", "full", size, rotation, "default.jpg")
    return plan(resolve(req, info.width, info.height, Limits(12000, 12000, 10**8)), Capabilities())


def test_cost_counts_the_decode_at_its_reduction_and_every_intermediate() -> None:
    jpeg = SourceInfo(6000, 4000, format="JPEG", mode="RGB")
    thumb = cost.cost(_plan("256,", jpeg), jpeg)
    margin = 1 + cost.MARGIN
    assert thumb.decode == math.ceil(750 * 500 * 4 * margin)  # JPEG decoded at 1/8
    assert thumb.kept == thumb.decode  # RGB: the decoded source is what decoding held
    assert thumb.total == thumb.kept + thumb.finish
    bitonal = SourceInfo(20000, 20000, format="PNG", mode="1")
    assert cost.cost(_plan("256,", bitonal), bitonal).decode == math.ceil(800_000_000 * margin)
    turned = cost.cost(_plan("1000,", jpeg, "45"), jpeg)
    w, h = rotated_size(1000, 667, 45)
    assert turned.finish > 4 * (1000 * 667 + w * h)  # the scaled image held while it turns
    cached = cost.cost(_plan("256,", jpeg), jpeg, decoded_cached=True)
    assert (cached.decode, cached.kept) == (0, 0) and cached.total == cached.finish
    tiled = SourceInfo(6000, 4000, tiles=TileGrid(256, 256, (1, 2, 4)))
    op = NativeOp(Box(0, 0, 512, 512), reduction=2)
    assert op.delivered_size() == (256, 256)
    pyramid_plan = plan(
        resolve(
            parse_image_request(Version.V3, "x", "0,0,512,512", "256,", "0", "default.jpg"),
            6000,
            4000,
            Limits(),
        ),
        Capabilities(region=True, reductions=True),
        tiled.tiles,
    )
    expected = math.ceil(2 * cost.decode_bytes(None, 258, 258) * margin)
    assert cost.cost(pyramid_plan, tiled).decode == expected


@pytest.mark.parametrize(
    ("w", "h", "degrees", "turned"),
    [
        (1000, 1000, 22.5, (1307, 1307)),  # what libvips gives too
        (301, 157, 5, (314, 183)),
        (300, 200, 30, (360, 323)),
        (301, 157, 90, (157, 301)),
        (301, 157, 270, (157, 301)),
        (301, 157, 180, (301, 157)),
        (1000, 1000, 45, (1414, 1414)),
    ],
)
def test_rotated_size_is_the_tight_bounding_box(
    w: int, h: int, degrees: float, turned: tuple[int, int]
) -> None:
    assert rotated_size(w, h, degrees) == turned


def test_rotation_may_not_grow_the_output_past_max_area() -> None:
    req = parse_image_request(Version.V3, "x", "full", "^12000,", "45", "default.jpg")
    with pytest.raises(BadRequest) as err:  # 12000x8000 turned is 14142x14142: 200 MP
        resolve(req, 6000, 4000, Limits(12000, 12000, 100_000_000))
    assert err.value.parameter == "rotation" and "100000000 pixels" in err.value.message
    fine = parse_image_request(Version.V3, "x", "full", "^12000,", "90", "default.jpg")
    resolve(fine, 6000, 4000, Limits(12000, 12000, 100_000_000))


@pytest.mark.parametrize("size", [(2000, 1500), (1999, 1501), (640, 480)])
def test_jpeg_decodes_at_the_reduction_its_cost_counted(size: tuple[int, int]) -> None:
    """DCT scaling must land on the factor ``cost`` reserved for (ceil of each side), even
    when a side is not a multiple of it: asking Pillow for the ceiling made it pick a smaller
    reduction (1500/8 -> 188 rows admits only 1/4) and the decode was refused."""
    buf = io.BytesIO()
    Image.new("RGB", size, (10, 200, 30)).save(buf, "JPEG")
    width, height = size
    for factor in (2, 4, 8):
        need = cost.decode_bytes("RGB", -(-width // factor), -(-height // factor))
        fetched = Fetched(data=buf.getvalue(), described="test")
        decoded = pillow.decode(fetched, factor, Allowance(10**9, need))
        assert decoded.image.size == (-(-width // factor), -(-height // factor))


def test_finishing_a_source_already_at_the_output_size_copies_none_of_its_pixels(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    """The decoded source, shared by concurrent renders, was copied whole before encoding
    (96 MB more for a 24 MP RGB master) when no step after it makes a new image: the encoder
    now gets a new image object on the very same pixels, and the source stays untouched."""
    source = Image.new("RGB", (300, 200), (10, 20, 30))
    decoded = pillow.Decoded(source, 300, 200)
    handed: list[Image.Image] = []
    real = pillow.encode

    def encode(im: Image.Image, fmt: Format, jpeg_quality: int) -> bytes:
        handed.append(im)
        return real(im, fmt, jpeg_quality)

    monkeypatch.setattr(pillow, "encode", encode)
    body = pillow.finish(decoded, Steps(None, (300, 200), False, 0, Quality.DEFAULT, Format.PNG))
    assert handed[0] is not source and handed[0].im is source.im  # the same pixels, no copy
    assert not hasattr(source, "encoderinfo")  # the encoder's settings went on the other object
    with Image.open(io.BytesIO(body)) as out:
        assert out.size == (300, 200) and out.getpixel((5, 5)) == (10, 20, 30)
    assert source.getpixel((5, 5)) == (10, 20, 30)
    info = SourceInfo(300, 200, format="PNG", mode="RGB")
    whole = cost.cost(_plan("max", info), info)
    turned = cost.cost(_plan("max", info, "90"), info)
    # the model follows: finishing as it is holds the encoder's bytes, no image of its own
    assert whole.finish < turned.finish - 4 * 300 * 200


def test_a_16_bit_rgb_png_decoded_by_libvips_fits_what_its_estimate_set_aside() -> None:
    """Pillow calls a 16-bit RGB PNG "RGB"; libvips decodes it (``vips_steps: all``) into the
    same 8-bit RGB, a byte a sample. The check of its header counted it as an unknown mode (11
    bytes a pixel) against an estimate of 4, and refused an honest image as a bomb."""
    import pyvips

    from iiif_shim.imaging import vips

    black = pyvips.Image.black(300, 200, bands=3)
    wide = black.linear([1, 1, 1], [1000, 30000, 65000]).cast("ushort")
    data = bytes(wide.copy(interpretation="rgb16").pngsave_buffer())
    engine = vips.VipsEngine(vips.EVERYTHING)
    fetched = Fetched(data=data, described="b")
    found = pillow.read_header(fetched)
    assert (found.format, found.mode) == ("PNG", "RGB")
    info = SourceInfo(found.width, found.height, found.colour, found.format, found.mode)
    need = engine.cost(_plan("max", info), info)
    decoded = engine.decode(fetched, 1, Allowance(10**6, need.decode, (300, 200)))
    assert decoded.nbytes == cost.libvips_bytes(3, 300, 200) <= need.kept


def test_a_jpeg_2000_with_few_levels_is_counted_at_the_reduction_it_decodes_at() -> None:
    """A JPEG 2000 decodes reduced only as far as its codestream's levels go: one with 2
    levels asked for 1/32 decodes at 1/4. Counted at 1/32 (levels not in the facts), its
    decode was refused as taking more than was set aside for it."""
    buf = io.BytesIO()
    Image.new("RGB", (2000, 1600), (10, 200, 30)).save(buf, "JPEG2000", num_resolutions=3)
    fetched = Fetched(data=buf.getvalue(), described="test")
    header = pillow.read_header(fetched, len(buf.getvalue()))
    assert header.codestream is not None and header.codestream.levels == 2
    info = SourceInfo(2000, 1600, format="JPEG2000", mode="RGB", codestream=header.codestream)
    req = parse_image_request(Version.V3, "x", "full", "60,", "0", "default.jpg")
    the_plan = plan(resolve(req, 2000, 1600, Limits()), Capabilities())
    estimate = cost.cost(the_plan, info)
    factor = cost.reduction(info.format, 2000, 1600, the_plan.steps)
    assert factor == 32
    decoded = pillow.decode(fetched, factor, Allowance(10**9, estimate.decode, (2000, 1600)))
    assert decoded.image.size == (500, 400)
    assert estimate.decode >= cost.decode_bytes("RGB", 500, 400) + 5 * 3 * 500 * 400


def test_the_vips_engine_reads_a_jpeg_2000s_size_without_walking_its_tiles(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    """The vips engine reads the size of a JPEG 2000 it is given as bytes (an http master)
    from its header for every request: that read walked every tile-part's header too (45 ms
    for 65,536 of them) for a layout it does not use. The walk is for the facts only."""
    from iiif_shim.imaging import j2k, vips

    buf = io.BytesIO()
    Image.new("RGB", (600, 400), (10, 200, 30)).save(buf, "JPEG2000", tile_size=(64, 64))
    fetched = Fetched(data=buf.getvalue(), described="test")
    walks: list[bool] = []
    read = j2k.codestream

    def spied(fp: Any, nbytes: int | None = None, *, walk: bool = False) -> Any:
        walks.append(walk)
        return read(fp, nbytes, walk=walk)

    monkeypatch.setattr(j2k, "codestream", spied)
    header = pillow.read_header(fetched, len(buf.getvalue()))  # the facts: walked, once
    assert walks == [True] and header.codestream is not None
    assert header.codestream.tile_bytes is not None
    info = SourceInfo(600, 400, format="JPEG2000", mode="RGB", codestream=header.codestream)
    engine = vips.VipsEngine(vips.MEASURED)
    the_plan = _plan("300,", info)
    need = engine.cost(the_plan, info)
    walks.clear()
    body = engine.render(fetched, the_plan.steps, Allowance(10**8, need.decode, (600, 400)))
    assert body[:2] == b"\xff\xd8"
    assert True not in walks
