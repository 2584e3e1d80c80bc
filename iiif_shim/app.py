"""``create_app(settings)``: the aiohttp application, its routes and its shared resources.

Resources (the thread pool, each backend's connections, the caches inside the service) are
created in ``cleanup_ctx`` when the app starts and released when it stops; nothing lives in a
module global.
"""

from __future__ import annotations

from collections.abc import AsyncIterator

from aiohttp import web

from .backends import BACKEND_TYPES
from .baseurl import PublicBase
from .middleware import add_cors_headers, error_middleware, preflight_middleware
from .pool import Workers
from .routes import PUBLIC, SERVICE, SETTINGS, health, iiif_request, landing
from .service import ImageService
from .settings import Settings


async def _resources(app: web.Application) -> AsyncIterator[None]:
    settings = app[SETTINGS]
    server = settings.server
    workers = Workers(server.workers, server.max_pending, server.request_timeout)
    backends = {
        name: BACKEND_TYPES[spec.type](name, spec, workers.run)
        for name, spec in settings.backends.items()
    }
    started = []
    try:
        for backend in backends.values():
            await backend.start()
            started.append(backend)
        app[SERVICE] = ImageService(settings, backends, workers)
        yield
    finally:
        for backend in started:
            await backend.close()
        workers.close()


def create_app(settings: Settings) -> web.Application:
    app = web.Application(
        middlewares=[error_middleware, preflight_middleware], client_max_size=64 * 1024
    )
    app[SETTINGS] = settings
    app[PUBLIC] = PublicBase(
        settings.server.public_url, settings.iiif.prefix, settings.server.trust_forwarded
    )
    app.cleanup_ctx.append(_resources)
    app.on_response_prepare.append(add_cors_headers)
    app.router.add_get("/health", health)
    app.router.add_get("/", landing)
    app.router.add_get(settings.iiif.prefix + "/{tail:.*}", iiif_request)
    return app
