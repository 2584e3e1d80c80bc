"""Pillow, and only Pillow: read source headers, crop, scale, mirror, rotate, quality, encode.

Every function here is synchronous and CPU-bound; ``service.py`` runs them in the thread pool,
never on the event loop. Work comes in two halves so the first can be cached: :func:`decode`
reads a source at the smallest resolution that still yields the output (JPEG DCT scaling via
``draft``, JPEG 2000 resolution levels via ``reduce``; see :func:`reduction`), and
:func:`finish` crops, scales, turns, applies the quality and encodes.
"""

from __future__ import annotations

import io
import math
import warnings
from dataclasses import dataclass
from typing import Any

from PIL import Image, UnidentifiedImageError

from .errors import BackendError, NotImplementedFeature
from .facts import Colour
from .iiif.profile import Format, Quality
from .model import Fetched, PillowSteps

# The shim enforces its own, configurable source size limit (``iiif.max_source_pixels``) before
# decoding; Pillow's process-wide decompression-bomb guard would otherwise second-guess it.
Image.MAX_IMAGE_PIXELS = None
warnings.simplefilter("ignore", Image.DecompressionBombWarning)

_PIL_FORMAT = {
    Format.JPG: "JPEG",
    Format.TIF: "TIFF",
    Format.PNG: "PNG",
    Format.GIF: "GIF",
    Format.JP2: "JPEG2000",
    Format.PDF: "PDF",
    Format.WEBP: "WEBP",
}
_WHITE: dict[str, Any] = {"L": 255, "LA": (255, 255), "RGB": (255,) * 3, "RGBA": (255,) * 4}
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
    try:
        return Image.open(source)
    except _READ_ERRORS as exc:
        raise BackendError(f"{fetched.described} did not return an image ({exc})") from None


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
            raise BackendError(f"{fetched.described} has an empty image")
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
        return self.image.width * self.image.height * len(self.image.getbands())


def reduction(source_format: str | None, width: int, height: int, steps: PillowSteps) -> int:
    """The power-of-two factor to decode at: the smallest decode that still yields the output,
    where the source format can decode small (JPEG DCT scaling up to 8, JPEG 2000 levels)."""
    cw, ch = (steps.crop.w, steps.crop.h) if steps.crop else (width, height)
    shrink = min(cw / steps.scale[0], ch / steps.scale[1])
    if shrink < 2 or source_format not in ("JPEG", "JPEG2000"):
        return 1
    levels = min(int(math.log2(shrink)), 3 if source_format == "JPEG" else 5)
    return int(2**levels)


def decode(fetched: Fetched, factor: int, max_source_pixels: int) -> Decoded:
    """Decode the delivered image at ``1/factor`` of its size (when its format can)."""
    if fetched.image is not None:  # already pixels (stitched tiles)
        return Decoded(_normalise_mode(fetched.image), *fetched.image.size)
    with _open(fetched) as im:
        width, height = im.size
        if width * height > max_source_pixels:
            raise NotImplementedFeature(
                f"the source is {width}x{height}, over this server's limit of "
                f"{max_source_pixels} source pixels"
            )
        if getattr(im, "n_frames", 1) > 1:
            im.seek(0)
        if factor > 1 and im.format == "JPEG":
            im.draft(im.mode, (math.ceil(width / factor), math.ceil(height / factor)))
        elif factor > 1 and im.format == "JPEG2000":
            im.reduce = int(math.log2(factor))  # type: ignore[method-assign,assignment]
        try:
            im.load()
        except _READ_ERRORS as exc:
            raise BackendError(
                f"{fetched.described}: the image could not be decoded ({exc})"
            ) from None
        return Decoded(_normalise_mode(im), width, height)


def finish(decoded: Decoded, steps: PillowSteps) -> bytes:
    """Crop, scale, turn, apply the quality and encode, from a decoded source."""
    out = _crop_and_scale(decoded, steps)
    if out is decoded.image:
        out = out.copy()  # encoders set attributes on the image; keep the shared one untouched
    out = _turn(out, steps)
    out = _quality(out, steps.quality)
    return _encode(out, steps.format, steps.jpeg_quality)


def render(fetched: Fetched, steps: PillowSteps, max_source_pixels: int) -> bytes:
    """Decode and finish in one go (for what a backend made for this one request).

    When the backend already did everything, in the right format and exactly the right size,
    its bytes pass through untouched (no second lossy encode).
    """
    if fetched.image is not None:
        return finish(decode(fetched, 1, max_source_pixels), steps)
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
    return finish(decode(fetched, factor, max_source_pixels), steps)


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
        return im.convert("I").point(lambda v: v * (1 / 256)).convert("L")
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
    else:
        fill = _WHITE[im.mode]
    return im.rotate(-degrees, resample=Image.Resampling.BICUBIC, expand=True, fillcolor=fill)


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
        raise NotImplementedFeature(f"could not write {fmt.value}: {exc}") from None
    return buf.getvalue()
