"""The documents of Content Search and of the text of canvases, 2.0 and 1.0, as plain data.

Pure: the public URLs (``presentation.documents.Urls``), what was asked (:class:`Asked`), the
hits (``model.text.Hit``) or terms, and the paging facts go in; a JSON-ready dict comes out.
The shapes are those of the specifications' examples (IIIF Content Search 2.0 and 1.0):

- Search 2.0 (:func:`annotation_page`): an ``AnnotationPage`` whose ``items`` are one
  ``painting`` annotation per line of a hit (a ``TextualBody`` of the matched words on that
  line, targeting ``canvas#xywh=``, or the whole canvas for plain text), paged: ``partOf`` an
  ``AnnotationCollection`` (``total`` annotations, ``first``, ``last``), ``next``, ``prev``,
  ``startIndex``; ``ignored`` names the parameters given but not used (``date``, ``user``); the
  extended ``annotations``: one page of ``contextualizing`` annotations, one per hit, with a
  ``TextQuoteSelector`` (prefix, exact, suffix) on each of its items.
- Search 1.0 (:func:`annotation_list`): an ``sc:AnnotationList`` of the same annotations in
  2.x form (``resources``, ``sc:painting``, ``cnt:ContentAsText``, ``on``) with ``hits``
  (``search:Hit``: the ids of its annotations, ``match``, ``before``, ``after``: what Mirador
  and UV list), ``within`` an ``sc:Layer`` (``total`` hits, ``first``, ``last``, ``ignored``),
  ``next``, ``prev``, ``startIndex``.
- Autocomplete: a 2.0 ``TermPage`` (:func:`term_page`), a 1.0 ``search:TermList``
  (:func:`term_list`).
- The text of one canvas (:func:`canvas_page`): a 3.0 ``AnnotationPage`` of ``supplementing``
  annotations, one per line, or the same as a 2.1 ``sc:AnnotationList``; and the whole text of
  an object as plain text (:func:`plain_text`).

Paging is by hits: page ``N`` (1-based) holds hits ``(N-1)*size`` to ``N*size - 1``
(:func:`hit_range`; the search service makes only those, and counts the rest: a
``match.HitPage``; a list of every hit is cut here, :func:`shown`). The first
page of 1.0 results is the URL without ``page`` (what Mirador and UV ask for first); 2.0 pages
are ``page=N`` from 1 on, the URL without ``page`` being the collection they are part of, as in
the 2.0 examples. A page past the last is :class:`NotFound`, except page 1 of no hits (an empty
page).

Ids: the annotations of words are http URIs under the canvas's text
(``{iiif}/text/{object}/{n}/{manifest}/line/{l}`` for a line, ``.../line/{l}/words/{a}-{b}``
for words ``a`` to ``b`` of it, all 1-based), the same for the same words whatever the query,
so a viewer can tell that two searches found the same words. A search answers with the canvases
of one manifest (``manifest``: ``"3"``, or ``"2"`` for the service a 2.1 manifest names: canvas
ids differ between them, and viewers find a hit's canvas by its id)."""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from typing import Any
from urllib.parse import quote, urlencode

from iiif_shim.base.errors import NotFound
from iiif_shim.model.text import Box, Hit, PageText
from iiif_shim.presentation.documents import Urls
from iiif_shim.search.index import StoredPage
from iiif_shim.search.match import HitPage, line_box

SEARCH_2 = "http://iiif.io/api/search/2/context.json"
SEARCH_1 = "http://iiif.io/api/search/1/context.json"
PRESENTATION_3 = "http://iiif.io/api/presentation/3/context.json"
PRESENTATION_2 = "http://iiif.io/api/presentation/2/context.json"
SEARCH_PROFILE_1 = "http://iiif.io/api/search/1/search"
AUTOCOMPLETE_PROFILE_1 = "http://iiif.io/api/search/1/autocomplete"
# the motivation of the annotations a search answers with (2.0 and 1.0 examples: painting)
MOTIVATION = "painting"
UNUSED = ("date", "user")  # parameters of the specifications this server does not implement
PAGE_SEPARATOR = "\n\f\n"  # between the pages of an object's plain text


@dataclass(frozen=True)
class Asked:
    """What a search or autocomplete request asked, as read from its query string: ``q`` as
    given (None: absent), ``motivation`` (None: absent or empty), ``min`` (autocomplete), the
    page (1-based), and ``ignored``: the parameters given a value that this server does not
    use (``date``, ``user``), in that order."""

    q: str | None = None
    motivation: str | None = None
    page: int = 1
    min: int | None = None
    ignored: tuple[str, ...] = ()

    @property
    def motivations(self) -> tuple[str, ...]:
        """The motivations asked for, ``sc:``/``oa:`` prefixes dropped (1.0 allows both)."""
        if self.motivation is None:
            return ()
        return tuple(
            m.split(":", 1)[1] if m[:3] in ("sc:", "oa:") else m for m in self.motivation.split()
        )

    @property
    def text_matches(self) -> bool:
        """Whether the text's annotations (``painting``) have a motivation asked for (no
        motivation asked: every one has)."""
        return not self.motivations or MOTIVATION in self.motivations


# --- URLs and paging ---------------------------------------------------------------------------


def _query(pairs: Sequence[tuple[str, str | int | None]]) -> str:
    given = [(k, str(v)) for k, v in pairs if v is not None]
    return "?" + urlencode(given, quote_via=quote, safe="") if given else ""


def search_url(
    urls: Urls, api: str, name: str, manifest: str, asked: Asked, page: int | None = None
) -> str:
    """The URL of page ``page`` (None: no ``page``) of the results ``asked`` for (its ``q``
    and ``motivation``; ignored parameters left out, as the specifications allow)."""
    pairs = [("q", asked.q), ("motivation", asked.motivation), ("page", page)]
    return urls.search(api, name, manifest) + _query(pairs)


def autocomplete_url(urls: Urls, api: str, name: str, manifest: str, asked: Asked) -> str:
    pairs = [("q", asked.q), ("motivation", asked.motivation), ("min", asked.min)]
    return urls.autocomplete(api, name, manifest) + _query(pairs)


def last_page(hits: int, size: int) -> int:
    """The number of the last page of ``hits`` results (1 when there are none)."""
    return max(1, -(-hits // size))


def hit_range(page: int, size: int) -> tuple[int, int]:
    """The numbers (0-based; the second excluded) of the hits on page ``page``."""
    return (page - 1) * size, page * size


def check_page(total: int, page: int, size: int) -> None:
    """:class:`NotFound` when page ``page`` is past the last page of ``total`` hits."""
    last = last_page(total, size)
    if page > last:
        raise NotFound(
            f"page {page} is past the last page of these results ({last}: "
            f"{total} hit{'' if total == 1 else 's'}, {size} a page)"
        )


def page_of(hits: Sequence[Hit], page: int, size: int) -> Sequence[Hit]:
    """The hits of page ``page``; :class:`NotFound` past the last page."""
    check_page(len(hits), page, size)
    start, stop = hit_range(page, size)
    return hits[start:stop]


def shown(hits: Sequence[Hit] | HitPage, page: int, size: int) -> HitPage:
    """Page ``page`` of results: as the search service gave it (a :class:`HitPage`), or cut
    from every hit; :class:`NotFound` past the last page."""
    if isinstance(hits, HitPage):
        check_page(hits.total, page, size)
        return hits
    start, _ = hit_range(page, size)
    return HitPage(
        tuple(page_of(hits, page, size)),
        start,
        len(hits),
        sum(len(hit.spans) for hit in hits),
        sum(len(hit.spans) for hit in hits[:start]),
    )


def spanning_canvases(hits: Sequence[Hit]) -> list[int]:
    """The canvases whose pages :func:`annotation_page` and :func:`annotation_list` need for
    ``hits`` (those with a hit over more than one line: the words of each line are read from
    the page), in canvas order."""
    return sorted({hit.canvas for hit in hits if len(hit.spans) > 1})


# --- the annotations of words ------------------------------------------------------------------


def target(canvas: str, box: Box | tuple[float, float, float, float] | None) -> str:
    """The canvas, or the region ``box`` of it (``#xywh=``)."""
    if box is None:
        return canvas
    x, y, w, h = (int(v) for v in box)
    return f"{canvas}#xywh={x},{y},{w},{h}"


@dataclass(frozen=True)
class _Words:
    """One line of a hit as an annotation: its id, its text and what it targets."""

    id: str
    text: str
    target: str


class _Writer:
    """The ids and targets of one object's annotations on the canvases of one manifest."""

    def __init__(self, urls: Urls, name: str, manifest: str) -> None:
        self.urls, self.name, self.manifest = urls, name, manifest
        self._canvases: dict[int, tuple[str, str]] = {}

    def _bases(self, canvas: int) -> tuple[str, str]:
        found = self._canvases.get(canvas)
        if found is None:
            found = (
                self.urls.canvas(self.manifest, self.name, canvas),
                self.urls.canvas_text(self.manifest, self.name, canvas),
            )
            self._canvases[canvas] = found
        return found

    def canvas(self, canvas: int) -> str:
        return self._bases(canvas)[0]

    def line_id(self, canvas: int, line: int) -> str:
        return f"{self._bases(canvas)[1]}/line/{line + 1}"

    def hit_id(self, hit: Hit) -> str:
        parts = "_".join(f"{s.line + 1}.{s.first + 1}-{s.last + 1}" for s in hit.spans)
        return f"{self._bases(hit.canvas)[1]}/hit/{parts}"

    def words(self, hit: Hit, pages: Mapping[int, PageText]) -> list[_Words]:
        """One :class:`_Words` per line of ``hit``."""
        canvas = self.canvas(hit.canvas)
        page = pages.get(hit.canvas)
        found = []
        for span in hit.spans:
            text = ""
            if len(hit.spans) > 1 and page is not None and span.line < len(page.lines):
                chosen = page.lines[span.line].words[span.first : span.last + 1]
                text = " ".join(w.text for w in chosen if w.text)
            # one line; or the second part of a hyphenated word alone (no text of its own);
            # or the page gone since the hits were found: the whole match
            text = text or hit.match
            found.append(
                _Words(
                    f"{self.line_id(hit.canvas, span.line)}/words/{span.first + 1}-{span.last + 1}",
                    text,
                    target(canvas, span.box),
                )
            )
        return found


# --- Search 2.0 --------------------------------------------------------------------------------


def _ref(url: str, kind: str = "AnnotationPage") -> dict[str, str]:
    return {"id": url, "type": kind}


def annotation_page(
    urls: Urls,
    name: str,
    manifest: str,
    asked: Asked,
    hits: Sequence[Hit] | HitPage,
    size: int,
    pages: Mapping[int, PageText],
) -> dict[str, Any]:
    """Page ``asked.page`` of ``hits`` (every hit, or the page of them the search service
    gave) as a Search 2.0 AnnotationPage (see the module's text); ``pages``: the pages of
    :func:`spanning_canvases` of the page's hits."""
    found = shown(hits, asked.page, size)
    last = last_page(found.total, size)
    writer = _Writer(urls, name, manifest)

    def url(page: int | None) -> str:
        return search_url(urls, "2", name, manifest, asked, page)

    items: dict[str, dict[str, Any]] = {}
    context: list[dict[str, Any]] = []
    for hit in found.hits:
        lines = writer.words(hit, pages)
        for words in lines:
            items.setdefault(
                words.id,
                {
                    "id": words.id,
                    "type": "Annotation",
                    "motivation": MOTIVATION,
                    "body": {"type": "TextualBody", "value": words.text, "format": "text/plain"},
                    "target": words.target,
                },
            )
        selected = [_selected(words, hit, i, len(lines)) for i, words in enumerate(lines)]
        context.append(
            {
                "id": writer.hit_id(hit),
                "type": "Annotation",
                "motivation": "contextualizing",
                "target": selected[0] if len(selected) == 1 else selected,
            }
        )
    doc: dict[str, Any] = {
        "@context": SEARCH_2,
        "id": url(asked.page),
        "type": "AnnotationPage",
    }
    if asked.ignored:
        doc["ignored"] = list(asked.ignored)
    # total and startIndex count annotations: one a line of each hit (the same words found
    # twice on one page are listed once)
    doc["partOf"] = {
        "id": url(None),
        "type": "AnnotationCollection",
        "total": found.annotations,
        "first": _ref(url(1)),
        "last": _ref(url(last)),
    }
    if asked.page < last:
        doc["next"] = _ref(url(asked.page + 1))
    if asked.page > 1:
        doc["prev"] = _ref(url(asked.page - 1))
    doc["startIndex"] = found.annotations_before
    doc["items"] = list(items.values())
    if context:
        doc["annotations"] = [{"type": "AnnotationPage", "items": context}]
    return doc


def _selected(words: _Words, hit: Hit, index: int, count: int) -> dict[str, Any]:
    """A TextQuoteSelector on the annotation of one line of ``hit``: the text before the hit
    on the first line, after it on the last."""
    selector: dict[str, str] = {"type": "TextQuoteSelector"}
    if index == 0 and hit.before:
        selector["prefix"] = hit.before
    selector["exact"] = words.text
    if index == count - 1 and hit.after:
        selector["suffix"] = hit.after
    return {"type": "SpecificResource", "source": words.id, "selector": [selector]}


def term_page(
    urls: Urls, name: str, manifest: str, asked: Asked, terms: Sequence[tuple[str, int]]
) -> dict[str, Any]:
    """An Autocomplete 2.0 TermPage: each term as the object's text writes it most often
    (``Zürich``: usable as ``q``, which is folded) with its number of occurrences."""
    doc: dict[str, Any] = {
        "@context": SEARCH_2,
        "id": autocomplete_url(urls, "2", name, manifest, asked),
        "type": "TermPage",
    }
    if asked.ignored:
        doc["ignored"] = list(asked.ignored)
    doc["items"] = [{"value": term, "total": count} for term, count in terms]
    return doc


# --- Search 1.0 --------------------------------------------------------------------------------


def annotation_list(
    urls: Urls,
    name: str,
    manifest: str,
    asked: Asked,
    hits: Sequence[Hit] | HitPage,
    size: int,
    pages: Mapping[int, PageText],
) -> dict[str, Any]:
    """Page ``asked.page`` of ``hits`` (as for :func:`annotation_page`) as a Search 1.0
    ``sc:AnnotationList`` with ``hits`` (see the module's text); ``pages`` as for
    :func:`annotation_page`."""
    found = shown(hits, asked.page, size)
    last = last_page(found.total, size)
    writer = _Writer(urls, name, manifest)

    def url(page: int) -> str:  # the first page: without page
        return search_url(urls, "1", name, manifest, asked, page if page > 1 else None)

    resources: dict[str, dict[str, Any]] = {}
    found_hits: list[dict[str, Any]] = []
    for hit in found.hits:
        lines = writer.words(hit, pages)
        for words in lines:
            resources.setdefault(
                words.id,
                {
                    "@id": words.id,
                    "@type": "oa:Annotation",
                    "motivation": f"sc:{MOTIVATION}",
                    "resource": {"@type": "cnt:ContentAsText", "chars": words.text},
                    "on": words.target,
                },
            )
        found_hits.append(
            {
                "@type": "search:Hit",
                "annotations": [words.id for words in lines],
                "match": hit.match,
                "before": hit.before,
                "after": hit.after,
            }
        )
    within: dict[str, Any] = {
        "@type": "sc:Layer",
        "total": found.total,
        "first": url(1),
        "last": url(last),
    }
    if asked.ignored:
        within["ignored"] = list(asked.ignored)
    doc: dict[str, Any] = {
        "@context": [PRESENTATION_2, SEARCH_1],
        "@id": url(asked.page),
        "@type": "sc:AnnotationList",
        "within": within,
    }
    if asked.page < last:
        doc["next"] = url(asked.page + 1)
    if asked.page > 1:
        doc["prev"] = url(asked.page - 1)
    doc["startIndex"] = found.start
    doc["resources"] = list(resources.values())
    doc["hits"] = found_hits
    return doc


def term_list(
    urls: Urls, name: str, manifest: str, asked: Asked, terms: Sequence[tuple[str, int]]
) -> dict[str, Any]:
    """An Autocomplete 1.0 ``search:TermList``: each term as written most often (see
    :func:`term_page`) with the URL of its search."""
    doc: dict[str, Any] = {
        "@context": SEARCH_1,
        "@id": autocomplete_url(urls, "1", name, manifest, asked),
        "@type": "search:TermList",
    }
    if asked.ignored:
        doc["ignored"] = list(asked.ignored)
    doc["terms"] = [
        {
            "match": term,
            "url": search_url(urls, "1", name, manifest, Asked(term, asked.motivation)),
            "count": count,
        }
        for term, count in terms
    ]
    return doc


# --- the text of canvases ----------------------------------------------------------------------


def canvas_page(
    urls: Urls, name: str, version: str, canvas: int, page: PageText | None
) -> dict[str, Any]:
    """The lines of canvas ``canvas`` (0-based) as annotations of the manifest ``version``'s
    canvas: a 3.0 AnnotationPage of ``supplementing`` TextualBody annotations (``"3"``) or a
    2.1 ``sc:AnnotationList`` (``"2"``), each targeting the line's box (plain text: the
    whole canvas). ``page`` None (a text file that could not be read): no annotations."""
    writer = _Writer(urls, name, version)
    canvas_id = writer.canvas(canvas)
    lines = [] if page is None else [(i, ln) for i, ln in enumerate(page.lines) if ln.text]
    page_id = urls.canvas_text(version, name, canvas)
    if version == "3":
        return {
            "@context": PRESENTATION_3,
            "id": page_id,
            "type": "AnnotationPage",
            "items": [
                {
                    "id": writer.line_id(canvas, i),
                    "type": "Annotation",
                    "motivation": "supplementing",
                    "body": {"type": "TextualBody", "value": line.text, "format": "text/plain"},
                    "target": target(canvas_id, line_box(line)),
                }
                for i, line in lines
            ],
        }
    return {
        "@context": PRESENTATION_2,
        "@id": page_id,
        "@type": "sc:AnnotationList",
        "resources": [
            {
                "@id": writer.line_id(canvas, i),
                "@type": "oa:Annotation",
                "motivation": "sc:painting",
                "resource": {
                    "@type": "cnt:ContentAsText",
                    "format": "text/plain",
                    "chars": line.text,
                },
                "on": target(canvas_id, line_box(line)),
            }
            for i, line in lines
        ],
    }


def plain_text(pages: Sequence[StoredPage], canvases: int) -> str:
    """The text of an object's ``canvases`` canvases, one page after the other, each line of a
    page on a line of its own; between two pages a line holding a form feed alone (so the
    N-th part is canvas N's text, empty for a canvas without text)."""
    by_canvas = {stored.canvas: stored.page for stored in pages}
    texts = []
    for canvas in range(canvases):
        page = by_canvas.get(canvas)
        texts.append("" if page is None else page.text)
    return PAGE_SEPARATOR.join(texts) + "\n"
