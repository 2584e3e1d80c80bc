"""What a plan costs in decoded-pixel memory, counted before any work, and what one decode may
take.

:func:`cost` is the count for a whole plan, made before anything is fetched so the request can
reserve it (``budget.py``): :class:`Cost` holds the most decoding holds at once (the source at
the reduction it is decoded at, :func:`reduction`: JPEG DCT scaling, JPEG 2000 resolution
levels; in what Pillow really stores for its mode plus its conversion to L, LA, RGB or RGBA,
:func:`decode_bytes`), the decoded source kept while finishing, and the most finishing holds
at once besides it: each step makes a new image while the one before it is still held (the
crop or the scaled image, none when the source is already the output's size; the scaling's
intermediate, the mirror, the turn with its alpha copy and Pillow's premultiplied pass, the
quality), then the encoder: its whole-image buffers (GIF, JPEG 2000, WebP), or the output it
holds, counted from the most a photograph's pixel weighs written (:func:`encoded_bytes`), as
``bench/cost_model.py`` measured them; plus :data:`MARGIN`. :class:`Libvips` says which steps
libvips does for the ``vips`` engine: a source it decodes takes a byte a sample of the 8-bit
image it keeps (:func:`libvips_bytes`, also the count ``vips._open`` checks a header against)
and the rows its loader holds, and what it does after that streams through strips, so with
``vips_steps: all`` only the encoder's output and buffers count besides the decoded source
(``vips.VipsEngine.cost``). A window of a tiled TIFF that libvips reads itself
(:attr:`Libvips.windows`) costs a few rows of its tiles and, for the steps Pillow does, the
scaled window's pixels crossing back to Pillow (:func:`_libvips_window`). A JPEG 2000 is
counted from its codestream's layout in the facts (``SourceInfo.codestream``): decoded at the
reduction its levels allow (:func:`j2k_factor`), one tile at a time by OpenJPEG in 32-bit
samples from the tile's compressed bytes read whole, after setting up every tile of the grid
(:func:`_j2k`); libvips keeps three rows of the full-size grid's worth of tiles, sized as at
full size but in pixels of the reduction, and a reduced read sets the grid up twice. The model
is checked against measured peaks (``tests/unit/test_cost_model.py``, the table in
docs/performance.md).
:class:`Allowance` is what one decode may take, and :func:`check_size` the check of a header
against it. Pure: no pixel is touched here."""

from __future__ import annotations

import dataclasses
import math
from dataclasses import dataclass

from iiif_shim.base.errors import (
    DecompressionBomb,
    SourceTooLarge,
)
from iiif_shim.iiif.profile import Format, Quality
from iiif_shim.iiif.resolve import rotated_size
from iiif_shim.imaging.fetched import Fetched
from iiif_shim.model.facts import Codestream, Pyramid, PyramidFacts, SourceInfo
from iiif_shim.model.plan import Plan, Steps

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


RGBA_BYTES = 4  # bytes of an output pixel (every step after decoding works in L, LA, RGB or RGBA)


SLACK = 2  # pixels a backend may deliver past the size asked (rounding in legacy servers)


def decode_bytes(mode: str | None, width: int, height: int) -> int:
    """Bytes decoding a ``width`` x ``height`` image in ``mode`` takes at its peak."""
    per_pixel = WORST_PIXEL if mode is None else _DECODE_BYTES.get(mode, WORST_PIXEL)
    return per_pixel * width * height


# Bands of the 8-bit image libvips holds for a source in each of Pillow's modes
# (``vips._normalise``: L, LA, RGB or RGBA; a palette may have a transparent colour, CMYK is
# turned into RGB)
_LIBVIPS_BANDS = {"1": 1, "L": 1, "I": 1, "F": 1, "LA": 2, "La": 2, "RGB": 3, "YCbCr": 3}
_LIBVIPS_BANDS |= {"LAB": 3, "HSV": 3, "CMYK": 3}
_LIBVIPS_ROWS = 640  # rows of the source its loader and the cast to 8 bits hold (measured: 600)


def libvips_bands(mode: str | None) -> int:
    """Bands of what libvips holds for a source of Pillow's ``mode`` (``None``: the most)."""
    if mode is not None and mode.startswith("I;16"):
        return 1
    return _LIBVIPS_BANDS.get(mode or "", 4)


def libvips_bytes(bands: int, width: int, height: int) -> int:
    """Bytes libvips holds for a ``width`` x ``height`` source it decoded: a byte a sample of
    the 8-bit image it is normalised to (a 16-bit or 1-bit source streams through that cast,
    its own samples never held whole). The one count of libvips' decode: the estimate's
    (:func:`cost`) and the check of a header against what was set aside (``vips._open``)."""
    return bands * width * height


@dataclass(frozen=True)
class Allowance:
    """What a decode may take: no more than ``max_source_pixels`` in the header, no more than
    ``expected`` (plus :data:`SLACK`) when the size asked is known, no more than ``nbytes``."""

    max_source_pixels: int
    nbytes: int
    expected: tuple[int, int] | None = None


@dataclass(frozen=True)
class Cost:
    """Bytes a plan takes: decoding what the backend delivers (``decode``, the most the decode
    alone holds at once), then finishing the output (``finish``, the most finishing holds at
    once besides the decoded source, ``kept``, which stays in memory until the end)."""

    decode: int
    finish: int
    kept: int = 0

    @property
    def total(self) -> int:
        return max(self.decode, self.kept + self.finish)


@dataclass(frozen=True)
class Libvips:
    """The steps libvips does for an engine (``vips.Policy``), as far as they change the cost:
    libvips stores a pixel in its bands' bytes (3 for RGB, where Pillow takes 4) and pulls
    pixels through a pipeline strip by strip, so a step it does after decoding needs no image
    of its own."""

    decodes: frozenset[str] = frozenset()  # source formats (Pillow's names) libvips decodes whole
    turn: bool = False  # libvips turns by angles that are not multiples of 90
    encodes: frozenset[Format] = frozenset()  # formats libvips writes
    everything: bool = False  # libvips does every step from its decode on (``vips_steps: all``)
    windows: frozenset[str] = frozenset()  # source formats whose windows on file libvips reads


PILLOW = Libvips()

# Bytes an encoder holding the whole image takes for each pixel it writes, besides the image
# handed to it, by the bands it writes (1: L, 2: LA, 3: RGB, 4: RGBA), as bench/cost_model.py
# measured them: GIF (quantising), JPEG 2000 (OpenJPEG holds every sample as a 32-bit integer,
# and more), WebP (its own YUV and alpha planes)
_PILLOW_ENCODE: dict[Format, tuple[float, float, float, float]] = {
    Format.GIF: (9, 9, 9, 9),
    Format.JP2: (13, 25, 37, 49),
    Format.WEBP: (10, 15, 10, 15),
}
# the same for libvips writing them from its own pixels: GIF quantises the whole image, libwebp
# takes it whole with its planes; PDF: Pillow writes it, the pixels crossing back first
_LIBVIPS_ENCODE: dict[Format, tuple[float, float, float, float]] = {
    Format.GIF: (19, 19, 19, 19),
    Format.JP2: (1.5, 2.5, 4, 5.5),
    Format.WEBP: (10, 28, 10, 28),
    Format.PDF: (6, 7, 8.5, 9.5),
}
# The rest write rows as they come, and hold their output: how many times its size, at the
# most (Pillow: its growing buffer; libvips: its growing buffer and the copy handed out; both
# TIFF writers: the file built in memory, then copied), as measured.
_PILLOW_HOLDS = {Format.JPG: 1.1, Format.PDF: 1.1, Format.PNG: 1.1, Format.TIF: 2.1}
_LIBVIPS_HOLDS = {Format.JPG: 3.0, Format.PNG: 2.1, Format.TIF: 2.4}
_FILL = 1 / 16  # what a pixel of a turn's filled corners weighs in the output, at the most


def encoded_bytes(fmt: Format, bands: int, jpeg_quality: int, bitonal: bool = False) -> float:
    """The most a pixel of a photograph weighs once written in ``fmt`` (JPEG, PDF, PNG,
    TIFF). Lossless output is counted as if nothing compressed: how well a master's pixels
    compress cannot be known before they are written (a photograph's grain, about half; a
    flat drawing, far less), so lossless estimates stay over their peaks. JPEG is counted for
    a detailed photograph at the quality asked (at 85, 0.4 bytes a colour pixel, where the
    grainy masters of bench/cost_model.py weigh 0.26; pure noise weighs 0.76)."""
    if fmt in (Format.PNG, Format.TIF):
        return (1 / 8 if bitonal and bands == 1 else bands) + 1 / 64  # bitonal: a bit a pixel
    colour = 0.4 if jpeg_quality <= 85 else 0.8 if jpeg_quality <= 95 else 1.5
    return colour if bands >= 3 else colour * 0.75


def _written(out: int, turned: int) -> float:
    """Pixels that weigh in the output: the image, and a little for a turn's filled corners."""
    return out + _FILL * max(0, turned - out)


_WEBP_DECODER_BYTES = 8  # Pillow's WebP decoder keeps its canvas and last frame alive
_ALPHA_MODES = ("LA", "La", "RGBA", "RGBa", "PA", "P")  # P: when it has a transparent colour
_LIBVIPS_PIPELINE = 4 << 20  # a libvips pipeline's own buffers and strips, whatever its size
# rows of native tiles libvips holds while the scaled window's pixels are copied out of it for
# Pillow: its cache's two and the one being read (measured)
_TILE_ROWS = 3
# JPEG 2000: OpenJPEG decodes a tile (the whole image, when it is untiled) into 32-bit
# samples at the reduction asked, from the tile's compressed bytes read whole, with its
# code-block structures for every level of the tile (about a byte for ten samples);
# Pillow copies each tile into a buffer of the samples' own bytes before its image; libvips
# has OpenJPEG decode strips of an untiled image (measured: about 1000 rows of 32-bit samples
# at the size decoded), and keeps a tiled one's tiles in a cache of its own
# (:func:`_j2k_libvips_cache`); and a few MB whatever the size (measured). Before decoding any
# tile, OpenJPEG sets up every tile of the grid and every component of each when it reads the
# header (measured with 16x16 tiles: 9.9 KB a tile at 1 component, 12 KB at 3; 1.06 KB a
# component with 16,384 of them; 18 MB for the 1,504 tiles of a 3000x2000 RGB master of 64x64
# tiles, whatever the level read)
_J2K_TILE = 9 << 10
_J2K_TILE_COMPONENT = 1280
_J2K_SAMPLE = 4
_J2K_BOOKKEEPING = 1 / 10
_J2K_LIBVIPS_ROWS = 1024
_J2K_FIXED = 2 << 20
MARGIN = 1 / 16  # on top of the count: what a step's own buffers, rows and strips add


def cost(
    plan: Plan, info: SourceInfo, *, decoded_cached: bool = False, libvips: Libvips = PILLOW
) -> Cost:
    """Bytes the plan will take at its peak, before anything is fetched or decoded."""
    steps = plan.steps
    grey = info.mode in ("L", "1", "I", "F") or (info.mode or "").startswith("I;16")
    alpha = info.mode in _ALPHA_MODES
    if plan.native.whole_source(info.width, info.height):
        factor = 1 if decoded_cached else reduction(info.format, info.width, info.height, steps)
        w, h = math.ceil(info.width / factor), math.ceil(info.height / factor)
        by_libvips = info.format in libvips.decodes
        if info.format == "JPEG2000" and not decoded_cached:
            factor = j2k_factor(info, factor)
            w, h = math.ceil(info.width / factor), math.ceil(info.height / factor)
        if info.format == "JPEG2000":
            kept, decode = _j2k(info, factor, w, h, grey, by_libvips)
        elif by_libvips:  # a byte a sample, and the rows its loader holds (2 bytes a sample at
            # most: a 16-bit RGB PNG is "RGB" to Pillow)
            kept = libvips_bytes(libvips_bands(info.mode), w, h)
            decode = kept + 2 * libvips_bands(info.mode) * w * min(h, _LIBVIPS_ROWS)
            if info.format == "WEBP":  # libwebp decodes the whole frame first, as for Pillow
                decode += _WEBP_DECODER_BYTES * w * h
        else:
            decode = decode_bytes(info.mode, w, h)
            if info.format == "WEBP":
                decode += _WEBP_DECODER_BYTES * w * h
            kept = (1 if grey else RGBA_BYTES) * w * h
            if info.format == "WEBP":  # the decoder stays with the image
                kept += _WEBP_DECODER_BYTES * w * h
        # what finishing starts from: the decoded source itself, when it is the output's size
        # (``pillow.shared``: no copy of it is made)
        as_is = steps.crop is None and steps.scale == (w, h)
    elif _windowed(info):
        # a window of a tiled TIFF page: the whole native tiles around it, their compressed
        # bytes (LZW at worst takes half as much again as the raw samples), then the window
        # cut out of them
        assert isinstance(info.native, PyramidFacts)
        w, h = plan.native.delivered_size()
        bw, bh = tile_block(w + SLACK, h + SLACK, info.native.pyramid)
        stored = raw_bytes(info.mode, bw, bh) * 3 // 2
        decode = decode_bytes(info.mode, bw, bh) + stored + RGBA_BYTES * (w + SLACK) * (h + SLACK)
        as_is, factor, by_libvips = False, 1, False
        if "TIFF" in libvips.windows:  # libvips reads the window itself (``vips.render``)
            bands = libvips_bands(info.mode)
            row = bands * bw * info.native.pyramid.tile_height  # a row of native tiles
            # never under what ``vips._open`` checks the window's header against
            window = libvips_bytes(bands, w + SLACK, h + SLACK)
            return _libvips_window(steps, grey, alpha, libvips, row, window)
        kept = RGBA_BYTES * (w + SLACK) * (h + SLACK)
    else:
        w, h = plan.native.delivered_size()
        decode = decode_bytes(None, w + SLACK, h + SLACK)
        if info.tiles is not None:  # stitched: plus one tile decoding at a time
            decode += decode_bytes(None, info.tiles.width + SLACK, info.tiles.height + SLACK)
        kept, by_libvips = RGBA_BYTES * (w + SLACK) * (h + SLACK), False
        grey = alpha = as_is = False  # unknown: the worst
        factor = 1
    if by_libvips and libvips.everything:
        finish = _streamed(steps, grey, alpha)
    else:
        finish = _finish_bytes(steps, (w, h), grey, alpha, libvips, as_is, factor)
    if decoded_cached:  # the decoded source is the cache's: this request makes only the rest
        return Cost(0, _margin(finish), 0)
    return Cost(_margin(decode), _margin(finish), _margin(kept))


def j2k_factor(info: SourceInfo, factor: int) -> int:
    """The reduction a JPEG 2000 is really decoded at when ``factor`` is asked: as far as its
    codestream's levels go (``pillow._j2k_reduce``); ``factor`` when they are not known."""
    layout = info.codestream
    if layout is None or factor <= 1:
        return factor
    return int(2 ** min(int(math.log2(factor)), layout.levels))


def _j2k(
    info: SourceInfo, factor: int, w: int, h: int, grey: bool, by_libvips: bool
) -> tuple[int, int]:
    """What decoding a JPEG 2000 at ``1/factor`` (``w`` x ``h``) keeps, and takes at its peak:
    besides the image kept (Pillow's, or libvips' byte a sample), OpenJPEG's work on the
    largest tile it decodes (one at a time, at the reduction: :data:`_J2K_SAMPLE` bytes a
    sample, then Pillow's copy in the samples' own bytes; or, for libvips, strips of 32-bit
    samples of an untiled master, :data:`_J2K_LIBVIPS_ROWS`, or a tiled one's tile cache,
    :func:`_j2k_libvips_cache`), that tile's compressed bytes read whole (an untiled master's:
    the whole file), the code-block structures of the tile at full size
    (:data:`_J2K_BOOKKEEPING`), what OpenJPEG sets up for every tile of the grid and each
    of its components (:data:`_J2K_TILE`, :data:`_J2K_TILE_COMPONENT`) and
    :data:`_J2K_FIXED`. libvips reading it reduced holds that set-up twice for a while (the
    full-size header and the reduced one, both open in ``vips._open``): the decode's peak is at
    least two grids. Facts without a codestream layout (refused by ``facts.checked``: a
    cached entry of an earlier release is read again) would be counted as one tile, its
    bytes as if nothing compressed."""
    layout = info.codestream or Codestream(
        info.width, info.height, 0, libvips_bands(info.mode), 16 if _wide(info.mode) else 8
    )
    comps = layout.components
    sample = 1 if layout.depth <= 8 else 2 if layout.depth <= 16 else 4  # Pillow's copy
    tw, th = min(layout.tile_width, info.width), min(layout.tile_height, info.height)
    whole = tw == info.width and th == info.height  # one tile
    raw_tile = comps * sample * tw * th
    if layout.tile_bytes is not None:  # the largest tile's, walked
        stream = layout.tile_bytes
    elif whole:
        stream = layout.nbytes if layout.nbytes is not None else raw_tile
    else:  # the tile's share of the file is not known: at most the file, or its raw samples
        stream = raw_tile + raw_tile // 8
        if layout.nbytes is not None:
            stream = min(stream, layout.nbytes)
    grid = layout.tiles(info.width, info.height) * (_J2K_TILE + comps * _J2K_TILE_COMPONENT)
    fixed = stream + comps * tw * th * _J2K_BOOKKEEPING + grid + _J2K_FIXED
    # the largest tile at the reduction (a tile off the reduced grid takes a pixel more)
    rw, rh = min(math.ceil(tw / factor) + 1, w), min(math.ceil(th / factor) + 1, h)
    # the grid's set-up is small blocks, which stay in the heap after the decode (measured: a
    # 3000x2000 master of 64x64 tiles, decoded whole, peaked while finishing)
    if by_libvips:
        kept = libvips_bytes(libvips_bands(info.mode), w, h) + grid
        if whole:  # strips of the untiled image, in 32-bit samples
            held = _J2K_SAMPLE * comps * w * min(h, _J2K_LIBVIPS_ROWS)
        else:  # its tile cache, and OpenJPEG's tile at the reduction in 32-bit samples
            held = _j2k_libvips_cache(layout, info.width, w, h, sample)
            held += _J2K_SAMPLE * comps * rw * rh
        decode = kept + held + _LIBVIPS_PIPELINE + fixed - grid
        if factor > 1:  # a reduced read: ``vips._open`` opens the page's header at full size,
            # then the reduced page's, each setting up the whole grid: both held at once
            decode = max(decode, 2 * grid + _J2K_FIXED)
        return kept, math.ceil(decode)
    kept = (1 if grey else RGBA_BYTES) * w * h + grid
    tile = (_J2K_SAMPLE + sample) * comps * rw * rh
    return kept, math.ceil(decode_bytes(info.mode, w, h) + tile + fixed)


def _j2k_libvips_cache(layout: Codestream, width: int, w: int, h: int, sample: int) -> int:
    """Bytes libvips' cache of a tiled JPEG 2000 holds (its ``jp2kload``): tiles of the
    codestream's tile size in pixels *at the reduction* (each covers ``factor`` x ``factor``
    of OpenJPEG's tiles), a sample in the codestream's own bytes, and as many of them as three
    rows of the *full-size* grid has: three rows of tiles at full size, ``3 * factor`` rows of
    the reduced image (or all of it) when reduced. ``width`` is the source's, ``w`` x ``h``
    the size decoded."""
    across = -(-(layout.image_x + width - layout.tile_x) // layout.tile_width)  # full size
    per_row = -(-w // layout.tile_width)  # libvips' tiles across the image decoded
    rows = min(h, 3 * across // per_row * layout.tile_height)
    return layout.components * sample * w * rows


def _wide(mode: str | None) -> bool:
    return mode is not None and mode.startswith("I;16")


def _libvips_window(
    steps: Steps, grey: bool, alpha: bool, libvips: Libvips, row: int, window: int
) -> Cost:
    """A window of a tiled TIFF page libvips reads itself (``vips.VipsEngine.render``): it
    pulls the tiles a strip needs, crops and scales through strips; then either every later
    step streams too (``vips_steps: all``, or an output libvips writes with no turn by an angle
    it leaves to Pillow: measured, about the window's bytes and a row of its tiles, ``row``,
    then the encoder's), or the scaled window's pixels cross to Pillow (their bytes, then
    Pillow's image of them, while :data:`_TILE_ROWS` rows of tiles are held) and Pillow
    finishes from that image as from a source already at the output's size. ``window``: the
    window's bytes, the least the decode is counted (``vips._open`` checks the window's header
    against it)."""
    arbitrary = steps.degrees % 90 != 0
    if libvips.everything or (
        steps.format in libvips.encodes and not (arbitrary and not libvips.turn)
    ):
        return Cost(_margin(window + row), _margin(_streamed(steps, grey, alpha)), 0)
    out_w, out_h = steps.scale
    bpp = 1 if grey and not alpha else RGBA_BYTES
    image = bpp * out_w * out_h  # Pillow's image of the scaled window
    crossing = _TILE_ROWS * row + _bands(grey, alpha) * out_w * out_h + image + _LIBVIPS_PIPELINE
    finish = _finish_bytes(
        dataclasses.replace(steps, crop=None), (out_w, out_h), grey, alpha, libvips, as_is=True
    )
    return Cost(_margin(max(crossing, window)), _margin(finish), _margin(image))


def _margin(nbytes: float) -> int:
    return math.ceil(nbytes * (1 + MARGIN))


def _bands(grey: bool, alpha: bool) -> int:
    return (1 if grey else 3) + (1 if alpha else 0)


def _finish_bytes(
    steps: Steps,
    delivered: tuple[int, int],
    grey: bool,
    alpha: bool,
    libvips: Libvips,
    as_is: bool = False,
    factor: int = 1,
) -> float:
    """The most Pillow's finishing (``pillow.finish``) holds at once besides the decoded
    source: every step makes a new image while the one before it is still held. ``as_is``:
    the decoded source is the output's size and finishing starts from it (no copy); ``factor``:
    the reduction it was decoded at (the crop is in full-size pixels); a degraded tier's
    virtual pixels (``steps.virtual``) are counted whole, the crop then taken from them."""
    bpp = 1 if grey and not alpha else RGBA_BYTES  # Pillow: L in a byte, LA, RGB, RGBA in four
    out_w, out_h = steps.scale
    out = out_w * out_h
    if steps.crop:
        cw, ch = math.ceil(steps.crop.w / factor), math.ceil(steps.crop.h / factor)
    else:
        cw, ch = delivered
    scaled = 0 if as_is else bpp * out  # the crop or the scaled image (as is: the source)
    work = scaled
    if steps.virtual is not None:  # the degraded tier: the crop is made from virtual pixels
        vw, vh = steps.virtual  # (at most all of them, made first)
        work += bpp * vw * vh
        cw, ch = min(cw, vw), min(ch, vh)
    if (cw, ch) != (out_w, out_h):  # a resize: one pass across, then one down
        first = _reduced_first(cw, ch, out_w, out_h)
        rows = ch if not first else math.ceil(math.sqrt(first * ch / cw))
        work += bpp * first + bpp * out_w * rows
    # turning: a new image for the mirror and for the turn, while the one before is held
    turned = out
    turn = 0
    if steps.mirror:
        turn += bpp * out
    if steps.degrees % 90 == 0 and steps.degrees:
        turn += bpp * out
    elif steps.degrees:
        turned_w, turned_h = rotated_size(out_w, out_h, steps.degrees)
        turned = turned_w * turned_h
        if steps.format.has_alpha:  # converted to LA or RGBA: a new image, even from RGBA
            turn += RGBA_BYTES * out
            alpha, bpp = True, RGBA_BYTES
        if libvips.turn:
            turn += 4 * out + 4 * turned  # Pillow's pixels into libvips, and back
            turn += bpp * turned
        else:  # Pillow turns alpha premultiplied: turned as La or RGBa, then converted back
            turn += (2 if alpha else 1) * bpp * turned
    stage = max(work, scaled + turn)
    image = bpp * turned if turn else scaled  # the image the quality and the encoder work on
    # the quality, then the encoder (flattening alpha for JPEG and PDF)
    if steps.quality is Quality.GRAY:
        quality = (RGBA_BYTES if alpha else 1) * turned
        grey = True
    elif steps.quality is Quality.BITONAL:
        quality = (2 * RGBA_BYTES + 2 if alpha else 2) * turned
        grey = True
    else:
        quality = 0
    stage = max(stage, image + quality)
    if quality:
        image = (RGBA_BYTES if alpha else 1) * turned
    fmt = steps.format
    bands = _bands(grey, alpha)
    bitonal = steps.quality is Quality.BITONAL
    if fmt in libvips.encodes:  # Pillow's pixels handed to libvips as bytes, then written
        raw = bands * turned  # Pillow's ``tobytes`` joins its chunks: twice that at its peak
        if fmt in _LIBVIPS_ENCODE:
            encoder = raw + _LIBVIPS_ENCODE[fmt][bands - 1] * turned
        else:
            held = _LIBVIPS_HOLDS[fmt] * encoded_bytes(fmt, bands, steps.jpeg_quality, bitonal)
            encoder = max(2 * raw, raw + held * _written(out, turned)) + _LIBVIPS_PIPELINE
            if bitonal and not alpha:  # Pillow's 1-bit image crosses as a copy in L first
                encoder += turned
    elif fmt in _PILLOW_ENCODE:
        encoder = _PILLOW_ENCODE[fmt][bands - 1] * turned
    else:
        held = _PILLOW_HOLDS[fmt] * encoded_bytes(fmt, bands, steps.jpeg_quality, bitonal)
        encoder = held * _written(out, turned) + RGBA_BYTES * out_w * 64  # and its rows
    if fmt in (Format.JPG, Format.PDF) and alpha:
        encoder += (2 * bpp + 1) * turned  # a background, the image on it, the alpha
    return max(stage, image + encoder)


def _streamed(steps: Steps, grey: bool, alpha: bool) -> float:
    """The most libvips holds finishing a source it decoded (``vips_steps: all``): it pulls
    every step's pixels through strips, so only the encoder's buffers and bytes count."""
    out_w, out_h = steps.scale
    turned_w, turned_h = rotated_size(out_w, out_h, steps.degrees)
    if steps.degrees % 90 and steps.format.has_alpha:
        alpha = True
    if steps.quality is not Quality.DEFAULT:
        grey = True
    fmt, bands, turned = steps.format, _bands(grey, alpha), turned_w * turned_h
    if fmt in _LIBVIPS_ENCODE:
        encoder = _LIBVIPS_ENCODE[fmt][bands - 1] * turned
    else:
        bitonal = steps.quality is Quality.BITONAL
        held = _LIBVIPS_HOLDS[fmt] * encoded_bytes(fmt, bands, steps.jpeg_quality, bitonal)
        encoder = held * _written(out_w * out_h, turned)
    return encoder + 4 * turned_w * 64 + _LIBVIPS_PIPELINE


def _windowed(info: SourceInfo) -> bool:
    """Whether the source's backend delivers windows of a tiled TIFF's pages (``files``)."""
    return info.format == "TIFF" and isinstance(info.native, PyramidFacts)


def tile_block(width: int, height: int, pyramid: Pyramid) -> tuple[int, int]:
    """The largest block of whole native tiles a ``width`` x ``height`` window can meet."""

    def span(n: int, tile: int) -> int:
        return (math.ceil((n - 1) / tile) + 1) * tile

    return span(width, pyramid.tile_width), span(height, pyramid.tile_height)


def raw_bytes(mode: str | None, width: int, height: int) -> int:
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


def reduction(source_format: str | None, width: int, height: int, steps: Steps) -> int:
    """The power-of-two factor to decode at: the smallest decode that still yields the output,
    where the source format can decode small (JPEG DCT scaling up to 8, JPEG 2000 levels); for
    a degraded tier's virtual image (``steps.virtual``), the decode that still yields it."""
    cw, ch = (steps.crop.w, steps.crop.h) if steps.crop else (width, height)
    shrink = min(cw / steps.scale[0], ch / steps.scale[1])
    if steps.virtual is not None:  # the largest power of two still at least the virtual pixels
        vw, vh = steps.virtual
        shrink = 1
        while -(-width // (2 * shrink)) >= vw and -(-height // (2 * shrink)) >= vh:
            shrink *= 2
    if shrink < 2 or source_format not in ("JPEG", "JPEG2000"):
        return 1
    levels = min(int(math.log2(shrink)), 3 if source_format == "JPEG" else 5)
    return int(2**levels)


def check_size(fetched: Fetched, width: int, height: int, allowance: Allowance) -> None:
    """Larger than asked (plus :data:`SLACK`) is a bomb (502); over ``max_source_pixels``,
    501."""
    if allowance.expected is not None:
        ew, eh = allowance.expected
        if width > ew + SLACK or height > eh + SLACK:
            raise DecompressionBomb(
                f"{fetched.described} sent a {width}x{height} image where {ew}x{eh} was asked",
            )
    if width * height > allowance.max_source_pixels:
        raise SourceTooLarge(
            f"the source is {width}x{height}, over this server's limit of "
            f"{allowance.max_source_pixels} source pixels",
        )
