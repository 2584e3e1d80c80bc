"""The ``imaging:`` section (which library does the pixel work, and with libvips which steps), what
the ``vips`` engine needs to run here, and Pillow's own limit on the pixels it opens."""

from __future__ import annotations

import importlib
from dataclasses import dataclass

from iiif_shim.base.schema import option

ENGINES = ("pillow", "vips")
VIPS_STEPS = ("measured", "all")
VIPS_INSTALL = "pip install 'iiif-shim[vips]' (pyvips) and apt-get install libvips42"

# Pillow's process-wide guard: it refuses to open more than twice this many pixels (and warns
# above it). The shim's own, configurable ``iiif.max_source_pixels`` may not go past that.
PILLOW_GUARD_PIXELS = 1 << 30


def vips_missing() -> str | None:
    """Why the vips engine cannot run here (pyvips or libvips not importable), or ``None``.
    A look at this machine, not a dependency: reading the settings never needs pyvips."""
    try:
        importlib.import_module("pyvips")  # that it and libvips load
    except Exception as exc:  # ImportError without pyvips, OSError without libvips
        return f"libvips is not usable here ({type(exc).__name__}: {exc}); install: {VIPS_INSTALL}"
    return None


def _engine(value: str) -> str | None:
    if value not in ENGINES:
        return f"must be one of: {', '.join(ENGINES)}"
    return vips_missing() if value == "vips" else None


@dataclass(frozen=True)
class ImagingSettings:
    engine: str = option(
        "pillow",
        doc="`pillow`, or `vips`: libvips through pyvips, installed with `pip install "
        "'iiif-shim[vips]'` over Debian's `libvips42` (`apt-get install libvips42`; its "
        "build reads and writes JPEG 2000). Choosing `vips` where pyvips or libvips "
        "cannot load is a `check-config` error naming these commands",
        check=_engine,
    )
    vips_steps: str = option(
        "measured",
        doc="with `vips`: `measured` uses libvips only for the steps it was measured faster "
        "at, Pillow for the rest; `all` uses libvips for every step it can do",
        check=lambda v: None if v in VIPS_STEPS else f"must be one of: {', '.join(VIPS_STEPS)}",
    )
