"""HTTP details every handler shares: one-time decoding of a path segment, conditional GET, cache
headers, and the reading of ``Accept`` for JSON-LD and gzip."""

from __future__ import annotations

import email.utils
from urllib.parse import unquote

from aiohttp import web

from iiif_shim.base.errors import BadRequest
from iiif_shim.config.settings import Settings


def decode_segment(segment: str, parameter: str) -> str:
    try:
        return unquote(segment, encoding="utf-8", errors="strict")
    except UnicodeDecodeError:
        raise BadRequest("percent-encoding is not valid UTF-8", parameter=parameter) from None


def _http_date(timestamp: float) -> str:
    return email.utils.formatdate(timestamp, usegmt=True)


def not_modified(request: web.Request, etag: str | None, last_modified: float | None) -> bool:
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


def cache_headers(
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


def wants_jsonld(accept: str | None) -> bool | None:
    """True if Accept prefers JSON-LD, False if it names plain JSON only or refuses JSON-LD
    (``q=0``), None if silent."""
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
    if plain > 0 or "application/ld+json" in ranked:  # ld+json;q=0: anything but that
        return False
    return None


def negotiated(accept: str | None, jsonld: str, jsonld_by_default: bool) -> str:
    """The JSON media type to answer with: ``jsonld`` (a JSON-LD type with its profile) or
    plain JSON, by ``Accept``, else by the version's default (3.0 APIs: JSON-LD; 2.x: JSON)."""
    wants = wants_jsonld(accept)
    if jsonld_by_default:
        return "application/json" if wants is False else jsonld
    return jsonld if wants else "application/json"


def accepts_gzip(request: web.Request) -> bool:
    return "gzip" in request.headers.get("Accept-Encoding", "")
