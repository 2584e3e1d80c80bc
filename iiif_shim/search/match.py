"""Finding the hits of a query on stored pages: which words of which lines match, their boxes
on the canvas, and the text around them. Pure: the index has named the pages that may match
(``Index.matching``); this re-checks each and finds every occurrence on it.

A page counts only if it holds every word, phrase and prefix of the query (terms compared
folded, ``words.terms``). On such a page each occurrence of a query word, of a phrase
(consecutive terms, across a line break too) and of a term beginning with a prefix is a
:class:`~iiif_shim.model.text.Hit`; occurrences covering the same words are one hit. A hit has
one :class:`~iiif_shim.model.text.Span` per line it covers, whose box is the union of its
words' boxes (None for plain text: the whole canvas); a hit on a word hyphenated over a line
break (``ocr.py``: the second part is a word of empty text) also covers the second part, on
the next line. The empty query makes each line (with text) a hit. ``before`` and ``after`` are
up to ``context`` characters of the page's text around the match, whole words only, with the
space that separates them from it (``before + match + after`` reads as the text, a line break
read as a space, as the Search API's examples do); ``match`` is the matched words as written.
Hits come in canvas order, then reading order."""

from __future__ import annotations

import math
from collections.abc import Iterable, Sequence

from iiif_shim.model.text import Box, Hit, Line, PageText, Query, Span
from iiif_shim.search.index import StoredPage
from iiif_shim.search.words import word_terms

CONTEXT = 60  # characters of text before and after a hit, at most


def union(boxes: Iterable[tuple[float, float, float, float] | None]) -> Box | None:
    """The smallest whole-number box holding every one of ``boxes`` (None ones left out);
    None when there is none."""
    x0 = y0 = math.inf
    x1 = y1 = -math.inf
    for box in boxes:
        if box is None:
            continue
        x0, y0 = min(x0, box[0]), min(y0, box[1])
        x1, y1 = max(x1, box[0] + box[2]), max(y1, box[1] + box[3])
    if x0 == math.inf:
        return None
    left, top = math.floor(x0), math.floor(y0)
    return (left, top, math.ceil(x1) - left, math.ceil(y1) - top)


def line_box(line: Line) -> Box | None:
    """The box of a whole line (its words' boxes together), None for plain text."""
    return union(word.box for word in line.words)


def _page_words(page: PageText) -> list[tuple[int, int]]:
    """(line, word) of every word of ``page`` in reading order."""
    return [(li, wi) for li, line in enumerate(page.lines) for wi in range(len(line.words))]


def find_hits(pages: Sequence[StoredPage], query: Query, context: int = CONTEXT) -> list[Hit]:
    """Every hit of ``query`` on ``pages`` (see the module's docstring)."""
    hits: list[Hit] = []
    for stored in sorted(pages, key=lambda stored: stored.canvas):
        hits.extend(_page_hits(stored.canvas, stored.page, query, context))
    return hits


def _page_hits(canvas: int, page: PageText, query: Query, context: int) -> list[Hit]:
    places = _page_words(page)
    texts = [page.lines[li].words[wi].text for li, wi in places]
    covered: set[tuple[int, int]] = set()  # (first, last) word of each hit, reading order
    if query.empty:
        first = 0
        for line in page.lines:
            if line.text:
                covered.add((first, first + len(line.words) - 1))
            first += len(line.words)
        return [_hit(canvas, page, places, texts, c, context) for c in sorted(covered)]
    pairs = word_terms(texts)
    found = [term for _, term in pairs]  # the page's terms in order
    owner = [n for n, _ in pairs]  # the word each term belongs to
    present = set(found)
    if not all(word in present for word in query.words):
        return []
    if not all(any(term.startswith(prefix) for term in present) for prefix in query.prefixes):
        return []
    for phrase in query.phrases:
        starts = _phrase_starts(found, phrase)
        if not starts:
            return []
        covered.update((owner[i], owner[i + len(phrase) - 1]) for i in starts)
    words = set(query.words)
    for term, n in zip(found, owner, strict=True):
        if term in words or term.startswith(query.prefixes):
            covered.add((n, n))
    return [_hit(canvas, page, places, texts, c, context) for c in sorted(covered)]


def _phrase_starts(found: list[str], phrase: tuple[str, ...]) -> list[int]:
    size = len(phrase)
    first = phrase[0]
    return [
        i for i, term in enumerate(found) if term == first and tuple(found[i : i + size]) == phrase
    ]


def _hit(
    canvas: int,
    page: PageText,
    places: list[tuple[int, int]],
    texts: list[str],
    covered: tuple[int, int],
    context: int,
) -> Hit:
    start, end = covered
    # a hyphenated word's second part (the next line's first word, of empty text) goes with it
    if end + 1 < len(places) and places[end + 1][1] == 0 and not texts[end + 1]:
        end += 1
    lines: dict[int, list[int]] = {}  # line -> the hit's words on it
    for li, wi in places[start : end + 1]:
        lines.setdefault(li, []).append(wi)
    spans = tuple(
        Span(li, ws[0], ws[-1], union(w.box for w in page.lines[li].words[ws[0] : ws[-1] + 1]))
        for li, ws in lines.items()
    )
    match = " ".join(text for text in texts[start : end + 1] if text)
    before = _context(texts, range(start - 1, -1, -1), context)
    after = _context(texts, range(end + 1, len(texts)), context)
    return Hit(
        canvas,
        spans,
        " ".join(reversed(before)) + " " if before else "",
        match,
        " " + " ".join(after) if after else "",
    )


def _context(texts: list[str], order: range, limit: int) -> list[str]:
    """Whole words of ``texts`` in ``order`` (nearest first) while they fit in ``limit``
    characters, counting a space before each."""
    taken: list[str] = []
    used = 0
    for n in order:
        text = texts[n]
        if not text:
            continue
        used += len(text) + 1
        if used > limit:
            break
        taken.append(text)
    return taken
