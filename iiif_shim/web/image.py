"""Thin aiohttp handlers: read the request, call the service, write the response (an image's
headers come from the plan its body was made from: ``produce`` in ``core/service.py``).

IIIF URLs are split from ``request.raw_path`` by hand, never from the decoded path: the
identifier is exactly one raw segment, decoded exactly once, so ``%2F`` stays part of it and
``%253C`` becomes ``%3C``, not ``<``. Each image parameter is decoded once too (browsers send
``^`` as ``%5E``).
"""

from __future__ import annotations

import asyncio
import hashlib
import json
import logging
from typing import Any

from aiohttp import web

from iiif_shim.base.errors import BadRequest, NotFound, ShimError
from iiif_shim.core.service import Prepared
from iiif_shim.iiif.identifier import encode_identifier
from iiif_shim.iiif.profile import Format, Version, json_media_type
from iiif_shim.iiif.request import parse_image_request
from iiif_shim.telemetry import tracing
from iiif_shim.upstream.client import Body
from iiif_shim.web.protocol import cache_headers, decode_segment, negotiated, not_modified
from iiif_shim.web.runtime import Runtime
from iiif_shim.web.state import REQUEST_ID, observed, runtime_of

log = logging.getLogger("iiif_shim")

MAX_IDENTIFIER_LENGTH = 1024
# Seconds a client may take to accept one chunk of a streamed answer (then it is cut).
WRITE_STALL = 30.0
_VERSIONS = {v.value: v for v in Version}


def info_media_type(version: Version, accept: str | None) -> str:
    """3.0: JSON-LD unless only plain JSON is asked for. 2.1: plain JSON unless JSON-LD is."""
    return negotiated(accept, json_media_type(version), version is Version.V3)


async def iiif_request(request: web.Request) -> web.StreamResponse:
    """Everything under ``{prefix}/``: base URI, info.json and image requests of both versions."""
    runtime = runtime_of(request)
    settings = runtime.settings
    seen = observed(request)
    raw = request.raw_path.split("?", 1)[0]
    head = settings.iiif.prefix + "/"
    version_text, _, rest = raw[len(head) :].partition("/")
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
    base_id = f"{base}/{version.value}/{encode_identifier(identifier)}"

    if len(segments) == 1 or segments[1:] == [""]:
        seen.endpoint = "base"
        raise web.HTTPSeeOther(location=f"{base_id}/info.json")
    if segments[1:] == ["info.json"]:
        seen.endpoint = "info"
        return await _info(request, runtime, version, identifier, base_id)
    if len(segments) == 5:
        seen.endpoint = "image"
        return await _image(request, runtime, version, identifier, base_id, segments[1:])
    raise NotFound(
        "not a IIIF URL: expected {identifier}/info.json or "
        "{identifier}/{region}/{size}/{rotation}/{quality}.{format}, with any '/' inside the "
        "identifier sent as %2F"
    )


async def _info(
    request: web.Request, runtime: Runtime, version: Version, identifier: str, base_id: str
) -> web.Response:
    settings = runtime.settings
    observed(request).backend = runtime.service.router.route(identifier).backend
    doc, src = await runtime.service.info(version, identifier, base_id)
    source = src.info
    media_type = info_media_type(version, request.headers.get("Accept"))
    body = json.dumps(doc, indent=2).encode()
    etag = '"' + hashlib.sha256(body + media_type.encode()).hexdigest()[:32] + '"'
    headers = cache_headers(settings, etag, source.last_modified)
    headers["Vary"] = "Accept"
    if not_modified(request, etag, source.last_modified):
        return web.Response(status=304, headers=headers)
    headers["Content-Type"] = media_type
    return web.Response(body=body, headers=headers)


async def _image(
    request: web.Request,
    runtime: Runtime,
    version: Version,
    identifier: str,
    base_id: str,
    params: list[str],
) -> web.StreamResponse:
    settings = runtime.settings
    service = runtime.service
    names = ("region", "size", "rotation", "quality")
    decoded = [decode_segment(text, name) for text, name in zip(params, names, strict=True)]
    image_request = parse_image_request(version, identifier, *decoded)
    observed(request).backend = service.router.route(identifier).backend

    def headers_of(prepared: Prepared) -> dict[str, Any]:
        """The headers of what ``prepared`` plans: validators, caching, canonical link."""
        info, the_plan = prepared.source.info, prepared.plan
        headers: dict[str, Any] = cache_headers(settings, the_plan.etag, info.last_modified)
        headers["Link"] = (
            f'<{base_id}/{prepared.canonical}>;rel="canonical",<{version.level2_uri}>;rel="profile"'
        )
        return headers

    prepared = await service.prepare(image_request)
    if not_modified(request, prepared.plan.etag, prepared.source.info.last_modified):
        return web.Response(status=304, headers=headers_of(prepared))
    async with service.stream(prepared) as body:
        if body is not None:
            fmt = prepared.plan.resolved.format
            return await _streamed(request, headers_of(prepared), fmt, body)
    # what was made may have been planned again (facts from a cache proved wrong): the
    # headers are those of the plan the body was made from
    made = await service.produce(prepared)
    headers = headers_of(made.prepared)
    # the plan says what this is, never a cache entry (a shared tier may be written by others)
    headers["Content-Type"] = made.prepared.plan.resolved.format.media_type
    return web.Response(body=made.rendered.body, headers=headers)


async def _streamed(
    request: web.Request, headers: dict[str, Any], fmt: Format, body: Body
) -> web.StreamResponse:
    """``body`` copied to the client as it arrives; once the status went out, anything that
    stops the copy (the backend fails or stalls, the client stalls past
    ``WRITE_STALL`` or leaves, the request's deadline) aborts the connection: a
    short body, never one that looks complete."""
    headers["Content-Type"] = fmt.media_type
    headers[tracing.HEADER] = request[REQUEST_ID]
    response = web.StreamResponse(headers=headers)
    if body.length is not None:
        response.content_length = body.length
    await response.prepare(request)
    if request.method == "HEAD":
        return response
    try:
        async with asyncio.timeout(WRITE_STALL):
            await response.write(body.head)
        async for chunk in body.rest:
            async with asyncio.timeout(WRITE_STALL):
                await response.write(chunk)
    except BaseException as exc:
        if request.transport is not None:
            request.transport.abort()
        reason = exc.public_text() if isinstance(exc, ShimError) else type(exc).__name__
        log.info(
            "%s %r: cut after the status was sent: %s [%s]",
            request.method,
            request.path_qs[:300],
            reason,
            request[REQUEST_ID],
        )
        if isinstance(exc, asyncio.CancelledError):
            raise  # the request's deadline, or the server stopping
        return response
    await response.write_eof()
    return response
