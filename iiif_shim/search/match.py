"""Finding the hits of a query in an object's stored pages: how many there are, page by page,
and for the few shown, which words of which lines they are, their boxes on the canvas and the
text around them. Pure (blocking, no I/O): the search service reads the pages and calls it
in its threads.

Which hits (the rules): a page counts only if it holds every word, phrase and prefix of the
query (terms compared folded, ``words.terms``). On such a page each occurrence of a query
word, of a phrase (consecutive terms, across a line break too) and of a term beginning with a
prefix is a :class:`~iiif_shim.model.text.Hit`; occurrences covering the same words are one
hit. A hit has one :class:`~iiif_shim.model.text.Span` per line it covers, whose box is the
union of its words' boxes (None for plain text: the whole canvas); a hit on a word hyphenated
over a line break (``ocr.py``: the second part is a word of empty text) also covers the second
part, on the next line. The empty query makes each line (with text) a hit. ``before`` and
``after`` are up to ``context`` characters of the page's text around the match, whole words
only, with the space that separates them from it (``before + match + after`` reads as the
text, a line break read as a space, as the Search API's examples do); ``match`` is the matched
words as written, at most MAX_MATCH characters (a longer one, such as a long line hit by the
empty query, is cut and ends with an ellipsis). Hits come in canvas order, then reading order.

How (so that a search of a common word in a book of 2,000 pages takes milliseconds): the
terms of every page of an object are read once (``engine.terms_part``: no word's text or box)
into an :class:`ObjectText`, each distinct term given one character, each page's terms one
string of them; it is kept by the service for the next searches of that object. A query is
found on it with string searches (a word: the count of its character; a phrase: a substring;
prefixes: a character class of the terms they begin), giving the number of hits and of their
lines per page (:func:`find`, :class:`Found`), never a :class:`Hit` yet. Only the hits of the
page of results asked for are made (:func:`window`, :func:`page_hits`, :func:`hits_of`), from
the words of their pages alone (``engine.page_words``). A page's distinct terms past
:data:`SEGMENT_TERMS` (only a broken or hostile file has that many) are not found."""

from __future__ import annotations

import bisect
import itertools
import math
import re
import threading
from array import array
from collections import OrderedDict
from collections.abc import Callable, Iterable, Sequence
from dataclasses import dataclass, field

from iiif_shim.model.text import Box, Hit, Line, Query, Span
from iiif_shim.search import engine
from iiif_shim.search.engine import PageWords
from iiif_shim.search.index import PackedPage, StoredPage

CONTEXT = 60  # characters of text before and after a hit, at most
# characters of a hit's own text, at most (a line hit of the empty query is its whole line, and
# an OCR line may hold a page's 100,000 words): longer is cut, ending with an ellipsis
MAX_MATCH = 1000
# distinct terms of one segment of an object's text, each a character (below the ~1.1
# million code points there are; an object with more has several segments)
SEGMENT_TERMS = 1_000_000
TERM_BYTES = 200  # memory a distinct term takes (its text, its character, its entry, in order)
PAGE_BYTES = 700  # memory a page takes besides its terms (or its words)
WORD_BYTES = 130  # memory a word of a page shown takes (its text and box, as read)


class Stopped(Exception):
    """A count given up: whoever asked for it has gone (see :func:`find`)."""


class TooLarge(Exception):
    """An object's text would take more memory than it may (:func:`ObjectText.build`)."""


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


# --- an object's text as the hit finder reads it ------------------------------------------------


def _char(n: int) -> str:
    """The character of term number ``n`` of a segment (surrogates left out)."""
    return chr(n + 1 if n + 1 < 0xD800 else n + 0x801)


@dataclass(frozen=True, slots=True)
class TermPage:
    """One page's terms: ``tokens``, each term a character of its segment, in reading order;
    ``owner``, the word each belongs to (None: term ``n`` is word ``n``); ``starts``, the
    first word of each line; the lines with text (the hits of the empty query) and the lines
    those hits cover; ``hyphened``, the words a hit ending on goes on to the next one (the
    first part of a word hyphenated over a line break) and ``hyphen`` their terms; ``multi``,
    the terms of the words that have several (a hit on two of them is one hit)."""

    canvas: int
    stamp: str
    tokens: str
    owner: array[int] | None
    starts: array[int]
    words: int
    text_lines: array[int]
    line_spans: int
    hyphened: frozenset[int]
    hyphen: str
    multi: str

    def word(self, token: int) -> int:
        return token if self.owner is None else self.owner[token]

    def line_of(self, word: int) -> int:
        return bisect.bisect_right(self.starts, word) - 1

    def line_end(self, line: int) -> int:
        """The word after the last of ``line``."""
        return self.starts[line + 1] if line + 1 < len(self.starts) else self.words

    def spans(self, first: int, last: int) -> int:
        """The lines a hit on words ``first`` to ``last`` covers (its annotations)."""
        if last in self.hyphened:
            last += 1
        if last == first:
            return 1
        a, b = self.line_of(first), self.line_of(last)
        return sum(1 for line in range(a, b + 1) if self.line_end(line) > self.starts[line])

    def lines(self) -> list[tuple[int, int]]:
        """The hits of the empty query: the first and last word of each line with text."""
        return [(self.starts[n], self.line_end(n) - 1) for n in self.text_lines]


_EMPTY: frozenset[int] = frozenset()


def _ints(text: str) -> array[int]:
    return array("I", map(int, text.split()))


def _term_page(canvas: int, stamp: str, part: str, chars: Callable[[str], str]) -> TermPage:
    """The :class:`TermPage` of a packed page's terms part (``engine.terms_of``), ``chars``
    giving each term its character in the segment."""
    found = part.split("\n")
    if len(found) != 9:
        raise ValueError(f"a terms part of {len(found)} lines")
    terms, breaks, starts, words, text_lines, hyphened, multi, hyphen, spans = found
    tokens = "".join(map(chars, terms.split()))
    owner = None
    if breaks:
        owner = array("H" if int(words) < 0x10000 else "I")
        pairs = list(map(int, breaks.split()))
        k = shift = 0
        for at, then in zip(pairs[::2], pairs[1::2], strict=True):
            owner.extend(range(k + shift, at + shift))
            k, shift = at, then
        owner.extend(range(k + shift, len(tokens) + shift))
    return TermPage(
        canvas,
        stamp,
        tokens,
        owner,
        _ints(starts),
        int(words),
        _ints(text_lines),
        int(spans),
        frozenset(map(int, hyphened.split())) if hyphened else _EMPTY,
        "".join([tokens[k] for k in map(int, hyphen.split())]),
        "".join([tokens[k] for k in map(int, multi.split())]),
    )


@dataclass(frozen=True)
class _Segment:
    """Pages whose terms are numbered together: ``chars`` each term's character, ``terms``
    the terms in code point order (for prefixes)."""

    chars: dict[str, str]
    terms: tuple[str, ...]
    pages: tuple[TermPage, ...]


@dataclass(frozen=True)
class ObjectText:
    """What the hit finder reads of an object: the terms of each of its stored pages with
    text (:class:`TermPage`), numbered by segment; ``generation``: the index's generation of
    the object they were read at (``stored.ObjectHead``); ``size``: the bytes it takes, about."""

    generation: int
    segments: tuple[_Segment, ...]
    size: int
    where: dict[int, tuple[_Segment, TermPage]] = field(repr=False)

    @property
    def pages(self) -> int:
        return len(self.where)

    @staticmethod
    def build(generation: int, pages: Iterable[PackedPage], limit: int | None = None) -> ObjectText:
        """The text of ``pages`` (canvas order); :class:`TooLarge` as soon as it passes
        ``limit`` bytes."""
        builder = _Builder(limit)
        for page in pages:
            builder.add(page.canvas, page.stamp, engine.terms_part(page.body))
        return builder.done(generation)

    @staticmethod
    def of_pages(pages: Iterable[StoredPage]) -> ObjectText:
        """The text of pages as :class:`PageText` s (folded now)."""
        builder = _Builder(None)
        for stored in pages:
            builder.add(stored.canvas, stored.stamp, engine.terms_of(stored.page))
        return builder.done(0)


class _Chars(dict[str, str]):
    """Each term of a segment and its character, given on first sight (past SEGMENT_TERMS
    terms, one character no query term has)."""

    def __missing__(self, term: str) -> str:
        if len(self) >= SEGMENT_TERMS:
            return _char(SEGMENT_TERMS)
        char = self[term] = _char(len(self))
        return char


class _Builder:
    def __init__(self, limit: int | None) -> None:
        self.limit = limit
        self.segments: list[_Segment] = []
        self.chars = _Chars()
        self.pages: list[TermPage] = []
        self.size = 0
        self.seen = 0  # distinct terms of the segments done

    def add(self, canvas: int, stamp: str, part: str) -> None:
        if part.count(" ", 0, part.find("\n")) + len(self.chars) >= SEGMENT_TERMS:
            self._close()  # (it could hold more distinct terms than the segment has left)
        try:
            page = _term_page(canvas, stamp, part, self.chars.__getitem__)
        except (ValueError, IndexError) as exc:
            raise engine.damaged(f"canvas {canvas}: {exc}") from exc
        if not page.text_lines:
            return
        self.pages.append(page)
        wide = 2 if len(self.chars) < 0xD700 else 4
        owner = 0 if page.owner is None else page.owner.itemsize * len(page.owner)
        self.size += PAGE_BYTES + wide * len(page.tokens) + owner + 8 * len(page.starts)
        if self.limit is not None and self.size + TERM_BYTES * self._terms() > self.limit:
            raise TooLarge(f"more than {self.limit} bytes")

    def _terms(self) -> int:
        return self.seen + len(self.chars)

    def _close(self) -> None:
        if self.pages or self.chars:
            segment = _Segment(self.chars, tuple(sorted(self.chars)), tuple(self.pages))
            self.segments.append(segment)
            self.seen += len(self.chars)
        self.chars, self.pages = _Chars(), []

    def done(self, generation: int) -> ObjectText:
        self._close()
        where = {
            page.canvas: (segment, page) for segment in self.segments for page in segment.pages
        }
        size = self.size + TERM_BYTES * self.seen
        return ObjectText(generation, tuple(self.segments), size, where)


# --- a query on it -------------------------------------------------------------------------------


@dataclass(frozen=True)
class _Plan:
    """A query on one segment: the characters of its ``words``, its ``phrases`` as strings,
    a pattern per prefix (the characters of the terms it begins), and ``single``: what is a
    hit by itself (each word and each term of a prefix), ``char`` when that is one character.
    ``empty``: the empty query."""

    words: tuple[str, ...] = ()
    phrases: tuple[str, ...] = ()
    prefixes: tuple[re.Pattern[str], ...] = ()
    single: re.Pattern[str] | None = None
    char: str | None = None
    empty: bool = False

    @property
    def parts(self) -> int:
        return len(self.words) + len(self.phrases) + len(self.prefixes)


def _class(chars: Iterable[str]) -> re.Pattern[str]:
    return re.compile("[" + "".join(re.escape(c) for c in sorted(set(chars))) + "]")


def _plan(segment: _Segment, query: Query) -> _Plan | None:
    """``query`` on ``segment``; None when no page of it can hold it."""
    if query.empty:
        return _Plan(empty=True)
    ids = segment.chars
    chars: dict[str, None] = {}
    phrases: list[str] = []
    for term in query.words:
        if term not in ids:
            return None
        chars[ids[term]] = None
    for phrase in query.phrases:
        if not all(term in ids for term in phrase):
            return None
        if len(phrase) == 1:
            chars[ids[phrase[0]]] = None
        elif phrase:
            phrases.append("".join(ids[term] for term in phrase))
    words = tuple(chars)
    prefixes = []
    for prefix in query.prefixes:
        low, high = engine.prefix_bounds(prefix)
        a = bisect.bisect_left(segment.terms, low)
        b = len(segment.terms) if high is None else bisect.bisect_left(segment.terms, high)
        if a >= b:
            return None
        begun = [ids[term] for term in segment.terms[a:b]]
        prefixes.append(_class(begun))
        chars.update(dict.fromkeys(begun))
    single = _class(chars) if chars else None
    char = next(iter(chars)) if len(chars) == 1 else None
    return _Plan(words, tuple(phrases), tuple(prefixes), single, char)


def _holds(page: TermPage, plan: _Plan) -> bool:
    tokens = page.tokens
    for char in plan.words:
        if char not in tokens:
            return False
    for phrase in plan.phrases:
        if phrase not in tokens:
            return False
    return not plan.prefixes or all(p.search(tokens) is not None for p in plan.prefixes)


def _covered(page: TermPage, plan: _Plan) -> list[tuple[int, int]]:
    """The first and last word of each hit of ``plan`` on ``page``, in reading order."""
    if plan.empty:
        return page.lines()
    if not _holds(page, plan):
        return []
    tokens = page.tokens
    covered: set[tuple[int, int]] = set()
    for phrase in plan.phrases:
        size = len(phrase)
        i = tokens.find(phrase)
        while i >= 0:
            covered.add((page.word(i), page.word(i + size - 1)))
            i = tokens.find(phrase, i + 1)
    if plan.single is not None:
        for found in plan.single.finditer(tokens):
            n = page.word(found.start())
            covered.add((n, n))
    return sorted(covered)


def _counts(page: TermPage, plan: _Plan) -> tuple[int, int]:
    """The hits of ``plan`` on ``page`` and the lines they cover, without listing them when
    they can be counted: no phrase, and no match on a word of several terms twice nor on the
    first part of a hyphenated word (each of those is looked at)."""
    if plan.empty:
        return len(page.text_lines), page.line_spans
    if plan.phrases:
        return _listed(page, plan)
    if plan.parts > 1 and not _holds(page, plan):  # (one part: its count says)
        return 0, 0
    tokens = page.tokens
    char = plan.char
    if char is not None:
        hits = tokens.count(char)
        if hits and (page.multi.count(char) > 1 or char in page.hyphen):
            return _listed(page, plan)
        return hits, hits
    assert plan.single is not None
    hits = len(plan.single.findall(tokens))
    if hits and (
        len(plan.single.findall(page.multi)) > 1 or plan.single.search(page.hyphen) is not None
    ):
        return _listed(page, plan)
    return hits, hits


def _listed(page: TermPage, plan: _Plan) -> tuple[int, int]:
    covered = _covered(page, plan)
    return len(covered), sum(page.spans(a, b) for a, b in covered)


@dataclass(frozen=True)
class Found:
    """The hits of a query in an object, counted page by page: the canvases with hits (in
    order), the hits on each and the lines they cover (the annotations of Search 2.0)."""

    canvases: array[int]
    hits: array[int]
    lines: array[int]

    @property
    def total(self) -> int:
        return sum(self.hits)

    @property
    def annotations(self) -> int:
        return sum(self.lines)

    @staticmethod
    def joined(parts: Iterable[Found]) -> Found:
        canvases, hits, lines = array("I"), array("I"), array("I")
        for part in parts:
            canvases.extend(part.canvases)
            hits.extend(part.hits)
            lines.extend(part.lines)
        return Found(canvases, hits, lines)


def find(text: ObjectText, query: Query, stopped: Callable[[], bool] = bool) -> Found:
    """The hits of ``query`` in ``text``, counted (see the module's docstring); raises
    :class:`Stopped` once ``stopped()`` says so (asked at each segment, and at every page of
    a query that is more than one word)."""
    canvases, hits, lines = array("I"), array("I"), array("I")
    for segment in text.segments:
        if stopped():
            raise Stopped
        plan = _plan(segment, query)
        if plan is None:
            continue
        char = plan.char
        if char is not None and plan.parts == 1 and plan.words:
            for page in segment.pages:  # one word: the count of its character on each page
                n = page.tokens.count(char)
                if not n:
                    continue
                spans = n
                if page.multi.count(char) > 1 or char in page.hyphen:
                    n, spans = _listed(page, plan)
                canvases.append(page.canvas)
                hits.append(n)
                lines.append(spans)
            continue
        for page in segment.pages:
            if stopped():
                raise Stopped
            n, spans = _counts(page, plan)
            if n:
                canvases.append(page.canvas)
                hits.append(n)
                lines.append(spans)
    return Found(canvases, hits, lines)


# --- the hits shown ------------------------------------------------------------------------------


@dataclass(frozen=True)
class HitPage:
    """The hits shown of a query's results and what is known of all of them: ``hits``, the
    hits numbered ``start`` on (0-based, among all); ``total`` hits in all, covering
    ``annotations`` lines (one annotation each in Search 2.0), ``annotations_before`` of them
    by the hits before ``start``."""

    hits: tuple[Hit, ...] = ()
    start: int = 0
    total: int = 0
    annotations: int = 0
    annotations_before: int = 0


@dataclass(frozen=True)
class Wanted:
    """The hits ``first`` to ``last`` (excluded; in reading order) of canvas ``canvas``'s."""

    canvas: int
    first: int
    last: int


def window(found: Found, start: int, stop: int) -> tuple[list[Wanted], int]:
    """Which hits of which pages are the hits ``start`` to ``stop`` (excluded) of ``found``,
    and the lines covered by the hits before ``start`` on pages before the first of them."""
    wanted: list[Wanted] = []
    seen = before = 0
    for canvas, hits, lines in zip(found.canvases, found.hits, found.lines, strict=True):
        if seen + hits <= start:
            before += lines
        elif seen < stop:
            wanted.append(Wanted(canvas, max(start - seen, 0), min(stop - seen, hits)))
        else:
            break
        seen += hits
    return wanted, before


class WordsCache:
    """The words of pages shown lately (``engine.page_words``), by object, generation and
    canvas, within ``budget`` bytes (about): the first page of results of most searches of a
    book is on its first pages, whatever the words. Safe to use from several threads."""

    def __init__(self, budget: int) -> None:
        self.budget = budget
        self._kept: OrderedDict[tuple[str, int, int], tuple[PageWords, int]] = OrderedDict()
        self._size = 0
        self._lock = threading.Lock()

    def get(self, key: tuple[str, int, int]) -> PageWords | None:
        with self._lock:
            found = self._kept.get(key)
            if found is None:
                return None
            self._kept.move_to_end(key)
            return found[0]

    def put(self, key: tuple[str, int, int], words: PageWords) -> None:
        size = WORD_BYTES * len(words.boxes) + PAGE_BYTES
        with self._lock:
            if (old := self._kept.pop(key, None)) is not None:
                self._size -= old[1]
            self._kept[key] = (words, size)
            self._size += size
            while self._size > self.budget and self._kept:
                _, (_, gone) = self._kept.popitem(last=False)
                self._size -= gone


def show(
    name: str,
    text: ObjectText | None,
    query: Query,
    found: Found,
    start: int,
    stop: int,
    packed: Callable[[list[int]], tuple[int, list[PackedPage]]],
    cache: WordsCache | None = None,
    context: int = CONTEXT,
) -> HitPage:
    """The hits ``start`` to ``stop`` (excluded) of ``found`` (``query``'s in object
    ``name``, counted on ``text``; None: on pages read for it), made from the words of their
    pages: those ``cache`` keeps of ``text``'s generation, the others as ``packed(canvases)``
    reads them now (with the object's generation now: another than ``text``'s, the pages
    changed since, and their hits are those they have now)."""
    wanted, before = window(found, start, stop)
    plans: dict[int, _Plan | None] = {}
    made: dict[int, tuple[TermPage | None, _Plan | None, PageWords | None]] = {}
    current = text if text is not None and text.generation else None  # (0: of no generation)
    if current is not None and cache is not None:
        for one in wanted:
            kept = current.where.get(one.canvas)
            words = None if kept is None else cache.get((name, current.generation, one.canvas))
            if kept is not None and words is not None:
                made[one.canvas] = (kept[1], _segment_plan(kept[0], query, plans), words)
    needed = [one.canvas for one in wanted if one.canvas not in made]
    generation, pages = packed(needed) if needed else (0, [])
    same = current is not None and generation == current.generation
    for page in pages:
        terms, plan = _terms_now(current if same else None, query, page, plans)
        words = engine.page_words(page.body) if terms is not None else None
        if words is not None and cache is not None and same:
            cache.put((name, generation, page.canvas), words)
        made[page.canvas] = (terms, plan, words)
    hits: list[Hit] = []
    for n, one in enumerate(wanted):
        terms, plan, words = made.get(one.canvas, (None, None, None))  # (None: gone since)
        covered = [] if terms is None or plan is None else _covered(terms, plan)
        if n == 0 and terms is not None:
            before += sum(terms.spans(a, b) for a, b in covered[: one.first])
        shown = covered[one.first : one.last]
        if shown and words is not None:
            hits += hits_of(one.canvas, words, shown, context)
    return HitPage(tuple(hits), start, found.total, found.annotations, before)


def _segment_plan(segment: _Segment, query: Query, plans: dict[int, _Plan | None]) -> _Plan | None:
    if id(segment) not in plans:
        plans[id(segment)] = _plan(segment, query)
    return plans[id(segment)]


def _terms_now(
    text: ObjectText | None, query: Query, packed: PackedPage, plans: dict[int, _Plan | None]
) -> tuple[TermPage | None, _Plan | None]:
    """The terms of ``packed`` and the plan of ``query`` on them: ``text``'s when it holds
    that version of the page (``plans``: the plans of its segments made so far)."""
    kept = None if text is None else text.where.get(packed.canvas)
    if kept is not None and kept[1].stamp == packed.stamp:
        return kept[1], _segment_plan(kept[0], query, plans)
    fresh = ObjectText.build(0, [packed])
    if not fresh.segments or not fresh.segments[0].pages:
        return None, None
    segment = fresh.segments[0]
    return segment.pages[0], _plan(segment, query)


def hits_of(
    canvas: int, words: PageWords, covered: Sequence[tuple[int, int]], context: int = CONTEXT
) -> list[Hit]:
    """The hits on words ``covered`` (first and last of each, reading order) of a page whose
    words are ``words``."""
    if not covered:
        return []
    starts = list(itertools.accumulate(map(len, words.texts), initial=0))
    texts = list(itertools.chain.from_iterable(words.texts))
    return [_hit(canvas, words, starts, texts, c, context) for c in covered]


def _hit(
    canvas: int,
    words: PageWords,
    starts: list[int],
    texts: list[str],
    covered: tuple[int, int],
    context: int,
) -> Hit:
    start, end = covered
    count = len(texts)
    end = min(end, count - 1)  # (a page read again since it was counted)
    # a hyphenated word's second part (the next line's first word, of empty text) goes with it
    following = end + 1
    if (
        following < count
        and not texts[following]
        and starts[bisect.bisect_right(starts, following) - 1] == following
    ):
        end = following
    spans = []
    for li in range(bisect.bisect_right(starts, start) - 1, bisect.bisect_right(starts, end)):
        first, last = max(start, starts[li]), min(end, starts[li + 1] - 1)
        if first <= last:
            box = union(words.box(n) for n in range(first, last + 1))
            spans.append(Span(li, first - starts[li], last - starts[li], box))
    match = _joined(texts, start, end + 1, MAX_MATCH)
    before = _context(texts, range(start - 1, -1, -1), context)
    after = _context(texts, range(end + 1, count), context)
    return Hit(
        canvas,
        tuple(spans),
        " ".join(reversed(before)) + " " if before else "",
        match,
        " " + " ".join(after) if after else "",
    )


def _joined(texts: list[str], start: int, stop: int, limit: int) -> str:
    """The words ``start`` to ``stop`` of ``texts`` joined by spaces, cut at ``limit``
    characters (the last one then an ellipsis)."""
    taken: list[str] = []
    used = 0
    cut = False
    for n in range(start, stop):
        if not (text := texts[n]):
            continue
        taken.append(text)
        used += len(text) + 1
        if used > limit:
            cut = any(texts[n + 1 : stop])
            break
    joined = " ".join(taken)
    return joined[: limit - 1] + "\u2026" if cut or len(joined) > limit else joined


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


def find_hits(pages: Sequence[StoredPage], query: Query, context: int = CONTEXT) -> list[Hit]:
    """Every hit of ``query`` on ``pages`` (see the module's docstring), each page folded
    now (the service reads them from the index instead: :func:`find`, :func:`page_hits`)."""
    found: list[Hit] = []
    for stored in sorted(pages, key=lambda stored: stored.canvas):
        text = ObjectText.of_pages([stored])
        for segment in text.segments:
            plan = _plan(segment, query)
            if plan is None:
                continue
            for page in segment.pages:
                covered = _covered(page, plan)
                found += hits_of(page.canvas, engine.words_of(stored.page), covered, context)
    return found
