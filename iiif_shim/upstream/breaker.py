"""A circuit breaker per backend: stop asking a server that keeps failing, probe it, resume.

Closed: every request goes through; ``failures`` consecutive failures (refused, reset, timed out,
5xx) open it. Open: requests are answered at once with 503 and ``Retry-After`` (the time left),
sparing the server and the clients' time. After ``reset`` seconds it is half-open: exactly one
request goes through as a trial; success closes the circuit, failure opens it again. A trial
that ends without a verdict (the client went away) lets the next request be the trial.
"""

from __future__ import annotations

import enum
import math
import time
from collections.abc import Callable

from iiif_shim.base.errors import CircuitOpen


class State(enum.IntEnum):
    CLOSED = 0
    HALF_OPEN = 1
    OPEN = 2


class CircuitBreaker:
    def __init__(
        self,
        who: str,
        failures: int,
        reset: float,
        clock: Callable[[], float] = time.monotonic,
    ) -> None:
        self.who = who  # e.g. "backend 'archive'", for its message
        self.threshold = failures  # 0: never opens
        self.reset = reset
        self._clock = clock
        self._failures = 0
        self._opened_at: float | None = None
        self._trial = False

    @property
    def state(self) -> State:
        if self._opened_at is None:
            return State.CLOSED
        if self._clock() - self._opened_at < self.reset:
            return State.OPEN
        return State.HALF_OPEN

    def admit(self) -> bool:
        """Let a request through (returns whether it is the half-open trial), or raise 503."""
        state = self.state
        if state is State.CLOSED:
            return False
        if state is State.HALF_OPEN and not self._trial:
            self._trial = True
            return True
        assert self._opened_at is not None
        wait = max(1, math.ceil(self.reset - (self._clock() - self._opened_at)))
        raise CircuitOpen(
            f"{self.who} is failing; not asking it again for {wait}s",
            retry_after=wait,
        )

    def record(self, trial: bool, ok: bool | None) -> None:
        """The outcome of an admitted request: ``ok`` True (the server answered), False (it
        failed), ``None`` (no verdict: cancelled)."""
        if trial:
            self._trial = False
        if ok is None:
            return
        if ok:
            if trial or self._opened_at is None:
                self._failures = 0
                self._opened_at = None
            return
        self._failures += 1
        if trial or (self.threshold and self._failures >= self.threshold):
            self._opened_at = self._clock()
