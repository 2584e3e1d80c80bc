"""Thin aiohttp handlers: read the request, call the service, write the response (an image's
headers come from the plan its body was made from: ``produce`` in ``core/service.py``).

IIIF URLs are split from ``request.raw_path`` by hand, never from the decoded path: the
identifier is exactly one raw segment, decoded exactly once, so ``%2F`` stays part of it and
``%253C`` becomes ``%3C``, not ``<``. Each image parameter is decoded once too (browsers send
``^`` as ``%5E``).

A master sent as it is (``core/passthrough.py``) goes from its open file to the socket by the
OS's zero-copy sending (``loop.sendfile``: ``sendfile(2)`` on asyncio's loop; uvloop has none,
and there it is read in slices off the loop), with ``Accept-Ranges`` and one byte range served
when asked (206, or 416 when the range is past its end). A file that ends early or was written
while it was sent has its connection cut (:func:`_sent`): never a body that looks complete.

Bodies sent as they are (a master's file, a stream passed through) are bounded by their progress
once the headers went out (each slice within ``WRITE_STALL``), not by the request's deadline; the
access log gets their real status and the body bytes that went out (:class:`_Counted`). A client
that left before the headers is logged and counted as 499, as nginx does.

An image whose route has an ``access`` policy is asked the gate's verdict (``web/access.py``)
before anything else is done for it: no cache tier is read, no backend asked, no master passed
through without one. Its info.json answers 200 with its auth services to those with access,
302 to its degraded tier (``{prefix}/degraded/{version}/{identifier}``, served to everyone,
within that tier's limits and under cache keys of its own) or 401 with the whole document to
the others; its images answer 401 to them, never a redirect.
"""

from __future__ import annotations

import asyncio
import contextlib
import hashlib
import json
import logging
import os
import re
import socket
import struct
from dataclasses import dataclass
from typing import Any

from aiohttp import web

from iiif_shim.auth.gate import Tier
from iiif_shim.backends.base import OpenFile
from iiif_shim.base.errors import BadRequest, NotFound, ShimError
from iiif_shim.core.service import Prepared
from iiif_shim.iiif.identifier import encode_identifier
from iiif_shim.iiif.profile import Format, Version, json_media_type
from iiif_shim.iiif.request import parse_image_request
from iiif_shim.presentation.documents import DEGRADED, degraded_url, image_probe_url
from iiif_shim.telemetry import tracing
from iiif_shim.upstream.client import Body
from iiif_shim.web import access
from iiif_shim.web.middleware import headers_sent
from iiif_shim.web.presentation import CLIENT_GONE
from iiif_shim.web.protocol import cache_headers, decode_segment, negotiated, not_modified
from iiif_shim.web.runtime import Runtime
from iiif_shim.web.state import REQUEST_ID, observed, runtime_of

log = logging.getLogger("iiif_shim")

MAX_IDENTIFIER_LENGTH = 1024
# Seconds a client may take to accept one chunk of a streamed answer (then it is cut).
WRITE_STALL = 30.0
# Bytes of a master sent in one go (each within WRITE_STALL): 1 MiB is 35 KB/s at the least.
SEND_SLICE = 1024 * 1024
# One byte range: first-last, first-, or -suffix (at most 19 digits: below 2**63); the unit
# is case-insensitive (RFC 9110, 14.1).
_RANGE_RE = re.compile(r"bytes=(\d{0,19})-(\d{0,19})", re.IGNORECASE)
_VERSIONS = {v.value: v for v in Version}
_RESET = struct.pack("ii", 1, 0)  # SO_LINGER on, 0 s: a close resets the connection


def info_media_type(version: Version, accept: str | None) -> str:
    """3.0: JSON-LD unless only plain JSON is asked for. 2.1: plain JSON unless JSON-LD is."""
    return negotiated(accept, json_media_type(version), version is Version.V3)


async def iiif_request(request: web.Request) -> web.StreamResponse:
    """Everything under ``{prefix}/``: base URI, info.json and image requests of both versions,
    and of the degraded tier of restricted images (``{prefix}/degraded/{version}/...``)."""
    runtime = runtime_of(request)
    settings = runtime.settings
    seen = observed(request)
    raw = request.raw_path.split("?", 1)[0]
    head = settings.iiif.prefix + "/"
    version_text, _, rest = raw[len(head) :].partition("/")
    degraded = version_text == DEGRADED
    if degraded:
        version_text, _, rest = rest.partition("/")
    version = _VERSIONS.get(version_text)
    if version is None:
        raise NotFound(f"no Image API version {version_text[:20]!r} here; use 3 or 2")
    seen.version = version.value
    segments = rest.split("/")
    if not segments[0]:
        raise NotFound("no identifier given")
    if len(segments[0]) > MAX_IDENTIFIER_LENGTH:
        raise BadRequest(f"identifier longer than {MAX_IDENTIFIER_LENGTH} characters")
    identifier = decode_segment(segments[0], "identifier")
    base = runtime.public.base(request.scheme, request.host, request.headers)
    if degraded:
        base_id = degraded_url(base, version, identifier)
    else:
        base_id = f"{base}/{version.value}/{encode_identifier(identifier)}"
    wanted = _Access.of(runtime, identifier, base, degraded)

    if len(segments) == 1 or segments[1:] == [""]:
        seen.endpoint = "base"
        raise web.HTTPSeeOther(location=f"{base_id}/info.json")
    if segments[1:] == ["info.json"]:
        seen.endpoint = "info"
        return await _info(request, runtime, version, identifier, base_id, wanted)
    if len(segments) == 5:
        seen.endpoint = "image"
        return await _image(request, runtime, version, identifier, base_id, segments[1:], wanted)
    raise NotFound(
        "not a IIIF URL: expected {identifier}/info.json or "
        "{identifier}/{region}/{size}/{rotation}/{quality}.{format}, with any '/' inside the "
        "identifier sent as %2F"
    )


@dataclass(frozen=True)
class _Access:
    """What a request may get of a restricted image (``web/access.py``): its route's policy
    (``None``: public, served as ever), and the degraded tier's ``max_size`` when the request
    is for that tier."""

    policy: str | None
    max_size: int | None
    base: str  # the public base of the Image API ({site}{prefix})

    @classmethod
    def of(cls, runtime: Runtime, identifier: str, base: str, degraded: bool) -> _Access:
        try:
            policy = runtime.service.router.route(identifier).access
        except NotFound:
            if degraded:
                raise
            policy = None  # (the usual 404 comes where the image is looked for)
        max_size = access.degraded_size(runtime, policy)
        if degraded and max_size is None:
            raise NotFound("this image has no degraded tier")
        return cls(policy, max_size if degraded else None, base)

    @property
    def restricted(self) -> bool:
        """Whether this request is for the image itself of a restricted image (the degraded
        tier serves everyone)."""
        return self.policy is not None and self.max_size is None

    def site(self, runtime: Runtime) -> str:
        return self.base.removesuffix(runtime.settings.iiif.prefix)


async def _info(
    request: web.Request,
    runtime: Runtime,
    version: Version,
    identifier: str,
    base_id: str,
    tier: _Access,
) -> web.Response:
    settings = runtime.settings
    observed(request).backend = runtime.service.router.route(identifier).backend
    status = 200
    if tier.restricted:
        assert tier.policy is not None
        verdict = access.decide(request, runtime, tier.policy, bearer_ok=True)
        if not verdict.full:
            access.audit_refusal(request, runtime, tier.policy, identifier, verdict)
        if verdict.tier is Tier.DEGRADED:
            location = degraded_url(tier.base, version, identifier)
            return web.Response(
                status=302,
                headers=access.private({"Location": f"{location}/info.json"}, refused=True),
            )
        if verdict.tier is not Tier.FULL:
            status = 401  # Auth 1.0: the whole document, with its services
    doc, src = await runtime.service.info(version, identifier, base_id, max_size=tier.max_size)
    if tier.policy is not None:
        site = tier.site(runtime)
        # the degraded tier is everyone's: no probe (Auth 2.0: a substitute's must differ, and
        # one without auth services is accessible), the Auth 1.0 login kept for 1.0 viewers
        probe = None if tier.max_size is not None else image_probe_url(site, identifier)
        doc = access.declared(doc, runtime, tier.policy, site, probe, version)
    source = src.info
    media_type = info_media_type(version, request.headers.get("Accept"))
    body = json.dumps(doc, indent=2).encode()
    etag = '"' + hashlib.sha256(body + media_type.encode()).hexdigest()[:32] + '"'
    headers = cache_headers(settings, etag, source.last_modified)
    headers["Vary"] = "Accept"
    if tier.restricted:
        access.private(headers, refused=status != 200)
    if status == 200 and not_modified(request, etag, source.last_modified):
        return web.Response(status=304, headers=headers)
    headers["Content-Type"] = media_type
    return web.Response(status=status, body=body, headers=headers)


async def _image(
    request: web.Request,
    runtime: Runtime,
    version: Version,
    identifier: str,
    base_id: str,
    params: list[str],
    tier: _Access,
) -> web.StreamResponse:
    settings = runtime.settings
    service = runtime.service
    names = ("region", "size", "rotation", "quality")
    decoded = [decode_segment(text, name) for text, name in zip(params, names, strict=True)]
    image_request = parse_image_request(version, identifier, *decoded)
    observed(request).backend = service.router.route(identifier).backend
    if tier.restricted:
        assert tier.policy is not None
        verdict = access.decide(request, runtime, tier.policy, bearer_ok=False)
        if verdict.tier is not Tier.FULL:
            access.audit_refusal(request, runtime, tier.policy, identifier, verdict, always=False)
            return access.refusal(
                "this image is restricted: log in (see the services of its info.json)"
            )

    def headers_of(prepared: Prepared, etag: str | None) -> dict[str, Any]:
        """The headers of what ``prepared`` plans, with ``etag`` (an original's own, or the
        plan's): validators, caching, canonical link; never sniffed as anything else."""
        info = prepared.source.info
        headers: dict[str, Any] = cache_headers(settings, etag, info.last_modified)
        headers["Link"] = (
            f'<{base_id}/{prepared.canonical}>;rel="canonical",<{version.level2_uri}>;rel="profile"'
        )
        headers["X-Content-Type-Options"] = "nosniff"
        if tier.restricted:
            access.private(headers)
        return headers

    prepared = await service.prepare(image_request, max_size=tier.max_size)
    if not_modified(request, prepared.etag, prepared.source.info.last_modified):
        return web.Response(status=304, headers=headers_of(prepared, prepared.etag))
    async with service.stream(prepared) as passing:
        body, fmt = passing.body, passing.prepared.plan.resolved.format
        if isinstance(body, OpenFile):
            return await _sent(request, headers_of(passing.prepared, passing.etag), fmt, body)
        if body is not None:
            return await _streamed(request, headers_of(passing.prepared, passing.etag), fmt, body)
        prepared = passing.prepared  # planned again, when the master proved newer
    # what was made may have been planned again (facts from a cache proved wrong): the
    # headers are those of the plan the body was made from
    made = await service.produce(prepared)
    headers = headers_of(made.prepared, made.etag)
    # the plan says what this is, never a cache entry (a shared tier may be written by others)
    headers["Content-Type"] = made.prepared.plan.resolved.format.media_type
    return web.Response(body=made.rendered.body, headers=headers)


class _Counted(web.StreamResponse):
    """A response whose body the handler sends itself: its :attr:`body_length` (what access
    logs record) is the body's bytes that went out, however they were sent (``sendfile``
    writes past aiohttp's own count) and whether or not the body was cut."""

    sent = 0

    @property
    def body_length(self) -> int:
        return self.sent


async def _started(request: web.Request, response: _Counted) -> bool:
    """Send the status and headers (then the request's deadline no longer runs: the body is
    bounded by its progress); ``False`` when the client left before they could go."""
    try:
        await response.prepare(request)
    except ConnectionError:
        log.info(
            "%s %r: the client left before the headers were sent [%s]",
            request.method,
            request.path_qs[:300],
            request[REQUEST_ID],
        )
        return False
    headers_sent(request)
    return True


def _gone() -> web.Response:
    """What is logged and counted for a client that left: 499, as nginx does."""
    return web.Response(status=CLIENT_GONE, text="the client left\n")


async def _streamed(
    request: web.Request, headers: dict[str, Any], fmt: Format, body: Body
) -> web.StreamResponse:
    """``body`` copied to the client as it arrives; once the status went out, anything that
    stops the copy (the backend fails or stalls, the client stalls past ``WRITE_STALL`` or
    leaves) aborts the connection: a short body, never one that looks complete."""
    headers["Content-Type"] = fmt.media_type
    headers[tracing.HEADER] = request[REQUEST_ID]
    response = _Counted(headers=headers)
    if body.length is not None:
        response.content_length = body.length
    if not await _started(request, response):
        return _gone()
    if request.method == "HEAD":
        return response
    try:
        async with asyncio.timeout(WRITE_STALL):
            await response.write(body.head)
        response.sent += len(body.head)
        async for chunk in body.rest:
            async with asyncio.timeout(WRITE_STALL):
                await response.write(chunk)
            response.sent += len(chunk)
    except BaseException as exc:
        return _cut(request, response, exc)
    await response.write_eof()
    return response


def _cut(
    request: web.Request, response: web.StreamResponse, exc: BaseException
) -> web.StreamResponse:
    """A response stopped after its status went out: the connection aborted (a short body,
    never one that looks complete), the reason logged; a cancellation goes on up. A file
    written while it was sent has its connection reset: what the kernel still holds of the
    body (of either version) is dropped, not delivered."""
    transport = request.transport
    if transport is not None:
        if isinstance(exc, FileChanged):
            sock = transport.get_extra_info("socket")
            with contextlib.suppress(OSError, AttributeError):
                sock.setsockopt(socket.SOL_SOCKET, socket.SO_LINGER, _RESET)
        transport.abort()
    reason = exc.public_text() if isinstance(exc, ShimError) else type(exc).__name__
    if isinstance(exc, EOFError | FileChanged):
        reason = str(exc)
    log.info(
        "%s %r: cut after the status was sent: %s [%s]",
        request.method,
        request.path_qs[:300],
        reason,
        request[REQUEST_ID],
    )
    if isinstance(exc, asyncio.CancelledError):
        raise exc  # the server stopping
    return response


def byte_range(request: web.Request, etag: str | None, size: int) -> tuple[int, int] | None:
    """The one byte range ``Range`` asks of a ``size``-byte body, as (first, end); ``None``
    for the whole body: no ``Range``, one this does not serve (several ranges, another unit,
    malformed: the whole body is a right answer to those), or an ``If-Range`` the body no
    longer matches. 416 when the range starts past the end."""
    asked = request.headers.get("Range")
    if asked is None:
        return None
    if_range = request.headers.get("If-Range")
    if if_range is not None and if_range != etag:
        return None
    found = _RANGE_RE.fullmatch(asked.strip())
    if found is None or not (found[1] or found[2]):
        return None
    if not found[1]:  # the last n bytes
        suffix = int(found[2])
        if suffix == 0 or size == 0:
            raise _unsatisfiable(size)
        return max(0, size - suffix), size
    first = int(found[1])
    last = int(found[2]) if found[2] else None
    if last is not None and last < first:
        return None  # malformed: ignored
    if first >= size:
        raise _unsatisfiable(size)
    return first, size if last is None else min(last + 1, size)


def _unsatisfiable(size: int) -> web.HTTPRequestRangeNotSatisfiable:
    return web.HTTPRequestRangeNotSatisfiable(
        headers={"Content-Range": f"bytes */{size}"}, text="the range asked is past the end"
    )


class FileChanged(Exception):
    """A master's file was written (or another put in its place) while it was sent."""


async def _sent(
    request: web.Request, headers: dict[str, Any], fmt: Format, opened: OpenFile
) -> web.StreamResponse:
    """A master's file sent as it is: by ``loop.sendfile`` (zero-copy where the loop can),
    in slices each given ``WRITE_STALL``; else read in slices in a thread. Once the status
    went out, anything that stops it cuts the connection (as :func:`_streamed`): the file
    ending before the bytes its size promised, and a file written while it was sent (checked
    after each slice, off the loop: the body would be neither version under one's
    validators)."""
    first, end = byte_range(request, headers.get("ETag"), opened.size) or (0, opened.size)
    headers["Content-Type"] = fmt.media_type
    headers["Accept-Ranges"] = "bytes"
    headers[tracing.HEADER] = request[REQUEST_ID]
    status = 200
    if (first, end) != (0, opened.size):
        status = 206
        headers["Content-Range"] = f"bytes {first}-{end - 1}/{opened.size}"
    response = _Counted(status=status, headers=headers)
    response.content_length = end - first
    if not await _started(request, response):
        return _gone()
    if request.method == "HEAD":
        return response
    loop = asyncio.get_running_loop()
    native = True
    try:
        offset = first
        while offset < end:
            count = min(SEND_SLICE, end - offset)
            transport = request.transport
            if transport is None:
                raise ConnectionResetError("the client left")
            async with asyncio.timeout(WRITE_STALL):
                sent = None
                if native:
                    try:
                        sent = await loop.sendfile(transport, opened.file, offset, count)
                    except NotImplementedError:  # uvloop: read here, write as any body
                        native = False
                if sent is None:
                    chunk = await asyncio.to_thread(os.pread, opened.file.fileno(), count, offset)
                    sent = len(chunk) if len(chunk) == count else 0
                    if sent:
                        await response.write(chunk)
            offset += sent
            response.sent += sent
            if sent < count:  # sendfile(2) or a read met the end of the file: never a spin
                raise EOFError("the file is shorter than it was")
            if await asyncio.to_thread(opened.changed):
                raise FileChanged("the file was written while it was sent")
    except BaseException as exc:
        return _cut(request, response, exc)
    await response.write_eof()
    return response
