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
"""

from __future__ import annotations

import json
import logging
import os
import threading
from datetime import UTC, datetime
from pathlib import Path

from iiif_shim.base.redaction import redact

EVENTS = frozenset(
    {"login", "login_failed", "logout", "refused", "rate_limited", "token", "token_refused"}
)
_APPEND = os.O_WRONLY | os.O_APPEND | os.O_CREAT | getattr(os, "O_CLOEXEC", 0)
MAX_FIELD = 256  # characters of one field of a line
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
    ) -> str:
        """The JSON line (without its newline) of one event (``user_hash``: see the module
        docstring; with it, ``user`` is written as ``null``)."""
        if event not in EVENTS:
            raise ValueError(f"no audit event {event!r}")
        when = (now or datetime.now(UTC)).isoformat(timespec="milliseconds")
        record: dict[str, str | None] = {"time": when.replace("+00:00", "Z"), "event": event}
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
        """Write one line (a few hundred bytes, to a local file: no thread needed)."""
        text = self.line(
            event,
            policy=policy,
            user=user,
            address=address,
            identifier=identifier,
            reason=reason,
            user_hash=user_hash,
        )
        if self.path is None or not self._write(text):
            log.info("%s", text)

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
