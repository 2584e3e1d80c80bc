"""In-memory caches and single-flight.

- :class:`SingleFlight`: identical concurrent misses share one call; a failure reaches every
  waiter and is never remembered.
- :class:`FactsCache`: source facts (width, height, ...) per backend and native identifier,
  TTL + LRU, single-flight on misses.
- :class:`ResultCache`: rendered images by plan key, LRU bounded in bytes, single-flight.
"""

from __future__ import annotations

import asyncio
from collections.abc import Awaitable, Callable, Hashable
from typing import Generic, TypeVar

from cachetools import LRUCache, TTLCache

from .model import Rendered, SourceInfo

K = TypeVar("K", bound=Hashable)
V = TypeVar("V")


class SingleFlight(Generic[K, V]):
    def __init__(self) -> None:
        self._calls: dict[K, asyncio.Future[V]] = {}

    @property
    def in_flight(self) -> int:
        return len(self._calls)

    async def do(self, key: K, call: Callable[[], Awaitable[V]]) -> V:
        future = self._calls.get(key)
        if future is None:
            future = asyncio.ensure_future(call())
            self._calls[key] = future
            future.add_done_callback(lambda f: self._done(key, f))
        # shield: one waiter giving up (client gone) must not cancel the shared call
        return await asyncio.shield(future)

    def _done(self, key: K, future: asyncio.Future[V]) -> None:
        if self._calls.get(key) is future:
            del self._calls[key]
        if not future.cancelled():
            future.exception()  # mark retrieved; waiters get it through their own await


class FactsCache:
    def __init__(self, entries: int, ttl: float) -> None:
        self._cache: TTLCache[tuple[str, str], SourceInfo] | None = (
            TTLCache(maxsize=entries, ttl=ttl) if entries > 0 and ttl > 0 else None
        )
        self._flight: SingleFlight[tuple[str, str], SourceInfo] = SingleFlight()

    async def get(
        self, key: tuple[str, str], load: Callable[[], Awaitable[SourceInfo]]
    ) -> SourceInfo:
        if self._cache is not None and (hit := self._cache.get(key)) is not None:
            return hit
        info = await self._flight.do(key, load)
        if self._cache is not None:
            self._cache[key] = info
        return info


class ResultCache:
    def __init__(self, max_bytes: int) -> None:
        self._max = max_bytes
        self._cache: LRUCache[str, Rendered] | None = (
            LRUCache(maxsize=max_bytes, getsizeof=lambda r: len(r.body)) if max_bytes else None
        )
        self._flight: SingleFlight[str, Rendered] = SingleFlight()

    async def get(self, key: str, render: Callable[[], Awaitable[Rendered]]) -> Rendered:
        if self._cache is not None and (hit := self._cache.get(key)) is not None:
            return hit
        rendered = await self._flight.do(key, render)
        if self._cache is not None and len(rendered.body) <= self._max // 4:
            self._cache[key] = rendered
        return rendered
