"""Small text helpers shared across floors: the natural order of names."""

from __future__ import annotations

import re


def natural_key(name: str) -> tuple[tuple[int, int | str], ...]:
    """Sort key that puts ``p2`` before ``p10``."""
    return tuple(
        (0, int(part)) if part.isdigit() else (1, part.lower())
        for part in re.split(r"(\d+)", name)
        if part
    )
