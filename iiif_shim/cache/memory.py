"""In-memory caches and single-flight.

- :class:`SingleFlight`: identical concurrent misses share one call; a failure reaches every
  waiter and is never remembered.
- :class:`TtlCache`: TTL + LRU, single-flight on misses: source facts (width, height, ...) per
  backend and native identifier (``FactsCache``), and object records of the Presentation API.
- :class:`SizedCache`: LRU bounded in bytes, single-flight: rendered images by (source, plan
  key), and decoded sources by (backend, identifier, version, reduction) so the tiles of a
  deep-zoom session do not each decode (or download) the master again.
- :class:`Caches`: the three a service uses, made once per configuration and handed to it, with
  the tiers below memory (disk, Redis: ``tiers.py``) when configured.
- :func:`source_key`: the hash that names one source (backend + native identifier) in every
  tier, so a purge finds all that was made from it.

Every cache can drop what belongs to one source (:meth:`TtlCache.drop`, :meth:`SizedCache.drop`).
"""

from __future__ import annotations

import asyncio
import hashlib
from collections.abc import Awaitable, Callable, Hashable
from dataclasses import dataclass
from typing import TYPE_CHECKING, Generic, TypeVar

from cachetools import LRUCache, TTLCache

from iiif_shim.imaging.pillow import Decoded
from iiif_shim.model.facts import SourceInfo
from iiif_shim.model.plan import Rendered

if TYPE_CHECKING:
    from iiif_shim.cache.tiers import Tiers

K = TypeVar("K", bound=Hashable)
V = TypeVar("V")
Observe = Callable[[str, bool], None]  # (tier, hit), for metrics
_ABSENT = object()


def source_key(backend: str, native_id: str) -> str:
    """The name of one source in every cache tier: 32 hex digits of a hash of the backend and
    its native identifier (so it fits any file name and says nothing about the identifier)."""
    return hashlib.sha256(f"{backend}\0{native_id}".encode()).hexdigest()[:32]


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

    def drop(self, which: Callable[[K], bool]) -> int:
        """Forget the entries whose key ``which`` picks; how many there were."""
        return _drop(self._cache, which)

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


FactsCache = TtlCache[tuple[str, str], SourceInfo]


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

    def clear(self) -> None:
        if self._cache is not None:
            self._cache.clear()


DecodedKey = tuple[str, str, str, int]  # backend, native id, source version, reduction


ResultKey = tuple[str, str]  # source_key(backend, native id), the plan's key


@dataclass(frozen=True)
class Caches:
    facts: FactsCache
    results: SizedCache[ResultKey, Rendered]
    decoded: SizedCache[DecodedKey, Decoded]
    tiers: Tiers | None = None  # disk and Redis below memory, set by ``tiers.open_tiers``

    def drop(self, source: str | None) -> int:
        """Forget everything this process keeps in memory about one source (``None``: all)."""
        if source is None:
            for cache in (self.facts, self.results, self.decoded):
                cache.clear()
            return 0
        return (
            self.facts.drop(lambda k: source_key(*k) == source)
            + self.results.drop(lambda k: k[0] == source)
            + self.decoded.drop(lambda k: source_key(k[0], k[1]) == source)
        )

    @classmethod
    def sized(
        cls,
        info_entries: int,
        info_ttl: float,
        image_bytes: int,
        decoded_bytes: int,
        observe: Observe | None = None,
    ) -> Caches:
        return cls(
            FactsCache(info_entries, info_ttl, "facts", observe),
            SizedCache(image_bytes, lambda r: len(r.body), "image", observe),
            SizedCache(decoded_bytes, lambda d: d.nbytes, "decoded", observe),
        )
