"""The cache purge endpoint: ``DELETE /admin/cache/{identifier}`` and ``DELETE /admin/cache``.

Off (404, as if it did not exist) unless ``cache.purge_token`` is set; then it needs
``Authorization: Bearer <token>`` (compared in constant time), and answers 401 with
``WWW-Authenticate`` without it. The identifier is one raw path segment decoded once, like in
IIIF URLs (``%2F`` stays part of it). A purge removes the source's facts and rendered images
from every cache tier and tells every running process (``tiers.Tiers.purge``); the answer is
JSON saying what each tier did, 200, or 503 when a tier could not be reached.
"""

from __future__ import annotations

import hmac

from aiohttp import web

from iiif_shim.base.errors import NotFound
from iiif_shim.cache.memory import source_key
from iiif_shim.web.middleware import text_response
from iiif_shim.web.protocol import decode_segment, observed, runtime_of

PATH = "/admin/cache"


async def purge(request: web.Request) -> web.Response:
    observed(request).endpoint = "admin"
    runtime = runtime_of(request)
    token = runtime.settings.cache.purge_token
    if token is None:
        raise NotFound("not a IIIF URL")
    if not _authorized(request.headers.get("Authorization", ""), token):
        response = text_response(401, "a purge needs Authorization: Bearer <cache.purge_token>")
        response.headers["WWW-Authenticate"] = 'Bearer realm="iiif-shim admin"'
        return response
    raw = request.raw_path.split("?", 1)[0]
    rest = raw[len(PATH) :]
    service = runtime.service
    tiers = service.caches.tiers
    if tiers is None:  # pragma: no cover - open_service always makes them
        raise NotFound("no caches")
    if rest in ("", "/"):
        identifier = None
        source = None
    else:
        identifier = decode_segment(rest[1:], "identifier")
        if not identifier or "/" in rest[1:]:
            raise NotFound("expected /admin/cache/{identifier}, with any '/' in it sent as %2F")
        target = service.router.route(identifier)
        source = source_key(target.backend, target.native_id)
    report = await tiers.purge(source)
    ok = report.pop("ok")
    body = {"purged": identifier if identifier is not None else "*", **report}
    status = 200 if ok else 503
    headers = {"Cache-Control": "no-store"}
    if not ok:
        headers["Retry-After"] = "5"
    return web.json_response(body, status=status, headers=headers)


def _authorized(header: str, token: str) -> bool:
    scheme, _, given = header.partition(" ")
    if scheme.lower() != "bearer":
        given = ""
    return hmac.compare_digest(given.strip().encode(), token.encode())
