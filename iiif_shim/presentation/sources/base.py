"""The contract every object source keeps.

An object source reads the institution's own metadata (a CSV export, a folder convention, a
catalogue's JSON API) and answers two questions: which objects it has (:meth:`names`, for the
collections) and what one object is (:meth:`record`, ``None`` when it is not one of its own).
It turns its own failures into the shim's errors at its boundary: a source that cannot be read
is a 502 naming the source, a source that does not answer in time a 504, never a 500. As a
backend, a source is made from its name and its typed settings alone (nothing is opened);
:meth:`ObjectSource.start` then gets what the presentation service lends it.

Lenient or strict (``presentation.strict``, lent in :class:`SourceContext`): records are built
by ``records.build_record``, which decides; a source turns an object with no usable canvas
into :class:`UnusableObject` (404 naming the reason) when lenient, logs each value it left out
once (:meth:`ObjectSource.noted`), and says where a value is (:meth:`ObjectSource.place`: a
file's line and column). :meth:`ObjectSource.survey` reads the whole source (or, for one over
the network, its list and up to ``limit`` objects) into a :class:`Survey`: what
``check-config`` reports and what ``/health/ready`` and the metrics show. A survey's long,
blocking part (every object of a whole table built) runs on :class:`SurveyThread`, threads of
its own (never the thread pool that serves images), and stops at its next object once the
survey is given up (a timeout, a reload, shutdown). An object whose ``access`` (its own or its
source's) guards only its PDF, text and search, because its images are on public routes, is
said too (:meth:`ObjectSource.open_images`: logged once, listed by a survey): an image is as
public as its route, whatever objects it is in. A remote source whose list cannot be read,
or whose every object read failed (unreachable, 5xx, no answer), is down; one serving a stale
copy (its refetch failed) is degraded, with that error.
"""

from __future__ import annotations

import asyncio
import logging
import threading
from abc import ABC, abstractmethod
from collections.abc import Awaitable, Callable, Mapping
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass, field
from typing import Any, ClassVar, Generic, TypeVar

from iiif_shim.backends.base import Backend, Health
from iiif_shim.base.errors import BackendError, BadRecord, NotFound, ShimError
from iiif_shim.core.routing import Router
from iiif_shim.model.text import TextFile
from iiif_shim.presentation.records import NoCanvas, ObjectRecord, RecordError, Skipped, TextRef
from iiif_shim.presentation.sources.settings import SourceSettings
from iiif_shim.telemetry.metrics import Metrics

log = logging.getLogger("iiif_shim")

RunBlocking = Callable[..., Awaitable[Any]]
S = TypeVar("S", bound=SourceSettings)

MAX_NOTED = 10_000  # values left out that one source logs (then one line says it stops)
MAX_PROBLEMS = 10_000  # problems one survey lists (the counts go on)
_SURVEY_AT_ONCE = 8  # records read at once by a survey


class SurveyStopped(Exception):
    """A survey given up (its timeout, a reload, shutdown): its thread's job ends here."""


Stopped = Callable[[], bool]  # whether the survey a job belongs to was given up


class SurveyThread:
    """Threads of their own for surveys' long, blocking jobs (``threads``: 1 for the background
    checks of a server, so at most one such job runs at a time in a process); never the image
    pool's threads. A job is called with ``stopped``, which it asks between objects: true once
    the caller gave up waiting or :meth:`close` was called."""

    def __init__(self, threads: int = 1) -> None:
        self._executor = ThreadPoolExecutor(threads, thread_name_prefix="iiif-shim-survey")
        self._closed = threading.Event()

    async def run(self, fn: Callable[..., Any], *args: Any) -> Any:
        if self._closed.is_set():
            raise SurveyStopped
        given_up = threading.Event()

        def stopped() -> bool:
            return given_up.is_set() or self._closed.is_set()

        job = self._executor.submit(fn, *args, stopped)
        try:
            return await asyncio.wrap_future(job)
        finally:  # done, timed out or cancelled: a job still running stops at its next object
            given_up.set()

    def close(self) -> None:
        self._closed.set()
        self._executor.shutdown(wait=False, cancel_futures=True)


class UnusableObject(NotFound):
    """An object of the source with no usable canvas (lenient mode): 404 naming the reason,
    and not listed in collections."""

    kind = "unusable_object"


@dataclass(frozen=True)
class Problem:
    """One bad value, row or object of a source: where it is (a file and line, or the object),
    its column (or field), the object it belongs to, and why."""

    where: str
    column: str | None
    object: str | None
    reason: str
    kind: str  # cell, row or column (left out), object (not served), note (shown otherwise),
    # access (its access guards its PDF, text and search only: its images are on public routes),
    # text (a canvas's text file cannot be read now: that page has no text; the rest is served)

    def as_json(self) -> dict[str, Any]:
        return {"where": self.where, "column": self.column, "object": self.object,
                "reason": self.reason, "kind": self.kind}  # fmt: skip


@dataclass
class Survey:
    """A source read through: ``down`` with its error, or how many objects it lists, how many
    of them it read, how many of those had values or rows left out (``affected``) or could
    not be served (``unusable``; ``failed`` of them because reading them failed), and each
    problem (at most MAX_PROBLEMS listed)."""

    source: str
    type: str
    error: str | None = None  # why it cannot be read at all
    detail: str | None = None  # the error's detail (check-config shows it; health does not)
    objects: int = 0  # objects it lists (up to the limit of the read)
    read: int = 0  # objects read (all of them, or a remote source's first or sample)
    complete: bool = True  # every object read, and the list not cut at the limit
    stale: str | None = None  # a remote copy still in use: why refetching it failed
    affected: int = 0
    unusable: int = 0
    failed: int = 0  # unusable because reading them failed (unreachable, 5xx, timeout)
    cells: int = 0  # values left out
    rows: int = 0  # rows (canvases) left out
    columns: int = 0  # optional columns the file lacks (left out)
    notes: int = 0  # values shown in another way (a date that is not a date): not problems
    open_images: int = 0  # objects naming an access whose images are public (their routes')
    texts: int = 0  # text files that cannot be read now (not there, outside their folder)
    problems: list[Problem] = field(default_factory=list)

    @property
    def state(self) -> Health:
        if self.error is not None:
            return Health.DOWN
        bad = self.cells or self.rows or self.columns or self.unusable or self.stale
        return Health.DEGRADED if bad else Health.OK

    @property
    def hidden(self) -> int:
        """Problems counted but not listed (past MAX_PROBLEMS)."""
        listed = self.cells + self.rows + self.columns + self.unusable + self.notes
        listed += self.open_images + self.texts
        return max(0, listed - len(self.problems))

    def add(self, problem: Problem) -> None:
        if problem.kind == "cell":
            self.cells += 1
        elif problem.kind == "row":
            self.rows += 1
        elif problem.kind == "column":
            self.columns += 1
        elif problem.kind == "note":
            self.notes += 1
        elif problem.kind == "access":
            self.open_images += 1
        elif problem.kind == "text":
            self.texts += 1
        if len(self.problems) < MAX_PROBLEMS:
            self.problems.append(problem)

    def as_json(self, problems: bool = True) -> dict[str, Any]:
        out: dict[str, Any] = {"type": self.type, "state": self.state.value}
        if self.error is not None:
            out["error"] = self.error
            if problems and self.detail:
                out["detail"] = self.detail
        else:
            skipped = {"cells": self.cells, "rows": self.rows, "columns": self.columns}
            out |= {
                "objects": self.objects,
                "read": self.read,
                "complete": self.complete,
                "affected": self.affected,
                "unusable": self.unusable,
                "failed": self.failed,
                "skipped": skipped,
                "notes": self.notes,
                "open_images": self.open_images,
                "texts": self.texts,
            }
            if self.stale is not None:
                out["stale"] = self.stale
        if problems:
            out["problems"] = [p.as_json() for p in self.problems]
            out["problems_not_listed"] = self.hidden
        return out


@dataclass(frozen=True)
class SourceContext:
    """What the presentation service lends every source when it starts."""

    run_blocking: RunBlocking  # the thread pool: file reads and parsing never block the loop
    backends: Mapping[str, Backend[Any]]  # the running Image API backends (a folder lists one)
    router: Router  # IIIF identifier -> backend, as the Image API routes it
    metrics: Metrics | None = None
    strict: bool = False  # presentation.strict: a value that cannot be used refuses the object
    surveys: SurveyThread | None = None  # where surveys' long jobs run (None: run_blocking)


class ObjectSource(ABC, Generic[S]):
    """Base class of object sources; one instance per entry under ``presentation.sources``."""

    settings_class: ClassVar[type[SourceSettings]]

    def __init__(self, name: str, settings: S) -> None:
        self.name = name
        self.settings = settings
        self._context: SourceContext | None = None
        self._noted: set[tuple[str, str, str | None]] = set()  # (object, where, column) logged

    @property
    def type_name(self) -> str:
        return self.settings.type_name

    @property
    def context(self) -> SourceContext:
        if self._context is None:
            raise RuntimeError(f"object source {self.name!r} is not started")
        return self._context

    @property
    def who(self) -> str:
        return f"source '{self.name}'"

    async def start(self, context: SourceContext) -> None:
        """Take what the presentation service lends and open connections; called once before
        the first request."""
        self._context = context

    async def close(self) -> None:
        """Release what ``start`` opened."""

    @abstractmethod
    async def names(self, limit: int) -> list[str]:
        """Up to ``limit`` object names, in the source's own order."""

    @abstractmethod
    async def record(self, name: str) -> ObjectRecord | None:
        """Object ``name``, or None when this source does not have it."""

    async def text_stamp(self, ref: TextRef) -> str | None:
        """What identifies the current version of the text file ``ref`` names (size and time,
        or an ETag) without reading it, None when it is gone. A source whose text is not in
        files answers with what it has (e.g. the text's hash): then the index reads the file
        to know."""
        raise NotFound(f"{self.who} has no text files")

    async def read_text(self, ref: TextRef, limit: int) -> TextFile | None:
        """The text file ``ref`` names (a canvas's ``text``), None when it is gone; larger than
        ``limit`` bytes, or somewhere this source may not read (outside its folder, another
        server than its own): :class:`~iiif_shim.base.errors.BadRecord` naming it."""
        raise NotFound(f"{self.who} has no text files")

    @property
    def remote(self) -> bool:
        """Whether its metadata comes over the network (a survey then reads its list and only
        the first objects)."""
        return False

    @property
    def strict(self) -> bool:
        return self._context is not None and self._context.strict

    @property
    def stale(self) -> str | None:
        """Why refetching its remote copy failed, while the last good copy is still in use."""
        return None

    def place(self, record: ObjectRecord, skipped: Skipped) -> tuple[str, str | None]:
        """Where a value left out of ``record`` is: (file and line, or the object; column or
        field): where the source put it when it built the record, else the object."""
        return skipped.where or f"object {record.name!r}", skipped.column or _field(skipped)

    def problem(self, record: ObjectRecord, skipped: Skipped) -> Problem:
        where, column = self.place(record, skipped)
        kind = "note" if skipped.note else "row" if skipped.field == "image" else "cell"
        return Problem(where, column, record.name, skipped.message, kind)

    def problems(self, record: ObjectRecord) -> list[Problem]:
        """What lenient mode left out of ``record`` (and what it shows otherwise), placed."""
        return [self.problem(record, skipped) for skipped in record.skipped]

    def open_images(self, record: ObjectRecord) -> Problem | None:
        """Whether ``record`` names an access policy (its own, else its source's) while images
        of it are on public routes: that policy then guards its PDF, text and search only, and
        those images are served to anyone at full size (the Image API decides per image, by
        its route)."""
        policy = record.access or getattr(self.settings, "access", None)
        if policy is None or self._context is None:
            return None
        public = []
        for canvas in record.canvases:
            try:
                if self._context.router.route(canvas.image).access is None:
                    public.append(canvas.image)
            except NotFound:
                continue  # (a canvas no route serves fails on its own)
        if not public:
            return None
        shown = ", ".join(repr(image[:100]) for image in public[:3])
        more = f" and {len(public) - 3} more" if len(public) > 3 else ""
        whose = "its own" if record.access else "its source's"
        return Problem(
            f"object {record.name!r}",
            "access",
            record.name,
            f"names access {policy[:64]!r} ({whose}), which guards only its PDF, text and "
            "search: "
            + (
                f"its image {shown} is on a public route, so it is public; give its route "
                if len(public) == 1
                else f"its images {shown}{more} are on public routes, so they are public; "
                "give their route "
            )
            + "`access` too",
            "access",
        )

    def noted(self, record: ObjectRecord) -> ObjectRecord:
        """``record``, after one warning per value it left out (per source and value, not per
        request: each is logged once in the life of the source; notes are not warned), and
        one when its access guards only its PDF, text and search (:meth:`open_images`; for the
        source's access, once per source)."""
        opened = self.open_images(record)
        # once per object for its own access, once per source for the source's
        flag: tuple[str, str, str | None] = ("" if record.access is None else record.name,
                                             "access", None)  # fmt: skip
        if opened is not None and flag not in self._noted and len(self._noted) < MAX_NOTED:
            self._noted.add(flag)
            more = "" if record.access else " (and maybe others of this source)"
            log.warning("%s: object %r%s %s", self.who, record.name, more, opened.reason)
        for skipped in record.skipped:
            if skipped.note:
                continue
            where, column = self.place(record, skipped)
            key = (record.name, where, column)
            if key in self._noted:
                continue
            problem = self.problem(record, skipped)
            if len(self._noted) >= MAX_NOTED:
                if len(self._noted) == MAX_NOTED:
                    self._noted.add(("", "", None))
                    log.warning("%s: more than %d values left out; no more are logged "
                                "(iiif-shim check-config --sources lists them all)", self.who,
                                MAX_NOTED)  # fmt: skip
                break
            self._noted.add(key)
            column = f", {problem.column}" if problem.column else ""
            log.warning("%s: %s%s: %s: left out of object %r", self.who, problem.where, column,
                        problem.reason, record.name)  # fmt: skip
        return record

    def unusable(self, name: str, exc: RecordError) -> ShimError:
        """The error for an object whose record cannot be built: in lenient mode one with no
        usable canvas is a 404 naming why; anything else a 502 (``bad``)."""
        if not self.strict and isinstance(exc, NoCanvas):
            return UnusableObject(f"{self.who}, object {name[:100]!r} cannot be shown: {exc}")
        return self.bad(name, str(exc))

    def bad(self, name: str, message: str) -> BackendError:
        """A 502 naming the source and the object: its record cannot be read."""
        return BadRecord(f"{self.who}, object {name!r}: {message}")

    async def survey(self, limit: int, read: int | None = None, start: int = 0) -> Survey:
        """The source read through: its names (up to ``limit``) and the records of ``read`` of
        them (None: all), from the ``start``-th on (wrapping round: a rotating sample). Down
        when its list cannot be read, or when every object read failed (the last error)."""
        survey = Survey(self.name, self.type_name, stale=self.stale)
        try:
            names = await self.names(limit)
        except ShimError as exc:
            survey.error = exc.public_text()
            return survey
        survey.objects = len(names)
        survey.complete = len(names) < limit
        if read is not None and read < len(names):
            at = start % len(names)
            names, survey.complete = (names[at:] + names[:at])[:read], False
        gate = asyncio.Semaphore(_SURVEY_AT_ONCE)

        async def one(name: str) -> tuple[str, ObjectRecord | ShimError | None]:
            async with gate:
                try:
                    return name, await self.record(name)
                except ShimError as exc:
                    return name, exc

        last: ShimError | None = None
        for name, found in await asyncio.gather(*(one(name) for name in names)):
            survey.read += 1
            self._count(survey, name, found)
            if isinstance(found, ShimError) and _failed(found):
                last = found
        if last is not None and survey.failed == survey.read:
            survey.error = f"every object read failed ({survey.failed}); the last: " + (
                last.public_text()
            )
        survey.stale = survey.stale or self.stale
        return survey

    def _count(self, survey: Survey, name: str, found: ObjectRecord | ShimError | None) -> None:
        if isinstance(found, ShimError):
            survey.unusable += 1
            survey.failed += _failed(found)
            survey.add(Problem(f"object {name!r}", None, name, found.public_text(), "object"))
        elif found is not None:
            if any(not skipped.note for skipped in found.skipped):
                survey.affected += 1
            for problem in self.problems(found):
                survey.add(problem)
            if (opened := self.open_images(found)) is not None:
                survey.add(opened)


def _failed(exc: ShimError) -> bool:
    """Whether reading an object failed (the source's upstream: unreachable, 5xx, no answer),
    rather than the object being one it cannot show."""
    return not isinstance(exc, (NotFound, BadRecord))


def _field(skipped: Skipped) -> str:
    if skipped.entry is not None:
        return f"metadata[{skipped.entry}]"
    return skipped.field
