"""The only place an exception becomes an HTTP response, and the CORS headers of every response.

- :func:`error_middleware`: a :class:`ShimError` becomes its status with a short plain-text
  reason; anything unexpected is logged and becomes a bare 500, never a traceback.
- :func:`add_cors_headers`: ``Access-Control-Allow-Origin: *`` on every response, including
  redirects, errors and 304s, so browser viewers can read statuses and bodies.
- :func:`preflight_middleware`: the answer to CORS preflight ``OPTIONS`` on any path, allowing the
  ``Authorization`` header (sent by auth-aware viewers) and whatever else the browser asks for.

aiohttp-cors is not used: it only answers requests that carry ``Origin`` and echoes the origin
instead of ``*``, where IIIF clients and the official validator expect ``*`` on everything.
"""

from __future__ import annotations

import logging
import re

from aiohttp import web
from aiohttp.typedefs import Handler

from .errors import ShimError

log = logging.getLogger("iiif_shim")

EXPOSED_HEADERS = "Link, ETag, Last-Modified, Content-Length, Content-Type"
_ALLOWED_METHODS = "GET, HEAD, OPTIONS"
_TOKEN_LIST_RE = re.compile(r"[A-Za-z0-9!#$%&'*+.^_`|~-]+(\s*,\s*[A-Za-z0-9!#$%&'*+.^_`|~-]+)*")


def text_response(status: int, text: str) -> web.Response:
    return web.Response(
        status=status,
        text=text.rstrip("\n") + "\n",
        content_type="text/plain",
        headers={"Cache-Control": "no-store"} if status >= 500 else None,
    )


@web.middleware
async def error_middleware(request: web.Request, handler: Handler) -> web.StreamResponse:
    try:
        return await handler(request)
    except ShimError as exc:
        if exc.status >= 500:
            log.warning(
                "%s %s -> %d %s", request.method, request.path_qs, exc.status, exc.public_text()
            )
        return text_response(exc.status, exc.public_text())
    except web.HTTPException:
        raise
    except Exception:
        log.exception("unexpected error serving %s %s", request.method, request.path_qs)
        return text_response(500, "internal error")


async def add_cors_headers(request: web.Request, response: web.StreamResponse) -> None:
    response.headers["Access-Control-Allow-Origin"] = "*"
    if request.method != "OPTIONS":
        response.headers["Access-Control-Expose-Headers"] = EXPOSED_HEADERS


@web.middleware
async def preflight_middleware(request: web.Request, handler: Handler) -> web.StreamResponse:
    """Answer CORS preflights on any path, before routing can say 404 or 405."""
    if request.method == "OPTIONS" and "Access-Control-Request-Method" in request.headers:
        return preflight(request)
    return await handler(request)


def preflight(request: web.Request) -> web.Response:
    asked = request.headers.get("Access-Control-Request-Headers", "").strip()
    allowed = "Authorization, Accept, Range, If-None-Match, If-Modified-Since"
    if asked and _TOKEN_LIST_RE.fullmatch(asked):
        allowed = f"{allowed}, {asked}"
    return web.Response(
        status=204,
        headers={
            "Access-Control-Allow-Methods": _ALLOWED_METHODS,
            "Access-Control-Allow-Headers": allowed,
            "Access-Control-Max-Age": "86400",
            "Allow": _ALLOWED_METHODS,
        },
    )
