"""The one exception tree of iiif-shim.

Every stage raises a subclass of :class:`ShimError`; it carries the HTTP status and a short public
message (plain text, never a traceback, never a backend credential, an internal path or a
library's exception text: those go in ``detail``, which is logged and never sent), and
``retry_after``, the seconds a client should wait (sent as ``Retry-After`` on every 503).
``web/middleware.py`` is the only place where one becomes an HTTP response.

Categories are types, never strings. Each class names its failure for metrics (``kind``) and
says, as class attributes, what it tells of the server that caused it (httpx-style):

- ``server_failed``: the answer to "did the server fail?" that its circuit breaker counts:
  ``True`` (refused, reset, timed out, a 5xx, a body cut short), ``False`` (it answered, even if
  wrongly: a 404, a page that is not an image), ``None`` (it was not asked: the circuit is open,
  no connection was free);
- ``retryable``: a small idempotent request (metadata) may be tried again after it;
- :class:`TransportError`, :class:`BackendTimeout` and :class:`CircuitOpen`: the server cannot
  be reached now (what a health check calls down).

What a client or an operator reads of an error (``public_text``, a :class:`ConfigError`'s
problems) has every secret of the configuration replaced by ``***`` (``redaction.py``).
"""

from __future__ import annotations

from typing import ClassVar

from iiif_shim.base import redaction


class ShimError(Exception):
    """An error with an HTTP status and a message that is safe to show to any client."""

    status: ClassVar[int] = 500
    kind: ClassVar[str] = "error"
    server_failed: ClassVar[bool | None] = False
    retryable: bool = False

    def __init__(
        self,
        message: str,
        *,
        parameter: str | None = None,
        detail: str | None = None,
        retry_after: int | None = None,
    ) -> None:
        super().__init__(message)
        self.message = message
        self.parameter = parameter
        self.detail = detail
        self.retry_after = retry_after if retry_after is not None else self.default_retry_after()

    def default_retry_after(self) -> int | None:
        return 1 if self.status == 503 else None

    def public_text(self) -> str:
        """What a client is told (never a secret of the configuration: ``redaction.py``)."""
        text = f"{self.parameter}: {self.message}" if self.parameter else self.message
        return redaction.redact(text)


# --- the client's request --------------------------------------------------------------------


class BadRequest(ShimError):
    """Malformed or out-of-range request parameter (IIIF: 400)."""

    status = 400
    kind = "bad_request"


class NotFound(ShimError):
    """Unknown identifier or path (404)."""

    status = 404
    kind = "not_found"


class PayloadTooLarge(ShimError):
    """The answer would be larger than this server makes (413), e.g. a PDF past its page limit."""

    status = 413
    kind = "payload_too_large"


class NotImplementedFeature(ShimError):
    """A valid IIIF request this server cannot honour (501)."""

    status = 501
    kind = "not_implemented"


class SourceTooLarge(NotImplementedFeature):
    """The source has more pixels than this server decodes."""

    kind = "too_large"


class EncodeFailed(NotImplementedFeature):
    """The image cannot be written in the format asked."""

    kind = "encode"


class OverBudget(NotImplementedFeature):
    """One request alone needs more decoded-pixel memory than a process has."""

    kind = "memory_budget"


# --- this server is busy ---------------------------------------------------------------------


class Overloaded(ShimError):
    """Too much work queued; the client may retry later (503, with ``Retry-After``)."""

    status = 503
    kind = "overloaded"


class QueueFull(Overloaded):
    kind = "queue_full"


class RenderTimeout(Overloaded):
    kind = "render_timeout"


class MemoryBusy(Overloaded):
    kind = "memory_busy"


class DeadlinePassed(Overloaded):
    kind = "deadline"


class NoRoom(Overloaded):
    """No room on this server's disk for the temporary file of a large upstream answer (the
    server it came from is not to blame: its circuit does not count it)."""

    kind = "no_room"
    server_failed = None


# --- the legacy server (or an object source's catalogue) -----------------------------------


class BackendUnavailable(ShimError):
    """The legacy server was not asked: its circuit is open or all its connections stay busy;
    the client may retry later (503, with ``Retry-After``)."""

    status = 503
    kind = "unavailable"
    server_failed = None


class CircuitOpen(BackendUnavailable):
    kind = "circuit_open"


class BackendBusy(BackendUnavailable):
    kind = "busy"


class BackendError(ShimError):
    """The legacy server failed, was unreachable, or sent something that is not usable (502)."""

    status = 502
    kind = "failed"


class TransportError(BackendError):
    """The server could not be reached, or dropped the connection."""

    server_failed = True


class Unreachable(TransportError):
    kind = "refused"
    retryable = True


class ConnectionDropped(TransportError):
    kind = "reset"
    retryable = True


class TruncatedBody(BackendError):
    """The server cut a body short (or sent a broken one)."""

    kind = "truncated"
    server_failed = True


class UpstreamClientError(BackendError):
    """The server answered with a 4xx (other than 404/410, which are :class:`NotFound`)."""

    kind = "http_4xx"


class UpstreamServerError(BackendError):
    """The server answered with a 5xx; after a 502, 503 or 504 a metadata request is tried
    again."""

    kind = "http_5xx"
    server_failed = True

    def __init__(self, message: str, status_code: int) -> None:
        super().__init__(message)
        self.status_code = status_code
        self.retryable = status_code in (502, 503, 504)


class MalformedAnswer(BackendError):
    kind = "malformed"


class NotAnImage(BackendError):
    kind = "not_image"


class OversizeAnswer(BackendError):
    kind = "oversize"


class RedirectRefused(BackendError):
    kind = "redirect"


class UnreadableMetadata(BackendError):
    """Metadata (an info.json, a catalogue's answer) that cannot be read as promised."""

    kind = "bad_metadata"


class DecompressionBomb(BackendError):
    """An image far larger than asked, or than the bytes set aside for it."""

    kind = "bomb"


class UnknownImage(BackendError):
    """An object names an image this server does not have."""

    kind = "unknown_image"


class BadRecord(BackendError):
    """An object's record in its source cannot be made into a manifest."""

    kind = "bad_record"


class BadCsv(BackendError):
    """A CSV object source's file cannot be read as its settings say (too large, not its
    encoding, without its columns)."""

    kind = "bad_csv"


class UnreadableSource(BackendError):
    """An object source's file or folder cannot be read at all."""

    kind = "unreadable"


class BackendTimeout(ShimError):
    """The legacy server did not answer in time (504)."""

    status = 504
    kind = "timeout"
    server_failed = True


class ConnectTimeout(BackendTimeout):
    kind = "connect_timeout"
    retryable = True


def unreachable(error: ShimError) -> bool:
    """Whether ``error`` says the server cannot be reached now (health: down)."""
    return isinstance(error, TransportError | BackendTimeout | CircuitOpen)


class ConfigError(Exception):
    """A configuration file with one or more problems, each with its YAML path."""

    def __init__(self, problems: list[tuple[str, str]], origin: str = "") -> None:
        # a message may quote a value: secrets read so far are never printed
        self.problems = [(redaction.redact(p), redaction.redact(m)) for p, m in problems]
        problems = self.problems
        self.origin = origin
        lines = [f"{path}: {message}" if path else message for path, message in problems]
        super().__init__("\n".join(lines))

    def report(self) -> str:
        head = f"{self.origin}: " if self.origin else ""
        n = len(self.problems)
        lines = [f"{head}{n} problem{'s' if n != 1 else ''}:"]
        lines += [f"  {path}: {msg}" if path else f"  {msg}" for path, msg in self.problems]
        return "\n".join(lines)
