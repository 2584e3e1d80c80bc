"""``create_app(settings)``: the aiohttp application, its routes and its shared resources.

What lives as long as the app: the metrics and the process-wide memory budget. Everything built
from one configuration (backends, thread pool, caches, health checks) lives in a
``runtime.Runtime``, made when the app starts and replaced whole by :func:`reload` (SIGHUP);
nothing lives in a module global but the favicon's bytes. Routes are fixed (``/health``,
``/health/ready``, ``/metrics``, ``/favicon.ico``, ``DELETE /admin/cache``, ``POST /auth/...``
for the login and clickthrough forms); everything else is dispatched by the current runtime's
``iiif.prefix``, so a reload may change it, except ``/auth/``: the access flow
(``web/auth.py``) and the Auth 2.0 probes (``web/access.py``).
"""

from __future__ import annotations

import asyncio
import hashlib
import logging
import os
from collections.abc import AsyncIterator, Callable
from pathlib import Path

from aiohttp import web

from iiif_shim.base.errors import ConfigError, NotFound
from iiif_shim.config.settings import Settings
from iiif_shim.imaging.budget import MemoryBudget
from iiif_shim.telemetry.metrics import Metrics
from iiif_shim.web import ops, viewers
from iiif_shim.web.access import probe_request
from iiif_shim.web.auth import auth_request
from iiif_shim.web.image import iiif_request
from iiif_shim.web.landing import landing
from iiif_shim.web.middleware import add_cors_headers, preflight_middleware, request_middleware
from iiif_shim.web.presentation import object_request, presentation_request
from iiif_shim.web.protocol import decode_segment
from iiif_shim.web.runtime import Live
from iiif_shim.web.search import search_request, text_request
from iiif_shim.web.state import LIVE, METRICS, PROCESS, ProcessInfo, observed, runtime_of

log = logging.getLogger("iiif_shim")

Loader = Callable[[], Settings]


def create_app(settings: Settings, process: ProcessInfo | None = None) -> web.Application:
    """The application serving ``settings``; ``process`` says which of the server's processes
    it runs in (by default: the only one)."""
    app = web.Application(
        middlewares=[request_middleware, preflight_middleware], client_max_size=64 * 1024
    )
    app[METRICS] = Metrics()
    app[PROCESS] = process or ProcessInfo(os.getpid())
    server = settings.server
    app[LIVE] = Live(app[METRICS], MemoryBudget(server.memory_budget, server.memory_wait))

    async def lifetime(app: web.Application) -> AsyncIterator[None]:
        live = app[LIVE]
        await live.start(settings)
        m = app[METRICS]
        m.watch("image_jobs", lambda: live.current.service.workers.pending)
        m.watch("decoded_bytes_reserved", lambda: live.budget.reserved)
        m.watch("memory_waiters", lambda: live.budget.waiting)
        yield
        await live.close()

    app.cleanup_ctx.append(lifetime)
    app.on_response_prepare.append(add_cors_headers)
    app.router.add_get("/health", ops.health)
    app.router.add_get("/health/ready", ops.ready)
    app.router.add_get("/metrics", ops.metrics)
    app.router.add_get("/favicon.ico", favicon)
    app.router.add_delete(ops.PATH, ops.purge)  # off unless cache.purge_token is set
    app.router.add_delete(ops.PATH + r"/{tail:[\s\S]*}", ops.purge)
    app.router.add_post(r"/auth/{tail:[\s\S]*}", dispatch)  # login and clickthrough forms
    app.router.add_get(r"/{tail:[\s\S]*}", dispatch)  # any path, newlines included
    return app


async def reload(app: web.Application, load: Loader) -> bool:
    """Serve a freshly read configuration, if it passes every check; keep the old one if not."""
    try:
        settings = await asyncio.to_thread(load)
    except ConfigError as exc:
        log.error("reload refused, still serving the previous configuration:\n%s", exc.report())
        return False
    for path, message in settings.warnings:
        log.warning("warning: %s: %s", path, message)
    try:
        notes = await app[LIVE].reload(settings)
    except Exception:
        log.exception("reload failed, still serving the previous configuration")
        return False
    for note in notes:
        log.warning(note)
    log.info("reloaded the configuration from %s", settings.origin)
    return True


_FAVICON = (Path(__file__).parent / "favicon.ico").read_bytes()  # 16, 32 and 48 px; 3 KB
_FAVICON_TAG = '"' + hashlib.sha256(_FAVICON).hexdigest()[:16] + '"'


async def favicon(request: web.Request) -> web.Response:
    """The icon browsers ask for at ``/favicon.ico`` beside every HTML page (else each page
    view logs a 404)."""
    observed(request).endpoint = "asset"
    headers = {"ETag": _FAVICON_TAG, "Cache-Control": "public, max-age=86400"}
    asked = {
        t.strip().removeprefix("W/") for t in request.headers.get("If-None-Match", "").split(",")
    }
    if asked & {_FAVICON_TAG, "*"}:
        return web.Response(status=304, headers=headers)
    return web.Response(body=_FAVICON, content_type="image/vnd.microsoft.icon", headers=headers)


async def dispatch(request: web.Request) -> web.StreamResponse:
    """Everything else, by the current configuration's prefix: the Presentation API, Content
    Search and the text of objects, IIIF images, object and viewer pages, viewer assets, the
    access flow and probes, else the landing page."""
    settings = runtime_of(request).settings
    prefix = settings.iiif.prefix
    raw = request.raw_path.split("?", 1)[0]
    if raw.startswith("/auth/probe/") and request.method != "POST":
        return await probe_request(request, raw[len("/auth/probe/") :])
    if raw.startswith("/auth/"):
        return await auth_request(request, raw[len("/auth/") :])
    if request.method == "POST":
        raise web.HTTPMethodNotAllowed("POST", ["GET", "HEAD"])
    if raw == "/":
        return await landing(request)
    if raw.startswith(prefix + "/presentation/"):
        return await presentation_request(request, raw[len(prefix) + len("/presentation/") :])
    if raw.startswith(prefix + "/search/"):
        return await search_request(request, raw[len(prefix) + len("/search/") :])
    if raw.startswith(prefix + "/text/"):
        return await text_request(request, raw[len(prefix) + len("/text/") :])
    if raw.startswith(prefix + "/"):
        return await iiif_request(request)
    if raw.startswith("/objects/"):
        return await object_request(request, raw[len("/objects/") :])
    if raw.startswith("/view/"):
        observed(request).endpoint = "viewer"
        viewer = decode_segment(raw[len("/view/") :], "viewer")
        return await viewers.view(request, settings.viewers, viewer)
    if raw.startswith("/viewers/"):
        observed(request).endpoint = "asset"
        return await viewers.asset(request, settings.viewers, raw[len("/viewers/") :])
    raise NotFound("not a IIIF URL")
