"""A small reader that turns YAML mappings into frozen dataclasses, collecting every problem.

Each settings class is a frozen dataclass whose fields are declared with :func:`option`; the
reader checks types (scalars, lists, mappings, nested settings classes, and a choice of a
text or a mapping form, told apart by the value's shape), required keys, unknown
keys (with a "did you mean"), each field's own check, and a class's ``findings()`` method when
it has one (checks across its fields), and records every problem with its YAML path instead of
stopping at the first one.

:class:`Finding` is the one channel every check speaks through: a problem (the file is refused)
or a warning, about one key, relative to the section that found it. Every component declares
its section with this module; ``config/`` assembles the sections.
"""

from __future__ import annotations

import collections.abc
import dataclasses
import difflib
import re
import types
import typing
from collections.abc import Callable, Iterable, Mapping
from dataclasses import dataclass
from pathlib import Path
from typing import Any, TypeVar

T = TypeVar("T")
Check = Callable[[Any], str | None]

_MISSING = dataclasses.MISSING
_BAD = object()


def option(default: Any = _MISSING, *, doc: str, check: Check | None = None) -> Any:
    """Declare a settings field: its default (none = required), a one-line doc, a check."""
    metadata = {"doc": doc, "check": check}
    if isinstance(default, (list, dict, set)):
        raise TypeError("use a tuple or a frozen mapping as a default")
    if isinstance(default, Mapping):  # read-only mappings are not hashable defaults
        frozen = dict(default)
        return dataclasses.field(
            default_factory=lambda: types.MappingProxyType(frozen), metadata=metadata
        )
    return dataclasses.field(default=default, metadata=metadata)


@dataclass(frozen=True)
class Finding:
    """A problem (``error``: the configuration is refused) or a warning, about ``key`` (a path
    relative to the section that found it; empty: the section itself)."""

    key: str
    message: str
    error: bool


def problem(key: str, message: str) -> Finding:
    return Finding(key, message, error=True)


def warning(key: str, message: str) -> Finding:
    return Finding(key, message, error=False)


def at_least(low: float) -> Check:
    return lambda v: None if v is None or v >= low else f"must be at least {low:g}"


def between(low: float, high: float) -> Check:
    return lambda v: None if v is None or low <= v <= high else f"must be {low:g} to {high:g}"


class Reader:
    """Collects problems while reading; ``base_dir`` anchors relative paths."""

    def __init__(self, base_dir: Path) -> None:
        self.base_dir = base_dir
        self.problems: list[tuple[str, str]] = []
        self.warnings: list[tuple[str, str]] = []

    def problem(self, path: str, message: str) -> None:
        self.problems.append((path, message))

    def warn(self, path: str, message: str) -> None:
        self.warnings.append((path, message))

    def found(self, path: str, findings: Iterable[Finding]) -> None:
        """Record ``findings`` made under ``path``."""
        for finding in findings:
            where = _join(path, finding.key)
            (self.problem if finding.error else self.warn)(where, finding.message)

    def mapping(self, data: Any, path: str) -> Mapping[str, Any] | None:
        if data is None:
            return {}
        if not isinstance(data, Mapping):
            self.problem(path, f"must be a mapping, not {_kind(data)}")
            return None
        return data

    def unknown_keys(self, data: Mapping[str, Any], known: typing.Iterable[str], path: str) -> None:
        known = list(known)
        for key in data:
            if key in known:
                continue
            hint = difflib.get_close_matches(str(key), known, n=1, cutoff=0.6)
            message = "unknown key"
            message += f"; did you mean '{hint[0]}'?" if hint else f" (known: {', '.join(known)})"
            self.problem(_join(path, str(key)), message)

    def read(
        self, cls: type[T], data: Any, path: str, *, extra: Mapping[str, Any] | None = None
    ) -> T | None:
        """Read ``data`` into ``cls``; ``extra`` supplies fields already read elsewhere."""
        mapping = self.mapping(data, path)
        if mapping is None:
            return None
        before = len(self.problems)
        fields = dataclasses.fields(cls)  # type: ignore[arg-type]
        self.unknown_keys(mapping, [f.name for f in fields], path)
        hints = typing.get_type_hints(cls)
        values: dict[str, Any] = dict(extra or {})
        for f in fields:
            if f.name in values:
                continue
            field_path = _join(path, f.name)
            if f.name not in mapping:
                if f.default is _MISSING and f.default_factory is _MISSING:
                    self.problem(field_path, "required")
                continue
            value = self.convert(hints[f.name], mapping[f.name], field_path)
            if value is _BAD:
                continue
            check: Check | None = f.metadata.get("check")
            message = check(value) if check else None
            if message:
                self.problem(field_path, message)
                continue
            values[f.name] = value
        if len(self.problems) > before:
            return None
        made = cls(**values)
        self.found(path, getattr(made, "findings", list)())
        return None if len(self.problems) > before else made

    def convert(self, hint: Any, value: Any, path: str) -> Any:
        origin = typing.get_origin(hint)
        if origin in (typing.Union, types.UnionType):
            options = [a for a in typing.get_args(hint) if a is not type(None)]
            if value is None:
                return None
            # several types: the one of the value's shape (a mapping for a section or a
            # mapping, else the other)
            shaped = [o for o in options if _takes_mapping(o) == isinstance(value, Mapping)]
            return self.convert((shaped or options)[0], value, path)
        if value is None:
            self.problem(path, f"must be {_describe(hint)}, not null")
            return _BAD
        if isinstance(hint, type) and dataclasses.is_dataclass(hint):
            return _BAD if (made := self.read(hint, value, path)) is None else made
        if origin in (dict, Mapping, collections.abc.Mapping):
            key_hint, value_hint = typing.get_args(hint)
            mapping = self.mapping(value, path)
            if mapping is None:
                return _BAD
            out = {}
            for k, v in mapping.items():
                key = self.convert(key_hint, k, path)
                item = self.convert(value_hint, v, _join(path, str(k)))
                if key is _BAD or item is _BAD:
                    return _BAD
                out[key] = item
            return types.MappingProxyType(out)
        if origin is tuple:
            (item,) = typing.get_args(hint)[:1]
            if not isinstance(value, list):
                self.problem(path, f"must be a list, not {_kind(value)}")
                return _BAD
            items = [self.convert(item, v, f"{path}[{i}]") for i, v in enumerate(value)]
            return _BAD if any(i is _BAD for i in items) else tuple(items)
        if hint is bool:
            if isinstance(value, bool):
                return value
        elif hint is int:
            if isinstance(value, int) and not isinstance(value, bool):
                return value
        elif hint is float:
            if isinstance(value, (int, float)) and not isinstance(value, bool):
                return float(value)
        elif hint is str:
            if isinstance(value, str):
                return value
        elif hint is Path:
            if isinstance(value, str) and value:
                p = Path(value).expanduser()
                return p if p.is_absolute() else (self.base_dir / p)
        elif hint is re.Pattern or typing.get_origin(hint) is re.Pattern:
            if isinstance(value, str):
                try:
                    return re.compile(value)
                except re.error as exc:
                    self.problem(path, f"not a valid regular expression: {exc}")
                    return _BAD
        else:  # pragma: no cover - a programming error in a settings class
            raise TypeError(f"unsupported settings type {hint!r} at {path}")
        self.problem(path, f"must be {_describe(hint)}, not {_kind(value)}")
        return _BAD


def _takes_mapping(hint: Any) -> bool:
    """Whether a type is read from a YAML mapping (a settings class or a mapping)."""
    origin = typing.get_origin(hint)
    return (isinstance(hint, type) and dataclasses.is_dataclass(hint)) or (
        origin is not None and isinstance(origin, type) and issubclass(origin, Mapping)
    )


def _join(path: str, key: str) -> str:
    return f"{path}.{key}" if path else key


def _kind(value: Any) -> str:
    if value is None:
        return "null"
    return {
        bool: "a boolean",
        int: "a number",
        float: "a number",
        str: "text",
        list: "a list",
        dict: "a mapping",
    }.get(type(value), type(value).__name__)


def _describe(hint: Any) -> str:
    if hint is Path:
        return "a path"
    if hint is re.Pattern or typing.get_origin(hint) is re.Pattern:
        return "a regular expression"
    return {bool: "true or false", int: "a whole number", float: "a number", str: "text"}.get(
        hint, str(hint)
    )
