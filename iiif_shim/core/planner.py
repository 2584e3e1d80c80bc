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

A tier that caps the scale (``tier_scale``: the degraded tier of a restricted image) never asks
a backend that scales for more of its region than the tier has (``TierScale.most``, the same
rule the output obeys): a pyramid level or an unscaled region past it gives way to the output
size itself when the backend scales, else to a smaller level. Only what cannot scale at all (a
file the shim reads itself), or a pyramid whose deepest level is still past the tier, is read as
it is; Pillow brings it down to the output, so the answer never has more than the tier.

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
    degraded tier's name) is part of the key; ``tier_scale``: the most the backend is asked
    for (see the module's text)."""
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
    if native_crops and tier_scale is not None:
        size, pyramid, tile = _capped(resolved, caps, grid, size, pyramid, tile, tier_scale)
    if pyramid:
        delivered = (math.ceil(region.w / pyramid), math.ceil(region.h / pyramid))
    else:
        delivered = size or (region.w, region.h)
    exact_geometry = native_crops and delivered == out
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
        region=region if native_crops else full,
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
        crop=None if native_crops else region,
        scale=out,
        mirror=False if native_turns else mirror,
        degrees=0.0 if native_turns else degrees,
        quality=Quality.DEFAULT if native_quality else wanted,
        format=resolved.format,
        encoded=native_format,
        jpeg_quality=jpeg_quality,
        engine=engine,
    )
    source = source or SourceRef("", "", None)
    return Plan(source=source, resolved=resolved, native=native, steps=steps, tier=tier)


def _capped(
    resolved: ResolvedRequest,
    caps: Capabilities,
    grid: TileGrid | None,
    size: tuple[int, int] | None,
    pyramid: int,
    tile: bool,
    tier_scale: TierScale,
) -> tuple[tuple[int, int] | None, int, bool]:
    """The native size, reduction and tile, kept within ``tier_scale`` of the region where the
    backend can scale: the output size itself, else a smaller pyramid level."""
    region, out = resolved.region, (resolved.width, resolved.height)
    most_w, most_h = tier_scale.most_of(region, resolved.image_width, resolved.image_height)

    def allowed(w: int, h: int) -> bool:
        return w <= most_w and h <= most_h

    if pyramid:
        delivered = (math.ceil(region.w / pyramid), math.ceil(region.h / pyramid))
    else:
        delivered = size or (region.w, region.h)
    if allowed(*delivered):
        return size, pyramid, tile
    scales = caps.size or (caps.size_keeps_aspect and _keeps_aspect(region, out))
    fits = (caps.max_size is None or max(out) <= caps.max_size) and min(out) >= caps.min_size
    if scales and fits:
        return out, 0, False
    if caps.reductions:
        deepest = max(grid.scale_factors) if grid is not None else 1 << 16
        factor = max(pyramid, 1)
        while factor < deepest and not allowed(
            math.ceil(region.w / factor), math.ceil(region.h / factor)
        ):
            factor *= 2
        return None, factor, False
    return size, pyramid, tile


def _keeps_aspect(region: Box, out: tuple[int, int]) -> bool:
    return out[1] == height_for_width(out[0], region.w, region.h)


def _confine(out: tuple[int, int], longest: int) -> tuple[int, int]:
    scale = longest / max(out)
    return max(1, math.floor(out[0] * scale)), max(1, math.floor(out[1] * scale))
