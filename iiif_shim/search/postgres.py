"""The PostgreSQL engine of the search index (``search.postgres``): one database shared by
every machine given the same URL, through psycopg 3 (the ``postgres`` extra).

Tables, in the database's search path (schema :data:`SCHEMA`, in ``iiif_search_schema``; a
database of another version has them dropped and made again, logged, under an advisory lock so
that processes starting together make them once)::

    iiif_search_objects(name, signature, checked, generation)   generation: random, each store
    iiif_search_pages(object, canvas, stamp, lines, body, exact, tsv)   GIN on tsv; body:
        engine.pack (the page and its terms, whose counts go when it is replaced)
    iiif_search_terms(object, term, count)                                    for autocomplete
    iiif_search_forms(object, term, form, count)    its written forms (those not the term)

Text columns are ``COLLATE "C"``: code point order, as SQLite's, for autocomplete's order and
its prefix ranges. ``tsv`` is the page's folded terms (``engine.page_terms``, the one
normalisation both engines share) made into a ``tsvector`` directly, from its text form with
each term quoted and its positions given (``'term':1,7``), never through PostgreSQL's parser,
dictionaries or ``unaccent``: those would cut and fold the text their own way (by the
database's locale, dropping words over 2 KB with only a notice), and the same query could find
other pages than on SQLite. A query is a ``tsquery`` made the same way (``'a' & ('b' <-> 'c')
& 'pre':*``, every quote doubled), passed as a parameter, never written into the SQL.

A ``tsvector`` keeps at most 256 positions of a term and none past 16,383, so on a page with
more terms than that, or a term more often than that, a phrase could be missed: such a page is
kept without positions (``exact`` false) and a phrase is looked for there as all of its words
(the hit finder looks for the phrase itself). A page whose distinct terms pass a ``tsvector``'s
1 MB has none (``tsv`` NULL) and is looked at for every query. Either way a search never misses
a page; it may only look at more.

Connections: pooled (``engine.Pool``), each used by one thread at a time, threads calling at
once each with one of their own; each made with ``connect_timeout`` and a
``statement_timeout`` and ``lock_timeout`` of :data:`~iiif_shim.search.engine.TIMEOUT`
seconds and TCP keepalives (a server gone silent is noticed). A connection that failed is
closed; the next call makes a new one, and a call that finds its idle connection cut (the
server restarted) tries once more on a new one. Every driver error is raised as
:class:`~iiif_shim.search.stored.IndexUnavailable`: its message names the engine only, its
``detail`` (logged) the database as ``display_url`` shows it and the driver's words, never the
URL's password. Writes of one object are serialised by its row in ``iiif_search_objects``
(locked first), so two machines storing it at once keep the term counts right."""

from __future__ import annotations

import logging
import time
from collections.abc import Callable, Sequence
from typing import Any, TypeVar

import psycopg

from iiif_shim.base.redaction import display_url, url_passwords
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
T = TypeVar("T")
MAX_POSITIONS = 256  # positions of one term a tsvector keeps
MAX_POSITION = 16383  # the last position a tsvector keeps
MAX_LEXEMES = 1_000_000  # bytes of distinct terms in one tsvector (PostgreSQL: 1 MB)
_LOCK = 0x11F5EA4C  # the advisory lock of making the tables (any fixed number of ours)
_TABLES = (
    "iiif_search_forms",
    "iiif_search_terms",
    "iiif_search_pages",
    "iiif_search_objects",
    "iiif_search_schema",
)

_CREATE = """
CREATE TABLE iiif_search_objects (
    name text COLLATE "C" PRIMARY KEY,
    signature text NOT NULL,
    checked double precision NOT NULL,
    generation bigint NOT NULL
);
CREATE TABLE iiif_search_pages (
    object text COLLATE "C" NOT NULL REFERENCES iiif_search_objects (name) ON DELETE CASCADE,
    canvas integer NOT NULL,
    stamp text NOT NULL,
    lines integer NOT NULL,
    body bytea NOT NULL,
    exact boolean NOT NULL,
    tsv tsvector,
    PRIMARY KEY (object, canvas)
);
CREATE INDEX iiif_search_pages_tsv ON iiif_search_pages USING gin (tsv);
CREATE TABLE iiif_search_terms (
    object text COLLATE "C" NOT NULL REFERENCES iiif_search_objects (name) ON DELETE CASCADE,
    term text COLLATE "C" NOT NULL,
    count integer NOT NULL,
    PRIMARY KEY (object, term)
);
CREATE TABLE iiif_search_forms (
    object text COLLATE "C" NOT NULL REFERENCES iiif_search_objects (name) ON DELETE CASCADE,
    term text COLLATE "C" NOT NULL,
    form text COLLATE "C" NOT NULL,
    count integer NOT NULL,
    PRIMARY KEY (object, term, form)
);
CREATE TABLE iiif_search_schema (version integer NOT NULL);
"""


def _quoted(term: str) -> str:
    return "'" + term.replace("\\", "\\\\").replace("'", "''") + "'"


def tsvector(terms: Sequence[str]) -> tuple[str | None, bool]:
    """The text form of the ``tsvector`` of a page's ``terms`` (in reading order), and whether
    it keeps their positions (``exact``); None when the terms are too many for one."""
    positions: dict[str, list[int]] = {}
    for number, term in enumerate(terms, 1):
        positions.setdefault(term, []).append(number)
    if sum(len(term.encode("utf-8")) for term in positions) > MAX_LEXEMES:
        return None, False
    exact = len(terms) <= MAX_POSITION and all(
        len(found) <= MAX_POSITIONS for found in positions.values()
    )
    if not exact:
        return " ".join(_quoted(term) for term in positions), False
    return " ".join(
        f"{_quoted(term)}:{','.join(map(str, found))}" for term, found in positions.items()
    ), True


def tsquery(query: engine.Prepared, phrases: bool = True) -> str:
    """The text form of the ``tsquery`` of ``query`` (not empty); ``phrases`` False: a phrase
    as all of its words (for the pages kept without positions)."""
    parts = (
        [_quoted(term) for term in query.words] if phrases else [_quoted(t) for t in query.loose()]
    )
    if phrases:
        parts += ["(" + " <-> ".join(_quoted(t) for t in p) + ")" for p in query.phrases]
    parts += [_quoted(prefix) + ":*" for prefix in query.prefixes]
    return " & ".join(parts)


class PostgresIndex:
    """The index in the PostgreSQL database at ``dsn``; see the module's docstring. Nothing is
    connected until the first call (a database down when the server starts is met as one
    that goes down later)."""

    def __init__(self, dsn: str, timeout: float = engine.TIMEOUT) -> None:
        self._dsn = dsn
        self.where = display_url(dsn)
        self._passwords = sorted(url_passwords(dsn), key=len, reverse=True)
        self.timeout = timeout
        self._ready = False
        self._pool: engine.Pool[psycopg.Connection[Any]] = engine.Pool(self._connect, _close)

    # --- connections -------------------------------------------------------------------

    def _connect(self) -> psycopg.Connection[Any]:
        ms = int(self.timeout * 1000)
        conn = psycopg.connect(
            self._dsn,
            autocommit=True,
            connect_timeout=max(2, int(self.timeout)),
            options=f"-c statement_timeout={ms} -c lock_timeout={ms}",
            application_name="iiif-shim",
            keepalives=1,
            keepalives_idle=30,
            keepalives_interval=10,
            keepalives_count=3,
        )
        try:
            if not self._ready:
                self._setup(conn)
                self._ready = True
        except BaseException:
            conn.close()
            raise
        return conn

    def _setup(self, conn: psycopg.Connection[Any]) -> None:
        with conn.transaction():
            conn.execute("SELECT pg_advisory_xact_lock(%s)", [_LOCK])
            found = conn.execute("SELECT to_regclass('iiif_search_schema')").fetchone()
            version = None
            if found is not None and found[0] is not None:
                row = conn.execute("SELECT max(version) FROM iiif_search_schema").fetchone()
                version = row[0] if row else None
                if version == SCHEMA:
                    return
            if version is not None:
                log.warning(
                    "search index %s: schema version %s, this version of iiif-shim keeps %d: "
                    "dropped and made again (every object is indexed again)",
                    self.where,
                    version,
                    SCHEMA,
                )
            for table in _TABLES:
                conn.execute(f"DROP TABLE IF EXISTS {table} CASCADE")
            for statement in _CREATE.split(";"):
                if statement.strip():
                    conn.execute(statement)
            conn.execute("INSERT INTO iiif_search_schema (version) VALUES (%s)", [SCHEMA])

    def _call(self, work: Callable[[psycopg.Connection[Any]], T]) -> T:
        retried = False
        while True:
            used: list[tuple[psycopg.Connection[Any], bool]] = []
            try:
                with self._pool.connection() as (conn, reused):
                    used.append((conn, reused))
                    return work(conn)
            except psycopg.OperationalError as exc:
                # an idle connection the server cut since (it restarted): once more, anew
                if used and used[0][1] and used[0][0].closed and not retried:
                    retried = True
                    continue
                raise self._unavailable(exc) from exc
            except psycopg.Error as exc:
                raise self._unavailable(exc) from exc

    def _unavailable(self, exc: psycopg.Error) -> IndexUnavailable:
        said = str(exc).strip()
        for password in self._passwords:
            said = said.replace(password, "***")
        if isinstance(exc, psycopg.OperationalError):
            message = "the search index (PostgreSQL) does not answer"
        else:
            message = "the search index (PostgreSQL) refused a request"
        return IndexUnavailable(
            message, detail=f"PostgreSQL {self.where}: {type(exc).__name__}: {said}"
        )

    # --- the Index protocol --------------------------------------------------------------

    def state(self, obj: str) -> IndexedObject | None:
        if not engine.storable(obj):
            return None

        def work(conn: psycopg.Connection[Any]) -> IndexedObject | None:
            rows = conn.execute(
                "SELECT o.signature, o.checked, p.canvas, p.stamp FROM iiif_search_objects o "
                "LEFT JOIN iiif_search_pages p ON p.object = o.name WHERE o.name = %s",
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
        rows = []
        for one in packed:
            vector, exact = tsvector(list(one.terms))
            lines = len(one.page.page.lines)
            rows.append((obj, one.page.canvas, one.page.stamp, lines, one.body, exact, vector))
        gone = sorted(set(removed) | {one.page.canvas for one in packed})
        generation = engine.generation()

        def work(conn: psycopg.Connection[Any]) -> None:
            with conn.transaction():
                conn.execute(  # locks the object's row: its writes one after the other
                    "INSERT INTO iiif_search_objects (name, signature, checked, generation) "
                    "VALUES (%s, %s, %s, %s) ON CONFLICT (name) DO UPDATE SET "
                    "signature = excluded.signature, checked = excluded.checked, "
                    "generation = excluded.generation",
                    [obj, signature, when, generation],
                )
                old: list[str] = []
                old_forms: list[tuple[str, str]] = []
                if gone:
                    for (body,) in conn.execute(
                        "DELETE FROM iiif_search_pages WHERE object = %s AND canvas = ANY(%s) "
                        "RETURNING body",
                        [obj, gone],
                    ):
                        old += engine.packed_terms(body)
                        old_forms += engine.written_forms(
                            [text for line in engine.page_words(body).texts for text in line]
                        )
                if rows:
                    with conn.cursor() as cursor:
                        cursor.executemany(
                            "INSERT INTO iiif_search_pages "
                            "(object, canvas, stamp, lines, body, exact, tsv) "
                            "VALUES (%s, %s, %s, %s, %s, %s, %s::tsvector)",
                            rows,
                        )
                changes = engine.count_changes(old, added)
                if changes:
                    conn.execute(
                        "INSERT INTO iiif_search_terms (object, term, count) "
                        "SELECT %s, t, n FROM unnest(%s::text[], %s::integer[]) AS c (t, n) "
                        "ON CONFLICT (object, term) DO UPDATE "
                        "SET count = iiif_search_terms.count + excluded.count",
                        [obj, list(changes), list(changes.values())],
                    )
                fewer = [term for term, n in changes.items() if n < 0]
                if fewer:
                    conn.execute(
                        "DELETE FROM iiif_search_terms "
                        "WHERE object = %s AND term = ANY(%s::text[]) AND count <= 0",
                        [obj, fewer],
                    )
                forms = engine.count_changes(old_forms, added_forms)
                if forms:
                    conn.execute(
                        "INSERT INTO iiif_search_forms (object, term, form, count) "
                        "SELECT %s, t, f, n "
                        "FROM unnest(%s::text[], %s::text[], %s::integer[]) AS c (t, f, n) "
                        "ON CONFLICT (object, term, form) DO UPDATE "
                        "SET count = iiif_search_forms.count + excluded.count",
                        [obj, [t for t, _ in forms], [f for _, f in forms], list(forms.values())],
                    )
                    conn.execute(
                        "DELETE FROM iiif_search_forms "
                        "WHERE object = %s AND term = ANY(%s::text[]) AND count <= 0",
                        [obj, sorted({t for (t, _), n in forms.items() if n < 0})],
                    )

        self._call(work)

    def touch(self, obj: str, checked: float | None = None) -> None:
        engine.check_name(obj)
        when = time.time() if checked is None else checked
        self._call(
            lambda conn: conn.execute(
                "UPDATE iiif_search_objects SET checked = %s WHERE name = %s", [when, obj]
            )
        )

    def drop(self, obj: str) -> None:
        engine.check_name(obj)
        self._call(  # pages, terms and forms go with it (ON DELETE CASCADE)
            lambda conn: conn.execute("DELETE FROM iiif_search_objects WHERE name = %s", [obj])
        )

    def head(self, obj: str) -> ObjectHead | None:
        if not engine.storable(obj):
            return None
        row = self._call(
            lambda conn: conn.execute(
                "SELECT signature, checked, generation FROM iiif_search_objects WHERE name = %s",
                [obj],
            ).fetchone()
        )
        return None if row is None else ObjectHead(*row)

    def packed(
        self, obj: str, canvases: Sequence[int] | None = None
    ) -> tuple[int, list[PackedPage]]:
        wanted = None if canvases is None else sorted(set(canvases))
        if wanted == [] or not engine.storable(obj):
            return 0, []
        sql = (
            "SELECT o.generation, p.canvas, p.stamp, p.body FROM iiif_search_objects o "
            "LEFT JOIN iiif_search_pages p ON p.object = o.name"
        )
        args: list[object] = []
        if wanted is not None:
            sql += " AND p.canvas = ANY(%s)"
            args.append(wanted)
        sql += " WHERE o.name = %s ORDER BY p.canvas"
        args.append(obj)
        rows = self._call(lambda conn: conn.execute(sql, args).fetchall())
        if not rows:
            return 0, []
        return rows[0][0], [
            PackedPage(canvas, stamp, body) for _, canvas, stamp, body in rows if canvas is not None
        ]

    def matching(self, obj: str, query: Query) -> list[int]:
        prepared = engine.prepare(query)
        if prepared is None or not engine.storable(obj):
            return []
        sql = "SELECT canvas FROM iiif_search_pages WHERE object = %s AND lines > 0"
        args: list[object] = [obj]
        if not prepared.empty:
            sql += (
                " AND (tsv IS NULL OR CASE WHEN exact THEN tsv @@ %s::tsquery "
                "ELSE tsv @@ %s::tsquery END)"
            )
            args += [tsquery(prepared), tsquery(prepared, phrases=False)]
        sql += " ORDER BY canvas"
        return self._call(lambda conn: [canvas for (canvas,) in conn.execute(sql, args)])

    def pages(self, obj: str, canvases: Sequence[int]) -> list[StoredPage]:
        wanted = sorted(set(canvases))
        if not wanted or not engine.storable(obj):
            return []
        rows = self._call(
            lambda conn: conn.execute(
                "SELECT canvas, stamp, body FROM iiif_search_pages "
                "WHERE object = %s AND canvas = ANY(%s) ORDER BY canvas",
                [obj, wanted],
            ).fetchall()
        )
        return [StoredPage(canvas, stamp, engine.unpack(body)) for canvas, stamp, body in rows]

    def terms(self, obj: str, prefix: str, least: int, limit: int) -> list[tuple[str, int]]:
        if (prefix and not engine.is_term(prefix)) or not engine.storable(obj):
            return []
        low, high = engine.prefix_bounds(engine.index_term(prefix))
        sql = (
            "SELECT term, count FROM iiif_search_terms "
            "WHERE object = %s AND term >= %s AND count >= %s"
        )
        args: list[object] = [obj, low, least]
        if high is not None:
            sql += " AND term < %s"
            args.append(high)
        sql += " ORDER BY term LIMIT %s"
        args.append(max(limit, 0))

        def work(conn: psycopg.Connection[Any]) -> list[tuple[str, int]]:
            with conn.transaction():
                found: list[tuple[str, int]] = conn.execute(sql, args).fetchall()
                forms: dict[str, list[tuple[str, int]]] = {}
                for term, form, n in conn.execute(
                    "SELECT term, form, count FROM iiif_search_forms "
                    "WHERE object = %s AND term = ANY(%s::text[])",
                    [obj, [term for term, _ in found]],
                ):
                    forms.setdefault(term, []).append((form, n))
            return [(engine.most_written(t, n, forms.get(t, ())), n) for t, n in found]

        return self._call(work)

    def objects(self) -> list[str]:
        return self._call(
            lambda conn: [
                n for (n,) in conn.execute("SELECT name FROM iiif_search_objects ORDER BY name")
            ]
        )

    def size(self) -> int:
        row = self._call(
            lambda conn: conn.execute(
                "SELECT coalesce(sum(pg_total_relation_size(t::regclass)), 0)::bigint "
                "FROM unnest(%s::text[]) AS t",
                [list(_TABLES)],
            ).fetchone()
        )
        return int(row[0]) if row else 0

    def close(self) -> None:
        self._pool.close()


def _close(conn: psycopg.Connection[Any]) -> None:
    try:
        conn.close()
    except psycopg.Error as exc:
        log.debug("search index: closing a connection: %s", exc)
