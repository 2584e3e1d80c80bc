"""The cache facade: one object a service asks for rendered images and source facts, over
interchangeable tiers, and the one place a purge goes through.

A value is looked for in memory (per process: ``memory.py``), then on disk (``cache.disk``, per
machine: ``disk.py``), then in Redis (``cache.redis``, every process and machine:
``redis.py``); a hit in a lower tier fills the tiers above it, a value made fills them all.
Identical concurrent misses share one call per process (single-flight); across processes the
first to miss takes the slot's lock in Redis and the others wait for its value to appear there
(``tier.made_once``, for images and facts alike). Facts are kept for ``cache.info_ttl`` in
every tier, images as long as each tier keeps anything.

Caches that hold what came from a source in other shapes (decoded masters, the tiles pyramid
backends fetch, object records) are made or registered here (:meth:`Caches.memory_cache`,
:meth:`Caches.register`), so a purge reaches them too.

Purges (:meth:`Caches.purge`) remove one source's facts and images (or everything) from every
tier and every registered cache, and reach every running process: through Redis pub/sub when
Redis is configured, and through purge journals (``journal.py``) that each process polls. A
value that was being made when a purge came is kept out of every tier. After a Redis outage a
process drops its memory entries (a purge may have been missed meanwhile).
:func:`purge_everywhere` is what ``iiif-shim purge`` runs.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
from collections.abc import Awaitable, Callable, Hashable
from typing import Any, TypeVar

from iiif_shim.base.errors import ShimError
from iiif_shim.cache.disk import DiskTier
from iiif_shim.cache.entry import FACTS, Entry, Slot, source_key, valid_source
from iiif_shim.cache.journal import ALL, JOURNAL_POLL, PurgeJournal, journal_paths
from iiif_shim.cache.memory import MemoryTier, SingleFlight, SizedCache, SourceCache
from iiif_shim.cache.redis import RedisTier, RedisUnavailable
from iiif_shim.cache.settings import CacheSettings
from iiif_shim.cache.tier import Tier, made_once
from iiif_shim.model.facts import SourceInfo, checked
from iiif_shim.model.plan import Rendered, SourceRef
from iiif_shim.telemetry.metrics import Metrics

log = logging.getLogger("iiif_shim")

K = TypeVar("K", bound=Hashable)
V = TypeVar("V")
E = TypeVar("E", bound=Rendered | SourceInfo)

# sources whose purges are told apart; past it a purge counts as one of everything
_MAX_PURGED = 10_000
# each tier's name in the cache lookup metrics, for images and for facts
_LABELS = {
    "memory": ("image", "facts"),
    "disk": ("disk", "facts_disk"),
    "redis": ("redis", "facts_redis"),
}


class Caches:
    """Every cache of one configuration in one process, behind one facade."""

    def __init__(
        self,
        settings: CacheSettings,
        metrics: Metrics | None = None,
        *,
        journal_poll: float = JOURNAL_POLL,
    ) -> None:
        self.settings = settings
        self.metrics = metrics
        self.memory = MemoryTier(settings)
        self.disk = DiskTier(settings.disk, settings.disk_bytes) if settings.disk else None
        self.redis = RedisTier(settings, metrics) if settings.redis else None
        self.journals = [PurgeJournal(path) for path in journal_paths(settings)]
        self.journal_poll = journal_poll
        self._droppers: list[Callable[[str | None], object]] = [self.memory.drop]
        self._flight: SingleFlight[Slot, Any] = SingleFlight()
        # bumped by the purges this process hears of: of all (first), of one source (second)
        self._purged_all = 0
        self._purged: dict[str, int] = {}
        self._tasks: list[asyncio.Task[None]] = []

    @property
    def lower(self) -> list[Tier]:
        """The tiers below memory, top down."""
        return [tier for tier in (self.disk, self.redis) if tier is not None]

    # --- lifecycle -------------------------------------------------------------------------

    async def start(self, listen: bool = True) -> None:
        """Open the tiers; with ``listen``, follow purges made elsewhere."""
        if self.disk is not None:
            await self.disk.open()
        if self.redis is not None:
            await self.redis.start()
        for journal in self.journals:
            await asyncio.to_thread(journal.start)
        if listen:
            loop = asyncio.get_running_loop()
            if self.disk is not None:
                # a large folder takes a while to scan: serve meanwhile (eviction rescans
                # under the folder's lock anyway after a sixteenth of the budget is written)
                self._tasks.append(loop.create_task(self.disk.learn_size()))
            if self.journals:
                self._tasks.append(loop.create_task(self._poll_journals()))
            if self.redis is not None:
                self._tasks.append(loop.create_task(self._listen()))

    async def close(self) -> None:
        for task in self._tasks:
            task.cancel()
        for task in self._tasks:
            with contextlib.suppress(asyncio.CancelledError):
                await task
        self._tasks.clear()
        if self.redis is not None:
            await self.redis.close()

    # --- what the service asks for ---------------------------------------------------------

    async def image(
        self, ref: SourceRef, key: str, make: Callable[[], Awaitable[Rendered]]
    ) -> Rendered:
        """The image of plan ``key`` from the first tier that has it, else ``make()``'s."""
        slot = Slot(source_key(ref.backend, ref.native_id), key)
        return await self._through(slot, Rendered, make, 0.0)

    async def facts(
        self, backend: str, native_id: str, load: Callable[[], Awaitable[SourceInfo]]
    ) -> SourceInfo:
        """The source's facts from the first tier that has them (checked again like the
        backend's own), else ``load()``'s."""
        ttl = self.settings.info_ttl
        if ttl <= 0:  # facts are not kept
            return await load()
        slot = Slot(source_key(backend, native_id), FACTS)

        def usable(found: Entry) -> bool:
            if not isinstance(found, SourceInfo):
                return False
            try:
                checked(found, backend)
            except ShimError:  # facts another writer left that no backend would report
                return False
            return True

        return await self._through(slot, SourceInfo, load, ttl, usable)

    def memory_cache(
        self, tier: str, max_bytes: int, sizeof: Callable[[V], int]
    ) -> SourceCache[Any, V]:
        """A memory cache of what was made from sources (``tier`` names it in the metrics),
        registered so every purge reaches it."""
        cache: SourceCache[Any, V] = SourceCache(SizedCache(max_bytes, sizeof, tier, self._observe))
        self.register(cache.drop)
        return cache

    def register(self, drop: Callable[[str | None], object]) -> None:
        """Have every purge call ``drop(source)`` (``None``: everything) in this process."""
        self._droppers.append(drop)

    async def _through(
        self,
        slot: Slot,
        kind: type[E],
        make: Callable[[], Awaitable[E]],
        ttl: float,
        usable: Callable[[Entry], bool] = lambda found: True,
    ) -> E:
        found = await self.memory.get(slot)
        self._observe(self._label("memory", slot), found is not None)
        if isinstance(found, kind):
            return found
        return await self._flight.do(slot, lambda: self._miss(slot, kind, make, ttl, usable))  # type: ignore[no-any-return]

    async def _miss(
        self,
        slot: Slot,
        kind: type[E],
        make: Callable[[], Awaitable[E]],
        ttl: float,
        usable: Callable[[Entry], bool],
    ) -> E:
        generation = self._generation(slot.source)
        lower = self.lower
        for depth, tier in enumerate(lower):
            found = await tier.get(slot)
            hit = isinstance(found, kind) and usable(found)
            self._observe(self._label(tier.name, slot), hit)
            if hit:
                assert isinstance(found, kind)
                await self._keep(slot, found, ttl, generation, [self.memory, *lower[:depth]])
                return found
        redis = self.redis if self.redis is not None and self.redis.up else None
        if redis is None:
            value = await make()
            await self._keep(slot, value, ttl, generation, [self.memory, *lower])
            return value

        async def in_redis(made: Entry) -> None:  # before the lock goes, for those waiting
            await self._keep(slot, made, ttl, generation, [redis])

        made, stored = await made_once(redis, slot, make, self.settings.redis_lock, in_redis)
        if not isinstance(made, kind) or (stored and not usable(made)):
            # what another process stored is not what this slot holds: make it here
            made, stored = await make(), False
        above = [self.memory, *(t for t in lower if t is not redis)]
        await self._keep(slot, made, ttl, generation, above if stored else [*above, redis])
        return made

    async def _keep(
        self, slot: Slot, value: Entry, ttl: float, generation: tuple[int, int], tiers: list[Tier]
    ) -> None:
        """Put ``value`` in ``tiers``, unless a purge of its source came meanwhile."""
        if generation != self._generation(slot.source):
            return
        for tier in tiers:
            await tier.put(slot, value, ttl)

    def _label(self, tier: str, slot: Slot) -> str:
        images, facts = _LABELS[tier]
        return facts if slot.facts else images

    def _observe(self, tier: str, hit: bool) -> None:
        if self.metrics is not None:
            self.metrics.cache_lookup(tier, hit)

    # --- purge -----------------------------------------------------------------------------

    def _generation(self, source: str) -> tuple[int, int]:
        """Changes when this process hears of a purge of ``source`` or of everything."""
        return self._purged_all, self._purged.get(source, 0)

    def forget(self, source: str | None) -> None:
        """Drop what this process keeps in memory of one source (``None``: all), in every
        registered cache; values of it being made are then kept out of every tier."""
        if source is None or len(self._purged) >= _MAX_PURGED:
            self._purged_all += 1
            self._purged.clear()
        if source is not None:
            self._purged[source] = self._purged.get(source, 0) + 1
        for drop in self._droppers:
            drop(source)

    async def purge(self, source: str | None) -> dict[str, Any]:
        """Remove one source (``None``: every source) from every tier and every cache of this
        process, and tell the other processes. The report says what each tier did; ``ok`` is
        False if one failed."""
        self.forget(source)
        report: dict[str, Any] = {"ok": True}
        if self.disk is not None:
            try:
                report["disk"] = await self.disk.purge(source)
            except OSError as exc:
                report.update(ok=False, disk=f"failed: {exc}")
        if self.redis is not None:
            try:
                report["redis"] = await self.redis.purge(source)
                report["notified"] = await self.redis.publish(source or ALL)
            except RedisUnavailable as exc:
                report.update(ok=False, redis=f"unreachable: {exc}")
        written = []
        for journal in self.journals:
            try:
                await asyncio.to_thread(journal.append, source)
                written.append(str(journal.path))
            except OSError as exc:
                report.update(ok=False, journal=f"failed: {exc}")
        if written and report.get("journal") is None:
            report["journal"] = ", ".join(written)
        return report

    async def _poll_journals(self) -> None:
        while True:
            await asyncio.sleep(self.journal_poll)
            for journal in self.journals:
                for source in await asyncio.to_thread(journal.read):
                    self.forget(source)

    async def _listen(self) -> None:
        """Follow the purge channel; reconnect after failures, dropping memory entries then
        (purges sent meanwhile were missed)."""
        redis = self.redis
        assert redis is not None
        connected_before = False
        while True:
            client = redis.subscriber()
            try:
                pubsub = client.pubsub(ignore_subscribe_messages=True)
                async with asyncio.timeout(redis.settings.redis_timeout * 4):
                    await pubsub.subscribe(redis.channel)
                if connected_before:
                    self.forget(None)
                connected_before = True
                while True:
                    message = await pubsub.get_message(timeout=1.0)
                    if message and message.get("type") == "message":
                        text = message["data"].decode("ascii", "replace")
                        if text == ALL:
                            self.forget(None)
                        elif valid_source(text):
                            self.forget(text)
            except asyncio.CancelledError:
                raise
            except Exception as exc:
                redis.failed("subscribe", exc)
            finally:
                with contextlib.suppress(Exception):
                    await client.aclose()
            await asyncio.sleep(redis.settings.redis_retry)


async def purge_everywhere(settings: CacheSettings, source: str | None) -> dict[str, Any]:
    """What ``iiif-shim purge`` does: every shared tier, and every running process told."""
    caches = Caches(settings)
    await caches.start(listen=False)
    try:
        return await caches.purge(source)
    finally:
        await caches.close()
