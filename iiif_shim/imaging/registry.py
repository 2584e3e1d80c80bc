"""The image engines by their ``imaging.engine`` name, and what the ``vips`` engine needs to run."""

from __future__ import annotations

from typing import Any

from iiif_shim.imaging.engine import Engine
from iiif_shim.imaging.pillow import PillowEngine
from iiif_shim.imaging.settings import ENGINES


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
