"""What wraps every request: its id, its runtime, its deadline, its metrics, and the one place an
exception becomes an HTTP response; and the CORS headers of every response.

- :func:`request_middleware`: takes the request id from ``X-Request-ID`` (or makes one) and
  returns it; holds the current runtime for the whole request (a reload never pulls it away);
  gives the request ``server.request_timeout`` until its status and headers go out (then 503;
  a body sent as it arrives is then bounded by its progress, not by the deadline:
  :func:`headers_sent`); turns a :class:`ShimError` into its status with a short plain-text
  reason (``Retry-After`` on 503s; ``nosniff``, as it may echo what the request named), and
  anything unexpected into a logged, bare 500, never a traceback; counts the request in the
  metrics.
- :func:`add_cors_headers`: ``Access-Control-Allow-Origin: *`` on every response the app makes,
  including redirects, errors and 304s, so browser viewers can read statuses and bodies; never
  ``Access-Control-Allow-Credentials`` (a restricted answer read with the browser's cookies
  would otherwise be readable by any page): access goes by cookie to images and by
  ``Authorization: Bearer`` (which needs no credentials mode) to info.json and probes.
  (Requests aiohttp's parser refuses are answered with CORS by ``connections.py``.) And, on a
  connection the shim itself serves over TLS, ``Strict-Transport-Security`` when
  ``server.tls.hsts`` is set (never on plain HTTP, which a proxy in front may be terminating).
- :func:`preflight_middleware`: the answer to CORS preflight ``OPTIONS`` on any path, allowing the
  ``Authorization`` header (sent by auth-aware viewers; named literally, since ``*`` does not
  cover it) and whatever else the browser asks for.

aiohttp-cors is not used: it only answers requests that carry ``Origin`` and echoes the origin
instead of ``*``, where IIIF clients and the official validator expect ``*`` on everything.
"""

from __future__ import annotations

import asyncio
import logging
import re
import time
from collections.abc import Mapping

from aiohttp import web
from aiohttp.typedefs import Handler

from iiif_shim.base.errors import DeadlinePassed, ShimError
from iiif_shim.telemetry import tracing
from iiif_shim.web.state import LIVE, METRICS, OBSERVED, REQUEST_ID, RUNTIME, Observed

log = logging.getLogger("iiif_shim")

EXPOSED_HEADERS = (
    "Link, ETag, Last-Modified, Content-Length, Content-Type, Content-Range, Accept-Ranges, "
    "X-Request-ID"
)
_ALLOWED_METHODS = "GET, HEAD, OPTIONS"
_TOKEN_LIST_RE = re.compile(r"[A-Za-z0-9!#$%&'*+.^_`|~-]+(\s*,\s*[A-Za-z0-9!#$%&'*+.^_`|~-]+)*")


# The request's deadline (``server.request_timeout``), while it runs.
DEADLINE = web.RequestKey("deadline", asyncio.Timeout)


def headers_sent(request: web.Request) -> None:
    """The status and headers of ``request``'s answer went out: its deadline ends here. What
    sends a body after them bounds it by its progress (each slice within a time of its own),
    so a large answer to a slow client is not cut at ``server.request_timeout``."""
    deadline = request.get(DEADLINE)
    if deadline is not None:
        deadline.reschedule(None)


def text_response(
    status: int,
    text: str,
    retry_after: int | None = None,
    headers: Mapping[str, str] | None = None,
) -> web.Response:
    """A plain-text answer (one final newline), never sniffed as something else (it may echo
    what the request named); a 5xx is never stored; ``headers`` added."""
    sent = {"Cache-Control": "no-store"} if status >= 500 else {}
    sent["X-Content-Type-Options"] = "nosniff"
    if retry_after is not None:
        sent["Retry-After"] = str(retry_after)
    sent.update(headers or {})
    return web.Response(
        status=status, text=text.rstrip("\n") + "\n", content_type="text/plain", headers=sent
    )


@web.middleware
async def request_middleware(request: web.Request, handler: Handler) -> web.StreamResponse:
    rid = tracing.choose(request.headers.get(tracing.HEADER))
    request[REQUEST_ID] = rid
    token = tracing.request_id.set(rid)
    seen = request[OBSERVED] = Observed()
    started = time.perf_counter()
    status = 500
    try:
        response = await _serve(request, handler, rid)
        status = response.status
        return response
    except web.HTTPException as exc:
        status = exc.status
        exc.headers[tracing.HEADER] = rid
        raise
    finally:
        elapsed = time.perf_counter() - started
        request.app[METRICS].request(seen.endpoint, seen.version, seen.backend, status, elapsed)
        tracing.request_id.reset(token)


async def _serve(request: web.Request, handler: Handler, rid: str) -> web.StreamResponse:
    try:
        async with request.app[LIVE].use() as runtime:
            request[RUNTIME] = runtime
            limit = runtime.settings.server.request_timeout
            try:
                async with asyncio.timeout(limit) as deadline:
                    request[DEADLINE] = deadline
                    response = await handler(request)
            except TimeoutError:
                if not deadline.expired():
                    raise
                raise DeadlinePassed(f"the request took longer than {limit:g}s") from None
    except ShimError as exc:
        if exc.status >= 500:
            log.warning(
                "%s %r -> %d %s%s [%s]",
                request.method,
                request.path_qs[:300],
                exc.status,
                exc.public_text(),
                f" ({exc.detail})" if exc.detail else "",
                rid,
            )
        response = text_response(exc.status, exc.public_text(), exc.retry_after)
    except web.HTTPException:
        raise
    except Exception:
        log.exception("unexpected error serving %s %r [%s]", request.method, request.path, rid)
        response = text_response(500, "internal error")
    response.headers[tracing.HEADER] = rid
    return response


async def add_cors_headers(request: web.Request, response: web.StreamResponse) -> None:
    response.headers["Access-Control-Allow-Origin"] = "*"
    response.headers.popall("Access-Control-Allow-Credentials", None)
    if request.method != "OPTIONS":
        response.headers["Access-Control-Expose-Headers"] = EXPOSED_HEADERS
    if request.secure and (runtime := request.get(RUNTIME)) is not None:
        tls = runtime.settings.server.tls
        if tls is not None and tls.hsts:
            response.headers["Strict-Transport-Security"] = f"max-age={tls.hsts}"


@web.middleware
async def preflight_middleware(request: web.Request, handler: Handler) -> web.StreamResponse:
    """Answer CORS preflights on any path, before routing can say 404 or 405."""
    if request.method == "OPTIONS" and "Access-Control-Request-Method" in request.headers:
        return preflight(request)
    return await handler(request)


def preflight(request: web.Request) -> web.Response:
    asked = request.headers.get("Access-Control-Request-Headers", "").strip()
    allowed = "Authorization, Accept, Range, If-None-Match, If-Modified-Since, X-Request-ID"
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
