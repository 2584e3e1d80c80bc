"""One memory budget: reservations wait in line, time out with 503, never exceed the total, and
stay counted while a thread they started still runs; the pool counts such threads too."""

from __future__ import annotations

import asyncio
import threading
from pathlib import Path

import pytest

from iiif_shim.base import machine
from iiif_shim.base.errors import NotImplementedFeature, Overloaded
from iiif_shim.base.machine import cgroup_memory
from iiif_shim.config.settings import load_settings
from iiif_shim.imaging.budget import MemoryBudget, holding
from iiif_shim.imaging.pool import Workers

MB = 1024 * 1024


def test_reservations_queue_in_order_and_never_exceed_the_total() -> None:
    async def main() -> None:
        budget = MemoryBudget(100 * MB, wait=2)
        first = await budget.reserve(60 * MB)
        order: list[str] = []

        async def later(name: str, size: int) -> None:
            reservation = await budget.reserve(size * MB)
            order.append(name)
            assert budget.reserved <= budget.total
            await asyncio.sleep(0.01)
            reservation.release()

        waiting = [asyncio.create_task(later(n, s)) for n, s in (("b", 50), ("c", 10))]
        while budget.waiting < 2:
            await asyncio.sleep(0)
        assert budget.waiting == 2 and order == []  # "c" would fit, but waits behind "b"
        first.release()
        await asyncio.gather(*waiting)
        assert order == ["b", "c"] and budget.reserved == 0 and budget.waiting == 0

    asyncio.run(main())


def test_a_wait_past_its_bound_is_a_503_and_one_too_big_a_501() -> None:
    async def main() -> None:
        budget = MemoryBudget(100 * MB, wait=0.1)
        held = await budget.reserve(90 * MB)
        with pytest.raises(Overloaded) as busy:
            await budget.reserve(20 * MB)
        assert busy.value.status == 503 and busy.value.retry_after == 1
        assert budget.waiting == 0
        with pytest.raises(NotImplementedFeature) as never:
            await budget.reserve(101 * MB)
        assert never.value.status == 501 and "memory budget of 100 MB" in never.value.message
        held.release()
        (await budget.reserve(100 * MB)).release()
        assert budget.reserved == 0

    asyncio.run(main())


def test_a_grant_that_meets_its_timeout_gives_the_bytes_back() -> None:
    """Granted and timed out in the same pass of the loop: the 503 must not keep the bytes.
    The coincidence is arranged 50 times and must be met at least once (the test fails if it
    never is): a waiter that got its 503 although its bytes had been granted to it."""
    met = 0

    async def main() -> None:
        nonlocal met
        budget = MemoryBudget(100 * MB, wait=0.02)
        given_back: list[int] = []
        give_back = budget._give_back

        def counted(nbytes: int) -> None:
            given_back.append(nbytes)
            give_back(nbytes)

        budget._give_back = counted  # type: ignore[method-assign]
        held = await budget.reserve(100 * MB)
        loop = asyncio.get_running_loop()
        # the release is due a hair before the waiter's deadline: both run in one pass
        loop.call_at(loop.time() + 0.02, held.release)
        waiting = asyncio.ensure_future(budget.reserve(10 * MB))
        try:
            (await waiting).release()
        except Overloaded:
            if 10 * MB in given_back:  # granted, then timed out: the grant was given back
                met += 1
        assert budget.reserved == 0 and budget.waiting == 0

    for _ in range(50):
        asyncio.run(main())
    assert met > 0, "the grant never met its timeout: the case was not tested"


def test_a_timed_out_render_keeps_its_memory_and_its_place_in_the_queue() -> None:
    """The thread of a render that took too long cannot be stopped: until it ends, its job
    still counts as pending and its reservation stays held."""

    async def main() -> None:
        budget = MemoryBudget(100 * MB, wait=5)
        workers = Workers(threads=1, max_pending=1, timeout=0.1)
        release = threading.Event()
        reservation = await budget.reserve(80 * MB)
        token = holding.set(reservation)
        try:
            with pytest.raises(Overloaded):
                await workers.run(release.wait, 5)
        finally:
            holding.reset(token)
        reservation.release()  # the request is over ...
        assert workers.pending == 1 and budget.reserved == 80 * MB  # ... its thread is not
        with pytest.raises(Overloaded):  # so the pool is still full
            await workers.run(sum, [1])
        release.set()
        for _ in range(100):
            if workers.pending == 0:
                break
            await asyncio.sleep(0.01)
        assert workers.pending == 0 and budget.reserved == 0
        assert await workers.run(sum, [1, 2]) == 3
        workers.close()

    asyncio.run(main())


def _cgroups(tmp_path: Path, lines: str, limits: dict[str, str]) -> tuple[Path, Path]:
    """A fake ``/proc/self/cgroup`` and ``/sys/fs/cgroup`` with ``limits`` (path -> text)."""
    tmp_path.mkdir()
    proc = tmp_path / "cgroup"
    proc.write_text(lines)
    root = tmp_path / "sys"
    for path, text in limits.items():
        (root / path).parent.mkdir(parents=True, exist_ok=True)
        (root / path).write_text(text)
    return proc, root


def test_the_cgroup_limit_is_the_tightest_of_the_group_and_its_parents(tmp_path: Path) -> None:
    v2 = {"memory.max": "max\n", "pod/memory.max": "2147483648\n", "pod/app/memory.max": "max\n"}
    assert cgroup_memory(*_cgroups(tmp_path / "a", "0::/pod/app\n", v2)) == 2 << 30
    v1 = {
        "memory/memory.limit_in_bytes": "9223372036854771712\n",
        "memory/box/memory.limit_in_bytes": "536870912\n",
    }
    lines = "4:memory:/box\n1:cpu,cpuacct:/box\n"
    assert cgroup_memory(*_cgroups(tmp_path / "b", lines, v1)) == 512 << 20
    unlimited = {"memory.max": "max\n"}
    assert cgroup_memory(*_cgroups(tmp_path / "c", "0::/\n", unlimited)) is None
    assert cgroup_memory(tmp_path / "none", tmp_path) is None


def test_the_default_budget_is_half_the_memory_the_server_may_use(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    physical = machine.physical_memory()
    assert physical is not None and physical > 0
    usable = machine.usable_memory()
    assert usable is not None and usable <= physical
    assert machine.default_memory_budget() == max(16 << 20, int(usable * machine.BUDGET_FRACTION))
    monkeypatch.setattr(machine, "cgroup_memory", lambda: 1 << 30)  # a container's limit
    assert machine.default_memory_budget() == 512 << 20
    config = tmp_path / "shim.yaml"
    body = "backends: {a: {type: files, root: .}}\nroutes: [{match: '', backend: a}]\n"
    config.write_text("server: {memory_budget: 0}\n" + body)
    assert load_settings(config).server.memory_budget == 512 << 20
    config.write_text(body)  # the default
    assert load_settings(config).server.memory_budget == 512 << 20
    config.write_text("server: {memory_budget: 268435456}\n" + body)  # an explicit value stays
    assert load_settings(config).server.memory_budget == 256 << 20
