"""Thin handlers of Content Search (2.0 and 1.0, with autocomplete) and of the text of objects.

URL layout under the IIIF prefix (each object name one percent-encoded segment; canvases
1-based):

- ``search/{2|1}/{object}[/manifest2]`` and ``.../autocomplete``: a search of the object's
  text (``q``, ``motivation``, ``date``, ``user``, ``page``) and the completion of a term
  (``q`` required, ``min``). Without ``manifest2`` the hits target the canvases of the 3.0
  manifest, with it those of the 2.1 manifest (each manifest names its own).
- ``text/{object}/plain``: the whole text, ``text/plain`` (pages separated by a line holding
  a form feed alone: ``search.documents.plain_text``).
- ``text/{object}/{n}/ocr``: canvas ``n``'s text file as its source has it, sent with its
  format's type (hOCR never as HTML). Its ETag is weak (the same gzipped or not) and made of
  its version (``SearchService.ocr_version``): a request that names it is answered 304 from
  what the index knows, without reading the file. The file is read and sent holding one of
  the service's OCR slots (``ocr_reads``: a few per process, then 503 with ``Retry-After``),
  each within ``server.request_timeout`` once its headers are out; one larger than
  OCR_GZIP_MAX is sent as it is, never gzipped.
- Both, and every error of these URLs (``web/middleware.text_response``), carry
  ``X-Content-Type-Options: nosniff``, and the texts ``Content-Security-Policy: sandbox;
  default-src 'none'`` (an OCR file is not the shim's: a browser opening it must not run or
  load anything from it).
- ``text/{object}/{n}/{3|2}``: canvas ``n``'s lines as a 3.0 AnnotationPage
  (``supplementing``) or a 2.1 AnnotationList (``sc:painting``, the only 2.1 motivation for
  text on a canvas); what the canvases of the manifests reference.

The query string is read once, strictly (percent-encoding that is not UTF-8, a ``page`` or
``min`` that is not a whole number: 400 naming the parameter); ``q`` goes to
``search.words.parse_query`` (its limits: 400), never to an engine as written. An object
without text is a 404 on each of these URLs. Access: an object's text and search need what
its PDF needs (``PresentationService.pdf_policies``): else 401 (``no-store``), decided before
the index is touched; the answers to a caller with access are ``private`` (``web/access.py``).
Every document is sent as manifests are (``web/presentation.document_answer``: ETag and 304,
gzip, ``Vary``, HEAD, CORS by the middleware); 2.0 answers are JSON-LD with the search/2
profile unless only JSON is asked for, 1.0 answers plain JSON unless JSON-LD is.
"""

from __future__ import annotations

import asyncio
import hashlib
import re
from collections.abc import Sequence
from urllib.parse import parse_qsl

from aiohttp import web

from iiif_shim.base.errors import BadRequest, NotFound
from iiif_shim.base.lanes import Lane, in_lane
from iiif_shim.iiif.profile import Version
from iiif_shim.model.text import Query, TextFormat
from iiif_shim.presentation.records import ObjectRecord
from iiif_shim.search import documents
from iiif_shim.search.documents import Asked
from iiif_shim.search.index import StoredPage
from iiif_shim.search.match import HitPage
from iiif_shim.search.ocr import sniff
from iiif_shim.search.words import MAX_QUERY, BadQuery, parse_query
from iiif_shim.telemetry import tracing
from iiif_shim.web import access
from iiif_shim.web.middleware import headers_sent
from iiif_shim.web.presentation import (
    CLIENT_GONE,
    MAX_NAME_SEGMENT,
    _unless_gone,
    document_answer,
    document_digest,
    document_headers,
    json_answer,
    urls_of,
)
from iiif_shim.web.presentation import media_type as presentation_media
from iiif_shim.web.protocol import accepts_gzip, decode_segment, negotiated, not_modified
from iiif_shim.web.runtime import Runtime
from iiif_shim.web.state import REQUEST_ID, observed, runtime_of

MAX_QUERY_STRING = 16 * 1024  # characters of a query string (q itself: words.MAX_QUERY)
MAX_FIELDS = 32  # parameters in one query string
MAX_PARAMETER = 1000  # characters of motivation, date or user
MANIFEST_2 = "manifest2"  # the path segment of the services a 2.1 manifest names
_NUMBER = re.compile(r"[0-9]{1,9}")
_CANVAS = re.compile(r"[1-9][0-9]{0,8}")
OCR_HEADERS = {
    "X-Content-Type-Options": "nosniff",
    "Content-Security-Policy": "sandbox; default-src 'none'",
}
# OCR files larger than this are sent as they are: gzip makes about 74 MB/s of ALTO on one CPU
# here (0.11 s for 8 MB), and a newspaper page of 80,000 words is about 8 MB of ALTO
OCR_GZIP_MAX = 8 * 1024 * 1024


def search_media(api: str, accept: str | None) -> str:
    """2.0: JSON-LD with the search/2 profile unless only plain JSON is asked for; 1.0: plain
    JSON unless JSON-LD is."""
    context = documents.SEARCH_2 if api == "2" else documents.SEARCH_1
    return negotiated(accept, f'application/ld+json;profile="{context}"', api == "2")


def _name(segment: str) -> str:
    if not segment or len(segment) > MAX_NAME_SEGMENT:
        raise NotFound("no such object")
    return decode_segment(segment, "object")


def _parameters(request: web.Request) -> dict[str, str]:
    """The query string's parameters (the first value of each), decoded strictly."""
    raw = request.rel_url.raw_query_string
    if len(raw) > MAX_QUERY_STRING:
        raise BadRequest(f"the query string is longer than {MAX_QUERY_STRING} characters")
    try:
        pairs = parse_qsl(
            raw,
            keep_blank_values=True,
            encoding="utf-8",
            errors="strict",
            max_num_fields=MAX_FIELDS,
        )
    except UnicodeDecodeError:
        raise BadRequest("the query string's percent-encoding is not valid UTF-8") from None
    except ValueError:
        raise BadRequest(f"more than {MAX_FIELDS} parameters in the query string") from None
    found: dict[str, str] = {}
    for key, value in pairs:
        found.setdefault(key, value)
    return found


def _number(value: str | None, parameter: str, least: int) -> int | None:
    if value is None:
        return None
    if not _NUMBER.fullmatch(value) or int(value) < least:
        words = "a positive whole number" if least else "a whole number (0 or more)"
        raise BadRequest(f"must be {words}, not {value[:40]!r}", parameter=parameter)
    return int(value)


def asked_of(request: web.Request, *, autocomplete: bool) -> Asked:
    """What a search (or autocomplete) request asks (see the module's text)."""
    given = _parameters(request)
    for key in ("motivation", "date", "user"):
        if len(given.get(key, "")) > MAX_PARAMETER:
            raise BadRequest(f"is longer than {MAX_PARAMETER} characters", parameter=key)
    q = given.get("q")
    if q is not None and len(q) > MAX_QUERY:
        raise BadQuery(f"is longer than {MAX_QUERY} characters")
    if autocomplete and not (q or "").strip():
        raise BadRequest(
            "is required: the beginning of the words to complete (autocomplete?q=bir)",
            parameter="q",
        )
    page = 1 if autocomplete else _number(given.get("page"), "page", 1) or 1
    least = _number(given.get("min"), "min", 0) if autocomplete else None
    return Asked(
        q=q,
        motivation=given.get("motivation", "").strip() or None,
        page=page,
        min=least,
        ignored=tuple(key for key in documents.UNUSED if given.get(key, "").strip()),
    )


async def _record(
    request: web.Request, runtime: Runtime, name: str
) -> tuple[ObjectRecord, bool] | web.Response:
    """The object's record and whether it is restricted, or the 401 of a caller without
    access to its text (decided before any index work)."""
    record = await runtime.search.record(name)
    policies = runtime.search.policies(record)
    if policies and not access.allowed(request, runtime, policies):
        return access.refused_text(request, runtime, name, policies)
    return record, bool(policies)


async def search_request(request: web.Request, rest: str) -> web.StreamResponse:
    """``rest``: the raw path after ``{prefix}/search/``."""
    with in_lane(Lane.DOCUMENTS):
        return await _search(request, rest)


async def _search(request: web.Request, rest: str) -> web.StreamResponse:
    runtime = runtime_of(request)
    seen = observed(request)
    seen.endpoint = "search"
    segments = rest.split("/")
    api = segments[0]
    tail = segments[2:]
    manifest = "3"
    if tail[:1] == [MANIFEST_2]:
        manifest, tail = "2", tail[1:]
    if api not in ("1", "2") or len(segments) < 2 or tail not in ([], ["autocomplete"]):
        raise NotFound(
            "not a search URL: expected search/{2|1}/{object}[/manifest2][/autocomplete]"
        )
    seen.version = api
    autocomplete = tail == ["autocomplete"]
    if autocomplete:
        seen.endpoint = "autocomplete"
    name = _name(segments[1])
    asked = asked_of(request, autocomplete=autocomplete)
    query = Query() if autocomplete else parse_query(asked.q or "")
    found = await _record(request, runtime, name)
    if isinstance(found, web.Response):
        return found
    (record, restricted), service = found, runtime.search
    urls = urls_of(request, runtime)
    if autocomplete:
        least = max(asked.min or 1, 1)
        terms = await service.terms(record, asked.q or "", least) if asked.text_matches else []
        write = documents.term_page if api == "2" else documents.term_list
        doc = write(urls, name, manifest, asked, terms)
    else:
        size = runtime.settings.search.page_size
        start, stop = documents.hit_range(asked.page, size)
        if asked.text_matches:  # (its counting stopped as soon as the client has gone)
            counted = await _unless_gone(
                request, service.results(record, query, start, stop), _no_discard
            )
            if counted is None:
                return web.Response(status=CLIENT_GONE, text="the client left\n")
            shown = counted
        else:
            shown = HitPage(start=start)
        documents.check_page(shown.total, asked.page, size)  # past the last page: 404
        spanning = documents.spanning_canvases(shown.hits)
        pages = (
            {p.canvas: p.page for p in await service.pages(record, spanning)} if spanning else {}
        )
        build = documents.annotation_page if api == "2" else documents.annotation_list
        doc = build(urls, name, manifest, asked, shown, size, pages)
    media = search_media(api, request.headers.get("Accept"))
    return await json_answer(request, runtime, doc, media, restricted=restricted)


async def text_request(request: web.Request, rest: str) -> web.StreamResponse:
    """``rest``: the raw path after ``{prefix}/text/``."""
    with in_lane(Lane.DOCUMENTS):
        return await _text(request, rest)


async def _text(request: web.Request, rest: str) -> web.StreamResponse:
    runtime = runtime_of(request)
    seen = observed(request)
    seen.endpoint = "text"
    segments = rest.split("/")
    plain = segments[1:] == ["plain"]
    if not plain and (
        len(segments) != 3
        or not _CANVAS.fullmatch(segments[1])
        or segments[2] not in ("ocr", "3", "2")
    ):
        raise NotFound(
            "not a text URL: expected text/{object}/plain or text/{object}/{n}/{ocr|3|2}"
        )
    name = _name(segments[0])
    found = await _record(request, runtime, name)
    if isinstance(found, web.Response):
        return found
    (record, restricted), service = found, runtime.search
    if plain:
        pages = await service.pages(record)
        media = TextFormat.PLAIN.media_type
        body, digest = await runtime.service.workers.run(
            _plain_text, pages, len(record.canvases), media
        )
        return document_answer(
            request, runtime, body, media, digest, restricted=restricted,
            headers=dict(OCR_HEADERS),
        )  # fmt: skip
    canvas = int(segments[1]) - 1
    if canvas >= len(record.canvases) or record.canvases[canvas].text is None:
        raise NotFound(f"canvas {canvas + 1} of object {name[:100]!r} has no text")
    kind = segments[2]
    if kind == "ocr":
        seen.endpoint = "ocr"
        return await _ocr(request, runtime, record, canvas, restricted)
    seen.version = kind
    stored = await service.pages(record, [canvas])
    page = stored[0].page if stored else None
    doc = documents.canvas_page(urls_of(request, runtime), name, kind, canvas, page)
    media = presentation_media(Version(kind), request.headers.get("Accept"))
    return await json_answer(request, runtime, doc, media, restricted=restricted)


async def _ocr(
    request: web.Request, runtime: Runtime, record: ObjectRecord, canvas: int, restricted: bool
) -> web.StreamResponse:
    """Canvas ``canvas``'s OCR file (see the module's text): 304 from its version when the
    request names it, else read and sent whole holding an OCR slot."""
    service = runtime.search
    version = await service.ocr_version(record, canvas)
    if version is not None and not_modified(request, _ocr_tag(version), None):
        return web.Response(status=304, headers=_ocr_headers(runtime, version, restricted))
    async with service.ocr_reads.held():
        file = await service.ocr(record, canvas)
        version = await service.ocr_version(record, canvas, file)
        assert version is not None  # (the canvas has text: it has a key)
        headers = _ocr_headers(runtime, version, restricted)
        if not_modified(request, _ocr_tag(version), None):
            return web.Response(status=304, headers=headers)
        headers["Content-Type"] = _ocr_media(
            file.format or _format(record, canvas) or sniff(file.data), file.data
        )
        headers[tracing.HEADER] = request[REQUEST_ID]  # (sent here, before the middleware)
        response = web.Response(body=file.data, headers=headers)
        if accepts_gzip(request) and len(file.data) <= OCR_GZIP_MAX:
            response.enable_compression()  # (aiohttp does it off the loop past 1 MB)
        del file
        await response.prepare(request)
        headers_sent(request)  # the body's time is bounded here
        try:
            async with asyncio.timeout(service.timeout):
                await response.write_eof()
        except (TimeoutError, ConnectionError):  # a client too slow, or gone: cut off
            if request.transport is not None:
                request.transport.close()
        return response


def _no_discard(shown: HitPage) -> None:
    """(A page of hits made for a client that has gone holds nothing to clean up.)"""


def _ocr_tag(version: str) -> str:
    """The ETag of an OCR file of ``version`` (compared as it is, sent weak)."""
    return '"' + hashlib.sha256(version.encode()).hexdigest()[:32] + '"'


def _ocr_headers(runtime: Runtime, version: str, restricted: bool) -> dict[str, str]:
    return document_headers(
        runtime, "W/" + _ocr_tag(version), restricted=restricted, headers=dict(OCR_HEADERS)
    )


def _plain_text(pages: Sequence[StoredPage], canvases: int, media: str) -> tuple[bytes, str]:
    body = documents.plain_text(pages, canvases).encode()
    return body, document_digest(body, media)


def _ocr_media(fmt: TextFormat | None, data: bytes) -> str:
    """The type an OCR file is sent with: its format's, UTF-16 plain text as such, XML of
    another kind (not read, but the institution's file all the same) as XML."""
    if fmt is None:
        return "application/xml"
    if fmt is TextFormat.PLAIN and data[:2] in (b"\xff\xfe", b"\xfe\xff"):
        return "text/plain; charset=utf-16"
    return fmt.media_type


def _format(record: ObjectRecord, canvas: int) -> TextFormat | None:
    ref = record.canvases[canvas].text
    try:
        return TextFormat(ref.format) if ref is not None and ref.format else None
    except ValueError:
        return None
