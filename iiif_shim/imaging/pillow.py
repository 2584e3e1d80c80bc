"""Pillow, and only Pillow: read headers, decode within a budget, stitch tiles, crop, scale,
mirror, rotate, apply the quality, encode.

Every function here is synchronous and CPU-bound; ``service.py`` runs them in the thread pool,
never on the event loop. Work comes in two halves so the first can be cached: :func:`decode`
reads a source at the smallest resolution that still yields the output (JPEG DCT scaling via
``draft``, JPEG 2000 resolution levels via ``reduce``; see :func:`reduction`), and
:func:`finish` crops, scales, turns, applies the quality and encodes.

Nothing is decoded before its header is checked (:class:`Allowance`): against the size asked of
the backend (a tile or answer far larger than its cell is a decompression bomb: 502), against
``max_source_pixels``, and against the bytes this request reserved, counted in what Pillow
really stores for the mode (4 bytes a pixel for RGB, a whole byte for a 1-bit pixel) plus the
conversion to L, LA, RGB or RGBA. :func:`cost` is that count for a whole plan, made before any
work so the request can reserve it (``budget.py``). Pillow's own bomb guard stays on.

A file delivered as a page and a window of it (``Fetched.page``, ``Fetched.window``: a level of
a pyramidal TIFF, the region's pixels in it) is decoded by window: only the native tiles (or
strips) that meet the window (:func:`tiff_pyramid` finds the levels).
"""

from __future__ import annotations

import ctypes
import io
import math
import os
import struct
import sys
import time
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from PIL import Image, ImageFile, TiffImagePlugin, UnidentifiedImageError

from iiif_shim.base.errors import BackendError, NotImplementedFeature
from iiif_shim.iiif.profile import Format, Quality
from iiif_shim.iiif.resolve import Box, rotated_size
from iiif_shim.model.facts import (
    MAX_LEVELS,
    MAX_TILE,
    MIN_TILE,
    Colour,
    Level,
    Pyramid,
    PyramidFacts,
    SourceInfo,
)
from iiif_shim.model.plan import Fetched, PillowSteps, Plan

# Pillow's process-wide guard: it refuses to open more than twice this many pixels (and warns
# above it). The shim's own, configurable ``iiif.max_source_pixels`` may not go past that.
PILLOW_GUARD_PIXELS = 1 << 30
Image.MAX_IMAGE_PIXELS = PILLOW_GUARD_PIXELS // 2


def unmap_large_blocks() -> None:
    """Give freed image memory back to the system at once (glibc only).

    glibc serves a large allocation from its heaps once a block of that size has been freed (its
    mmap threshold grows up to 32 MB) and keeps what is freed there, per thread: decoded images
    then stay resident after their reservation is released, and a process under load grew to
    1.4x its budget (bench/huge.py). A fixed threshold maps every block of 1 MiB or more on its
    own and unmaps it when freed. An operator's ``MALLOC_MMAP_THRESHOLD_`` is left alone.
    Process-wide: called once by a server process at start (``server.serve``)."""
    if sys.platform != "linux" or "MALLOC_MMAP_THRESHOLD_" in os.environ:
        return
    try:
        mallopt = ctypes.CDLL(None).mallopt
    except (OSError, AttributeError):  # not glibc
        return
    mallopt(-3, 1 << 20)  # M_MMAP_THRESHOLD


_PIL_FORMAT = {
    Format.JPG: "JPEG",
    Format.TIF: "TIFF",
    Format.PNG: "PNG",
    Format.GIF: "GIF",
    Format.JP2: "JPEG2000",
    Format.PDF: "PDF",
    Format.WEBP: "WEBP",
}


def pil_format(fmt: Format) -> str:
    """Pillow's name of a IIIF format (as ``Image.format`` reports it)."""
    return _PIL_FORMAT[fmt]


_WHITE: dict[str, Any] = {"L": 255, "LA": (255, 255), "RGB": (255,) * 3, "RGBA": (255,) * 4}
_BLACK: dict[str, Any] = {"L": 0, "LA": (0, 255), "RGB": (0, 0, 0), "RGBA": (0, 0, 0, 255)}
_READ_ERRORS = (UnidentifiedImageError, OSError, SyntaxError, ValueError, EOFError)

# Bytes a pixel costs while decoding in each mode: what Pillow stores for it (RGB is 4 bytes,
# "1" a whole byte) plus the copy it is converted into (one of L, LA, RGB, RGBA).
_DECODE_BYTES = {
    "L": 1,
    "LA": 4,
    "RGB": 4,
    "RGBA": 4,
    "1": 2,
    "P": 5,
    "PA": 8,
    "La": 8,
    "RGBa": 8,
    "RGBX": 8,
    "CMYK": 8,
    "YCbCr": 8,
    "LAB": 8,
    "HSV": 8,
    "F": 5,
    "I": 9,
}
WORST_PIXEL = 11  # 16-bit grey (2), as 32-bit (4), scaled (4), as 8-bit (1); unknown modes
_RGBA = 4  # bytes of an output pixel (every step after decoding works in L, LA, RGB or RGBA)
SLACK = 2  # pixels a backend may deliver past the size asked (rounding in legacy servers)

Record = Callable[[str, float], None]  # (step, seconds), for metrics


def decode_bytes(mode: str | None, width: int, height: int) -> int:
    """Bytes decoding a ``width`` x ``height`` image in ``mode`` takes at its peak."""
    per_pixel = WORST_PIXEL if mode is None else _DECODE_BYTES.get(mode, WORST_PIXEL)
    return per_pixel * width * height


@dataclass(frozen=True)
class Allowance:
    """What a decode may take: no more than ``max_source_pixels`` in the header, no more than
    ``expected`` (plus :data:`SLACK`) when the size asked is known, no more than ``nbytes``."""

    max_source_pixels: int
    nbytes: int
    expected: tuple[int, int] | None = None


@dataclass(frozen=True)
class Cost:
    """Bytes a plan takes: decoding what the backend delivers, then finishing the output."""

    decode: int
    finish: int

    @property
    def total(self) -> int:
        return self.decode + self.finish


def cost(plan: Plan, info: SourceInfo, *, decoded_cached: bool = False) -> Cost:
    """Bytes the plan will take at its peak, before anything is fetched or decoded."""
    steps = plan.steps
    out_w, out_h = steps.scale
    turned_w, turned_h = rotated_size(out_w, out_h, steps.degrees)
    # scaled, mirrored, turned (with an alpha copy), the quality conversion, the encoder's buffer
    finish = 4 * _RGBA * max(out_w * out_h, turned_w * turned_h)
    if plan.native.whole_source(info.width, info.height):
        factor = 1 if decoded_cached else reduction(info.format, info.width, info.height, steps)
        w, h = math.ceil(info.width / factor), math.ceil(info.height / factor)
        decode = decode_bytes(info.mode, w, h)
    elif _windowed(info):
        # a window of a tiled TIFF page: the whole native tiles around it, their compressed
        # bytes (LZW at worst takes half as much again as the raw samples), then the window
        # cut out of them
        assert isinstance(info.native, PyramidFacts)
        w, h = plan.native.delivered_size()
        bw, bh = tile_block(w + SLACK, h + SLACK, info.native.pyramid)
        stored = _raw_bytes(info.mode, bw, bh) * 3 // 2
        decode = decode_bytes(info.mode, bw, bh) + stored + _RGBA * (w + SLACK) * (h + SLACK)
    else:
        w, h = plan.native.delivered_size()
        decode = decode_bytes(None, w + SLACK, h + SLACK)
        if info.tiles is not None:  # stitched: plus one tile decoding at a time
            decode += decode_bytes(None, info.tiles.width + SLACK, info.tiles.height + SLACK)
    finish += _RGBA * _reduced_first(w, h, out_w, out_h)
    return Cost(0 if decoded_cached else decode, finish)


def _windowed(info: SourceInfo) -> bool:
    """Whether the source's backend delivers windows of a tiled TIFF's pages (``files``)."""
    return info.format == "TIFF" and isinstance(info.native, PyramidFacts)


def tile_block(width: int, height: int, pyramid: Pyramid) -> tuple[int, int]:
    """The largest block of whole native tiles a ``width`` x ``height`` window can meet."""

    def span(n: int, tile: int) -> int:
        return (math.ceil((n - 1) / tile) + 1) * tile

    return span(width, pyramid.tile_width), span(height, pyramid.tile_height)


def _raw_bytes(mode: str | None, width: int, height: int) -> int:
    """Bytes of a ``width`` x ``height`` block's samples as a file stores them, uncompressed."""
    per_pixel = {"1": 1, "L": 1, "P": 1, "LA": 2, "RGB": 3, "YCbCr": 3, "LAB": 3}.get(mode or "", 8)
    return per_pixel * width * height


def _reduced_first(width: int, height: int, out_w: int, out_h: int) -> int:
    """Pixels of the intermediate a large LANCZOS reduction makes first (``reducing_gap`` 3 in
    ``_crop_and_scale``): nothing unless one side shrinks at least sixfold; then under 6x the
    output on each side, and never more than the decoded image."""
    if width < 6 * out_w and height < 6 * out_h:
        return 0
    return min(36 * out_w * out_h, width * height)


def writable_formats() -> frozenset[Format]:
    """The IIIF formats this Pillow build can encode (checked once at start-up)."""
    Image.init()
    found = set()
    for fmt, name in _PIL_FORMAT.items():
        if name in Image.SAVE:
            try:
                buf = io.BytesIO()
                Image.new("RGB", (4, 4), (200, 30, 30)).save(buf, name)
                found.add(fmt)
            except (OSError, KeyError, ValueError):
                continue
    return frozenset(found)


def _open(fetched: Fetched) -> Image.Image:
    source: Any = fetched.path if fetched.path is not None else io.BytesIO(fetched.data or b"")
    try:
        return Image.open(source)
    except Image.DecompressionBombError:
        if fetched.path is not None:
            raise NotImplementedFeature(
                f"the source has more than {PILLOW_GUARD_PIXELS} pixels, more than this server "
                "decodes",
                kind="too_large",
            ) from None
        raise BackendError(
            f"{fetched.described} sent an image of more than {PILLOW_GUARD_PIXELS} pixels",
            kind="bomb",
        ) from None
    except _READ_ERRORS as exc:
        raise BackendError(
            f"{fetched.described} did not return an image",
            kind="not_image",
            detail=f"{type(exc).__name__}: {exc}",
        ) from None


def colour_of(mode: str) -> Colour:
    if mode == "1":
        return Colour.BITONAL
    if mode in ("L", "LA", "La", "I", "F") or mode.startswith("I;16"):
        return Colour.GRAY
    return Colour.COLOR


def probe(fetched: Fetched) -> tuple[int, int, Colour, str | None, str]:
    """Width, height, colour, format and Pillow mode, from the header only."""
    with _open(fetched) as im:
        width, height = im.size
        if width < 1 or height < 1:
            raise BackendError(f"{fetched.described} has an empty image", kind="not_image")
        return width, height, colour_of(im.mode), im.format, im.mode


# --- parts of a file: one page of a TIFF, one window of a page ------------------------------
#
# Pillow hands every compressed TIFF to libtiff as one job over the whole page (the image must be
# as large as the page), so a window cannot be had by trimming Pillow's tile list. Instead the
# native tiles (or strips) that meet the window are copied, still compressed, into a small TIFF
# of their own with the page's pixel tags, which Pillow's real TIFF reader then decodes; the
# window is cut out of that block. Edge tiles keep their clipped size; JPEG tables, predictors
# and subsampling come along with the tags.

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
class _Block:
    """Whole tiles or strips of a page around a window, as a TIFF of their own."""

    data: bytes
    size: tuple[int, int]
    crop: tuple[int, int, int, int]  # the window inside the block


def _tiff_block(fetched: Fetched, im: ImageFile.ImageFile, allowance: Allowance) -> _Block:
    """The tiles (or strips) of ``fetched``'s page that meet its window, copied into a TIFF."""
    try:
        pages, _ = _tiff_pages(im, fetched.page + 1)
    except (EOFError, OSError, ValueError, TypeError, struct.error) as exc:
        raise BackendError(
            f"{fetched.described}: its TIFF directories could not be read",
            kind="not_image",
            detail=f"{type(exc).__name__}: {exc}",
        ) from None
    if len(pages) <= fetched.page:
        raise BackendError(f"{fetched.described} has no page {fetched.page}", kind="not_image")
    page = pages[fetched.page]
    if not page.windowable:
        raise BackendError(
            f"{fetched.described}: page {fetched.page} cannot be read by window", kind="not_image"
        )
    width, height, ifd = page.width, page.height, page.ifd
    win = fetched.window or Box(0, 0, width, height)
    if win.w < 1 or win.h < 1 or win.x < 0 or win.y < 0:
        raise BackendError(f"{fetched.described}: empty window {win}", kind="not_image")
    if win.x + win.w > width or win.y + win.h > height:
        raise BackendError(
            f"{fetched.described}: window {win} is outside its {width}x{height} page",
            kind="not_image",
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
        raise BackendError(f"{fetched.described}: its tile table is short", kind="not_image")
    bw, bh = block[2] - block[0], block[3] - block[1]
    check_size(fetched, win.w, win.h, allowance)
    stored = sum(counts[i] for i in picks)
    need = decode_bytes(im.mode, bw, bh) + stored + _RGBA * win.w * win.h
    if need > allowance.nbytes:
        raise BackendError(
            f"{fetched.described}: a {win.w}x{win.h} window of page {fetched.page} would take "
            f"{need} bytes to decode where {allowance.nbytes} were set aside for it",
            kind="bomb",
        )
    most = 2 * _raw_bytes(im.mode, chunk_pixels, 1) + _CHUNK_SLACK
    chunks = []
    assert fetched.path is not None
    with open(fetched.path, "rb") as fp:
        for index in picks:
            if not 0 <= counts[index] <= most:
                raise BackendError(
                    f"{fetched.described}: a tile of {counts[index]} bytes for {chunk_pixels} "
                    "pixels",
                    kind="bomb",
                )
            fp.seek(offsets[index])
            chunk = fp.read(counts[index])
            if len(chunk) != counts[index]:
                raise BackendError(f"{fetched.described}: a tile is cut short", kind="not_image")
            chunks.append(chunk)
    data = _tiff_of(ifd, page, (bw, bh), chunks)
    crop = (win.x - block[0], win.y - block[1], x1 - block[0], y1 - block[1])
    return _Block(data, (bw, bh), crop)


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


@dataclass(frozen=True)
class Decoded:
    """A source decoded at ``1/factor`` of its size, in mode L, LA, RGB or RGBA.

    Decoded sources are cached and shared by concurrent renders, so nothing here ever modifies
    ``image``: every step makes a new image.
    """

    image: Image.Image
    source_width: int
    source_height: int

    @property
    def nbytes(self) -> int:
        return decode_bytes(self.image.mode, self.image.width, self.image.height)


def reduction(source_format: str | None, width: int, height: int, steps: PillowSteps) -> int:
    """The power-of-two factor to decode at: the smallest decode that still yields the output,
    where the source format can decode small (JPEG DCT scaling up to 8, JPEG 2000 levels)."""
    cw, ch = (steps.crop.w, steps.crop.h) if steps.crop else (width, height)
    shrink = min(cw / steps.scale[0], ch / steps.scale[1])
    if shrink < 2 or source_format not in ("JPEG", "JPEG2000"):
        return 1
    levels = min(int(math.log2(shrink)), 3 if source_format == "JPEG" else 5)
    return int(2**levels)


def _check_header(fetched: Fetched, im: Image.Image, allowance: Allowance) -> None:
    """Refuse, from the header alone, what would decode to more than was asked or allowed."""
    check_size(fetched, im.width, im.height, allowance)


def check_size(fetched: Fetched, width: int, height: int, allowance: Allowance) -> None:
    """Larger than asked (plus :data:`SLACK`) is a bomb (502); over ``max_source_pixels``,
    501."""
    if allowance.expected is not None:
        ew, eh = allowance.expected
        if width > ew + SLACK or height > eh + SLACK:
            raise BackendError(
                f"{fetched.described} sent a {width}x{height} image where {ew}x{eh} was asked",
                kind="bomb",
            )
    if width * height > allowance.max_source_pixels:
        raise NotImplementedFeature(
            f"the source is {width}x{height}, over this server's limit of "
            f"{allowance.max_source_pixels} source pixels",
            kind="too_large",
        )


def decode(
    fetched: Fetched, factor: int, allowance: Allowance, record: Record | None = None
) -> Decoded:
    """Decode the delivered image at ``1/factor`` of its size (when its format can), within
    ``allowance``."""
    if fetched.image is not None:  # already pixels (stitched from checked tiles)
        return Decoded(_normalise_mode(fetched.image), *fetched.image.size)
    started = _clock()
    with _open(fetched) as im:
        if fetched.page or fetched.window is not None:
            decoded = _decode_window(fetched, im, allowance)
            _timed(record, "decode", started)
            return decoded
        _check_header(fetched, im, allowance)
        width, height = im.size
        if factor > 1 and im.format == "JPEG":
            # draft picks the largest scale that keeps *both* sides at least this size, so ask
            # for the floor: with ceil, 1500/8 = 188 rows admits only 1/4 (375 rows)
            im.draft(im.mode, (max(1, width // factor), max(1, height // factor)))
            decoded_size = im.size
        elif factor > 1 and isinstance(im, ImageFile.ImageFile) and im.format == "JPEG2000":
            decoded_size = _j2k_reduce(im, factor)
        else:
            decoded_size = (width, height)
        need = decode_bytes(im.mode, *decoded_size)
        if need > allowance.nbytes:
            raise BackendError(
                f"{fetched.described} sent a {width}x{height} {im.mode} image, which would take "
                f"{need} bytes to decode where {allowance.nbytes} were set aside for it",
                kind="bomb",
            )
        try:
            im.load()
            image = _normalise_mode(im)
        except _READ_ERRORS as exc:
            raise BackendError(
                f"{fetched.described}: the image could not be decoded",
                kind="not_image",
                detail=f"{type(exc).__name__}: {exc}",
            ) from None
    _timed(record, "decode", started)
    return Decoded(image, width, height)


def _decode_window(fetched: Fetched, im: Image.Image, allowance: Allowance) -> Decoded:
    """``fetched.window`` of page ``fetched.page``, decoding only the tiles it meets."""
    if im.format != "TIFF" or not isinstance(im, ImageFile.ImageFile):
        raise BackendError(
            f"{fetched.described}: only TIFF pages can be read by window", kind="not_image"
        )
    block = _tiff_block(fetched, im, allowance)
    try:
        with Image.open(io.BytesIO(block.data)) as part:
            if part.size != block.size:
                raise BackendError(f"{fetched.described}: unreadable tiles", kind="not_image")
            part.load()
            whole = block.crop == (0, 0, *block.size)
            image = _normalise_mode(part if whole else part.crop(block.crop))
            if image is part:
                image = part.copy()  # detached from the file object about to close
    except _READ_ERRORS as exc:
        raise BackendError(
            f"{fetched.described}: the image could not be decoded",
            kind="not_image",
            detail=f"{type(exc).__name__}: {exc}",
        ) from None
    return Decoded(image, image.width, image.height)


def _j2k_reduce(im: ImageFile.ImageFile, factor: int) -> tuple[int, int]:
    """Set a JPEG 2000 image to decode at ``1/factor`` (as far as its resolution levels go);
    the size it will have. Pillow's own ``reduce`` rounds the size to nearest where OpenJPEG
    rounds up, and then fails on sizes such as 1000/32, so the decode job is set here."""
    levels = min(int(math.log2(factor)), _j2k_levels(im))
    if levels < 1 or len(im.tile) != 1:
        return im.size
    power = 1 << levels
    size = (math.ceil(im.width / power), math.ceil(im.height / power))
    job = im.tile[0]
    args = job.args
    assert isinstance(args, tuple)
    reduced = (args[0], levels, *args[2:])
    im.tile = [ImageFile._Tile(job.codec_name, (0, 0, *size), job.offset, reduced)]
    im._size = size
    return size


def _j2k_levels(im: ImageFile.ImageFile) -> int:
    """Resolution levels below full size a JPEG 2000 codestream holds (its COD marker's
    decomposition levels), 0 when that cannot be read."""
    fp = im.fp
    if fp is None:
        return 0
    here = fp.tell()
    try:
        fp.seek(0)
        if fp.read(4) != b"\xff\x4f\xff\x51":  # a JP2 file: find its codestream box
            fp.seek(0)
            for _ in range(64):
                length, kind = struct.unpack(">I4s", fp.read(8))
                if kind == b"jp2c":
                    break
                if length == 1:
                    length = struct.unpack(">Q", fp.read(8))[0] - 8
                if length < 8:
                    return 0
                fp.seek(length - 8, io.SEEK_CUR)
            else:
                return 0
        else:
            fp.seek(0)
        if fp.read(2) != b"\xff\x4f":
            return 0
        for _ in range(64):  # main header markers, up to COD
            marker, length = struct.unpack(">HH", fp.read(4))
            if marker == 0xFF52:
                cod = fp.read(length - 2)
                return cod[5] if len(cod) > 5 else 0
            if marker == 0xFF90 or length < 2:
                return 0
            fp.seek(length - 2, io.SEEK_CUR)
        return 0
    except (OSError, struct.error):
        return 0
    finally:
        fp.seek(here)


def finish(decoded: Decoded, steps: PillowSteps, record: Record | None = None) -> bytes:
    """Crop, scale, turn, apply the quality and encode, from a decoded source."""
    started = _clock()
    out = _crop_and_scale(decoded, steps)
    if out is decoded.image:
        out = out.copy()  # encoders set attributes on the image; keep the shared one untouched
    started = _timed(record, "crop_scale", started)
    out = _turn(out, steps)
    started = _timed(record, "turn", started)
    out = _quality(out, steps.quality)
    started = _timed(record, "quality", started)
    body = _encode(out, steps.format, steps.jpeg_quality)
    _timed(record, "encode", started)
    return body


def render(
    fetched: Fetched, steps: PillowSteps, allowance: Allowance, record: Record | None = None
) -> bytes:
    """Decode and finish in one go (for what a backend made for this one request).

    When the backend already did everything, in the right format and exactly the right size,
    its bytes pass through untouched (no second lossy encode).
    """
    if fetched.image is not None:
        return finish(decode(fetched, 1, allowance, record), steps, record)
    with _open(fetched) as im:
        width, height, fmt = im.width, im.height, im.format
    if fetched.window is not None:  # what is delivered is that part of the file
        width, height = fetched.window.w, fetched.window.h
    if (
        fetched.data is not None
        and steps.encoded
        and no_pixel_work(steps)
        and (width, height) == steps.scale
        and fmt == _PIL_FORMAT[steps.format]
    ):
        return fetched.data
    factor = reduction(fmt, width, height, steps)
    return finish(decode(fetched, factor, allowance, record), steps, record)


@dataclass(frozen=True)
class Piece:
    """One tile of a stitch: its bytes, where its image starts in level pixels (overlap
    included), the level pixels it stands for, and the largest its image may be."""

    data: bytes
    origin: tuple[int, int]
    cell: tuple[int, int, int, int]
    bounds: tuple[int, int]


def stitch(
    window: tuple[int, int, int, int],
    pieces: list[Piece],
    described: str,
    record: Record | None = None,
) -> Image.Image:
    """The ``window`` (level pixels) assembled from its tiles, each checked from its header
    against its cell before it is decoded, its overlap trimmed."""
    started = _clock()
    x0, y0, x1, y1 = window
    canvas: Image.Image | None = None
    for piece in pieces:
        ox, oy = piece.origin
        cx0, cy0, cx1, cy1 = piece.cell
        tile_source = Fetched(data=piece.data, described=described)
        with _open(tile_source) as tile:
            bw, bh = piece.bounds
            if tile.width > bw + SLACK or tile.height > bh + SLACK:
                raise BackendError(
                    f"{described} sent a {tile.width}x{tile.height} tile for a {bw}x{bh} cell",
                    kind="bomb",
                )
            try:
                tile.load()
            except _READ_ERRORS as exc:
                raise BackendError(
                    f"{described} sent a tile that could not be decoded",
                    kind="not_image",
                    detail=f"{type(exc).__name__}: {exc}",
                ) from None
            if canvas is None:
                mode = tile.mode if tile.mode in ("L", "RGB", "RGBA", "LA") else "RGB"
                canvas = Image.new(mode, (x1 - x0, y1 - y0))
            part = tile.crop((cx0 - ox, cy0 - oy, cx1 - ox, cy1 - oy))
            canvas.paste(part.convert(canvas.mode), (cx0 - x0, cy0 - y0))
    assert canvas is not None
    _timed(record, "stitch", started)
    return canvas


def _clock() -> float:
    return time.perf_counter()


def _timed(record: Record | None, step: str, started: float) -> float:
    now = time.perf_counter()
    if record is not None:
        record(step, now - started)
    return now


def no_pixel_work(steps: PillowSteps) -> bool:
    """Whether the steps leave the pixels as delivered (size and format apart)."""
    return (
        steps.crop is None
        and not steps.mirror
        and steps.degrees == 0
        and steps.quality is Quality.DEFAULT
    )


def _crop_and_scale(decoded: Decoded, steps: PillowSteps) -> Image.Image:
    im = decoded.image
    crop = steps.crop
    width, height = decoded.source_width, decoded.source_height
    x0, y0, cw, ch = (crop.x, crop.y, crop.w, crop.h) if crop else (0, 0, width, height)
    tw, th = steps.scale
    sx, sy = width / im.width, height / im.height
    box = (x0 / sx, y0 / sy, (x0 + cw) / sx, (y0 + ch) / sy)
    if all(float(v).is_integer() for v in box) and (box[2] - box[0], box[3] - box[1]) == (tw, th):
        ibox = (int(box[0]), int(box[1]), int(box[2]), int(box[3]))
        return im if ibox == (0, 0, im.width, im.height) else im.crop(ibox)
    shrink = min((box[2] - box[0]) / tw, (box[3] - box[1]) / th)
    gap = 3.0 if shrink >= 3 else None
    return im.resize((tw, th), Image.Resampling.LANCZOS, box=box, reducing_gap=gap)


def _normalise_mode(im: Image.Image) -> Image.Image:
    """Bring any source mode to one of L, LA, RGB, RGBA."""
    mode = im.mode
    if mode in ("L", "LA", "RGB", "RGBA"):
        return im
    if mode == "1":
        return im.convert("L")
    if mode.startswith("I;16") or mode == "I":
        wide = im if mode == "I" else im.convert("I")
        return wide.point(lambda v: v * (1 / 256)).convert("L")
    if mode == "F":
        return im.convert("L")
    if mode in ("P", "PA"):
        has_alpha = mode == "PA" or "transparency" in im.info
        return im.convert("RGBA" if has_alpha else "RGB")
    if mode in ("La",):
        return im.convert("LA")
    if mode in ("RGBa",):
        return im.convert("RGBA")
    return im.convert("RGB")


def _turn(im: Image.Image, steps: PillowSteps) -> Image.Image:
    if steps.mirror:
        im = im.transpose(Image.Transpose.FLIP_LEFT_RIGHT)
    degrees = steps.degrees
    if degrees == 0:
        return im
    quarter = {
        90.0: Image.Transpose.ROTATE_270,  # Pillow turns counter-clockwise
        180.0: Image.Transpose.ROTATE_180,
        270.0: Image.Transpose.ROTATE_90,
    }.get(degrees)
    if quarter is not None:
        return im.transpose(quarter)
    if steps.format.has_alpha:  # spec: transparent background where the format allows it
        im = im.convert("LA" if im.mode in ("L", "LA") else "RGBA")
        fill: Any = (0, 0) if im.mode == "LA" else (0, 0, 0, 0)
    else:  # the spec leaves it open; black, as libvips and the validators expect
        fill = _BLACK[im.mode]
    return _rotate(im, degrees, fill)


def _rotate(im: Image.Image, degrees: float, fill: Any) -> Image.Image:
    """``im`` turned clockwise onto its tight bounding box (``rotated_size``: no slack around
    the turned corners, unlike Pillow's ``rotate(expand=True)``), centre on centre, bicubic."""
    w, h = im.size
    out_w, out_h = rotated_size(w, h, degrees)
    t = math.radians(degrees)
    cos, sin = math.cos(t), math.sin(t)
    # Pillow's affine data maps each output pixel back to the input (pixel centres at +0.5):
    # input = centre_in + R(-t) (output - centre_out), for a clockwise turn with y down.
    cx, cy = out_w / 2, out_h / 2
    matrix = (cos, sin, w / 2 - cos * cx - sin * cy, -sin, cos, h / 2 + sin * cx - cos * cy)
    return im.transform(
        (out_w, out_h),
        Image.Transform.AFFINE,
        matrix,
        resample=Image.Resampling.BICUBIC,
        fillcolor=fill,
    )


def _quality(im: Image.Image, quality: Quality) -> Image.Image:
    alpha = im.mode in ("LA", "RGBA")
    if quality is Quality.GRAY:
        return im.convert("LA" if alpha else "L")
    if quality is Quality.BITONAL:
        if alpha:
            lum = im.convert("LA")
            black_white = lum.getchannel("L").point(lambda v: 255 if v >= 128 else 0)
            return Image.merge("LA", (black_white, lum.getchannel("A")))
        return im.convert("L").convert("1", dither=Image.Dither.NONE)
    return im


def _flatten(im: Image.Image) -> Image.Image:
    """Drop alpha by compositing onto white, for formats without transparency."""
    if im.mode == "1":
        return im.convert("L")
    if im.mode not in ("LA", "RGBA"):
        return im
    base_mode = im.mode[:-1]
    background = Image.new(base_mode, im.size, _WHITE[base_mode])
    background.paste(im.convert(base_mode), mask=im.getchannel("A"))
    return background


def _encode(im: Image.Image, fmt: Format, jpeg_quality: int) -> bytes:
    buf = io.BytesIO()
    name = _PIL_FORMAT[fmt]
    options: dict[str, Any] = {}
    if fmt is Format.JPG:
        im = _flatten(im)
        options = {"quality": jpeg_quality}
    elif fmt is Format.PDF:
        im = _flatten(im)
        options = {"quality": jpeg_quality, "resolution": 72.0}
    elif fmt is Format.WEBP:
        if im.mode in ("1", "L"):
            im = im.convert("RGB")
        elif im.mode == "LA":
            im = im.convert("RGBA")
        options = {"quality": jpeg_quality}
    elif fmt is Format.GIF and im.mode == "RGB":
        # octree keeps flat colours truest (median cut drifts by 10-20 levels on JPEG-noisy input)
        im = im.quantize(256, method=Image.Quantize.FASTOCTREE, dither=Image.Dither.NONE)
    elif fmt is Format.JP2:
        if im.mode == "1":
            im = im.convert("L")
        options = {"quality_mode": "rates", "quality_layers": [10], "irreversible": True}
    elif fmt is Format.TIF:
        options = {"compression": "tiff_deflate"}
    elif fmt is Format.PNG:
        options = {"compress_level": 6}
    try:
        im.save(buf, name, **options)
    except (OSError, ValueError) as exc:
        raise NotImplementedFeature(
            f"this image cannot be written as {fmt.value}",
            kind="encode",
            detail=f"{type(exc).__name__}: {exc}",
        ) from None
    return buf.getvalue()


def encode(im: Image.Image, fmt: Format, jpeg_quality: int) -> bytes:
    """``im`` (mode 1, L, LA, RGB or RGBA) written as ``fmt``, as :func:`finish` writes it
    (for the vips engine, which finishes with Pillow the formats libvips cannot write)."""
    return _encode(im, fmt, jpeg_quality)
