"""What the two index engines (``sqlite.py``, ``postgres.py``) share, so that they keep and
answer exactly the same: the terms of a page as an engine indexes them (:func:`page_terms`),
the terms of a query as an engine looks them up (:func:`prepare`: a query term that cannot be
a term of any page matches no page, whatever it holds), a page packed into bytes with its
terms and back (:func:`pack`, :func:`unpack`, :func:`packed_terms`; and the parts the hit
finder reads without making the whole page again: :func:`terms_part`, :func:`page_words`),
the term counts a change makes (:func:`count_changes`), the range of terms beginning with a
prefix (:func:`prefix_bounds`), the written forms of terms autocomplete offers
(:func:`written_forms`, :func:`most_written`), and the connections an engine keeps for its
callers' threads (:class:`Pool`).

Terms are those of ``words.terms`` (folded, the one normalisation), each cut to
:data:`MAX_TERM` characters (PostgreSQL refuses longer lexemes; the query's terms are cut the
same way, so a cut term still finds its pages; a packed page keeps its terms whole, for the
hit finder)."""

from __future__ import annotations

import itertools
import json
import math
import re
import secrets
import threading
import unicodedata
import zlib
from collections import Counter
from collections.abc import Callable, Hashable, Iterable, Iterator, Sequence
from contextlib import contextmanager
from dataclasses import dataclass
from typing import Generic, TypeVar

from iiif_shim.model.text import Line, PageText, Query, TextFormat, Word
from iiif_shim.search import words
from iiif_shim.search.stored import IndexUnavailable, StoredPage

MAX_TERM = 255  # characters of a term as indexed (PostgreSQL: a lexeme of at most 2046 bytes)
TIMEOUT = 30.0  # seconds a call waits for a lock, a connection or a statement (see sqlite.py)
POOL_KEEP = 16  # idle connections an engine keeps (more threads: more are made, then closed)
_TERMS_READ = 4096  # bytes decompressed at a time while looking for a packed page's terms

C = TypeVar("C")
K = TypeVar("K", bound=Hashable)


def index_term(term: str) -> str:
    """``term`` as an engine keeps and looks it up."""
    return term[:MAX_TERM]


def page_terms(page: PageText) -> list[str]:
    """The terms of ``page`` in reading order, as indexed: line after line, so that a phrase
    runs on over a line break (and never over a page's end)."""
    texts = [word.text for line in page.lines for word in line.words]
    return [index_term(term) for _, term in words.word_terms(texts)]


def generation() -> int:
    """A new generation of an object (``stored.ObjectHead``): random, so that an object
    dropped and stored again never has one it had before."""
    return 1 + secrets.randbits(62)


def storable(name: str) -> bool:
    """Whether an object may be called ``name`` in an index (no NUL, no lone surrogate:
    PostgreSQL's text holds neither). Both engines find nothing under any other name, and
    refuse to write one (ValueError: no source names an object so)."""
    if "\x00" in name:
        return False
    try:
        name.encode("utf-8")
    except UnicodeEncodeError:
        return False
    return True


def check_name(name: str) -> None:
    """Raise ValueError unless :func:`storable`."""
    if not storable(name):
        raise ValueError(f"an object name holding NUL or a lone surrogate: {name!r}")


def is_term(text: str) -> bool:
    """Whether ``text`` is a folded term as ``words.terms`` makes them (one, whole)."""
    return bool(text) and words.terms(text) == [text]


@dataclass(frozen=True)
class Prepared:
    """A query's terms as an engine looks them up: each cut to :data:`MAX_TERM`, repeats
    dropped, a phrase of one term among the ``words``, ``phrases`` of two terms or more."""

    words: tuple[str, ...]
    phrases: tuple[tuple[str, ...], ...]
    prefixes: tuple[str, ...]

    @property
    def empty(self) -> bool:
        return not (self.words or self.phrases or self.prefixes)

    def loose(self) -> tuple[str, ...]:
        """Every term, those of the phrases too, once: what a page holding the query holds."""
        return tuple(dict.fromkeys([*self.words, *(t for p in self.phrases for t in p)]))


def prepare(query: Query) -> Prepared | None:
    """``query`` as an engine looks it up; None when a word, a term of a phrase or a prefix
    is no term at all (empty, not folded, several terms, a quote, a NUL...): no page holds
    it, so no page matches. Empty phrases and empty prefixes (every term begins with one)
    restrict nothing."""
    found_words: dict[str, None] = {}
    phrases: dict[tuple[str, ...], None] = {}
    prefixes: dict[str, None] = {}
    for term in query.words:
        if not is_term(term):
            return None
        found_words[index_term(term)] = None
    for phrase in query.phrases:
        if not all(is_term(term) for term in phrase):
            return None
        cut = tuple(index_term(term) for term in phrase)
        if len(cut) == 1:
            found_words[cut[0]] = None
        elif cut:
            phrases[cut] = None
    for prefix in query.prefixes:
        if prefix and not is_term(prefix):
            return None
        if prefix:
            prefixes[index_term(prefix)] = None
    return Prepared(tuple(found_words), tuple(phrases), tuple(prefixes))


def prefix_bounds(prefix: str) -> tuple[str, str | None]:
    """Terms beginning with ``prefix`` are those from the first value (included) to the second
    (excluded; None: no end), in code point order (SQLite's binary order and PostgreSQL's
    ``COLLATE "C"`` of UTF-8 text)."""
    if not prefix:
        return "", None
    last = ord(prefix[-1]) + 1
    if 0xD800 <= last <= 0xDFFF:  # no term holds a surrogate: the next character after them
        last = 0xE000
    if last > 0x10FFFF:
        return prefix, None
    return prefix, prefix[:-1] + chr(last)


def count_changes(old: Iterable[K], new: Iterable[K]) -> dict[K, int]:
    """How the count of each term (or written form) changes when pages of terms ``old`` are
    replaced by pages of terms ``new`` (those whose count does not change are left out)."""
    change = Counter(new)
    change.subtract(Counter(old))
    return {term: n for term, n in change.items() if n}


_ASCII_RUN = re.compile("[A-Za-z0-9]+")


def _runs(text: str) -> list[str]:
    """The runs of letters, digits and marks of ``text`` (what a term is written with)."""
    if text.isascii():
        return _ASCII_RUN.findall(text)
    runs: list[str] = []
    start = None
    for i, char in enumerate(text):
        inside = unicodedata.category(char)[0] in "LNM"
        if inside and start is None:
            start = i
        elif not inside and start is not None:
            runs.append(text[start:i])
            start = None
    if start is not None:
        runs.append(text[start:])
    return runs


def written_forms(texts: Sequence[str]) -> list[tuple[str, str]]:
    """``(term, form)`` for each term of the words ``texts`` (a page's, in reading order)
    written otherwise than the term itself (``("zurich", "Zürich")`` for ``Zürich,``): the
    word without what surrounds its letters and digits, or for a word of several terms
    (``L'Eau``) each run of them, when each folds to its term exactly; none for a word written
    as its term, or whose runs are not its terms one for one (``½``), or a term cut to
    :data:`MAX_TERM`. What autocomplete offers (:func:`most_written`): the index counts each
    form as it counts terms."""
    by_word: dict[int, list[str]] = {}
    for n, term in words.word_terms(texts):
        by_word.setdefault(n, []).append(term)
    found: list[tuple[str, str]] = []
    seen: dict[str, list[tuple[str, str]]] = {}  # a page repeats its words
    for n, terms in by_word.items():
        text = texts[n]
        if len(terms) == 1 and text == terms[0]:
            continue  # most words: written as their term
        known = seen.get(text)
        if known is None:
            known = seen[text] = _forms(text, terms)
        found += known
    return found


def _forms(text: str, terms: list[str]) -> list[tuple[str, str]]:
    runs = _runs(text)
    if len(runs) != len(terms):
        return []
    return [
        (term, run)
        for run, term in zip(runs, terms, strict=True)
        if run != term
        and len(term) <= MAX_TERM
        and (run.lower() if run.isascii() else words.fold(run)) == term
    ]


def most_written(term: str, count: int, forms: Iterable[tuple[str, int]]) -> str:
    """The form of ``term`` written most often, given its ``count`` and those of its forms
    other than itself (:func:`written_forms`): the term itself is written the rest of the
    times. A tie goes to the term itself, then to the first form in code point order."""
    counted = list(forms)
    best = (-(count - sum(n for _, n in counted)), False, term)
    for form, n in counted:
        best = min(best, (-n, True, form))
    return best[2]


def _numbers(values: Iterable[int]) -> str:
    return " ".join(map(str, values))


def _sections(page: PageText) -> tuple[str, list[str]]:
    """The terms part of ``page``'s packed form (see :func:`terms_of`) and its terms as
    indexed."""
    texts = [word.text for line in page.lines for word in line.words]
    pairs = words.word_terms(texts)
    owners = [n for n, _ in pairs]
    breaks: list[int] = []  # (term, owner - term) where that difference changes
    shift = 0
    for k, n in enumerate(owners):
        if n - k != shift:
            shift = n - k
            breaks += (k, shift)
    starts: list[int] = []
    text_lines: list[int] = []
    hyphened: list[int] = []
    count = spans = 0
    for i, line in enumerate(page.lines):
        starts.append(count)
        if line.words and not line.words[0].text and count:
            hyphened.append(count - 1)
        if any(word.text for word in line.words):
            text_lines.append(i)
        count += len(line.words)
    ends = {starts[i + 1] - 1 if i + 1 < len(starts) else count - 1 for i in text_lines}
    spans = len(text_lines) + len(ends.intersection(hyphened))
    shared = {n for n, k in Counter(owners).items() if k > 1}
    joined = set(hyphened)
    part = "\n".join(
        [
            " ".join(term for _, term in pairs),
            _numbers(breaks),
            _numbers(starts),
            str(count),
            _numbers(text_lines),
            _numbers(hyphened),
            _numbers(k for k, n in enumerate(owners) if n in shared),
            _numbers(k for k, n in enumerate(owners) if n in joined),
            str(spans),
        ]
    )
    return part, [index_term(term) for _, term in pairs]


def terms_of(page: PageText) -> str:
    """The terms part of ``page``'s packed form (:func:`pack`), folded now: nine lines of
    what the hit finder (``match.py``) reads of a page, so that it reads it without looking
    at each word: the page's terms in reading order (spaces between); where the word a term
    belongs to stops being the term's own number (pairs of the term's number and the
    difference from then on: none when each word has one term); the first word of each line;
    the number of words; the lines with text; the words whose next is a line's first and of
    empty text (the first part of a word hyphenated over a line break); the terms of the
    words of several terms; the terms of those hyphenated words; and the lines that the
    hits of the empty query cover (one a line with text, two for one ending in such a word).
    Numbers are 0-based, spaces between."""
    return _sections(page)[0]


def _number(value: float) -> str:
    if isinstance(value, int):
        return str(value)
    if not math.isfinite(value):
        raise ValueError(f"a box of a page holds {value!r}")
    return repr(float(value))


@dataclass(frozen=True)
class Packed:
    """A page ready to be stored: its packed ``body`` and its ``terms`` as indexed."""

    page: StoredPage
    body: bytes
    terms: tuple[str, ...]


def packed_pages(
    pages: Sequence[StoredPage],
) -> tuple[list[Packed], list[str], list[tuple[str, str]]]:
    """What both engines store of ``pages`` (the last of a canvas given twice): each packed,
    and all their terms and written forms, to be counted in."""
    packed: list[Packed] = []
    terms: list[str] = []
    forms: list[tuple[str, str]] = []
    for page in {page.canvas: page for page in pages}.values():
        body, its_terms = pack(page.page)
        packed.append(Packed(page, body, tuple(its_terms)))
        terms += its_terms
        forms += written_forms([word.text for line in page.page.lines for word in line.words])
    return packed, terms, forms


def pack(page: PageText) -> tuple[bytes, list[str]]:
    """``page`` as an engine keeps it, and its terms as indexed (:func:`page_terms`). The
    packed form is compressed text of three parts, NUL between them: the page's folded terms
    and what the hit finder reads with them (:func:`terms_of`): all it reads of most pages
    (:func:`terms_part`, without the rest decompressed), and what the index takes out when the
    page is replaced, whatever ``words.terms`` says by then; JSON of the format, size and
    each line's word texts; and each word's box (``x,y,w,h``, empty for none, spaces
    between). :func:`unpack` gives the page back exactly, :func:`page_words` its words
    without making them :class:`~iiif_shim.model.text.Word` s, :func:`packed_terms` its terms
    as indexed."""
    terms_part, terms = _sections(page)
    head = json.dumps(
        [
            page.format.value,
            page.width,
            page.height,
            [[word.text for word in line.words] for line in page.lines],
        ],
        ensure_ascii=False,
        separators=(",", ":"),
        allow_nan=False,
    )
    boxes = " ".join(
        "" if word.box is None else ",".join(map(_number, word.box))
        for line in page.lines
        for word in line.words
    )
    data = f"{terms_part}\x00{head}\x00{boxes}".encode("utf-8", "surrogatepass")
    return zlib.compress(data), terms


def words_of(page: PageText) -> PageWords:
    """The words of ``page`` as :func:`page_words` gives those of a packed page."""
    return PageWords(
        page.format,
        page.width,
        page.height,
        tuple([tuple([word.text for word in line.words]) for line in page.lines]),
        tuple(
            "" if word.box is None else ",".join(map(_number, word.box))
            for line in page.lines
            for word in line.words
        ),
    )


def damaged(detail: str) -> IndexUnavailable:
    return IndexUnavailable("the search index holds a damaged page", detail=detail)


def terms_part(data: bytes) -> str:
    """The terms part of a packed page (see :func:`pack`), decompressing no more than it."""
    try:
        inflate = zlib.decompressobj()
        out = inflate.decompress(data, _TERMS_READ)
        while b"\x00" not in out and inflate.unconsumed_tail:
            out += inflate.decompress(inflate.unconsumed_tail, _TERMS_READ)
        end = out.find(b"\x00")
        if end < 0:
            raise ValueError("not a packed page")
        return out[:end].decode("utf-8", "surrogatepass")
    except (ValueError, zlib.error) as exc:
        raise damaged(str(exc)) from exc


@dataclass(frozen=True)
class PageWords:
    """A packed page's words as the hit finder reads them: each line's word texts, and each
    word's box as packed (in reading order; :meth:`box` reads one)."""

    format: TextFormat
    width: float | None
    height: float | None
    texts: tuple[tuple[str, ...], ...]
    boxes: tuple[str, ...]

    def box(self, n: int) -> tuple[float, float, float, float] | None:
        """Word ``n``'s box (reading order), None when it has none."""
        kept = self.boxes[n]
        if not kept:
            return None
        x, y, w, h = (float(v) if "." in v or "e" in v else int(v) for v in kept.split(","))
        return (x, y, w, h)


def page_words(data: bytes) -> PageWords:
    """The words of a packed page (see :func:`pack`); a damaged one raises
    :class:`IndexUnavailable`."""
    try:
        text = zlib.decompress(data).decode("utf-8", "surrogatepass")
        _, head, boxes = text.split("\x00", 2)
        kind, width, height, lines = json.loads(head)
        if not isinstance(lines, list) or not all(isinstance(line, list) for line in lines):
            raise ValueError("lines that are no lists")
        "".join(itertools.chain.from_iterable(lines))  # TypeError unless every word is text
        texts = tuple([tuple(line) for line in lines])
        count = sum(map(len, texts))
        found = tuple(boxes.split(" ")) if count else ()
        if len(found) != count or (not count and boxes):
            raise ValueError("words and boxes differ in number")
        return PageWords(TextFormat(kind), width, height, texts, found)
    except (ValueError, TypeError, zlib.error) as exc:
        raise damaged(str(exc)) from exc


def unpack(data: bytes) -> PageText:
    """The page :func:`pack` packed; a damaged one raises :class:`IndexUnavailable`."""
    found = page_words(data)
    try:
        n = itertools.count()
        return PageText(
            tuple(
                [Line(tuple([Word(text, found.box(next(n))) for text in line]))
                 for line in found.texts]
            ),
            found.format,
            found.width,
            found.height,
        )  # fmt: skip
    except (ValueError, TypeError) as exc:
        raise damaged(str(exc)) from exc


def packed_terms(data: bytes) -> list[str]:
    """The terms :func:`pack` packed with the page, as indexed."""
    return [index_term(term) for term in terms_part(data).partition("\n")[0].split()]


class Pool(Generic[C]):
    """The connections of an engine: a call takes an idle one (or makes one), uses it alone
    (one thread at a time: neither driver's connection is meant for several at once) and
    gives it back; one that failed is closed, never given out again (the next call makes a
    new one: reconnection). At most :data:`POOL_KEEP` idle ones are kept; :meth:`close`
    closes them, and any given back later."""

    def __init__(self, make: Callable[[], C], close: Callable[[C], None]) -> None:
        self._make = make
        self._close = close
        self._idle: list[tuple[C, int]] = []  # each with the round it was made in
        self._lock = threading.Lock()
        self._closed = False
        self._round = 0

    @contextmanager
    def connection(self) -> Iterator[tuple[C, bool]]:
        """A connection and whether it was used before (an idle one: it may have been cut
        since)."""
        with self._lock:
            if self._closed:
                raise IndexUnavailable("the search index is closed")
            conn, made = self._idle.pop() if self._idle else (None, self._round)
        reused = conn is not None
        if conn is None:
            conn = self._make()
        ok = False
        try:
            yield conn, reused
            ok = True
        finally:
            with self._lock:
                keep = (
                    ok and not self._closed and made == self._round and len(self._idle) < POOL_KEEP
                )
                if keep:
                    self._idle.append((conn, made))
            if not keep:
                self._close(conn)

    def renew(self) -> None:
        """Close the idle connections, and those in use when they are given back: the next
        calls make new ones (the database they were open on was replaced)."""
        with self._lock:
            self._round += 1
            idle, self._idle = self._idle, []
        for conn, _ in idle:
            self._close(conn)

    def close(self) -> None:
        with self._lock:
            self._closed = True
            idle, self._idle = self._idle, []
        for conn, _ in idle:
            self._close(conn)
