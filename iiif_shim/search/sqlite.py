"""The SQLite engine of the search index (the default): one file, shared by every thread and
process of a machine given the same configuration (the server's workers, ``iiif-shim index``).

Tables (schema :data:`SCHEMA`, kept in the file's ``user_version``; a file of another version
is emptied and made again, logged, and every object is indexed again)::

    objects(id, name, signature, checked, generation)   generation: random, at each store
    pages(id, object, canvas, stamp, lines, body)   body: engine.pack (the page and its terms)
    page_terms  FTS5(owner, terms), contentless      rowid = pages.id; owner = objects.id
    terms(object, term, count)                       for autocomplete
    forms(object, term, form, count)                 its written forms (those not the term)

``page_terms`` indexes each page's folded terms (``engine.page_terms``) in reading order (it
keeps no copy of them: a page's are taken out of it with those packed in its body), with
the ``ascii`` tokenizer: every character that is not ASCII is part of a token and ASCII ones
other than letters and digits part none, so each folded term is exactly one token and nothing
is folded a second, different way (``unicode61`` would: Unicode 6.1 tables, its own case
folding); ``prefix='2 3'`` keeps prefix queries of two and three characters fast. A new file
has pages of 16 KB (a row of ``pages``, some 3 KB, would leave a quarter of a 4 KB one empty).
A query is an FTS5 expression of quoted terms (``"a" AND "b" + "c" AND "pre" *``, every ``"``
doubled) restricted to the object's ``owner`` token; the user's syntax never reaches it.

Concurrency: the file is in WAL mode (readers never wait for the writer, nor it for them) and
each connection has a busy timeout of ``timeout`` seconds (30: a write waits that long for
another's, such as a whole book stored at once by ``iiif-shim index``, then
:class:`~iiif_shim.search.stored.IndexUnavailable`). A write takes the lock first (``BEGIN
IMMEDIATE``: two writers never deadlock upgrading their read locks). Connections are pooled
(``engine.Pool``): each call uses one connection alone, as the ``sqlite3`` module wants, and
threads that call at once each get one of their own, made on demand; a pool rather than one per
thread, so the connections of finished threads do not pile up. ``synchronous=NORMAL``: a
power cut may lose the last writes, never break the file (the index can be made again). The
WAL is written back into the file every 4 MB or so and kept to 8 MB."""

from __future__ import annotations

import logging
import os
import sqlite3
import threading
import time
from collections.abc import Callable, Iterator, Sequence
from contextlib import contextmanager, suppress
from pathlib import Path
from typing import TypeVar

from iiif_shim.model.text import Query
from iiif_shim.search import engine
from iiif_shim.search.stored import (
    IndexedObject,
    IndexUnavailable,
    ObjectHead,
    PackedPage,
    StoredPage,
)

log = logging.getLogger("iiif_shim")

SCHEMA = 4
PAGE_SIZE = 16384  # bytes of a database page of a new file
CHUNK = 500  # values in one IN (...)
T = TypeVar("T")

_TABLES = """
CREATE TABLE objects (
    id INTEGER PRIMARY KEY,
    name TEXT NOT NULL UNIQUE,
    signature TEXT NOT NULL,
    checked REAL NOT NULL,
    generation INTEGER NOT NULL
);
CREATE TABLE pages (
    id INTEGER PRIMARY KEY,
    object INTEGER NOT NULL,
    canvas INTEGER NOT NULL,
    stamp TEXT NOT NULL,
    lines INTEGER NOT NULL,
    body BLOB NOT NULL,
    UNIQUE (object, canvas)
);
CREATE VIRTUAL TABLE page_terms USING fts5(
    owner, terms, content = '', tokenize = 'ascii', prefix = '2 3', detail = full,
    columnsize = 0
);
CREATE TABLE terms (
    object INTEGER NOT NULL,
    term TEXT NOT NULL,
    count INTEGER NOT NULL,
    PRIMARY KEY (object, term)
) WITHOUT ROWID;
CREATE TABLE forms (
    object INTEGER NOT NULL,
    term TEXT NOT NULL,
    form TEXT NOT NULL,
    count INTEGER NOT NULL,
    PRIMARY KEY (object, term, form)
) WITHOUT ROWID;
"""


def _quoted(term: str) -> str:
    return '"' + term.replace('"', '""') + '"'


def match_expression(owner: int, query: engine.Prepared) -> str:
    """The FTS5 expression of ``query`` over the pages of object ``owner``."""
    parts = [_quoted(t) for t in query.words]
    parts += [" + ".join(_quoted(t) for t in phrase) for phrase in query.phrases]
    parts += [_quoted(p) + " *" for p in query.prefixes]
    return f'owner : "{owner}" AND terms : ({" AND ".join(parts)})'


class SqliteIndex:
    """The index in the SQLite file ``path`` (its folder must exist); see the module's
    docstring. Opened lazily: the first call makes the tables."""

    def __init__(self, path: Path, timeout: float = engine.TIMEOUT) -> None:
        self.path = path
        self.timeout = timeout
        self._ready = False
        self._setting_up = threading.Lock()  # one connection of this process makes the tables
        self._mending = threading.Lock()  # one thread of this process sets a damaged file aside
        self._pool: engine.Pool[sqlite3.Connection] = engine.Pool(self._connect, _close)

    # --- connections -------------------------------------------------------------------

    def _connect(self) -> sqlite3.Connection:
        _make_private(self.path)
        conn = sqlite3.connect(
            self.path, timeout=self.timeout, isolation_level=None, check_same_thread=False
        )
        try:
            conn.execute("PRAGMA synchronous = NORMAL")
            # the WAL is written back every ~4 MB and cut back to 8 MB after (with 16 KB pages,
            # SQLite's 1000-page default lets it grow to 16 MB and stay that large)
            conn.execute("PRAGMA wal_autocheckpoint = 256")
            conn.execute(f"PRAGMA journal_size_limit = {8 * 1024 * 1024}")
            if not self._ready:
                with self._setting_up:  # (two at once: "database is locked" switching to WAL)
                    if not self._ready:
                        self._setup(conn)
                        self._ready = True
        except BaseException:
            conn.close()
            raise
        return conn

    def _setup(self, conn: sqlite3.Connection) -> None:
        conn.execute(f"PRAGMA page_size = {PAGE_SIZE}")  # a new file's; an existing one keeps its
        mode = conn.execute("PRAGMA journal_mode = WAL").fetchone()[0]
        if mode != "wal":
            log.warning(
                "search index %s: WAL mode refused (%s): writes block reads", self.path, mode
            )
        conn.execute("BEGIN IMMEDIATE")
        try:
            version = conn.execute("PRAGMA user_version").fetchone()[0]
            if version == SCHEMA:
                conn.execute("COMMIT")
                return
            tables = [
                row[0]
                for row in conn.execute(
                    "SELECT name FROM sqlite_master WHERE type = 'table' "
                    "ORDER BY sql LIKE 'CREATE VIRTUAL%' DESC"
                )
            ]
            if version or tables:
                log.warning(
                    "search index %s: schema version %d, this version of iiif-shim keeps %d: "
                    "emptied and made again (every object is indexed again)",
                    self.path,
                    version,
                    SCHEMA,
                )
            for table in tables:  # virtual tables first: they drop their shadow tables
                exists = conn.execute(
                    "SELECT 1 FROM sqlite_master WHERE type = 'table' AND name = ?", [table]
                ).fetchone()
                if exists:
                    conn.execute(f"DROP TABLE {_quoted(table)}")
            for statement in _TABLES.split(";"):
                if statement.strip():
                    conn.execute(statement)
            conn.execute(f"PRAGMA user_version = {SCHEMA}")
            conn.execute("COMMIT")
        except BaseException:
            conn.execute("ROLLBACK")
            raise

    def _call(self, work: Callable[[sqlite3.Connection], T]) -> T:
        retried = False
        while True:
            try:
                with self._pool.connection() as (conn, _):
                    return work(conn)
            except sqlite3.Error as exc:
                if not retried and _damaged(exc):
                    retried = True
                    self._mend(exc)
                    continue
                raise IndexUnavailable(
                    "the search index (SQLite) cannot be used now",
                    detail=f"SQLite {self.path}: {exc}",
                ) from exc

    def _mend(self, error: sqlite3.Error) -> None:
        """After ``error`` said the file is damaged (or no database): the connections open on
        it are dropped, and the file at :attr:`path` is checked anew (``PRAGMA quick_check``:
        another process may have set it aside and made a new one already); if it is damaged,
        it is renamed ``<name>.damaged-<time>`` with its ``-wal`` and ``-shm`` (kept for a
        look, never read again), logged, and the next connection makes a new, empty index
        (every object is indexed again). A file that cannot be checked now (locked) is left."""
        with self._mending:
            self._pool.renew()
            try:
                before = self.path.stat()
            except OSError:
                return  # gone already: the next connection makes it
            if not self._fails_check():
                return
            try:
                now = self.path.stat()
                if (now.st_dev, now.st_ino) != (before.st_dev, before.st_ino):
                    return  # replaced meanwhile, by another process
                aside = f"{self.path}.damaged-{time.strftime('%Y%m%dT%H%M%S')}"
                for suffix in ("-wal", "-shm", ""):  # the file itself last: it is the sign
                    with suppress(FileNotFoundError):
                        os.rename(f"{self.path}{suffix}", f"{aside}{suffix}")
            except OSError as exc:
                log.error(
                    "search index %s is damaged (%s) and cannot be set aside: %s",
                    self.path,
                    error,
                    exc,
                )
                return
            self._ready = False
            log.warning(
                "search index %s is damaged (%s): set aside as %s, a new one is made "
                "(every object is indexed again)",
                self.path,
                error,
                aside,
            )

    def _fails_check(self) -> bool:
        """Whether the file at :attr:`path` is damaged, as a new connection finds it."""
        try:
            conn = sqlite3.connect(self.path, timeout=self.timeout, isolation_level=None)
        except sqlite3.Error:
            return False
        try:
            rows = conn.execute("PRAGMA quick_check").fetchall()
            return rows != [("ok",)]
        except sqlite3.Error as exc:
            return _damaged(exc)
        finally:
            _close(conn)

    @contextmanager
    def _transaction(self, conn: sqlite3.Connection, write: bool) -> Iterator[None]:
        conn.execute("BEGIN IMMEDIATE" if write else "BEGIN")
        try:
            yield
        except BaseException:
            if conn.in_transaction:
                conn.execute("ROLLBACK")
            raise
        conn.execute("COMMIT")

    @staticmethod
    def _take_out(
        conn: sqlite3.Connection, owner: int, select: str, args: Sequence[object]
    ) -> tuple[list[str], list[tuple[str, str]]]:
        """Delete the pages ``select`` (their id and body) finds, from ``pages`` and from the
        full-text index (a contentless one is told the values it indexed); their terms and
        written forms."""
        terms: list[str] = []
        forms: list[tuple[str, str]] = []
        for page, body in conn.execute(select, args).fetchall():
            kept = engine.packed_terms(body)
            terms += kept
            forms += engine.written_forms(_texts(body))
            conn.execute(
                "INSERT INTO page_terms (page_terms, rowid, owner, terms) "
                "VALUES ('delete', ?, ?, ?)",
                [page, str(owner), " ".join(kept)],
            )
            conn.execute("DELETE FROM pages WHERE id = ?", [page])
        return terms, forms

    # --- the Index protocol --------------------------------------------------------------

    def state(self, obj: str) -> IndexedObject | None:
        if not engine.storable(obj):
            return None

        def work(conn: sqlite3.Connection) -> IndexedObject | None:
            rows = conn.execute(
                "SELECT o.signature, o.checked, p.canvas, p.stamp FROM objects o "
                "LEFT JOIN pages p ON p.object = o.id WHERE o.name = ?",
                [obj],
            ).fetchall()
            if not rows:
                return None
            stamps = {row[2]: row[3] for row in rows if row[2] is not None}
            return IndexedObject(rows[0][0], rows[0][1], stamps)

        return self._call(work)

    def store(
        self,
        obj: str,
        signature: str,
        pages: Sequence[StoredPage],
        removed: Sequence[int] = (),
        checked: float | None = None,
    ) -> None:
        engine.check_name(obj)
        when = time.time() if checked is None else checked
        packed, added, added_forms = engine.packed_pages(pages)
        rows = [
            (one.page.canvas, one.page.stamp, len(one.page.page.lines), one.body,
             " ".join(one.terms))
            for one in packed
        ]  # fmt: skip
        gone = sorted(set(removed) | {one.page.canvas for one in packed})
        generation = engine.generation()

        def work(conn: sqlite3.Connection) -> None:
            with self._transaction(conn, write=True):
                conn.execute(
                    "INSERT INTO objects (name, signature, checked, generation) "
                    "VALUES (?, ?, ?, ?) ON CONFLICT (name) DO UPDATE SET "
                    "signature = excluded.signature, checked = excluded.checked, "
                    "generation = excluded.generation",
                    [obj, signature, when, generation],
                )
                owner = conn.execute("SELECT id FROM objects WHERE name = ?", [obj]).fetchone()[0]
                old: list[str] = []
                old_forms: list[tuple[str, str]] = []
                for chunk in _chunks(gone):
                    marks = ",".join("?" * len(chunk))
                    taken, forms = self._take_out(
                        conn,
                        owner,
                        f"SELECT id, body FROM pages WHERE object = ? AND canvas IN ({marks})",
                        [owner, *chunk],
                    )
                    old += taken
                    old_forms += forms
                for canvas, stamp, lines, body, terms in rows:
                    cursor = conn.execute(
                        "INSERT INTO pages (object, canvas, stamp, lines, body) "
                        "VALUES (?, ?, ?, ?, ?)",
                        [owner, canvas, stamp, lines, body],
                    )
                    conn.execute(
                        "INSERT INTO page_terms (rowid, owner, terms) VALUES (?, ?, ?)",
                        [cursor.lastrowid, str(owner), terms],
                    )
                changes = engine.count_changes(old, added)
                conn.executemany(
                    "INSERT INTO terms (object, term, count) VALUES (?, ?, ?) "
                    "ON CONFLICT (object, term) DO UPDATE SET count = count + excluded.count",
                    [(owner, term, n) for term, n in changes.items()],
                )
                conn.executemany(
                    "DELETE FROM terms WHERE object = ? AND term = ? AND count <= 0",
                    [(owner, term) for term, n in changes.items() if n < 0],
                )
                form_changes = engine.count_changes(old_forms, added_forms)
                conn.executemany(
                    "INSERT INTO forms (object, term, form, count) VALUES (?, ?, ?, ?) "
                    "ON CONFLICT (object, term, form) DO UPDATE SET "
                    "count = count + excluded.count",
                    [(owner, term, form, n) for (term, form), n in form_changes.items()],
                )
                conn.executemany(
                    "DELETE FROM forms WHERE object = ? AND term = ? AND form = ? AND count <= 0",
                    [(owner, term, form) for (term, form), n in form_changes.items() if n < 0],
                )

        self._call(work)

    def touch(self, obj: str, checked: float | None = None) -> None:
        engine.check_name(obj)
        when = time.time() if checked is None else checked
        self._call(
            lambda conn: conn.execute("UPDATE objects SET checked = ? WHERE name = ?", [when, obj])
        )

    def drop(self, obj: str) -> None:
        engine.check_name(obj)

        def work(conn: sqlite3.Connection) -> None:
            with self._transaction(conn, write=True):
                row = conn.execute("SELECT id FROM objects WHERE name = ?", [obj]).fetchone()
                if row is None:
                    return
                owner = row[0]
                self._take_out(conn, owner, "SELECT id, body FROM pages WHERE object = ?", [owner])
                conn.execute("DELETE FROM terms WHERE object = ?", [owner])
                conn.execute("DELETE FROM forms WHERE object = ?", [owner])
                conn.execute("DELETE FROM objects WHERE id = ?", [owner])

        self._call(work)

    def head(self, obj: str) -> ObjectHead | None:
        if not engine.storable(obj):
            return None
        row = self._call(
            lambda conn: conn.execute(
                "SELECT signature, checked, generation FROM objects WHERE name = ?", [obj]
            ).fetchone()
        )
        return None if row is None else ObjectHead(*row)

    def packed(
        self, obj: str, canvases: Sequence[int] | None = None
    ) -> tuple[int, list[PackedPage]]:
        wanted = None if canvases is None else sorted(set(canvases))
        if wanted == [] or not engine.storable(obj):
            return 0, []

        def work(conn: sqlite3.Connection) -> tuple[int, list[PackedPage]]:
            with self._transaction(conn, write=False):
                row = conn.execute(
                    "SELECT id, generation FROM objects WHERE name = ?", [obj]
                ).fetchone()
                if row is None:
                    return 0, []
                sql = "SELECT canvas, stamp, body FROM pages WHERE object = ?"
                if wanted is None:
                    found = conn.execute(sql + " ORDER BY canvas", [row[0]]).fetchall()
                else:
                    found = []
                    for chunk in _chunks(wanted):
                        marks = ",".join("?" * len(chunk))
                        found += conn.execute(
                            f"{sql} AND canvas IN ({marks}) ORDER BY canvas", [row[0], *chunk]
                        ).fetchall()
            return row[1], [PackedPage(*kept) for kept in found]

        return self._call(work)

    def matching(self, obj: str, query: Query) -> list[int]:
        prepared = engine.prepare(query)
        if prepared is None or not engine.storable(obj):
            return []

        def work(conn: sqlite3.Connection) -> list[int]:
            row = conn.execute("SELECT id FROM objects WHERE name = ?", [obj]).fetchone()
            if row is None:
                return []
            if prepared.empty:
                found = conn.execute(
                    "SELECT canvas FROM pages WHERE object = ? AND lines > 0 ORDER BY canvas",
                    [row[0]],
                )
            else:
                found = conn.execute(
                    "SELECT p.canvas FROM page_terms JOIN pages p ON p.id = page_terms.rowid "
                    "WHERE page_terms MATCH ? ORDER BY p.canvas",
                    [match_expression(row[0], prepared)],
                )
            return [canvas for (canvas,) in found]

        return self._call(work)

    def pages(self, obj: str, canvases: Sequence[int]) -> list[StoredPage]:
        wanted = sorted(set(canvases))
        if not wanted or not engine.storable(obj):
            return []

        def work(conn: sqlite3.Connection) -> list[tuple[int, str, bytes]]:
            rows: list[tuple[int, str, bytes]] = []
            with self._transaction(conn, write=False):
                for chunk in _chunks(wanted):
                    marks = ",".join("?" * len(chunk))
                    rows += conn.execute(
                        f"SELECT p.canvas, p.stamp, p.body FROM pages p "
                        f"JOIN objects o ON o.id = p.object "
                        f"WHERE o.name = ? AND p.canvas IN ({marks}) ORDER BY p.canvas",
                        [obj, *chunk],
                    ).fetchall()
            return rows

        return [
            StoredPage(canvas, stamp, engine.unpack(body))
            for canvas, stamp, body in self._call(work)
        ]

    def terms(self, obj: str, prefix: str, least: int, limit: int) -> list[tuple[str, int]]:
        if (prefix and not engine.is_term(prefix)) or not engine.storable(obj):
            return []
        low, high = engine.prefix_bounds(engine.index_term(prefix))
        sql = (
            "SELECT t.term, t.count FROM terms t JOIN objects o ON o.id = t.object "
            "WHERE o.name = ? AND t.term >= ? AND t.count >= ?"
        )
        args: list[object] = [obj, low, least]
        if high is not None:
            sql += " AND t.term < ?"
            args.append(high)
        sql += " ORDER BY t.term LIMIT ?"
        args.append(max(limit, 0))

        def work(conn: sqlite3.Connection) -> list[tuple[str, int]]:
            with self._transaction(conn, write=False):
                found: list[tuple[str, int]] = conn.execute(sql, args).fetchall()
                forms: dict[str, list[tuple[str, int]]] = {}
                for chunk in _chunks([term for term, _ in found]):
                    marks = ",".join("?" * len(chunk))
                    for term, form, n in conn.execute(
                        f"SELECT f.term, f.form, f.count FROM forms f "
                        f"JOIN objects o ON o.id = f.object "
                        f"WHERE o.name = ? AND f.term IN ({marks})",
                        [obj, *chunk],
                    ):
                        forms.setdefault(term, []).append((form, n))
            return [(engine.most_written(t, n, forms.get(t, ())), n) for t, n in found]

        return self._call(work)

    def objects(self) -> list[str]:
        return self._call(
            lambda conn: [n for (n,) in conn.execute("SELECT name FROM objects ORDER BY name")]
        )

    def size(self) -> int:
        self._call(lambda conn: None)  # made, if it was not
        total = 0
        for suffix in ("", "-wal"):
            with suppress(FileNotFoundError):
                total += Path(f"{self.path}{suffix}").stat().st_size
        return total

    def close(self) -> None:
        self._pool.close()


def _close(conn: sqlite3.Connection) -> None:
    try:
        conn.close()
    except sqlite3.Error as exc:
        log.debug("search index: closing a connection: %s", exc)


def _damaged(exc: sqlite3.Error) -> bool:
    """Whether ``exc`` says the file is damaged or no SQLite database at all."""
    code = getattr(exc, "sqlite_errorcode", None)
    return code is not None and code & 0xFF in (sqlite3.SQLITE_CORRUPT, sqlite3.SQLITE_NOTADB)


def _make_private(path: Path) -> None:
    """Make the file ``path`` (empty: an SQLite database of nothing yet) readable and
    writable by its owner alone, unless it exists: SQLite makes its ``-wal`` and ``-shm``
    with the same permissions, and the index holds the text of restricted objects too. One
    that cannot be made is left to SQLite to say so."""
    with suppress(OSError):
        os.close(os.open(path, os.O_WRONLY | os.O_CREAT | os.O_EXCL | os.O_CLOEXEC, 0o600))


def _texts(body: bytes) -> list[str]:
    return [text for line in engine.page_words(body).texts for text in line]


def _chunks(values: Sequence[T]) -> Iterator[Sequence[T]]:
    for start in range(0, len(values), CHUNK):
        yield values[start : start + CHUNK]
