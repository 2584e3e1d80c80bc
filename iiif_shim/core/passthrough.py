"""Which answers pass through untouched: large ones streamed to the client as they arrive
(``ImageService.stream`` opens them, ``web/image.py`` copies them), small ones sent as the
backend encoded them.

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

from collections.abc import Awaitable, Callable
from typing import Any

from iiif_shim.base.errors import BackendError
from iiif_shim.imaging import pillow
from iiif_shim.imaging.fetched import Fetched
from iiif_shim.imaging.headers import header
from iiif_shim.model.facts import SourceInfo
from iiif_shim.model.plan import Plan
from iiif_shim.upstream.client import Body

# Answers with fewer output pixels than this are buffered (and cached) instead: one native
# tile (256x256 to 1024x1024) stays below it.
STREAM_MIN_PIXELS = 2 * 1024 * 1024
# Answers up to this size have their header checked on the loop (the header alone is read).
INLINE_CHECK_BYTES = 1024 * 1024
# Source formats and modes whose bytes are the answer to a whole-source request as they are.
_AS_IS = {"JPEG": ("L", "RGB"), "PNG": ("L", "LA", "RGB", "RGBA")}


def untouched(plan: Plan, info: SourceInfo) -> bool:
    """Whether the backend's answer to the plan is the response, byte for byte."""
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


def as_delivered(plan: Plan, info: SourceInfo, fetched: Fetched) -> bytes | None:
    """A small answer the backend encoded, when it is the response as it is: checked from its
    header here, on the loop (tens of microseconds, where a trip through the thread pool
    costs several times that), before anything else is done with it."""
    data, steps = fetched.data, plan.steps
    if data is None or len(data) > INLINE_CHECK_BYTES or not steps.encoded:
        return None
    if not untouched(plan, info):
        return None
    if header(data) != (pillow.pil_format(steps.format), *steps.scale):
        return None  # not JPEG or PNG, not that size, or odd: the pool's render decides
    return data


def streamable(plan: Plan, info: SourceInfo) -> bool:
    width, height = plan.steps.scale
    return width * height >= STREAM_MIN_PIXELS and untouched(plan, info)


async def matches(
    body: Body, plan: Plan, described: str, run_blocking: Callable[..., Awaitable[Any]]
) -> bool:
    """Whether the first bytes of a stream are the header of exactly the image the plan
    expects (read in the thread pool: the header may be anywhere in them)."""
    steps = plan.steps
    try:
        width, height, _, fmt, _ = await run_blocking(
            pillow.read_header, Fetched(data=body.head, described=described)
        )
    except BackendError:  # no header in the first bytes (or no image): the buffered way decides
        return False
    return (width, height) == steps.scale and fmt == pillow.pil_format(steps.format)
