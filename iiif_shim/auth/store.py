"""What the gate remembers beyond one request: revoked sessions and tokens (logouts) and failed
logins, shared by every process of one server and, with ``cache.redis``, by every machine.

**Files** (always): two append-only journals in one folder: ``auth.state_dir``, else
``$IIIF_SHIM_RUN_DIR/auth`` (the supervisor's run folder, shared by its workers, removed at
exit), else a private temporary folder (one process alone, removed at close). ``revoked``
holds lines ``<exp> <id> <issued>`` (an id is a session's sid or a token's jti, never a cookie
or a token; ``issued``: when that value was made, Unix ms), ``failures`` lines ``<time>
<key>`` (an attempt counted) and ``<time> -<key>`` (that attempt taken back); a key is a keyed
hash of a user name, an address (``a.``) or an address's logins (``s.``), never the name.
A line is one ``write`` to a file opened ``O_APPEND`` under a shared ``flock``, so lines of
several processes never interleave. Each process keeps what it read in
memory and, on each look, ``stat``s the journal and reads only the bytes added since (a new
inode: the journal was compacted, read from its start). Each time a journal grows by
:data:`MAX_JOURNAL` bytes, the writer rewrites it under an exclusive ``flock`` with only the
lines still alive (revocations until their ``exp``, failures for ``max_failures.window``; at
most the newest :data:`MAX_REVOKED` or :data:`MAX_KEYS` lines) and renames it over the old
one. A journal is so at most those live lines plus :data:`MAX_JOURNAL` bytes.

The hot path (:meth:`Store.revoked`, on every request that carries a valid cookie or token)
is a ``stat`` and a look in a dict; reading new lines happens there only after a logout.

**Redis** (with ``cache.redis``): a revocation is also a key ``<prefix>auth:revoked:<id>``
(expiring with the session) and a message on ``<prefix>auth:revoked``, which every process
subscribes to and adds to the same dict; a process that starts later (or reconnects) reads the
keys. At each (re)connection a process also writes back every live revocation it knows that
Redis lacks (``SET NX``, in batches of :data:`HEAL_BATCH`, published), so a logout made while
Redis was unreachable, or keys lost by a Redis restart, reach the other machines once it is
back. Attempts are also sorted sets ``<prefix>auth:fail:<key>`` (expiring after the window),
reserved there while Redis answers (every machine's), else in the journal. Redis is
optional: when it fails, the files still work; the failure is logged once (the URL as
``display_url`` shows it), Redis is skipped for ``cache.redis_retry`` seconds, and the next
success is logged too, as the cache's Redis tier does.

Bounds: at most :data:`MAX_REVOKED` revocations and :data:`MAX_KEYS` failure keys in memory,
at most :data:`MAX_READ` bytes read per look, every Redis call within ``cache.redis_timeout``.
A live revocation is never dropped to keep the bound: when there are more, the store **fails
closed**: it records a *not-before* time (a line ``<until> nb.<time>`` in the journal and in
Redis, shared like a revocation; a journal compacted with too many live lines gets one in
their place): every session and token made before it is refused until ``until`` (when every
value made before it has expired: ``horizon``, the gate's longest lifetime), everyone logs
in again, and the revocations it covers (issued before it) are forgotten. A process that
reads a not-before adopts that very one and drops what it covers; it makes one of its own
only when its set is still too full once a whole read is done (never a later cutoff for
lines another process already covered). It is logged once per not-before. Failure keys
beyond the bound: the key that failed least recently goes first.
"""

from __future__ import annotations

import asyncio
import contextlib
import fcntl
import logging
import math
import os
import secrets
import shutil
import stat
import tempfile
import threading
import time
from collections import deque
from collections.abc import Callable, Iterator, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from iiif_shim.base import files
from iiif_shim.base.redaction import display_url
from iiif_shim.cache import redis as redis_tier
from iiif_shim.cache.journal import RUN_DIR_ENV
from iiif_shim.cache.settings import CacheSettings

log = logging.getLogger("iiif_shim")

REVOKED = "revoked"
FAILURES = "failures"
LOCK = "lock"
MAX_JOURNAL = 1024 * 1024  # bytes of a journal before it is compacted
MAX_READ = 4 * 1024 * 1024  # bytes read from a journal per look
MAX_REVOKED = 200_000  # revocations kept in memory
MAX_KEYS = 100_000  # user names and addresses whose failures are counted in memory
MAX_PER_KEY = 1000  # failures kept per key (no limit is higher in practice)
MAX_ID = 64  # characters of a revoked id
MAX_POLLS = 16  # reads of MAX_READ bytes per look, to catch up with a journal
NOT_BEFORE = "nb."  # a revoked "id" that is a not-before time: nb.<Unix milliseconds>
SCAN_MAX = 4 * MAX_REVOKED  # revocation keys read from Redis at (re)connection
HEAL_BATCH = 500  # revocations written back to Redis per round trip at (re)connection
POOL_SIZE = 16  # connections of one process's store to Redis (logins and logouts only)
_ID_CHARS = frozenset("ABCDEFGHIJKLMNOPQRSTUVWXYZabcdefghijklmnopqrstuvwxyz0123456789-_.")


def _now_ms() -> int:
    """A not-before made now: after every value issued so far (``t`` is in milliseconds)."""
    return int(time.time() * 1000) + 1


def _valid_id(ident: str) -> bool:
    return 0 < len(ident) <= MAX_ID and _ID_CHARS.issuperset(ident)


def _is_nb(ident: str) -> bool:
    return ident.startswith(NOT_BEFORE) and ident[len(NOT_BEFORE) :].isdigit()


def _parse_revocation(line: str) -> tuple[str, int, int] | None:
    """``<exp> <id> [<issued>]`` (a journal line, a Redis message): (id, exp, issued); an old
    line without ``issued`` counts as issued at 0 (covered by any not-before)."""
    exp, _, rest = line.partition(" ")
    ident, _, issued = rest.partition(" ")
    if not exp.isdigit() or not _valid_id(ident) or not (issued.isdigit() or not issued):
        return None
    return ident, int(exp), int(issued or 0)


def state_folder(configured: Path | None, run_dir: Path | None) -> tuple[Path, bool]:
    """The folder of the journals and whether it is a private temporary one (see the module
    docstring for the order)."""
    if configured is not None:
        return configured, False
    run = run_dir or (Path(os.environ[RUN_DIR_ENV]) if os.environ.get(RUN_DIR_ENV) else None)
    if run is not None:
        return run / "auth", False
    return Path(tempfile.mkdtemp(prefix="iiif-shim-auth-")), True


class Journal:
    """One append-only journal of lines, read incrementally, compacted when large."""

    def __init__(
        self,
        folder: Path,
        name: str,
        max_lines: int,
        overflow: Callable[[list[str]], list[str]] | None = None,
    ) -> None:
        self.path = folder / name
        self.max_lines = max_lines
        # what a compaction keeps of more than max_lines live lines (default: the newest)
        self.overflow = overflow or (lambda lines: lines[-max_lines:])
        self._lock_path = folder / LOCK
        self._ino = -1
        self._offset = 0
        self.behind = False  # the last poll left bytes unread (more than MAX_READ)

    @contextlib.contextmanager
    def _locked(self, how: int) -> Iterator[None]:
        fd = os.open(self._lock_path, os.O_RDWR | os.O_CREAT | os.O_NOFOLLOW | os.O_CLOEXEC, 0o600)
        try:
            fcntl.flock(fd, how)
            yield
        finally:
            os.close(fd)  # closing releases the lock

    def poll(self) -> list[str]:
        """The complete lines added since the last look (all of them after a compaction)."""
        try:
            info = os.stat(self.path)
        except FileNotFoundError:
            return []
        if info.st_ino != self._ino:
            self._ino, self._offset = info.st_ino, 0
        elif info.st_size < self._offset:  # shortened by hand: read it all again
            self._offset = 0
        self.behind = False
        if info.st_size <= self._offset or not stat.S_ISREG(info.st_mode):
            return []
        try:
            fd = os.open(self.path, files.READ)
        except OSError:
            return []
        try:
            if os.fstat(fd).st_ino != self._ino:  # replaced between stat and open
                return []
            data = os.pread(fd, min(info.st_size - self._offset, MAX_READ), self._offset)
        finally:
            os.close(fd)
        end = data.rfind(b"\n") + 1
        self._offset += end
        self.behind = end > 0 and self._offset < info.st_size
        return data[:end].decode("ascii", "replace").splitlines()

    def append(self, line: str, alive: Callable[[str], bool]) -> None:
        """Add ``line`` (blocking: call it in a thread); compact once the journal is large,
        keeping the lines ``alive`` says to keep."""
        data = (line + "\n").encode("ascii")
        with self._locked(fcntl.LOCK_SH):
            size = self._write(data)
        self._compact_past(size, len(data), alive)

    def append_checked(
        self, check: Callable[[], float | None], lines: Sequence[str], alive: Callable[[str], bool]
    ) -> float | None:
        """Under the exclusive lock (no other process appends meanwhile): ``check()``, and
        when it says ``None``, add ``lines``; what ``check`` said (blocking: in a thread)."""
        data = "".join(line + "\n" for line in lines).encode("ascii")
        with self._locked(fcntl.LOCK_EX):
            found = check()
            if found is not None:
                return found
            size = self._write(data)
        self._compact_past(size, len(data), alive)
        return None

    def _write(self, data: bytes) -> int:
        """Append ``data`` in one write (the caller holds the lock); the journal's size."""
        fd = os.open(self.path, files.APPEND, 0o600)
        try:
            os.write(fd, data)
            return os.fstat(fd).st_size
        finally:
            os.close(fd)

    def _compact_past(self, size: int, added: int, alive: Callable[[str], bool]) -> None:
        """Compact when the last ``added`` bytes took the journal past a multiple of
        :data:`MAX_JOURNAL` bytes."""
        if size // MAX_JOURNAL != (size - added) // MAX_JOURNAL:
            self.compact(alive)

    def compact(self, alive: Callable[[str], bool]) -> None:
        with self._locked(fcntl.LOCK_EX):
            try:
                fd = os.open(self.path, files.READ)
            except FileNotFoundError:
                return
            try:
                chunks = []
                while chunk := os.read(fd, 1024 * 1024):
                    chunks.append(chunk)
            finally:
                os.close(fd)
            lines = b"".join(chunks).decode("ascii", "replace").splitlines()
            kept = [line for line in lines if alive(line)]
            if len(kept) > self.max_lines:
                kept = self.overflow(kept)
            temporary = self.path.with_name(f".{self.path.name}.{secrets.token_hex(4)}")
            out = os.open(temporary, files.NEW, 0o600)
            try:
                os.write(out, "".join(x + "\n" for x in kept).encode("ascii"))
            finally:
                os.close(out)
            os.replace(temporary, self.path)


class _Redis:
    """The Redis side of the store: keys, the revocation channel, attempt sets."""

    def __init__(
        self,
        cache: CacheSettings,
        on_revoked: Callable[[str, int, int], None],
        on_settled: Callable[[], None],
        on_overflow: Callable[[], None],
        known: Callable[[], list[tuple[str, int, int]]],
    ) -> None:
        assert cache.redis is not None
        self._on_overflow = on_overflow
        self._on_settled = on_settled
        self._known = known
        self.cache = cache
        self.url = cache.redis
        self.prefix = f"{cache.redis_prefix}auth:"
        self.channel = f"{self.prefix}revoked"
        self._on_revoked = on_revoked
        self._client: Any = None
        self._listener: asyncio.Task[None] | None = None
        self._skip_until = 0.0
        self._down = False
        self.subscribed = asyncio.Event()

    async def start(self) -> bool:
        try:
            self._client = redis_tier.connect(self.cache, POOL_SIZE)
        except ImportError:  # an optional extra
            log.warning(
                "auth: cache.redis is set but the redis package is not installed; logouts and "
                "failed logins are shared by this machine's processes only"
            )
            return False
        self._listener = asyncio.create_task(self._listen(), name="auth-revocations")
        return True

    async def close(self) -> None:
        if self._listener is not None:
            # cancelled again until it ends: redis-py may swallow a cancellation that lands
            # inside a pipeline's execute (seen while writing revocations back)
            listener, self._listener = self._listener, None
            deadline = time.monotonic() + max(5.0, self.cache.redis_timeout * 4)
            while not listener.done() and time.monotonic() < deadline:
                listener.cancel()
                await asyncio.wait({listener}, timeout=0.5)
            if listener.done() and not listener.cancelled():
                listener.exception()  # retrieved: an error there was logged already
        if self._client is not None:
            await self._client.aclose()
            await self._client.connection_pool.disconnect()  # a pool given is not closed
            self._client = None

    def _failed(self, operation: str, exc: BaseException) -> None:
        self._skip_until = time.monotonic() + self.cache.redis_retry
        if not self._down:
            self._down = True
            log.warning(
                "auth: Redis at %s failed (%s: %s); logouts and failed logins go without it "
                "(this machine's processes still share them), trying again every %gs",
                display_url(self.url),
                operation,
                type(exc).__name__,
                self.cache.redis_retry,
            )

    def _answered(self) -> None:
        if self._down:
            self._down = False
            log.warning("auth: Redis at %s answers again", display_url(self.url))

    async def _call(self, operation: str, call: Callable[[], Any]) -> Any:
        """The result of ``call``; ``None`` while Redis is skipped or when it fails."""
        import redis

        if self._client is None or time.monotonic() < self._skip_until:
            return None
        try:
            async with asyncio.timeout(self.cache.redis_timeout * 2):
                result = await call()
        except (OSError, TimeoutError, redis.RedisError) as exc:
            self._failed(operation, exc)
            return None
        self._answered()
        return result

    async def revoke(self, ident: str, exp: int, issued: int) -> None:
        ttl = max(1, math.ceil(exp - time.time()))

        async def call() -> Any:
            async with self._client.pipeline(transaction=False) as pipe:
                pipe.set(f"{self.prefix}revoked:{ident}", f"{exp} {issued}", ex=ttl)
                pipe.publish(self.channel, f"{exp} {ident} {issued}")
                return await pipe.execute()

        await self._call("revoke", call)

    async def _heal(self) -> None:
        """Write what this process knows (its live revocations and not-before) to Redis, in
        batches: the keys that were missing (a logout made while Redis was unreachable, keys
        lost by a Redis restart) are set and published; those there already are left."""
        entries = self._known()
        for start in range(0, len(entries), HEAL_BATCH):
            batch = entries[start : start + HEAL_BATCH]
            now = time.time()
            async with self._client.pipeline(transaction=False) as pipe:
                for ident, exp, issued in batch:
                    ttl = max(1, math.ceil(exp - now))
                    pipe.set(f"{self.prefix}revoked:{ident}", f"{exp} {issued}", ex=ttl, nx=True)
                written = await pipe.execute()
            missing = [entry for entry, done in zip(batch, written, strict=True) if done]
            if missing:
                async with self._client.pipeline(transaction=False) as pipe:
                    for ident, exp, issued in missing:
                        pipe.publish(self.channel, f"{exp} {ident} {issued}")
                    await pipe.execute()
                log.info("auth: %d logouts written to Redis again", len(missing))

    async def reserve(
        self, keys: Sequence[tuple[str, int]], when: float, member: str, window: float
    ) -> list[list[float]] | None:
        """Count one attempt (``member``, at ``when``) under each key in one transaction
        (atomic on the server: two machines never both see room for the last one); when a key
        is then over its limit, take it back. ``[]`` when it was counted; else, for each key,
        the times of its other attempts within the window (the newest ``limit``); ``None``
        when Redis did not answer."""
        step = 6

        async def call() -> Any:
            async with self._client.pipeline(transaction=True) as pipe:
                for key, limit in keys:
                    name = f"{self.prefix}fail:{key}"
                    pipe.zremrangebyscore(name, "-inf", when - window)
                    pipe.zadd(name, {member: when})
                    pipe.zremrangebyrank(name, 0, -MAX_PER_KEY - 1)
                    pipe.expire(name, math.ceil(window) + 1)
                    pipe.zrange(name, -(limit + 1), -1, withscores=True)
                    pipe.zcard(name)
                return await pipe.execute()

        found = await self._call("reserve", call)
        if found is None:
            return None
        if all(found[i * step + 5] <= limit for i, (_, limit) in enumerate(keys)):
            return []
        await self.release(keys, member)
        mine = member.encode()
        out = []
        for i, (_, limit) in enumerate(keys):
            entries = found[i * step + 4]
            out.append([float(score) for m, score in entries if m not in (mine, member)][-limit:])
        return out

    async def release(self, keys: Sequence[tuple[str, int]], member: str) -> None:
        async def call() -> Any:
            async with self._client.pipeline(transaction=False) as pipe:
                for key, _ in keys:
                    pipe.zrem(f"{self.prefix}fail:{key}", member)
                return await pipe.execute()

        await self._call("release", call)

    async def _listen(self) -> None:
        """Follow the revocation channel; at each (re)connection, read the keys too."""
        while True:
            try:
                client = redis_tier.subscriber(self.cache)
                try:
                    pubsub = client.pubsub(ignore_subscribe_messages=True)
                    async with asyncio.timeout(self.cache.redis_timeout * 2):
                        await pubsub.subscribe(self.channel)
                    await self._load_keys()
                    self._skip_until = 0.0
                    async with asyncio.timeout(max(60.0, self.cache.redis_timeout * 10)):
                        await self._heal()
                    self.subscribed.set()
                    self._answered()
                    while True:
                        message = await pubsub.get_message(timeout=5.0)
                        if message is not None and message.get("type") == "message":
                            self._take(message.get("data"))
                finally:
                    self.subscribed.clear()
                    await client.aclose()
            except asyncio.CancelledError:
                raise
            except Exception as exc:
                self._failed("subscribe", exc)
                await asyncio.sleep(self.cache.redis_retry)

    def _take(self, data: Any, *, settle: bool = True) -> None:
        """A revocation as Redis gives it: ``<exp> <id> [<issued>]``."""
        text = data.decode("ascii", "replace") if isinstance(data, bytes) else str(data)
        found = _parse_revocation(text)
        if found is not None:
            self._on_revoked(*found)
            if settle:
                self._on_settled()

    async def _load_keys(self) -> None:
        """Read the revocation keys (a late starter, a reconnection), in batches."""
        assert self._client is not None
        batch: list[Any] = []
        seen = 0

        async def take() -> None:
            values = await self._client.mget(batch)
            for name, value in zip(batch, values, strict=True):
                key = name.decode() if isinstance(name, bytes) else str(name)
                if isinstance(value, bytes):
                    exp, _, issued = value.decode("ascii", "replace").partition(" ")
                    ident = key.rpartition(":")[2]
                    self._take(f"{exp} {ident} {issued or 0}", settle=False)
            batch.clear()

        async with asyncio.timeout(max(60.0, self.cache.redis_timeout * 10)):
            async for name in self._client.scan_iter(f"{self.prefix}revoked:*", count=1000):
                batch.append(name)
                seen += 1
                if len(batch) >= 500:
                    await take()
                if seen >= SCAN_MAX:  # more than can be read: fail closed
                    self._on_overflow()
                    break
            if batch:
                await take()
        self._on_settled()  # a not-before read drops what it covers before the count


class Store:
    """Revocations and failure counts (see the module docstring)."""

    def __init__(self, folder: Path, *, temporary: bool = False) -> None:
        self.folder = folder
        self._temporary = temporary
        folder.mkdir(mode=0o700, parents=True, exist_ok=True)
        self._revocations = Journal(folder, REVOKED, MAX_REVOKED, self._squash)
        self._failure_journal = Journal(folder, FAILURES, MAX_KEYS)
        self._revoked: dict[str, tuple[int, int]] = {}  # id: (exp, issued)
        self.not_before = 0  # values issued before it are refused (a full revocation set)...
        self._not_before_until = 0  # ...until then (when the last of them had expired)
        self._closed_here: tuple[int, int] | None = None  # a not-before to share (revoke)
        self.horizon = 30 * 86400  # seconds a login or token lives at most (the gate sets it)
        self._failures: dict[str, deque[float]] = {}
        self._failures_lock = threading.Lock()  # failures are read and counted in threads
        self._window = 600.0
        self._redis: _Redis | None = None
        self._next_sweep = 0.0

    @classmethod
    async def open(
        cls,
        state_dir: Path | None,
        cache: CacheSettings | None,
        run_dir: Path | None = None,
        *,
        window: float = 600.0,
    ) -> Store:
        folder, temporary = state_folder(state_dir, run_dir)
        store = await asyncio.to_thread(cls, folder, temporary=temporary)
        store._window = window
        await asyncio.to_thread(store._poll_revoked)
        await asyncio.to_thread(store._poll_failures)
        if cache is not None and cache.redis is not None:
            shared = _Redis(
                cache, store._add_revoked, store._settle, store._overflowed, store._known
            )
            if await shared.start():
                store._redis = shared
        return store

    async def close(self) -> None:
        if self._redis is not None:
            await self._redis.close()
            self._redis = None
        if self._temporary:
            await asyncio.to_thread(shutil.rmtree, self.folder, True)

    @property
    def redis(self) -> _Redis | None:
        return self._redis

    # --- revocations ---------------------------------------------------------------------

    def _add_revoked(self, ident: str, exp: int, issued: int = 0) -> None:
        """Remember a revocation (or adopt a not-before) read or made; a revocation already
        covered by a not-before is not kept. The bound is checked by :meth:`_settle`, once a
        whole batch is read (a not-before later in it may cover the lines before it)."""
        if ident.startswith(NOT_BEFORE):
            when = ident[len(NOT_BEFORE) :]
            if when.isdigit():
                self._close(int(when), exp)
            return
        if self._before_not_before(issued):
            return
        if exp > self._revoked.get(ident, (0, 0))[0]:
            self._revoked[ident] = (exp, issued)

    def _close(self, issued: int, until: int) -> None:
        """Refuse every value issued before ``issued`` (Unix milliseconds) until ``until``
        (seconds), this process's not-before or one read from another: the same one
        everywhere, never a later one made while reading it. The revocations it covers
        (their value was issued before it) are dropped."""
        if until <= time.time():
            return
        if issued > self.not_before:
            log.warning(
                "auth: more than %d logouts are remembered at once: every login and token "
                "made before %s is refused from now on, and everyone logs in again",
                MAX_REVOKED,
                time.strftime("%Y-%m-%d %H:%M:%S UTC", time.gmtime(issued / 1000)),
            )
        self.not_before = max(self.not_before, issued)
        self._not_before_until = max(self._not_before_until, until)
        edge = self.not_before
        self._revoked = {k: v for k, v in self._revoked.items() if v[1] >= edge}

    def _squash(self, lines: list[str]) -> list[str]:
        """A compaction of more than :data:`MAX_REVOKED` live revocations (a thread, under
        the journal's lock): the lines a not-before among them covers are dropped; when
        still too many, one new not-before line takes their place, never a live revocation
        dropped. It lasts until every value made before it has expired."""
        parsed = [(line, _parse_revocation(line)) for line in lines]
        nbs = [(int(f[0][len(NOT_BEFORE) :]), f[1]) for _, f in parsed if f and _is_nb(f[0])]
        edge = max((when for when, _ in nbs), default=0)
        kept = [line for line, f in parsed if f is not None and not _is_nb(f[0]) and f[2] >= edge]
        if nbs:
            last = max(until for when, until in nbs if when == edge)
            kept.insert(0, f"{last} {NOT_BEFORE}{edge}")
        if len(kept) <= MAX_REVOKED:
            return kept
        exps = [f[1] for _, f in parsed if f is not None]
        until = max(max(exps, default=0), math.ceil(time.time()) + self.horizon)
        return [f"{until} {NOT_BEFORE}{_now_ms()}"]

    def _overflowed(self) -> None:
        """More revocation keys in Redis than are read: refuse every value made before
        now."""
        self._close(_now_ms(), math.ceil(time.time()) + self.horizon)

    def _settle(self) -> None:
        """After a batch is read (or one revocation made): when more live revocations are
        kept than :data:`MAX_REVOKED` (every not-before read so far adopted), fail closed:
        a not-before of this process, shared by its next :meth:`revoke`."""
        if len(self._revoked) <= MAX_REVOKED:
            return
        now = time.time()
        self._revoked = {k: v for k, v in self._revoked.items() if v[0] > now}
        if len(self._revoked) > MAX_REVOKED:  # fail closed: never forget a live revocation
            issued = _now_ms()
            until = max(max(v[0] for v in self._revoked.values()), math.ceil(now) + self.horizon)
            self._close(issued, until)
            self._closed_here = (issued, until)

    def _sweep(self, now: float) -> None:
        if now < self._next_sweep:
            return
        self._next_sweep = now + 60
        self._revoked = {k: v for k, v in self._revoked.items() if v[0] > now}

    def _known(self) -> list[tuple[str, int, int]]:
        """The live revocations (and not-before) this process knows, newest last."""
        now = time.time()
        found = [(k, v[0], v[1]) for k, v in self._revoked.items() if v[0] > now]
        if self._not_before_until > now:
            found.insert(0, (f"{NOT_BEFORE}{self.not_before}", self._not_before_until, 0))
        return found

    def _poll_revoked(self) -> None:
        read = False
        for _ in range(MAX_POLLS):
            for line in self._revocations.poll():
                found = _parse_revocation(line)
                if found is not None:
                    self._add_revoked(*found)
                    read = True
            if not self._revocations.behind:
                break
        if read:
            self._settle()

    def revoked(self, ident: str, issued: int = 0) -> bool:
        """Whether ``ident`` (a sid or jti of a value made at ``issued``, Unix ms) was
        revoked by any process (sync, the hot path: a ``stat`` of the journal and a dict
        lookup); also every value made before a not-before (a full set of revocations)."""
        self._poll_revoked()
        now = time.time()
        self._sweep(now)
        return self._before_not_before(issued) or self._revoked.get(ident, (0, 0))[0] > now

    def _before_not_before(self, issued: int) -> bool:
        return issued < self.not_before and time.time() < self._not_before_until

    async def revoke(self, ident: str, exp: int, issued: int = 0) -> None:
        """Revoke ``ident`` (made at ``issued``) until ``exp`` (Unix seconds) in every
        process (and machine). Nothing is written for one already refused (revoked, expired,
        or made before a not-before). When the set is full, a not-before is shared too
        (see :meth:`_sweep`)."""
        if not _valid_id(ident) or ident.startswith(NOT_BEFORE):
            raise ValueError("not an id")
        if exp <= time.time() or self.revoked(ident, issued):
            return
        self._add_revoked(ident, exp, issued)
        self._settle()
        shared: list[tuple[str, int, int]] = []
        if self._closed_here is not None:  # the set overflowed here: share the not-before
            closed, self._closed_here = self._closed_here, None
            shared.append((f"{NOT_BEFORE}{closed[0]}", closed[1], 0))
        if not self._before_not_before(issued):
            shared.append((ident, exp, issued))  # not covered by a not-before
        now = time.time()

        def alive(line: str) -> bool:
            e = line.partition(" ")[0]
            return e.isdigit() and int(e) > now

        for name, until, made in shared:
            line = f"{until} {name} {made}"
            await asyncio.to_thread(self._revocations.append, line, alive)
            if self._redis is not None:
                await self._redis.revoke(name, until, made)

    # --- failed logins -------------------------------------------------------------------

    def _poll_failures(self) -> None:
        with self._failures_lock:
            self._read_failures()

    def _read_failures(self) -> None:
        for line in self._failure_journal.poll():
            when, _, key = line.partition(" ")
            try:
                t = float(when)
            except ValueError:
                continue
            if key.startswith("-"):  # an attempt taken back (a success, a busy checker)
                times = self._failures.get(key[1:])
                if times is not None and t in times:
                    times.remove(t)
            elif key:
                self._add_failure(key, t)

    def _add_failure(self, key: str, when: float) -> None:
        times = self._failures.get(key)
        if times is None:
            if len(self._failures) >= MAX_KEYS:
                self._forget_failures(time.time())
            times = self._failures[key] = deque(maxlen=MAX_PER_KEY)
        times.append(when)

    def _forget_failures(self, now: float) -> None:
        edge = now - self._window
        self._failures = {k: t for k, t in self._failures.items() if t and t[-1] > edge}
        while len(self._failures) >= MAX_KEYS:  # the key failed least recently goes first
            oldest = min(self._failures, key=lambda k: self._failures[k][-1])
            del self._failures[oldest]

    def _recent_locked(self, keys: Sequence[tuple[str, int]], since: float) -> list[list[float]]:
        self._read_failures()
        found = []
        for key, limit in keys:
            times = sorted(t for t in self._failures.get(key, ()) if t > since)
            found.append(times[-limit:])
        return found

    async def reserve(
        self, keys: Sequence[tuple[str, int]], window: float
    ) -> tuple[float | None, Ticket | None]:
        """Count one attempt under each of ``keys`` (key, limit) **before** it is made, unless
        one of them has reached its limit within ``window``: the check and the count are one
        step (under a lock in memory, the journal's exclusive ``flock`` across processes, a
        Redis transaction across machines), so a burst of parallel attempts gets no more than
        the limit. ``(None, ticket)`` when counted (:meth:`release` takes it back);
        ``(seconds to wait, None)`` when refused."""
        now = time.time()
        self._window = window
        stamp = f"{now:.6f}"
        ticket = Ticket(tuple(keys), stamp, f"{stamp}:{secrets.token_hex(4)}")
        lines = [f"{stamp} {key}" for key, _ in keys]
        if self._redis is not None:
            found = await self._redis.reserve(keys, float(stamp), ticket.member, window)
            if found:
                return _wait(keys, found, now, window) or 1.0, None
            if found is not None:  # counted there: the journal keeps it for when Redis fails
                await asyncio.to_thread(self._append_failures, lines, window)
                return None, ticket

        def check() -> float | None:
            return _wait(keys, self._recent_locked(keys, now - window), now, window)

        def write() -> float | None:
            with self._failures_lock:
                return self._failure_journal.append_checked(check, lines, _alive_within(window))

        wait = await asyncio.to_thread(write)
        return (wait, None) if wait is not None else (None, ticket)

    async def release(self, ticket: Ticket, window: float) -> None:
        """Take back an attempt :meth:`reserve` counted."""
        lines = [f"{ticket.stamp} -{key}" for key, _ in ticket.keys]
        await asyncio.to_thread(self._append_failures, lines, window)
        if self._redis is not None:
            await self._redis.release(ticket.keys, ticket.member)

    def _append_failures(self, lines: Sequence[str], window: float) -> None:
        alive = _alive_within(window)
        with self._failures_lock:
            for line in lines:
                self._failure_journal.append(line, alive)


@dataclass(frozen=True)
class Ticket:
    """An attempt counted by :meth:`Store.reserve`: its keys and when."""

    keys: tuple[tuple[str, int], ...]
    stamp: str  # the time, as written in the journal
    member: str  # its entry in Redis's sorted sets


def _alive_within(window: float) -> Callable[[str], bool]:
    def alive(line: str) -> bool:
        try:
            return float(line.partition(" ")[0]) > time.time() - window
        except ValueError:
            return False

    return alive


def _wait(
    keys: Sequence[tuple[str, int]], found: Sequence[Sequence[float]], now: float, window: float
) -> float | None:
    """``None`` when each key has fewer than its limit of times ``found``; else the seconds
    until enough of them leave the window."""
    wait = 0.0
    for (_, limit), times in zip(keys, found, strict=True):
        if len(times) >= limit:  # the oldest of the newest `limit` has to leave
            wait = max(wait, min(times) + window - now)
    return None if wait <= 0 else max(1.0, math.ceil(wait))
