"""The audit log: one JSON line per login, failed login, logout, refusal, rate limit and token
(given or refused), so an operator can tell who got access to what, from where, and when.

A line holds ``time`` (ISO-8601, UTC, milliseconds), ``event`` (one of :data:`EVENTS`) and,
when known, ``policy``, ``user``, ``address``, ``identifier`` and ``reason``; a user name
typed into a form that names no user of the file is not written (it may be a password typed
in the wrong field): the line says ``"user": null`` and ``user_hash``, a keyed hash of what was
typed (the same text, the same hash, so repeated guesses can be told apart). Each field is
cut at :data:`MAX_FIELD` characters (control characters escaped by JSON), and the whole line
goes through ``base/redaction.py``, so no secret the configuration declared appears. Callers
never pass a password, a cookie, a token or a key: there is no field for one.

Lines go to ``auth.audit_log`` when set (opened ``O_APPEND``; one ``write`` per line, so lines
of several processes never interleave), else to the logger ``iiif_shim.audit`` (the server's
log). A file renamed or removed (rotated by ``logrotate`` without ``copytruncate``) is noticed
at the next line (one ``stat``), which goes to a new file under the configured name. A write
that fails is logged once, then the logger takes the lines until a write works.

**Repeated refusals** (the one throttle of the log): lines of the events in :data:`THROTTLED`
(``refused``, ``token_refused``) with the same event, policy, address and reason within
:data:`REPEAT_WINDOW` seconds of the last one written are counted, not written; the next one
written for them says how many were left out (``"repeated": N``). At most :data:`REPEAT_KEYS`
of them are remembered (the oldest forgotten first, with its count). A flood of anonymous
probes, token requests or tiles so writes a line per 10 s, while every login, failure,
logout and token given is written.
"""

from __future__ import annotations

import json
import logging
import os
import threading
import time
from collections import OrderedDict
from datetime import UTC, datetime
from pathlib import Path

from iiif_shim.base.redaction import redact

EVENTS = frozenset(
    {"login", "login_failed", "logout", "refused", "rate_limited", "token", "token_refused"}
)
_APPEND = os.O_WRONLY | os.O_APPEND | os.O_CREAT | getattr(os, "O_CLOEXEC", 0)
MAX_FIELD = 256  # characters of one field of a line
THROTTLED = frozenset({"refused", "token_refused"})
REPEAT_WINDOW = 10.0  # seconds in which the same refusal is written once
REPEAT_KEYS = 10_000  # (event, policy, address, reason) remembered, the oldest first out
log = logging.getLogger("iiif_shim.audit")
_log = logging.getLogger("iiif_shim")


def _cut(value: str | None) -> str | None:
    if value is None:
        return None
    return value if len(value) <= MAX_FIELD else value[: MAX_FIELD - 1] + "…"


class Audit:
    """Writes audit lines to ``path`` (or the ``iiif_shim.audit`` logger)."""

    def __init__(self, path: Path | None) -> None:
        self.path = path
        self._fd: int | None = None
        self._failed = False
        self._lock = threading.Lock()
        # (event, policy, address, reason): (when last written, lines left out since)
        self._repeats: OrderedDict[tuple[str | None, ...], tuple[float, int]] = OrderedDict()

    def line(
        self,
        event: str,
        *,
        policy: str | None = None,
        user: str | None = None,
        address: str | None = None,
        identifier: str | None = None,
        reason: str | None = None,
        user_hash: str | None = None,
        now: datetime | None = None,
        repeated: int = 0,
    ) -> str:
        """The JSON line (without its newline) of one event (``user_hash``: see the module
        docstring; with it, ``user`` is written as ``null``; ``repeated``: lines of the same
        refusal left out before this one)."""
        if event not in EVENTS:
            raise ValueError(f"no audit event {event!r}")
        when = (now or datetime.now(UTC)).isoformat(timespec="milliseconds")
        record: dict[str, str | int | None] = {
            "time": when.replace("+00:00", "Z"),
            "event": event,
        }
        if user_hash is not None:
            user = None
            record["user"] = None
            record["user_hash"] = _cut(user_hash)
        for key, value in (
            ("policy", policy),
            ("user", user),
            ("address", address),
            ("identifier", identifier),
            ("reason", reason),
        ):
            if (cut := _cut(value)) is not None:
                record[key] = cut
        if repeated:
            record["repeated"] = repeated
        return redact(json.dumps(record, ensure_ascii=True))

    def event(
        self,
        event: str,
        *,
        policy: str | None = None,
        user: str | None = None,
        address: str | None = None,
        identifier: str | None = None,
        reason: str | None = None,
        user_hash: str | None = None,
    ) -> None:
        """Write one line (a few hundred bytes, to a local file: no thread needed), unless it
        repeats a refusal written less than :data:`REPEAT_WINDOW` seconds ago."""
        repeated = 0
        if event in THROTTLED:
            left_out = self._repeat((event, policy, address, reason), time.monotonic())
            if left_out is None:
                return
            repeated = left_out
        text = self.line(
            event,
            policy=policy,
            user=user,
            address=address,
            identifier=identifier,
            reason=reason,
            user_hash=user_hash,
            repeated=repeated,
        )
        if self.path is None or not self._write(text):
            log.info("%s", text)

    def _repeat(self, key: tuple[str | None, ...], now: float) -> int | None:
        """``None`` when the refusal ``key`` was written within the window (counted); else
        how many were left out before this one, which is written."""
        with self._lock:
            last = self._repeats.get(key)
            if last is not None and now - last[0] < REPEAT_WINDOW:
                self._repeats[key] = (last[0], last[1] + 1)
                return None
            self._repeats[key] = (now, 0)
            self._repeats.move_to_end(key)
            while len(self._repeats) > REPEAT_KEYS:
                self._repeats.popitem(last=False)
            return last[1] if last is not None else 0

    def _write(self, text: str) -> bool:
        data = (text + "\n").encode()
        with self._lock:
            try:
                if self._fd is not None and self._moved():
                    self._close()
                if self._fd is None:
                    self._fd = os.open(self.path or "", _APPEND, 0o640)
                os.write(self._fd, data)
            except OSError as exc:
                if not self._failed:
                    self._failed = True
                    _log.warning(
                        "cannot write the audit log %s (%s); its lines go to the server's log",
                        self.path,
                        exc.strerror or exc,
                    )
                self._close()
                return False
            if self._failed:
                self._failed = False
                _log.warning("the audit log %s is written again", self.path)
            return True

    def _moved(self) -> bool:
        """Whether the file was renamed or removed (rotated) since it was opened."""
        assert self._fd is not None
        try:
            return os.stat(self.path or "").st_ino != os.fstat(self._fd).st_ino
        except FileNotFoundError:
            return True

    def _close(self) -> None:
        if self._fd is not None:
            try:
                os.close(self._fd)
            finally:
                self._fd = None

    def close(self) -> None:
        with self._lock:
            self._close()
