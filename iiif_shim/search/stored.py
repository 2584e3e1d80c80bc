"""What every index engine keeps and answers: the :class:`Index` protocol, the values it
takes and gives (:class:`StoredPage`, :class:`IndexedObject`) and its one error
(:class:`IndexUnavailable`). The engines (``sqlite.py``, ``postgres.py``) implement it and
``index.py`` chooses one; this module is below both so that neither imports the chooser.

An engine keeps, per object (by its name), each canvas's page of words already scaled to the
canvas (:class:`StoredPage`), the ``stamp`` of the file it was read from (to skip unchanged
files), the object's ``signature`` (its text references and canvas sizes: a change means
the object is indexed again) and a ``generation`` that changes with its pages
(:class:`ObjectHead`). It answers which canvases of an object may match a query (every word,
phrase and prefix of it, diacritics and case folded the way ``words.fold`` folds them), the
stored pages themselves, whole or as kept (:class:`PackedPage`: ``match.py`` reads their terms,
and the words of those with hits it shows) and the terms beginning with a prefix, with their
counts and the form each is most often written in. Every method is blocking: the search
service calls them off the event loop, from threads of its own; an engine is safe to use from
several threads at once. Engine failures are raised as :class:`IndexUnavailable` (a 503 to
the client), never as a driver's own exception."""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from typing import Protocol

from iiif_shim.base.errors import ShimError
from iiif_shim.model.text import PageText, Query


class IndexUnavailable(ShimError):
    """The index cannot be read or written now (a locked or broken file, a database that does
    not answer)."""

    status = 503
    kind = "index_unavailable"


@dataclass(frozen=True)
class StoredPage:
    """One canvas's text as kept: ``canvas`` 0-based, ``page`` in the canvas's pixels, and the
    ``stamp`` of the file it came from."""

    canvas: int
    stamp: str
    page: PageText


@dataclass(frozen=True)
class PackedPage:
    """One canvas's text as an engine keeps it (``engine.pack``'s form), for the hit finder
    to read only what it needs of it."""

    canvas: int
    stamp: str
    body: bytes


@dataclass(frozen=True)
class ObjectHead:
    """What the index holds of one object, without its pages: its ``signature``, when it was
    last looked at (epoch seconds), and its ``generation``: a number that every change of its
    pages changes (stored, replaced or removed; never only looked at), so what was read of its
    pages at one generation is still what it holds while the generation is the same."""

    signature: str
    checked: float
    generation: int


@dataclass(frozen=True)
class IndexedObject:
    """What the index holds of one object: its ``signature``, when it was last looked at
    (epoch seconds), and the stamp of each canvas's file (canvas -> stamp)."""

    signature: str
    checked: float
    stamps: Mapping[int, str]


class Index(Protocol):
    def state(self, obj: str) -> IndexedObject | None:
        """What is kept of object ``obj``, None when it was never indexed."""
        ...

    def store(
        self,
        obj: str,
        signature: str,
        pages: Sequence[StoredPage],
        removed: Sequence[int] = (),
        checked: float | None = None,
    ) -> None:
        """In one transaction: ``pages`` replace those of the same canvases, the canvases
        ``removed`` are dropped, and the object's signature and time (``checked``, else now)
        are set (an object with no pages is kept, with none)."""
        ...

    def touch(self, obj: str, checked: float | None = None) -> None:
        """The object was looked at and nothing changed."""
        ...

    def drop(self, obj: str) -> None:
        """Forget object ``obj``."""
        ...

    def head(self, obj: str) -> ObjectHead | None:
        """What is kept of object ``obj`` without its pages, None when it was never indexed
        (cheap: what a search asks each time)."""
        ...

    def packed(
        self, obj: str, canvases: Sequence[int] | None = None
    ) -> tuple[int, list[PackedPage]]:
        """The object's generation and the stored pages of ``canvases`` (every one when None,
        those without text too) as kept, in canvas order, read together (generation 0 and no
        page for an object never indexed)."""
        ...

    def matching(self, obj: str, query: Query) -> list[int]:
        """The canvases of ``obj`` whose text has every word, phrase and prefix of ``query``,
        in canvas order (every canvas with text for an empty query)."""
        ...

    def pages(self, obj: str, canvases: Sequence[int]) -> list[StoredPage]:
        """The stored pages of ``canvases`` (those that have one), in canvas order."""
        ...

    def terms(self, obj: str, prefix: str, least: int, limit: int) -> list[tuple[str, int]]:
        """Up to ``limit`` folded terms of ``obj`` beginning with ``prefix`` (folded) that
        occur at least ``least`` times, in alphabetical order of the terms, each as it is
        written most often in the object (``Zürich`` for ``zurich``: ``engine.most_written``;
        it folds to the term, so it searches the same), with the term's count."""
        ...

    def objects(self) -> list[str]:
        """Every object kept."""
        ...

    def size(self) -> int:
        """Bytes the index takes (the file, or the database's tables and indexes)."""
        ...

    def close(self) -> None: ...
