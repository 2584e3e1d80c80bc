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
"""

from __future__ import annotations

import io
import math
import time
from collections.abc import Callable
from dataclasses import dataclass
from typing import Any

from PIL import Image, UnidentifiedImageError

from .errors import BackendError, NotImplementedFeature
from .facts import Colour, SourceInfo
from .iiif.profile import Format, Quality
from .iiif.resolve import rotated_size
from .model import Fetched, PillowSteps, Plan

# Pillow's process-wide guard: it refuses to open more than twice this many pixels (and warns
# above it). The shim's own, configurable ``iiif.max_source_pixels`` may not go past that.
PILLOW_GUARD_PIXELS = 1 << 30
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
    else:
        w, h = plan.native.delivered_size()
        decode = decode_bytes(None, w + SLACK, h + SLACK)
        if info.tiles is not None:  # stitched: plus one tile decoding at a time
            decode += decode_bytes(None, info.tiles.width + SLACK, info.tiles.height + SLACK)
    finish += _RGBA * _reduced_first(w, h, out_w, out_h)
    return Cost(0 if decoded_cached else decode, finish)


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
    width, height = im.size
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
        _check_header(fetched, im, allowance)
        width, height = im.size
        if factor > 1 and im.format == "JPEG":
            im.draft(im.mode, (math.ceil(width / factor), math.ceil(height / factor)))
            decoded_size = im.size
        elif factor > 1 and im.format == "JPEG2000":
            im.reduce = int(math.log2(factor))  # type: ignore[method-assign,assignment]
            decoded_size = (math.ceil(width / factor), math.ceil(height / factor))
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
    if (
        fetched.data is not None
        and steps.encoded
        and _identity(steps)
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


def _identity(steps: PillowSteps) -> bool:
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
