"""Small text helpers shared across floors: the natural order of names, JSON inside an HTML
``<script>``."""

from __future__ import annotations

import json
import re
from typing import Any


def natural_key(name: str) -> tuple[tuple[int, int | str], ...]:
    """Sort key that puts ``p2`` before ``p10``."""
    return tuple(
        (0, int(part)) if part.isdigit() else (1, part.lower())
        for part in re.split(r"(\d+)", name)
        if part
    )


def script_json(data: Any) -> str:
    """``data`` as JSON that cannot end its ``<script>`` element nor open a comment in it:
    ``<``, ``>`` and ``&`` written as ``\\u003c``-style escapes (JSON and JavaScript read the
    same characters back; HTML never sees them), and U+2028/U+2029, which end a line in older
    JavaScript, escaped too."""
    text = json.dumps(data, ensure_ascii=False, separators=(",", ":"))
    return (
        text.replace("<", "\\u003c")
        .replace(">", "\\u003e")
        .replace("&", "\\u0026")
        .replace("\u2028", "\\u2028")
        .replace("\u2029", "\\u2029")
    )
