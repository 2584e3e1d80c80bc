"""A small JSON path evaluator, for values found in answers the shim does not control.

One syntax serves the ``template`` backend (``width: {json: image.width}``) and the object
sources that read a catalogue's JSON (``images: "$.files[*].iiif_id"``):

- ``$`` is the whole document; a path may also start with a plain name (``image.width``);
- ``.name`` a key of an object; on an array, a name of digits is an index (``pages.0.id``,
  the template backend's dotted form), and ``-1`` the last item;
- ``[n]`` an array index (negative from the end), ``['key']`` or ``["key"]`` a key with any
  characters (``\\'`` and ``\\\\`` escape), ``[*]`` or ``.*`` every item or value, in order.

No filters, slices or recursive descent. A step that does not fit the value it meets (a key on
an array, an index past the end) matches nothing; it is never an error. Paths are checked when
compiled (:func:`compile_path`: ``ValueError`` with a message for ops staff) and bounded: at most
``MAX_PATH`` characters and ``MAX_STEPS`` steps, and evaluation stops with ``ValueError`` once
any step would yield more than ``MAX_RESULTS`` values.
"""

from __future__ import annotations

import re
from collections.abc import Mapping
from dataclasses import dataclass
from functools import lru_cache
from typing import Any

MAX_PATH = 500  # characters of a path
MAX_STEPS = 32  # steps of a path
MAX_RESULTS = 100_000  # values one step may yield

_INDEX_RE = re.compile(r"-?[0-9]{1,9}")
_NAME_END = frozenset(".[]")


@dataclass(frozen=True)
class Step:
    kind: str  # "name" (a key, or an index on an array if digits), "key", "index", "all"
    key: str = ""
    index: int = 0


@dataclass(frozen=True)
class JsonPath:
    text: str
    steps: tuple[Step, ...]

    def select(self, doc: Any) -> list[Any]:
        """Every value the path matches in ``doc``, in document order."""
        nodes = [doc]
        for step in self.steps:
            found: list[Any] = []
            for node in nodes:
                _apply(step, node, found)
                if len(found) > MAX_RESULTS:
                    raise ValueError(f"{self.text} matches more than {MAX_RESULTS} values")
            nodes = found
            if not nodes:
                break
        return nodes

    def first(self, doc: Any) -> Any:
        """The first match, or None."""
        found = self.select(doc)
        return found[0] if found else None


def _apply(step: Step, node: Any, out: list[Any]) -> None:
    if step.kind == "all":
        if isinstance(node, list):
            out.extend(node)
        elif isinstance(node, Mapping):
            out.extend(node.values())
        return
    if isinstance(node, list):
        if step.kind == "index":
            index = step.index
        elif step.kind == "name" and _INDEX_RE.fullmatch(step.key):
            index = int(step.key)
        else:
            return
        if -len(node) <= index < len(node):
            out.append(node[index])
        return
    if isinstance(node, Mapping) and step.kind in ("name", "key") and step.key in node:
        out.append(node[step.key])


@lru_cache(maxsize=512)
def compile_path(text: str) -> JsonPath:
    """Parse ``text``; ``ValueError`` saying what is wrong and where."""
    if not isinstance(text, str) or not text:
        raise ValueError("a JSON path is not empty, e.g. `$.title` or `image.width`")
    if len(text) > MAX_PATH:
        raise ValueError(f"a JSON path has at most {MAX_PATH} characters")
    steps: list[Step] = []
    i = 0
    if text[0] == "$" and (len(text) == 1 or text[1] in ".["):
        i = 1
    elif text[0] not in ".[":  # the dotted form: a first name without a leading dot
        i = _name(text, 0, steps)
    while i < len(text):
        c = text[i]
        if c == ".":
            i = _name(text, i + 1, steps)
        elif c == "[":
            i = _bracket(text, i, steps)
        else:
            raise ValueError(f"unexpected {c!r} at character {i + 1} of {text!r}")
        if len(steps) > MAX_STEPS:
            raise ValueError(f"a JSON path has at most {MAX_STEPS} steps")
    return JsonPath(text, tuple(steps))


def _name(text: str, i: int, steps: list[Step]) -> int:
    end = i
    while end < len(text) and text[end] not in _NAME_END:
        end += 1
    name = text[i:end]
    if not name:
        raise ValueError(
            f"a name is missing at character {i + 1} of {text!r} (`..` and `.[` are not "
            "supported: write `$.a.b`, `$.a[0]` or `$['a b']`)"
        )
    if end < len(text) and text[end] == "]":
        raise ValueError(f"unexpected ']' at character {end + 1} of {text!r}")
    steps.append(Step("all") if name == "*" else Step("name", key=name))
    return end


def _bracket(text: str, i: int, steps: list[Step]) -> int:
    close = text.find("]", i)
    if text.startswith("[*]", i):
        steps.append(Step("all"))
        return i + 3
    quote = text[i + 1 : i + 2]
    if quote in ("'", '"'):
        key: list[str] = []
        j = i + 2
        while j < len(text):
            c = text[j]
            if c == "\\" and j + 1 < len(text):
                key.append(text[j + 1])
                j += 2
                continue
            if c == quote:
                break
            key.append(c)
            j += 1
        if j >= len(text) or text[j + 1 : j + 2] != "]":
            raise ValueError(f"unclosed [{quote}...{quote}] at character {i + 1} of {text!r}")
        steps.append(Step("key", key="".join(key)))
        return j + 2
    if close < 0:
        raise ValueError(f"unclosed '[' at character {i + 1} of {text!r}")
    inside = text[i + 1 : close].strip()
    if not _INDEX_RE.fullmatch(inside):
        raise ValueError(
            f"[{inside}] at character {i + 1} of {text!r} is not an index, [*] or a quoted key "
            "(filters and slices are not supported)"
        )
    steps.append(Step("index", index=int(inside)))
    return close + 1


def select(doc: Any, path: str | JsonPath) -> list[Any]:
    """Every value ``path`` matches in ``doc`` (``ValueError`` for a bad path or too many)."""
    compiled = path if isinstance(path, JsonPath) else compile_path(path)
    return compiled.select(doc)


def path_check(text: str | None) -> str | None:
    """A settings check: ``text`` is a valid JSON path (or absent)."""
    if text is None:
        return None
    try:
        compile_path(text)
    except ValueError as exc:
        return str(exc)
    return None
