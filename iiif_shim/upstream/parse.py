"""Parsing what legacy servers say about an image, treating every answer as hostile.

Metadata answers (a ``.dzi``, ``ImageProperties.xml``, an ``info.json``, a catalogue's JSON) are
already capped in size by the upstream client; here they are parsed with the traps closed: XML
with a DTD or entities is refused outright (no entity expansion, no external fetches), JSON
nested deep enough to exhaust the parser's recursion is a plain error. Every failure is a
``ValueError`` the backend turns into a 502. Backends run these in the thread pool, never on
the event loop.
"""

from __future__ import annotations

import json
import re
import xml.etree.ElementTree as ET
from typing import Any

_DTD_RE = re.compile(r"<!(DOCTYPE|ENTITY)", re.IGNORECASE)


def parse_xml(text: str) -> ET.Element:
    """The root element, with namespaces stripped from tag names."""
    if _DTD_RE.search(text):
        raise ValueError("XML with a DTD or entities is not accepted")
    try:
        root = ET.fromstring(text)
    except ET.ParseError as exc:
        raise ValueError(f"not well-formed XML ({exc})") from None
    for el in root.iter():
        el.tag = el.tag.rsplit("}", 1)[-1]
    return root


def parse_json(text: str | bytes) -> Any:
    try:
        return json.loads(text)
    except RecursionError:
        raise ValueError("JSON nested too deeply") from None
    except (ValueError, TypeError) as exc:
        raise ValueError(f"not valid JSON ({exc})") from None
