"""The derivative cache tiers below memory, shared facts, the render lock, and purges.

A rendered image is looked for in memory (per process), then on disk (``cache.disk``, per
machine: ``diskcache.py``), then in Redis (``cache.redis``, every process and machine:
``rediscache.py``); a hit in a lower tier fills the tiers above it, a render fills them all.
Identical concurrent misses share one render per process (:class:`cache.SingleFlight`); across
processes the first to miss takes a short lock in Redis and the others wait (at most
``cache.redis_lock`` seconds) for its image to appear there, then render it themselves if it did
not. Source facts are shared through Redis the same way, with ``cache.info_ttl``.

Purges (:meth:`Tiers.purge`) remove one source's facts and images (or everything) from every
tier, and reach every running process: through Redis pub/sub when Redis is configured, and
through purge journals (``purge.journal`` in ``$IIIF_SHIM_RUN_DIR``, which a supervisor of
several processes sets, and in the disk folder) that each process polls about once a second. A
render that was under way when a purge came keeps its image out of every cache. After a Redis
outage a process drops its memory entries (a purge may have been missed meanwhile).
:func:`purge_everywhere` is what ``iiif-shim purge`` runs.
"""

from __future__ import annotations

import asyncio
import contextlib
import fcntl
import json
import logging
import os
import re
import time
from collections.abc import AsyncIterator, Awaitable, Callable
from contextlib import asynccontextmanager
from pathlib import Path
from typing import Any

from iiif_shim.cache.disk import DiskCache
from iiif_shim.cache.memory import Caches, SingleFlight, source_key
from iiif_shim.cache.redis import RedisTier, RedisUnavailable
from iiif_shim.cache.settings import CacheSettings
from iiif_shim.model.facts import SourceInfo, checked, from_json, to_json
from iiif_shim.model.plan import Rendered, SourceRef
from iiif_shim.telemetry.metrics import Metrics

log = logging.getLogger("iiif_shim")

RUN_DIR_ENV = "IIIF_SHIM_RUN_DIR"
JOURNAL = "purge.journal"
JOURNAL_POLL = 1.0  # seconds between two looks at the purge journal
JOURNAL_MAX = 1024 * 1024  # bytes; the journal is emptied before it grows past this
_SOURCE_RE = re.compile(r"[0-9a-f]{32}")
_MEDIA_RE = re.compile(rb"[a-z]+/[a-z0-9.+-]+")
ALL = "*"


def journal_paths(settings: CacheSettings) -> list[Path]:
    """Where purges are written and read: in ``$IIIF_SHIM_RUN_DIR`` and in the disk folder
    (both when both exist, so a command run without the supervisor's variable still reaches
    its processes through the disk folder)."""
    paths = []
    run_dir = os.environ.get(RUN_DIR_ENV)
    if run_dir:
        paths.append(Path(run_dir) / JOURNAL)
    if settings.disk is not None:
        paths.append(settings.disk / JOURNAL)
    return paths


class PurgeJournal:
    """An append-only file of purges (one ``purge <source|*> <time>`` line each), read by
    every process from where it last stopped."""

    def __init__(self, path: Path) -> None:
        self.path = path
        self._offset = 0

    def start(self) -> None:
        self.path.parent.mkdir(parents=True, exist_ok=True)
        self.path.touch(exist_ok=True)
        self._offset = self.path.stat().st_size  # purges from before this process are done

    def append(self, source: str | None) -> None:
        line = f"purge {source or ALL} {time.time():.3f}\n".encode()
        fd = os.open(self.path, os.O_WRONLY | os.O_CREAT | os.O_APPEND, 0o644)
        try:
            fcntl.flock(fd, fcntl.LOCK_EX)
            if os.fstat(fd).st_size > JOURNAL_MAX:
                os.ftruncate(fd, 0)  # readers past the end start again from 0
            os.write(fd, line)
        finally:
            os.close(fd)

    def read(self) -> list[str | None]:
        """Purges appended since the last read (a source key, or None for all)."""
        try:
            with self.path.open("rb") as f:
                size = os.fstat(f.fileno()).st_size
                if size < self._offset:  # emptied and written again
                    self._offset = 0
                if size == self._offset:
                    return []
                f.seek(self._offset)
                data = f.read(min(size - self._offset, JOURNAL_MAX * 2))
        except OSError:
            return []
        end = data.rfind(b"\n") + 1  # a line being written is read next time
        self._offset += end
        found: list[str | None] = []
        for line in data[:end].decode("ascii", "replace").splitlines():
            parts = line.split()
            if len(parts) >= 2 and parts[0] == "purge":
                if parts[1] == ALL:
                    found.append(None)
                elif _SOURCE_RE.fullmatch(parts[1]):
                    found.append(parts[1])
        return found


# sources whose purges are told apart; past it a purge counts as one of everything
_MAX_PURGED = 10_000


class Tiers:
    def __init__(
        self,
        settings: CacheSettings,
        memory: Caches | None = None,
        metrics: Metrics | None = None,
    ) -> None:
        self.settings = settings
        self.memory = memory
        self.metrics = metrics
        self.disk = DiskCache(settings.disk, settings.disk_bytes) if settings.disk else None
        self.redis = RedisTier(settings, metrics) if settings.redis else None
        self.journals = [PurgeJournal(path) for path in journal_paths(settings)]
        self._flight: SingleFlight[tuple[str, str], Rendered] = SingleFlight()
        self._facts_flight: SingleFlight[str, SourceInfo] = SingleFlight()
        # bumped by the purges this process hears of: of all (first), of one source (second)
        self._purged_all = 0
        self._purged: dict[str, int] = {}
        self._tasks: list[asyncio.Task[None]] = []
        self._disk_failed_at = 0.0

    # --- lifecycle -------------------------------------------------------------------------

    async def start(self, listen: bool = True) -> None:
        """Open the tiers; with ``listen``, follow purges made elsewhere."""
        if self.disk is not None:
            await asyncio.to_thread(self.disk.open, False)
        if self.redis is not None:
            await self.redis.start()
        for journal in self.journals:
            await asyncio.to_thread(journal.start)
        if listen:
            loop = asyncio.get_running_loop()
            if self.disk is not None:
                # a large folder takes a while to scan: serve meanwhile (eviction rescans
                # under the folder's lock anyway after a sixteenth of the budget is written)
                self._tasks.append(loop.create_task(asyncio.to_thread(self.disk.learn_size)))
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

    def _observe(self, tier: str, hit: bool) -> None:
        if self.metrics is not None:
            self.metrics.cache_lookup(tier, hit)

    # --- rendered images -------------------------------------------------------------------

    async def image(
        self, ref: SourceRef, key: str, make: Callable[[], Awaitable[Rendered]]
    ) -> Rendered:
        """The image of plan ``key`` from the first tier that has it, else ``make()``'s."""
        source = source_key(ref.backend, ref.native_id)
        memory = self.memory.results if self.memory is not None else None
        if memory is not None and (hit := memory.lookup((source, key))) is not None:
            return hit

        async def miss() -> Rendered:
            generation = self._generation(source)
            value, where = await self._below(source, key, make, generation)
            if generation == self._generation(source):  # no purge meanwhile: keep it
                if memory is not None:
                    memory.put((source, key), value)
                await self._fill(source, key, value, where)
            return value

        return await self._flight.do((source, key), miss)

    async def _below(
        self,
        source: str,
        key: str,
        make: Callable[[], Awaitable[Rendered]],
        generation: tuple[int, int],
    ) -> tuple[Rendered, str]:
        """(the image, where it came from: ``disk``, ``redis`` or ``render``)."""
        if self.disk is not None:
            found = await self._disk(self.disk.get, source, key)
            self._observe("disk", found is not None)
            if found is not None:
                return found, "disk"
        redis = self.redis if self.redis is not None and self.redis.up else None
        if redis is None:
            return await make(), "render"
        rkey = redis.image_key(source, key)
        found = _unpacked(await redis.get(rkey))
        self._observe("redis", found is not None)
        if found is not None:
            return found, "redis"
        lock = redis.lock_key(source, key)
        token = await redis.acquire(lock)
        clock = asyncio.get_running_loop()
        until = clock.time() + self.settings.redis_lock
        while token is None and redis.up and clock.time() < until:
            # another process renders it: wait for its image; if the lock goes without one
            # (the holder failed), one of the waiters takes over, not all of them at once
            found = _unpacked(await redis.wait(rkey, lock, until - clock.time()))
            if found is not None:
                return found, "redis"
            token = await redis.acquire(lock)
        try:
            value = await make()
            if token is not None and generation == self._generation(source):
                # in Redis before the lock goes, for those waiting on it
                await redis.set(rkey, _packed(value), self.settings.redis_ttl)
        finally:
            if token is not None:
                await redis.release(lock, token)
        return value, "locked" if token is not None else "render"

    async def _fill(self, source: str, key: str, value: Rendered, where: str) -> None:
        if self.disk is not None and where != "disk":
            await self._disk(self.disk.put, source, key, value)
        if self.redis is not None and where == "render":
            await self.redis.set(
                self.redis.image_key(source, key), _packed(value), self.settings.redis_ttl
            )

    async def _disk(self, call: Callable[..., Any], *args: Any) -> Any:
        """A disk call off the event loop; a failing disk is a miss (logged once a minute)."""
        try:
            return await asyncio.to_thread(call, *args)
        except OSError as exc:
            now = time.monotonic()
            if now - self._disk_failed_at > 60:
                self._disk_failed_at = now
                log.warning("disk cache %s: %s (going on without it)", self.settings.disk, exc)
            return None

    # --- facts -----------------------------------------------------------------------------

    async def facts(
        self, backend: str, native_id: str, load: Callable[[], Awaitable[SourceInfo]]
    ) -> SourceInfo:
        """The facts from Redis when another process already asked the backend, else
        ``load()``'s, shared there (one process asks the backend; the others wait for it)."""
        redis = self.redis if self.redis is not None and self.redis.up else None
        if redis is None:
            return await load()
        source = source_key(backend, native_id)

        async def shared() -> SourceInfo:
            key = redis.facts_key(source)
            found = _facts(await redis.get(key), backend)
            self._observe("facts_redis", found is not None)
            if found is not None:
                return found
            lock = redis.lock_key(source, "facts")
            token = await redis.acquire(lock)
            clock = asyncio.get_running_loop()
            until = clock.time() + self.settings.redis_lock
            while token is None and redis.up and clock.time() < until:
                # as for images: if the lock goes without facts (the holder failed), one of
                # the waiters takes over, not all of them at once
                found = _facts(await redis.wait(key, lock, until - clock.time()), backend)
                if found is not None:
                    return found
                token = await redis.acquire(lock)
            try:
                info = await load()
                ttl = self.settings.info_ttl
                if ttl > 0:
                    await redis.set(key, json.dumps(to_json(info)).encode(), ttl, "set_facts")
            finally:
                if token is not None:
                    await redis.release(lock, token)
            return info

        return await self._facts_flight.do(source, shared)

    # --- purge -----------------------------------------------------------------------------

    def _generation(self, source: str) -> tuple[int, int]:
        """Changes when this process hears of a purge of ``source`` or of everything."""
        return self._purged_all, self._purged.get(source, 0)

    def forget(self, source: str | None) -> None:
        """Drop this process's memory entries of one source (``None``: all); renders of it
        under way are then kept out of every tier."""
        if source is None or len(self._purged) >= _MAX_PURGED:
            self._purged_all += 1
            self._purged.clear()
        if source is not None:
            self._purged[source] = self._purged.get(source, 0) + 1
        if self.memory is not None:
            self.memory.drop(source)

    async def purge(self, source: str | None) -> dict[str, Any]:
        """Remove one source (``None``: every source) from every tier, and tell the other
        processes. The report says what each tier did; ``ok`` is False if one failed."""
        self.forget(source)
        report: dict[str, Any] = {"ok": True}
        if self.disk is not None:
            try:
                report["disk"] = await asyncio.to_thread(self.disk.purge, source)
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
            await asyncio.sleep(JOURNAL_POLL)
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
                        elif _SOURCE_RE.fullmatch(text):
                            self.forget(text)
            except asyncio.CancelledError:
                raise
            except Exception as exc:
                redis.failed("subscribe", exc)
            finally:
                with contextlib.suppress(Exception):
                    await client.aclose()
            await asyncio.sleep(redis.settings.redis_retry)


def _packed(rendered: Rendered) -> bytes:
    return rendered.media_type.encode("ascii") + b"\n" + rendered.body


def _unpacked(data: bytes | None) -> Rendered | None:
    if not data:
        return None
    media, sep, body = data.partition(b"\n")
    if not sep or not _MEDIA_RE.fullmatch(media):
        return None
    return Rendered(body=body, media_type=media.decode("ascii"))


def _facts(data: bytes | None, backend: str) -> SourceInfo | None:
    """Facts read from Redis, checked again like a backend's (None if unusable)."""
    if not data:
        return None
    try:
        return checked(from_json(json.loads(data)), backend)
    except Exception:  # anything another writer may have left there is a miss
        return None


@asynccontextmanager
async def open_tiers(
    settings: CacheSettings, memory: Caches, metrics: Metrics | None = None
) -> AsyncIterator[Tiers]:
    tiers = Tiers(settings, memory, metrics)
    await tiers.start()
    try:
        yield tiers
    finally:
        await tiers.close()


async def purge_everywhere(settings: CacheSettings, source: str | None) -> dict[str, Any]:
    """What ``iiif-shim purge`` does: every shared tier, and every running process told."""
    tiers = Tiers(settings)
    await tiers.start(listen=False)
    try:
        return await tiers.purge(source)
    finally:
        await tiers.close()
