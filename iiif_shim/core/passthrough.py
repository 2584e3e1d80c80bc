"""Large answers that pass through untouched, streamed to the client as they arrive.

When what the backend delivers already is the answer (nothing to crop, scale, mirror, turn,
convert or encode, at exactly the size asked) and it is large, the shim does not hold it in
memory: it reads the first bytes, checks them (an image, of the format and the exact size the
plan expects, from its header), then copies chunks from the backend to the client. Anything
else, or a header that does not match, goes the buffered way, where the derivative caches and
single-flight serve repeated and concurrent requests (tiles and thumbnails are small and asked
again and again, so caching them is worth more than streaming them).

Once the first bytes have gone out the status is sent: a fault after that (the backend stalls,
resets, or sends more than ``max_bytes``) can only cut the response, so the connection is
aborted and the client sees a short body, never a complete-looking one.
"""

from __future__ import annotations

from collections.abc import AsyncIterator
from contextlib import asynccontextmanager
from typing import TYPE_CHECKING

from iiif_shim.base.errors import BackendError
from iiif_shim.imaging import pillow
from iiif_shim.imaging.fetched import Fetched
from iiif_shim.imaging.headers import header
from iiif_shim.upstream.client import Body

if TYPE_CHECKING:
    from iiif_shim.core.service import ImageService, Prepared

# Answers with fewer output pixels than this are buffered (and cached) instead: one native
# tile (256x256 to 1024x1024) stays below it.
STREAM_MIN_PIXELS = 2 * 1024 * 1024
# Seconds a client may take to accept one chunk of a streamed answer (then it is cut).
WRITE_STALL = 30.0
# Answers up to this size have their header checked on the loop (the header alone is read).
INLINE_CHECK_BYTES = 1024 * 1024
# Source formats and modes whose bytes are the answer to a whole-source request as they are.
_AS_IS = {"JPEG": ("L", "RGB"), "PNG": ("L", "LA", "RGB", "RGBA")}


def untouched(prepared: Prepared) -> bool:
    """Whether the backend's answer to the plan is the response, byte for byte."""
    plan, info = prepared.plan, prepared.source.info
    steps = plan.steps
    if not steps.no_pixel_work or plan.native.delivered_size() != steps.scale:
        return False
    if steps.encoded:
        return True
    # a whole master at full size, already in the format asked
    return (
        plan.native.whole_source(info.width, info.height)
        and info.format is not None
        and info.mode in _AS_IS.get(info.format, ())
        and pillow.pil_format(steps.format) == info.format
    )


def as_delivered(prepared: Prepared, fetched: Fetched) -> bytes | None:
    """A small answer the backend encoded, when it is the response as it is: checked from its
    header here, on the loop (tens of microseconds, where a trip through the thread pool
    costs several times that), before anything else is done with it."""
    data, steps = fetched.data, prepared.plan.steps
    if data is None or len(data) > INLINE_CHECK_BYTES or not steps.encoded:
        return None
    if not untouched(prepared):
        return None
    if header(data) != (pillow.pil_format(steps.format), *steps.scale):
        return None  # not JPEG or PNG, not that size, or odd: the pool's render decides
    return data


def streamable(prepared: Prepared) -> bool:
    width, height = prepared.plan.steps.scale
    return width * height >= STREAM_MIN_PIXELS and untouched(prepared)


@asynccontextmanager
async def opened(service: ImageService, prepared: Prepared) -> AsyncIterator[Body | None]:
    """The backend's answer as a checked stream, or ``None`` when it must go the buffered way
    (not streamable, the backend cannot stream it, or its header does not match the plan)."""
    src = prepared.source
    streams = None
    if streamable(prepared):
        streams = src.backend.stream(src.target, prepared.plan.native, src.info)
    if streams is None:
        yield None
        return
    async with streams as body:
        yield body if await _matches(service, prepared, body) else None


async def _matches(service: ImageService, prepared: Prepared, body: Body) -> bool:
    """Whether the first bytes are the header of exactly the image the plan expects."""
    steps = prepared.plan.steps
    try:
        width, height, _, fmt, _ = await service.workers.run(
            pillow.probe, Fetched(data=body.head, described=prepared.source.backend.name)
        )
    except BackendError:  # no header in the first bytes (or no image): the buffered way decides
        return False
    return (width, height) == steps.scale and fmt == pillow.pil_format(steps.format)
