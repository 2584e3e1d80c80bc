"""Identifier -> (backend, native identifier), from the ``routes:`` of the config.

Routes are tried in order on the decoded identifier; the first whose ``match`` (a regular
expression, searched) fits wins, and a route without ``match`` takes everything. The route's
``id`` template builds the native identifier from ``{id}`` and the match's named groups; the
named groups are also offered to the backend's URL templates.
"""

from __future__ import annotations

from .errors import NotFound
from .model import Target
from .settings import RouteSettings


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
            )
        raise NotFound("no route of this server takes this identifier")

    def identity_backends(self) -> list[str]:
        """Backends reached by a catch-all route that passes identifiers through unchanged."""
        return [r.backend for r in self.routes if r.match is None and r.id == "{id}"]
