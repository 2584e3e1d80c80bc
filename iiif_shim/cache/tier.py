"""What a cache tier is, and the one lock that keeps processes from all making the same miss.

A :class:`Tier` gets, puts, deletes and purges entries (rendered images and source facts
alike) by :class:`~iiif_shim.cache.entry.Slot`: memory (``memory.py``), disk (``disk.py``) and
Redis (``redis.py``) each implement it, and the facade (``facade.py``) walks them in that order.
A tier that finds something under a slot that is not its value says so
(:class:`~iiif_shim.cache.entry.Rejected`, with the reason); the facade counts it as a miss.

A tier removes what it rejects itself (the disk and Redis tiers remove a name only while it
still holds what was read, so an entry another process has just written stays); the facade
removes a value its caller cannot use from the tier that held it.

A :class:`LockingTier` (Redis) also holds a short lock per slot, shared by every process and
machine. :func:`made_once` is the one place that uses it, for images and facts alike: the first
process to miss takes the lock and makes the value; the others wait for it to appear in the
tier (what is there meanwhile and is not a value is not waited on: the holder writes over it);
when the lock goes without a value (its holder failed or was slow), one waiter takes it over
and makes the value, the others go on waiting for that one. After ``hold`` seconds, or when
the tier fails, a waiter makes the value itself.
"""

from __future__ import annotations

import asyncio
from collections.abc import Awaitable, Callable
from dataclasses import dataclass
from typing import Protocol, TypeVar

from iiif_shim.cache.entry import Entry, Rejected, Slot

E = TypeVar("E", bound=Entry)


class Tier(Protocol):
    name: str  # memory, disk, redis

    async def get(self, slot: Slot) -> Entry | Rejected | None:
        """The slot's entry; None when there is none (missing, expired, or the tier failing);
        :class:`Rejected` when what is there is not an entry of this slot (then removed)."""
        ...

    async def put(self, slot: Slot, value: Entry, ttl: float) -> None:
        """Keep ``value`` for ``ttl`` seconds (0: as long as the tier keeps anything); a tier
        failing or full keeps nothing, quietly."""
        ...

    async def delete(self, slot: Slot) -> None:
        """Remove the slot's entry (quietly, like a put)."""
        ...

    async def purge(self, source: str | None) -> int:
        """Remove the entries of one source (``None``: of all); how many there were."""
        ...


class LockingTier(Tier, Protocol):
    @property
    def up(self) -> bool:
        """Whether the tier is used now (not while it is skipped after a failure)."""
        ...

    async def acquire(self, slot: Slot) -> str | None:
        """A token if this process now holds the slot's lock, else None."""
        ...

    async def release(self, slot: Slot, token: str) -> None: ...

    async def wait(self, slot: Slot, seconds: float) -> Entry | None:
        """The slot's entry once the lock's holder stored it; None when the lock went without
        it, after ``seconds``, or when the tier fails meanwhile (what is stored meanwhile and is
        not an entry of this slot is not waited on)."""
        ...


@dataclass(frozen=True)
class Stored:
    """What another process stored for the slot while this one waited (for the caller to
    check, like anything read from a tier)."""

    entry: Entry


async def made_once(
    tier: LockingTier,
    slot: Slot,
    make: Callable[[], Awaitable[E]],
    hold: float,
    keep: Callable[[E], Awaitable[None]],
) -> E | Stored:
    """``make()``'s value made here, or what another process stored in ``tier`` for ``slot``:
    made by one process of all that miss ``slot`` at once. Made under the lock, it is handed
    to ``keep`` before the lock goes, so those waiting find it."""
    token = await tier.acquire(slot)
    loop = asyncio.get_running_loop()
    until = loop.time() + hold
    while token is None and tier.up and loop.time() < until:
        found = await tier.wait(slot, until - loop.time())
        if found is not None:
            return Stored(found)
        token = await tier.acquire(slot)  # the lock went without a value: one of us takes over
    try:
        value = await make()
        if token is not None:
            await keep(value)
    finally:
        if token is not None:
            await tier.release(slot, token)
    return value
