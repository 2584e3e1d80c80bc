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

from abc import ABC, abstractmethod
from collections.abc import Awaitable, Callable, Mapping
from typing import Any, ClassVar

from ..facts import NativeFacts, SourceInfo
from ..model import Capabilities, Fetched, NativeOp, Target
from ..urltemplate import UrlTemplate
from .upstream import Upstream, UpstreamSettings

RunBlocking = Callable[..., Awaitable[Any]]


class Backend(ABC):
    """Base class of backends; one instance per entry under ``backends:`` in the config."""

    type_name: ClassVar[str]
    settings_class: ClassVar[type[Any]]
    native_note: ClassVar[str] = ""  # says what is native when ``capabilities`` varies by source

    def __init__(self, name: str, settings: Any, run_blocking: RunBlocking) -> None:
        self.name = name
        self.settings = settings
        self.run_blocking = run_blocking

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
        """The backend's URL templates by name, parsed from its (already checked) settings."""

    @classmethod
    def placeholders(cls, settings: Any) -> frozenset[str]:
        names = frozenset().union(*(t.placeholders for t in cls.templates(settings).values()))
        return names - cls.reserved(settings)

    async def start(self) -> None:
        self.urls = self.templates(self.settings)
        self.upstream = Upstream(self.name, self.settings)
        await self.upstream.start()

    async def close(self) -> None:
        await self.upstream.close()

    def url(self, name: str, values: Mapping[str, str]) -> str:
        """Template ``name`` expanded with ``values`` (each encoded for its place)."""
        return self.urls[name].expand(values)

    def described(self, what: str = "") -> str:
        return f"backend '{self.name}'" + (f" ({what})" if what else "")

    def traffic(self) -> dict[str, int]:
        return {"requests": self.upstream.requests, "bytes": self.upstream.bytes_received}
