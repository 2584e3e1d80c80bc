"""Thin handlers of the Presentation API: manifests, collections and the PDF of an object.

URL layout under the IIIF prefix (each object or source name one percent-encoded segment):
``presentation/{3|2}/{object}/manifest``, ``presentation/{3|2}/collection`` (every source),
``presentation/{3|2}/collection/{source}`` and ``presentation/{object}/pdf``.
"""

from __future__ import annotations

import contextlib
import hashlib
import json
import os
import tempfile
from typing import Any
from urllib.parse import quote

from aiohttp import web
from aiohttp.abc import AbstractStreamWriter

from iiif_shim.base.errors import NotFound, PayloadTooLarge
from iiif_shim.iiif.profile import Version
from iiif_shim.iiif.request import parse_image_request
from iiif_shim.model.plan import Rendered
from iiif_shim.presentation.documents import Builder, Urls, thumb_size
from iiif_shim.presentation.pages import object_page
from iiif_shim.presentation.pdf import PdfWriter, jpeg_size
from iiif_shim.web.protocol import (
    accepts_gzip,
    cache_headers,
    decode_segment,
    negotiated,
    not_modified,
)
from iiif_shim.web.runtime import Runtime
from iiif_shim.web.state import observed, runtime_of

_VERSIONS = {v.value: v for v in Version}
MAX_NAME_SEGMENT = 1024


def urls_of(request: web.Request, runtime: Runtime) -> Urls:
    public, headers = runtime.public, request.headers
    return Urls(
        site=public.site(request.scheme, request.host, headers),
        iiif=public.base(request.scheme, request.host, headers),
    )


def builder_of(request: web.Request, runtime: Runtime) -> Builder:
    settings = runtime.settings
    return Builder(settings.presentation, urls_of(request, runtime), settings.landing.title)


def media_type(version: Version, accept: str | None) -> str:
    """3.0: JSON-LD with the presentation profile unless only plain JSON is asked for;
    2.1: plain JSON unless JSON-LD is."""
    context = f"http://iiif.io/api/presentation/{version.value}/context.json"
    return negotiated(accept, f'application/ld+json;profile="{context}"', version is Version.V3)


def _name(segment: str, what: str) -> str:
    if not segment or len(segment) > MAX_NAME_SEGMENT:
        raise NotFound(f"no such {what}")
    return decode_segment(segment, what)


async def presentation_request(request: web.Request, rest: str) -> web.StreamResponse:
    """``rest``: the raw path after ``{prefix}/presentation/``."""
    runtime = runtime_of(request)
    seen = observed(request)
    if not runtime.presentation.enabled:
        raise NotFound("this server has no object sources (see `presentation:` in the config)")
    segments = rest.split("/")
    version = _VERSIONS.get(segments[0])
    if version is not None and len(segments) == 3 and segments[2] == "manifest":
        seen.endpoint, seen.version = "manifest", version.value
        name = _name(segments[1], "object")
        doc = await runtime.presentation.manifest(version, name, builder_of(request, runtime))
        return await json_document(request, runtime, version, doc)
    if version is not None and segments[1:2] == ["collection"] and len(segments) <= 3:
        seen.endpoint, seen.version = "collection", version.value
        source = _name(segments[2], "source") if len(segments) == 3 else None
        doc = await runtime.presentation.collection(version, source, builder_of(request, runtime))
        return await json_document(request, runtime, version, doc)
    if len(segments) == 2 and segments[1] == "pdf":
        seen.endpoint = "pdf"
        return await pdf(request, runtime, _name(segments[0], "object"))
    raise NotFound(
        "not a Presentation API URL: expected presentation/{3|2}/{object}/manifest, "
        "presentation/{3|2}/collection[/{source}] or presentation/{object}/pdf"
    )


async def json_document(
    request: web.Request, runtime: Runtime, version: Version, doc: dict[str, Any]
) -> web.Response:
    media = media_type(version, request.headers.get("Accept"))
    body: bytes = await runtime.service.workers.run(_serialised, doc)  # large for big objects
    gzip = accepts_gzip(request)
    # one ETag per representation: the gzipped bytes are not the plain ones
    digest = hashlib.sha256(body + media.encode()).hexdigest()[:32]
    etag = f'"{digest}-gzip"' if gzip else f'"{digest}"'
    headers = cache_headers(runtime.settings, etag, None)
    if "Cache-Control" in headers:  # records are fresh for record_ttl, not the image lifetime
        headers["Cache-Control"] = (
            f"public, max-age={int(runtime.settings.presentation.record_ttl)}"
        )
    headers["Vary"] = "Accept, Accept-Encoding"
    if not_modified(request, etag, None):
        return web.Response(status=304, headers=headers)
    headers["Content-Type"] = media
    response = web.Response(body=body, headers=headers)
    if gzip:
        response.enable_compression()
    return response


def _serialised(doc: dict[str, Any]) -> bytes:
    return json.dumps(doc, ensure_ascii=False, indent=1).encode()


async def pdf(request: web.Request, runtime: Runtime, name: str) -> web.StreamResponse:
    """The object as a PDF: each canvas's image fitted in ``pdf_page_size``, one page at a
    time (rendered through the Image API, so the memory budget and caches apply), written to a
    temporary file that is removed once sent."""
    settings = runtime.settings.presentation
    presentation, images = runtime.presentation, runtime.service
    record = await presentation.record(name)
    if len(record.canvases) > settings.pdf_max_pages:
        raise PayloadTooLarge(
            f"object {name[:100]!r} has {len(record.canvases)} pages, more than this server puts "
            f"in one PDF ({settings.pdf_max_pages}: presentation.pdf_max_pages)"
        )
    pictures = await presentation.pictures(record)
    fd, path = tempfile.mkstemp(prefix="iiif-shim-", suffix=".pdf")
    try:
        with os.fdopen(fd, "wb") as out:
            writer = PdfWriter(out, title=record.label)
            for picture in pictures:
                w, h = thumb_size(*picture.max_size, settings.pdf_page_size)
                page = parse_image_request(
                    Version.V3, picture.identifier, "full", f"{w},{h}", "0", "default.jpg"
                )
                prepared = await images.prepare(page)
                rendered = await images.render(prepared, accept=_is_page)  # a cached one too
                pw, ph, components = jpeg_size(rendered.body)
                await images.workers.run(writer.add_jpeg, rendered.body, pw, ph, components)
            await images.workers.run(writer.close)
    except BaseException:
        _remove(path)
        raise
    ascii_name = "".join(c if c.isascii() and (c.isalnum() or c in "-_") else "_" for c in name)
    filename = ascii_name[:80] or "object"
    ttl = int(settings.record_ttl)
    return _TemporaryFile(
        path,
        headers={
            "Content-Type": "application/pdf",
            "Content-Disposition": f'inline; filename="{filename}.pdf"; '
            f"filename*=UTF-8''{quote(name[:200], safe='')}.pdf",
            "Cache-Control": f"public, max-age={ttl}" if ttl else "no-store",
        },
    )


def _is_page(rendered: Rendered) -> bool:
    """Whether the PDF writer can take this image as a page (a JPEG whose frame it reads)."""
    try:
        jpeg_size(rendered.body)
    except ValueError:
        return False
    return True


def _remove(path: str) -> None:
    with contextlib.suppress(OSError):
        os.unlink(path)


class _TemporaryFile(web.FileResponse):
    """A file response whose file is removed once sent (or once sending failed)."""

    async def prepare(self, request: web.BaseRequest) -> AbstractStreamWriter | None:
        try:
            return await super().prepare(request)
        finally:
            _remove(str(self._path))


async def object_request(request: web.Request, rest: str) -> web.Response:
    """``/objects/{object}``: the object's HTML page."""
    runtime = runtime_of(request)
    observed(request).endpoint = "object"
    if not runtime.presentation.enabled or not rest or "/" in rest:
        raise NotFound("no such object")
    name = _name(rest, "object")
    record = await runtime.presentation.record(name)
    pictures = await runtime.presentation.pictures(record)
    settings = runtime.settings
    page = object_page(
        record, pictures, builder_of(request, runtime), settings.viewers, settings.landing.title
    )
    response = web.Response(
        text=page,
        content_type="text/html",
        headers={
            "Cache-Control": f"public, max-age={int(settings.presentation.record_ttl)}",
            "Vary": "Accept-Encoding",
        },
    )
    if accepts_gzip(request):
        response.enable_compression()
    return response
