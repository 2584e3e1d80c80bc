"""What a plan costs in decoded-pixel memory, counted before any work, and what one decode may
take.

:func:`cost` is the count for a whole plan, made before anything is fetched so the request can
reserve it (``budget.py``): the source at the reduction it is decoded at (:func:`reduction`:
JPEG DCT scaling, JPEG 2000 resolution levels), in what Pillow really stores for its mode
(:func:`decode_bytes`: 4 bytes a pixel for RGB, a whole byte for a 1-bit pixel, plus the
conversion to L, LA, RGB or RGBA), plus every intermediate up to the rotated output. Both
engines reserve it (libvips stores no more). :class:`Allowance` is what one decode may take, and
:func:`check_size` the check of a header against it. Pure: no pixel is touched here.
"""

from __future__ import annotations

import math
from dataclasses import dataclass

from iiif_shim.base.errors import (
    DecompressionBomb,
    SourceTooLarge,
)
from iiif_shim.iiif.resolve import rotated_size
from iiif_shim.imaging.fetched import Fetched
from iiif_shim.model.facts import Pyramid, PyramidFacts, SourceInfo
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
    finish = 4 * RGBA_BYTES * max(out_w * out_h, turned_w * turned_h)
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
        stored = raw_bytes(info.mode, bw, bh) * 3 // 2
        decode = decode_bytes(info.mode, bw, bh) + stored + RGBA_BYTES * (w + SLACK) * (h + SLACK)
    else:
        w, h = plan.native.delivered_size()
        decode = decode_bytes(None, w + SLACK, h + SLACK)
        if info.tiles is not None:  # stitched: plus one tile decoding at a time
            decode += decode_bytes(None, info.tiles.width + SLACK, info.tiles.height + SLACK)
    finish += RGBA_BYTES * _reduced_first(w, h, out_w, out_h)
    return Cost(0 if decoded_cached else decode, finish)


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
    where the source format can decode small (JPEG DCT scaling up to 8, JPEG 2000 levels)."""
    cw, ch = (steps.crop.w, steps.crop.h) if steps.crop else (width, height)
    shrink = min(cw / steps.scale[0], ch / steps.scale[1])
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
