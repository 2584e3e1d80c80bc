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
``check-config`` reports and what ``/health/ready`` and the metrics show.
"""

from __future__ import annotations

import asyncio
import logging
from abc import ABC, abstractmethod
from collections.abc import Awaitable, Callable, Mapping
from dataclasses import dataclass, field
from typing import Any, ClassVar, Generic, TypeVar

from iiif_shim.backends.base import Backend, Health
from iiif_shim.base.errors import BadRecord, NotFound, ShimError
from iiif_shim.core.routing import Router
from iiif_shim.presentation.records import NoCanvas, ObjectRecord, RecordError, Skipped
from iiif_shim.presentation.sources.settings import SourceSettings
from iiif_shim.telemetry.metrics import Metrics

log = logging.getLogger("iiif_shim")

RunBlocking = Callable[..., Awaitable[Any]]
S = TypeVar("S", bound=SourceSettings)

MAX_NOTED = 10_000  # values left out that one source logs (then one line says it stops)
MAX_PROBLEMS = 10_000  # problems one survey lists (the counts go on)
_SURVEY_AT_ONCE = 8  # records read at once by a survey


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
    kind: str  # cell, row or column (left out), object (not served)

    def as_json(self) -> dict[str, Any]:
        return {"where": self.where, "column": self.column, "object": self.object,
                "reason": self.reason, "kind": self.kind}  # fmt: skip


@dataclass
class Survey:
    """A source read through: ``down`` with its error, or how many objects it has, how many
    of them had values or rows left out (``affected``) or could not be served (``unusable``),
    and each problem (at most MAX_PROBLEMS listed)."""

    source: str
    type: str
    error: str | None = None  # why it cannot be read at all
    objects: int = 0  # objects read
    complete: bool = True  # every object read (else: only the list and the first ``objects``)
    affected: int = 0
    unusable: int = 0
    cells: int = 0  # values left out
    rows: int = 0  # rows (canvases) left out
    columns: int = 0  # optional columns the file lacks (left out)
    problems: list[Problem] = field(default_factory=list)

    @property
    def state(self) -> Health:
        if self.error is not None:
            return Health.DOWN
        bad = self.cells or self.rows or self.columns or self.unusable
        return Health.DEGRADED if bad else Health.OK

    def add(self, problem: Problem) -> None:
        if problem.kind == "cell":
            self.cells += 1
        elif problem.kind == "row":
            self.rows += 1
        elif problem.kind == "column":
            self.columns += 1
        if len(self.problems) < MAX_PROBLEMS:
            self.problems.append(problem)

    def as_json(self, problems: bool = True) -> dict[str, Any]:
        out: dict[str, Any] = {"type": self.type, "state": self.state.value}
        if self.error is not None:
            out["error"] = self.error
        else:
            skipped = {"cells": self.cells, "rows": self.rows, "columns": self.columns}
            out |= {
                "objects": self.objects,
                "complete": self.complete,
                "affected": self.affected,
                "unusable": self.unusable,
                "skipped": skipped,
            }
        if problems:
            out["problems"] = [p.as_json() for p in self.problems]
        return out


@dataclass(frozen=True)
class SourceContext:
    """What the presentation service lends every source when it starts."""

    run_blocking: RunBlocking  # the thread pool: file reads and parsing never block the loop
    backends: Mapping[str, Backend[Any]]  # the running Image API backends (a folder lists one)
    router: Router  # IIIF identifier -> backend, as the Image API routes it
    metrics: Metrics | None = None
    strict: bool = False  # presentation.strict: a value that cannot be used refuses the object


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

    @property
    def remote(self) -> bool:
        """Whether its metadata comes over the network (a survey then reads its list and only
        the first objects)."""
        return False

    @property
    def strict(self) -> bool:
        return self._context is not None and self._context.strict

    def place(self, record: ObjectRecord, skipped: Skipped) -> tuple[str, str | None]:
        """Where a value left out of ``record`` is: (file and line, or the object; column or
        field)."""
        return f"object {record.name!r}", _field(skipped)

    def problems(self, record: ObjectRecord) -> list[Problem]:
        """What lenient mode left out of ``record``, placed."""
        out = []
        for skipped in record.skipped:
            where, column = self.place(record, skipped)
            kind = "row" if skipped.field == "image" else "cell"
            out.append(Problem(where, column, record.name, skipped.message, kind))
        return out

    def noted(self, record: ObjectRecord) -> ObjectRecord:
        """``record``, after one warning per value it left out (per source and value, not per
        request: each is logged once in the life of the source)."""
        for problem in self.problems(record):
            key = (record.name, problem.where, problem.column)
            if key in self._noted:
                continue
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

    def bad(self, name: str, message: str) -> ShimError:
        return BadRecord(f"{self.who}, object {name!r}: {message}")

    async def survey(self, limit: int, read: int | None = None) -> Survey:
        """The source read through: its names (up to ``limit``) and the records of the first
        ``read`` of them (None: all)."""
        survey = Survey(self.name, self.type_name)
        try:
            names = await self.names(limit)
        except ShimError as exc:
            survey.error = exc.public_text()
            return survey
        if read is not None and read < len(names):
            names, survey.complete = names[:read], False
        gate = asyncio.Semaphore(_SURVEY_AT_ONCE)

        async def one(name: str) -> tuple[str, ObjectRecord | ShimError | None]:
            async with gate:
                try:
                    return name, await self.record(name)
                except ShimError as exc:
                    return name, exc

        for name, found in await asyncio.gather(*(one(name) for name in names)):
            survey.objects += 1
            self._count(survey, name, found)
        return survey

    def _count(self, survey: Survey, name: str, found: ObjectRecord | ShimError | None) -> None:
        if isinstance(found, ShimError):
            survey.unusable += 1
            survey.add(Problem(f"object {name!r}", None, name, found.public_text(), "object"))
        elif found is not None and found.skipped:
            survey.affected += 1
            for problem in self.problems(found):
                survey.add(problem)


def _field(skipped: Skipped) -> str:
    if skipped.entry is not None:
        return f"metadata[{skipped.entry}]"
    return skipped.field
