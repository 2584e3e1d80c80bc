"""The image engine seam: which library does the pixel work (``imaging.engine``).

An :class:`Engine` does the steps ``service.py`` runs in the thread pool: pick the reduction to
decode at, cost a plan, decode a whole source (kept in the decoded-source cache), finish it
(crop, scale, turn, quality, encode), or do both at once for what a backend made for one
request. ``pillow`` is ``imaging.py`` as it is (the default, no extra install); ``vips`` is
``vips.py`` (libvips through pyvips, the ``vips`` extra), by default only for the steps where
libvips was measured faster (``imaging.vips_steps``). Both take the same :class:`Allowance`
checks from the header before any pixel is decoded, and offer the same formats.
"""

from __future__ import annotations

from typing import Any, ClassVar, Protocol, TypeVar

from iiif_shim.iiif.profile import Format
from iiif_shim.imaging import pillow as imaging
from iiif_shim.imaging.pillow import Allowance, Cost, Record
from iiif_shim.model.facts import SourceInfo
from iiif_shim.model.plan import Fetched, PillowSteps, Plan

ENGINES = ("pillow", "vips")
VIPS_STEPS = ("measured", "all")
VIPS_INSTALL = "pip install 'iiif-shim[vips]' (pyvips) and apt-get install libvips42"


class DecodedSource(Protocol):
    """A decoded source as the decoded-source cache keeps it."""

    @property
    def nbytes(self) -> int: ...


D = TypeVar("D", bound=DecodedSource)


class Engine(Protocol[D]):
    """What ``service.py`` asks of an image engine. Every method but :meth:`writable_formats`
    is synchronous and CPU-bound: it runs in the thread pool, never on the event loop."""

    name: ClassVar[str]

    @property
    def identity(self) -> str:
        """The engine with its library versions and settings: part of every derivative's
        cache key, since another engine makes other bytes of the same image."""
        ...

    def writable_formats(self) -> frozenset[Format]: ...

    def reduction(
        self, source_format: str | None, width: int, height: int, steps: PillowSteps
    ) -> int: ...

    def cost(self, plan: Plan, info: SourceInfo, *, decoded_cached: bool = False) -> Cost: ...

    def decode(
        self, fetched: Fetched, factor: int, allowance: Allowance, record: Record | None = None
    ) -> D: ...

    def finish(self, decoded: D, steps: PillowSteps, record: Record | None = None) -> bytes: ...

    def render(
        self,
        fetched: Fetched,
        steps: PillowSteps,
        allowance: Allowance,
        record: Record | None = None,
    ) -> bytes: ...


class PillowMeasures:
    """What every engine takes from ``imaging.py`` as it is: the formats offered (an engine
    that cannot write one has Pillow write it), the reduction to decode at (so the reserved
    cost holds for either engine) and that cost (Pillow's count is an upper bound for
    libvips, which stores RGB in 3 bytes a pixel and holds strips, not copies)."""

    def writable_formats(self) -> frozenset[Format]:
        return imaging.writable_formats()

    def reduction(
        self, source_format: str | None, width: int, height: int, steps: PillowSteps
    ) -> int:
        return imaging.reduction(source_format, width, height, steps)

    def cost(self, plan: Plan, info: SourceInfo, *, decoded_cached: bool = False) -> Cost:
        return imaging.cost(plan, info, decoded_cached=decoded_cached)


class PillowEngine(PillowMeasures):
    """``imaging.py``, unchanged."""

    name: ClassVar[str] = "pillow"

    @property
    def identity(self) -> str:
        return "pillow"  # Pillow's version is in every key already (model.Plan.key)

    def decode(
        self, fetched: Fetched, factor: int, allowance: Allowance, record: Record | None = None
    ) -> imaging.Decoded:
        return imaging.decode(fetched, factor, allowance, record)

    def finish(
        self, decoded: imaging.Decoded, steps: PillowSteps, record: Record | None = None
    ) -> bytes:
        return imaging.finish(decoded, steps, record)

    def render(
        self,
        fetched: Fetched,
        steps: PillowSteps,
        allowance: Allowance,
        record: Record | None = None,
    ) -> bytes:
        return imaging.render(fetched, steps, allowance, record)


def vips_missing() -> str | None:
    """Why the vips engine cannot run here (pyvips or libvips not importable), or ``None``."""
    try:
        import pyvips  # noqa: F401  (imported to see that it and libvips load)
    except Exception as exc:  # ImportError without pyvips, OSError without libvips
        return f"libvips is not usable here ({type(exc).__name__}: {exc}); install: {VIPS_INSTALL}"
    return None


def engine_named(name: str, vips_steps: str = "measured") -> Engine[Any]:
    """The engine ``imaging.engine`` names (settings have checked that it can run), for vips
    doing the steps ``imaging.vips_steps`` names in libvips."""
    if name == "vips":
        from iiif_shim.imaging.vips import (  # only when chosen: pyvips is an optional extra
            POLICIES,
            VipsEngine,
        )

        return VipsEngine(POLICIES[vips_steps])
    if name == "pillow":
        return PillowEngine()
    raise ValueError(f"unknown image engine {name!r} (known: {', '.join(ENGINES)})")
