"""The contract every backend keeps, and the base of the backends that speak HTTP.

A backend is narrow: it reports facts about a source (:meth:`Backend.facts`), delivers what the
planner asks of it (:meth:`Backend.fetch`), says what it does natively through one hook
(:meth:`Backend.capabilities`), and turns its own low-level failures into the shim's errors at
its boundary. It never decides what to do natively: ``planner.py`` does, from the capabilities.

:class:`UpstreamBackend` is the skeleton every network backend shares: its URL templates (named,
parsed from its settings), one :class:`~.upstream.Upstream` client, and safe expansion of a
template for a target.
"""

from __future__ import annotations

import logging
from abc import ABC, abstractmethod
from collections.abc import Awaitable, Callable, Mapping
from contextlib import AbstractAsyncContextManager
from dataclasses import dataclass
from typing import Any, ClassVar, TypeVar

from iiif_shim.base.errors import BackendError, NotFound
from iiif_shim.imaging.fetched import Fetched
from iiif_shim.model.facts import NativeFacts, SourceInfo
from iiif_shim.model.plan import Capabilities, NativeOp, Target
from iiif_shim.telemetry.metrics import Metrics
from iiif_shim.upstream.client import Answer, Body, Upstream
from iiif_shim.upstream.settings import UpstreamSettings
from iiif_shim.upstream.urltemplate import UnsafeValue, UrlTemplate

log = logging.getLogger("iiif_shim")

RunBlocking = Callable[..., Awaitable[Any]]


@dataclass(frozen=True)
class Finding:
    """A problem (``error``: the config is refused) or a warning, about one key of a backend."""

    key: str  # under the backend's section, e.g. "url"
    message: str
    error: bool = False


T = TypeVar("T")
# what a parser of a hostile answer may raise; each is answered as a 502
PARSE_ERRORS = (ValueError, KeyError, IndexError, TypeError, AttributeError, ArithmeticError)


@dataclass(frozen=True)
class BackendContext:
    """What the service lends every backend: its thread pool and its metrics."""

    run_blocking: RunBlocking
    metrics: Metrics | None = None


class Backend(ABC):
    """Base class of backends; one instance per entry under ``backends:`` in the config."""

    type_name: ClassVar[str]
    settings_class: ClassVar[type[Any]]
    native_note: ClassVar[str] = ""  # says what is native when ``capabilities`` varies by source

    def __init__(self, name: str, settings: Any, context: BackendContext) -> None:
        self.name = name
        self.settings = settings
        self.run_blocking = context.run_blocking
        self.metrics = context.metrics
        self.record = context.metrics.pillow_step if context.metrics else None

    @classmethod
    def capabilities(cls, settings: Any, native: NativeFacts | None = None) -> Capabilities:
        """What a backend with these settings does natively for a source whose native facts are
        ``native`` (``None``: what the settings alone promise, for summaries). By default only
        the whole source image."""
        return Capabilities()

    @classmethod
    def placeholders(cls, settings: Any) -> frozenset[str]:
        """Template placeholders a route must supply (checked against each route)."""
        return frozenset()

    @classmethod
    def reserved(cls, settings: Any) -> frozenset[str]:
        """Placeholder names the backend fills itself (a route's named group may not use them)."""
        return frozenset()

    @classmethod
    def route_findings(
        cls, settings: Any, slashed: frozenset[str], admitted: bool
    ) -> list[Finding]:
        """What ``check-config`` says of a route that feeds this backend: ``slashed`` are the
        placeholders whose value may hold a ``/`` from the identifier, ``admitted`` whether the
        route names the identifiers it takes (a match anchored at the start)."""
        return []

    async def start(self) -> None:  # noqa: B027 - optional hook
        """Open connections; called once when the service starts."""

    async def close(self) -> None:  # noqa: B027 - optional hook
        """Release connections; called once when the service stops."""

    @abstractmethod
    async def facts(self, target: Target) -> SourceInfo:
        """Width, height and the rest, for ``target``; raise NotFound when it does not exist."""

    @abstractmethod
    async def fetch(self, target: Target, op: NativeOp, info: SourceInfo) -> Fetched:
        """Deliver ``op`` for ``target``."""

    def stream(
        self, target: Target, op: NativeOp, info: SourceInfo
    ) -> AbstractAsyncContextManager[Body] | None:
        """``op``'s answer as it arrives, for a request the shim passes through untouched;
        ``None`` when this backend only delivers through :meth:`fetch` (the default)."""
        return None

    def traffic(self) -> dict[str, int]:
        """Requests made and bytes received so far (network backends)."""
        return {}

    async def identifiers(self, limit: int) -> list[str]:
        """Some native identifiers this backend can serve (for the landing page), if it can list."""
        return []


class UpstreamBackend(Backend):
    """A backend that talks HTTP to one legacy server, with URLs made from its templates."""

    settings: UpstreamSettings
    upstream: Upstream
    urls: Mapping[str, UrlTemplate]

    @classmethod
    @abstractmethod
    def templates(cls, settings: Any) -> dict[str, UrlTemplate]:
        """The backend's URL templates by their key in its settings (``url``, ``image.url``),
        parsed from its (already checked) settings."""

    @classmethod
    def placeholders(cls, settings: Any) -> frozenset[str]:
        names = frozenset().union(*(t.placeholders for t in cls.templates(settings).values()))
        return names - cls.reserved(settings)

    @classmethod
    def route_findings(
        cls, settings: Any, slashed: frozenset[str], admitted: bool
    ) -> list[Finding]:
        found = []
        for key, template in cls.templates(settings).items():
            # a template for part of a URL (a loader path, a FIF) is a path all through
            paths = template.placeholders if template.origin is None else template.path_placeholders
            for name in sorted(paths & slashed):
                where = (
                    f"any file below {template.fixed_path!r} (never above it)"
                    if template.fixed_path
                    else "any file the server serves"
                )
                found.append(
                    Finding(
                        key,
                        f"{{{name}}} may hold '/' from identifiers: on a server that decodes %2F "
                        f"it then reaches {where}; restrict the route's match (e.g. [^/]+) if "
                        "that is not intended",
                    )
                )
        return found

    async def start(self) -> None:
        self.urls = self.templates(self.settings)
        scopes = [t for t in self.urls.values() if t.origin is not None]
        self.upstream = Upstream(self.name, self.settings, scopes, self.metrics)
        await self.upstream.start()

    async def close(self) -> None:
        await self.upstream.close()

    def url(self, name: str, values: Mapping[str, str]) -> str:
        """Template ``name`` expanded with ``values``, each encoded for its place and checked
        not to leave it (``urltemplate.py``); an unsafe value is answered as an unknown image."""
        try:
            return self.urls[name].expand(values)
        except UnsafeValue as exc:
            log.info("backend %r: refused an identifier (%s)", self.name, exc)
            raise NotFound("no such image") from None

    async def metadata(
        self,
        url: str,
        parse: Callable[[Answer], T],
        *,
        what: str,
        target: Target,
        headers: Mapping[str, str] | None = None,
    ) -> tuple[T, Answer]:
        """Fetch a metadata answer (small, retried on transient faults) and parse it in the
        thread pool; whatever the parser trips on is a 502 naming the backend."""
        answer = await self.upstream.get(
            url, metadata=True, source=target.native_id, what=what, headers=headers
        )
        try:
            parsed: T = await self.run_blocking(parse, answer)
        except PARSE_ERRORS as exc:
            raise BackendError(
                f"backend '{self.name}' sent {what} it cannot read",
                kind="bad_metadata",
                detail=f"{type(exc).__name__}: {exc}",
            ) from None
        return parsed, answer

    def root(self) -> str:
        """The server's root URL (for health checks without a ``probe_id``)."""
        origin = next(t.origin for t in self.urls.values() if t.origin is not None)
        return origin + "/"

    def traffic(self) -> dict[str, int]:
        return {"requests": self.upstream.requests, "bytes": self.upstream.bytes_received}
