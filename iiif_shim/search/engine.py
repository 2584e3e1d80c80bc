"""What the two index engines (``sqlite.py``, ``postgres.py``) share, so that they keep and
answer exactly the same: the terms of a page as an engine indexes them (:func:`page_terms`),
the terms of a query as an engine looks them up (:func:`prepare`: a query term that cannot be
a term of any page matches no page, whatever it holds), a page packed into bytes with its
terms and back (:func:`pack`, :func:`unpack`, :func:`packed_terms`), the term counts a change
makes (:func:`count_changes`), the range of terms beginning with a prefix
(:func:`prefix_bounds`), and the connections an engine keeps for its callers' threads
(:class:`Pool`).

Terms are those of ``words.terms`` (folded, the one normalisation), each cut to
:data:`MAX_TERM` characters (PostgreSQL refuses longer lexemes; the query's terms are cut the
same way, so a cut term still finds its pages, and the hit finder sees whole words)."""

from __future__ import annotations

import json
import threading
import zlib
from collections import Counter
from collections.abc import Callable, Iterable, Iterator, Sequence
from contextlib import contextmanager
from dataclasses import dataclass
from typing import Any, Generic, TypeVar

from iiif_shim.model.text import Line, PageText, Query, TextFormat, Word
from iiif_shim.search import words
from iiif_shim.search.stored import IndexUnavailable

MAX_TERM = 255  # characters of a term as indexed (PostgreSQL: a lexeme of at most 2046 bytes)
TIMEOUT = 30.0  # seconds a call waits for a lock, a connection or a statement (see sqlite.py)
POOL_KEEP = 16  # idle connections an engine keeps (more threads: more are made, then closed)

C = TypeVar("C")


def index_term(term: str) -> str:
    """``term`` as an engine keeps and looks it up."""
    return term[:MAX_TERM]


def page_terms(page: PageText) -> list[str]:
    """The terms of ``page`` in reading order, as indexed: line after line, so that a phrase
    runs on over a line break (and never over a page's end)."""
    texts = [word.text for line in page.lines for word in line.words]
    return [index_term(term) for _, term in words.word_terms(texts)]


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


def count_changes(old: Iterable[str], new: Iterable[str]) -> dict[str, int]:
    """How the count of each term changes when pages of terms ``old`` are replaced by pages of
    terms ``new`` (terms whose count does not change are left out)."""
    change = Counter(new)
    change.subtract(Counter(old))
    return {term: n for term, n in change.items() if n}


def pack(page: PageText, terms: Sequence[str]) -> bytes:
    """``page`` as an engine keeps it, with its ``terms`` as indexed (what it takes out of
    the index and the counts when the page is replaced, whatever ``words.terms`` says by
    then): compact JSON (a word ``[text, x, y, w, h]``, or ``[text]`` without a box, the terms
    one text) compressed together (the terms are mostly the words again: they take little
    more). :func:`unpack` gives the page back exactly, :func:`packed_terms` the terms."""
    lines = [
        [[w.text] if w.box is None else [w.text, *w.box] for w in line.words] for line in page.lines
    ]
    data = json.dumps(
        [page.format.value, page.width, page.height, lines, " ".join(terms)],
        ensure_ascii=False,
        separators=(",", ":"),
        allow_nan=False,
    )
    return zlib.compress(data.encode("utf-8", "surrogatepass"))


def _unpacked(data: bytes) -> Any:
    try:
        kept = json.loads(zlib.decompress(data).decode("utf-8", "surrogatepass"))
        if not isinstance(kept, list) or len(kept) != 5:
            raise ValueError("not a packed page")
        return kept
    except (ValueError, zlib.error) as exc:
        raise IndexUnavailable("the search index holds a damaged page", detail=str(exc)) from exc


def unpack(data: bytes) -> PageText:
    """The page :func:`pack` packed; a damaged one raises :class:`IndexUnavailable`."""
    kind, width, height, lines, _ = _unpacked(data)
    try:
        return PageText(
            tuple(
                [
                    Line(
                        tuple(
                            [
                                Word(w[0]) if len(w) == 1 else Word(w[0], (w[1], w[2], w[3], w[4]))
                                for w in ws
                            ]
                        )
                    )
                    for ws in lines
                ]
            ),
            TextFormat(kind),
            width,
            height,
        )
    except (ValueError, TypeError, IndexError) as exc:
        raise IndexUnavailable("the search index holds a damaged page", detail=str(exc)) from exc


def packed_terms(data: bytes) -> list[str]:
    """The terms :func:`pack` packed with the page."""
    terms = _unpacked(data)[4]
    if not isinstance(terms, str):
        raise IndexUnavailable("the search index holds a damaged page", detail="terms")
    return terms.split()


class Pool(Generic[C]):
    """The connections of an engine: a call takes an idle one (or makes one), uses it alone
    (one thread at a time: neither driver's connection is meant for several at once) and
    gives it back; one that failed is closed, never given out again (the next call makes a
    new one: reconnection). At most :data:`POOL_KEEP` idle ones are kept; :meth:`close`
    closes them, and any given back later."""

    def __init__(self, make: Callable[[], C], close: Callable[[C], None]) -> None:
        self._make = make
        self._close = close
        self._idle: list[C] = []
        self._lock = threading.Lock()
        self._closed = False

    @contextmanager
    def connection(self) -> Iterator[tuple[C, bool]]:
        """A connection and whether it was used before (an idle one: it may have been cut
        since)."""
        with self._lock:
            if self._closed:
                raise IndexUnavailable("the search index is closed")
            conn = self._idle.pop() if self._idle else None
        reused = conn is not None
        if conn is None:
            conn = self._make()
        ok = False
        try:
            yield conn, reused
            ok = True
        finally:
            with self._lock:
                keep = ok and not self._closed and len(self._idle) < POOL_KEEP
                if keep:
                    self._idle.append(conn)
            if not keep:
                self._close(conn)

    def close(self) -> None:
        with self._lock:
            self._closed = True
            idle, self._idle = self._idle, []
        for conn in idle:
            self._close(conn)
