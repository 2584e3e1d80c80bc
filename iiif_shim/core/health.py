"""Each backend's health, checked in the background, for ``GET /health/ready``.

Every ``server.health_interval`` seconds each backend is checked, all at once, each within its own
timeout: a ``files`` backend's folder must be readable; a network backend is asked for the facts
of its ``probe_id`` (an identifier routed to it) when one is set, else for its server's root
(any HTTP answer below 500 means it is up). Its circuit counts too. The verdict, like
Cantaloupe's GREEN/YELLOW/RED: ``ok``; ``degraded`` (it answers with errors, its circuit is
half-open, or it is too busy to be asked); ``down`` (unreachable, timing out, circuit open).

:func:`process_identity` says which process answers ``GET /health`` (its pid, its worker slot
and how many processes serve), since with ``server.processes`` above 1 each answer, and each
verdict, belongs to one worker.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import os
import time
from dataclasses import dataclass
from typing import Any

from iiif_shim.backends import Backend
from iiif_shim.backends.base import UpstreamBackend
from iiif_shim.backends.files import FilesBackend
from iiif_shim.base.errors import NotFound, ShimError
from iiif_shim.core.service import ImageService
from iiif_shim.model.facts import checked
from iiif_shim.process.supervisor import WorkerRole
from iiif_shim.upstream.breaker import State

log = logging.getLogger("iiif_shim")

OK, DEGRADED, DOWN = "ok", "degraded", "down"


@dataclass(frozen=True)
class Verdict:
    state: str
    reason: str | None
    checked_at: float  # epoch seconds
    seconds: float  # how long the check took


async def check(service: ImageService, backend: Backend) -> tuple[str, str | None]:
    """One backend's state now, and why when it is not ``ok``."""
    if isinstance(backend, FilesBackend):
        readable = await backend.run_blocking(backend.readable)
        return (OK, None) if readable else (DOWN, "its folder cannot be read")
    if not isinstance(backend, UpstreamBackend):
        return OK, None
    circuit = backend.upstream.breaker.state
    if circuit is State.OPEN:
        return DOWN, "its circuit is open after repeated failures"
    try:
        probe_id = backend.settings.probe_id
        if probe_id is not None:
            target = service.router.route(probe_id)
            checked(await backend.facts(target), backend.name)
        else:
            await backend.upstream.get(
                backend.root(), limit=1024, what="a health check", circuit=False
            )
    except NotFound:
        if backend.settings.probe_id is not None:
            return DEGRADED, "its probe_id is not found"
    except ShimError as exc:
        if exc.kind in ("refused", "reset", "timeout", "connect_timeout", "circuit_open"):
            return DOWN, exc.public_text()
        if exc.kind == "http_4xx" and backend.settings.probe_id is None:
            return OK, None  # the root of a server need not be a page
        return DEGRADED, exc.public_text()
    if circuit is State.HALF_OPEN:
        return DEGRADED, "its circuit is half-open"
    return OK, None


def process_identity() -> dict[str, int]:
    """This process: ``pid``, ``worker`` (its slot, 0 to processes - 1) and ``processes``."""
    role = WorkerRole.from_environment()
    return {
        "pid": os.getpid(),
        "worker": role.index if role else 0,
        "processes": role.processes if role else 1,
    }


class HealthMonitor:
    """Checks every backend of a service, now and then, and keeps the latest verdicts."""

    def __init__(self, service: ImageService, interval: float) -> None:
        self.service = service
        self.interval = interval
        self.verdicts: dict[str, Verdict] = {}
        self._task: asyncio.Task[None] | None = None

    def start(self) -> None:
        self._task = asyncio.get_running_loop().create_task(self._run())

    async def stop(self) -> None:
        if self._task is not None:
            self._task.cancel()
            with contextlib.suppress(asyncio.CancelledError):
                await self._task

    async def check_all(self) -> None:
        names = list(self.service.backends)
        results = await asyncio.gather(*(self._check(name) for name in names))
        self.verdicts = dict(zip(names, results, strict=True))

    async def _check(self, name: str) -> Verdict:
        backend = self.service.backends[name]
        started = time.perf_counter()
        timeout = getattr(backend.settings, "timeout", 10.0) + 1
        try:
            async with asyncio.timeout(timeout):
                state, reason = await check(self.service, backend)
        except TimeoutError:
            state, reason = DOWN, f"no verdict within {timeout:g}s"
        except Exception:  # a check must never take the monitor down with it
            log.exception("health check of backend %r failed", name)
            state, reason = DEGRADED, "the check itself failed"
        return Verdict(state, reason, time.time(), time.perf_counter() - started)

    async def _run(self) -> None:
        while True:
            await self.check_all()
            await asyncio.sleep(self.interval)

    def report(self) -> tuple[str, dict[str, Any]]:
        """The overall state and the JSON body of ``/health/ready``: ``ok`` when every backend
        is, ``down`` when every one is, ``degraded`` in between."""
        backends: dict[str, Any] = {}
        for name, backend in sorted(self.service.backends.items()):
            verdict = self.verdicts.get(name)
            entry: dict[str, Any] = {"type": backend.type_name}
            if verdict is None:
                entry |= {"state": DEGRADED, "reason": "not checked yet"}
            else:
                entry |= {
                    "state": verdict.state,
                    "reason": verdict.reason,
                    "checked": time.strftime("%Y-%m-%dT%H:%M:%SZ", time.gmtime(verdict.checked_at)),
                    "check_ms": round(verdict.seconds * 1000, 1),
                }
            if isinstance(backend, UpstreamBackend):
                entry["circuit"] = backend.upstream.breaker.state.name.lower()
            backends[name] = entry
        states = {b["state"] for b in backends.values()} or {OK}
        overall = states.pop() if len(states) == 1 else DEGRADED
        return overall, {"status": overall, "backends": backends}
