"""A small reader that turns YAML mappings into frozen dataclasses, collecting every problem.

Each settings class is a frozen dataclass whose fields are declared with :func:`option`; the
reader checks types (scalars, lists, mappings, nested settings classes, and a choice of a
text or a mapping form, told apart by the value's shape), required keys, unknown
keys (with a "did you mean"), each field's own check, and a class's ``findings()`` method when
it has one (checks across its fields), and records every problem with its YAML path instead of
stopping at the first one.

Secrets: a field declared ``option(..., secret=True)`` may instead be given as ``<key>_file``,
a file (relative to the config file) whose text, a leading BOM and trailing newlines stripped,
is its value; both at once, a missing, unreadable, empty or oversized file (over
:data:`SECRET_FILE_LIMIT`) are problems naming the file, never its content. Every secret value
read, and the password of every URL written ``user:password@`` in any text, is handed to
``base/redaction.py`` as it is read, so no report, log line or answer prints it (a problem found
before the file is refused included); one too short to be looked for is a warning.

Text that came from the environment (``${NAME}``, substituted by ``config/environment.py``,
marked :class:`FromEnvironment`) is text, as YAML would read a quoted string; where a field
wants a whole number, a number or true/false, that text is read as one (:func:`from_text`).

:class:`Finding` is the one channel every check speaks through: a problem (the file is refused)
or a warning, about one key, relative to the section that found it. Every component declares
its section with this module; ``config/`` assembles the sections.
"""

from __future__ import annotations

import collections.abc
import dataclasses
import difflib
import math
import os
import re
import stat
import types
import typing
from collections.abc import Callable, Iterable, Mapping
from dataclasses import dataclass
from pathlib import Path
from typing import Any, TypeVar

from iiif_shim.base import redaction

T = TypeVar("T")
Check = Callable[[Any], str | None]

_MISSING = dataclasses.MISSING
_BAD = object()
FILE_SUFFIX = "_file"  # a secret key ``X`` may be given as ``X_file``
SECRET_FILE_LIMIT = 64 * 1024  # bytes a secret's file may hold
_INT_RE = re.compile(r"[+-]?[0-9]{1,30}")
_FLOAT_RE = re.compile(r"[+-]?([0-9]+\.?[0-9]*|\.[0-9]+)([eE][+-]?[0-9]+)?")
_SHORT = (
    f"{{what}} shorter than {redaction.MIN_LENGTH} characters is not hidden from logs and "
    f"reports (redaction looks for secrets of {redaction.MIN_LENGTH} characters or more); use "
    "a longer one"
)
_BOOLS = {"true": True, "yes": True, "on": True, "false": False, "no": False, "off": False}


class FromEnvironment(str):
    """Text of the YAML file in which ``${NAME}`` was substituted from the environment."""


class _Unresolved:
    """A value whose ``${...}`` could not be substituted (the problem is reported already):
    the reader skips it, without a second problem about its type."""

    def __repr__(self) -> str:
        return "a value with an unset ${...}"


UNRESOLVED: Any = _Unresolved()


def option(
    default: Any = _MISSING, *, doc: str, check: Check | None = None, secret: bool = False
) -> Any:
    """Declare a settings field: its default (none = required), a one-line doc, a check;
    ``secret``: its value is never printed, and it may be given as ``<key>_file``."""
    metadata = {"doc": doc, "check": check, "secret": secret}
    if isinstance(default, (list, dict, set)):
        raise TypeError("use a tuple or a frozen mapping as a default")
    if isinstance(default, Mapping):  # read-only mappings are not hashable defaults
        frozen = dict(default)
        return dataclasses.field(
            default_factory=lambda: types.MappingProxyType(frozen),
            metadata=metadata,
            repr=not secret,
        )
    return dataclasses.field(default=default, metadata=metadata, repr=not secret)  # never shown


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
        if data is UNRESOLVED:
            return None
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
        known = [f.name for f in fields]
        known += [f.name + FILE_SUFFIX for f in fields if f.metadata.get("secret")]
        self.unknown_keys(mapping, known, path)
        hints = typing.get_type_hints(cls)
        values: dict[str, Any] = dict(extra or {})
        for f in fields:
            if f.name in values:
                continue
            field_path = _join(path, f.name)
            given = mapping.get(f.name, _MISSING)
            if f.metadata.get("secret"):
                given = self.secret(mapping, f.name, field_path)
                if given is _BAD:
                    continue
            if given is _MISSING:
                if f.default is _MISSING and f.default_factory is _MISSING:
                    self.problem(field_path, "required")
                continue
            value = self.convert(hints[f.name], given, field_path)
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

    def secret(self, mapping: Mapping[str, Any], key: str, path: str) -> Any:
        """The value of secret ``key``: as written, or read from ``<key>_file`` (``_MISSING``
        when neither is given, ``_BAD`` after a problem); remembered for redaction."""
        file_key = key + FILE_SUFFIX
        named = mapping.get(file_key)
        if named is UNRESOLVED:
            return _BAD
        if named is None:
            value = mapping.get(key, _MISSING)
        elif key in mapping:
            self.problem(path, f"give either {key} or {file_key}, not both")
            return _BAD
        else:
            value = self.secret_file(named, path + FILE_SUFFIX)
            if value is _BAD:
                return _BAD
        if value is UNRESOLVED:
            return _BAD
        remembered = isinstance(value, str) and redaction.remember_all(
            redaction.secret_values(value)
        )
        # (a URL's short password: convert() says so, as for any URL)
        short = isinstance(value, str) and value and not remembered
        if short and not redaction.url_passwords(value):
            self.warn(path, _SHORT.format(what="a secret"))
        return value

    def secret_file(self, named: Any, path: str) -> Any:
        """The text of a secret's file (relative to ``base_dir``), trailing newlines stripped;
        every problem names the file, never what it holds."""
        if not isinstance(named, str) or not named:
            self.problem(path, f"must be a path, not {_kind(named)}")
            return _BAD
        file = Path(named).expanduser()
        file = file if file.is_absolute() else self.base_dir / file
        try:
            info = file.stat()  # a symbolic link is followed: Kubernetes mounts Secrets so
            if not stat.S_ISREG(info.st_mode):  # never a FIFO, whose reading would wait
                self.problem(path, f"{file} is not a file")
                return _BAD
            if info.st_size > SECRET_FILE_LIMIT:
                self.problem(path, f"{file} holds more than {SECRET_FILE_LIMIT} bytes")
                return _BAD
            fd = os.open(file, os.O_RDONLY | os.O_NONBLOCK)
            with open(fd, "rb") as stream:
                data = stream.read(SECRET_FILE_LIMIT + 1)
        except OSError as exc:
            self.problem(path, f"cannot read {file}: {exc.strerror or type(exc).__name__}")
            return _BAD
        if len(data) > SECRET_FILE_LIMIT:
            self.problem(path, f"{file} holds more than {SECRET_FILE_LIMIT} bytes")
            return _BAD
        try:  # a BOM some editors write first is no part of the secret
            text = data.decode("utf-8-sig").rstrip("\r\n")
        except UnicodeDecodeError:
            self.problem(path, f"{file} is not UTF-8 text")
            return _BAD
        if not text:
            self.problem(path, f"{file} is empty")
            return _BAD
        return text

    def convert(self, hint: Any, value: Any, path: str) -> Any:
        if value is UNRESOLVED:
            return _BAD
        if isinstance(value, str):
            passwords = redaction.url_passwords(value)
            if not redaction.remember_all(passwords):
                self.warn(path, _SHORT.format(what="the password of this URL"))
            if isinstance(value, FromEnvironment) and hint in (bool, int, float):
                converted = from_text(hint, value)
                if converted is not None:
                    return converted
                shown = str(value) if len(value) <= 40 else value[:37] + "..."
                self.problem(
                    path, f"must be {_describe(hint)}, not {shown!r} (from the environment)"
                )
                return _BAD
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
                return str(value)  # plain text, whatever marked it
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


def from_text(hint: Any, text: str) -> Any:
    """``text`` (from the environment) read as the scalar ``hint`` wants: a whole number
    (digits, with a sign), a number (also with a decimal point or an exponent, finite), or
    true/false (also yes/no, on/off, any case); None when it is not one, or ``hint`` is none
    of these (text stays text)."""
    stripped = text.strip()
    if hint is bool:
        return _BOOLS.get(stripped.lower())
    if hint is int:
        return int(stripped) if _INT_RE.fullmatch(stripped) else None
    if hint is float:
        if not _FLOAT_RE.fullmatch(stripped):
            return None
        number = float(stripped)
        return number if math.isfinite(number) else None
    return None


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
    if isinstance(value, str):
        return "text"
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
