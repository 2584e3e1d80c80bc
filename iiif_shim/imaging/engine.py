"""The image engine seam: what the service asks of the library doing the pixel work
(:class:`Engine`, chosen by ``imaging.engine``: ``registry.py``).

An :class:`Engine` does the steps ``core/service.py`` runs in the thread pool: pick the reduction to
decode at, cost a plan, decode a whole source (kept in the decoded-source cache), finish it
(crop, scale, turn, quality, encode), or do both at once for what a backend made for one
request. ``pillow`` is ``pillow.py`` (the default, no extra install); ``vips`` is ``vips.py``
(libvips through pyvips, the ``vips`` extra), by default only for the steps where libvips was
measured faster (``imaging.vips_steps``). Both take the same :class:`~.cost.Allowance` checks
from the header before any pixel is decoded, and offer the same formats.
"""

from __future__ import annotations

from collections.abc import Callable
from typing import ClassVar, Protocol, TypeVar

from iiif_shim.iiif.profile import Format
from iiif_shim.imaging.cost import Allowance, Cost
from iiif_shim.imaging.fetched import Fetched
from iiif_shim.model.facts import SourceInfo
from iiif_shim.model.plan import Plan, Steps


class DecodedSource(Protocol):
    """A decoded source as the decoded-source cache keeps it, and the size of what was
    delivered (before any reduction at decoding)."""

    @property
    def nbytes(self) -> int: ...

    @property
    def source_width(self) -> int: ...

    @property
    def source_height(self) -> int: ...


D = TypeVar("D", bound=DecodedSource)


class Engine(Protocol[D]):
    """What ``core/service.py`` asks of an image engine. Every method but :meth:`writable_formats`
    is synchronous and CPU-bound: it runs in the thread pool, never on the event loop."""

    name: ClassVar[str]

    @property
    def identity(self) -> str:
        """The engine with its library versions and settings: part of every derivative's
        cache key, since another engine makes other bytes of the same image."""
        ...

    def writable_formats(self) -> frozenset[Format]: ...

    def reduction(
        self, source_format: str | None, width: int, height: int, steps: Steps
    ) -> int: ...

    def cost(self, plan: Plan, info: SourceInfo, *, decoded_cached: bool = False) -> Cost: ...

    def decode(
        self, fetched: Fetched, factor: int, allowance: Allowance, record: Record | None = None
    ) -> D: ...

    def finish(self, decoded: D, steps: Steps, record: Record | None = None) -> bytes: ...

    def render(
        self,
        fetched: Fetched,
        steps: Steps,
        allowance: Allowance,
        record: Record | None = None,
    ) -> bytes: ...


Record = Callable[[str, float], None]  # (step, seconds), for metrics
