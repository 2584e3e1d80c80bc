"""Single-flight and the caches: one call for identical concurrent misses, errors not kept."""

from __future__ import annotations

import asyncio
import dataclasses
import time
from pathlib import Path

import pytest

from iiif_shim.cache.entry import FACTS, Slot, source_key
from iiif_shim.cache.facade import Caches
from iiif_shim.cache.memory import SingleFlight, SizedCache, TtlCache
from iiif_shim.cache.settings import CacheSettings
from iiif_shim.model.facts import Codestream, SourceInfo, checked
from iiif_shim.telemetry.metrics import Metrics


def test_single_flight_shares_one_call_and_forgets_errors() -> None:
    calls = 0

    async def slow() -> int:
        nonlocal calls
        calls += 1
        await asyncio.sleep(0.01)
        return calls

    async def failing() -> int:
        raise ValueError("boom")

    async def main() -> None:
        flight: SingleFlight[str, int] = SingleFlight()
        assert await asyncio.gather(*(flight.do("k", slow) for _ in range(20))) == [1] * 20
        assert flight.in_flight == 0
        for _ in range(2):
            with pytest.raises(ValueError):
                await flight.do("bad", failing)
        assert await flight.do("k", slow) == 2  # nothing remembered between flights

    asyncio.run(main())


def test_facts_cache_has_no_gap_between_flight_and_cache() -> None:
    """A request arriving right after the shared call ends must hit the cache."""
    calls = 0

    async def load() -> SourceInfo:
        nonlocal calls
        calls += 1
        await asyncio.sleep(0.01)
        return SourceInfo(width=1, height=1)

    async def main() -> None:
        cache: TtlCache[tuple[str, str], SourceInfo] = TtlCache(entries=10, ttl=60, tier="facts")
        first = asyncio.ensure_future(cache.get(("b", "id"), load))
        while calls == 0:
            await asyncio.sleep(0)
        late: list[asyncio.Future[SourceInfo]] = []
        for _ in range(200):  # keep arriving through the moment the call completes
            late.append(asyncio.ensure_future(cache.get(("b", "id"), load)))
            await asyncio.sleep(0.0002)
        await asyncio.gather(first, *late)
        assert calls == 1

    asyncio.run(main())


def test_sized_cache_bounds_and_skips() -> None:
    made: list[str] = []

    def maker(key: str, size: int):  # type: ignore[no-untyped-def]
        async def make() -> bytes:
            made.append(key)
            return b"x" * size

        return make

    async def main() -> None:
        cache: SizedCache[str, bytes] = SizedCache(100, len)
        await cache.get("a", maker("a", 40))
        await cache.get("a", maker("a", 40))
        assert made == ["a"]
        await cache.get("big", maker("big", 60))  # over half the budget: not kept
        await cache.get("big", maker("big", 60))
        assert made == ["a", "big", "big"]
        await cache.get(None, maker("none", 1))
        await cache.get(None, maker("none", 1))
        assert made.count("none") == 2  # key None: never cached
        off: SizedCache[str, bytes] = SizedCache(0, len)
        await off.get("a", maker("off", 1))
        await off.get("a", maker("off", 1))
        assert made.count("off") == 2

    asyncio.run(main())


def test_a_ttl_cache_keeps_none_as_an_answer() -> None:
    async def main() -> None:
        calls = 0

        async def load() -> None:
            nonlocal calls
            calls += 1

        cache: TtlCache[str, None] = TtlCache(entries=10, ttl=60, tier="record")
        assert await cache.get("missing", load) is None
        assert await cache.get("missing", load) is None
        assert calls == 1

    asyncio.run(main())


def test_jpeg_2000_facts_kept_without_their_layout_are_a_miss(tmp_path: Path) -> None:
    """Facts of a JPEG 2000 that an earlier release kept in a shared tier, without its
    codestream's layout: counted as one untiled tile, a tiled master's views were refused as
    over the budget until they expired (an hour). They fail the backend's check: a miss,
    counted as unusable, the facts read again and kept in their place."""
    settings = CacheSettings(disk=tmp_path / "disk", info_ttl=60)
    slot = Slot(source_key("files", "big.jp2"), FACTS)
    layout = Codestream(512, 512, 5, 3, 8, nbytes=40 << 20, tile_bytes=200_000)
    fresh = SourceInfo(20000, 15000, format="JPEG2000", mode="RGB", codestream=layout)
    loads = 0

    async def load() -> SourceInfo:
        nonlocal loads
        loads += 1
        return fresh

    async def main() -> None:
        metrics = Metrics()
        tiers = Caches(settings, metrics)
        await tiers.start(listen=False)
        try:
            assert tiers.disk is not None
            stale = dataclasses.replace(fresh, codestream=None)
            tiers.disk.folder.put(slot, stale, time.time() + 60)
            found = await tiers.facts("files", "big.jp2", load, lambda i: checked(i, "files"))
            assert found == (fresh, False) and loads == 1
            assert _rejected(metrics) == {("disk", "unusable"): 1.0}
            assert tiers.disk.folder.get(slot) == fresh  # replaced
        finally:
            await tiers.close()

    asyncio.run(main())


def _rejected(metrics: Metrics) -> dict[tuple[str, str], float]:
    counts: dict[tuple[str, str], float] = {}
    for family in metrics.registry.collect():
        if family.name == "iiif_shim_cache_rejected":
            for sample in family.samples:
                if sample.name.endswith("_total"):
                    counts[sample.labels["tier"], sample.labels["reason"]] = sample.value
    return counts
