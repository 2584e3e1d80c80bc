"""Identifier -> (backend, native identifier), from the ``routes:`` of the config (each one a
:class:`RouteSettings`).

Routes are tried in order on the decoded identifier; the first whose ``match`` (a regular
expression, searched) fits wins, and a route without ``match`` takes everything. The route's
``id`` template builds the native identifier from ``{id}`` and the match's named groups; the
named groups are also offered to the backend's URL templates.

For ``check-config`` it also says what a route lets through: whether its match is anchored
(:func:`anchored`), and which placeholder values may hold a ``/`` from the identifier
(:func:`slashed`), read from the regular expression's parse tree.
"""

from __future__ import annotations

import re
import string
from dataclasses import dataclass
from re import _parser  # type: ignore[attr-defined]
from typing import Any

from iiif_shim.base.errors import NotFound
from iiif_shim.base.schema import option
from iiif_shim.iiif.profile import RIGHTS_RE
from iiif_shim.model.plan import Target


def _rights(value: str) -> str | None:
    if RIGHTS_RE.fullmatch(value):
        return None
    return (
        "must be a Creative Commons or RightsStatements.org URI in its http:// form, "
        "e.g. http://creativecommons.org/licenses/by/4.0/"
    )


@dataclass(frozen=True)
class RouteSettings:
    backend: str = option(doc="name of a backend under `backends:`")
    match: re.Pattern[str] | None = option(
        None,
        doc="regular expression **searched** in the decoded identifier, so it matches "
        "anywhere unless anchored with `^` (and `$`); `check-config` warns about "
        "unanchored ones (`null`: matches all)",
    )
    id: str = option(
        "{id}",
        doc="the native identifier: `{id}` (the whole identifier) and the match's named groups",
    )
    rights: str | None = option(
        None,
        doc="rights URI for info.json (`rights` in 3.0, `license` in 2.1): a Creative Commons "
        "or RightsStatements.org URI in its `http://` form",
        check=lambda v: None if v is None else _rights(v),
    )
    access: str | None = option(
        None,
        doc="the access policy (a name under `auth.policies`) of every image of this route "
        "(absent: public)",
    )


class Router:
    def __init__(self, routes: tuple[RouteSettings, ...]) -> None:
        self.routes = routes

    def route(self, identifier: str) -> Target:
        for route in self.routes:
            groups: dict[str, str] = {}
            if route.match is not None:
                found = route.match.search(identifier)
                if found is None:
                    continue
                groups = {k: v or "" for k, v in found.groupdict().items()}
            native = route.id.format_map({**groups, "id": identifier})
            if not native:
                raise NotFound("no such image")
            return Target(
                backend=route.backend,
                native_id=native,
                params=tuple(sorted(groups.items())),
                rights=route.rights,
                access=route.access,
            )
        raise NotFound("no route of this server takes this identifier")

    def identity_backends(self) -> list[str]:
        """Backends reached by a catch-all route that passes identifiers through unchanged."""
        return [r.backend for r in self.routes if r.match is None and r.id == "{id}"]


# --- what a route lets through, for check-config -------------------------------------------

_SLASH = ord("/")
_CATEGORIES_WITH_SLASH = {"CATEGORY_NOT_DIGIT", "CATEGORY_NOT_SPACE", "CATEGORY_NOT_WORD"}


def anchored(match: re.Pattern[str] | None) -> bool:
    """Whether a route's match is tied to the start of the identifier (``^`` or ``\\A``):
    matches are searched, so an unanchored one also takes identifiers that merely contain it."""
    if match is None:
        return False
    items = list(_parser.parse(match.pattern))
    return (
        bool(items)
        and str(items[0][0]) == "AT"
        and str(items[0][1])
        in (
            "AT_BEGINNING",
            "AT_BEGINNING_STRING",
        )
    )


def slashed(match: re.Pattern[str] | None, native_id: str) -> frozenset[str]:
    """Placeholders (``id``, the native identifier a route makes with its ``native_id``
    template, and the match's named groups) whose value may hold a ``/`` that came from the
    identifier."""
    whole = True  # can the identifier itself hold "/"?
    groups: dict[str, bool] = {}
    if match is not None:
        parsed = _parser.parse(match.pattern)
        items = list(parsed)
        bounded = (
            anchored(match)
            and items
            and str(items[-1][0]) == "AT"
            and str(items[-1][1]) in ("AT_END", "AT_END_STRING")
        )
        whole = not bounded or _may_match_slash(items)
        numbers = parsed.state.groupdict
        for name, number in numbers.items():
            groups[name] = _group_may_match_slash(items, number)
    native = {
        name
        for _, name, _, _ in string.Formatter().parse(native_id)
        if name is not None and (whole if name == "id" else groups.get(name, True))
    }
    found = {name for name, slash in groups.items() if slash}
    if native:
        found.add("id")
    return frozenset(found)


def _group_may_match_slash(items: list[Any], number: int) -> bool:
    for op, arg in items:
        if str(op) == "SUBPATTERN":
            group, _, _, sub = arg
            if group == number:
                return _may_match_slash(list(sub))
        for sub in _children(op, arg):
            if _group_may_match_slash(sub, number):
                return True
    return False


def _may_match_slash(items: list[Any]) -> bool:
    for op, arg in items:
        name = str(op)
        if name == "ANY":
            return True
        if name == "LITERAL" and arg == _SLASH:
            return True
        if name == "NOT_LITERAL" and arg != _SLASH:
            return True
        if name == "IN" and _set_has_slash(arg):
            return True
        if name in ("ASSERT", "ASSERT_NOT"):
            continue  # zero-width
        if any(_may_match_slash(sub) for sub in _children(op, arg)):
            return True
    return False


def _children(op: Any, arg: Any) -> list[list[Any]]:
    name = str(op)
    if name == "SUBPATTERN":
        return [list(arg[3])]
    if name in ("MAX_REPEAT", "MIN_REPEAT", "POSSESSIVE_REPEAT"):
        return [list(arg[2])] if arg[1] != 0 else []
    if name == "BRANCH":
        return [list(branch) for branch in arg[1]]
    if name == "ATOMIC_GROUP":
        return [list(arg)]
    if name == "GROUPREF_EXISTS":
        return [list(b) for b in arg[1:] if b is not None]
    return []


def _set_has_slash(members: list[Any]) -> bool:
    negate = False
    hit = False
    for op, arg in members:
        name = str(op)
        if name == "NEGATE":
            negate = True
        elif name == "LITERAL":
            hit = hit or arg == _SLASH
        elif name == "RANGE":
            hit = hit or arg[0] <= _SLASH <= arg[1]
        elif name == "CATEGORY":
            hit = hit or str(arg) in _CATEGORIES_WITH_SLASH
    return hit != negate
