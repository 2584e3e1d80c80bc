"""Window decoding of tiled TIFF pages against a full decode by Pillow's own reader.

Small TIFFs written by the vips CLI (tiled pyramids as pages and as SubIFDs, JPEG, deflate with
a predictor, LZW, uncompressed, grey, 16-bit, alpha, stripped), sizes that leave clipped edge
tiles; every window must equal the same rectangle cut from the whole page, pixel for pixel.
"""

from __future__ import annotations

import random
import subprocess
from pathlib import Path

import pytest
from PIL import Image

from iiif_shim.backends.files import FilesBackend
from iiif_shim.base.errors import BackendError
from iiif_shim.iiif.resolve import Box
from iiif_shim.imaging import cost, pillow
from iiif_shim.imaging.cost import Allowance
from iiif_shim.imaging.fetched import Fetched
from iiif_shim.imaging.pillow import decode
from iiif_shim.imaging.tiff import tiff_pyramid
from tests.support import need_tool

W, H = 700, 500  # 128-pixel tiles leave a 60-pixel column and a 116-pixel row at the edges
PLENTY = Allowance(max_source_pixels=1 << 30, nbytes=1 << 30)

# name -> (bands of the source, vips tiffsave options)
VARIANTS = {
    "jpeg-pages": (3, ["--tile", "--pyramid", "--compression", "jpeg", "--Q", "85"]),
    "jpeg-subifd": (3, ["--tile", "--pyramid", "--subifd", "--compression", "jpeg", "--Q", "85"]),
    "deflate-predictor": (3, ["--tile", "--compression", "deflate", "--predictor", "horizontal"]),
    "lzw-grey": (1, ["--tile", "--pyramid", "--compression", "lzw"]),
    "raw-alpha": (4, ["--tile", "--compression", "none"]),
    "deflate-16bit": (16, ["--tile", "--compression", "deflate"]),
    "jpeg-tile-256": (
        3,
        [
            "--tile",
            "--tile-width",
            "256",
            "--tile-height",
            "256",
            "--pyramid",
            "--compression",
            "jpeg",
        ],
    ),
    "strips-deflate": (3, ["--compression", "deflate"]),
    "strips-raw": (3, ["--compression", "none"]),
}


@pytest.fixture(scope="module")
def tiffs(tmp_path_factory: pytest.TempPathFactory) -> dict[str, Path]:
    vips = need_tool("vips")
    folder = tmp_path_factory.mktemp("windows")
    rng = random.Random(8)
    noise = Image.frombytes("RGBA", (W, H), rng.randbytes(W * H * 4))
    sources = {
        1: noise.convert("L"),
        3: noise.convert("RGB"),
        4: noise,
    }
    made: dict[str, Path] = {}
    for name, (bands, options) in VARIANTS.items():
        if bands == 16:
            grey = folder / "grey.png"
            sources[1].save(grey)
            source = folder / "grey16.v"
            subprocess.run([vips, "linear", grey, source, "257", "0", "--uchar=false"], check=True)
            wide = folder / "grey16u.v"
            subprocess.run([vips, "cast", source, wide, "ushort"], check=True)
            source = wide
        else:
            source = folder / f"source{bands}.png"
            sources[bands].save(source)
        out = folder / f"{name}.tif"
        subprocess.run([vips, "tiffsave", source, out, *options], check=True)
        made[name] = out
    return made


def _whole_page(path: Path, page: int) -> Image.Image:
    with Image.open(path) as im:
        im.seek(page)
        im.load()
        return pillow.normalise_mode(im).copy()


def _windows(width: int, height: int) -> list[Box]:
    """Windows of a page: all of it, corners, edge tiles, straddling tiles (those that fit)."""
    boxes = [
        Box(0, 0, width, height),
        Box(0, 0, 1, 1),
        Box(width - 1, height - 1, 1, 1),
        Box(width - 61, height - 17, 61, 17),  # inside the clipped corner tile
        Box(100, 90, 200, 150),  # straddling tiles
        Box(127, 127, 2, 2),  # four tiles meet
        Box(0, height - 130, width, 130),  # the clipped bottom row, full width
        Box(width - 200, 0, 200, height),  # the clipped right column, full height
    ]
    return [
        b for b in boxes if b.x >= 0 and b.y >= 0 and b.x + b.w <= width and b.y + b.h <= height
    ]


def _pixels_equal(a: Image.Image, b: Image.Image) -> None:
    assert a.mode == b.mode and a.size == b.size
    assert a.tobytes() == b.tobytes()


@pytest.mark.parametrize("name", [n for n in VARIANTS if n != "jpeg-subifd"])
def test_every_window_equals_the_same_rectangle_of_a_full_decode(
    tiffs: dict[str, Path], name: str
) -> None:
    path = tiffs[name]
    with Image.open(path) as im:
        pages = getattr(im, "n_frames", 1)
    assert (pages > 1) == ("--pyramid" in VARIANTS[name][1])
    for page in range(pages):
        whole = _whole_page(path, page)
        for box in _windows(*whole.size):
            fetched = Fetched(path=path, page=page, window=box, described="test")
            got = decode(fetched, 1, PLENTY).image
            _pixels_equal(got, whole.crop((box.x, box.y, box.x + box.w, box.y + box.h)))


def test_subifd_levels_equal_the_same_levels_written_as_pages(tiffs: dict[str, Path]) -> None:
    pages, subifd = tiffs["jpeg-pages"], tiffs["jpeg-subifd"]
    facts = tiff_pyramid(subifd)
    assert facts is not None and len(facts.pyramid.levels) == 4
    for page in range(4):
        whole = _whole_page(pages, page)
        for box in _windows(*whole.size):
            a = decode(Fetched(path=subifd, page=page, window=box), 1, PLENTY).image
            _pixels_equal(a, whole.crop((box.x, box.y, box.x + box.w, box.y + box.h)))


def test_pyramid_facts(tiffs: dict[str, Path]) -> None:
    facts = tiff_pyramid(tiffs["jpeg-pages"])
    assert facts is not None
    p = facts.pyramid
    assert (p.width, p.height, p.tile_width, p.tile_height) == (W, H, 128, 128)
    # vips halves rounding down
    assert [(lv.factor, lv.width, lv.height) for lv in p.levels] == [
        (1, 700, 500),
        (2, 350, 250),
        (4, 175, 125),
        (8, 87, 62),
    ]
    big = tiff_pyramid(tiffs["jpeg-tile-256"])
    assert big is not None and big.pyramid.tile_width == 256
    assert [lv.factor for lv in big.pyramid.levels] == [1, 2, 4]
    single = tiff_pyramid(tiffs["deflate-predictor"])
    assert single is not None and [lv.factor for lv in single.pyramid.levels] == [1]
    assert tiff_pyramid(tiffs["strips-deflate"]) is None  # stripped: read whole


def test_not_a_tiff_has_no_pyramid(tmp_path: Path) -> None:
    jpeg = tmp_path / "a.jpg"
    Image.new("RGB", (300, 200), (10, 20, 30)).save(jpeg)
    assert tiff_pyramid(jpeg) is None


def test_window_checked_before_decoding(tiffs: dict[str, Path]) -> None:
    path = tiffs["jpeg-pages"]
    box = Box(0, 0, 300, 200)
    asked_smaller = Allowance(1 << 30, 1 << 30, expected=(100, 100))
    with pytest.raises(BackendError, match="300x200"):
        decode(Fetched(path=path, window=box), 1, asked_smaller)
    # the block of tiles around it (384x256 RGB) does not fit 100 kB
    with pytest.raises(BackendError, match="set aside"):
        decode(Fetched(path=path, window=box), 1, Allowance(1 << 30, 100_000))
    with pytest.raises(Exception, match="limit of 1000 source pixels"):
        decode(Fetched(path=path, window=box), 1, Allowance(1000, 1 << 30))
    # only the window counts against the source limit, not the page
    got = decode(Fetched(path=path, window=Box(0, 0, 10, 10)), 1, Allowance(1000, 1 << 30))
    assert got.image.size == (10, 10)


def test_bad_pages_and_windows_are_refused(tiffs: dict[str, Path]) -> None:
    path = tiffs["jpeg-pages"]
    with pytest.raises(BackendError, match="no page 9"):
        decode(Fetched(path=path, page=9, window=Box(0, 0, 10, 10)), 1, PLENTY)
    with pytest.raises(BackendError, match="outside"):
        decode(Fetched(path=path, page=1, window=Box(300, 0, 60, 10)), 1, PLENTY)


def test_window_cost_covers_the_tiles_around_it(tiffs: dict[str, Path]) -> None:
    facts = tiff_pyramid(tiffs["jpeg-pages"])
    assert facts is not None
    # any 100x100 window meets at most 2x2 tiles of 128
    assert cost.tile_block(100, 100, facts.pyramid) == (256, 256)
    assert cost.tile_block(128, 128, facts.pyramid) == (256, 256)
    assert cost.tile_block(1, 1, facts.pyramid) == (128, 128)
    assert cost.tile_block(129, 1, facts.pyramid) == (256, 128)  # from x = 127 at worst
    assert cost.tile_block(130, 1, facts.pyramid) == (384, 128)


def test_jpeg2000_decodes_at_sizes_pillow_rounds_wrongly(tmp_path: Path) -> None:
    """Pillow's ``reduce`` makes 1000/32 = 31 rows where OpenJPEG makes 32, and fails."""
    path = tmp_path / "a.jp2"
    Image.new("RGB", (1000, 1000), (200, 40, 90)).save(path)
    fetched = Fetched(path=path, described="test")
    decoded = decode(fetched, 32, PLENTY)
    assert decoded.image.size == (32, 32)
    assert decoded.image.getpixel((31, 31)) == pytest.approx((200, 40, 90), abs=3)


def test_jpeg2000_reduction_stops_at_the_levels_it_has(tmp_path: Path) -> None:
    vips = need_tool("vips")
    png = tmp_path / "a.png"
    Image.new("RGB", (2000, 1500), (30, 160, 220)).save(png)
    path = tmp_path / "a.jp2"
    subprocess.run([vips, "jp2ksave", png, path], check=True)
    with Image.open(path) as im:
        levels = pillow._j2k_levels(im)
    assert 1 <= levels < 5  # vips writes fewer levels than Pillow's default six resolutions
    decoded = decode(Fetched(path=path), 32, PLENTY)
    assert decoded.image.size == (-(-2000 // 2**levels), -(-1500 // 2**levels))


@pytest.mark.filterwarnings("ignore:Corrupt EXIF data")  # Pillow, reading the cut file
def test_broken_files_are_clear_errors(tiffs: dict[str, Path], tmp_path: Path) -> None:
    whole = tiffs["deflate-predictor"].read_bytes()
    cut = tmp_path / "cut.tif"
    cut.write_bytes(whole[: len(whole) // 2])  # vips writes the directory last
    assert FilesBackend._pyramid(cut) is None
    spoilt = bytearray(whole)
    spoilt[len(whole) // 4 : len(whole) // 2] = b"\xff" * (len(whole) // 2 - len(whole) // 4)
    broken = tmp_path / "broken.tif"
    broken.write_bytes(bytes(spoilt))
    assert tiff_pyramid(broken) is not None
    with pytest.raises(BackendError, match="could not be decoded"):
        decode(Fetched(path=broken, window=Box(0, 200, W, 100)), 1, PLENTY)
