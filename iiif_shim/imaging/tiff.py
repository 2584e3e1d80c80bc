"""Parts of a TIFF file: the pages that form a pyramid, and one window of a page.

Pillow hands every compressed TIFF to libtiff as one job over the whole page (the image must be
as large as the page), so a window cannot be had by trimming Pillow's tile list. Instead the
native tiles (or strips) that meet the window are copied, still compressed, into a small TIFF
of their own with the page's pixel tags, which Pillow's real TIFF reader then decodes; the
window is cut out of that block. Edge tiles keep their clipped size; JPEG tables, predictors
and subsampling come along with the tags.
"""

from __future__ import annotations

import math
import struct
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from PIL import Image, ImageFile, TiffImagePlugin

from iiif_shim.base.errors import DecompressionBomb, NotAnImage
from iiif_shim.iiif.resolve import Box
from iiif_shim.imaging.cost import RGBA_BYTES, Allowance, check_size, decode_bytes, raw_bytes
from iiif_shim.imaging.fetched import Fetched
from iiif_shim.model.facts import MAX_LEVELS, MAX_TILE, MIN_TILE, Level, Pyramid, PyramidFacts

_SUBIFD = 330
# the tags that say how a page's samples are stored (everything else stays behind)
_PIXEL_TAGS = (258, 259, 262, 266, 277, 284, 317, 320, 338, 339, 347, 529, 530, 531, 532)
# none, LZW, JPEG, Adobe deflate, PackBits, deflate, LZMA, Zstandard, WebP
_WINDOW_COMPRESSIONS = frozenset({1, 5, 7, 8, 32773, 32946, 34925, 50000, 50001})
_LONG, _LONG8, _SLONG8, _IFD, _IFD8 = 4, 16, 17, 13, 18
_MAX_PAGES = MAX_LEVELS + 8  # pages looked at for a pyramid
_CHUNK_SLACK = 1024  # bytes a compressed tile may take past twice its raw samples


@dataclass(frozen=True)
class _Page:
    """One image of a TIFF file, from its directory."""

    ifd: TiffImagePlugin.ImageFileDirectory_v2
    width: int
    height: int
    tile: tuple[int, int] | None  # tile width and height; None for strips

    @property
    def windowable(self) -> bool:
        ifd = self.ifd
        return (
            ifd.get(259, 1) in _WINDOW_COMPRESSIONS
            and ifd.get(284, 1) == 1  # samples interleaved (planar pages are read whole)
            and ifd.get(274, 1) == 1  # not to be turned on display
        )


def _values(value: Any) -> tuple[int, ...]:
    return tuple(value) if isinstance(value, tuple) else (value,)


def _page(ifd: TiffImagePlugin.ImageFileDirectory_v2) -> _Page | None:
    width, height = ifd.get(256), ifd.get(257)
    if not (isinstance(width, int) and isinstance(height, int) and width > 0 and height > 0):
        return None
    tile = None
    if 322 in ifd or 324 in ifd:
        tw, th = ifd.get(322), ifd.get(323)
        if not (isinstance(tw, int) and isinstance(th, int)):
            return None
        if not (MIN_TILE <= tw <= MAX_TILE and MIN_TILE <= th <= MAX_TILE):
            return None
        tile = (tw, th)
    return _Page(ifd, width, height, tile)


def _tiff_pages(im: ImageFile.ImageFile, limit: int = _MAX_PAGES) -> tuple[list[_Page], bool]:
    """The images of an opened TIFF that can be pages of a pyramid, in order, and whether they
    are the SubIFDs of the first (as ``vips tiffsave --subifd`` writes a pyramid): when the first
    image lists SubIFDs, page k > 0 is its k-th SubIFD; otherwise page k is the k-th image."""
    fp = im.fp
    assert fp is not None
    fp.seek(0)
    header = fp.read(16)
    header = header if header[2:3] == b"\x2b" else header[:8]

    def directory(offset: int) -> TiffImagePlugin.ImageFileDirectory_v2:
        ifd = TiffImagePlugin.ImageFileDirectory_v2(header)
        fp.seek(offset)
        ifd.load(fp)
        return ifd

    first = directory(TiffImagePlugin.ImageFileDirectory_v2(header).next)
    page0 = _page(first)
    if page0 is None:
        return [], False
    pages = [page0]
    subs = _values(first.get(_SUBIFD, ()))
    seen = {first.offset}
    following = subs if subs else ()
    next_offset = 0 if subs else first.next
    for k in range(1, limit):
        if subs:
            if k > len(following):
                break
            offset = following[k - 1]
        else:
            offset = next_offset
        if not offset or offset in seen:
            break
        seen.add(offset)
        ifd = directory(offset)
        next_offset = ifd.next
        page = _page(ifd)
        if page is None:
            break
        pages.append(page)
    return pages, bool(subs)


def tiff_pyramid(path: Path) -> PyramidFacts | None:
    """The pages of a tiled TIFF that form a halving pyramid (each page half the one before,
    rounded either way, the same tiles, stored so a window can be read), or ``None`` when the
    file is not a tiled TIFF whose first page can be read by window. Header reads only."""
    with Image.open(path) as im:
        if im.format != "TIFF":
            return None
        pages, _ = _tiff_pages(im)
    first = pages[0] if pages else None
    if first is None or first.tile is None or not first.windowable:
        return None
    tw, th = first.tile
    levels = [Level(1, first.width, first.height)]
    for page in pages[1:]:
        factor = levels[-1].factor * 2
        halves = all(
            side // factor <= got <= -(-side // factor) + 1
            for side, got in ((first.width, page.width), (first.height, page.height))
        )
        if not (halves and page.tile == first.tile and page.windowable):
            break
        if page.ifd.get(259) != first.ifd.get(259) or page.ifd.get(258) != first.ifd.get(258):
            break
        levels.append(Level(factor, page.width, page.height))
    pyramid = Pyramid(first.width, first.height, tw, th, tuple(levels))
    return PyramidFacts(pyramid, "tif")


@dataclass(frozen=True)
class Block:
    """Whole tiles or strips of a page around a window, as a TIFF of their own."""

    data: bytes
    size: tuple[int, int]
    crop: tuple[int, int, int, int]  # the window inside the block


def read_block(fetched: Fetched, im: ImageFile.ImageFile, allowance: Allowance) -> Block:
    """The tiles (or strips) of ``fetched``'s page that meet its window, copied into a TIFF."""
    try:
        pages, _ = _tiff_pages(im, fetched.page + 1)
    except (EOFError, OSError, ValueError, TypeError, struct.error) as exc:
        raise NotAnImage(
            f"{fetched.described}: its TIFF directories could not be read",
            detail=f"{type(exc).__name__}: {exc}",
        ) from None
    if len(pages) <= fetched.page:
        raise NotAnImage(f"{fetched.described} has no page {fetched.page}")
    page = pages[fetched.page]
    if not page.windowable:
        raise NotAnImage(f"{fetched.described}: page {fetched.page} cannot be read by window")
    width, height, ifd = page.width, page.height, page.ifd
    win = fetched.window or Box(0, 0, width, height)
    if win.w < 1 or win.h < 1 or win.x < 0 or win.y < 0:
        raise NotAnImage(f"{fetched.described}: empty window {win}")
    if win.x + win.w > width or win.y + win.h > height:
        raise NotAnImage(
            f"{fetched.described}: window {win} is outside its {width}x{height} page",
        )
    x1, y1 = win.x + win.w, win.y + win.h
    if page.tile is not None:
        tw, th = page.tile
        columns = math.ceil(width / tw)
        cols = range(win.x // tw, (x1 - 1) // tw + 1)
        rows = range(win.y // th, (y1 - 1) // th + 1)
        picks = [row * columns + col for row in rows for col in cols]
        block = (
            cols[0] * tw,
            rows[0] * th,
            min(cols[-1] * tw + tw, width),
            min(rows[-1] * th + th, height),
        )
        offsets, counts = _values(ifd.get(324, ())), _values(ifd.get(325, ()))
        expected_chunks = columns * math.ceil(height / th)
        chunk_pixels = tw * th
    else:
        rps = ifd.get(278, height)
        rps = rps if isinstance(rps, int) and 0 < rps < height else height
        rows = range(win.y // rps, (y1 - 1) // rps + 1)
        picks = list(rows)
        block = (0, rows[0] * rps, width, min(rows[-1] * rps + rps, height))
        offsets, counts = _values(ifd.get(273, ())), _values(ifd.get(279, ()))
        expected_chunks = math.ceil(height / rps)
        chunk_pixels = width * rps
    if len(offsets) < expected_chunks or len(counts) < expected_chunks:
        raise NotAnImage(f"{fetched.described}: its tile table is short")
    bw, bh = block[2] - block[0], block[3] - block[1]
    check_size(fetched, win.w, win.h, allowance)
    stored = sum(counts[i] for i in picks)
    need = decode_bytes(im.mode, bw, bh) + stored + RGBA_BYTES * win.w * win.h
    if need > allowance.nbytes:
        raise DecompressionBomb(
            f"{fetched.described}: a {win.w}x{win.h} window of page {fetched.page} would take "
            f"{need} bytes to decode where {allowance.nbytes} were set aside for it",
        )
    most = 2 * raw_bytes(im.mode, chunk_pixels, 1) + _CHUNK_SLACK
    chunks = []
    assert fetched.path is not None
    with open(fetched.path, "rb") as fp:
        for index in picks:
            if not 0 <= counts[index] <= most:
                raise DecompressionBomb(
                    f"{fetched.described}: a tile of {counts[index]} bytes for {chunk_pixels} "
                    "pixels",
                )
            fp.seek(offsets[index])
            chunk = fp.read(counts[index])
            if len(chunk) != counts[index]:
                raise NotAnImage(f"{fetched.described}: a tile is cut short")
            chunks.append(chunk)
    data = _tiff_of(ifd, page, (bw, bh), chunks)
    crop = (win.x - block[0], win.y - block[1], x1 - block[0], y1 - block[1])
    return Block(data, (bw, bh), crop)


def _tiff_of(
    source: TiffImagePlugin.ImageFileDirectory_v2,
    page: _Page,
    size: tuple[int, int],
    chunks: list[bytes],
) -> bytes:
    """A classic TIFF, in the source's byte order, of ``chunks`` laid out as ``page`` lays out
    its tiles or strips, ``size`` pixels large."""
    ifd = TiffImagePlugin.ImageFileDirectory_v2(prefix=source.prefix)

    def put(tag: int, value: Any, kind: int | None = None) -> None:
        kind = kind or source.tagtype.get(tag, _LONG)
        ifd.tagtype[tag] = {_LONG8: _LONG, _SLONG8: 9, _IFD8: _LONG, _IFD: _LONG}.get(kind, kind)
        ifd[tag] = value

    for tag in _PIXEL_TAGS:
        if tag in source:
            put(tag, source[tag])
    put(256, size[0], _LONG)
    put(257, size[1], _LONG)
    lengths = tuple(len(c) for c in chunks)
    places = tuple(sum(lengths[:i]) for i in range(len(lengths)))
    if page.tile is not None:
        put(322, page.tile[0], _LONG)
        put(323, page.tile[1], _LONG)
        put(325, lengths, _LONG)
        put(324, (0,) * len(chunks), _LONG)
        start = 8 + len(ifd.tobytes(8))
        put(324, tuple(start + p for p in places), _LONG)
    else:
        put(278, source.get(278, size[1]), _LONG)
        put(279, lengths, _LONG)
        put(273, places, _LONG)  # Pillow moves strip offsets past the directory itself
    endian = "<" if source.prefix == b"II" else ">"
    header = source.prefix + struct.pack(endian + "HL", 42, 8)
    return b"".join((header, ifd.tobytes(8), *chunks))
