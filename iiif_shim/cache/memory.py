"""The memory tier and the in-memory primitives every cache of a process is made of.

- :class:`SingleFlight`: identical concurrent misses share one call; a failure reaches every
  waiter and is never remembered.
- :class:`TtlCache`: TTL + LRU by entry count, single-flight on misses (object records of the
  Presentation API; source facts in the memory tier).
- :class:`SizedCache`: LRU bounded in bytes, single-flight (rendered images in the memory tier).
- :class:`SourceCache`: a :class:`SizedCache` whose keys belong to a source, so a purge can drop
  what was made from one: decoded sources (a deep-zoom session neither re-reads nor re-decodes
  the master for each tile) and the tiles pyramid backends fetched. Made by the facade
  (``facade.Caches.memory_cache``), which registers it for purges.
- :class:`MemoryTier`: the top tier of the facade, per process: rendered images and source facts
  as they are.
"""

from __future__ import annotations

import asyncio
from collections.abc import Awaitable, Callable, Hashable
from typing import Generic, TypeVar

from cachetools import LRUCache, TTLCache

from iiif_shim.cache.entry import Entry, Slot
from iiif_shim.cache.settings import CacheSettings
from iiif_shim.model.facts import SourceInfo
from iiif_shim.model.plan import Rendered

K = TypeVar("K", bound=Hashable)
V = TypeVar("V")
Observe = Callable[[str, bool], None]  # (tier, hit), for metrics
_ABSENT = object()


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


class TtlCache(Generic[K, V]):
    """TTL + LRU by entry count, single-flight on misses (``tier`` names it for metrics)."""

    def __init__(self, entries: int, ttl: float, tier: str, observe: Observe | None = None) -> None:
        self._cache: TTLCache[K, V] | None = (
            TTLCache(maxsize=entries, ttl=ttl) if entries > 0 and ttl > 0 else None
        )
        self._flight: SingleFlight[K, V] = SingleFlight()
        self._tier = tier
        self._observe = observe

    async def get(self, key: K, load: Callable[[], Awaitable[V]]) -> V:
        """The cached value (None included: an answer like any other), else ``load()``'s."""
        cache = self._cache
        hit = cache.get(key, _ABSENT) if cache is not None else _ABSENT
        if self._observe is not None:
            self._observe(self._tier, hit is not _ABSENT)
        if hit is not _ABSENT:
            return hit  # type: ignore[return-value]

        async def load_and_keep() -> V:
            # Stored inside the shared call, so a request arriving just after it finishes
            # finds the value instead of starting a second upstream call.
            value = await load()
            if cache is not None:
                cache[key] = value
            return value

        return await self._flight.do(key, load_and_keep)

    def lookup(self, key: K) -> V | None:
        """The cached value, else None (not counted as a lookup)."""
        return self._cache.get(key) if self._cache is not None else None

    def put(self, key: K, value: V) -> None:
        if self._cache is not None:
            self._cache[key] = value

    def drop(self, which: Callable[[K], bool]) -> int:
        """Forget the entries whose key ``which`` picks; how many there were."""
        return _drop(self._cache, which)

    def forget(self, key: K) -> None:
        """Forget one entry."""
        if self._cache is not None:
            self._cache.pop(key, None)

    def clear(self) -> None:
        if self._cache is not None:
            self._cache.clear()


def _drop(cache: LRUCache[K, V] | TTLCache[K, V] | None, which: Callable[[K], bool]) -> int:
    if cache is None:
        return 0
    doomed = [key for key in list(cache.keys()) if which(key)]
    for key in doomed:
        cache.pop(key, None)
    return len(doomed)


class SizedCache(Generic[K, V]):
    """LRU bounded by the total size of its values, with single-flight on misses.

    Used for rendered images (bytes) and decoded sources (pixels). A value larger than half
    of the budget is returned but not kept, so one huge image cannot flush everything else.
    ``key=None`` means "do not cache" (e.g. a source with no version to tell changes).
    """

    def __init__(
        self,
        max_bytes: int,
        sizeof: Callable[[V], int],
        tier: str = "",
        observe: Observe | None = None,
    ) -> None:
        self._max = max_bytes
        self._sizeof = sizeof
        self._cache: LRUCache[K, V] | None = (
            LRUCache(maxsize=max_bytes, getsizeof=sizeof) if max_bytes > 0 else None
        )
        self._flight: SingleFlight[K, V] = SingleFlight()
        self._tier = tier
        self._observe = observe

    def holds(self, key: K | None) -> bool:
        """Whether ``key`` is cached now (not counted as a lookup, LRU order untouched)."""
        return key is not None and self._cache is not None and key in self._cache

    def lookup(self, key: K) -> V | None:
        """The cached value (counted as a lookup, LRU order updated), else None."""
        hit = self._cache.get(key) if self._cache is not None else None
        if self._observe is not None:
            self._observe(self._tier, hit is not None)
        return hit

    def put(self, key: K, value: V) -> None:
        if self._cache is not None and self._sizeof(value) <= self._max // 2:
            self._cache[key] = value

    async def get(self, key: K | None, make: Callable[[], Awaitable[V]]) -> V:
        if key is None:
            return await make()
        hit = self.lookup(key)
        if hit is not None:
            return hit

        async def make_and_keep() -> V:
            value = await make()
            self.put(key, value)
            return value

        return await self._flight.do(key, make_and_keep)

    def drop(self, which: Callable[[K], bool]) -> int:
        """Forget the entries whose key ``which`` picks; how many there were."""
        return _drop(self._cache, which)

    def forget(self, key: K) -> None:
        """Forget one entry."""
        if self._cache is not None:
            self._cache.pop(key, None)

    def clear(self) -> None:
        if self._cache is not None:
            self._cache.clear()


class SourceCache(Generic[K, V]):
    """Values made from one source, by ``(source, key)`` (``source``: its ``source_key``), in
    an LRU bounded in bytes with single-flight, that a purge can empty of one source."""

    def __init__(self, cache: SizedCache[tuple[str, K], V]) -> None:
        self._cache = cache

    def holds(self, source: str, key: K | None) -> bool:
        return key is not None and self._cache.holds((source, key))

    async def get(self, source: str, key: K | None, make: Callable[[], Awaitable[V]]) -> V:
        """The value of ``key`` (``None``: never cached) from ``source``, else ``make()``'s."""
        return await self._cache.get(None if key is None else (source, key), make)

    def drop(self, source: str | None) -> int:
        """Forget what was made from ``source`` (``None``: everything)."""
        if source is None:
            self._cache.clear()
            return 0
        return self._cache.drop(lambda k: k[0] == source)


class MemoryTier:
    """Rendered images (``cache.image_bytes``) and source facts (``cache.info_entries`` for
    ``cache.info_ttl``) of this process, as they are."""

    name = "memory"

    def __init__(self, settings: CacheSettings) -> None:
        self.images: SizedCache[Slot, Rendered] = SizedCache(
            settings.image_bytes, lambda r: len(r.body)
        )
        self.facts: TtlCache[Slot, SourceInfo] = TtlCache(
            settings.info_entries, settings.info_ttl, "facts"
        )

    async def get(self, slot: Slot) -> Entry | None:
        return self.peek(slot)

    def peek(self, slot: Slot) -> Entry | None:
        """:meth:`get`, without a turn of the event loop (the facade's hit path)."""
        return self.facts.lookup(slot) if slot.facts else self.images.lookup(slot)

    async def put(self, slot: Slot, value: Entry, ttl: float) -> None:
        if isinstance(value, SourceInfo):
            self.facts.put(slot, value)  # (the memory TTL is cache.info_ttl)
        else:
            self.images.put(slot, value)

    async def delete(self, slot: Slot) -> None:
        if slot.facts:
            self.facts.forget(slot)
        else:
            self.images.forget(slot)

    async def purge(self, source: str | None) -> int:
        return self.drop(source)

    def drop(self, source: str | None) -> int:
        if source is None:
            self.images.clear()
            self.facts.clear()
            return 0
        return self.images.drop(lambda s: s.source == source) + self.facts.drop(
            lambda s: s.source == source
        )
