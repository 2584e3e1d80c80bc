"""Revocations and failed logins (auth/store.py): shared by real processes through the
journals in one folder, and by "machines" (stores in separate folders) through a real Redis;
bounded journals; failure limits with Retry-After."""

from __future__ import annotations

import asyncio
import logging
import os
import subprocess
import sys
import textwrap
import time
from collections.abc import Iterator
from pathlib import Path

import pytest

from iiif_shim.auth import store as store_module
from iiif_shim.auth.store import Store, state_folder
from iiif_shim.cache.journal import RUN_DIR_ENV
from iiif_shim.cache.settings import CacheSettings
from tests.support import Process, start_redis, wait_until

ROOT = Path(__file__).resolve().parents[2]

CHILD = textwrap.dedent(
    """
    import asyncio, sys, time
    from pathlib import Path
    from iiif_shim.auth import store as module
    from iiif_shim.auth.store import Store
    module.MAX_JOURNAL = int(sys.argv[2])
    module.MAX_REVOKED = int(sys.argv[3])

    async def main():
        store = await Store.open(Path(sys.argv[1]), None)
        print("ready", flush=True)
        for line in sys.stdin:
            verb, _, arg = line.strip().partition(" ")
            if verb == "wait":  # until revoked, within 20 s
                deadline = time.monotonic() + 20
                while not store.revoked(arg) and time.monotonic() < deadline:
                    await asyncio.sleep(0.01)
                print("revoked" if store.revoked(arg) else "not revoked", arg, flush=True)
            elif verb == "check":  # check <id> [<issued>]
                ident, _, issued = arg.partition(" ")
                found = store.revoked(ident, int(issued or 0))
                print("revoked" if found else "not revoked", ident, flush=True)
            elif verb == "revoke":  # revoke <id> [<issued>]
                ident, _, issued = arg.partition(" ")
                await store.revoke(ident, int(time.time()) + 3600, int(issued or 0))
                print("done", ident, flush=True)
        await store.close()

    asyncio.run(main())
    """
)


class Child:
    """Another real process with a store on the same folder, driven line by line."""

    def __init__(self, folder: Path, max_journal: int, max_revoked: int | None = None) -> None:
        revoked = max_revoked or store_module.MAX_REVOKED
        self.proc = subprocess.Popen(
            [sys.executable, "-c", CHILD, str(folder), str(max_journal), str(revoked)],
            stdin=subprocess.PIPE,
            stdout=subprocess.PIPE,
            text=True,
            cwd=ROOT,
        )
        assert self.ask(None) == "ready"

    def ask(self, line: str | None) -> str:
        assert self.proc.stdin is not None and self.proc.stdout is not None
        if line is not None:
            self.proc.stdin.write(line + "\n")
            self.proc.stdin.flush()
        return self.proc.stdout.readline().strip()

    def close(self) -> None:
        assert self.proc.stdin is not None and self.proc.stdout is not None
        self.proc.stdin.close()
        self.proc.wait(20)
        self.proc.stdout.close()


@pytest.fixture
def child(tmp_path: Path) -> Iterator[Child]:
    found = Child(tmp_path / "state", store_module.MAX_JOURNAL)
    yield found
    found.close()


def test_a_revocation_made_in_one_process_is_seen_by_another(tmp_path: Path, child: Child) -> None:
    async def main() -> None:
        store = await Store.open(tmp_path / "state", None)
        try:
            assert child.ask("check sid-one") == "not revoked sid-one"
            await store.revoke("sid-one", int(time.time()) + 3600)
            assert child.ask("check sid-one") == "revoked sid-one"  # no wait: a stat away
            assert child.ask("revoke sid-two") == "done sid-two"
            assert store.revoked("sid-two")
            assert not store.revoked("sid-three")
        finally:
            await store.close()

    asyncio.run(main())


def test_journals_are_compacted_and_processes_follow(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    """With a small bound, many revocations (half of them already over) keep the journal
    small, and another process still sees every live one, across the compactions."""
    monkeypatch.setattr(store_module, "MAX_JOURNAL", 4096)
    other = Child(tmp_path / "state", 4096)

    async def main() -> None:
        store = await Store.open(tmp_path / "state", None)
        try:
            now = int(time.time())
            for i in range(600):
                await store.revoke(f"s{i}", now + (3600 if i % 2 else -1))
            lines = (tmp_path / "state" / "revoked").read_text().splitlines()
            assert len(lines) < 500, len(lines)  # compacted: the expired ones left
            for i in (1, 301, 599):
                assert other.ask(f"check s{i}") == f"revoked s{i}"
            assert other.ask("check s598") == "not revoked s598"  # expired
            assert other.ask("revoke late") == "done late"
            assert store.revoked("late")
        finally:
            await store.close()
            other.close()

    asyncio.run(main())


def test_revocations_expire_and_bad_ids_are_refused(tmp_path: Path) -> None:
    async def main() -> None:
        store = await Store.open(tmp_path, None)
        try:
            await store.revoke("gone", int(time.time()) - 1)
            assert not store.revoked("gone")
            for bad in ("", "a b", "x\n1 y", "é", "a" * 65):
                with pytest.raises(ValueError):
                    await store.revoke(bad, int(time.time()) + 60)
            with (tmp_path / "revoked").open("a") as journal:
                journal.write("garbage\n12 \n\n1 a b\n")
            assert not store.revoked("a")  # a damaged journal is skipped line by line
        finally:
            await store.close()

    asyncio.run(main())


def test_state_folder_order(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    assert state_folder(tmp_path / "given", tmp_path / "run") == (tmp_path / "given", False)
    assert state_folder(None, tmp_path / "run") == (tmp_path / "run" / "auth", False)
    monkeypatch.setenv(RUN_DIR_ENV, str(tmp_path / "env"))
    assert state_folder(None, None) == (tmp_path / "env" / "auth", False)
    monkeypatch.delenv(RUN_DIR_ENV)
    folder, temporary = state_folder(None, None)
    assert temporary and folder.is_dir()

    async def main() -> None:
        store = await Store.open(None, None)
        assert store.folder.is_dir()
        await store.close()
        assert not store.folder.exists()  # a private folder goes with its process

    asyncio.run(main())
    folder.rmdir()


# --- failed logins -----------------------------------------------------------------------


def test_failures_are_limited_per_key_with_retry_after(tmp_path: Path) -> None:
    async def main() -> None:
        store = await Store.open(tmp_path, None)
        other = await Store.open(tmp_path, None)  # another process's view
        try:
            keys = [("u.bob", 3), ("a.addr", 5)]
            for _ in range(3):
                wait, ticket = await store.reserve(keys, 60)
                assert wait is None and ticket is not None
            wait, ticket = await other.reserve(keys, 60)  # seen through the journal
            assert ticket is None and wait is not None and 1 <= wait <= 60
            assert (await other.reserve([("u.eve", 3), ("a.addr", 5)], 60))[0] is None
            assert (await store.reserve([("u.max", 3), ("a.addr", 5)], 60))[0] is None
            assert (await other.reserve([("u.zed", 3), ("a.addr", 5)], 60))[0] is not None
            assert (await other.reserve([("u.zed", 3), ("a.other", 5)], 60))[0] is None
            # a released attempt (a right password) no longer counts, in the other process
            _, taken = await store.reserve([("u.kim", 1)], 60)
            assert taken is not None
            assert (await other.reserve([("u.kim", 1)], 60))[0] is not None
            await store.release(taken, 60)
            assert (await other.reserve([("u.kim", 1)], 60))[0] is None
            # the window: attempts older than it no longer count; Retry-After is when
            # enough of them leave it
            now = time.time()
            with (tmp_path / "failures").open("a") as journal:
                for age in (100, 90, 80, 50, 40):
                    journal.write(f"{now - age:.3f} u.old\n")
            wait, _ = await other.reserve([("u.old", 2)], 60)  # 50 and 40 s old: 10 s left
            assert wait is not None and 9 <= wait <= 11
            wait, _ = await other.reserve([("u.new", 3), ("u.old", 1)], 60)  # the newest: 20 s
            assert wait is not None and 19 <= wait <= 21
            assert (await other.reserve([("u.old", 3)], 30))[0] is None  # none within 30 s
        finally:
            await store.close()
            await other.close()

    asyncio.run(main())


# --- Redis -------------------------------------------------------------------------------


@pytest.fixture(scope="module")
def redis_server(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Process]:
    server = start_redis(tmp_path_factory.mktemp("redis"))
    yield server
    server.stop()


def _cache(port: int, prefix: str) -> CacheSettings:
    return CacheSettings(
        redis=f"redis://127.0.0.1:{port}/0",
        redis_retry=0.5,
        redis_prefix=prefix,
    )


async def _until(check: object, what: str, seconds: float = 20.0) -> None:
    deadline = time.monotonic() + seconds
    while not check():  # type: ignore[operator]
        if time.monotonic() > deadline:
            pytest.fail(f"not {what} after {seconds}s")
        await asyncio.sleep(0.01)


def test_redis_shares_revocations_and_failures_between_machines(
    tmp_path: Path, redis_server: Process
) -> None:
    """Two stores with folders of their own (two machines) and one Redis."""
    cache = _cache(redis_server.port, f"t{os.getpid()}-{time.monotonic_ns()}:")

    async def main() -> None:
        one = await Store.open(tmp_path / "one", cache)
        two = await Store.open(tmp_path / "two", cache)
        try:
            assert one.redis is not None and two.redis is not None
            await _until(lambda: two.redis.subscribed.is_set(), "subscribed")  # type: ignore[union-attr]
            await one.revoke("machine-sid", int(time.time()) + 3600)
            await _until(lambda: two.revoked("machine-sid"), "seen on the other machine")
            assert not (tmp_path / "two" / "revoked").exists()  # not through the files
            for i in range(1200):  # more than one batch of keys to read
                await one.revoke(f"many-{i}", int(time.time()) + 3600)
            late = await Store.open(tmp_path / "late", cache)  # starts after the logouts
            try:
                await _until(lambda: late.revoked("machine-sid"), "seen by a late starter")
                await _until(
                    lambda: all(late.revoked(f"many-{i}") for i in range(1200)),
                    "every key read by a late starter",
                )
                assert not (tmp_path / "late" / "revoked").exists()
            finally:
                await late.close()
            assert (await one.reserve([("u.bob", 2), ("a.x", 10)], 60))[0] is None
            assert (await two.reserve([("u.bob", 2), ("a.y", 10)], 60))[0] is None
            # one attempt here, one on the other machine: the third is refused
            wait, ticket = await two.reserve([("u.bob", 2), ("a.z", 10)], 60)
            assert ticket is None and wait is not None and 1 <= wait <= 60
            assert (await two.reserve([("u.bob", 3), ("a.x", 10)], 60))[0] is None
        finally:
            await one.close()
            await two.close()

    asyncio.run(main())


def test_redis_down_the_files_still_work_and_it_is_logged_once(
    tmp_path: Path, caplog: pytest.LogCaptureFixture
) -> None:
    server = start_redis(tmp_path / "redis")
    cache = _cache(server.port, "down:")

    async def main() -> None:
        store = await Store.open(tmp_path / "state", cache)
        other = await Store.open(tmp_path / "state", None)  # a process of the same server
        try:
            assert store.redis is not None
            await _until(lambda: store.redis.subscribed.is_set(), "subscribed")  # type: ignore[union-attr]
            server.stop()
            with caplog.at_level(logging.WARNING, logger="iiif_shim"):
                for i in range(3):
                    await store.revoke(f"down-{i}", int(time.time()) + 60)
                    assert (await store.reserve([("u.a", 10)], 60))[0] is None
            assert all(other.revoked(f"down-{i}") for i in range(3))
            assert (await other.reserve([("u.a", 3)], 60))[0] is not None
            failed = [r for r in caplog.records if "Redis at" in r.getMessage()]
            assert len([r for r in failed if "failed" in r.getMessage()]) == 1, failed
        finally:
            await store.close()
            await other.close()

    asyncio.run(main())
    wait_until(lambda: server.proc.poll() is not None, "redis stopped")


def test_a_full_set_of_revocations_fails_closed_in_every_process(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    """More live revocations than kept: no live one is dropped; a not-before takes their place
    (in memory, in the journal when it is compacted, for a process started afterwards), and
    values made after it are not refused by it."""
    monkeypatch.setattr(store_module, "MAX_REVOKED", 3)
    monkeypatch.setattr(store_module, "MAX_JOURNAL", 64)  # compact at every few lines

    async def main() -> None:
        store = await Store.open(tmp_path, None)
        try:
            before = int(time.time() * 1000)
            for i in range(6):
                await store.revoke(f"sid-{i}", int(time.time()) + 3600, before)
            assert all(store.revoked(f"sid-{i}", before) for i in range(6))
            late = await Store.open(tmp_path, None)  # reads the compacted journal
            try:
                assert all(late.revoked(f"sid-{i}", before) for i in range(6))
                assert late.revoked("never-revoked", before)  # made before: refused too
                after = int(time.time() * 1000) + 5
                assert not late.revoked("new-login", after)
                lines = (tmp_path / "revoked").read_text().splitlines()
                assert any(" nb." in line for line in lines)
                assert len(lines) <= 3 + 1
            finally:
                await late.close()
        finally:
            await store.close()

    asyncio.run(main())


def test_a_not_before_read_from_another_process_does_not_cascade(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    """The reviewer's cascade, with two real processes on one folder and the bound lowered to
    5: the child's set overflows (a not-before); a user logs in after it; this process reads
    the journal (the revocations and the not-before), then a few ordinary logouts happen
    here. It used to keep the covered revocations, overflow again and set a later
    not-before of its own, logging the new user out. It adopts the child's instead and
    drops what that covers."""
    monkeypatch.setattr(store_module, "MAX_REVOKED", 5)
    other = Child(tmp_path / "state", store_module.MAX_JOURNAL, 5)

    async def main() -> None:
        store = await Store.open(tmp_path / "state", None)
        try:
            before = int(time.time() * 1000)
            for i in range(6):  # one more than the bound: a not-before, there
                assert other.ask(f"revoke flood-{i} {before}") == f"done flood-{i}"
            lines = (tmp_path / "state" / "revoked").read_text()
            nb = max(int(x.split(" nb.")[1].split()[0]) for x in lines.splitlines() if " nb." in x)
            while int(time.time() * 1000) < nb:  # the victim logs in after it (a ms at most)
                pass
            victim = int(time.time() * 1000)
            assert not store.revoked("victim", victim)  # reads the journal here
            assert store.revoked("flood-0", before)  # covered by the not-before
            for i in range(3):  # ordinary logouts of later logins
                await store.revoke(f"later-{i}", int(time.time()) + 3600, victim)
            assert not store.revoked("victim", victim)
            assert other.ask(f"check victim {victim}") == "not revoked victim"
            assert other.ask(f"check later-1 {victim}") == "revoked later-1"
            assert (tmp_path / "state" / "revoked").read_text().count(" nb.") == 1
        finally:
            await store.close()
            other.close()

    asyncio.run(main())


def test_a_logout_made_while_redis_is_down_reaches_other_machines_when_it_is_back(
    tmp_path: Path,
) -> None:
    """Two machines (folders of their own) and a real redis-server, stopped and started
    again on the same port, empty (no persistence, as the cache's Redis usually runs): a
    logout made on `one` while it was down, and one made before (its key lost with the
    restart), reach `two` and a machine started afterwards once Redis is back."""
    server = start_redis(tmp_path / "redis")
    port = server.port
    cache = _cache(port, "heal:")

    async def main() -> None:
        nonlocal server
        one = await Store.open(tmp_path / "one", cache)
        two = await Store.open(tmp_path / "two", cache)
        try:
            assert one.redis is not None and two.redis is not None
            await _until(lambda: two.redis.subscribed.is_set(), "subscribed")  # type: ignore[union-attr]
            await one.revoke("before-outage", int(time.time()) + 3600)
            await _until(lambda: two.revoked("before-outage"), "seen before the outage")
            server.stop()
            await _until(lambda: server.proc.poll() is not None, "redis stopped")
            await one.revoke("during-outage", int(time.time()) + 3600)
            assert one.revoked("during-outage") and not two.revoked("during-outage")
            server = start_redis(tmp_path / "redis", port)  # back, with no key
            await _until(lambda: two.revoked("during-outage"), "seen once Redis is back", 30)
            late = await Store.open(tmp_path / "late", cache)
            try:
                await _until(
                    lambda: late.revoked("during-outage") and late.revoked("before-outage"),
                    "both seen by a machine started after the restart",
                    30,
                )
            finally:
                await late.close()
        finally:
            await one.close()
            await two.close()

    try:
        asyncio.run(main())
    finally:
        server.stop()
