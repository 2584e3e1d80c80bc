"""The request id: taken from the client's ``X-Request-ID`` when it is a plausible one, made
otherwise, and carried in a context variable to the access log, warnings and every backend
request (as ``X-Request-ID``), so one request can be followed through the shim into the legacy
server's logs."""

from __future__ import annotations

import re
import uuid
from contextvars import ContextVar

HEADER = "X-Request-ID"
_VALID_RE = re.compile(r"[A-Za-z0-9._:@/+=-]{1,128}")

request_id: ContextVar[str | None] = ContextVar("request_id", default=None)


def choose(given: str | None) -> str:
    """The client's id if it is short and plain (it ends up in logs and upstream headers),
    else a new one."""
    if given is not None and _VALID_RE.fullmatch(given):
        return given
    return uuid.uuid4().hex
