"""libvips (through pyvips): the ``vips`` image engine, the same pipeline steps as
``pillow.py`` with the same results.

Open lazily (the header only), check it against the :class:`~iiif_shim.imaging.pillow.Allowance`
exactly as ``pillow.py`` does (a source larger than asked is a bomb: 502; one over
``max_source_pixels``: 501; one that would take more bytes than were set aside: 502), and only
then let libvips read pixels. A file's ``page`` (a level of a pyramidal TIFF, a resolution level
of a JPEG 2000) and ``window`` are read as regions, so only the tiles or strips under the window
are decoded. JPEG and JPEG 2000 decode small on load (``shrink``, the level), at the same
reduction ``cost.reduction`` picks. The cost reserved for a plan is ``cost.cost`` told which
steps libvips does (:meth:`VipsEngine.cost`): a source libvips decodes takes a byte a sample
(``cost.libvips_bytes``, the same count its header is checked against here), and the steps it
does after that stream through strips (a turn by any angle included), so with ``vips_steps:
all`` a full-size turn costs about the decoded source and the encoder's output.

Then crop, scale (Lanczos 3), mirror, turn onto the same tight box as ``pillow._rotate``
(bicubic, black, or transparent where the format has alpha), gray (ITU-R 601 luma, as Pillow)
or bitonal (threshold 128, as Pillow), and encode. libvips cannot write PDF: that one format is
finished by Pillow (``pillow.encode``). Sources libvips is not used for (anything but JPEG,
PNG, TIFF, WebP, GIF and JPEG 2000, told by their first bytes) are decoded by Pillow.

Which steps libvips does is a :class:`Policy`: ``MEASURED`` (the default) only those
``bench/engines.py`` measured faster than Pillow, ``EVERYTHING`` all it can; Pillow does the
rest, the pixels crossing as raw bytes.

Everything here is synchronous and CPU-bound; ``core/service.py`` runs it in the thread pool.
"""

from __future__ import annotations

import dataclasses
import math
import time
from dataclasses import dataclass
from typing import Any, ClassVar

import PIL
import pyvips
from PIL import Image

from iiif_shim.base.errors import (
    DecompressionBomb,
    EncodeFailed,
    NotAnImage,
)
from iiif_shim.iiif.profile import Format, Quality
from iiif_shim.iiif.resolve import Box, rotated_size
from iiif_shim.imaging import cost, pillow
from iiif_shim.imaging.cost import Allowance, Cost
from iiif_shim.imaging.engine import Record
from iiif_shim.imaging.fetched import Fetched
from iiif_shim.imaging.pillow import PillowMeasures
from iiif_shim.imaging.settings import PILLOW_GUARD_PIXELS
from iiif_shim.model.facts import SourceInfo
from iiif_shim.model.plan import Plan, Steps

# libvips keeps a process-wide cache of recent operations (and the images they hold) and runs
# each pipeline on a pool of its own threads. Both would live outside the shim's limits: the
# operation cache would keep decoded pixels the memory budget no longer counts, and its threads
# would multiply ``server.workers``. So the cache is off (no operations, no memory, no open
# files kept) and each pipeline gets one libvips worker: the job's own pool thread waits on it,
# so every request still takes one core, as with Pillow, and ``server.workers`` bounds the CPU.
pyvips.cache_set_max(0)
pyvips.cache_set_max_mem(0)
pyvips.cache_set_max_files(0)
pyvips.concurrency_set(1)

# the loaders libvips is used for (by the name ``vips-loader`` reports, without the suffix),
# with Pillow's name of the format; anything else (ImageMagick, Matlab, FITS...) goes to Pillow
_LOADERS = {
    "jpegload": "JPEG",
    "pngload": "PNG",
    "tiffload": "TIFF",
    "webpload": "WEBP",
    "gifload": "GIF",
    "jp2kload": "JPEG2000",
}
_PAGED = ("tiffload", "jp2kload", "gifload", "webpload")  # loaders that take ``page``
_RANDOM = ("tiffload", "jp2kload")  # loaders that read a region without decoding the rest

# metadata is dropped on save, as Pillow does (libvips 8.15 renamed ``strip`` to ``keep``)
_NO_METADATA: dict[str, Any] = {"keep": 0} if pyvips.at_least_libvips(8, 15) else {"strip": True}

_SAVERS = {
    Format.JPG: "jpegsave_buffer",
    Format.PNG: "pngsave_buffer",
    Format.WEBP: "webpsave_buffer",
    Format.GIF: "gifsave_buffer",
    Format.TIF: "tiffsave_buffer",
    Format.JP2: "jp2ksave_buffer",
}


def _has_operation(name: str) -> bool:
    try:
        pyvips.Operation.new_from_name(name)
    except pyvips.Error:
        return False
    return True


# formats this libvips writes itself; the rest of what Pillow writes (PDF always) Pillow encodes
VIPS_WRITES = frozenset(fmt for fmt, saver in _SAVERS.items() if _has_operation(saver))


@dataclass(frozen=True)
class VipsDecoded:
    """A source decoded into memory at ``1/factor`` of its size, as 8-bit L, LA, RGB or RGBA.

    ``source_width`` x ``source_height`` is the size of what was delivered (a file's window),
    ``origin`` where ``image`` starts in it, in delivered pixels (a window not on the factor's
    grid is read from the grid line before it). libvips images are immutable: shared safely by
    concurrent renders.
    """

    image: Any  # pyvips.Image
    source_width: int
    source_height: int
    factor: int = 1
    origin: tuple[int, int] = (0, 0)

    @property
    def nbytes(self) -> int:
        im = self.image
        return int(im.width * im.height * im.bands)


@dataclass(frozen=True)
class Policy:
    """Which steps libvips does; Pillow does the rest. Pixels cross between the two as raw
    bytes (the output's, or the crop's), never as an encoded image."""

    file_loaders: frozenset[str]  # sources on file libvips reads (lazily: region reads)
    data_loaders: frozenset[str]  # sources in a backend's bytes libvips decodes
    decode_loaders: frozenset[str]  # whole sources libvips decodes for the decoded cache
    pixels: bool  # pixels Pillow holds (tiles stitched by a backend) are taken into libvips
    turn: bool  # libvips turns by angles that are not multiples of 90
    encode: frozenset[Format]  # formats libvips writes


# ``imaging.vips_steps: all``: libvips does every step it can
EVERYTHING = Policy(
    frozenset(_LOADERS), frozenset(_LOADERS), frozenset(_LOADERS), True, True, VIPS_WRITES
)
# ``imaging.vips_steps: measured`` (the default): libvips only where bench/engines.py measured
# it faster (CPU time, one thread, as in the shim). Regions of a TIFF on file: 1.4x when the
# file backend delivers a window (both engines read only its tiles), 8x when it delivers the
# whole file (Pillow decodes the page). PNG encoding about 2.4x, JPEG 2000 encoding 1.4x.
# Pillow kept: decoding whole masters (JPEG up to 1.2x faster in Pillow, JPEG 2000 1.7x, PNG and
# TIFF even), tiles from a kept master (libvips' per-pipeline overhead, about 1 ms, is most of
# a tile's cost), scaling what Pillow decoded (libvips 1.2-1.6x faster on large reductions, but
# copying the pixels across costs what it saves), turning by any angle (even), and writing JPEG
# (1.6x), TIFF (2.4x), WebP (even) and GIF (25x).
MEASURED = Policy(
    file_loaders=frozenset({"tiffload", "jp2kload"}),
    data_loaders=frozenset(),
    decode_loaders=frozenset(),
    pixels=False,
    turn=False,
    encode=frozenset({Format.PNG, Format.JP2}) & VIPS_WRITES,
)
POLICIES = {"measured": MEASURED, "all": EVERYTHING}

Decoded = pillow.Decoded | VipsDecoded


class VipsEngine(PillowMeasures):
    """The engine ``imaging.engine: vips`` picks (see ``engines.Engine``), doing in libvips
    the steps ``policy`` names and the rest in Pillow (``pillow.py``)."""

    name: ClassVar[str] = "vips"

    def __init__(self, policy: Policy = MEASURED) -> None:
        self.policy = policy

    def cost(self, plan: Plan, info: SourceInfo, *, decoded_cached: bool = False) -> Cost:
        """What this policy's steps take: libvips decodes into a byte a sample (3 for RGB,
        where Pillow stores 4), then pulls every step it does through strips (a turn, a
        scale, the encoder), needing no whole image of its own for any of them; a window of
        a tiled TIFF it reads itself costs a few rows of its tiles (``cost.Libvips.windows``);
        Pillow's count for the steps Pillow does (``cost.cost``)."""
        policy = self.policy
        steps = cost.Libvips(
            decodes=frozenset(_LOADERS[name] for name in policy.decode_loaders),
            turn=policy.turn,
            encodes=policy.encode,
            everything=policy is EVERYTHING,
            windows=frozenset(_LOADERS[name] for name in policy.file_loaders),
        )
        return cost.cost(plan, info, decoded_cached=decoded_cached, libvips=steps)

    @property
    def identity(self) -> str:
        name = next(k for k, v in POLICIES.items() if v is self.policy)
        libvips = f"{pyvips.version(0)}.{pyvips.version(1)}.{pyvips.version(2)}"
        return f"vips {libvips} {name} pillow {PIL.__version__}"  # Pillow does some steps

    def decode(
        self, fetched: Fetched, factor: int, allowance: Allowance, record: Record | None = None
    ) -> Decoded:
        started = time.perf_counter()
        view = None
        if fetched.image is not None:
            if self.policy.pixels:
                view = _open(fetched, 1, allowance)
        elif _loader(fetched) in self.policy.decode_loaders:
            view = _open(fetched, factor, allowance, whole=True)
        if view is None:
            return pillow.decode(fetched, factor, allowance, record)
        image = _run(fetched, lambda: view.image.copy_memory())
        _timed(record, "vips_decode", started)
        return VipsDecoded(image, view.source_width, view.source_height, view.factor, view.origin)

    def finish(self, decoded: Decoded, steps: Steps, record: Record | None = None) -> bytes:
        started = time.perf_counter()
        body = _finish(decoded, steps, "the decoded source", self.policy)
        _timed(record, "vips_finish", started)
        return body

    def render(
        self,
        fetched: Fetched,
        steps: Steps,
        allowance: Allowance,
        record: Record | None = None,
    ) -> bytes:
        if fetched.image is not None:
            return self.finish(self.decode(fetched, 1, allowance, record), steps, record)
        started = time.perf_counter()
        readers = self.policy.file_loaders if fetched.path else self.policy.data_loaders
        header = _open(fetched, 1, allowance) if _loader(fetched) in readers else None
        if header is None:  # Pillow decodes it (as pillow.render does), then the policy
            found = pillow.read_header(fetched, layout=False)  # its size: no tile-part walk
            width, height, fmt = found.width, found.height, found.format
            if fetched.window is not None:  # what is delivered is the window
                width, height = fetched.window.w, fetched.window.h
            if _passes(fetched, steps, width, height, fmt):
                return fetched.data or b""
            factor = cost.reduction(fmt, width, height, steps)
            decoded = pillow.decode(fetched, factor, allowance, record)
            return self.finish(decoded, steps, record)
        if _passes(fetched, steps, header.source_width, header.source_height, header.format):
            return fetched.data or b""
        factor = cost.reduction(header.format, header.source_width, header.source_height, steps)
        view = header if factor == 1 else _open(fetched, factor, allowance)
        assert view is not None
        # lazy: libvips reads the pixels (only the window's tiles) as the encoder asks for them
        body = _finish(view, steps, fetched.described, self.policy)
        _timed(record, "vips_render", started)
        return body


def _passes(fetched: Fetched, steps: Steps, width: int, height: int, fmt: str | None) -> bool:
    """The backend did everything, in the right format and size: its bytes pass through
    untouched (no second lossy encode), as in ``pillow.render``."""
    return (
        fetched.data is not None
        and steps.encoded
        and steps.no_pixel_work
        and (width, height) == steps.scale
        and fmt == pillow.pil_format(steps.format)
    )


def _timed(record: Record | None, step: str, started: float) -> None:
    if record is not None:
        record(step, time.perf_counter() - started)


@dataclass(frozen=True)
class _View:
    """A source opened lazily: ``image`` (normalised, not yet decoded) and where it lies in
    what was delivered (see :class:`VipsDecoded`), plus the format's name in Pillow's words."""

    image: Any
    source_width: int
    source_height: int
    factor: int
    origin: tuple[int, int]
    format: str
    random: bool  # read in any order (else top to bottom only)


def _run(fetched: Fetched, work: Any) -> Any:
    """Run libvips work that reads pixels; a broken source is the backend's fault (502)."""
    try:
        return work()
    except pyvips.Error as exc:
        raise NotAnImage(
            f"{fetched.described}: the image could not be decoded",
            detail=f"Error: {str(exc).strip()[:300]}",
        ) from None


# the first bytes of each format libvips is used for, and its loader
_MAGIC = (
    (b"\xff\xd8\xff", "jpegload"),
    (b"\x89PNG\r\n\x1a\n", "pngload"),
    (b"II*\x00", "tiffload"),
    (b"MM\x00*", "tiffload"),
    (b"II+\x00", "tiffload"),  # BigTIFF
    (b"MM\x00+", "tiffload"),
    (b"GIF87a", "gifload"),
    (b"GIF89a", "gifload"),
    (b"\x00\x00\x00\x0cjP  \r\n\x87\n", "jp2kload"),
    (b"\xff\x4f\xff\x51", "jp2kload"),  # a bare JPEG 2000 codestream
)


def _loader(fetched: Fetched) -> str | None:
    """The libvips loader for ``fetched``, from its first bytes (``None``: not one libvips is
    used for). The loader is then called by name: libvips never guesses (it would try every
    loader it has, ImageMagick's included), and a file name is never parsed for options."""
    if fetched.path is not None:
        try:
            with open(fetched.path, "rb") as file:
                head = file.read(16)
        except OSError:
            return None
    else:
        head = (fetched.data or b"")[:16]
    if head[:4] == b"RIFF" and head[8:12] == b"WEBP":
        return "webpload"
    return next((loader for magic, loader in _MAGIC if head.startswith(magic)), None)


def _load(fetched: Fetched, loader: str, page: int, shrink: int, access: str) -> Any:
    options: dict[str, Any] = {"access": access, "fail_on": "truncated"}
    if loader in _PAGED:
        options["page"] = page
    if loader == "tiffload" and fetched.window is None:
        # Pillow (its libtiff decoder) turns a whole TIFF page as its Orientation tag says, and
        # the facts give that size: libvips must read the page the same way
        options["autorotate"] = True
    if shrink > 1:
        options["shrink"] = shrink

    def call(**more: Any) -> Any:
        if fetched.path is not None:
            return pyvips.Operation.call(loader, str(fetched.path), **{**options, **more})
        return pyvips.Operation.call(loader + "_buffer", fetched.data or b"", **{**options, **more})

    try:
        if loader == "tiffload" and page > 0:
            # a pyramid written as SubIFDs of the first image (``vips tiffsave --subifd``):
            # page k is its k-th SubIFD, as tiff.tiff_pyramid numbers them
            first = call(page=0)
            if first.get_typeof("n-subifds") and first.get("n-subifds") > 0:
                return call(page=0, subifd=page - 1)
        return call()
    except pyvips.Error as exc:
        raise NotAnImage(
            f"{fetched.described} did not return an image",
            detail=f"Error: {str(exc).strip()[:300]}",
        ) from None


def _open(
    fetched: Fetched, factor: int, allowance: Allowance, *, whole: bool = False
) -> _View | None:
    """``fetched`` opened lazily at ``1/factor``, its header checked against ``allowance``,
    its window cut (lazily); ``None`` when libvips is not used for its format.

    TIFF and JPEG 2000 are opened for random access: libvips reads the tiles (or strips) a
    region needs. The rest are read top to bottom (``sequential``): with random access libvips
    would first decode them whole into a buffer of its own (on disk past 100 MB), next to
    the copy the shim counts. ``whole``: the caller reads every pixel in order anyway.
    """
    if fetched.image is not None:
        im = fetched.image
        return _View(_from_pil(im), im.width, im.height, 1, (0, 0), "", True)
    loader = _loader(fetched)
    if loader not in _LOADERS:
        return None
    fmt = _LOADERS[loader]
    page = fetched.page
    shrink = 1
    if factor > 1 and loader == "jpegload":
        shrink = factor
    elif factor > 1 and loader == "jp2kload":
        page += int(math.log2(factor))  # JPEG 2000 resolution levels are its pages
    access = "random" if loader in _RANDOM and not whole else "sequential"
    full = _load(fetched, loader, fetched.page, 1, access)  # the page's header, at full size
    page_w, page_h = full.width, full.height
    window = fetched.window or Box(0, 0, page_w, page_h)
    if window.x + window.w > page_w or window.y + window.h > page_h:
        raise NotAnImage(
            f"{fetched.described}: the window {window} lies outside its {page_w}x{page_h} image",
        )
    _check_header(fetched, window.w, window.h, allowance)
    if (shrink, page) != (1, fetched.page):
        im = _load(fetched, loader, page, shrink, access)
    else:
        im = full
    # where the window starts on the reduced grid, and the part of a grid cell before it
    gx, gy = window.x // factor, window.y // factor
    gx1 = min(im.width, math.ceil((window.x + window.w) / factor))
    gy1 = min(im.height, math.ceil((window.y + window.h) / factor))
    need = cost.libvips_bytes(_normalise(im).bands, gx1 - gx, gy1 - gy)
    if need > allowance.nbytes:
        raise DecompressionBomb(
            f"{fetched.described} sent a {window.w}x{window.h} image, which would take "
            f"{need} bytes to decode where {allowance.nbytes} were set aside for it",
        )
    if (gx, gy, gx1, gy1) != (0, 0, im.width, im.height):
        im = im.crop(gx, gy, gx1 - gx, gy1 - gy)  # a region read: only the tiles under it
    origin = (gx * factor - window.x, gy * factor - window.y)
    return _View(_normalise(im), window.w, window.h, factor, origin, fmt, access == "random")


def _check_header(fetched: Fetched, width: int, height: int, allowance: Allowance) -> None:
    """As ``pillow.check_size``, and past what Pillow would open at all a bomb, as the
    Pillow engine says."""
    if width * height > PILLOW_GUARD_PIXELS and not fetched.local:
        raise DecompressionBomb(
            f"{fetched.described} sent an image of more than {PILLOW_GUARD_PIXELS} pixels",
        )
    cost.check_size(fetched, width, height, allowance)


def _from_pil(im: Image.Image) -> Any:
    """Pixels Pillow holds (stitched tiles, or decoded by Pillow), as a libvips image."""
    im = pillow.normalise_mode(im)
    bands = {"L": 1, "LA": 2, "RGB": 3, "RGBA": 4}[im.mode]
    out = pyvips.Image.new_from_memory(im.tobytes(), im.width, im.height, bands, "uchar")
    return out.copy(interpretation="b-w" if bands < 3 else "srgb")


def _normalise(im: Any) -> Any:
    """Any source to 8-bit L, LA, RGB or RGBA, as ``pillow.normalise_mode`` does."""
    if im.interpretation == "cmyk":
        im = im.colourspace("srgb")
    if im.bands > 4:
        im = im.extract_band(0, n=4)
    if im.format == "ushort":
        im = im.cast("uchar", shift=True)  # the top 8 bits, as Pillow's I;16 -> L
    elif im.format in ("int", "uint"):
        im = (im / 256).cast("uchar")
    elif im.format != "uchar":
        im = im.cast("uchar")  # clipped, as Pillow's F -> L
    if im.bands in (1, 2):
        return im.copy(interpretation="b-w")
    return im.copy(interpretation="srgb")


def _crop_and_scale(source: _View | VipsDecoded, steps: Steps) -> Any:
    """The crop (in delivered pixels) of ``source``, scaled to exactly ``steps.scale``."""
    im, f = source.image, source.factor
    ox, oy = source.origin
    width, height = source.source_width, source.source_height
    crop = steps.crop or Box(0, 0, width, height)
    tw, th = steps.scale

    def edge(start: int, length: int, full: int, origin: int, size: int) -> tuple[float, float]:
        a = (start - origin) / f
        b = size if start + length == full else min(size, (start + length - origin) / f)
        return a, b

    x0, x1 = edge(crop.x, crop.w, width, ox, im.width)
    y0, y1 = edge(crop.y, crop.h, height, oy, im.height)
    ix0, iy0 = math.floor(x0), math.floor(y0)
    ix1, iy1 = math.ceil(x1), math.ceil(y1)
    if (ix0, iy0, ix1, iy1) != (0, 0, im.width, im.height):
        im = im.crop(ix0, iy0, ix1 - ix0, iy1 - iy0)
    if (x0, y0, x1, y1) == (ix0, iy0, ix1, iy1) and (ix1 - ix0, iy1 - iy0) == (tw, th):
        return im
    sx, sy = tw / (x1 - x0), th / (y1 - y0)
    im = im.resize(sx, vscale=sy, kernel="lanczos3")
    # a box off the reduced grid: the part of a pixel before it, scaled (half a pixel at most)
    dx = min(max(0, round((x0 - ix0) * sx)), max(0, im.width - tw))
    dy = min(max(0, round((y0 - iy0) * sy)), max(0, im.height - th))
    if (dx, dy, im.width, im.height) != (0, 0, tw, th):
        im = im.crop(dx, dy, min(tw, im.width - dx), min(th, im.height - dy))
        if (im.width, im.height) != (tw, th):  # rounding left it a pixel short: repeat the edge
            im = im.embed(0, 0, tw, th, extend="copy")
    return im


def _virtual(source: _View | VipsDecoded, steps: Steps) -> Any:
    """The degraded tier's virtual image (``steps.virtual``) of what was delivered: each pixel
    the mean of its ``steps.block`` x ``steps.block`` square (``shrink``, a box, rounding the
    size up: the squares cut by the edges averaged over the pixels they have), as Pillow's
    ``reduce`` makes it; a delivery that is not the frame at a finer power of two is resized."""
    assert steps.virtual is not None
    im = source.image
    frame = steps.frame or (source.source_width, source.source_height)
    d = None if source.origin != (0, 0) else pillow.delivered_factor(frame, (im.width, im.height))
    if d is not None and d <= steps.block:
        r = steps.block // d
        im = im.shrink(r, r, ceil=True) if r > 1 else im
        if (im.width, im.height) == steps.virtual:
            return im
    whole = dataclasses.replace(steps, crop=None, scale=steps.virtual, virtual=None, frame=None)
    return _crop_and_scale(source, whole)


def _turn(im: Any, steps: Steps) -> Any:
    if steps.mirror:
        im = im.flip("horizontal")
    degrees = steps.degrees
    if degrees == 0:
        return im
    quarter = {90.0: "d90", 180.0: "d180", 270.0: "d270"}.get(degrees)  # clockwise
    if quarter is not None:
        return im.rot(quarter)
    alpha = im.bands in (2, 4)
    if steps.format.has_alpha:  # spec: transparent background where the format allows it
        if not alpha:
            im = im.bandjoin(255)
        background = [0.0] * im.bands
    else:  # the spec leaves it open; black, as Pillow's engine does
        background = [0.0] * (im.bands - 1) + [255.0] if alpha else [0.0] * im.bands
    return _rotate(im, degrees, background)


_BICUBIC = pyvips.Interpolate.new("bicubic")


def _rotate(im: Any, degrees: float, background: list[float]) -> Any:
    """``im`` turned clockwise onto its tight bounding box (``rotated_size``), centre on
    centre, bicubic: what ``pillow._rotate`` makes."""
    w, h = im.width, im.height
    out_w, out_h = rotated_size(w, h, degrees)
    t = math.radians(degrees)
    cos, sin = math.cos(t), math.sin(t)
    # output = R(t) (input - centre_in) + centre_out, clockwise with y down; libvips puts a
    # pixel's centre on its integer coordinates (Pillow at +0.5), so the centres are at -0.5
    cx, cy = (w - 1) / 2, (h - 1) / 2
    odx = (out_w - 1) / 2 - (cos * cx - sin * cy)
    ody = (out_h - 1) / 2 - (sin * cx + cos * cy)
    return im.affine(
        [cos, -sin, sin, cos],
        interpolate=_BICUBIC,
        oarea=[0, 0, out_w, out_h],
        odx=odx,
        ody=ody,
        background=background,
        extend="background",
    )


def _gray(im: Any) -> Any:
    """ITU-R 601-2 luma, rounded, as Pillow's ``convert("L")`` (not libvips' colourimetric
    ``b-w``, which is far lighter for saturated colours)."""
    if im.bands in (1, 2):
        return im
    alpha = im.bands == 4
    luma = (im.extract_band(0, n=3).recomb([[0.299, 0.587, 0.114]]) + 0.5).cast("uchar")
    if alpha:
        luma = luma.bandjoin(im.extract_band(3))
    return luma.copy(interpretation="b-w")


def _quality(im: Any, quality: Quality) -> tuple[Any, bool]:
    """The quality applied, and whether the result is bitonal (written 1-bit where it can)."""
    if quality is Quality.GRAY:
        return _gray(im), False
    if quality is Quality.BITONAL:
        grey = _gray(im)
        black_white = (grey.extract_band(0) >= 128).cast("uchar")  # 255 or 0, as Pillow's "1"
        if grey.bands == 2:
            return black_white.bandjoin(grey.extract_band(1)).copy(interpretation="b-w"), True
        return black_white.copy(interpretation="b-w"), True
    return im, False


def _finish(
    source: _View | VipsDecoded | pillow.Decoded,
    steps: Steps,
    described: str,
    policy: Policy,
) -> bytes:
    """Crop, scale, turn, quality, encode: each step in the library ``policy`` gives it, the
    crop and scale in the one that decoded the source.

    libvips is lazy: a source still on file or in the backend's bytes is decoded only as the
    next step pulls its pixels, so a libvips failure there is the source's (502); from pixels
    already in memory, it is the encoder's (501)."""
    try:
        im: Any
        if steps.virtual is not None and not isinstance(source, pillow.Decoded):
            # the degraded tier: the delivered image down to its virtual pixels, then Pillow
            # crops and scales from them (the virtual image is small: at most max_size a side)
            tier = _to_pil(_virtual(source, steps))
            source = pillow.Decoded(tier, source.source_width, source.source_height)
        if isinstance(source, pillow.Decoded):
            im = pillow.crop_and_scale(source, steps)
            if im is source.image:
                im = pillow.shared(im)  # the decoded source is shared: never touch it
        else:
            im = _crop_and_scale(source, steps)
            if isinstance(source, _View) and not source.random and (steps.mirror or steps.degrees):
                im = im.copy_memory()  # turning reads out of order: decode the (scaled) crop
        arbitrary = steps.degrees % 90 != 0
        if isinstance(im, Image.Image) and arbitrary and policy.turn:
            im = _from_pil(im)
        elif not isinstance(im, Image.Image) and arbitrary and not policy.turn:
            im = _to_pil(im)
        if isinstance(im, Image.Image):
            im = pillow.apply_quality(pillow.turn(im, steps), steps.quality)
            bitonal = im.mode == "1" or steps.quality is Quality.BITONAL
        else:
            im, bitonal = _quality(_turn(im, steps), steps.quality)
        if steps.format in policy.encode:
            if isinstance(im, Image.Image):
                im = _from_pil(im)
            return _encode(im, steps.format, steps.jpeg_quality, bitonal)
        if not isinstance(im, Image.Image):
            im = _to_pil(im)
            if bitonal and im.mode == "L":
                im = im.convert("1", dither=Image.Dither.NONE)
        return pillow.encode(im, steps.format, steps.jpeg_quality)
    except pyvips.Error as exc:
        detail = f"Error: {str(exc).strip()[:300]}"
        if isinstance(source, _View) and source.format:
            raise NotAnImage(
                f"{described}: the image could not be decoded", detail=detail
            ) from None
        raise EncodeFailed(
            f"this image cannot be written as {steps.format.value}", detail=detail
        ) from None


def _flatten(im: Any) -> Any:
    """Drop alpha by compositing onto white, for formats without transparency."""
    if im.bands not in (2, 4):
        return im
    return im.flatten(background=[255.0] * (im.bands - 1)).cast("uchar")


def _to_pil(im: Any) -> Image.Image:
    mode = {1: "L", 2: "LA", 3: "RGB", 4: "RGBA"}[im.bands]
    return Image.frombytes(mode, (im.width, im.height), im.write_to_memory())


def _encode(im: Any, fmt: Format, jpeg_quality: int, bitonal: bool) -> bytes:
    """``im`` written by libvips (``fmt`` is one of :data:`VIPS_WRITES`: libvips cannot write
    PDF, so ``_finish`` has Pillow write that one)."""
    options: dict[str, Any] = dict(_NO_METADATA)
    if fmt is Format.JPG:
        im = _flatten(im)
        options["Q"] = jpeg_quality
    elif fmt is Format.WEBP:
        options["Q"] = jpeg_quality
    elif fmt is Format.GIF:
        options["dither"] = 0.0  # flat colours stay flat, as Pillow's octree without dither
    elif fmt is Format.JP2:
        options["Q"] = jpeg_quality
        options["lossless"] = False
    elif fmt is Format.TIF:
        options["compression"] = "deflate"
        if bitonal and im.bands == 1:
            options["bitdepth"] = 1
    elif fmt is Format.PNG:
        options["compression"] = 6
        if bitonal and im.bands == 1:
            options["bitdepth"] = 1
    return bytes(getattr(im, _SAVERS[fmt])(**options))
