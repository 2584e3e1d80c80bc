"""Thin aiohttp handlers: read the request, call the service, write the response.

IIIF URLs are split from ``request.raw_path`` by hand, never from the decoded path: the
identifier is exactly one raw segment, decoded exactly once, so ``%2F`` stays part of it and
``%253C`` becomes ``%3C``, not ``<``. Each image parameter is decoded once too (browsers send
``^`` as ``%5E``).
"""

from __future__ import annotations

import email.utils
import hashlib
import json
from typing import Any
from urllib.parse import unquote

from aiohttp import web

from . import __version__
from .baseurl import PublicBase, encode_identifier
from .errors import BadRequest, NotFound
from .iiif.profile import Version, json_media_type
from .iiif.request import parse_image_request
from .landing import landing_page
from .service import ImageService
from .settings import Settings

SETTINGS = web.AppKey("settings", Settings)
SERVICE = web.AppKey("service", ImageService)
PUBLIC = web.AppKey("public", PublicBase)

MAX_IDENTIFIER_LENGTH = 1024
_VERSIONS = {v.value: v for v in Version}


def _decode(segment: str, parameter: str) -> str:
    try:
        return unquote(segment, encoding="utf-8", errors="strict")
    except UnicodeDecodeError:
        raise BadRequest("percent-encoding is not valid UTF-8", parameter=parameter) from None


def _http_date(timestamp: float) -> str:
    return email.utils.formatdate(timestamp, usegmt=True)


def _not_modified(request: web.Request, etag: str | None, last_modified: float | None) -> bool:
    """RFC 9110 conditional GET: If-None-Match wins over If-Modified-Since."""
    if_none_match = request.headers.get("If-None-Match")
    if if_none_match is not None:
        if etag is None:
            return False
        tags = [t.strip() for t in if_none_match.split(",")]
        return "*" in tags or any(t.removeprefix("W/") == etag for t in tags)
    since = request.if_modified_since
    if since is None or last_modified is None:
        return False
    return int(last_modified) <= since.timestamp()


def _cache_headers(
    settings: Settings, etag: str | None, last_modified: float | None
) -> dict[str, str]:
    headers: dict[str, str] = {}
    if settings.server.cache_control:
        headers["Cache-Control"] = settings.server.cache_control
    if etag:
        headers["ETag"] = etag
    if last_modified is not None:
        headers["Last-Modified"] = _http_date(last_modified)
    return headers


def _wants_jsonld(accept: str | None) -> bool | None:
    """True if Accept prefers JSON-LD, False if it names plain JSON only, None if silent."""
    if not accept:
        return None
    ranked: dict[str, float] = {}
    for item in accept.split(","):
        media, *params = (p.strip() for p in item.split(";"))
        q = 1.0
        for p in params:
            if p.startswith("q="):
                try:
                    q = float(p[2:])
                except ValueError:
                    q = 0.0
        ranked[media.lower()] = max(q, ranked.get(media.lower(), 0.0))
    ld, plain = ranked.get("application/ld+json", 0.0), ranked.get("application/json", 0.0)
    if ld > 0 and ld >= plain:
        return True
    if plain > 0:
        return False
    return None


def info_media_type(version: Version, accept: str | None) -> str:
    """3.0: JSON-LD unless only plain JSON is asked for. 2.1: plain JSON unless JSON-LD is."""
    wants = _wants_jsonld(accept)
    if version is Version.V3:
        return "application/json" if wants is False else json_media_type(version)
    return json_media_type(version) if wants else "application/json"


async def health(request: web.Request) -> web.Response:
    service = request.app[SERVICE]
    return web.json_response(
        {
            "status": "ok",
            "version": __version__,
            "backends": {
                name: {"type": b.type_name, **b.traffic()}
                for name, b in sorted(service.backends.items())
            },
            "pending": service.workers.pending,
        }
    )


async def landing(request: web.Request) -> web.Response:
    service = request.app[SERVICE]
    settings = request.app[SETTINGS]
    identifiers = list(settings.landing.identifiers)
    if not identifiers:
        for name in service.router.identity_backends():
            identifiers += await service.backends[name].identifiers(50)
    return web.Response(
        text=landing_page(settings.landing.title, settings.iiif.prefix, identifiers),
        content_type="text/html",
    )


async def iiif_request(request: web.Request) -> web.StreamResponse:
    """Everything under ``{prefix}/``: base URI, info.json and image requests of both versions."""
    settings = request.app[SETTINGS]
    raw = request.raw_path.split("?", 1)[0]
    head = settings.iiif.prefix + "/"
    if not raw.startswith(head):
        raise NotFound("not a IIIF URL")
    version_text, _, rest = raw[len(head) :].partition("/")
    version = _VERSIONS.get(version_text)
    if version is None:
        raise NotFound(f"no Image API version {version_text!r} here; use 3 or 2")
    segments = rest.split("/")
    if not segments[0]:
        raise NotFound("no identifier given")
    if len(segments[0]) > MAX_IDENTIFIER_LENGTH:
        raise BadRequest(f"identifier longer than {MAX_IDENTIFIER_LENGTH} characters")
    identifier = _decode(segments[0], "identifier")
    base = request.app[PUBLIC].base(request.scheme, request.host, request.headers)
    base_id = f"{base}/{version.value}/{encode_identifier(identifier)}"

    if len(segments) == 1 or segments[1:] == [""]:
        raise web.HTTPSeeOther(location=f"{base_id}/info.json")
    if segments[1:] == ["info.json"]:
        return await _info(request, version, identifier, base_id)
    if len(segments) == 5:
        return await _image(request, version, identifier, base_id, segments[1:])
    raise NotFound(
        "not a IIIF URL: expected {identifier}/info.json or "
        "{identifier}/{region}/{size}/{rotation}/{quality}.{format}, with any '/' inside the "
        "identifier sent as %2F"
    )


async def _info(
    request: web.Request, version: Version, identifier: str, base_id: str
) -> web.Response:
    settings = request.app[SETTINGS]
    doc, source = await request.app[SERVICE].info(version, identifier, base_id)
    media_type = info_media_type(version, request.headers.get("Accept"))
    body = json.dumps(doc, indent=2).encode()
    etag = '"' + hashlib.sha256(body + media_type.encode()).hexdigest()[:32] + '"'
    headers = _cache_headers(settings, etag, source.last_modified)
    headers["Vary"] = "Accept"
    if _not_modified(request, etag, source.last_modified):
        return web.Response(status=304, headers=headers)
    headers["Content-Type"] = media_type
    return web.Response(body=body, headers=headers)


async def _image(
    request: web.Request, version: Version, identifier: str, base_id: str, params: list[str]
) -> web.Response:
    settings = request.app[SETTINGS]
    service = request.app[SERVICE]
    names = ("region", "size", "rotation", "quality")
    decoded = [_decode(text, name) for text, name in zip(params, names, strict=True)]
    image_request = parse_image_request(version, identifier, *decoded)
    prepared = await service.prepare(image_request)
    last_modified = prepared.source.info.last_modified
    headers: dict[str, Any] = _cache_headers(settings, prepared.plan.etag, last_modified)
    headers["Link"] = (
        f'<{base_id}/{prepared.canonical}>;rel="canonical",<{version.level2_uri}>;rel="profile"'
    )
    if _not_modified(request, prepared.plan.etag, last_modified):
        return web.Response(status=304, headers=headers)
    rendered = await service.render(prepared)
    headers["Content-Type"] = rendered.media_type
    return web.Response(body=rendered.body, headers=headers)
