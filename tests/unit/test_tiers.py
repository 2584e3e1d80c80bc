"""The cache facade and its tiers: the one entry encoding (bound to its slot, checked, with its
expiry, each rejection named), the disk folder (entries, LRU budget, damaged entries, links,
pipes and devices, a read-only folder, several processes writing at once), the purge journal,
Redis (a real redis-server: values, the cap per entry, the lock for images and facts alike,
purges, an outage and the way back), and what the facade does with what it cannot use (facts
of the wrong types or that fail the backend check, an image its caller refuses, facts an
image contradicted)."""

from __future__ import annotations

import asyncio
import concurrent.futures
import hashlib
import importlib.util
import logging
import multiprocessing
import os
import shutil
import stat
import subprocess
import threading
import time
from collections.abc import Callable, Iterator
from pathlib import Path

import pytest
import redis

from iiif_shim.base.errors import BackendError, ConfigError
from iiif_shim.cache.disk import DiskCache, PurgeIncomplete
from iiif_shim.cache.entry import (
    FACTS,
    HEADER_SIZE,
    Entry,
    Rejected,
    Slot,
    encode,
    entry_size,
    examine,
    source_key,
)
from iiif_shim.cache.facade import Caches
from iiif_shim.cache.journal import JOURNAL_MAX, PurgeJournal
from iiif_shim.cache.redis import RedisTier
from iiif_shim.cache.settings import CacheSettings
from iiif_shim.config.settings import parse_settings
from iiif_shim.model.facts import SourceInfo, checked, from_json, to_json
from iiif_shim.model.plan import Rendered, SourceRef
from iiif_shim.telemetry.metrics import Metrics
from tests.support import Process, need_root, need_tool, start_redis

SOURCE = source_key("local", "quad.png")
OTHER = source_key("local", "gray.png")


def key(n: int | str) -> str:
    return hashlib.sha256(str(n).encode()).hexdigest()


def at(source: str, n: int | str) -> Slot:
    return Slot(source, key(n))


def image(n: int, size: int = 1000) -> Rendered:
    return Rendered(body=bytes([n % 256]) * size, media_type="image/jpeg")


def decode(slot: Slot, data: bytes, now: float) -> Entry | None:
    """The value ``data`` holds for ``slot``, or ``None`` (rejected, or past its expiry)."""
    found = examine(slot, data, now)
    return None if isinstance(found, Rejected) else found


def where(disk: DiskCache, slot: Slot) -> Path:
    """The file the disk tier keeps ``slot``'s entry in."""
    return disk.root / slot.source / slot.name


def sane(info: SourceInfo) -> SourceInfo:
    """The check of a backend's facts (``model.facts.checked``), as ``Backend.checked`` does."""
    return checked(info, "local")


# --- the entry -----------------------------------------------------------------------------


def test_an_entry_is_bound_to_its_slot_checked_and_fresh() -> None:
    png = Rendered(b"\x89PNG...", "image/png")
    data = encode(at(SOURCE, 1), png)
    assert decode(at(SOURCE, 1), data, time.time()) == png
    assert decode(at(SOURCE, 2), data, time.time()) is None  # copied under another name
    assert decode(at(OTHER, 1), data, time.time()) is None  # or another source
    assert decode(at(SOURCE, 1), data[:-1] + b"!", time.time()) is None  # damaged body
    assert decode(at(SOURCE, 1), data[:12] + b"\x02" + data[13:], time.time()) is None  # header
    facts = SourceInfo(300, 200, version="v1")
    slot = Slot(SOURCE, FACTS)
    stored = encode(slot, facts, expires=time.time() + 60)
    assert decode(slot, stored, time.time()) == facts
    assert decode(slot, stored, time.time() + 61) is None  # expired
    assert decode(slot, encode(slot, png), time.time()) is None  # an image is no facts
    assert decode(at(SOURCE, 1), encode(at(SOURCE, 1), facts), time.time()) is None
    with pytest.raises(ValueError):
        Slot("../etc", key(1))


def test_a_rejected_entry_says_why() -> None:
    png = Rendered(b"\x89PNG...", "image/png")
    data = encode(at(SOURCE, 1), png)
    now = time.time()
    assert entry_size(data[:HEADER_SIZE]) == len(data)
    assert entry_size(b"<html>" + data[6:HEADER_SIZE]) is None
    assert examine(at(SOURCE, 1), data, now) == png
    assert examine(at(SOURCE, 2), data, now) == Rejected("misplaced")
    assert examine(at(SOURCE, 1), data + b"more", now) == Rejected("damaged")
    assert examine(at(SOURCE, 1), data[:-1] + b"!", now) == Rejected("damaged")
    assert examine(at(SOURCE, 1), b"", now) == Rejected("damaged")
    facts = Slot(SOURCE, FACTS)
    assert examine(facts, encode(facts, png), now) == Rejected("damaged")  # no facts
    mistyped = SourceInfo(300, 200, version=["v", 1])  # type: ignore[arg-type]
    assert examine(facts, encode(facts, mistyped), now) == Rejected("unreadable")
    assert examine(facts, encode(facts, SourceInfo(3, 2), expires=now - 1), now) is None


@pytest.mark.parametrize(
    "data",
    [
        [],
        {"width": 3},
        {"width": True, "height": 2},
        {"width": 3, "height": 2, "version": ["v"]},
        {"width": 3, "height": 2, "last_modified": "yesterday"},
        {"width": 3, "height": 2, "colour": "plaid"},
        {"width": 3, "height": 2, "tiles": {"width": 256, "height": 256, "scale_factors": "1"}},
        {"width": 3, "height": 2, "native": {"kind": "spreadsheet"}},
        {"width": 3, "height": 2, "native": {"kind": "pyramid", "suffix": "jpg"}},
    ],
)
def test_facts_from_json_take_nothing_on_trust(data: object) -> None:
    """Facts read back from a shared tier are of the types their fields declare, or refused
    (never a value that fails later, where a backend's facts never would)."""
    with pytest.raises(ValueError):
        from_json(data)
    info = SourceInfo(3, 2, version="v", last_modified=5)  # an int where a float goes: read
    assert from_json(to_json(info)) == SourceInfo(3, 2, version="v", last_modified=5.0)


# --- disk ---------------------------------------------------------------------------------


def test_disk_entries_keep_the_media_type_and_survive_a_new_instance(tmp_path: Path) -> None:
    disk = DiskCache(tmp_path / "c", 10 * 1024 * 1024)
    disk.open()
    assert disk.get(at(SOURCE, 1)) is None
    disk.put(at(SOURCE, 1), Rendered(b"\x89PNG...", "image/png"))
    again = DiskCache(tmp_path / "c", 10 * 1024 * 1024)  # a restart
    again.open()
    assert again.get(at(SOURCE, 1)) == Rendered(b"\x89PNG...", "image/png")
    assert (tmp_path / "c" / SOURCE / key(1)).is_file()


@pytest.mark.parametrize("damage", ["truncate", "flip", "empty", "foreign"])
def test_a_damaged_entry_is_a_miss_and_is_removed(tmp_path: Path, damage: str) -> None:
    disk = DiskCache(tmp_path, 10 * 1024 * 1024)
    disk.open()
    disk.put(at(SOURCE, 1), image(7, 5000))
    path = where(disk, at(SOURCE, 1))
    data = path.read_bytes()
    path.write_bytes(
        {
            "truncate": data[:-100],
            "flip": data[:-1] + bytes([data[-1] ^ 1]),
            "empty": b"",
            "foreign": b"<html>not ours</html>",
        }[damage]
    )
    assert disk.get(at(SOURCE, 1)) == Rejected("damaged")
    assert not path.exists()
    assert disk.get(at(SOURCE, 1)) is None  # removed: now simply missing


def _outside_entry(tmp_path: Path, slot: Slot, value: Rendered) -> Path:
    outside = tmp_path / "outside"
    outside.mkdir(exist_ok=True)
    (outside / slot.name).write_bytes(encode(slot, value))
    return outside / slot.name


@pytest.mark.parametrize(
    ("attack", "reason"),
    [
        ("another_slot", "misplaced"),
        ("hardlink", "misplaced"),
        ("longer", "damaged"),
        ("sparse", "oversize"),
        ("link", "not_a_file"),
        ("fifo", "not_a_file"),
        ("device", "not_a_file"),
        ("dev_zero", "not_a_file"),
        ("folder", "not_a_file"),
    ],
)
def test_only_an_entry_of_its_own_slot_in_a_regular_file_is_read(
    tmp_path: Path, attack: str, reason: str
) -> None:
    """Whatever is put under an entry's name, a read ends at once: with the reason, having
    read no more than the entry's header says (never a pipe, a device or through a link), and
    with the name removed (never what a link points to; a folder with what it holds); the
    entry is then written again."""
    if attack == "device":
        need_root("a device node")
    disk = DiskCache(tmp_path / "c", 1024 * 1024)
    disk.open()
    slot, other = at(SOURCE, 1), at(SOURCE, 2)
    disk.put(slot, image(1))
    disk.put(other, image(2))
    path = where(disk, slot)
    outside = _outside_entry(tmp_path, slot, image(9))
    if attack == "another_slot":
        path.write_bytes(where(disk, other).read_bytes())
    elif attack == "hardlink":
        path.unlink()
        os.link(where(disk, other), path)
    elif attack == "longer":
        with path.open("ab") as f:
            f.write(b"\0" * 100)
    elif attack == "sparse":
        with path.open("r+b") as f:
            f.truncate(disk.max_entry * 4)  # what its header says is far less
    elif attack == "link":
        path.unlink()
        path.symlink_to(outside)
    elif attack == "fifo":
        path.unlink()
        os.mkfifo(path)
    elif attack == "device":
        path.unlink()
        os.mknod(path, 0o600 | stat.S_IFCHR, os.makedev(1, 5))
    elif attack == "folder":
        path.unlink()
        (path / "inner").mkdir(parents=True)
        (path / "inner" / "link").symlink_to(outside)
    else:
        path.unlink()
        path.symlink_to("/dev/zero")
    with concurrent.futures.ThreadPoolExecutor(1) as pool:  # a hang fails, it does not block
        assert pool.submit(disk.get, slot).result(timeout=10) == Rejected(reason)
    assert not os.path.lexists(path)
    assert decode(slot, outside.read_bytes(), time.time()) == image(9)  # untouched
    assert disk.get(other) == image(2)
    if attack == "hardlink":
        assert where(disk, other).stat().st_nlink == 1
    assert disk.get(slot) is None  # removed: simply missing now
    assert disk.put(slot, image(3)) and disk.get(slot) == image(3)


def test_an_entry_is_written_over_a_folder_under_its_name(tmp_path: Path) -> None:
    """A folder where an entry goes (left by a mistake, or planted) is replaced by the entry
    when it is written; nothing it links to is touched."""
    disk = DiskCache(tmp_path / "c", 1024 * 1024)
    disk.open()
    slot = at(SOURCE, 1)
    outside = _outside_entry(tmp_path, slot, image(9))
    (where(disk, slot) / "inner").mkdir(parents=True)
    (where(disk, slot) / "inner" / "link").symlink_to(outside)
    assert disk.put(slot, image(1))
    assert disk.get(slot) == image(1)
    assert decode(slot, outside.read_bytes(), time.time()) == image(9)


def test_a_source_folder_linked_out_of_the_cache_is_never_followed(tmp_path: Path) -> None:
    """The folder of a source is a link to a folder outside that holds an intact entry of the
    slot (a blue image) and a damaged one of another: a read rejects the link (and removes it,
    not what it points to), a write makes a real folder, the scan and a purge never count or
    remove what is outside."""
    disk = DiskCache(tmp_path / "c", 1024 * 1024)
    disk.open()
    slot, other = at(SOURCE, 1), at(SOURCE, 2)
    outside = _outside_entry(tmp_path, slot, image(9)).parent
    (outside / other.name).write_bytes(b"damaged")
    planted = {p.name: p.read_bytes() for p in outside.iterdir()}
    folder = tmp_path / "c" / SOURCE

    def link() -> None:
        folder.symlink_to(outside, target_is_directory=True)

    link()
    assert disk.get(slot) == Rejected("not_a_file")
    assert not folder.exists()
    link()
    assert disk.get(other) == Rejected("not_a_file")
    link()
    assert disk.size() == 0
    assert disk.purge(SOURCE) == 0 and not os.path.lexists(folder)
    link()
    assert disk.purge(None) == 0 and not os.path.lexists(folder)
    link()
    assert disk.put(slot, image(1))
    assert not folder.is_symlink() and disk.get(slot) == image(1)
    assert {p.name: p.read_bytes() for p in outside.iterdir()} == planted


@pytest.fixture
def immutable(tmp_path: Path) -> Iterator[Callable[[Path], None]]:
    """Make a folder immutable (``chattr +i``: not even root removes what is in it), undone
    afterwards."""
    need_root("an immutable folder")
    chattr = need_tool("chattr")
    made: list[Path] = []

    def freeze(folder: Path) -> None:
        subprocess.run([chattr, "+i", str(folder)], check=True, capture_output=True)
        made.append(folder)

    yield freeze
    for folder in made:
        subprocess.run([chattr, "-i", str(folder)], check=True, capture_output=True)


def test_a_purge_that_cannot_remove_entries_says_how_many_remain(
    tmp_path: Path, immutable: Callable[[Path], None]
) -> None:
    """A folder that cannot be changed: the purge counts nothing as removed that is still
    there, and says how many entries remain (and the facade's report says it failed)."""
    disk = DiskCache(tmp_path / "c", 10 * 1024 * 1024)
    disk.open()
    for n in range(3):
        disk.put(at(SOURCE, n), image(n))
        disk.put(at(OTHER, n), image(n))
    immutable(tmp_path / "c" / SOURCE)
    with pytest.raises(PurgeIncomplete) as caught:
        disk.purge(SOURCE)
    assert (caught.value.removed, caught.value.remaining) == (0, 3)
    assert "3 entries remain, 0 removed" in str(caught.value)
    assert all(disk.get(at(SOURCE, n)) == image(n) for n in range(3))
    with pytest.raises(PurgeIncomplete) as caught:
        disk.purge(None)
    assert (caught.value.removed, caught.value.remaining) == (3, 3)

    async def main() -> dict[str, object]:
        tiers = Caches(CacheSettings(disk=tmp_path / "c"))
        await tiers.start(listen=False)
        try:
            return await tiers.purge(SOURCE)
        finally:
            await tiers.close()

    report = asyncio.run(main())
    assert report["ok"] is False
    assert str(report["disk"]).startswith("failed: 3 entries remain, 0 removed")


def test_one_entry_left_by_a_purge_is_said_so_and_still_counted(
    tmp_path: Path, immutable: Callable[[Path], None]
) -> None:
    """One entry a purge of everything cannot remove: said in the singular, and the size the
    budget is checked against is kept (not taken for an empty folder)."""
    disk = DiskCache(tmp_path / "c", 10 * 1024 * 1024)
    disk.open()
    disk.put(at(SOURCE, 1), image(1))
    disk.put(at(OTHER, 1), image(1))
    immutable(tmp_path / "c" / SOURCE)
    with pytest.raises(PurgeIncomplete, match=r"^1 entry remains, 1 removed"):
        disk.purge(None)
    assert disk._estimate > 0


def test_a_link_another_purge_removes_first_is_no_failure(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    """A link in a source folder's place, removed by another purge between this purge's look
    and its removal: nothing remains, so the purge succeeds."""
    disk = DiskCache(tmp_path / "c", 10 * 1024 * 1024)
    disk.open()
    (tmp_path / "c" / SOURCE).symlink_to(tmp_path)
    real = DiskCache._folder

    def raced(self: DiskCache, source: str, create: bool = False) -> int | None:
        try:
            return real(self, source, create)
        except OSError:
            os.unlink(self.root / source)  # the other purge, meanwhile
            raise

    monkeypatch.setattr(DiskCache, "_folder", raced)
    assert disk.purge(SOURCE) == 0
    assert disk.purge(None) == 0


def test_a_source_folder_a_purge_cannot_read_is_said_unread(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    """A source folder that cannot be opened: the purge says so (how many entries it holds is
    not known, so none is counted as left), and purges the other sources."""
    disk = DiskCache(tmp_path / "c", 10 * 1024 * 1024)
    disk.open()
    disk.put(at(SOURCE, 1), image(1))
    disk.put(at(OTHER, 1), image(1))
    real = DiskCache._folder

    def unreadable(self: DiskCache, source: str, create: bool = False) -> int | None:
        if source == SOURCE:
            raise PermissionError(13, "Permission denied")
        return real(self, source, create)

    monkeypatch.setattr(DiskCache, "_folder", unreadable)
    with pytest.raises(PurgeIncomplete) as caught:
        disk.purge(None)
    assert str(caught.value) == "1 source folder unread, 1 removed (Permission denied)"
    assert (caught.value.removed, caught.value.remaining, caught.value.unread) == (1, 0, 1)
    assert disk.get(at(OTHER, 1)) is None


def test_a_folder_of_other_files_is_refused(tmp_path: Path) -> None:
    (tmp_path / "thesis.pdf").write_text("precious")
    with pytest.raises(ConfigError, match="not a cache folder of iiif-shim"):
        DiskCache(tmp_path, 10 * 1024 * 1024).open()
    assert (tmp_path / "thesis.pdf").exists()
    linked = tmp_path / "linked"  # a link where the marker goes is no marker, nor followed
    linked.mkdir()
    (linked / ".iiif-shim-cache").symlink_to(tmp_path / "made-outside")
    with pytest.raises(ConfigError, match="not a cache folder of iiif-shim"):
        DiskCache(linked, 10 * 1024 * 1024).open()
    assert not (tmp_path / "made-outside").exists()


def test_disk_stays_under_its_budget_and_evicts_the_least_recently_used(tmp_path: Path) -> None:
    budget = 1024 * 1024
    disk = DiskCache(tmp_path, budget)
    disk.open()
    disk.put(at(SOURCE, "first"), image(1, 50_000))
    for n in range(60):
        disk.put(at(OTHER, n), image(n, 50_000))
        os.utime(where(disk, at(OTHER, n)), (time.time() - 1000 + n, time.time() - 1000 + n))
        assert disk.get(at(SOURCE, "first")) is not None  # used all along: touched
        assert disk.size() <= budget
    assert disk.get(at(SOURCE, "first")) is not None
    assert disk.get(at(OTHER, 0)) is None  # the oldest went
    assert disk.get(at(OTHER, 59)) is not None
    assert disk.put(at(SOURCE, "huge"), image(1, budget // 2)) is False  # too large to keep


def test_purge_removes_one_source_or_all(tmp_path: Path) -> None:
    disk = DiskCache(tmp_path, 10 * 1024 * 1024)
    disk.open()
    for n in range(3):
        disk.put(at(SOURCE, n), image(n))
        disk.put(at(OTHER, n), image(n))
    assert disk.purge(SOURCE) == 3
    assert disk.get(at(SOURCE, 0)) is None and disk.get(at(OTHER, 0)) is not None
    assert disk.purge(None) == 3
    assert disk.size() == 0
    assert (tmp_path / ".iiif-shim-cache").exists()  # the folder stays ours


@pytest.mark.parametrize("planted", ["link", "folder"])
def test_eviction_does_not_depend_on_a_name_in_the_folder(tmp_path: Path, planted: str) -> None:
    """Whatever stands at ``.lock`` (the lock file of earlier releases): a link to a file
    outside, a folder. Eviction still runs and keeps the budget (the lock is the folder's
    own), and the link's target is neither made nor written."""
    budget = 1024 * 1024
    disk = DiskCache(tmp_path / "c", budget)
    disk.open()
    lock, target = tmp_path / "c" / ".lock", tmp_path / "target"
    if planted == "link":
        lock.symlink_to(target)
    else:
        lock.mkdir()
    for n in range(40):
        assert disk.put(at(OTHER, n), image(n, 50_000))
    assert disk.size() <= budget
    assert not target.exists()


def _writer(root: str, budget: int, seed: int, rounds: int) -> None:
    disk = DiskCache(Path(root), budget)
    disk.open()
    for n in range(rounds):
        k = n % 40  # both processes write the same keys, with different bodies
        size = 20_000 + (n * 7919 + seed * 104729) % 30_000
        disk.put(at(SOURCE if k % 2 else OTHER, k), image(seed * 100 + n, size))
        disk.get(at(OTHER, (k + 3) % 40))


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
        rendered = decode(Slot(path.parent.name, path.name), path.read_bytes(), time.time())
        assert isinstance(rendered, Rendered), path  # never torn, never mixed
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


@pytest.mark.parametrize("planted", ["link", "fifo", "folder"])
def test_the_purge_journal_is_only_ever_a_regular_file_of_its_folder(
    tmp_path: Path, planted: str
) -> None:
    """Whatever stands under the journal's name: a link to a file outside (full of purge
    lines, past the journal's size limit), a pipe, a folder. A read ends at once with nothing
    (never through the link, never waiting on the pipe); a purge, or a process starting,
    replaces it with a journal of its own that the others read; what the link points to is
    neither read, written nor truncated."""
    path = tmp_path / "c" / "purge.journal"
    writer, reader = PurgeJournal(path), PurgeJournal(path)
    writer.start()
    reader.start()
    victim = tmp_path / "victim"
    victim.write_bytes(f"purge {OTHER} 1\n".encode() * (JOURNAL_MAX // 40 + 10))
    kept = victim.read_bytes()

    def plant() -> None:
        if path.is_dir() and not path.is_symlink():
            shutil.rmtree(path)
        else:
            path.unlink()
        if planted == "link":
            path.symlink_to(victim)
        elif planted == "fifo":
            os.mkfifo(path)
        else:
            (path / "inner").mkdir(parents=True)

    plant()
    found: list[list[str | None]] = []
    reading = threading.Thread(target=lambda: found.append(reader.read()), daemon=True)
    reading.start()
    reading.join(10)
    try:
        assert not reading.is_alive() and found == [[]]
    finally:
        if reading.is_alive():  # let the thread that waits on the pipe go
            os.close(os.open(path, os.O_WRONLY | os.O_NONBLOCK))
    writer.append(SOURCE)
    assert reader.read() == [SOURCE]
    assert path.is_file() and not path.is_symlink()
    plant()
    PurgeJournal(path).start()
    assert path.is_file() and not path.is_symlink()
    assert victim.read_bytes() == kept


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


async def eventually(check: Callable[[], bool], seconds: float = 10.0) -> None:
    """Wait until ``check()`` holds (a condition polled, never a fixed pause)."""
    deadline = time.monotonic() + seconds
    while not check():
        assert time.monotonic() < deadline, "the condition never held"
        await asyncio.sleep(0.01)


def _memory(tiers: Caches) -> int:
    return len(list(tiers.memory.images._cache.keys())) if tiers.memory.images._cache else 0


def test_redis_values_cap_and_purge(redis_server: Process) -> None:
    async def main() -> None:
        tier = RedisTier(_cache(redis_server.port, redis_max_bytes=2048))
        await tier.start()
        try:
            assert await tier.get(at(SOURCE, 1)) is None
            await tier.put(at(SOURCE, 1), image(1, 100), 60)
            await tier.put(at(SOURCE, 2), image(2, 4096), 60)  # past the cap: not kept
            await tier.put(Slot(SOURCE, FACTS), SourceInfo(3, 4), 60)
            await tier.put(at(OTHER, 1), image(9, 10), 60)
            assert await tier.get(at(SOURCE, 1)) == image(1, 100)
            assert await tier.get(at(SOURCE, 2)) is None
            assert await tier.get(Slot(SOURCE, FACTS)) == SourceInfo(3, 4)
            assert await tier.purge(SOURCE) == 2
            assert await tier.get(at(OTHER, 1)) == image(9, 10)
            assert await tier.purge(None) == 1
        finally:
            await tier.close()

    asyncio.run(main())


def test_what_someone_else_wrote_is_a_miss_and_never_read_whole(redis_server: Process) -> None:
    """Whoever else can write to the Redis server, a read takes no more than the cap (plus an
    entry's header), and a value that is not an entry of that very slot is a miss."""

    async def main() -> None:
        tier = RedisTier(_cache(redis_server.port, redis_max_bytes=2048))
        await tier.start()
        try:
            planted = redis.Redis(port=redis_server.port)
            planted.set(tier.key(at(SOURCE, 3)), b"\xff" * (4 * 1024 * 1024))
            planted.set(tier.key(at(SOURCE, 4)), b"image/png\n\x89PNG...")  # the old format
            planted.set(tier.key(at(SOURCE, 5)), encode(at(SOURCE, 6), image(6)))  # another's
            planted.close()
            assert await tier.get(at(SOURCE, 3)) == Rejected("oversize")
            assert await tier.get(at(SOURCE, 4)) == Rejected("damaged")
            assert await tier.get(at(SOURCE, 5)) == Rejected("misplaced")
            assert await tier.get(at(SOURCE, 6)) is None  # nothing there
        finally:
            await tier.close()

    asyncio.run(main())


def test_a_lock_is_released_only_by_its_holder(redis_server: Process) -> None:
    async def main() -> None:
        tier = RedisTier(_cache(redis_server.port, redis_lock=5.0))
        await tier.start()
        try:
            slot = at(SOURCE, 1)
            token = await tier.acquire(slot)
            assert token is not None
            assert await tier.acquire(slot) is None and tier.up  # taken
            await tier.release(slot, "not-the-token")
            assert await tier.acquire(slot) is None  # still held
            waiting = asyncio.create_task(tier.wait(slot, 5.0))
            await tier.put(slot, image(1), 60)
            await tier.release(slot, token)
            assert await waiting == image(1)
            assert await tier.acquire(slot) is not None  # released by its holder
        finally:
            await tier.close()

    asyncio.run(main())


def _shims(settings: CacheSettings, n: int) -> list[Caches]:
    """``n`` facades over one configuration, as ``n`` processes would hold them."""
    return [Caches(settings, Metrics(), journal_poll=0.05) for _ in range(n)]


def test_one_render_for_concurrent_misses_in_two_processes(redis_server: Process) -> None:
    """Two facades (as two processes) with one Redis: one render, the other waits for it."""
    renders = 0
    rendering = asyncio.Event()

    async def make() -> Rendered:
        nonlocal renders
        renders += 1
        rendering.set()
        await asyncio.sleep(0.2)
        return Rendered(b"pixels", "image/png")

    async def main() -> None:
        settings = _cache(redis_server.port)
        shims = _shims(settings, 2)
        for tiers in shims:
            await tiers.start()
        try:
            ref = SourceRef("local", "quad.png", "v1")
            first = asyncio.create_task(shims[0].image(ref, key("tile"), make))
            await rendering.wait()  # the first holds the lock: every other one waits on it
            got = await asyncio.gather(
                first, *(shims[i % 2].image(ref, key("tile"), make) for i in range(9))
            )
            assert {r.body for r in got} == {b"pixels"} and renders == 1
            (fresh,) = _shims(settings, 1)  # a third process
            await fresh.start()
            assert (await fresh.image(ref, key("tile"), make)).media_type == "image/png"
            assert renders == 1
            report = await shims[0].purge(source_key("local", "quad.png"))
            assert report["ok"] and report["redis"] == 1
            await eventually(lambda: _memory(shims[1]) == 0)  # the purge reached it
            await shims[1].image(ref, key("tile"), make)
            assert renders == 2  # memory of the other process dropped too
            await fresh.close()
        finally:
            for tiers in shims:
                await tiers.close()

    asyncio.run(main())


@pytest.mark.parametrize("what", ["image", "facts"])
def test_when_the_lock_holder_fails_one_waiter_takes_over(redis_server: Process, what: str) -> None:
    """The first process's call fails: of the three waiting elsewhere, one makes the value (and
    the others take it from Redis), not all three against a backend that just failed; for an
    image and for a source's facts alike (one lock)."""
    calls = 0
    holding = asyncio.Event()

    async def make() -> Rendered | SourceInfo:
        nonlocal calls
        calls += 1
        first = calls == 1
        if first:
            holding.set()
        await asyncio.sleep(0.3)
        if first:
            raise RuntimeError("the backend failed")
        return Rendered(b"pixels", "image/png") if what == "image" else SourceInfo(30, 20, "gray")  # type: ignore[arg-type]

    async def main() -> None:
        settings = _cache(redis_server.port, redis_lock=5.0)
        shims = _shims(settings, 4)
        for tiers in shims:
            await tiers.start()
        ref = SourceRef("local", f"quad-{what}.png", "v2")

        async def ask(tiers: Caches) -> Rendered | SourceInfo:
            if what == "image":
                return await tiers.image(ref, key("failing"), make)  # type: ignore[arg-type]
            facts = await tiers.facts(ref.backend, ref.native_id, make, sane)  # type: ignore[arg-type]
            return facts[0]

        try:
            holder = asyncio.create_task(ask(shims[0]))
            await holding.wait()  # it holds the lock
            got = await asyncio.gather(*(ask(shims[i]) for i in (1, 2, 3)))
            with pytest.raises(RuntimeError):
                await holder
            assert all(g == got[0] for g in got)
            assert calls == 2  # the failed one, then one waiter's
        finally:
            for tiers in shims:
                await tiers.close()

    asyncio.run(main())


def test_a_damaged_value_in_redis_does_not_defeat_the_lock(redis_server: Process) -> None:
    """Three processes miss a tile at once whose Redis value is garbage: one makes it, the
    others wait for it (the damaged value is not what they wait for), none counts the damaged
    value more than once, and Redis holds the value made."""
    makes = 0

    async def make() -> Rendered:
        nonlocal makes
        makes += 1
        await asyncio.sleep(0.3)
        return Rendered(b"\xff\xd8 made", "image/jpeg")

    async def main() -> None:
        shims = _shims(_cache(redis_server.port, redis_lock=5.0), 3)
        for tiers in shims:
            await tiers.start(listen=False)
        ref = SourceRef("local", "quad.png", "v1")
        slot = Slot(source_key("local", "quad.png"), key("herd"))
        try:
            redis_tier = shims[0].redis
            assert redis_tier is not None
            planted = redis.Redis(port=redis_server.port)
            planted.set(redis_tier.key(slot), os.urandom(500))
            planted.close()
            got = await asyncio.gather(*(t.image(ref, slot.name, make) for t in shims))
            assert {r.body for r in got} == {b"\xff\xd8 made"}
            assert makes == 1
            counts = [_rejected(t.metrics) for t in shims]  # type: ignore[arg-type]
            assert all(c in ({}, {("redis", "damaged"): 1.0}) for c in counts), counts
            assert await redis_tier.get(slot) == got[0]
        finally:
            for tiers in shims:
                await tiers.close()

    asyncio.run(main())


def test_a_value_of_another_type_in_redis_is_damaged_not_an_outage(
    redis_server: Process,
) -> None:
    """A hash where a value of ours goes (Redis answers WRONGTYPE to a read): a damaged value,
    removed, never an outage that takes the tier down; a waiter on the lock waits through it
    for the value the holder writes. A rejected value is removed only while it is still what
    was read."""

    async def main() -> None:
        tier = RedisTier(_cache(redis_server.port, redis_lock=5.0, redis_retry=30))
        await tier.start()
        planted = redis.Redis(port=redis_server.port)
        try:
            slot = at(SOURCE, "hash")
            planted.hset(tier.key(slot), "a", "b")
            assert await tier.get(slot) == Rejected("damaged")
            assert tier.up and not planted.exists(tier.key(slot))
            assert await tier.get(slot) is None

            planted.hset(tier.key(slot), "a", "b")
            token = await tier.acquire(slot)
            assert token is not None
            waiting = asyncio.create_task(tier.wait(slot, 5.0))
            await asyncio.sleep(0.1)
            assert not waiting.done()  # the hash is not what it waits for
            await tier.put(slot, image(3), 60)
            assert await waiting == image(3)
            await tier.release(slot, token)
            assert tier.up

            other = at(SOURCE, "raced")
            planted.set(tier.key(other), b"garbage")
            assert await tier.get(other) == Rejected("damaged")
            planted.set(tier.key(other), b"garbage")
            data = b"garbage"  # what a read found
            await tier.put(other, image(4), 60)  # written after the read: stays
            await tier._remove(other, data)
            assert await tier.get(other) == image(4)
        finally:
            planted.close()
            await tier.close()

    asyncio.run(main())


def test_an_outage_is_skipped_and_redis_is_used_again(tmp_path: Path) -> None:
    server = start_redis(tmp_path / "r1")
    port = server.port
    metrics = Metrics()

    async def main() -> Process:
        tier = RedisTier(_cache(port, redis_retry=0.1), metrics)
        await tier.start()
        try:
            slot = at(SOURCE, 1)
            await tier.put(slot, image(1), 60)
            server.stop()
            started = time.monotonic()
            assert await tier.get(slot) is None and not tier.up
            assert await tier.get(slot) is None  # skipped: not even tried
            assert time.monotonic() - started < 2
            again = start_redis(tmp_path / "r2", port)
            await eventually(lambda: tier.up)
            await tier.put(slot, image(2), 60)
            assert await tier.get(slot) == image(2)
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
        one, two = _shims(settings, 2)
        await one.start()
        await two.start()
        try:
            ref = SourceRef("local", "quad.png", "v1")
            await two.image(ref, key("tile"), make)
            await two.image(ref, key("tile"), make)
            assert renders == 1
            report = await one.purge(source_key("local", "quad.png"))
            assert report["ok"] and "purge.journal" in report["journal"]
            await eventually(lambda: _memory(two) == 0)  # read from the journal
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
        tiers = Caches(CacheSettings(disk=tmp_path / "disk"))
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
            assert tiers.disk is not None
            disk = tiers.disk.folder
            assert disk.get(at(SOURCE, "a")) is None  # its source was purged meanwhile
            assert disk.get(at(OTHER, "b")) is not None  # another source's purge
            assert disk.get(at(OTHER, "c")) is None  # everything was purged meanwhile
        finally:
            await tiers.close()

    asyncio.run(main())


def test_a_purge_reaches_every_registered_cache(tmp_path: Path) -> None:
    """Decoded masters, pyramid tiles and whatever else a component keeps of a source are
    registered with the facade: a purge of the source empties them of it, no more."""

    async def main() -> None:
        tiers = Caches(CacheSettings())
        await tiers.start(listen=False)
        tiles = tiers.memory_cache("tile", 1 << 20, len)
        everything: list[str | None] = []
        tiers.register(everything.append)
        made = 0

        async def fetch() -> bytes:
            nonlocal made
            made += 1
            return b"tile"

        try:
            for source in (SOURCE, OTHER):
                await tiles.get(source, "http://h/0_0.jpg", fetch)
            await tiles.get(SOURCE, "http://h/0_0.jpg", fetch)
            assert made == 2
            await tiers.purge(SOURCE)
            assert tiles.holds(OTHER, "http://h/0_0.jpg")
            assert not tiles.holds(SOURCE, "http://h/0_0.jpg")
            await tiers.purge(None)
            assert not tiles.holds(OTHER, "http://h/0_0.jpg")
            assert everything == [SOURCE, None]
        finally:
            await tiers.close()

    asyncio.run(main())


def test_facts_are_shared_on_disk_until_they_expire(tmp_path: Path) -> None:
    """Two processes of one machine, with a disk folder and no Redis: the second takes the
    first's facts from the disk, and asks the backend again once cache.info_ttl has passed."""
    settings = CacheSettings(disk=tmp_path / "disk", info_ttl=60)
    loads = 0

    async def load() -> SourceInfo:
        nonlocal loads
        loads += 1
        return SourceInfo(300, 200, version="v1")

    async def main() -> None:
        one, two = _shims(settings, 2)
        await one.start(listen=False)
        await two.start(listen=False)
        try:
            facts = SourceInfo(300, 200, version="v1")
            assert await one.facts("local", "quad.png", load, sane) == (facts, False)
            assert await two.facts("local", "quad.png", load, sane) == (facts, True)  # from disk
            assert loads == 1
            assert two.disk is not None
            folder = two.disk.folder
            slot = Slot(source_key("local", "quad.png"), FACTS)
            assert folder.get(slot) is not None
            where(folder, slot).write_bytes(encode(slot, SourceInfo(1, 1), expires=time.time() - 1))
            assert folder.get(slot) is None  # expired: a miss, and removed
        finally:
            await one.close()
            await two.close()

    asyncio.run(main())


# --- what the facade does with what it cannot use ---------------------------------------------


def _rejected(metrics: Metrics) -> dict[tuple[str, str], float]:
    counts: dict[tuple[str, str], float] = {}
    for family in metrics.registry.collect():
        if family.name == "iiif_shim_cache_rejected":
            for sample in family.samples:
                if sample.name.endswith("_total"):
                    counts[sample.labels["tier"], sample.labels["reason"]] = sample.value
    return counts


@pytest.mark.parametrize(
    ("planted", "reason"),
    [
        (SourceInfo(300, 200, last_modified="yesterday"), "unreadable"),  # type: ignore[arg-type]
        (SourceInfo(0, 200), "unusable"),
        (Rendered(b"\xff\xd8", "image/jpeg"), "damaged"),
    ],
)
def test_facts_in_a_shared_tier_are_checked_like_a_backends(
    tmp_path: Path, planted: SourceInfo | Rendered, reason: str, caplog: pytest.LogCaptureFixture
) -> None:
    """An intact entry under a source's facts that holds facts of the wrong types, facts no
    backend would report, or an image: a miss (the backend asked), counted and logged, never
    an exception; the backend's facts take its place."""
    settings = CacheSettings(disk=tmp_path / "disk", info_ttl=60)
    slot = Slot(source_key("local", "quad.png"), FACTS)
    loads = 0

    async def load() -> SourceInfo:
        nonlocal loads
        loads += 1
        return SourceInfo(300, 200, version="v1")

    async def main() -> None:
        metrics = Metrics()
        tiers = Caches(settings, metrics)
        await tiers.start(listen=False)
        try:
            assert tiers.disk is not None
            folder = tiers.disk.folder
            where(folder, slot).parent.mkdir(parents=True)
            where(folder, slot).write_bytes(encode(slot, planted, time.time() + 60))
            with caplog.at_level(logging.WARNING, "iiif_shim"):
                facts = await tiers.facts("local", "quad.png", load, sane)
                assert facts == (SourceInfo(300, 200, version="v1"), False)
            assert loads == 1
            assert _rejected(metrics) == {("disk", reason): 1.0}
            assert f"rejected ({reason}:" in caplog.text and slot.source in caplog.text
            assert folder.get(slot) == SourceInfo(300, 200, version="v1")  # replaced
        finally:
            await tiers.close()

    asyncio.run(main())


def test_a_memory_hit_is_not_checked_again(tmp_path: Path) -> None:
    """Memory holds only what was checked or made in this process: facts found there are not
    put through the backend's check again (those from the disk tier are, once), and an image
    found there passes the caller's own check alone."""
    checks, accepts = 0, 0
    facts = SourceInfo(300, 200, version="v1")

    def check(info: SourceInfo) -> SourceInfo:
        nonlocal checks
        checks += 1
        return sane(info)

    def accept(rendered: Rendered) -> bool:
        nonlocal accepts
        accepts += 1
        return True

    async def load() -> SourceInfo:
        raise AssertionError("the facts are on disk")

    async def make() -> Rendered:
        return image(1)

    async def main() -> None:
        tiers = Caches(CacheSettings(disk=tmp_path / "disk", info_ttl=60))
        await tiers.start(listen=False)
        try:
            assert tiers.disk is not None
            tiers.disk.folder.put(Slot(source_key("local", "quad.png"), FACTS), facts)
            for _ in range(3):
                assert await tiers.facts("local", "quad.png", load, check) == (facts, True)
            assert checks == 1
            ref = SourceRef("local", "quad.png", "v1")
            for _ in range(3):
                assert await tiers.image(ref, key("tile"), make, accept) == image(1)
            assert accepts == 2  # made once, then found in memory twice
        finally:
            await tiers.close()

    asyncio.run(main())


def test_an_image_its_caller_refuses_is_made_again_and_removed_where_found(
    tmp_path: Path, caplog: pytest.LogCaptureFixture
) -> None:
    """A cached image the caller cannot use (say, a PDF page that is no JPEG) is a miss in
    whichever tier it is found: counted as contradicted there and removed from it, the tiers
    below looked at in turn, the image made again and kept in every tier. Rejections are
    logged at most once a minute per tier and reason."""
    ref = SourceRef("local", "quad.png", "v1")
    slot = Slot(source_key("local", "quad.png"), key("page"))
    page, bad = Rendered(b"\xff\xd8 a page", "image/jpeg"), Rendered(b"<html>", "image/jpeg")
    made = 0

    async def make() -> Rendered:
        nonlocal made
        made += 1
        return page

    def jpeg(rendered: Rendered) -> bool:
        return rendered.body.startswith(b"\xff\xd8")

    async def main() -> None:
        metrics = Metrics()
        tiers = Caches(CacheSettings(disk=tmp_path / "disk"), metrics)
        await tiers.start(listen=False)
        try:
            assert tiers.disk is not None
            folder = tiers.disk.folder
            with caplog.at_level(logging.WARNING, "iiif_shim"):
                folder.put(slot, bad)  # on disk
                assert await tiers.image(ref, slot.name, make, jpeg) == page
                assert made == 1 and folder.get(slot) == page  # made again and kept
                await tiers.memory.put(slot, bad, 0)  # in memory, and on disk too
                folder.put(slot, bad)
                assert await tiers.image(ref, slot.name, make, jpeg) == page
                assert made == 2 and folder.get(slot) == page  # not taken from the disk
                assert await tiers.memory.get(slot) == page
                folder.put(slot, bad)
                tiers.memory.images.clear()
                assert await tiers.image(ref, slot.name, make, jpeg) == page
            assert _rejected(metrics) == {
                ("disk", "contradicted"): 3.0,
                ("memory", "contradicted"): 1.0,
            }
            assert caplog.text.count("rejected (contradicted") == 2  # once per tier
        finally:
            await tiers.close()

    asyncio.run(main())


def test_facts_an_image_contradicts_are_asked_again_once(tmp_path: Path) -> None:
    """Facts on disk say 300x200; an image made from them says otherwise: ``facts_again``
    asks the backend (once for any number of renders meeting it at once), and its answer
    replaces them in every tier, counted as contradicted because their size was wrong. Facts
    the backend stands by are remembered (never asked again, never removed from a tier), and so
    are those it could not be asked about (the tiers' facts left as they are) until a purge; a
    new version of the same size replaces them without counting as contradicted."""
    wrong, right = SourceInfo(300, 200, version="v1"), SourceInfo(600, 400, version="v1")
    answer: SourceInfo | None = right
    loads = 0

    async def load() -> SourceInfo:
        nonlocal loads
        loads += 1
        await asyncio.sleep(0.05)  # long enough for every concurrent caller to meet it
        if answer is None:
            raise BackendError("the metadata endpoint is down")
        return answer

    async def main() -> None:
        nonlocal answer
        metrics = Metrics()
        tiers = Caches(CacheSettings(disk=tmp_path / "disk", info_ttl=60), metrics)
        await tiers.start(listen=False)
        try:
            assert tiers.disk is not None
            folder = tiers.disk.folder
            slot = Slot(source_key("local", "quad.png"), FACTS)
            folder.put(slot, wrong, time.time() + 60)
            assert await tiers.facts("local", "quad.png", load, sane) == (wrong, True)
            again = await asyncio.gather(
                *(tiers.facts_again("local", "quad.png", load, wrong) for _ in range(5))
            )
            assert again == [right] * 5 and loads == 1
            assert folder.get(slot) == right
            assert await tiers.facts("local", "quad.png", load, sane) == (right, True)
            assert _rejected(metrics) == {("pipeline", "contradicted"): 1.0}
            # what the backend said is settled: not asked again
            assert tiers.settled("local", "quad.png", right)
            assert await tiers.facts_again("local", "quad.png", load, right) is None
            assert loads == 1

            other = Slot(source_key("local", "gray.png"), FACTS)
            kept = SourceInfo(601, 400, version="v1")  # a pixel off its master, say
            folder.put(other, kept, time.time() + 60)
            stat = where(folder, other).stat()
            answer = None  # the backend cannot be asked: an error, the facts left as they are
            with pytest.raises(BackendError):
                await tiers.facts_again("local", "gray.png", load, kept)
            assert loads == 2 and folder.get(other) == kept
            assert tiers.settled("local", "gray.png", kept)  # asked once: not again
            assert await tiers.facts_again("local", "gray.png", load, kept) is None
            assert loads == 2
            tiers.forget(source_key("local", "gray.png"))  # a purge forgets what was settled
            assert not tiers.settled("local", "gray.png", kept)
            answer = kept  # it stands by them: remembered, the tiers untouched
            assert await tiers.facts_again("local", "gray.png", load, kept) is None
            assert await tiers.facts_again("local", "gray.png", load, kept) is None
            assert loads == 3 and tiers.settled("local", "gray.png", kept)
            assert where(folder, other).stat().st_ino == stat.st_ino
            newer = SourceInfo(601, 400, version="v2")  # of the same size: not contradicted
            answer = newer
            tiers.forget(source_key("local", "gray.png"))
            assert await tiers.facts_again("local", "gray.png", load, kept) == newer
            assert folder.get(other) == newer
            assert _rejected(metrics) == {("pipeline", "contradicted"): 1.0}
        finally:
            await tiers.close()

    asyncio.run(main())
