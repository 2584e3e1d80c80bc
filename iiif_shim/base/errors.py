"""The one exception tree of iiif-shim.

Every stage raises a subclass of :class:`ShimError`; it carries the HTTP status and a short public
message (plain text, never a traceback, never a backend credential, an internal path or a
library's exception text: those go in ``detail``, which is logged and never sent). ``kind`` names
the failure for metrics (``refused``, ``timeout``, ``not_image``, ...), and ``retry_after`` the
seconds a client should wait (sent as ``Retry-After`` on every 503). ``middleware.py`` is the only
place where one becomes an HTTP response.
"""

from __future__ import annotations

from typing import ClassVar


class ShimError(Exception):
    """An error with an HTTP status and a message that is safe to show to any client."""

    status: ClassVar[int] = 500
    default_kind: ClassVar[str] = "error"

    def __init__(
        self,
        message: str,
        *,
        parameter: str | None = None,
        detail: str | None = None,
        kind: str | None = None,
        retry_after: int | None = None,
    ) -> None:
        super().__init__(message)
        self.message = message
        self.parameter = parameter
        self.detail = detail
        self.kind = kind or self.default_kind
        self.retry_after = retry_after if retry_after is not None else self.default_retry_after()

    def default_retry_after(self) -> int | None:
        return 1 if self.status == 503 else None

    def public_text(self) -> str:
        if self.parameter:
            return f"{self.parameter}: {self.message}"
        return self.message


class BadRequest(ShimError):
    """Malformed or out-of-range request parameter (IIIF: 400)."""

    status = 400


class NotFound(ShimError):
    """Unknown identifier or path (404)."""

    status = 404


class PayloadTooLarge(ShimError):
    """The answer would be larger than this server makes (413), e.g. a PDF past its page limit."""

    status = 413


class NotImplementedFeature(ShimError):
    """A valid IIIF request this server cannot honour (501)."""

    status = 501


class Overloaded(ShimError):
    """Too much work queued; the client may retry later (503, with ``Retry-After``)."""

    status = 503
    default_kind = "overloaded"


class BackendUnavailable(ShimError):
    """The legacy server is failing (its circuit is open) or all its connections stay busy;
    the client may retry later (503, with ``Retry-After``)."""

    status = 503
    default_kind = "unavailable"


class BackendError(ShimError):
    """The legacy server failed, was unreachable, or sent something that is not an image (502)."""

    status = 502
    default_kind = "failed"


class BackendTimeout(ShimError):
    """The legacy server did not answer in time (504)."""

    status = 504
    default_kind = "timeout"


class ConfigError(Exception):
    """A configuration file with one or more problems, each with its YAML path."""

    def __init__(self, problems: list[tuple[str, str]], source: str = "") -> None:
        self.problems = problems
        self.source = source
        lines = [f"{path}: {message}" if path else message for path, message in problems]
        super().__init__("\n".join(lines))

    def report(self) -> str:
        head = f"{self.source}: " if self.source else ""
        n = len(self.problems)
        lines = [f"{head}{n} problem{'s' if n != 1 else ''}:"]
        lines += [f"  {path}: {msg}" if path else f"  {msg}" for path, msg in self.problems]
        return "\n".join(lines)
