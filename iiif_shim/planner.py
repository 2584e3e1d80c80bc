"""The one place that decides what the backend does natively and what Pillow does.

The IIIF pipeline is ordered: region, size, mirror then rotation, quality, format. A backend gets
the longest prefix of that pipeline its :class:`Capabilities` cover; the first step it cannot do,
and every step after it, is Pillow's. Keeping to a prefix keeps the semantics exact (a gray
conversion before a resize is not the same image as after it for ``bitonal``; a mirror must come
before the rotation) while still letting a capable server crop and scale, which is where the
bytes and the time go.

Pure: no I/O, no Pillow.
"""

from __future__ import annotations

from .iiif.profile import Quality
from .iiif.resolve import Box, ResolvedRequest
from .model import Capabilities, NativeOp, PillowSteps, Plan


def plan(resolved: ResolvedRequest, caps: Capabilities, jpeg_quality: int = 85) -> Plan:
    full = Box(0, 0, resolved.image_width, resolved.image_height)
    region = resolved.region
    out = (resolved.width, resolved.height)

    # 1. region
    native_region = region if caps.region else full
    native_crops = caps.region or region == full
    # 2. size: only after the region is done natively, and within the backend's reach
    enlarges = out[0] > region.w or out[1] > region.h
    native_scales = native_crops and caps.size and (caps.upscale or not enlarges)
    native_size = out if native_scales and out != (region.w, region.h) else None
    geometry_native = native_crops and (native_scales or out == (region.w, region.h))
    # 3. mirror and rotation (mirror first, so both or neither when mirroring)
    degrees = resolved.degrees
    mirror = resolved.rotation.mirror
    by90 = degrees % 90 == 0
    native_turns = (
        geometry_native
        and by90
        and (degrees == 0 or caps.rotation90)
        and (not mirror or caps.mirror)
    )
    # 4. quality (default needs no work)
    wanted = resolved.quality
    native_quality = native_turns and (wanted is Quality.DEFAULT or wanted in caps.qualities)
    # 5. format: only when nothing at all is left for Pillow
    native_format = native_quality and resolved.format in caps.formats

    native = NativeOp(
        region=native_region,
        size=native_size,
        rotation=int(degrees) if native_turns else 0,
        mirror=mirror if native_turns else False,
        quality=wanted if native_quality and wanted is not Quality.DEFAULT else None,
        format=resolved.format if native_format else None,
    )
    if native_turns and degrees in (90, 270):
        out = (out[1], out[0])  # the backend delivers it turned already
    steps = PillowSteps(
        crop=None if native_crops else region,
        scale=out,
        mirror=False if native_turns else mirror,
        degrees=0.0 if native_turns else degrees,
        quality=Quality.DEFAULT if native_quality else wanted,
        format=resolved.format,
        jpeg_quality=jpeg_quality,
    )
    return Plan(resolved=resolved, native=native, steps=steps)
