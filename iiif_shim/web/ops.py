"""The endpoints for operations: ``/health``, ``/health/ready``, ``/metrics`` and the cache
purge endpoint.

``GET /health`` answers as long as the process serves (no backend is asked); ``GET
/health/ready`` reports each backend's state from the background checks (503 only when every one
is down) and, serving HTTPS, when the certificate ends (``tls``: ``not_after``, ``days_left``;
it never changes the status); ``GET /metrics`` is Prometheus' exposition of every worker's
metrics.

``DELETE /admin/cache/{identifier}`` and ``DELETE /admin/cache`` are off (404, as if they
did not exist) unless ``cache.purge_token`` is set; then they need ``Authorization: Bearer
<token>`` (compared in constant time), and answer 401 with ``WWW-Authenticate`` without it. The
identifier is one raw path segment decoded once, like in IIIF URLs (``%2F`` stays part of it).
A purge removes the source's facts, rendered images and everything else made from it from every
cache and tells every running process (``cache.facade.Caches.purge``); the answer is JSON
saying what each tier did, 200, or 503 when a tier could not be reached.

What ``/health``, ``/health/ready``, ``/metrics`` and the purge endpoint answer has every
secret of the configuration replaced by ``***`` (``base/redaction.py``).
"""

from __future__ import annotations

import asyncio
import hmac
from collections.abc import Callable
from pathlib import Path
from urllib.parse import unquote

from aiohttp import web

from iiif_shim import __version__
from iiif_shim.base import redaction
from iiif_shim.base.errors import NotFound
from iiif_shim.cache.entry import source_key
from iiif_shim.web.middleware import text_response
from iiif_shim.web.protocol import decode_segment
from iiif_shim.web.state import METRICS, PROCESS, observed, runtime_of

PATH = "/admin/cache"
#: the served certificate's end for ``/health/ready`` (set by ``process/server.py``; None: no TLS)
TLS_STATUS = web.AppKey[Callable[[], dict[str, object] | None]]("tls_status")


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
    rest = _purged_segments(request.raw_path)
    service = runtime.service
    if rest in ([], [""]):
        identifier = None
        source = None
    else:
        identifier = decode_segment(rest[0], "identifier") if len(rest) == 1 else ""
        if not identifier:
            raise NotFound("expected /admin/cache/{identifier}, with any '/' in it sent as %2F")
        target = service.router.route(identifier)
        source = source_key(target.backend, target.native_id)
    report = await service.caches.purge(source)
    ok = report.pop("ok")
    body = {"purged": identifier if identifier is not None else "*", **report}
    status = 200 if ok else 503
    headers = {"Cache-Control": "no-store"}
    if not ok:
        headers["Retry-After"] = "5"
    return web.json_response(redaction.scrub(body), status=status, headers=headers)


def _purged_segments(raw_path: str) -> list[str]:
    """The raw segments after ``/admin/cache`` (the router matched the decoded path, so the
    first two raw segments are read decoded too: ``/admin/%63ache`` is ``/admin/cache``)."""
    segments = raw_path.split("?", 1)[0].split("/")
    if [unquote(s) for s in segments[:3]] != PATH.split("/"):
        raise NotFound("expected /admin/cache or /admin/cache/{identifier}")
    return segments[3:]


def _authorized(header: str, token: str) -> bool:
    scheme, _, given = header.partition(" ")
    if scheme.lower() != "bearer":
        given = ""
    return hmac.compare_digest(given.strip().encode(), token.encode())


async def health(request: web.Request) -> web.Response:
    """Alive: answers as long as the process serves requests (cheap: no backend is asked)."""
    observed(request).endpoint = "health"
    runtime = runtime_of(request)
    service = runtime.service
    return web.json_response(
        redaction.scrub(
            {
                "status": "ok",
                "version": __version__,
                "config": Path(runtime.settings.origin).name,  # never a path of this machine
                "process": request.app[PROCESS].as_json(),  # which of the processes answered
                "backends": {
                    name: {"type": b.type_name, **b.traffic()}
                    for name, b in sorted(service.backends.items())
                },
                "pending": service.workers.pending,
                "memory": {"reserved": service.budget.reserved, "budget": service.budget.total},
                "event_loop": running(),
            }
        ),
        headers={"Cache-Control": "no-store"},
    )


async def ready(request: web.Request) -> web.Response:
    """Each backend's and object source's state from the background checks; 503 only when
    every backend is down (a source that is down makes it ``degraded``, still 200)."""
    observed(request).endpoint = "health"
    runtime = runtime_of(request)
    overall, body = runtime.presentation.watch.merged(*runtime.health.report())
    status = 503 if overall == "down" else 200
    tls = request.app.get(TLS_STATUS)
    if tls is not None and (served := tls()) is not None:
        body["tls"] = served
    return web.json_response(
        redaction.scrub(body), status=status, headers={"Cache-Control": "no-store"}
    )


async def metrics(request: web.Request) -> web.Response:
    observed(request).endpoint = "metrics"
    body, content_type = request.app[METRICS].render()
    # label values hold names and error kinds: a secret among them is never shown
    body = redaction.redact(body.decode("utf-8", "replace")).encode()
    response = web.Response(body=body, headers={"Cache-Control": "no-store"})
    response.headers["Content-Type"] = content_type
    return response


def running() -> str:
    """The event loop running now: ``uvloop`` or ``asyncio``."""
    module = type(asyncio.get_running_loop()).__module__
    return "uvloop" if module.startswith("uvloop") else "asyncio"
