"""The contract every object source keeps.

An object source reads the institution's own metadata (a CSV export, a folder convention, a
catalogue's JSON API) and answers two questions: which objects it has (:meth:`names`, for the
collections) and what one object is (:meth:`record`, ``None`` when it is not one of its own).
It turns its own failures into the shim's errors at its boundary: a source that cannot be read
is a 502 naming the source, a source that does not answer in time a 504, never a 500. As a
backend, a source is made from its name and its typed settings alone (nothing is opened);
:meth:`ObjectSource.start` then gets what the presentation service lends it.
"""

from __future__ import annotations

from abc import ABC, abstractmethod
from collections.abc import Awaitable, Callable, Mapping
from dataclasses import dataclass
from typing import Any, ClassVar, Generic, TypeVar

from iiif_shim.backends.base import Backend
from iiif_shim.core.routing import Router
from iiif_shim.presentation.records import ObjectRecord
from iiif_shim.presentation.sources.settings import SourceSettings
from iiif_shim.telemetry.metrics import Metrics

RunBlocking = Callable[..., Awaitable[Any]]
S = TypeVar("S", bound=SourceSettings)


@dataclass(frozen=True)
class SourceContext:
    """What the presentation service lends every source when it starts."""

    run_blocking: RunBlocking  # the thread pool: file reads and parsing never block the loop
    backends: Mapping[str, Backend[Any]]  # the running Image API backends (a folder lists one)
    router: Router  # IIIF identifier -> backend, as the Image API routes it
    metrics: Metrics | None = None


class ObjectSource(ABC, Generic[S]):
    """Base class of object sources; one instance per entry under ``presentation.sources``."""

    settings_class: ClassVar[type[SourceSettings]]

    def __init__(self, name: str, settings: S) -> None:
        self.name = name
        self.settings = settings
        self._context: SourceContext | None = None

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
