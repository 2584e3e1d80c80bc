"""The contract every backend keeps, and the helpers they share.

A backend is narrow: it reports facts about a source (:meth:`Backend.facts`), delivers what the
planner asks of it (:meth:`Backend.fetch`), declares its :class:`Capabilities`, and turns its own
low-level failures into the shim's errors at its boundary. It never decides what to do natively:
``planner.py`` does, from the capabilities.
"""

from __future__ import annotations

import asyncio
from abc import ABC, abstractmethod
from collections.abc import AsyncIterator, Awaitable, Callable
from contextlib import asynccontextmanager
from typing import Any, ClassVar, TypeVar

import aiohttp

from ..errors import BackendError, BackendTimeout, ShimError
from ..model import Capabilities, Fetched, NativeOp, SourceInfo, Target

T = TypeVar("T")
RunBlocking = Callable[..., Awaitable[Any]]


class Backend(ABC):
    """Base class of backends; one instance per entry under ``backends:`` in the config."""

    type_name: ClassVar[str]
    settings_class: ClassVar[type[Any]]
    capabilities: ClassVar[Capabilities] = Capabilities()
    native_note: ClassVar[str] = ""  # qualifies ``capabilities`` in summaries, if they vary

    def __init__(self, name: str, settings: Any, run_blocking: RunBlocking) -> None:
        self.name = name
        self.settings = settings
        self.run_blocking = run_blocking

    @classmethod
    def placeholders(cls, settings: Any) -> frozenset[str]:
        """Template placeholders this backend's settings use (checked against each route)."""
        return frozenset()

    async def start(self) -> None:  # noqa: B027 - optional hook
        """Open connections; called once when the app starts."""

    async def close(self) -> None:  # noqa: B027 - optional hook
        """Release connections; called once when the app stops."""

    @classmethod
    def reserved(cls, settings: Any) -> frozenset[str]:
        """Placeholder names the backend fills itself (a route's named group may not use them)."""
        return frozenset()

    @classmethod
    def configured_capabilities(cls, settings: Any) -> Capabilities:
        """What a backend with these settings does natively (for summaries and planning)."""
        return cls.capabilities

    def capabilities_for(self, info: SourceInfo) -> Capabilities:
        """What this backend does natively for one source (by default, the same for all)."""
        return self.configured_capabilities(self.settings)

    @abstractmethod
    async def facts(self, target: Target) -> SourceInfo:
        """Width, height and the rest, for ``target``; raise NotFound when it does not exist."""

    @abstractmethod
    async def fetch(self, target: Target, op: NativeOp, info: SourceInfo) -> Fetched:
        """Deliver ``op`` for ``target``."""

    def traffic(self) -> dict[str, int]:
        """Requests made and bytes received so far (network backends)."""
        upstream = getattr(self, "upstream", None)
        if upstream is None:
            return {}
        return {"requests": upstream.requests, "bytes": upstream.bytes_received}

    async def identifiers(self, limit: int) -> list[str]:
        """Some native identifiers this backend can serve (for the landing page), if it can list."""
        return []


@asynccontextmanager
async def upstream_errors(backend: str, timeout: float) -> AsyncIterator[None]:
    """Translate aiohttp and timeout failures into 502/504 naming the backend, never its URL."""
    try:
        async with asyncio.timeout(timeout):
            yield
    except ShimError:
        raise
    except TimeoutError:
        raise BackendTimeout(f"backend '{backend}' did not answer within {timeout:g}s") from None
    except aiohttp.ClientConnectorError as exc:
        reason = exc.os_error.strerror if exc.os_error else "connection failed"
        raise BackendError(f"backend '{backend}' is unreachable ({reason})") from None
    except aiohttp.ClientPayloadError:
        raise BackendError(f"backend '{backend}' sent a broken response body") from None
    except aiohttp.ClientError as exc:
        raise BackendError(f"backend '{backend}' failed ({type(exc).__name__})") from None
