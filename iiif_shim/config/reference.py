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

from iiif_shim.backends.settings import BACKEND_SETTINGS, NetworkSettings
from iiif_shim.cache.settings import CacheSettings
from iiif_shim.config.settings import LandingSettings, ServerSettings
from iiif_shim.core.routing import RouteSettings
from iiif_shim.core.settings import IIIFSettings
from iiif_shim.imaging.settings import ImagingSettings
from iiif_shim.presentation.settings import PresentationSettings
from iiif_shim.presentation.sources.settings import SOURCE_SETTINGS, HttpSourceSettings
from iiif_shim.presentation.viewers import ViewerSettings

#: The top-level sections, in the order a config file usually has them: (key, what it holds,
#: its settings class; None for the sections made of typed entries).
SECTIONS: tuple[tuple[str, str, type | None], ...] = (
    ("server", "the listening socket, processes, limits and timeouts", ServerSettings),
    ("iiif", "the Image API's prefix, limits and choices", IIIFSettings),
    ("cache", "the memory, disk and Redis caches", CacheSettings),
    ("imaging", "the image engine", ImagingSettings),
    ("routes", "a list; an identifier takes the first route that matches it", RouteSettings),
    ("backends", "a mapping of name to backend; `type:` picks the kind", None),
    ("landing", "the page at `/`", LandingSettings),
    ("presentation", "manifests, collections, object pages and PDFs", PresentationSettings),
    ("viewers", "the viewers on object pages", ViewerSettings),
)


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
    """The settings class a field's type holds (alone, optional or as list items), if any."""
    args = typing.get_args(hint)
    if typing.get_origin(hint) in (types.UnionType, typing.Union):
        inner = [a for a in args if a is not type(None)]
        return _settings_class(inner[0]) if len(inner) == 1 else None
    if typing.get_origin(hint) is tuple and args:
        return _settings_class(args[0])
    return hint if isinstance(hint, type) and dataclasses.is_dataclass(hint) else None


def _type_name(hint: Any) -> str:
    origin, args = typing.get_origin(hint), typing.get_args(hint)
    if origin in (types.UnionType, typing.Union):
        inner = [_type_name(a) for a in args if a is not type(None)]
        return " or ".join(inner) + (" or null" if type(None) in args else "")
    if origin is tuple:
        return f"list of {_type_name(args[0])}s" if args else "list"
    if origin is not None and issubclass(origin, Mapping):
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
    """A field's default as the reference shows it (``required`` when there is none)."""
    if f.default is not dataclasses.MISSING:
        return f"`{_value(f.default)}`"
    if f.default_factory is not dataclasses.MISSING:
        return f"`{_value(f.default_factory())}`"
    return "required"


def _table(rows: list[tuple[dataclasses.Field[Any], Any]]) -> Iterator[str]:
    yield "| key | type | default | meaning |"
    yield "|---|---|---|---|"
    for f, hint in rows:
        doc = " ".join(str(f.metadata["doc"]).split()).replace("|", "\\|")
        yield f"| `{f.name}` | {_type_name(hint)} | {default(f)} | {doc} |"


def _section(path: str, cls: type, level: int, skip: frozenset[str] = frozenset()) -> Iterator[str]:
    """The table of one settings class, then a sub-section for each nested settings class."""
    hints = _hints(cls)
    rows = [(f, hints[f.name]) for f in fields(cls) if f.name not in skip]
    yield from _table(rows)
    yield ""
    for f, hint in rows:
        nested = _settings_class(hint)
        if nested is not None:
            many = typing.get_origin(hint) is tuple
            yield f"{'#' * (level + 1)} `{path}.{f.name}`{' (each item)' if many else ''}"
            yield ""
            yield from _section(f"{path}.{f.name}", nested, level + 1)


def _typed(path: str, types_: Mapping[str, type], shared: type, shared_name: str) -> Iterator[str]:
    """One sub-section per ``type:``; the keys every networked type shares come once."""
    for name, cls in types_.items():
        networked = issubclass(cls, shared)
        yield f"### `type: {name}`"
        yield ""
        if networked:
            yield f"Plus the [{shared_name} keys](#{_anchor(shared_name + ' keys')})."
            yield ""
        inherited = frozenset(f.name for f in fields(cls) if owner(cls, f.name) in shared.__mro__)
        yield from _section(f"{path}.NAME", cls, 3, inherited)
    yield f"### {shared_name} keys"
    yield ""
    yield f"Every `{path}` type that talks HTTP takes these too."
    yield ""
    yield from _section(path, shared, 3)


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
            out += _typed("backends", BACKEND_SETTINGS, NetworkSettings, "Network")
        if key == "presentation":
            out += ["## `presentation.sources`", ""]
            out += ["A mapping of name to object source; `type:` picks the kind.", ""]
            out += _typed("presentation.sources", SOURCE_SETTINGS, HttpSourceSettings, "HTTP")
    return "\n".join(out).rstrip() + "\n"


if __name__ == "__main__":
    print(reference(), end="")
