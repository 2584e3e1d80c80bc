"""The configuration reference, rendered from the settings classes themselves.

Every key a YAML file may hold is a field declared with :func:`~iiif_shim.base.schema.option`
(its default, its one ``doc``, its check); this module walks them from the top-level sections
down (nested sections, lists of items, each backend and object source type) and writes one
Markdown page, so the reference can never miss or misstate a key. The documentation site
builds its configuration reference page with :func:`reference`; ``python -m
iiif_shim.config.reference`` prints it.
"""

from __future__ import annotations

import dataclasses
import json
import re
import types
import typing
from collections.abc import Iterator, Mapping
from pathlib import Path
from typing import Any

from iiif_shim.backends.settings import BACKEND_SETTINGS, BackendSettings, NetworkSettings
from iiif_shim.config.settings import SECTIONS
from iiif_shim.presentation.sources.settings import (
    SOURCE_SETTINGS,
    HttpSourceSettings,
    SourceSettings,
)

# what a mapping of typed entries holds, in words
_KINDS: dict[type, str] = {BackendSettings: "backend", SourceSettings: "object source"}
_MIB = 1 << 20


def fields(cls: type) -> tuple[dataclasses.Field[Any], ...]:
    """The keys of a settings class: ``type`` first, then its own keys, then those it inherits
    (each group in declaration order)."""

    def place(f: dataclasses.Field[Any]) -> tuple[bool, int, int]:
        declared = owner(cls, f.name)
        order = list(vars(declared)["__annotations__"])
        return f.name != "type", cls.__mro__.index(declared), order.index(f.name)

    return tuple(sorted((f for f in dataclasses.fields(cls) if "doc" in f.metadata), key=place))


def owner(cls: type, name: str) -> type:
    """The class that declares key ``name`` of ``cls`` (itself, or the base it inherits it from)."""
    return next(k for k in cls.__mro__ if name in vars(k).get("__annotations__", {}))


def _hints(cls: type) -> dict[str, Any]:
    return typing.get_type_hints(cls)


def _settings_class(hint: Any) -> type | None:
    """The settings class a field's type holds (alone, optional, as list items or as a mapping's
    values; besides text or not), if any."""
    args = typing.get_args(hint)
    if typing.get_origin(hint) in (types.UnionType, typing.Union):
        found = [c for a in args if a is not type(None) and (c := _settings_class(a))]
        return found[0] if len(found) == 1 else None
    if typing.get_origin(hint) is tuple and args:
        return _settings_class(args[0])
    if typing.get_origin(hint) in (Mapping, dict) and len(args) == 2 and args[1] is not Any:
        return _settings_class(args[1])
    return hint if isinstance(hint, type) and dataclasses.is_dataclass(hint) else None


def _type_name(hint: Any) -> str:
    origin, args = typing.get_origin(hint), typing.get_args(hint)
    if origin in (types.UnionType, typing.Union):
        inner = [_type_name(a) for a in args if a is not type(None)]
        return " or ".join(inner) + (" or null" if type(None) in args else "")
    if origin is tuple:
        if args and typing.get_origin(args[0]) in (types.UnionType, typing.Union):
            return "list of " + " or ".join(f"{_type_name(a)}s" for a in typing.get_args(args[0]))
        return f"list of {_type_name(args[0])}s" if args else "list"
    if origin is not None and issubclass(origin, Mapping):
        kind = next(
            (
                word
                for base, word in _KINDS.items()
                if isinstance(args[1], type) and issubclass(args[1], base)
            ),
            None,
        )
        if kind is not None:
            return f"mapping of name to {kind}"
        return f"mapping of {_type_name(args[0])} to {_type_name(args[1])}"
    if hint is Path:
        return "path"
    if hint is re.Pattern or origin is re.Pattern:
        return "regular expression"
    if hint is bool:
        return "boolean"
    if hint is float:
        return "number"
    if hint is int:
        return "integer"
    if hint is str:
        return "string"
    if isinstance(hint, type) and dataclasses.is_dataclass(hint):
        return "section"
    return str(getattr(hint, "__name__", hint))


def _value(value: Any) -> str:
    """A default as it is written in YAML."""
    if value is None:
        return "null"
    if isinstance(value, bool):
        return "true" if value else "false"
    if isinstance(value, (int, float)):
        return repr(value)
    if isinstance(value, str):
        return json.dumps(value)
    if isinstance(value, Path):
        return json.dumps(str(value))
    if isinstance(value, Mapping):
        return "{" + ", ".join(f"{k}: {_value(v)}" for k, v in value.items()) + "}"
    if isinstance(value, (tuple, list)):
        return "[" + ", ".join(_value(v) for v in value) + "]"
    return str(value)


def default(f: dataclasses.Field[Any]) -> str:
    """A field's default as the reference shows it: YAML (with a size in MiB or GiB where it
    counts bytes), ``required`` when there is none, ``see below`` for a nested section."""
    if f.default is not dataclasses.MISSING:
        value = f.default
    elif f.default_factory is not dataclasses.MISSING:
        value = f.default_factory()
    else:
        return "required"
    if dataclasses.is_dataclass(value):
        return "see below"
    shown = f"`{_value(value)}`"
    counts_bytes = "bytes" in f.name or "budget" in f.name
    if counts_bytes and type(value) is int and value >= _MIB and value % _MIB == 0:
        mib = value // _MIB
        shown += f" ({mib // 1024} GiB)" if mib % 1024 == 0 else f" ({mib} MiB)"
    return shown


def _table(rows: list[tuple[dataclasses.Field[Any], Any]]) -> Iterator[str]:
    yield "| key | type | default | meaning |"
    yield "|---|---|---|---|"
    for f, hint in rows:
        doc = " ".join(str(f.metadata["doc"]).split()).replace("|", "\\|")
        kind = _type_name(hint) + (
            f"; secret (or `{f.name}_file`)" if f.metadata.get("secret") else ""
        )
        yield f"| `{f.name}` | {kind} | {default(f)} | {doc} |"


def _section(
    path: str, cls: type, level: int, skip: frozenset[str] = frozenset(), note: str = ""
) -> Iterator[str]:
    """The table of one settings class, then a sub-section for each nested settings class (keys
    that hold the same class share one; ``note`` qualifies their headings)."""
    hints = _hints(cls)
    rows = [(f, hints[f.name]) for f in fields(cls) if f.name not in skip]
    yield from _table(rows)
    yield ""
    nested: dict[type, list[str]] = {}
    for f, hint in rows:
        if (inner := _settings_class(hint)) is not None:
            nested.setdefault(inner, []).append(f.name)
    for inner, names in nested.items():
        origins = {typing.get_origin(hints[n]) for n in names}
        each = ""
        if tuple in origins:
            each = " (each item)"
        elif origins & {Mapping, dict}:
            each = " (each value)"
        title = ", ".join(f"`{path}.{n}`" for n in names)
        yield f"{'#' * (level + 1)} {title}{each}{note}"
        yield ""
        yield from _section(f"{path}.{names[0]}", inner, level + 1, note=note)


def _typed(
    path: str, types_: Mapping[str, type], shared: type, shared_name: str, level: int
) -> Iterator[str]:
    """One sub-section per ``type:``; the keys the types that talk HTTP share come once, and
    each such type says which of them it takes."""
    heading = f"{shared_name} keys"
    link = f"[{heading}](#{_anchor(heading)})"
    taken_by_any: set[str] = set()
    for name, cls in types_.items():
        yield f"{'#' * (level + 1)} `type: {name}`"
        yield ""
        inherited = frozenset(f.name for f in fields(cls) if owner(cls, f.name) in shared.__mro__)
        if inherited:
            unused: frozenset[str] = getattr(cls, "unused_keys", frozenset())
            taken = [f.name for f in fields(shared) if f.name in inherited - unused]
            taken_by_any.update(taken)
            if len(taken) == len(fields(shared)):
                yield f"Plus the {link}."
            else:
                yield f"Plus these {link}: " + ", ".join(f"`{k}`" for k in taken) + "."
            yield ""
        yield from _section(f"{path}.NAME", cls, level + 1, inherited, f" (`type: {name}`)")
    yield f"{'#' * (level + 1)} {heading}"
    yield ""
    yield f"The `{path}` types that talk HTTP take these, as each type above says."
    yield ""
    untaken = frozenset(f.name for f in fields(shared)) - taken_by_any
    yield from _section(path, shared, level + 1, untaken)


def _anchor(title: str) -> str:
    """The anchor MkDocs gives a heading (lower case, spaces to dashes, punctuation dropped)."""
    kept = "".join(c for c in title.lower() if c.isalnum() or c in " -_")
    return "-".join(kept.split())


def reference() -> str:
    """The whole configuration reference as Markdown."""
    out = [
        "# Configuration reference",
        "",
        "Generated from the settings classes: every key the shim reads is here, with its type,",
        "its default and its meaning. Unknown keys are refused. How the pieces fit together:",
        "[Configuration](configuration.md).",
        "",
    ]
    for key, what, cls in SECTIONS:
        out += [f"## `{key}`", "", what[0].upper() + what[1:] + ".", ""]
        if cls is not None:
            out += _section(key, cls, 2)
        else:
            out += _typed("backends", BACKEND_SETTINGS, NetworkSettings, "Network", 2)
        if key == "presentation":
            out += ["### `presentation.sources`", ""]
            out += ["A mapping of name to object source; `type:` picks the kind.", ""]
            out += _typed("presentation.sources", SOURCE_SETTINGS, HttpSourceSettings, "HTTP", 3)
    return "\n".join(out).rstrip() + "\n"


if __name__ == "__main__":
    print(reference(), end="")
