"""``type: csv``: one row per canvas in a CSV file (or at an http(s) URL), the institution's own
export from its catalogue or a spreadsheet.

Each row names its object and its image (a IIIF identifier of this shim); the rows of one object
are its canvases, in file order, or sorted by the ``order`` column when one is configured
(numerically when every value is a number, else naturally: ``p2`` before ``p10``; rows without
a value last). The object's own fields (label, summary, rights, ...) and its metadata come from
its first row in the file; a later row naming another ``access`` is said (left out like a value
that cannot be used: its page's text is as open as the object's). A ``range`` column groups
consecutive canvases into ranges. A ``text`` column names each canvas's text (its OCR: ALTO,
hOCR or plain): a path relative to
the CSV file's folder, which it never leaves (a ``..`` or an absolute path elsewhere, or a link
leading out, is refused), or an http(s) URL on the CSV's own server or under one of its
``text_origins`` (a CSV read from a file: only those); for a CSV read from a URL a path is
relative to that URL. A text it may not read is left out like any bad value (``texts.py``
reads and stamps them for the search index).

The whole file is read and parsed in the thread pool, bounded in bytes (``max_bytes``) and rows
(``max_rows``), and kept parsed: a file is read again when its size or modification time
changes, a URL is fetched again (with the upstream client, as a conditional request) once
``refresh`` seconds have passed; when that refetch fails, the last good copy stays in use. Every
value is treated as hostile text: :func:`~..records.build_record` bounds and checks it.

A row without an image is left out (lenient) and an object with no row left is a 404 naming
why; a value that cannot be used is left out, logged once with its line and column
(``records.py`` decides; a cell longer than a value may be is one of those, however long: the
file stays readable). A row with values but no object name is left out, counted and logged
once per read of the file. A missing `object` or `image` column, a configured column the header
has twice (ambiguous) and, with ``presentation.strict``, any configured column the header lacks
is a 502 naming the source and the column, for the objects of this source only (names that are
not in the file are still answered as not this source's); leniently, a missing optional column
is left out; another column the header has twice is only warned about. Records are built in the
thread pool, each value placed (line, column) as it is built, from the rows it is built from.
The survey (``check-config``, ``/health/ready``) builds every object of the table on the
survey thread (``SurveyThread``), once per table read, and looks at each text file it names
(a stat each): one that is not there, leads out of the folder or is not a file is listed.
"""

from __future__ import annotations

import asyncio
import codecs
import csv
import dataclasses
import io
import logging
import math
import os
from collections.abc import Sequence
from dataclasses import dataclass, field
from typing import Any
from urllib.parse import urljoin

from iiif_shim.base.errors import (
    BackendError,
    BadCsv,
    BadRecord,
    NotFound,
    OversizeAnswer,
    ShimError,
    UnreadableSource,
    UpstreamClientError,
)
from iiif_shim.base.files import read_head
from iiif_shim.base.text import natural_key
from iiif_shim.cache.memory import SingleFlight
from iiif_shim.model.text import TextFile
from iiif_shim.presentation.records import (
    OBJECT_FIELDS,
    ObjectRecord,
    RecordError,
    Skipped,
    TextRef,
    build_record,
    check_name,
)
from iiif_shim.presentation.sources.base import (
    ObjectSource,
    Problem,
    SourceContext,
    Stopped,
    Survey,
    SurveyStopped,
)
from iiif_shim.presentation.sources.settings import (
    ROW_FIELDS,
    CsvSourceSettings,
)
from iiif_shim.presentation.sources.texts import (
    TextUrls,
    file_problem,
    foreign,
    format_of,
    inside,
    is_url,
    read_file,
    shown,
    stamp_file,
)
from iiif_shim.upstream.client import Upstream
from iiif_shim.upstream.urltemplate import UrlTemplate

log = logging.getLogger("iiif_shim")

STALE_RETRY = 30.0  # seconds before a failed refetch of a URL is tried again


@dataclass(frozen=True, slots=True)  # no per-row __dict__: tables can have a million rows
class Row:
    line: int  # where the row ends in the file (for error messages)
    values: tuple[str, ...]  # by CsvColumns.wanted(); "" where a column is not configured


@dataclass
class Table:
    objects: dict[str, list[Row]]  # object name -> its rows, in file order
    names: list[str]  # valid object names, in order of first appearance
    missing: list[tuple[str, str]] = field(default_factory=list)  # (setting, column) not found
    ambiguous: list[tuple[str, str]] = field(default_factory=list)  # configured, header has 2+
    doubled: list[str] = field(default_factory=list)  # other columns the header has 2+ times
    unnamed: list[int] = field(default_factory=list)  # lines of rows with values, no object


def parse_table(raw: bytes, settings: CsvSourceSettings, who: str, where: str) -> Table:
    """The rows of a CSV by object; BackendError (502) for anything it cannot read. Blocking."""
    if len(raw) > settings.max_bytes:
        raise OversizeAnswer(f"{who}: {where} is larger than max_bytes ({settings.max_bytes})")
    text = _decode(raw, settings.encoding, who, where)
    if csv.field_size_limit() < settings.max_bytes:  # one long cell: left out, not the file
        csv.field_size_limit(settings.max_bytes)
    reader = csv.reader(io.StringIO(text, newline=""), delimiter=settings.delimiter)
    try:
        header = next(reader, None)
        if header is None:
            raise BadCsv(f"{who}: {where} is empty (no header row)")
        position: dict[str, int] = {}
        seen: dict[str, int] = {}
        for i, name in enumerate(header):
            position.setdefault(name.strip(), i)
            seen[name.strip()] = seen.get(name.strip(), 0) + 1
        columns = settings.columns
        missing = [(key, col) for key, col in columns.named() if col not in position]
        ambiguous = [(key, col) for key, col in columns.named() if seen.get(col, 0) > 1]
        configured = {col for _, col in columns.named()}
        doubled = [col for col, n in seen.items() if n > 1 and col not in configured]
        if columns.object not in position:
            raise _no_columns(who, where, missing)
        at = position[columns.object]
        wanted = [position.get(col) if col else None for col in columns.wanted()]
        objects: dict[str, list[Row]] = {}
        unnamed: list[int] = []
        count = 0
        for row in reader:
            count += 1
            if count > settings.max_rows:
                raise OversizeAnswer(
                    f"{who}: {where} has more than max_rows ({settings.max_rows}) rows",
                )
            name = row[at].strip() if at < len(row) else ""
            if not name:
                if any(cell.strip() for cell in row):  # (blank rows: a spreadsheet's tail)
                    unnamed.append(reader.line_num)
                continue
            values = tuple(row[i] if i is not None and i < len(row) else "" for i in wanted)
            objects.setdefault(name, []).append(Row(reader.line_num, values))
    except csv.Error as exc:
        raise BadCsv(
            f"{who}: {where} is not valid CSV (line {reader.line_num})",
            detail=str(exc),
        ) from None
    names = [name for name in objects if check_name(name) is None]
    return Table(objects, names, missing, ambiguous, doubled, unnamed)


def _decode(raw: bytes, encoding: str, who: str, where: str) -> str:
    utf8 = codecs.lookup(encoding).name == "utf-8"
    try:
        return raw.decode("utf-8-sig" if utf8 else encoding)
    except UnicodeDecodeError as exc:
        raise BadCsv(
            f"{who}: {where} is not {encoding} text (byte {exc.start}); set `encoding` to the "
            "file's encoding",
        ) from None


def _no_columns(
    who: str, where: str, missing: Sequence[tuple[str, str]], twice: Sequence[tuple[str, str]] = ()
) -> BackendError:
    said = []
    if missing:
        listed = ", ".join(f"{col!r} (columns.{key})" for key, col in missing)
        said.append(f"has no column{'s' if len(missing) > 1 else ''} {listed}")
    if twice:
        listed = ", ".join(f"{col!r} (columns.{key})" for key, col in twice)
        said.append(f"has column{'s' if len(twice) > 1 else ''} {listed} more than once "
                    "(which one is meant?)")  # fmt: skip
    return BadCsv(f"{who}: {where} {' and '.join(said)}")


def order_rows(rows: Sequence[Row], index: int) -> list[Row]:
    """``rows`` sorted by their value at ``index``: as numbers when every value is one, else
    naturally; rows without a value last, ties in file order."""
    values = [row.values[index].strip() for row in rows]
    numeric = all(_finite(v) for v in values if v)
    keys: list[tuple[Any, ...]]
    if numeric:
        keys = [(0, float(v)) if v else (1, 0.0) for v in values]
    else:
        keys = [(0, natural_key(v)) if v else (1, ()) for v in values]
    order = sorted(range(len(rows)), key=lambda i: keys[i])
    return [rows[i] for i in order]


def _finite(value: str) -> bool:
    try:
        return math.isfinite(float(value))
    except ValueError:
        return False


class CsvSource(ObjectSource[CsvSourceSettings]):
    settings_class = CsvSourceSettings

    def __init__(self, name: str, settings: CsvSourceSettings) -> None:
        super().__init__(name, settings)
        self._url = self.settings.url
        self._upstream: Upstream | None = None
        self._texts: TextUrls | None = None  # its text URLs (made when it starts)
        self._flight: SingleFlight[str, Table] = SingleFlight()
        self._table: Table | None = None
        self._stamp: tuple[int, int, int] | None = None  # a file's (mtime, size, inode)
        self._failure: BackendError | None = None  # a file's error at _stamp
        self._fetched = -math.inf  # a URL's: when it was last fetched (loop time)
        self._validators: dict[str, str] = {}  # a URL's: If-None-Match, If-Modified-Since
        self._stale: str | None = None  # a URL's: why its last refetch failed (old copy used)
        self._surveyed: tuple[Table, Survey] | None = None  # the last survey, of that table

    @property
    def _where(self) -> str:
        return "its CSV" if self._url is not None else self.settings.path.name

    async def start(self, context: SourceContext) -> None:
        await super().start(context)
        if self._url is not None:
            scope = UrlTemplate.parse(self._url)
            self._upstream = Upstream(
                self.name, self.settings, [scope], context.metrics, role="source"
            )
            await self._upstream.start()
        self._texts = TextUrls(
            self.who, self.name, self.settings, self._upstream, self.settings.text_origins
        )
        await self._texts.start(context.metrics)

    async def close(self) -> None:
        if self._texts is not None:
            await self._texts.close()
        if self._upstream is not None:
            await self._upstream.close()

    @property
    def remote(self) -> bool:
        return self._url is not None

    @property
    def stale(self) -> str | None:
        return self._stale

    def _fatal(self, table: Table) -> BackendError | None:
        """What stops this source: a missing `object` or `image` column (strict: any), or a
        configured column the header has twice."""
        missing = table.missing
        if not self.strict and not any(key in ("object", "image") for key, _ in missing):
            missing = []
        if missing or table.ambiguous:
            return _no_columns(self.who, self._where, missing, table.ambiguous)
        return None

    async def names(self, limit: int) -> list[str]:
        table = await self._current()
        if (fatal := self._fatal(table)) is not None:
            raise fatal
        return table.names[:limit]

    async def record(self, name: str) -> ObjectRecord | None:
        if check_name(name) is not None:
            return None
        table = await self._current()
        rows = table.objects.get(name)
        if rows is None:
            return None
        if (fatal := self._fatal(table)) is not None:
            raise fatal
        found: ObjectRecord = await self.context.run_blocking(self._build, name, rows)
        return self.noted(found)

    def _ordered(self, rows: Sequence[Row]) -> Sequence[Row]:
        if self.settings.columns.order is None:
            return rows
        return order_rows(rows, ROW_FIELDS.index("order"))

    def _build(self, name: str, rows: Sequence[Row]) -> ObjectRecord:
        """The record of object ``name`` from its ``rows``, each value left out placed (its
        line and column). Blocking: an object may have many rows."""
        columns = self.settings.columns
        at = {key: i for i, key in enumerate(ROW_FIELDS)}
        first = rows[0]
        canvases: list[dict[str, Any]] = []
        refused: list[Skipped] = []
        ordered = self._ordered(rows)
        access = first.values[at["access"]].strip()
        for row in ordered:
            image = row.values[at["image"]]
            if self.strict and not image.strip():
                raise self.bad(name, f"line {row.line}: no image (column {columns.image!r})")
            text, why = self._text_ref(row.values[at["text"]])
            if why is not None:
                refused.append(Skipped("text", why, canvas=len(canvases)))
            if (other := row.values[at["access"]].strip()) and other != access:
                refused.append(Skipped("access", _not_its_access(other, access),
                                       canvas=len(canvases)))  # fmt: skip
            canvases.append(
                {"image": image, "canvas_label": row.values[at["canvas_label"]],
                 "range": row.values[at["range"]], "text": text}
            )  # fmt: skip
        fields = {key: first.values[at[key]] for key in OBJECT_FIELDS}
        metadata = [
            (label, first.values[len(ROW_FIELDS) + i])
            for i, (label, _) in enumerate(columns.labelled())
        ]
        try:
            record = build_record(
                name, self.name, fields, canvases, metadata, strict=self.strict, refused=refused
            )
        except RecordError as exc:
            raise self.unusable(name, exc) from None
        if not record.skipped:
            return record
        placed = tuple(self._placed(s, ordered[s.canvas] if s.canvas is not None else first)
                       for s in record.skipped)  # fmt: skip
        return dataclasses.replace(record, skipped=placed)

    def _text_ref(self, value: str) -> tuple[TextRef | None, str | None]:
        """A ``text`` cell as the canvas's text (a URL, or a path under the CSV file's folder;
        a CSV read from a URL: a path is relative to it), or why it cannot be read."""
        place = value.strip()
        if not place:
            return None, None
        if self._url is not None and not is_url(place) and foreign(place) is None:
            place = urljoin(self._url, place)
        if is_url(place):
            assert self._texts is not None  # (made when it starts)
            why = self._texts.refusal(place)
        elif (why := self._not_a_file(place)) is None and not inside(
            self.settings.path.parent, place
        ):
            why = f"text file {shown(place)} is outside the CSV file's folder"
        return (None, why) if why is not None else (TextRef(place, format_of(place)), None)

    def _not_a_file(self, place: str) -> str | None:
        """Why ``place`` (not an http(s) URL) cannot name a file of this CSV: another scheme,
        or a CSV read from a URL (whose text is at URLs only)."""
        if self._url is not None:
            return f"text {shown(place)} is not an http(s) URL"
        return foreign(place)

    async def text_stamp(self, ref: TextRef) -> str | None:
        if is_url(ref.where):
            assert self._texts is not None
            return await self._texts.stamp(ref.where)
        if (why := self._not_a_file(ref.where)) is not None:
            raise BadRecord(f"{self.who}: {why}")
        found: str | None = await self.context.run_blocking(
            stamp_file, self.settings.path.parent, ref.where, self.who
        )
        return found

    async def read_text(self, ref: TextRef, limit: int) -> TextFile | None:
        if is_url(ref.where):
            assert self._texts is not None
            return await self._texts.read(ref.where, limit, ref.format)
        if (why := self._not_a_file(ref.where)) is not None:
            raise BadRecord(f"{self.who}: {why}")
        found: TextFile | None = await self.context.run_blocking(
            read_file, self.settings.path.parent, ref.where, limit, self.who, ref.format
        )
        return found

    def _placed(self, skipped: Skipped, row: Row) -> Skipped:
        """``skipped`` with the file's line and the column of its value."""
        wanted = self.settings.columns.wanted()
        if skipped.entry is not None:
            column = wanted[len(ROW_FIELDS) + skipped.entry]
        else:
            column = dict(zip(ROW_FIELDS, wanted, strict=False)).get(skipped.field)
        where = f"{self._where} line {row.line}"
        return dataclasses.replace(skipped, where=where, column=column or skipped.field)

    async def survey(self, limit: int, read: int | None = None, start: int = 0) -> Survey:
        """Every object of the table, built on the survey thread (kept until the table or the
        file changes)."""
        try:
            table = await self._current()
        except ShimError as exc:
            return Survey(self.name, self.type_name, error=exc.public_text(), detail=exc.detail)
        if (fatal := self._fatal(table)) is not None:
            return Survey(self.name, self.type_name, error=fatal.public_text())
        if self._surveyed is None or self._surveyed[0] is not table:
            threads = self.context.surveys
            if threads is not None:
                survey: Survey = await threads.run(self._survey_table, table)
            else:
                survey = await self.context.run_blocking(self._survey_table, table, _never)
            self._surveyed = (table, survey)
        return dataclasses.replace(self._surveyed[1], stale=self._stale)

    def _survey_table(self, table: Table, stopped: Stopped) -> Survey:
        """Blocking: each object built (its problems placed as it is), until ``stopped``."""
        survey = Survey(self.name, self.type_name)
        for key, column in table.missing:  # (lenient) optional columns: left out
            survey.add(Problem(self._where, column, None, f"no such column ({key}): left out",
                               "column"))  # fmt: skip
        for column in table.doubled:
            survey.add(Problem(self._where, column, None, "the header has this column more "
                               "than once (not one this source reads)", "note"))  # fmt: skip
        object_column = self.settings.columns.object
        for line in table.unnamed:
            survey.add(Problem(f"{self._where} line {line}", object_column, None,
                               "no object name: row left out", "row"))  # fmt: skip
        for name, rows in table.objects.items():
            if stopped():
                raise SurveyStopped
            if (why := check_name(name)) is not None:
                for row in rows:
                    where = f"{self._where} line {row.line}"
                    survey.add(Problem(where, object_column, None, why, "row"))
                continue
            survey.objects += 1
            survey.read += 1
            try:
                record = self._build(name, rows)
            except ShimError as exc:
                where = f"{self._where} line {rows[0].line}"
                survey.unusable += 1
                survey.add(Problem(where, None, name, exc.public_text(), "object"))
                continue
            self._count(survey, name, record)
            self._survey_texts(survey, name, rows)
        return survey

    def _survey_texts(self, survey: Survey, name: str, rows: Sequence[Row]) -> None:
        """Each text file of a CSV read from a file that cannot be read now (not there,
        outside the folder through a link, not a file): one problem each, at its line.
        Blocking (a stat each)."""
        if self._url is not None:
            return
        at = ROW_FIELDS.index("text")
        for row in rows:
            ref, _ = self._text_ref(row.values[at])
            if ref is None or is_url(ref.where):
                continue
            if (why := file_problem(self.settings.path.parent, ref.where)) is not None:
                where = f"{self._where} line {row.line}"
                survey.add(Problem(where, self.settings.columns.text, name, why, "text"))

    # --- the parsed table, kept and refreshed ------------------------------------------------

    async def _current(self) -> Table:
        if self._url is not None and self._table is not None:
            age = asyncio.get_running_loop().time() - self._fetched
            if age < self.settings.refresh:
                return self._table
        return await self._flight.do("table", self._load)

    async def _load(self) -> Table:
        if self._url is not None:
            return await self._fetch()
        read: tuple[tuple[int, int, int], Table | BackendError | None]
        read = await self.context.run_blocking(self._read_file, self._stamp)
        stamp, found = read
        # assigned here, on the loop: the table a request or a survey holds is never swapped
        # by a thread under it
        if found is None:  # unchanged since it was read
            if self._failure is not None:
                raise _again(self._failure)
            assert self._table is not None
            return self._table
        if isinstance(found, BackendError):  # kept until the file changes
            self._stamp, self._table, self._failure = stamp, None, found
            raise _again(found)
        self._stamp, self._table, self._failure = stamp, found, None
        self._warn_shape(found)
        return found

    def _read_file(
        self, known: tuple[int, int, int] | None
    ) -> tuple[tuple[int, int, int], Table | BackendError | None]:
        """The file's stamp and its table (or why it cannot be read), or None when the stamp is
        still ``known``. Blocking; changes nothing."""
        path, cap = self.settings.path, self.settings.max_bytes
        try:
            st = os.stat(path)
        except OSError as exc:
            raise self._unreadable(exc) from None
        stamp = (st.st_mtime_ns, st.st_size, st.st_ino)
        if stamp == known:
            return stamp, None
        try:
            raw = read_head(path, cap + 1)  # more than the cap: parse_table refuses it
        except OSError as exc:
            raise self._unreadable(exc) from None
        try:
            return stamp, parse_table(raw, self.settings, self.who, path.name)
        except BackendError as exc:
            return stamp, exc

    def _warn_shape(self, table: Table) -> None:
        """One warning per read of the file for rows without an object and doubled columns."""
        if table.unnamed:
            log.warning("%s: %s: %d rows without an object name (column %r) left out; the "
                        "first at line %d", self.who, self._where, len(table.unnamed),
                        self.settings.columns.object, table.unnamed[0])  # fmt: skip
        if table.doubled:
            log.warning("%s: %s: the header has %s more than once", self.who, self._where,
                        ", ".join(repr(c) for c in table.doubled[:10]))  # fmt: skip

    def _unreadable(self, exc: OSError) -> BackendError:
        return UnreadableSource(
            f"{self.who} cannot read {self.settings.path.name}",
            detail=exc.strerror or str(exc),
        )

    async def _fetch(self) -> Table:
        assert self._upstream is not None and self._url is not None
        loop = asyncio.get_running_loop()
        started = loop.time()
        try:
            try:
                answer = await self._upstream.get(
                    self._url,
                    cap=self.settings.max_bytes,
                    what="its CSV",
                    headers=self._validators if self._table is not None else None,
                )
            except NotFound:
                raise UpstreamClientError(f"{self.who}: its CSV is not found (404)") from None
            if answer.status == 304 and self._table is not None:
                table = self._table
            else:
                table = await self.context.run_blocking(
                    parse_table, answer.body, self.settings, self.who, self._where
                )
        except ShimError as exc:
            if self._table is None:
                raise
            log.warning("%s: refetching its CSV failed (%s); using the last copy", self.who,
                        exc.message)  # fmt: skip
            self._fetched = started - max(0.0, self.settings.refresh - STALE_RETRY)
            self._stale = exc.public_text()
            return self._table
        validators = {}
        if etag := answer.headers.get("ETag"):
            validators["If-None-Match"] = etag
        if modified := answer.headers.get("Last-Modified"):
            validators["If-Modified-Since"] = modified
        if table is not self._table:
            self._warn_shape(table)
        self._table, self._fetched, self._validators = table, started, validators
        self._stale = None
        return table


def _not_its_access(value: str, access: str) -> str:
    """Why a later row's ``access`` (``value``) is not used: the object's is ``access``."""
    its = repr(access[:64]) if access else "none"
    return (
        f"access {value[:64]!r} is not the object's (its first row's: {its}): an object's "
        "access is its first row's, which guards its PDF, text and search; this row's is not "
        "used"
    )


def _again(exc: BackendError) -> BackendError:
    """A kept failure raised again (a new exception: the kept one's traceback stays as it is)."""
    return type(exc)(exc.message, detail=exc.detail)


def _never() -> bool:
    return False
