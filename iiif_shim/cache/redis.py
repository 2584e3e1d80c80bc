"""The Redis tier: rendered images and source facts shared by every process and machine, the
render lock that keeps them from all rendering the same miss, and the purge channel.

Keys (``cache.redis_prefix``, ``iiif-shim:`` by default, then the slot's source key, see
``entry.py``)::

    <prefix><source>:img:<plan key>    a rendered image (TTL cache.redis_ttl)
    <prefix><source>:facts             the source's facts (TTL cache.info_ttl)
    <prefix><source>:lock:<name>       a render lock (SET NX PX cache.redis_lock, a random token)
    <prefix>purge                      the pub/sub channel of purges (a source key, or ``*``)

Clients are made in one place, :func:`connect` and :func:`subscriber`, for this tier and
for the logins' store (``auth/store.py``). The password is ``cache.redis_password`` when
given (else the URL's). Every call has
``cache.redis_timeout``. Redis is a cache, never a dependency: a call that fails
(refused, reset, timed out, an error answer) counts in ``iiif_shim_redis_errors_total``, is
logged once (the URL as ``base/redaction.py``'s ``display_url`` shows it: never a password),
and Redis is skipped for ``cache.redis_retry`` seconds (its callers see a miss, an
unheld lock, a write not made), then tried again; the next success is logged too. Purges are the
exception: :meth:`RedisTier.purge` raises, so whoever asked for one learns that it failed.

Values are entries encoded by ``entry.py`` (checked and bound to their slot: anything else
found under a key is rejected, with the reason, and the facade counts it as a miss); no more
than the cap per entry is ever read of a value. A rejected value is removed, by a Lua script
that removes it only if the key still holds what was read (the same first bytes, or a value
that is no string: a hash or a list under a key of ours is damaged, not an outage). A lock is
released only by its holder (a Lua script compares the token), and expires by itself if the
holder dies; ``tier.made_once`` holds the dance around it. While the lock is held, a waiter
takes a rejected value for "not there yet": the holder writes over it.
"""

from __future__ import annotations

import asyncio
import hashlib
import logging
import secrets
import time
from collections.abc import Awaitable, Callable
from typing import Any, TypeVar

from iiif_shim.base.redaction import display_url
from iiif_shim.cache.entry import (
    DAMAGED,
    ENTRY_SLACK,
    OVERSIZE,
    Entry,
    Rejected,
    Slot,
    encode,
    examine,
)
from iiif_shim.cache.settings import CacheSettings
from iiif_shim.model.plan import Rendered
from iiif_shim.telemetry.metrics import Metrics

log = logging.getLogger("iiif_shim")

T = TypeVar("T")
POOL_SIZE = 64  # connections of one process to Redis
_HEX32 = "[0-9a-f]" * 32
_RELEASE = """
if redis.call('get', KEYS[1]) == ARGV[1] then return redis.call('del', KEYS[1]) end
return 0
"""
# removes a rejected value: a value that is no string, or one whose first ARGV[2] + 1 bytes
# still have the SHA-1 ARGV[1] (what was read), never one written since
_DROP = """
local kind = redis.call('type', KEYS[1])['ok']
if kind == 'none' then return 0 end
if kind == 'string' then
  local now = redis.call('getrange', KEYS[1], 0, tonumber(ARGV[2]))
  if redis.sha1hex(now) ~= ARGV[1] then return 0 end
end
return redis.call('del', KEYS[1])
"""
_INLINE = 256 * 1024  # entries larger than this are encoded and checked in a thread


class _WrongType:
    """A value that is no string (Redis answered WRONGTYPE): damaged, not an outage."""


_WRONG_TYPE = _WrongType()
Read = bytes | _WrongType | None  # a value as read: its first bytes, no string, or nothing


class RedisUnavailable(Exception):
    """Redis failed a call that must not fail quietly (a purge)."""


def _url(settings: CacheSettings) -> str:
    if settings.redis is None:  # a caller's mistake: each one connects only with it set
        raise ValueError("cache.redis is not set")
    return settings.redis


def connect(settings: CacheSettings, max_connections: int) -> Any:
    """A client of ``cache.redis`` over a pool of at most ``max_connections`` connections, each
    call within ``cache.redis_timeout`` (connections open on first use: a Redis that is down
    at start is met like one that goes down later). Raises ImportError without the optional
    ``redis`` package (check-config names it)."""
    import redis.asyncio as aioredis

    timeout = settings.redis_timeout
    pool = aioredis.BlockingConnectionPool.from_url(
        _url(settings),
        max_connections=max_connections,
        timeout=timeout,
        password=settings.redis_password,
        socket_timeout=timeout,
        socket_connect_timeout=timeout,
    )
    return aioredis.Redis(connection_pool=pool)


def subscriber(settings: CacheSettings) -> Any:
    """A client of ``cache.redis`` of its own, for pub/sub: it blocks on reads, so only its
    connecting is bounded by ``cache.redis_timeout``."""
    import redis.asyncio as aioredis

    return aioredis.Redis.from_url(
        _url(settings),
        password=settings.redis_password,
        socket_connect_timeout=settings.redis_timeout,
    )


class RedisTier:
    """Redis as a tier of the facade (and its lock, and the purge channel)."""

    name = "redis"

    def __init__(self, settings: CacheSettings, metrics: Metrics | None = None) -> None:
        assert settings.redis is not None
        self.settings = settings
        self.url = settings.redis
        self.prefix = settings.redis_prefix
        self.channel = f"{self.prefix}purge"
        self._metrics = metrics
        self._client: Any = None
        self._release: Any = None
        self._drop: Any = None
        self._skip_until = 0.0
        self._down = False

    async def start(self) -> None:
        """Make the connection pool (connections open on first use: a Redis that is down at
        start is skipped like one that goes down later)."""
        self._client = connect(self.settings, POOL_SIZE)
        self._release = self._client.register_script(_RELEASE)
        self._drop = self._client.register_script(_DROP)

    async def close(self) -> None:
        if self._client is not None:
            await self._client.aclose()
            self._client = None

    def subscriber(self) -> Any:
        """A client of its own for pub/sub (:func:`subscriber`)."""
        return subscriber(self.settings)

    # --- availability ----------------------------------------------------------------------

    @property
    def up(self) -> bool:
        """Whether Redis is being used now (False while it is skipped after a failure)."""
        return time.monotonic() >= self._skip_until

    def failed(self, operation: str, exc: BaseException) -> None:
        self._skip_until = time.monotonic() + self.settings.redis_retry
        if self._metrics is not None:
            self._metrics.redis_error(operation)
        if not self._down:
            self._down = True
            log.warning(
                "Redis at %s failed (%s: %s); the cache goes without it, trying again every %gs",
                display_url(self.url),
                operation,
                _describe(exc),
                self.settings.redis_retry,
            )

    def _answered(self) -> None:
        if self._down:
            self._down = False
            log.warning("Redis at %s answers again; the cache uses it", display_url(self.url))

    async def _call(self, operation: str, call: Callable[[], Awaitable[T]], default: T) -> T:
        if not self.up or self._client is None:
            return default
        try:
            async with asyncio.timeout(self.settings.redis_timeout * 2):
                result = await call()
        except (OSError, TimeoutError, _redis_error()) as exc:
            self.failed(operation, exc)
            return default
        self._answered()
        return result

    # --- keys ------------------------------------------------------------------------------

    def key(self, slot: Slot) -> str:
        name = "facts" if slot.facts else f"img:{slot.name}"
        return f"{self.prefix}{slot.source}:{name}"

    def lock_key(self, slot: Slot) -> str:
        return f"{self.prefix}{slot.source}:lock:{slot.name}"

    # --- values ----------------------------------------------------------------------------

    async def get(self, slot: Slot) -> Entry | Rejected | None:
        """The entry; ``None`` when there is none; :class:`Rejected` when the value is not an
        intact entry of this slot, or larger than this shim ever stores (whoever else writes
        to the server, no more than the cap is read); a rejected value is removed."""
        key, limit = self.key(slot), self._limit
        operation = "get_facts" if slot.facts else "get"

        async def read() -> Read:
            try:
                data: bytes = await self._client.getrange(key, 0, limit)
            except _redis_error() as exc:
                if _wrong_type(exc):
                    return _WRONG_TYPE
                raise
            return data

        data: Read = await self._call(operation, read, None)
        found = await self._decoded(slot, data)
        if isinstance(found, Rejected):
            await self._remove(slot, data)
        return found

    @property
    def _limit(self) -> int:
        """The last byte offset ever read of a value (the cap per entry, and its header)."""
        return self.settings.redis_max_bytes + ENTRY_SLACK

    async def _remove(self, slot: Slot, data: Read) -> None:
        """Remove the slot's value if it is still ``data`` (as read: its first bytes)."""
        if isinstance(data, bytes):
            sha1 = hashlib.sha1  # a fingerprint, not security
            if len(data) > _INLINE:
                digest = await asyncio.to_thread(lambda: sha1(data).hexdigest())
            else:
                digest = sha1(data).hexdigest()
        else:
            digest = ""
        key, limit = self.key(slot), self._limit
        await self._call("drop", lambda: self._drop(keys=[key], args=[digest, limit]), 0)

    async def put(self, slot: Slot, value: Entry, ttl: float) -> None:
        """Store ``value`` for ``ttl`` seconds (0: ``cache.redis_ttl``), unless it is larger
        than the cap per entry."""
        ttl = ttl or self.settings.redis_ttl
        if isinstance(value, Rendered) and len(value.body) > self.settings.redis_max_bytes:
            return
        expires = time.time() + ttl
        if isinstance(value, Rendered) and len(value.body) > _INLINE:  # its checksum off the loop
            data = await asyncio.to_thread(encode, slot, value, expires)
        else:
            data = encode(slot, value, expires)
        if len(data) > self.settings.redis_max_bytes:
            return
        ms = max(1, int(ttl * 1000))
        operation = "set_facts" if slot.facts else "set"
        await self._call(operation, lambda: self._client.set(self.key(slot), data, px=ms), False)

    async def delete(self, slot: Slot) -> None:
        operation = "delete_facts" if slot.facts else "delete"
        await self._call(operation, lambda: self._client.unlink(self.key(slot)), 0)

    async def _decoded(self, slot: Slot, data: Read) -> Entry | Rejected | None:
        if isinstance(data, _WrongType):
            return Rejected(DAMAGED)
        if not data:  # (GETRANGE answers an empty string for a missing key)
            return None
        if len(data) > self._limit:
            return Rejected(OVERSIZE)
        if len(data) > _INLINE:  # a large entry's checksum is not computed on the loop
            return await asyncio.to_thread(examine, slot, data, time.time())
        return examine(slot, data, time.time())

    # --- the render lock -------------------------------------------------------------------

    async def acquire(self, slot: Slot) -> str | None:
        """The token of the slot's lock if this process now holds it; None if another holds it,
        or Redis is skipped (then :attr:`up` is False)."""
        token = secrets.token_hex(16)
        ms = max(1, int(self.settings.redis_lock * 1000))
        lock = self.lock_key(slot)
        got = await self._call("lock", lambda: self._client.set(lock, token, nx=True, px=ms), None)
        return token if got else None

    async def release(self, slot: Slot, token: str) -> None:
        lock = self.lock_key(slot)
        await self._call("unlock", lambda: self._release(keys=[lock], args=[token]), 0)

    async def wait(self, slot: Slot, seconds: float) -> Entry | None:
        """The slot's entry once the lock's holder stored it; None when the lock went without
        it (the holder failed), after ``seconds``, or when Redis fails meanwhile. What is there
        while the lock is held and is not an entry of this slot (a damaged value, one that is
        no string) is taken as not there yet: the holder writes over it."""
        deadline = time.monotonic() + seconds
        pause = 0.01
        key, lock, limit = self.key(slot), self.lock_key(slot), self._limit

        async def look() -> tuple[Read, bytes | None]:  # the value (no more than the cap), lock
            async with self._client.pipeline(transaction=False) as pipe:
                pipe.getrange(key, 0, limit)
                pipe.get(lock)
                value, holder = await pipe.execute(raise_on_error=False)
            if isinstance(value, Exception):
                if not _wrong_type(value):
                    raise value
                value = _WRONG_TYPE
            if isinstance(holder, Exception):
                raise holder
            return value, holder

        nothing: tuple[Read, bytes | None] = (None, None)
        while time.monotonic() < deadline and self.up:
            data, holder = await self._call("wait", look, nothing)
            if data:
                found = await self._decoded(slot, data)
                if not isinstance(found, Rejected):
                    return found  # an entry (None: one past its expiry, as good as none)
            if holder is None:
                return None
            await asyncio.sleep(min(pause, max(0.0, deadline - time.monotonic())))
            pause = min(pause * 1.5, 0.1)
        return None

    # --- purge -----------------------------------------------------------------------------

    async def purge(self, source: str | None) -> int:
        """Delete every key of one source (``None``: of every source); how many there were.
        Raises :class:`RedisUnavailable` if Redis fails (even while it is being skipped)."""
        client = self._client
        if client is None:
            raise RedisUnavailable("not started")
        pattern = _glob_escape(self.prefix) + (source if source else _HEX32) + ":*"
        removed = 0
        try:
            cursor = 0
            while True:
                async with asyncio.timeout(self.settings.redis_timeout * 4):
                    cursor, keys = await client.scan(cursor, match=pattern, count=1000)
                    if keys:
                        removed += int(await client.unlink(*keys))
                if cursor == 0:
                    break
        except (OSError, TimeoutError, _redis_error()) as exc:
            self.failed("purge", exc)
            raise RedisUnavailable(_describe(exc)) from None
        self._answered()
        return removed

    async def publish(self, message: str) -> int:
        """Tell every subscribed process; how many received it. Raises RedisUnavailable."""
        try:
            async with asyncio.timeout(self.settings.redis_timeout * 2):
                receivers = await self._client.publish(self.channel, message)
        except (OSError, TimeoutError, _redis_error()) as exc:
            self.failed("publish", exc)
            raise RedisUnavailable(_describe(exc)) from None
        return int(receivers)


def _redis_error() -> type[Exception]:
    import redis

    error: type[Exception] = redis.RedisError
    return error


def _wrong_type(exc: BaseException) -> bool:
    """Whether Redis refused a command for the type of the value under its key."""
    import redis

    return isinstance(exc, redis.ResponseError) and str(exc).startswith("WRONGTYPE")


def _describe(exc: BaseException) -> str:
    text = str(exc) or type(exc).__name__
    return text.splitlines()[0][:200]


def _glob_escape(text: str) -> str:
    return "".join(f"\\{c}" if c in "*?[]\\" else c for c in text)
