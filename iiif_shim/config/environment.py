"""Settings from the environment: ``${NAME}`` in the text values of a configuration.

:func:`interpolate` walks a parsed YAML document before it is read (``parse_settings`` calls it,
the one place) and, in every text value (whole or inside it, in lists and mappings at any
depth; never in keys), replaces ``${NAME}`` with the environment variable ``NAME``
(``[A-Za-z_][A-Za-z0-9_]*``). ``$${`` writes a literal ``${``; any other ``$`` is itself. A
variable that is not set, a ``${`` not closed and a name that is not one are problems naming
the key (and the variable), all reported with the configuration's other problems; a variable
set but empty is an empty text. What is substituted is not read again (a value holding
``${X}`` stays as it is). Each list and mapping is walked once, however many YAML aliases refer
to it (a file of aliases of aliases costs what its size costs); a document nested deeper than
:data:`MAX_DEPTH` levels, or holding itself (an alias inside its own anchor), is a problem.

A value in which something was substituted is text (:class:`~iiif_shim.base.schema.
FromEnvironment`), as if it had been quoted in the file; where the key wants a whole number, a
number or true/false, ``base/schema.py`` reads that text as one (``port: ${PORT}``).

:func:`referenced` tells which variables the configurations read so far named, so that a
supervisor can leave them out of its workers' environment (they get the settings resolved).
"""

from __future__ import annotations

import os
import re
from collections.abc import Mapping
from typing import Any

from iiif_shim.base.schema import UNRESOLVED, FromEnvironment

_NAME_RE = re.compile(r"[A-Za-z_][A-Za-z0-9_]*")
MAX_DEPTH = 64  # nesting of the document walked; a configuration nests a few levels
_REFERENCED: set[str] = set()  # every NAME whose ${NAME} this process substituted


def referenced() -> frozenset[str]:
    """The names of the environment variables substituted for ``${NAME}`` in every
    configuration this process read."""
    return frozenset(_REFERENCED)


def interpolate(
    data: Any, environ: Mapping[str, str] | None = None
) -> tuple[Any, list[tuple[str, str]]]:
    """``data`` with ``${NAME}`` substituted in every text value, and the problems found
    (YAML path, message)."""
    env = os.environ if environ is None else environ
    problems: list[tuple[str, str]] = []
    return _Walk(env, problems).walk(data, "", 0), problems


class _Walk:
    """One walk of a document: each list and mapping is walked once, however many times YAML
    aliases (``*name``) refer to it, and its copy is shared as the original was (so a file of
    aliases of aliases costs what its size costs, not the size it would have spelled out)."""

    def __init__(self, env: Mapping[str, str], problems: list[tuple[str, str]]) -> None:
        self.env = env
        self.problems = problems
        self.done: dict[int, Any] = {}  # id() of a container walked -> its copy
        self.active: set[int] = set()  # id() of the containers being walked (the ancestors)
        self.too_deep = False

    def walk(self, value: Any, path: str, depth: int) -> Any:
        if isinstance(value, str):
            return substitute(value, path, self.env, self.problems)
        if not isinstance(value, (Mapping, list)):
            return value
        if id(value) in self.active:
            self.problems.append((path, "holds itself (a YAML alias inside its own anchor)"))
            return UNRESOLVED
        if (copy := self.done.get(id(value))) is not None:
            return copy
        if depth >= MAX_DEPTH:
            if not self.too_deep:  # one problem, at the first place it happens
                self.too_deep = True
                self.problems.append(
                    (
                        path,
                        f"nested more than {MAX_DEPTH} levels deep (a configuration needs a few)",
                    )
                )
            return UNRESOLVED
        self.active.add(id(value))
        if isinstance(value, Mapping):
            out: Any = {
                k: self.walk(v, f"{path}.{k}" if path else str(k), depth + 1)
                for k, v in value.items()
            }
        else:
            out = [self.walk(v, f"{path}[{i}]", depth + 1) for i, v in enumerate(value)]
        self.active.discard(id(value))
        self.done[id(value)] = out
        return out


def substitute(
    text: str, path: str, env: Mapping[str, str], problems: list[tuple[str, str]]
) -> Any:
    """``text`` with its ``${NAME}`` substituted (a :class:`FromEnvironment` when one was),
    ``$${`` made ``${``; after a problem (appended) ``UNRESOLVED``, which the reader skips."""
    if "${" not in text:
        return text
    out: list[str] = []
    i = 0
    substituted = failed = False
    while True:
        at = text.find("${", i)
        if at < 0:
            out.append(text[i:])
            break
        if at > 0 and text[at - 1] == "$":  # $${: a literal ${ (the first $ dropped)
            out.append(text[i : at - 1] + "${")
            i = at + 2
            continue
        out.append(text[i:at])
        end = text.find("}", at + 2)
        if end < 0:
            problems.append((path, "'${' is not closed by '}' (write '$${' for a literal '${')"))
            return UNRESOLVED
        name = text[at + 2 : end]
        if not _NAME_RE.fullmatch(name):
            shown = name if len(name) <= 40 else name[:37] + "..."
            problems.append(
                (
                    path,
                    f"'${{{shown}}}' does not name an environment variable (letters, digits "
                    "and '_', not starting with a digit; '$${' for a literal '${')",
                )
            )
            failed = True
        elif name not in env:
            problems.append((path, f"environment variable {name} is not set (used as ${{{name}}})"))
            failed = True
        else:
            out.append(env[name])
            _REFERENCED.add(name)
        substituted = True
        i = end + 1
    if failed:
        return UNRESOLVED
    joined = "".join(out)
    return FromEnvironment(joined) if substituted else joined
