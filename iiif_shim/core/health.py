"""Each backend's health, checked in the background, for ``GET /health/ready``.

Every ``server.health_interval`` seconds each backend is checked, all at once, each within its own
timeout, by its own :meth:`~iiif_shim.backends.base.Backend.health`: a ``files`` backend's folder
must be readable; a network backend is asked for the facts of its ``probe_id`` (an identifier
routed to it, routed here) when one is set, else for its server's root (any HTTP answer below
500 means it is up). Its circuit counts too. The verdict, like Cantaloupe's GREEN/YELLOW/RED:
``ok``; ``degraded`` (it answers with errors, its circuit is half-open, or it is too busy to be
asked); ``down`` (unreachable, timing out, circuit open). With ``server.processes`` above 1 each
verdict belongs to one worker.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import time
from dataclasses import dataclass
from typing import Any

from iiif_shim.backends.base import Health
from iiif_shim.base.errors import ShimError
from iiif_shim.core.service import ImageService

log = logging.getLogger("iiif_shim")

_CHECK_TIMEOUT = 10.0  # seconds a backend without a client timeout gets for its check


@dataclass(frozen=True)
class Verdict:
    state: Health
    reason: str | None
    checked_at: float  # epoch seconds
    seconds: float  # how long the check took


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
        client = backend.client
        timeout = (client.settings.timeout if client is not None else _CHECK_TIMEOUT) + 1
        try:
            async with asyncio.timeout(timeout):
                probe_id = backend.settings.health_id()
                try:
                    probe = self.service.router.route(probe_id) if probe_id else None
                except ShimError:  # check-config makes sure it routes here
                    probe = None
                state, reason = await backend.health(probe)
        except TimeoutError:
            state, reason = Health.DOWN, f"no verdict within {timeout:g}s"
        except Exception:  # a check must never take the monitor down with it
            log.exception("health check of backend %r failed", name)
            state, reason = Health.DEGRADED, "the check itself failed"
        return Verdict(state, reason, time.time(), time.perf_counter() - started)

    async def _run(self) -> None:
        while True:
            await self.check_all()
            await asyncio.sleep(self.interval)

    def report(self) -> tuple[Health, dict[str, Any]]:
        """The overall state and the JSON body of ``/health/ready``: ``ok`` when every backend
        is, ``down`` when every one is, ``degraded`` in between."""
        backends: dict[str, Any] = {}
        for name, backend in sorted(self.service.backends.items()):
            verdict = self.verdicts.get(name)
            entry: dict[str, Any] = {"type": backend.type_name}
            if verdict is None:
                entry |= {"state": Health.DEGRADED.value, "reason": "not checked yet"}
            else:
                entry |= {
                    "state": verdict.state.value,
                    "reason": verdict.reason,
                    "checked": time.strftime("%Y-%m-%dT%H:%M:%SZ", time.gmtime(verdict.checked_at)),
                    "check_ms": round(verdict.seconds * 1000, 1),
                }
            if backend.client is not None:
                entry["circuit"] = backend.client.breaker.state.name.lower()
            backends[name] = entry
        states = {Health(b["state"]) for b in backends.values()} or {Health.OK}
        overall = states.pop() if len(states) == 1 else Health.DEGRADED
        return overall, {"status": overall.value, "backends": backends}
