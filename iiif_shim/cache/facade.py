"""The cache facade: one object a service asks for rendered images and source facts, over
interchangeable tiers, and the one place a purge goes through.

A value is looked for in memory (per process: ``memory.py``), then on disk (``cache.disk``, per
machine: ``disk.py``), then in Redis (``cache.redis``, every process and machine:
``redis.py``); a hit in a lower tier fills the tiers above it, a value made fills them all.
Identical concurrent misses share one call per process (single-flight); across processes the
first to miss takes the slot's lock in Redis and the others wait for its value to appear there
(``tier.made_once``, for images and facts alike). Facts are kept for ``cache.info_ttl`` in
every tier, images as long as each tier keeps anything.

Nothing found on disk or in Redis is used unchecked (memory holds only what was checked or
made in this process: a hit there passes the caller's ``accept`` alone). What a tier rejects
(an entry damaged, of another slot, no regular file: ``entry.REASONS``), facts that fail the
backend's check (``Backend.checked``: sane, and of a native type it reports), and a value its
caller refuses (``accept``: say, a PDF page that is no JPEG) are each a miss: counted in
``iiif_shim_cache_rejected_total{tier,reason}``, logged (at most once a minute per tier and
reason), never copied to another tier, and removed from the tier that held it (``tier.py``
says by whom); each tier below is looked at in turn, and a value made overwrites them all.

Facts are handed out with where they came from (:meth:`Caches.facts`: from a tier, or from
``load()`` for this very call). When an image made from facts found in a tier contradicts them,
the service asks :meth:`Caches.facts_again`: the backend is asked once more (one call per
process and source however many renders meet the contradiction at once), and only when it says
something else are the tiers' facts replaced (counted with ``tier="pipeline"`` when their size
was wrong). Facts the backend was asked about (whatever it answered, or if it failed), and
those an image contradicted when they came from the backend itself (a metadata answer a pixel
off its master), are remembered as settled (:meth:`Caches.settled`, for ``cache.info_ttl`` or
until a purge of the source): they are not asked again.

Caches that hold what came from a source in other shapes (decoded masters, the tiles pyramid
backends fetch, object records) are made or registered here (:meth:`Caches.memory_cache`,
:meth:`Caches.register`), so a purge reaches them too.

Purges (:meth:`Caches.purge`) remove one source's facts and images (or everything, and the
kept documents of ``documents.py`` with it) from every tier and every registered cache, and
reach every running process: through Redis pub/sub when
Redis is configured, and through purge journals (``journal.py``) that each process polls. A
value that was being made when a purge came is kept out of every tier. After a Redis outage a
process drops its memory entries (a purge may have been missed meanwhile).
:func:`purge_everywhere` is what ``iiif-shim purge`` runs.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import time
from collections.abc import Awaitable, Callable, Hashable
from typing import Any, TypeVar, cast

from cachetools import TTLCache

from iiif_shim.base.errors import ShimError
from iiif_shim.cache.disk import DiskTier
from iiif_shim.cache.documents import DocumentFolder
from iiif_shim.cache.entry import (
    CONTRADICTED,
    DAMAGED,
    FACTS,
    REASONS,
    UNUSABLE,
    Entry,
    Rejected,
    Slot,
    source_key,
    valid_source,
)
from iiif_shim.cache.journal import ALL, JOURNAL_POLL, PurgeJournal, journal_paths
from iiif_shim.cache.memory import MemoryTier, SingleFlight, SizedCache, SourceCache
from iiif_shim.cache.redis import RedisTier, RedisUnavailable
from iiif_shim.cache.settings import CacheSettings
from iiif_shim.cache.tier import Stored, Tier, made_once
from iiif_shim.model.facts import SourceInfo
from iiif_shim.model.plan import Rendered, SourceRef
from iiif_shim.telemetry.metrics import Metrics

log = logging.getLogger("iiif_shim")

K = TypeVar("K", bound=Hashable)
V = TypeVar("V")
E = TypeVar("E", bound=Rendered | SourceInfo)

# sources whose purges are told apart; past it a purge counts as one of everything
_MAX_PURGED = 10_000
# seconds between two log lines about rejected entries of one tier and reason
_REJECTED_LOG_EVERY = 60.0
# the tier named for facts found wrong after they were used (they were dropped from every tier)
PIPELINE = "pipeline"
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
        self._hearing = asyncio.Lock()  # one reader of the journals at a time (their offsets)
        self._droppers: list[Callable[[str | None], object]] = [self.memory.drop]
        self._flight: SingleFlight[Slot, Any] = SingleFlight()
        # bumped by the purges this process hears of: of all (first), of one source (second)
        self._purged_all = 0
        self._purged: dict[str, int] = {}
        self._tasks: list[asyncio.Task[None]] = []
        # (tier, reason) -> (when last logged, rejections since)
        self._rejections: dict[tuple[str, str], tuple[float, int]] = {}
        # (source, facts) not questioned again: the backend stood by them, or was asked
        self._settled: TTLCache[tuple[str, SourceInfo], bool] | None = (
            TTLCache(max(settings.info_entries, 1), settings.info_ttl)
            if settings.info_ttl > 0
            else None
        )
        self._again: SingleFlight[tuple[str, SourceInfo], SourceInfo | None] = SingleFlight()
        self._droppers.append(self._drop_settled)

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
        self,
        ref: SourceRef,
        key: str,
        make: Callable[[], Awaitable[Rendered]],
        accept: Callable[[Rendered], bool] | None = None,
    ) -> Rendered:
        """The image of plan ``key`` from the first tier that has it, else ``make()``'s.
        ``accept``: a further check of an image found in a tier (a PDF page must be a JPEG the
        writer reads); one it refuses is removed from that tier and made again."""
        slot = Slot(source_key(ref.backend, ref.native_id), key)

        def usable(found: Entry) -> Rendered | Rejected:
            if not isinstance(found, Rendered):
                return Rejected(DAMAGED)
            if accept is not None and not accept(found):
                return Rejected(CONTRADICTED)
            return found

        image, _ = await self._through(slot, make, 0.0, usable, accept)
        return image

    async def facts(
        self,
        backend: str,
        native_id: str,
        load: Callable[[], Awaitable[SourceInfo]],
        check: Callable[[SourceInfo], SourceInfo],
    ) -> tuple[SourceInfo, bool]:
        """``(facts, cached)``: the source's facts from the first tier that has them and whose
        ``check`` passes (the backend's: ``Backend.checked``), ``cached`` True; else
        ``load()``'s, ``cached`` False."""
        ttl = self.settings.info_ttl
        if ttl <= 0:  # facts are not kept
            return await load(), False
        slot = Slot(source_key(backend, native_id), FACTS)

        def usable(found: Entry) -> SourceInfo | Rejected:
            if not isinstance(found, SourceInfo):
                return Rejected(DAMAGED)
            try:
                return check(found)
            except ShimError:  # facts that this backend would not report, or no backend would
                return Rejected(UNUSABLE)

        return await self._through(slot, load, ttl, usable)

    def settled(self, backend: str, native_id: str, info: SourceInfo) -> bool:
        """Whether ``info`` is no longer questioned by what is made from it: the backend stood
        by them although an image contradicted them, or could not be asked."""
        mark = (source_key(backend, native_id), info)
        return self._settled is not None and mark in self._settled

    def settle(self, backend: str, native_id: str, info: SourceInfo) -> None:
        """Remember ``info`` as :meth:`settled` for as long as facts are kept
        (``cache.info_ttl``), or until a purge of the source."""
        if self._settled is not None:
            self._settled[(source_key(backend, native_id), info)] = True

    async def facts_again(
        self,
        backend: str,
        native_id: str,
        load: Callable[[], Awaitable[SourceInfo]],
        used: SourceInfo,
    ) -> SourceInfo | None:
        """The backend's facts of the source (``load()``), asked again because an image made
        from ``used`` (found in a tier) contradicted them; ``None`` when it stands by ``used``
        or they are :meth:`settled` already. Either way, and when ``load()`` fails (raised),
        ``used`` are settled: asked once. Facts that differ replace ``used`` in every tier once
        they are known; they are counted and logged as contradicted when their size differs
        (the only thing an image tells of its facts). Concurrent calls share one ``load()``."""
        if self.settled(backend, native_id, used):
            return None
        return await self._again.do(
            (source_key(backend, native_id), used),
            lambda: self._ask_again(backend, native_id, load, used),
        )

    async def _ask_again(
        self,
        backend: str,
        native_id: str,
        load: Callable[[], Awaitable[SourceInfo]],
        used: SourceInfo,
    ) -> SourceInfo | None:
        slot = Slot(source_key(backend, native_id), FACTS)
        generation = self.generation(slot.source)
        self.settle(backend, native_id, used)
        fresh = await load()
        self.settle(backend, native_id, fresh)
        if fresh == used:
            return None
        if (fresh.width, fresh.height) != (used.width, used.height):
            self._rejected(PIPELINE, slot, CONTRADICTED)
        tiers = [self.memory, *self.lower]
        await self._keep(slot, fresh, self.settings.info_ttl, generation, tiers)
        return fresh

    def _drop_settled(self, source: str | None) -> None:
        """What a purge does to the facts remembered as settled."""
        if self._settled is None:
            return
        if source is None:
            self._settled.clear()
            return
        for mark in [m for m in list(self._settled.keys()) if m[0] == source]:
            self._settled.pop(mark, None)

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
        make: Callable[[], Awaitable[E]],
        ttl: float,
        usable: Callable[[Entry], E | Rejected],
        accept: Callable[[E], bool] | None = None,
    ) -> tuple[E, bool]:
        """``(value, cached)``: from the first tier that has a usable one (``cached``), else
        ``make()``'s, shared by the concurrent misses of this process. Memory holds only values
        checked or made here, of the slot's kind: a memory hit passes ``accept`` alone (the
        caller's own check), not ``usable`` again."""
        found = self.memory.peek(slot)
        label = self._label("memory", slot)
        if found is not None:
            value = cast(E, found)
            if accept is None or accept(value):
                self._observe(label, True)
                return value, True
            self._rejected(self.memory.name, slot, CONTRADICTED)
            await self.memory.delete(slot)
        self._observe(label, False)
        return await self._flight.do(slot, lambda: self._miss(slot, make, ttl, usable))  # type: ignore[no-any-return]

    async def _miss(
        self,
        slot: Slot,
        make: Callable[[], Awaitable[E]],
        ttl: float,
        usable: Callable[[Entry], E | Rejected],
    ) -> tuple[E, bool]:
        generation = self.generation(slot.source)
        lower = self.lower
        for depth, tier in enumerate(lower):
            found = await tier.get(slot)
            value = None if found is None else await self._checked(tier, slot, found, usable)
            self._observe(self._label(tier.name, slot), not isinstance(value, Rejected | None))
            if value is not None and not isinstance(value, Rejected):
                await self._keep(slot, value, ttl, generation, [self.memory, *lower[:depth]])
                return value, True
        redis = self.redis if self.redis is not None and self.redis.up else None
        if redis is None:
            made = await make()
            await self._keep(slot, made, ttl, generation, [self.memory, *lower])
            return made, False

        async def in_redis(made: Entry) -> None:  # before the lock goes, for those waiting
            await self._keep(slot, made, ttl, generation, [redis])

        once = await made_once(redis, slot, make, self.settings.redis_lock, in_redis)
        above = [self.memory, *(t for t in lower if t is not redis)]
        if isinstance(once, Stored):  # another process stored it
            value = await self._checked(redis, slot, once.entry, usable)
            if not isinstance(value, Rejected):
                await self._keep(slot, value, ttl, generation, above)
                return value, True
            once = await make()  # what is stored is not what this caller can use: made here
        await self._keep(slot, once, ttl, generation, [*above, redis])
        return once, False

    async def _checked(
        self,
        tier: Tier,
        slot: Slot,
        found: Entry | Rejected,
        usable: Callable[[Entry], E | Rejected],
    ) -> E | Rejected:
        """``found`` (what ``tier`` holds for ``slot``) if it is a value the caller can use,
        else why not, the rejection counted; an entry the caller cannot use is removed from
        ``tier`` (what the tier rejected itself, it removed)."""
        value = found if isinstance(found, Rejected) else usable(found)
        if isinstance(value, Rejected):
            self._rejected(tier.name, slot, value.reason)
            if not isinstance(found, Rejected):
                await tier.delete(slot)
        return value

    def _rejected(self, tier: str, slot: Slot, reason: str) -> None:
        """Count a rejection, and log it (once a minute per tier and reason, with how many
        came since the last line)."""
        if self.metrics is not None:
            self.metrics.cache_rejected(tier, reason)
        now = time.monotonic()
        logged, since = self._rejections.get((tier, reason), (float("-inf"), 0))
        if now - logged < _REJECTED_LOG_EVERY:
            self._rejections[(tier, reason)] = (logged, since + 1)
            return
        self._rejections[(tier, reason)] = (now, 0)
        more = f" ({since} more since the last such line)" if since else ""
        log.warning(
            "cache: the %s tier's %s of source %s rejected (%s: %s); a miss, made again%s",
            tier,
            "facts" if slot.facts else f"image {slot.name[:16]}",
            slot.source,
            reason,
            REASONS.get(reason, reason),
            more,
        )

    async def _keep(
        self, slot: Slot, value: Entry, ttl: float, generation: tuple[int, int], tiers: list[Tier]
    ) -> None:
        """Put ``value`` in ``tiers``, unless a purge of its source came meanwhile."""
        if generation != self.generation(slot.source):
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

    def generation(self, source: str) -> tuple[int, int]:
        """Changes when this process hears of a purge of ``source`` or of everything."""
        return self._purged_all, self._purged.get(source, 0)

    async def hear(self) -> None:
        """Hear now of every purge written to the journals so far (the poller does about once a
        second): for a caller about to keep what it made from this process's memory. What is
        read is heard even if the caller is cancelled meanwhile (the journals' offsets moved)."""
        await asyncio.shield(self._read_journals())

    async def _read_journals(self) -> None:
        async with self._hearing:
            for journal in self.journals:
                for source in await asyncio.to_thread(journal.read):
                    self.forget(source)

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
            if source is None:  # the documents kept beside it: invalid already, their space freed
                with contextlib.suppress(OSError):
                    await asyncio.to_thread(DocumentFolder(self.disk.folder.root, 0).clear)
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
            await self._read_journals()

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
