"""The cache tiers below memory: the disk folder (entries, LRU budget, damaged entries, several
processes writing at once), the purge journal, and Redis (a real redis-server: values, the cap
per entry, the render lock, purges, an outage and the way back)."""

from __future__ import annotations

import asyncio
import hashlib
import importlib.util
import multiprocessing
import os
import time
from collections.abc import Iterator
from pathlib import Path

import pytest
import redis

from iiif_shim.base.errors import ConfigError
from iiif_shim.cache.disk import DiskCache, decode
from iiif_shim.cache.memory import Caches, source_key
from iiif_shim.cache.redis import RedisTier
from iiif_shim.cache.settings import CacheSettings
from iiif_shim.cache.tiers import PurgeJournal, Tiers
from iiif_shim.config.settings import parse_settings
from iiif_shim.model.facts import SourceInfo
from iiif_shim.model.plan import Rendered, SourceRef
from iiif_shim.telemetry.metrics import Metrics
from tests.support import Process, start_redis

SOURCE = source_key("local", "quad.png")
OTHER = source_key("local", "gray.png")


def key(n: int | str) -> str:
    return hashlib.sha256(str(n).encode()).hexdigest()


def image(n: int, size: int = 1000) -> Rendered:
    return Rendered(body=bytes([n % 256]) * size, media_type="image/jpeg")


# --- disk ---------------------------------------------------------------------------------


def test_disk_entries_keep_the_media_type_and_survive_a_new_instance(tmp_path: Path) -> None:
    disk = DiskCache(tmp_path / "c", 10 * 1024 * 1024)
    disk.open()
    assert disk.get(SOURCE, key(1)) is None
    disk.put(SOURCE, key(1), Rendered(b"\x89PNG...", "image/png"))
    again = DiskCache(tmp_path / "c", 10 * 1024 * 1024)  # a restart
    again.open()
    assert again.get(SOURCE, key(1)) == Rendered(b"\x89PNG...", "image/png")
    assert (tmp_path / "c" / SOURCE / key(1)).is_file()


@pytest.mark.parametrize("damage", ["truncate", "flip", "empty", "foreign"])
def test_a_damaged_entry_is_a_miss_and_is_removed(tmp_path: Path, damage: str) -> None:
    disk = DiskCache(tmp_path, 10 * 1024 * 1024)
    disk.open()
    disk.put(SOURCE, key(1), image(7, 5000))
    path = disk.path(SOURCE, key(1))
    data = path.read_bytes()
    path.write_bytes(
        {
            "truncate": data[:-100],
            "flip": data[:-1] + bytes([data[-1] ^ 1]),
            "empty": b"",
            "foreign": b"<html>not ours</html>",
        }[damage]
    )
    assert disk.get(SOURCE, key(1)) is None
    assert not path.exists()


def test_a_folder_of_other_files_is_refused(tmp_path: Path) -> None:
    (tmp_path / "thesis.pdf").write_text("precious")
    with pytest.raises(ConfigError, match="not a cache folder of iiif-shim"):
        DiskCache(tmp_path, 10 * 1024 * 1024).open()
    assert (tmp_path / "thesis.pdf").exists()


def test_disk_stays_under_its_budget_and_evicts_the_least_recently_used(tmp_path: Path) -> None:
    budget = 1024 * 1024
    disk = DiskCache(tmp_path, budget)
    disk.open()
    disk.put(SOURCE, key("first"), image(1, 50_000))
    for n in range(60):
        disk.put(OTHER, key(n), image(n, 50_000))
        os.utime(disk.path(OTHER, key(n)), (time.time() - 1000 + n, time.time() - 1000 + n))
        assert disk.get(SOURCE, key("first")) is not None  # used all along: touched
        assert disk.size() <= budget
    assert disk.get(SOURCE, key("first")) is not None
    assert disk.get(OTHER, key(0)) is None  # the oldest went
    assert disk.get(OTHER, key(59)) is not None
    assert disk.put(SOURCE, key("huge"), image(1, budget // 2)) is False  # too large to keep


def test_purge_removes_one_source_or_all(tmp_path: Path) -> None:
    disk = DiskCache(tmp_path, 10 * 1024 * 1024)
    disk.open()
    for n in range(3):
        disk.put(SOURCE, key(n), image(n))
        disk.put(OTHER, key(n), image(n))
    assert disk.purge(SOURCE) == 3
    assert disk.get(SOURCE, key(0)) is None and disk.get(OTHER, key(0)) is not None
    assert disk.purge(None) == 3
    assert disk.size() == 0
    assert (tmp_path / ".iiif-shim-cache").exists()  # the folder stays ours


def _writer(root: str, budget: int, seed: int, rounds: int) -> None:
    disk = DiskCache(Path(root), budget)
    disk.open()
    for n in range(rounds):
        k = n % 40  # both processes write the same keys, with different bodies
        size = 20_000 + (n * 7919 + seed * 104729) % 30_000
        disk.put(SOURCE if k % 2 else OTHER, key(k), image(seed * 100 + n, size))
        disk.get(OTHER, key((k + 3) % 40))


def test_two_processes_writing_one_folder_leave_only_whole_entries(tmp_path: Path) -> None:
    budget = 1024 * 1024
    context = multiprocessing.get_context("spawn")
    writers = [
        context.Process(target=_writer, args=(str(tmp_path), budget, seed, 400)) for seed in (1, 2)
    ]
    for w in writers:
        w.start()
    for w in writers:
        w.join(120)
        assert w.exitcode == 0
    entries = [p for p in tmp_path.glob("*/*") if not p.name.startswith(".tmp-")]
    assert entries and not list(tmp_path.glob("*/.tmp-*"))
    for path in entries:
        rendered = decode(path.read_bytes())
        assert rendered is not None, path  # never torn, never mixed
        assert len(set(rendered.body)) == 1
    disk = DiskCache(tmp_path, budget)
    disk.open()
    disk.evict()
    assert disk.size() <= budget


# --- the purge journal ----------------------------------------------------------------------


def test_journal_is_read_from_where_each_reader_stopped(tmp_path: Path) -> None:
    path = tmp_path / "run" / "purge.journal"
    writer, reader = PurgeJournal(path), PurgeJournal(path)
    writer.start()
    writer.append(OTHER)  # before the reader started: not its business
    reader.start()
    assert reader.read() == []
    writer.append(SOURCE)
    writer.append(None)
    assert reader.read() == [SOURCE, None]
    assert reader.read() == []
    with path.open("ab") as f:
        f.write(b"garbage line\npurge ../etc 1\n")
    assert reader.read() == []
    path.write_bytes(b"")  # emptied (as the writer does past its size limit), then written
    writer.append(SOURCE)
    assert reader.read() == [SOURCE]


# --- settings --------------------------------------------------------------------------------


def _settings(cache: dict[str, object], tmp: Path) -> object:
    data = {
        "cache": cache,
        "backends": {"local": {"type": "files", "root": str(tmp)}},
        "routes": [{"backend": "local"}],
    }
    return parse_settings(data, tmp)


def test_redis_without_its_client_is_a_config_error(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    real = importlib.util.find_spec
    monkeypatch.setattr(
        importlib.util, "find_spec", lambda name, *a: None if name == "redis" else real(name, *a)
    )
    with pytest.raises(ConfigError) as caught:
        _settings({"redis": "redis://127.0.0.1:6379/0"}, tmp_path)
    assert "cache.redis" in caught.value.report()
    assert "pip install 'iiif-shim[redis]'" in caught.value.report()


@pytest.mark.parametrize(
    ("cache", "words"),
    [
        ({"redis": "http://127.0.0.1:6379"}, "cache.redis: must be a redis://"),
        ({"purge_token": "short"}, "cache.purge_token: must be at least 16"),
        ({"disk_bytes": 1000}, "cache.disk_bytes: must be at least"),
        ({"disk": "/proc/version"}, "cache.disk: /proc/version is not a folder"),
    ],
)
def test_cache_settings_are_checked(tmp_path: Path, cache: dict[str, object], words: str) -> None:
    with pytest.raises(ConfigError) as caught:
        _settings(cache, tmp_path)
    assert words in caught.value.report()


# --- Redis -----------------------------------------------------------------------------------


@pytest.fixture(scope="module")
def redis_server(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Process]:
    server = start_redis(tmp_path_factory.mktemp("redis"))
    yield server
    server.stop()


def _cache(port: int, **more: object) -> CacheSettings:
    values: dict[str, object] = {
        "redis": f"redis://127.0.0.1:{port}/0",
        "redis_retry": 0.5,
        "redis_prefix": f"t{os.getpid()}-{time.monotonic_ns()}:",
        **more,
    }
    return CacheSettings(**values)  # type: ignore[arg-type]


def test_redis_values_cap_and_purge(redis_server: Process) -> None:
    async def main() -> None:
        tier = RedisTier(_cache(redis_server.port, redis_max_bytes=2048))
        await tier.start()
        try:
            assert await tier.get(tier.image_key(SOURCE, key(1))) is None
            assert await tier.set(tier.image_key(SOURCE, key(1)), b"x" * 100, 60)
            assert not await tier.set(tier.image_key(SOURCE, key(2)), b"x" * 4096, 60)  # cap
            assert await tier.set(tier.facts_key(SOURCE), b"{}", 60)
            assert await tier.set(tier.image_key(OTHER, key(1)), b"y", 60)
            assert await tier.get(tier.image_key(SOURCE, key(1))) == b"x" * 100
            assert await tier.get(tier.image_key(SOURCE, key(2))) is None
            assert await tier.purge(SOURCE) == 2
            assert await tier.get(tier.image_key(OTHER, key(1))) == b"y"
            assert await tier.purge(None) == 1
        finally:
            await tier.close()

    asyncio.run(main())


def test_a_value_written_by_someone_else_past_the_cap_is_never_read_whole(
    redis_server: Process,
) -> None:
    """Whoever else can write to the Redis server, a read takes no more than the cap (plus an
    entry's header) and such a value is a miss."""
    import redis

    async def main() -> None:
        tier = RedisTier(_cache(redis_server.port, redis_max_bytes=2048))
        await tier.start()
        try:
            key_name = tier.image_key(SOURCE, key(3))
            planted = redis.Redis(port=redis_server.port)
            planted.set(key_name, b"\xff" * (4 * 1024 * 1024))
            planted.close()
            assert await tier.get(key_name) is None
        finally:
            await tier.close()

    asyncio.run(main())


def test_a_lock_is_released_only_by_its_holder(redis_server: Process) -> None:
    async def main() -> None:
        tier = RedisTier(_cache(redis_server.port, redis_lock=5.0))
        await tier.start()
        try:
            lock = tier.lock_key(SOURCE, key(1))
            token = await tier.acquire(lock)
            assert token is not None
            assert await tier.acquire(lock) is None and tier.up  # taken
            await tier.release(lock, "not-the-token")
            assert await tier.acquire(lock) is None  # still held
            value = tier.image_key(SOURCE, key(1))

            async def holder() -> None:
                await asyncio.sleep(0.2)
                await tier.set(value, b"made", 60)
                await tier.release(lock, token)

            task = asyncio.create_task(holder())
            assert await tier.wait(value, lock, 5.0) == b"made"
            await task
            assert await tier.acquire(lock) is not None  # released by its holder
        finally:
            await tier.close()

    asyncio.run(main())


def test_one_render_for_concurrent_misses_in_two_processes(redis_server: Process) -> None:
    """Two Tiers (as two processes) with one Redis: one render, the other waits for it."""
    renders = 0

    async def make() -> Rendered:
        nonlocal renders
        renders += 1
        await asyncio.sleep(0.3)
        return Rendered(b"pixels", "image/png")

    async def main() -> None:
        settings = _cache(redis_server.port)
        shims = [Tiers(settings, Caches.sized(10, 60, 1 << 20, 0), Metrics()) for _ in range(2)]
        for tiers in shims:
            await tiers.start()
        try:
            ref = SourceRef("local", "quad.png", "v1")
            got = await asyncio.gather(
                *(shims[i % 2].image(ref, key("tile"), make) for i in range(10))
            )
            assert {r.body for r in got} == {b"pixels"} and renders == 1
            fresh = Tiers(settings, Caches.sized(10, 60, 1 << 20, 0))  # a third process
            await fresh.start()
            assert (await fresh.image(ref, key("tile"), make)).media_type == "image/png"
            assert renders == 1
            report = await shims[0].purge(source_key("local", "quad.png"))
            assert report["ok"] and report["redis"] == 1
            await asyncio.sleep(0.5)  # the purge message reaches the other process
            await shims[1].image(ref, key("tile"), make)
            assert renders == 2  # memory of the other process dropped too
            await fresh.close()
        finally:
            for tiers in shims:
                await tiers.close()

    asyncio.run(main())


def test_when_the_lock_holder_fails_one_waiter_takes_over(redis_server: Process) -> None:
    """The first process's render fails: of the three waiting elsewhere, one renders (and the
    others take its image from Redis), not all three against a backend that just failed."""
    calls = 0

    async def make() -> Rendered:
        nonlocal calls
        calls += 1
        first = calls == 1
        await asyncio.sleep(0.3)
        if first:
            raise RuntimeError("the backend failed")
        return Rendered(b"pixels", "image/png")

    async def main() -> None:
        settings = _cache(redis_server.port, redis_lock=5.0)
        shims = [Tiers(settings, Caches.sized(10, 60, 1 << 20, 0), Metrics()) for _ in range(4)]
        for tiers in shims:
            await tiers.start()
        try:
            ref = SourceRef("local", "quad.png", "v2")
            holder = asyncio.create_task(shims[0].image(ref, key("failing"), make))
            await asyncio.sleep(0.1)  # it holds the lock
            waiters = [shims[i].image(ref, key("failing"), make) for i in (1, 2, 3)]
            got = await asyncio.gather(*waiters)
            with pytest.raises(RuntimeError):
                await holder
            assert {r.body for r in got} == {b"pixels"}
            assert calls == 2  # the failed one, then one waiter's
        finally:
            for tiers in shims:
                await tiers.close()

    asyncio.run(main())


def test_when_the_facts_lock_holder_fails_one_waiter_takes_over(redis_server: Process) -> None:
    """As for images: the first process's backend call for facts fails; of the three waiting
    elsewhere, one asks the backend (and the others take its facts from Redis)."""
    calls = 0

    async def load() -> SourceInfo:
        nonlocal calls
        calls += 1
        first = calls == 1
        await asyncio.sleep(0.3)
        if first:
            raise RuntimeError("the backend failed")
        return SourceInfo(30, 20)

    async def main() -> None:
        settings = _cache(redis_server.port, redis_lock=5.0)
        shims = [Tiers(settings, Caches.sized(10, 60, 1 << 20, 0), Metrics()) for _ in range(4)]
        for tiers in shims:
            await tiers.start()
        try:
            holder = asyncio.create_task(shims[0].facts("local", "quad.png", load))
            await asyncio.sleep(0.1)  # it holds the lock
            got = await asyncio.gather(
                *(shims[i].facts("local", "quad.png", load) for i in (1, 2, 3))
            )
            with pytest.raises(RuntimeError):
                await holder
            assert {(f.width, f.height) for f in got} == {(30, 20)}
            assert calls == 2  # the failed one, then one waiter's
        finally:
            for tiers in shims:
                await tiers.close()

    asyncio.run(main())


def test_an_outage_is_skipped_and_redis_is_used_again(tmp_path: Path) -> None:
    server = start_redis(tmp_path / "r1")
    port = server.port
    metrics = Metrics()

    async def main() -> Process:
        tier = RedisTier(_cache(port, redis_retry=0.5), metrics)
        await tier.start()
        try:
            k = tier.image_key(SOURCE, key(1))
            assert await tier.set(k, b"v", 60)
            server.stop()
            started = time.monotonic()
            assert await tier.get(k) is None and not tier.up
            assert await tier.get(k) is None  # skipped: not even tried
            assert time.monotonic() - started < 2
            again = start_redis(tmp_path / "r2", port)
            await asyncio.sleep(0.6)
            assert tier.up and await tier.set(k, b"w", 60)
            assert await tier.get(k) == b"w"
            return again
        finally:
            await tier.close()

    again = asyncio.run(main())
    try:
        text = metrics.render()[0].decode()
        assert 'iiif_shim_redis_errors_total{operation="get"} 1.0' in text
        assert redis.Redis(port=port).ping()
    finally:
        again.stop()


@pytest.mark.parametrize("where", ["disk", "run_dir"])
def test_a_purge_reaches_other_processes_through_the_journal(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch, where: str
) -> None:
    """Without Redis: the purge journal (in the disk folder, or in $IIIF_SHIM_RUN_DIR)."""
    if where == "run_dir":
        monkeypatch.setenv("IIIF_SHIM_RUN_DIR", str(tmp_path / "run"))
        settings = CacheSettings()
    else:
        monkeypatch.delenv("IIIF_SHIM_RUN_DIR", raising=False)
        settings = CacheSettings(disk=tmp_path / "disk")
    renders = 0

    async def make() -> Rendered:
        nonlocal renders
        renders += 1
        return Rendered(b"pixels", "image/png")

    async def main() -> None:
        one = Tiers(settings, Caches.sized(10, 60, 1 << 20, 0))
        two = Tiers(settings, Caches.sized(10, 60, 1 << 20, 0))
        await one.start()
        await two.start()
        try:
            ref = SourceRef("local", "quad.png", "v1")
            await two.image(ref, key("tile"), make)
            await two.image(ref, key("tile"), make)
            assert renders == 1
            report = await one.purge(source_key("local", "quad.png"))
            assert report["ok"] and "purge.journal" in report["journal"]
            await asyncio.sleep(1.5)  # each process reads the journal about once a second
            await two.image(ref, key("tile"), make)
            assert renders == 2
        finally:
            await one.close()
            await two.close()

    asyncio.run(main())


def test_a_purge_keeps_out_only_the_renders_of_what_it_purged(tmp_path: Path) -> None:
    """A render under way when its source is purged is kept out of every tier; one of another
    source, under way at the same time, is kept as usual; a purge of everything stops all."""

    async def main() -> None:
        tiers = Tiers(CacheSettings(disk=tmp_path / "disk"), Caches.sized(10, 60, 1 << 20, 0))
        await tiers.start(listen=False)
        purged, other = SourceRef("local", "quad.png", "v1"), SourceRef("local", "gray.png", "v1")
        started = asyncio.Event()
        go = asyncio.Event()

        async def slow() -> Rendered:
            started.set()
            await go.wait()
            return Rendered(b"pixels", "image/png")

        async def render_during(forget: str | None, ref: SourceRef, name: str) -> None:
            started.clear()
            go.clear()
            task = asyncio.create_task(tiers.image(ref, key(name), slow))
            await started.wait()
            tiers.forget(forget)
            go.set()
            await task

        try:
            await render_during(SOURCE, purged, "a")
            await render_during(SOURCE, other, "b")
            await render_during(None, other, "c")
            disk = tiers.disk
            assert disk is not None
            assert disk.get(SOURCE, key("a")) is None  # its source was purged meanwhile
            assert disk.get(OTHER, key("b")) is not None  # another source's purge
            assert disk.get(OTHER, key("c")) is None  # everything was purged meanwhile
        finally:
            await tiers.close()

    asyncio.run(main())
