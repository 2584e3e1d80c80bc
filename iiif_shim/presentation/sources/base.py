"""The contract every object source keeps.

An object source reads the institution's own metadata (a CSV export, a folder convention, a
catalogue's JSON API) and answers two questions: which objects it has (:meth:`names`, for the
collections) and what one object is (:meth:`record`, ``None`` when it is not one of its own).
It turns its own failures into the shim's errors at its boundary: a source that cannot be read
is a 502 naming the source, a source that does not answer in time a 504, never a 500.
"""

from __future__ import annotations

from abc import ABC, abstractmethod
from collections.abc import Awaitable, Callable, Mapping
from dataclasses import dataclass
from typing import Any, ClassVar

from iiif_shim.backends.base import Backend, Finding
from iiif_shim.core.routing import Router
from iiif_shim.presentation.records import ObjectRecord
from iiif_shim.presentation.sources.settings import ConfigView
from iiif_shim.telemetry.metrics import Metrics

RunBlocking = Callable[..., Awaitable[Any]]


@dataclass(frozen=True)
class SourceContext:
    """What the presentation service lends every source."""

    run_blocking: RunBlocking  # the thread pool: file reads and parsing never block the loop
    backends: Mapping[str, Backend]  # the running Image API backends (the folder source lists one)
    router: Router  # IIIF identifier -> backend, as the Image API routes it
    metrics: Metrics | None = None


class ObjectSource(ABC):
    """Base class of object sources; one instance per entry under ``presentation.sources``."""

    type_name: ClassVar[str]
    settings_class: ClassVar[type[Any]]

    def __init__(self, name: str, settings: Any, context: SourceContext) -> None:
        self.name = name
        self.settings = settings
        self.context = context

    @property
    def who(self) -> str:
        return f"source '{self.name}'"

    @classmethod
    def findings(cls, settings: Any, config: ConfigView) -> list[Finding]:
        """Problems (and warnings) across sections, e.g. a backend it names that is missing;
        ``key`` is relative to the source's own section."""
        return []

    async def start(self) -> None:  # noqa: B027 - optional hook
        """Open connections (called once before the first request)."""

    async def close(self) -> None:  # noqa: B027 - optional hook
        """Release what ``start`` opened."""

    @abstractmethod
    async def names(self, limit: int) -> list[str]:
        """Up to ``limit`` object names, in the source's own order."""

    @abstractmethod
    async def record(self, name: str) -> ObjectRecord | None:
        """Object ``name``, or None when this source does not have it."""
