"""The one place that decides what the backend does natively and what Pillow does.

The IIIF pipeline is ordered: region, size, mirror then rotation, quality, format. A backend gets
the longest prefix of that pipeline its :class:`Capabilities` cover; the first step it cannot do,
and every step after it, is Pillow's. Keeping to a prefix keeps the semantics exact (a gray
conversion before a resize is not the same image as after it for ``bitonal``; a mirror must come
before the rotation) while still letting a capable server crop and scale, which is where the
bytes and the time go.

For the size, the cheapest native call wins, in this order:

1. the request is exactly one tile of the backend's native grid: fetch that tile;
2. the backend scales to any size (within its ``max_size``): ask for exactly the output;
3. it scales keeping the aspect ratio only: ask for that size (for a distorted output, the
   undistorted size that covers it), Pillow does the rest;
4. it has a pyramid: ask for the region at the smallest level still at least the output
   size (never the master when a smaller level will do), Pillow scales the remainder;
5. it scales, but not this large (``max_size``): as large as it will, Pillow the rest.

Outputs with a side under ``min_size`` are never asked of the backend's scaler (tiles or the
unscaled region instead): some legacy servers crash on them.

The degraded tier of a restricted image (``tier_scale``) is its virtual image, the image
halved ``k`` times over until it fits (``TierScale``): the backend is asked for the whole
``k`` x ``k`` blocks that cover the region (``TierScale.virtual``, on the ``k`` grid) at scale
``1/k``: exactly their virtual pixels when it scales, else its pyramid's level ``k`` (the finest
coarser level when it has not that one; its coarsest when all are finer), else the region as it
is; the engine brings what it gets to those virtual pixels first (``Steps.virtual``: each the
mean of its block; the crop is in the image pixels of the region, ``Steps.frame``), then crops
and scales to the output, up or down. So any region at any output size is served from the
tier's pixels, and the backend renders only the blocks a request covers.

Pure: no I/O, no Pillow.
"""

from __future__ import annotations

import math

from iiif_shim.iiif.info import TileGrid
from iiif_shim.iiif.profile import Quality
from iiif_shim.iiif.resolve import Box, ResolvedRequest, TierScale, height_for_width
from iiif_shim.model.plan import Capabilities, NativeOp, Plan, SourceRef, Steps


def exact_tile(resolved: ResolvedRequest, grid: TileGrid | None) -> int | None:
    """The scale factor at which the request is exactly one native tile, if it is one."""
    if grid is None:
        return None
    r, (w, h) = resolved.region, (resolved.width, resolved.height)
    for sf in grid.scale_factors:
        span_w, span_h = grid.width * sf, grid.height * sf
        if (
            r.x % span_w == 0
            and r.y % span_h == 0
            and r.w == min(span_w, resolved.image_width - r.x)
            and r.h == min(span_h, resolved.image_height - r.y)
            and (w, h) == (math.ceil(r.w / sf), math.ceil(r.h / sf))
        ):
            return sf
    return None


def reduction_for(region: Box, out: tuple[int, int], grid: TileGrid | None) -> int:
    """The largest power of two that still leaves the region at least the output size,
    limited to the pyramid's levels."""
    shrink = min(region.w / out[0], region.h / out[1])
    if shrink < 2:
        return 1
    factor = 1 << int(math.log2(shrink))
    if grid is not None:
        factor = min(factor, max(grid.scale_factors))
    return factor


def plan(
    resolved: ResolvedRequest,
    caps: Capabilities,
    grid: TileGrid | None = None,
    jpeg_quality: int = 85,
    source: SourceRef | None = None,
    engine: str = "pillow",
    *,
    tier: str | None = None,
    tier_scale: TierScale | None = None,
) -> Plan:
    """Split ``resolved`` between the backend (``caps``) and Pillow. ``source`` names the source
    in the plan (and so in its cache key); without it the plan is never cached. ``tier`` (the
    degraded tier's name) is part of the key; ``tier_scale``: its virtual image, the only
    pixels the answer is made of (see the module's text)."""
    full = Box(0, 0, resolved.image_width, resolved.image_height)
    region = resolved.region
    out = (resolved.width, resolved.height)
    virtual: tuple[int, int] | None = None
    frame: tuple[int, int] | None = None
    block = 1
    if tier_scale is not None:
        native_region, cells = tier_scale.virtual(
            region, resolved.image_width, resolved.image_height, caps.min_size
        )
        if not caps.region:
            native_region = full
            cells = (tier_scale.pixels(full.w), tier_scale.pixels(full.h))
        native_region, cells, size, pyramid = _tier_fetch(
            native_region, cells, caps, grid, tier_scale.block, full
        )
        tile = False
        crop: Box | None = None
        if region != native_region:
            crop = Box(region.x - native_region.x, region.y - native_region.y, region.w, region.h)
        if pyramid:
            delivered = (math.ceil(native_region.w / pyramid), math.ceil(native_region.h / pyramid))
        else:
            delivered = size or (native_region.w, native_region.h)
        virtual, frame, block = cells, (native_region.w, native_region.h), tier_scale.block
        exact_geometry = crop is None and delivered == cells == out
    else:
        native_region, crop, size, pyramid, tile = _native(resolved, caps, grid)
        if pyramid:
            delivered = (math.ceil(region.w / pyramid), math.ceil(region.h / pyramid))
        else:
            delivered = size or (region.w, region.h)
        exact_geometry = crop is None and delivered == out
    # 3. mirror and rotation (mirror first, so both or neither when mirroring)
    degrees = resolved.degrees
    mirror = resolved.rotation.mirror
    native_turns = (
        exact_geometry
        and degrees % 90 == 0
        and (degrees == 0 or caps.rotation90)
        and (not mirror or caps.mirror)
    )
    # 4. quality (default needs no work)
    wanted = resolved.quality
    native_quality = native_turns and (wanted is Quality.DEFAULT or wanted in caps.qualities)
    # 5. format: asked for natively only when nothing else is left for Pillow
    native_format = native_quality and resolved.format in caps.formats

    native = NativeOp(
        region=native_region,
        size=size,
        reduction=pyramid,
        tile=tile,
        rotation=int(degrees) if native_turns else 0,
        mirror=mirror if native_turns else False,
        quality=wanted if native_quality and wanted is not Quality.DEFAULT else None,
        format=resolved.format if native_format else None,
    )
    if native_turns and degrees in (90, 270):
        out = (out[1], out[0])  # the backend delivers it turned already
    steps = Steps(
        crop=crop,
        scale=out,
        mirror=False if native_turns else mirror,
        degrees=0.0 if native_turns else degrees,
        quality=Quality.DEFAULT if native_quality else wanted,
        format=resolved.format,
        encoded=native_format,
        jpeg_quality=jpeg_quality,
        engine=engine,
        virtual=virtual,
        frame=frame,
        block=block,
    )
    source = source or SourceRef("", "", None)
    return Plan(source=source, resolved=resolved, native=native, steps=steps, tier=tier)


def _native(
    resolved: ResolvedRequest, caps: Capabilities, grid: TileGrid | None
) -> tuple[Box, Box | None, tuple[int, int] | None, int, bool]:
    """What the backend is asked for (region, size, reduction, tile) and the crop left to the
    engine, for the image itself (see the module's text)."""
    full = Box(0, 0, resolved.image_width, resolved.image_height)
    region = resolved.region
    out = (resolved.width, resolved.height)
    unscaled = out == (region.w, region.h)
    enlarges = out[0] > region.w or out[1] > region.h
    within = (caps.max_size is None or max(out) <= caps.max_size) and (
        unscaled or min(out) >= caps.min_size
    )
    # 1. region
    native_crops = caps.region or region == full
    # 2. size, once the region is native: the cheapest call that gives it (see the docstring)
    size: tuple[int, int] | None = None
    pyramid, tile = 0, False
    if native_crops:
        direct = within and (
            unscaled
            or (
                (caps.upscale or not enlarges)
                and (caps.size or (caps.size_keeps_aspect and _keeps_aspect(region, out)))
            )
        )
        tile_sf = exact_tile(resolved, grid) if caps.reductions else None
        if tile_sf is not None:
            pyramid, tile = tile_sf, True
        elif direct:
            size = None if unscaled else out
        elif caps.reductions and not enlarges:
            pyramid = reduction_for(region, out, grid)
        elif caps.size and caps.max_size and max(out) > caps.max_size:
            size = _confine(out, caps.max_size)  # as large as the backend allows; Pillow the rest
        elif caps.size_keeps_aspect and not enlarges:  # distorted: the covering undistorted size
            scale = max(out[0] / region.w, out[1] / region.h)
            size = (math.ceil(region.w * scale), math.ceil(region.h * scale))
    if not native_crops:
        return full, region, size, pyramid, tile
    return region, None, size, pyramid, tile


def _tier_fetch(
    block: Box,
    cells: tuple[int, int],
    caps: Capabilities,
    grid: TileGrid | None,
    k: int,
    full: Box,
) -> tuple[Box, tuple[int, int], tuple[int, int] | None, int]:
    """What the backend is asked for ``block`` of the image (whole ``k`` x ``k`` blocks, whose
    virtual pixels are ``cells``): ``(region, its virtual pixels, size, reduction)``. Exactly
    the virtual pixels (scale ``1/k``) when the backend scales to them (as many as it scales to
    past its ``max_size``); else its pyramid's level ``k``, or when it has none, the finest
    level coarser than ``k`` (the region widened to that level's grid, so its pixels are whole
    ones of the level); else, when every level is finer than ``k``, its coarsest (the one case
    besides a backend that cannot scale at all where it is asked for finer pixels than the
    tier's: the engine averages them down to the virtual pixels)."""
    if (block.w, block.h) == cells:  # the tier is the image itself here
        return block, cells, None, 0
    scales = caps.size or (caps.size_keeps_aspect and _keeps_aspect(block, cells))
    if scales and min(cells) >= caps.min_size:
        if caps.max_size is None or max(cells) <= caps.max_size:
            return block, cells, cells, 0
        smaller = _confine(cells, caps.max_size)
        if min(smaller) >= caps.min_size:
            return block, cells, smaller, 0
    if caps.reductions:
        if grid is None or k in grid.scale_factors:  # (no grid: any power of two)
            return block, cells, None, k
        coarser = [f for f in grid.scale_factors if f > k]
        if not coarser:
            return block, cells, None, max(grid.scale_factors)
        f = min(coarser)
        x0, y0 = block.x // f * f, block.y // f * f
        x1 = min(full.w, -(-(block.x + block.w) // f) * f)
        y1 = min(full.h, -(-(block.y + block.h) // f) * f)
        widened = Box(x0, y0, x1 - x0, y1 - y0)
        wide_cells = (-(-x1 // k) - x0 // k, -(-y1 // k) - y0 // k)
        return widened, wide_cells, None, f
    return block, cells, None, 0


def _keeps_aspect(region: Box, out: tuple[int, int]) -> bool:
    return out[1] == height_for_width(out[0], region.w, region.h)


def _confine(out: tuple[int, int], longest: int) -> tuple[int, int]:
    scale = longest / max(out)
    return max(1, math.floor(out[0] * scale)), max(1, math.floor(out[1] * scale))
