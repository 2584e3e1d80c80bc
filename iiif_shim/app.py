"""``create_app(settings)``: the aiohttp application, its routes and its shared resources.

Resources (the thread pool, each backend's connections, the caches inside the service) are
created in ``cleanup_ctx`` when the app starts (``service.open_service``) and released when it
stops; nothing lives in a module global.
"""

from __future__ import annotations

from collections.abc import AsyncIterator

from aiohttp import web

from .baseurl import PublicBase
from .middleware import add_cors_headers, error_middleware, preflight_middleware
from .routes import PUBLIC, SERVICE, SETTINGS, health, iiif_request, landing
from .service import open_service
from .settings import Settings


async def _resources(app: web.Application) -> AsyncIterator[None]:
    async with open_service(app[SETTINGS]) as service:
        app[SERVICE] = service
        yield


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
