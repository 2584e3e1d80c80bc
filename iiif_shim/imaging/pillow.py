"""Pillow, and only Pillow: read headers (:class:`Header`, with a JPEG 2000's codestream
layout from ``j2k.py``; and a master's :class:`Traits`: its EXIF
orientation, pages and bits a sample, which say whether its own bytes may be an answer), decode
within a budget, stitch tiles, crop, scale, mirror, rotate, apply the quality, encode.

Every function here is synchronous and CPU-bound; ``core/service.py`` runs them in the thread pool,
never on the event loop. Work comes in two halves so the first can be cached: :func:`decode`
reads a source at the smallest resolution that still yields the output (JPEG DCT scaling via
``draft``, JPEG 2000 resolution levels via ``reduce``; see :func:`reduction`), and
:func:`finish` crops, scales, turns, applies the quality and encodes.

Nothing is decoded before its header is checked (:class:`Allowance`): against the size asked of
the backend (a tile or answer far larger than its cell is a decompression bomb: 502), against
``max_source_pixels``, and against the bytes this request reserved, counted in what Pillow
really stores for the mode (4 bytes a pixel for RGB, a whole byte for a 1-bit pixel) plus the
conversion to L, LA, RGB or RGBA (``cost.py``). Pillow's own bomb guard stays on.

A file delivered as a page and a window of it (``Fetched.page``, ``Fetched.window``: a level of
a pyramidal TIFF, the region's pixels in it) is decoded by window: only the native tiles (or
strips) that meet the window (``tiff.py``).
"""

from __future__ import annotations

import io
import math
import struct
import tempfile
import time
import warnings
from dataclasses import dataclass
from typing import IO, Any, ClassVar

import PIL
from PIL import Image, ImageFile, UnidentifiedImageError

from iiif_shim.base.errors import (
    DecompressionBomb,
    EncodeFailed,
    NotAnImage,
    SourceTooLarge,
)
from iiif_shim.base.files import memory_file
from iiif_shim.iiif.profile import Colour, Format, Quality
from iiif_shim.iiif.resolve import rotated_size
from iiif_shim.imaging import cost, j2k
from iiif_shim.imaging.cost import SLACK, Allowance, Cost, check_size, decode_bytes, reduction
from iiif_shim.imaging.engine import Record
from iiif_shim.imaging.fetched import Fetched
from iiif_shim.imaging.settings import PILLOW_GUARD_PIXELS
from iiif_shim.imaging.tiff import read_block
from iiif_shim.model.facts import Codestream, SourceInfo
from iiif_shim.model.plan import Plan, Steps

Image.MAX_IMAGE_PIXELS = PILLOW_GUARD_PIXELS // 2


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
    if fetched.reader is not None:  # a header read from the parts of a remote file
        source = fetched.reader
    spilled = fetched.path is not None and not fetched.local
    if spilled:
        # an upstream answer in a temporary file: opened as a file, not by its name, so Pillow
        # never maps it (a map would outlive the file in the decoded cache); closed with the
        # image, as a file Pillow opens itself is
        source = open(source, "rb")  # noqa: SIM115
    try:
        im = Image.open(source)
    except Image.DecompressionBombError:
        if spilled:
            source.close()
        if fetched.local:
            raise SourceTooLarge(
                f"the source has more than {PILLOW_GUARD_PIXELS} pixels, more than this server "
                "decodes",
            ) from None
        raise DecompressionBomb(
            f"{fetched.described} sent an image of more than {PILLOW_GUARD_PIXELS} pixels",
        ) from None
    except _READ_ERRORS as exc:
        if spilled:
            source.close()
        raise NotAnImage(
            f"{fetched.described} did not return an image",
            detail=f"{type(exc).__name__}: {exc}",
        ) from None
    except BaseException:
        if spilled:
            source.close()
        raise
    if spilled:
        im._exclusive_fp = True
    return im


def colour_of(mode: str) -> Colour:
    if mode == "1":
        return Colour.BITONAL
    if mode in ("L", "LA", "La", "I", "F") or mode.startswith("I;16"):
        return Colour.GRAY
    return Colour.COLOR


@dataclass(frozen=True)
class Header:
    """What a source's header says: its size, colour, format (Pillow's name) and Pillow mode,
    and a JPEG 2000's codestream layout (``j2k.codestream``: what decoding it costs)."""

    width: int
    height: int
    colour: Colour
    format: str | None
    mode: str
    codestream: Codestream | None = None


def read_header(fetched: Fetched, nbytes: int | None = None, *, layout: bool = True) -> Header:
    """The :class:`Header` of the delivered image, from its first bytes only (``nbytes``: the
    whole file's size, when known, kept with a JPEG 2000's layout). ``layout``: a JPEG 2000's
    codestream layout too (its facts; not for an engine that needs only the size), and
    :class:`NotAnImage` when that cannot be read."""
    with _open(fetched) as im:
        width, height = im.size
        if width < 1 or height < 1:
            raise NotAnImage(f"{fetched.described} has an empty image")
        found = None
        if layout and im.format == "JPEG2000" and isinstance(im, ImageFile.ImageFile):
            # the largest tile's bytes too, from a file at hand (never by ranges)
            if im.fp is not None:
                found = j2k.codestream(im.fp, nbytes, walk=fetched.reader is None)
            if found is None:
                raise NotAnImage(
                    f"{fetched.described} did not return an image",
                    detail="a JPEG 2000 whose codestream header cannot be read",
                )
        return Header(width, height, colour_of(im.mode), im.format, im.mode, found)


# EXIF's orientation tag: 1 is "as stored"; anything else asks a reader to turn or mirror.
ORIENTATION_TAG = 0x0112


@dataclass(frozen=True)
class Traits:
    """What a file's header says about how its bytes read, beyond their size, format and mode
    (what tells whether the master's own bytes are an answer as they are: ``passthrough.py``).

    ``orientation``: its EXIF orientation (1 when it has none, 0 when it cannot be read);
    ``pages``: the images the file holds (``None`` when the bytes at hand do not tell);
    ``eight_bits``: every sample is stored in 8 bits (not 16, not 1, 2 or 4)."""

    width: int
    height: int
    format: str | None
    mode: str
    orientation: int
    pages: int | None
    eight_bits: bool


def read_traits(fp: io.BufferedIOBase, described: str) -> Traits:
    """The :class:`Traits` of the image in ``fp`` (from its header: nothing is decoded; the
    position of ``fp`` is left at its start, and ``fp`` open). :class:`NotAnImage` when it is
    not an image Pillow reads, as for any header (:func:`_open`)."""
    try:
        with _open(Fetched(reader=fp, described=described)) as im:
            return Traits(
                im.width,
                im.height,
                im.format,
                im.mode,
                _orientation(im),
                _pages(im),
                _eight_bits(im),
            )
    finally:
        fp.seek(0)


def _orientation(im: Image.Image) -> int:
    """The EXIF orientation, read without decoding (PNG's ``getexif`` would load the pixels
    when its eXIf chunk is not before them: only a chunk read with the header counts)."""
    try:
        if im.format == "TIFF":
            value = im.getexif().get(ORIENTATION_TAG, 1)
        else:
            raw = im.info.get("exif")
            if not raw:
                return 1
            exif = Image.Exif()
            exif.load(raw)
            value = exif.get(ORIENTATION_TAG, 1)
    except (*_READ_ERRORS, KeyError, IndexError, struct.error):
        return 0
    return value if isinstance(value, int) else 0


def _pages(im: Image.Image) -> int | None:
    """Images in the file (a TIFF's pages are walked to count them: ``None`` when its
    directories lie past the bytes at hand)."""
    try:
        with warnings.catch_warnings():  # "corrupt EXIF" of a directory cut off
            warnings.simplefilter("ignore")
            return int(getattr(im, "n_frames", 1))
    except (*_READ_ERRORS, struct.error, TypeError, KeyError, IndexError):
        return None


def _eight_bits(im: Image.Image) -> bool:
    """Whether every sample is stored in 8 bits: PNG says it in the raw mode it decodes from
    (``RGB;16B`` for 16-bit RGB, which Pillow hands on as 8-bit ``RGB``), TIFF in its
    BitsPerSample; JPEG and WebP are 8-bit as Pillow reads them."""
    if im.mode not in ("L", "LA", "RGB", "RGBA"):
        return False
    if im.format == "PNG" and isinstance(im, ImageFile.ImageFile):
        return len(im.tile) == 1 and im.tile[0].args == im.mode
    if im.format == "TIFF":
        bits = getattr(im, "tag_v2", {}).get(258)
        bits = bits if isinstance(bits, tuple) else (bits,)
        return all(b == 8 for b in bits)
    return im.format in ("JPEG", "WEBP")


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


def _check_header(fetched: Fetched, im: Image.Image, allowance: Allowance) -> None:
    """Refuse, from the header alone, what would decode to more than was asked or allowed."""
    check_size(fetched, im.width, im.height, allowance)


def decode(
    fetched: Fetched, factor: int, allowance: Allowance, record: Record | None = None
) -> Decoded:
    """Decode the delivered image at ``1/factor`` of its size (when its format can), within
    ``allowance``."""
    if fetched.image is not None:  # already pixels (stitched from checked tiles)
        return Decoded(normalise_mode(fetched.image), *fetched.image.size)
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
            raise DecompressionBomb(
                f"{fetched.described} sent a {width}x{height} {im.mode} image, which would take "
                f"{need} bytes to decode where {allowance.nbytes} were set aside for it",
            )
        try:
            im.load()
            image = normalise_mode(im)
        except _READ_ERRORS as exc:
            raise NotAnImage(
                f"{fetched.described}: the image could not be decoded",
                detail=f"{type(exc).__name__}: {exc}",
            ) from None
    _timed(record, "decode", started)
    return Decoded(image, width, height)


def _decode_window(fetched: Fetched, im: Image.Image, allowance: Allowance) -> Decoded:
    """``fetched.window`` of page ``fetched.page``, decoding only the tiles it meets."""
    if im.format != "TIFF" or not isinstance(im, ImageFile.ImageFile):
        raise NotAnImage(f"{fetched.described}: only TIFF pages can be read by window")
    block = read_block(fetched, im, allowance)
    try:
        with Image.open(io.BytesIO(block.data)) as part:
            if part.size != block.size:
                raise NotAnImage(f"{fetched.described}: unreadable tiles")
            part.load()
            whole = block.crop == (0, 0, *block.size)
            image = normalise_mode(part if whole else part.crop(block.crop))
            if image is part:
                image = part.copy()  # detached from the file object about to close
    except _READ_ERRORS as exc:
        raise NotAnImage(
            f"{fetched.described}: the image could not be decoded",
            detail=f"{type(exc).__name__}: {exc}",
        ) from None
    return Decoded(image, image.width, image.height)


def _j2k_reduce(im: ImageFile.ImageFile, factor: int) -> tuple[int, int]:
    """Set a JPEG 2000 image to decode at ``1/factor`` (as far as its resolution levels go);
    the size it will have.

    Pillow's public ``reduce`` attribute would do this, but its ``load`` rounds the reduced size
    to nearest where OpenJPEG rounds up, and decoding then fails ("broken data stream") for
    every size that does not divide (1000 at 1/32, 1001x999 at 1/4: measured on every Pillow
    from 10.1 to 13.0). So the decode job is set here through the interface Pillow documents
    for image plugins: the tile descriptor (``tile``, a named tuple since Pillow 11) and
    ``_size``. ``tests/unit/test_windows.py`` holds both readings against a full decode."""
    levels = min(int(math.log2(factor)), _j2k_levels(im))
    if levels < 1 or len(im.tile) != 1:
        return im.size
    power = 1 << levels
    size = (math.ceil(im.width / power), math.ceil(im.height / power))
    job = im.tile[0]
    args = job.args
    assert isinstance(args, tuple)
    reduced = (args[0], levels, *args[2:])
    im.tile = [job._replace(extents=(0, 0, *size), args=reduced)]
    im._size = size
    return size


def _j2k_levels(im: ImageFile.ImageFile) -> int:
    """Resolution levels below full size a JPEG 2000 codestream holds (its COD marker's
    decomposition levels, ``j2k.codestream``), 0 when that cannot be read."""
    layout = j2k.codestream(im.fp) if im.fp is not None else None
    return layout.levels if layout is not None else 0


def finish(decoded: Decoded, steps: Steps, record: Record | None = None) -> bytes:
    """Crop, scale, turn, apply the quality and encode, from a decoded source."""
    started = _clock()
    out = crop_and_scale(decoded, steps)
    if out is decoded.image:
        out = shared(out)
    started = _timed(record, "crop_scale", started)
    out = turn(out, steps)
    started = _timed(record, "turn", started)
    out = apply_quality(out, steps.quality)
    started = _timed(record, "quality", started)
    body = encode(out, steps.format, steps.jpeg_quality)
    _timed(record, "encode", started)
    return body


def render(
    fetched: Fetched, steps: Steps, allowance: Allowance, record: Record | None = None
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
        and steps.no_pixel_work
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
                raise DecompressionBomb(
                    f"{described} sent a {tile.width}x{tile.height} tile for a {bw}x{bh} cell",
                )
            try:
                tile.load()
            except _READ_ERRORS as exc:
                raise NotAnImage(
                    f"{described} sent a tile that could not be decoded",
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


def shared(im: Image.Image) -> Image.Image:
    """A new image object on ``im``'s very pixels (nothing is copied): what finishing works on
    when the decoded source is the output as it is. Every step after it makes a new image or
    only reads, and the encoders' attributes (``encoderinfo``) go on this object, so the
    decoded source, shared by concurrent renders, stays untouched without a copy of it (96 MB
    for a 24 MP RGB master)."""
    return im._new(im.im)


def crop_and_scale(decoded: Decoded, steps: Steps) -> Image.Image:
    """The crop of ``decoded`` (in delivered pixels, or in ``steps.frame``'s) scaled to
    ``steps.scale``; from the tier's virtual image (``steps.virtual``: the delivered image
    averaged down to it first) when set."""
    im = decoded.image
    crop = steps.crop
    width, height = steps.frame or (decoded.source_width, decoded.source_height)
    x0, y0, cw, ch = (crop.x, crop.y, crop.w, crop.h) if crop else (0, 0, width, height)
    tw, th = steps.scale
    if steps.virtual is not None:
        return _from_virtual(im, steps, (x0, y0, cw, ch), (width, height))
    sx, sy = width / im.width, height / im.height
    box = (x0 / sx, y0 / sy, (x0 + cw) / sx, (y0 + ch) / sy)
    if all(float(v).is_integer() for v in box) and (box[2] - box[0], box[3] - box[1]) == (tw, th):
        ibox = (int(box[0]), int(box[1]), int(box[2]), int(box[3]))
        return im if ibox == (0, 0, im.width, im.height) else im.crop(ibox)
    shrink = min((box[2] - box[0]) / tw, (box[3] - box[1]) / th)
    gap = 3.0 if shrink >= 3 else None
    return im.resize((tw, th), Image.Resampling.LANCZOS, box=box, reducing_gap=gap)


def delivered_factor(frame: tuple[int, int], size: tuple[int, int]) -> int | None:
    """The power of two ``d`` at which an image of ``size`` is ``frame`` reduced
    (``ceil(frame / d)`` a side; the finest when several are), or ``None`` when it is not."""
    d = 1
    while d <= 1 << 16:
        if (-(-frame[0] // d), -(-frame[1] // d)) == size:
            return d
        d *= 2
    return None


def virtual_part(
    im: Image.Image, frame: tuple[int, int], block: int, window: tuple[int, int, int, int]
) -> Image.Image:
    """The virtual pixels ``window`` (x0, y0, x1, y1) of the degraded tier from ``im``, the
    delivered image of ``frame`` image pixels: each the mean of its ``block`` x ``block``
    square (``Image.reduce``, which averages the pixels a square has at the edges), from a
    delivery at a finer power of two; from a coarser one (a pyramid without the tier's level),
    the coarser pixel it lies in; from any other size, a box filter."""
    vx0, vy0, vx1, vy1 = window
    size = (vx1 - vx0, vy1 - vy0)
    d = delivered_factor(frame, im.size)
    if d is not None and d <= block:
        r = block // d
        part = im.crop((vx0 * r, vy0 * r, min(im.width, vx1 * r), min(im.height, vy1 * r)))
        return part.reduce(r) if r > 1 else part
    if d is not None:  # coarser: whole pixels of the level
        r = d // block
        box = (vx0 / r, vy0 / r, vx1 / r, vy1 / r)
        return im.resize(size, Image.Resampling.NEAREST, box=box)
    fx, fy = im.width * block / frame[0], im.height * block / frame[1]
    box = (vx0 * fx, vy0 * fy, min(im.width, vx1 * fx), min(im.height, vy1 * fy))
    filter_ = Image.Resampling.BOX if fx >= 1 and fy >= 1 else Image.Resampling.BICUBIC
    return im.resize(size, filter_, box=box)


def _from_virtual(
    im: Image.Image, steps: Steps, crop: tuple[int, int, int, int], frame: tuple[int, int]
) -> Image.Image:
    """The crop (in ``frame``'s pixels) of ``im`` scaled to ``steps.scale``, from the virtual
    image (``steps.virtual`` pixels of ``steps.block`` image pixels a side: the degraded tier):
    only the virtual pixels the crop and the scaling filter's reach need are made, then
    scaled from them alone. A virtual pixel cut by the image's edge counts whole."""
    assert steps.virtual is not None
    vw, vh = steps.virtual
    k = steps.block
    out = steps.scale
    x0, y0, cw, ch = crop
    bx0, by0 = x0 / k, y0 / k
    bx1 = vw if x0 + cw >= frame[0] else (x0 + cw) / k
    by1 = vh if y0 + ch >= frame[1] else (y0 + ch) / k
    reach_x = 3 * max(1.0, (bx1 - bx0) / out[0]) + 1  # Lanczos 3, wider when it reduces
    reach_y = 3 * max(1.0, (by1 - by0) / out[1]) + 1
    vx0, vy0 = max(0, math.floor(bx0 - reach_x)), max(0, math.floor(by0 - reach_y))
    vx1, vy1 = min(vw, math.ceil(bx1 + reach_x)), min(vh, math.ceil(by1 + reach_y))
    part = virtual_part(im, frame, k, (vx0, vy0, vx1, vy1))
    box = (bx0 - vx0, by0 - vy0, bx1 - vx0, by1 - vy0)
    same = box[2] - box[0] == out[0] and box[3] - box[1] == out[1]
    if same and all(float(v).is_integer() for v in box):
        ibox = (int(box[0]), int(box[1]), int(box[2]), int(box[3]))
        return part if ibox == (0, 0, part.width, part.height) else part.crop(ibox)
    shrink = min((box[2] - box[0]) / out[0], (box[3] - box[1]) / out[1])
    gap = 3.0 if shrink >= 3 else None
    return part.resize(out, Image.Resampling.LANCZOS, box=box, reducing_gap=gap)


def normalise_mode(im: Image.Image) -> Image.Image:
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


def turn(im: Image.Image, steps: Steps) -> Image.Image:
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


def apply_quality(im: Image.Image, quality: Quality) -> Image.Image:
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


def _scratch() -> IO[bytes]:
    """Where an encoder writes: an anonymous file in memory (a memfd). Pillow's encoders hold
    the interpreter's lock while they write to a buffer object (``BytesIO``) and release it
    only while they write to a file (``encode_to_file``): with a buffer, image threads encode
    one at a time, whatever the cores (two threads encoding JPEG tiles: 1.0x one thread; to a
    file: 1.8x). A temporary file stands in where memfd_create is missing."""
    try:
        fd = memory_file("encode")
    except (AttributeError, OSError):
        return tempfile.TemporaryFile()
    return open(fd, "w+b")  # closed by the caller's with


def encode(im: Image.Image, fmt: Format, jpeg_quality: int) -> bytes:
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
    with _scratch() as buf:
        try:
            im.save(buf, name, **options)
        except (OSError, ValueError) as exc:
            raise EncodeFailed(
                f"this image cannot be written as {fmt.value}",
                detail=f"{type(exc).__name__}: {exc}",
            ) from None
        buf.seek(0)
        return buf.read()


class PillowMeasures:
    """What every engine takes from Pillow as it is: the formats offered (an engine
    that cannot write one has Pillow write it), the reduction to decode at (so the reserved
    cost holds for either engine) and Pillow's cost (``vips.VipsEngine.cost`` counts what the
    steps libvips does take instead)."""

    def writable_formats(self) -> frozenset[Format]:
        return writable_formats()

    def reduction(self, source_format: str | None, width: int, height: int, steps: Steps) -> int:
        return cost.reduction(source_format, width, height, steps)

    def cost(self, plan: Plan, info: SourceInfo, *, decoded_cached: bool = False) -> Cost:
        return cost.cost(plan, info, decoded_cached=decoded_cached)


class PillowEngine(PillowMeasures):
    """The Pillow engine: the functions of this module."""

    name: ClassVar[str] = "pillow"

    @property
    def identity(self) -> str:
        return f"pillow {PIL.__version__}"

    def decode(
        self, fetched: Fetched, factor: int, allowance: Allowance, record: Record | None = None
    ) -> Decoded:
        return decode(fetched, factor, allowance, record)

    def finish(self, decoded: Decoded, steps: Steps, record: Record | None = None) -> bytes:
        return finish(decoded, steps, record)

    def render(
        self,
        fetched: Fetched,
        steps: Steps,
        allowance: Allowance,
        record: Record | None = None,
    ) -> bytes:
        return render(fetched, steps, allowance, record)
