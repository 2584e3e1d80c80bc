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

**Originals.** A request for the whole master at its own size, in its own format, with no
other change (3.0 ``full/max/0/default.jpg`` of a JPEG master, 2.1 ``full/full`` and
``full/max``, or the full size written out as ``w,h``: :func:`original`) is answered with the
master's own bytes, at any size, whenever the pixels they hold are those the pipeline would
deliver (``iiif.originals``, on by default, turns this off). The facts say whether that can be (a
format and mode whose bytes read as the pipeline's output would: :data:`_AS_IS`; a master
within ``max_source_pixels``, as for any other answer); the bytes themselves confirm it before
anything is sent (:func:`as_is`: the header read from them has that size, format and mode, no
EXIF orientation, one page, 8 bits a sample). So a CMYK or 16-bit master, one whose EXIF asks a
reader to turn it (the pipeline serves pixels as stored, its tiles without the tag), or a
multi-page TIFF goes the usual way. The file goes out as it is: with its colour profile, its
metadata (EXIF with any GPS position, XMP, IPTC), a PNG's gamma and whatever follows the image
data, all of which a re-encoding leaves out (what ``docs/image-api.md`` tells operators).

The service decides (``ImageService``: the setting, :func:`original`), opens the master (a
``files`` master: ``Backend.open_master``, sent from the open file by the HTTP layer; another
backend's: streamed as above when large, its traits read from its first bytes, read further
up to :data:`HEADER_READ_MAX` when its header lies past them, :func:`matches`; else fetched whole
and its traits read from all of it, :func:`held`) and checks it is the version its facts
describe before any byte goes out. Originals are never kept in the derivative caches, and have
an ETag of their own (:func:`etag`), given only to the master's bytes: when they go the usual
way, the answer has the plan's tag, as any re-encoded answer.
"""

from __future__ import annotations

import dataclasses
import hashlib
import io
from collections.abc import Awaitable, Callable
from typing import Any

from iiif_shim.base.errors import BackendError
from iiif_shim.iiif.profile import Format
from iiif_shim.imaging import pillow
from iiif_shim.imaging.fetched import Fetched
from iiif_shim.imaging.headers import header
from iiif_shim.imaging.pillow import Traits
from iiif_shim.model.facts import PyramidFacts, SourceInfo
from iiif_shim.model.plan import Plan
from iiif_shim.upstream.client import Body

# Answers with fewer output pixels than this are buffered (and cached) instead: one native
# tile (256x256 to 1024x1024) stays below it. (Originals below it are held whole, uncached.)
STREAM_MIN_PIXELS = 2 * 1024 * 1024
# Answers up to this size have their header checked on the loop (the header alone is read).
INLINE_CHECK_BYTES = 1024 * 1024
# The most bytes of a stream read for its header, when its first bytes do not hold it (a JPEG
# with large EXIF, XMP or ICC segments before its frame header).
HEADER_READ_MAX = 1024 * 1024
# The most bytes of a small original (below STREAM_MIN_PIXELS) held whole to be checked: 8 bytes
# a pixel (16-bit RGBA) and then some; a larger one goes the usual way.
HELD_MAX = 4 * 4 * STREAM_MIN_PIXELS
# Source formats, and the modes in each, whose own bytes read as the pipeline's output for
# the whole master at full size in that format (with :class:`Traits` that agree: as_is).
_AS_IS = {
    "JPEG": ("L", "RGB"),
    "PNG": ("L", "LA", "RGB", "RGBA"),
    "TIFF": ("L", "RGB", "RGBA"),
    "WEBP": ("RGB", "RGBA"),
}


def own_format(info: SourceInfo) -> Format | None:
    """The format in which the master's facts allow its own bytes to answer for the whole of
    it (:data:`_AS_IS`), for manifests to offer as the original; ``None`` for any other master,
    and for one its facts show to have several pages (a pyramid TIFF: :func:`as_is` refuses
    it). Whether a request in that format is an original is still :func:`original`'s word."""
    if info.format is None or info.mode not in _AS_IS.get(info.format, ()):
        return None
    if isinstance(info.native, PyramidFacts) and len(info.native.pyramid.levels) > 1:
        return None
    return next((fmt for fmt in Format if pillow.pil_format(fmt) == info.format), None)


def original(plan: Plan, info: SourceInfo, max_source_pixels: int) -> bool:
    """Whether the plan asks for the whole master at its own size, in its own format, with no
    other change, of a master whose facts allow its bytes to be the answer (within
    ``max_source_pixels``: a master refused elsewhere is not sent whole either; the bytes
    have the last word: :func:`as_is`)."""
    steps = plan.steps
    return (
        not steps.encoded
        and steps.no_pixel_work
        and plan.native.whole_source(info.width, info.height)
        and plan.native.delivered_size() == steps.scale
        and info.width * info.height <= max_source_pixels
        and info.format is not None
        and info.mode in _AS_IS.get(info.format, ())
        and pillow.pil_format(steps.format) == info.format
    )


def as_is(traits: Traits, plan: Plan) -> bool:
    """Whether a master with these traits (read from its bytes) is, byte for byte, the answer
    to an :func:`original` plan: the size and format asked, a mode the pipeline would keep,
    nothing a reader would turn (EXIF orientation), one page, 8 bits a sample."""
    fmt = pillow.pil_format(plan.steps.format)
    return (
        (traits.width, traits.height) == plan.steps.scale
        and traits.format == fmt
        and traits.mode in _AS_IS.get(fmt, ())
        and traits.orientation == 1
        and traits.pages == 1
        and traits.eight_bits
    )


def etag(plan: Plan) -> str | None:
    """The ETag of an original (the master's own bytes) made from the plan, and so from the
    master's version: never the tag a re-encoded answer to the same URL has, which is the
    plan's (``plan.etag``)."""
    key = plan.key
    if key is None:
        return plan.etag
    return '"' + hashlib.sha256(f"{key} original".encode()).hexdigest()[:32] + '"'


def _encoded(plan: Plan) -> bool:
    """Whether the backend's answer to the plan, encoded by it, is the response as it is."""
    steps = plan.steps
    return steps.encoded and steps.no_pixel_work and plan.native.delivered_size() == steps.scale


def as_delivered(plan: Plan, fetched: Fetched) -> bytes | None:
    """A small answer the backend encoded, when it is the response as it is: checked from its
    header here, on the loop (tens of microseconds, where a trip through the thread pool
    costs several times that), before anything else is done with it."""
    data, steps = fetched.data, plan.steps
    if data is None or len(data) > INLINE_CHECK_BYTES or not _encoded(plan):
        return None
    if header(data) != (pillow.pil_format(steps.format), *steps.scale):
        return None  # not JPEG or PNG, not that size, or odd: the pool's render decides
    return data


def streamable(plan: Plan, original: bool) -> bool:
    """Whether the backend's answer is streamed to the client: a large one that is the
    answer as it is (an ``original``, or what the backend encoded)."""
    width, height = plan.steps.scale
    large = width * height >= STREAM_MIN_PIXELS
    return large and (_encoded(plan) or original)


def held(plan: Plan, original: bool) -> bool:
    """Whether the backend's answer is an ``original`` too small to stream: fetched whole,
    checked whole (a body cut short is then a clean error, not a cut response), and sent as
    it is, never cached."""
    return original and not streamable(plan, original)


async def matches(
    body: Body,
    plan: Plan,
    original: bool,
    described: str,
    run_blocking: Callable[..., Awaitable[Any]],
) -> Body | None:
    """``body`` when its first bytes are the header of exactly the image the plan expects
    (read in the thread pool: the header may be anywhere in them), for an ``original`` with
    traits that make it the answer as it is (:func:`as_is`); else ``None``. An original's
    header past its first bytes is read further, up to :data:`HEADER_READ_MAX` (the body
    returned then starts with all that was read)."""
    steps = plan.steps
    while True:
        try:
            traits: Traits = await run_blocking(
                pillow.read_traits, io.BytesIO(body.head), described
            )
            break
        except BackendError:  # no header in the first bytes (or no image)
            longer = None
            if original and len(body.head) < HEADER_READ_MAX:
                longer = await _longer(body, HEADER_READ_MAX)
            if longer is None:
                return None  # the buffered way decides
            body = longer
    if original:
        return body if as_is(traits, plan) else None
    fits = (traits.width, traits.height) == steps.scale
    return body if fits and traits.format == pillow.pil_format(steps.format) else None


async def _longer(body: Body, limit: int) -> Body | None:
    """``body`` with twice its first bytes (at most ``limit``) read from the rest; ``None``
    when the rest ends first (the whole of it was read: nothing to read further)."""
    wanted = min(2 * len(body.head), limit)
    head = [body.head]
    size = len(body.head)
    async for chunk in body.rest:
        head.append(chunk)
        size += len(chunk)
        if size >= wanted:
            return dataclasses.replace(body, head=b"".join(head))
    return None
