"""Single-flight and the caches: one call for identical concurrent misses, errors not kept."""

from __future__ import annotations

import asyncio

import pytest

from iiif_shim.cache.memory import SingleFlight, SizedCache, TtlCache
from iiif_shim.model.facts import SourceInfo


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
