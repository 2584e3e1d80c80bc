"""The handlers of the built-in viewers: ``GET /view/{viewer}`` (the page of a viewer opening what
the query names: :mod:`iiif_shim.presentation.viewers` makes it) and ``GET /viewers/{path}``
(files of the installed viewers' assets folder only, by an allowlist of names and types, never
outside it, cached for a year: the version is in every path).
"""

from __future__ import annotations

import asyncio
import re
from collections.abc import Mapping
from pathlib import Path
from types import MappingProxyType
from urllib.parse import unquote

from aiohttp import web

from iiif_shim.presentation.viewers import (
    BUILTIN_VIEWERS,
    VIEWERS,
    ViewerSettings,
    missing_packages,
    missing_page,
    target_from_query,
    viewer_page,
    viewer_url,
)

ASSET_CACHE_CONTROL = "public, max-age=31536000, immutable"


_CONTENT_TYPES: Mapping[str, str] = MappingProxyType(
    {
        ".js": "text/javascript; charset=utf-8",
        ".mjs": "text/javascript; charset=utf-8",
        ".css": "text/css; charset=utf-8",
        ".map": "application/json; charset=utf-8",
        ".json": "application/json; charset=utf-8",
        ".txt": "text/plain; charset=utf-8",
        ".svg": "image/svg+xml",
        ".png": "image/png",
        ".gif": "image/gif",
        ".jpg": "image/jpeg",
        ".jpeg": "image/jpeg",
        ".webp": "image/webp",
        ".ico": "image/x-icon",
        ".woff2": "font/woff2",
        ".woff": "font/woff",
        ".ttf": "font/ttf",
        ".otf": "font/otf",
        ".eot": "application/vnd.ms-fontobject",
    }
)


_LICENCE_NAMES = frozenset({"LICENSE", "LICENCE", "COPYING"})


_SEGMENT_RE = re.compile(r"[A-Za-z0-9_@+~-][A-Za-z0-9._@+~-]{0,199}")


_MAX_ASSET_PATH = 512


def _text(status: int, text: str) -> web.Response:
    return web.Response(
        status=status,
        text=text.rstrip("\n") + "\n",
        content_type="text/plain",
        headers={"Cache-Control": "no-store", "X-Content-Type-Options": "nosniff"},
    )


_PAGE_HEADERS = {
    "Cache-Control": "no-cache",
    "X-Content-Type-Options": "nosniff",
    "Content-Security-Policy": "base-uri 'none'; object-src 'none'; form-action 'none'",
}


async def view(request: web.Request, settings: ViewerSettings, viewer: str) -> web.Response:
    """``GET /view/{viewer}``: the page of a built-in viewer opening what the query names."""
    if viewer not in VIEWERS:
        return _text(404, f"no viewer named {viewer!r}; built in: {', '.join(BUILTIN_VIEWERS)}")
    query = {k: request.query.getall(k) for k in request.query}
    try:
        target = target_from_query(query)
    except ValueError as exc:
        return _text(400, f"cannot open this in {BUILTIN_VIEWERS[viewer]}: {exc}")
    if target.image_service is not None and VIEWERS[viewer].needs_manifest:
        return _text(
            400,
            f"{BUILTIN_VIEWERS[viewer]} opens manifests; open a bare image service with "
            f"{viewer_url('osd', target.image_service + '/info.json')} "
            f"or {viewer_url('leaflet', target.image_service + '/info.json')}",
        )
    missing = await asyncio.to_thread(missing_packages, settings, viewer)
    if missing:
        return web.Response(
            status=503,
            text=missing_page(viewer, settings.folder, missing),
            content_type="text/html",
            headers={"Cache-Control": "no-store", "Retry-After": "3600"},
        )
    assets = settings.base_url or "../viewers"
    return web.Response(
        text=viewer_page(viewer, target, assets), content_type="text/html", headers=_PAGE_HEADERS
    )


def asset_file(folder: Path, path: str) -> Path | None:
    """The file ``path`` (the raw, still percent-encoded rest of the URL after ``/viewers/``)
    names inside ``folder``, or None when it names nothing servable."""
    if not path or len(path) > _MAX_ASSET_PATH:
        return None
    lowered = path.lower()
    if any(bad in lowered for bad in ("%2f", "%5c", "%00", "%25")):
        return None
    try:
        decoded = unquote(path, encoding="utf-8", errors="strict")
    except UnicodeDecodeError:
        return None
    segments = decoded.split("/")
    if not all(_SEGMENT_RE.fullmatch(s) for s in segments):
        return None  # empty, '.', '..', hidden, absolute, backslash, NUL, odd characters
    name = segments[-1]
    if name not in _LICENCE_NAMES and Path(name).suffix.lower() not in _CONTENT_TYPES:
        return None
    try:
        root = folder.resolve(strict=True)
        found = root.joinpath(*segments).resolve(strict=True)
    except (OSError, RuntimeError):
        return None
    if not found.is_relative_to(root) or not found.is_file():
        return None
    return found


async def asset(request: web.Request, settings: ViewerSettings, path: str) -> web.StreamResponse:
    """``GET``/``HEAD /viewers/{path}``: a file of the installed viewers, cached for a year."""
    found = await asyncio.to_thread(asset_file, settings.folder, path)
    if found is None:
        return _text(404, "no such viewer file")
    suffix = found.suffix.lower()
    headers = {
        "Cache-Control": ASSET_CACHE_CONTROL,
        "Content-Type": _CONTENT_TYPES.get(suffix, "text/plain; charset=utf-8"),
        "X-Content-Type-Options": "nosniff",
    }
    if await asyncio.to_thread(found.with_name(found.name + ".gz").is_file):
        headers["Vary"] = "Accept-Encoding"
    return web.FileResponse(found, headers=headers)
