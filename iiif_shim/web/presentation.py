"""Thin handlers of the Presentation API: manifests, collections and the PDF of an object.

URL layout under the IIIF prefix (each object or source name one percent-encoded segment):
``presentation/{3|2}/{object}/manifest``, ``presentation/{3|2}/collection`` (every source),
``presentation/{3|2}/collection/{source}`` and ``presentation/{object}/pdf``.

Their pool jobs count in the ``documents`` lane (``imaging.pool``), a PDF's pages in the
``pdfs`` lane (``presentation/pdfs.py``). ``HEAD`` of a PDF answers from the object's record
and the kept PDF, if any (its ``Content-Length``), and never renders. While a PDF is made, the
handler watches its client: once the connection is gone it stops waiting (a 499 in the log and
the metrics), and the build stops when no one else waits for it. Each answer sends a link of
its own to the PDF, removed once sent: a kept one with ranges and validators (its file's, the
same from one request to the next), one that is not kept whole, without ranges (a range of it
would make the whole PDF again). A restricted PDF (``web/access.py``) answers 401 unless the
caller has access under each policy it needs, before any kept copy is looked at.

Every document is sent the one way (:func:`document_answer`, also for the search answers and
texts of ``web/search.py``): an ETag of its bytes and type, made in the pool with the JSON
(:func:`json_answer`), 304, gzip, ``Vary``, the records' freshness, ``private`` when it is a
restricted object's.
"""

from __future__ import annotations

import asyncio
import contextlib
import hashlib
import json
import os
from collections.abc import Callable, Coroutine
from pathlib import Path
from typing import Any, TypeVar
from urllib.parse import quote

from aiohttp import web
from aiohttp.abc import AbstractStreamWriter

from iiif_shim.base.errors import NotFound, PayloadTooLarge
from iiif_shim.base.lanes import Lane, in_lane
from iiif_shim.iiif.profile import Version
from iiif_shim.presentation.documents import Builder, Urls
from iiif_shim.presentation.pages import object_page
from iiif_shim.presentation.pdfs import PdfFile
from iiif_shim.telemetry import tracing
from iiif_shim.web import access
from iiif_shim.web.protocol import (
    accepts_gzip,
    cache_headers,
    decode_segment,
    negotiated,
    not_modified,
)
from iiif_shim.web.runtime import Runtime
from iiif_shim.web.state import REQUEST_ID, observed, runtime_of

_VERSIONS = {v.value: v for v in Version}
MAX_NAME_SEGMENT = 1024
# Seconds between looks at whether the client of a PDF being made is still there.
CLIENT_POLL = 0.2
# The status logged and counted for a request whose client left before its answer (nginx's).
CLIENT_GONE = 499
_CHUNK = 256 * 1024  # bytes of a PDF that is not kept read at a time
T = TypeVar("T")


def urls_of(request: web.Request, runtime: Runtime) -> Urls:
    public, headers = runtime.public, request.headers
    return Urls(
        site=public.site(request.scheme, request.host, headers),
        iiif=public.base(request.scheme, request.host, headers),
    )


def builder_of(request: web.Request, runtime: Runtime) -> Builder:
    settings = runtime.settings
    return Builder(
        settings.presentation,
        urls_of(request, runtime),
        settings.landing.title,
        settings.auth.policies,
    )


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
    with in_lane(Lane.DOCUMENTS):
        return await _presentation(request, rest)


async def _presentation(request: web.Request, rest: str) -> web.StreamResponse:
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
    return await json_answer(request, runtime, doc, media)


async def json_answer(
    request: web.Request,
    runtime: Runtime,
    doc: dict[str, Any],
    media: str,
    *,
    restricted: bool = False,
) -> web.Response:
    """``doc`` as JSON, as :func:`document_answer` sends it (made and digested in the pool:
    large for big objects)."""
    body, digest = await runtime.service.workers.run(_serialised, doc, media)
    return document_answer(request, runtime, body, media, digest, restricted=restricted)


def document_digest(body: bytes, media: str) -> str:
    """What a document's ETag is made of: its bytes and its type (blocking for large ones)."""
    found = hashlib.sha256(body)
    found.update(media.encode())
    return found.hexdigest()[:32]


def document_answer(
    request: web.Request,
    runtime: Runtime,
    body: bytes,
    media: str,
    digest: str,
    *,
    restricted: bool = False,
    headers: dict[str, str] | None = None,
) -> web.Response:
    """A document (a manifest, search results, a text) as every document is sent: its ETag
    (``digest``: :func:`document_digest`; 304 when it matches), fresh for
    ``presentation.record_ttl`` when the server sends ``Cache-Control``, gzip when accepted,
    ``Vary: Accept, Accept-Encoding``; ``restricted``: for this caller alone
    (``access.private``); ``headers`` added."""
    gzip = accepts_gzip(request)
    # one ETag per representation: the gzipped bytes are not the plain ones
    etag = f'"{digest}-gzip"' if gzip else f'"{digest}"'
    sent = document_headers(runtime, etag, restricted=restricted, headers=headers)
    if not_modified(request, etag, None):
        return web.Response(status=304, headers=sent)
    sent["Content-Type"] = media
    response = web.Response(body=body, headers=sent)
    if gzip:
        response.enable_compression()
    return response


def document_headers(
    runtime: Runtime, etag: str, *, restricted: bool = False, headers: dict[str, str] | None = None
) -> dict[str, str]:
    """The headers every document is sent with (:func:`document_answer`): its ``etag``, fresh
    for ``presentation.record_ttl`` when the server sends ``Cache-Control``, ``Vary: Accept,
    Accept-Encoding``; ``restricted``: for this caller alone (``access.private``); ``headers``
    added."""
    sent = cache_headers(runtime.settings, etag, None)
    if "Cache-Control" in sent:  # records are fresh for record_ttl, not the image lifetime
        sent["Cache-Control"] = f"public, max-age={int(runtime.settings.presentation.record_ttl)}"
    sent["Vary"] = "Accept, Accept-Encoding"
    if restricted:
        access.private(sent)
    sent.update(headers or {})
    return sent


def _serialised(doc: dict[str, Any], media: str) -> tuple[bytes, str]:
    body = json.dumps(doc, ensure_ascii=False, indent=1).encode()
    return body, document_digest(body, media)


async def pdf(request: web.Request, runtime: Runtime, name: str) -> web.StreamResponse:
    """The object as a PDF (``presentation/pdfs.py``): each canvas's image fitted in
    ``pdf_page_size``, one page at a time; the kept copy when there is one. ``HEAD`` renders
    nothing: its ``Content-Length`` is given only when a kept copy is known."""
    settings = runtime.settings.presentation
    presentation = runtime.presentation
    record = await presentation.record(name)
    if len(record.canvases) > settings.pdf_max_pages:
        raise PayloadTooLarge(
            f"object {name[:100]!r} has {len(record.canvases)} pages, more than this server puts "
            f"in one PDF ({settings.pdf_max_pages}: presentation.pdf_max_pages)"
        )
    policies = presentation.pdf_policies(record)
    if policies and not access.allowed(request, runtime, policies):  # before any kept copy
        return access.refused_pdf(request, runtime, name, policies)
    ascii_name = "".join(c if c.isascii() and (c.isalnum() or c in "-_") else "_" for c in name)
    filename = ascii_name[:80] or "object"
    ttl = int(settings.record_ttl)
    headers = {
        "Content-Type": "application/pdf",
        "Content-Disposition": f'inline; filename="{filename}.pdf"; '
        f"filename*=UTF-8''{quote(name[:200], safe='')}.pdf",
        "Cache-Control": f"public, max-age={ttl}" if ttl else "no-store",
    }
    if policies:
        access.private(headers)
    if request.method == "HEAD":  # sent here, before the middleware could add the request id
        response = web.StreamResponse(headers={**headers, tracing.HEADER: request[REQUEST_ID]})
        size = await presentation.pdfs.known_size(record)
        if size is not None:
            response.content_length = size
        await response.prepare(request)
        return response
    await presentation.pdfs.admit(record)  # a full line: 503 before any facts are read

    async def made_for_this_request() -> PdfFile:
        return await presentation.pdfs.make(await presentation.pdf_plan(record))

    made = await _unless_gone(request, made_for_this_request(), _discard)
    if made is None:
        return web.Response(status=CLIENT_GONE, text="the client left\n")
    try:
        if made.kept:  # ranges and validators of the kept copy (the link shares its times)
            return _TemporaryFile(made.path, headers=headers)
        return _WholeFile(made.path, made.size, headers)
    except BaseException:
        _remove(str(made.path))
        raise


async def _unless_gone(
    request: web.Request, work: Coroutine[Any, Any, T], discard: Callable[[T], None]
) -> T | None:
    """``work``'s result, or None as soon as the client's connection is gone (``work`` is then
    cancelled, as it is when the request's deadline passes). A result that comes but is not
    returned (the deadline passed in the same turn) goes to ``discard``."""
    task = asyncio.ensure_future(work)
    returned = False
    try:
        while True:
            done, _ = await asyncio.wait({task}, timeout=CLIENT_POLL)
            if done:
                returned = True
                return task.result()
            if request.transport is None or request.transport.is_closing():
                return None
    finally:
        if not task.done():
            task.cancel()
            await asyncio.wait({task})  # its clean-up (a cancellation of ours still stops us)
        if not returned and not task.cancelled() and task.exception() is None:
            discard(task.result())


def _discard(made: PdfFile) -> None:
    _remove(str(made.path))


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


class _WholeFile(web.StreamResponse):
    """A file sent whole, without ranges or validators (each range of a PDF that is not kept
    would make the whole PDF again), and removed as soon as it is open."""

    def __init__(self, path: Path, size: int, headers: dict[str, str]) -> None:
        super().__init__(headers=headers)
        self.content_length = size
        self._file = path

    async def prepare(self, request: web.BaseRequest) -> AbstractStreamWriter | None:
        try:
            source = await asyncio.to_thread(self._file.open, "rb")
        finally:
            _remove(str(self._file))  # (the open file is read to its end all the same)
        try:
            writer = await super().prepare(request)
            while chunk := await asyncio.to_thread(source.read, _CHUNK):
                await self.write(chunk)
            return writer
        finally:
            source.close()


async def object_request(request: web.Request, rest: str) -> web.Response:
    """``/objects/{object}``: the object's HTML page."""
    with in_lane(Lane.DOCUMENTS):
        return await _object_page(request, rest)


async def _object_page(request: web.Request, rest: str) -> web.Response:
    runtime = runtime_of(request)
    observed(request).endpoint = "object"
    if not runtime.presentation.enabled or not rest or "/" in rest:
        raise NotFound("no such object")
    name = _name(rest, "object")
    record = await runtime.presentation.record(name)
    pdf_policies = runtime.presentation.pdf_policies(record)
    pictures = await runtime.presentation.pictures(record)
    settings = runtime.settings
    page = object_page(
        record,
        pictures,
        builder_of(request, runtime),
        settings.viewers,
        settings.landing.title,
        pdf_policies,
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
