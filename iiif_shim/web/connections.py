"""Client connections before aiohttp sees them: how many, how slow, how large a request head.

- :class:`ConnectionGuard`: wraps the protocol factory given to ``loop.create_server``. It caps
  open connections (503; ``on_count`` hears each change of their number), times request heads
  (408) and bodies (close), and bounds the request line (414) and the head (431), answering
  with CORS headers like every other response. aiohttp caps nothing, times no body, and times
  a late head only with its keep-alive timeout (the idle timeout, an hour by default), closing
  without an answer.
- With a :class:`TLSGate`, the guard serves sockets its caller accepted
  (:meth:`ConnectionGuard.accept_tls`) and does their TLS handshake, within
  ``handshake_timeout``: a connection counts against the cap from accept, handshake included,
  until it closes (a failed or timed-out handshake frees its place at once), so clients that
  connect and never say hello hold at most the cap; past it a connection is closed at once,
  before any handshake work (a 503 cannot be said before TLS). Its own answers then carry
  ``Strict-Transport-Security`` when ``hsts()`` says so.
- :class:`CorsRequestHandler` and :func:`handler_factory`: aiohttp's own answers to requests its
  parser refuses, with ``Access-Control-Allow-Origin: *`` and without the parser's message,
  logged as one line (the client's mistake) instead of a traceback.

The guard follows HTTP/1.1 framing from the raw bytes just far enough to know where each request
head and body ends (aiohttp still parses everything itself): heads end at an empty line,
bodies are ``Content-Length`` bytes or a chunked body. It keeps at most one head's worth of bytes.
Its own answers go out only when no earlier request was seen on the connection, since the answer
to an earlier one may still be on its way; otherwise it just closes.
"""

from __future__ import annotations

import asyncio
import enum
import re
import socket
import ssl
from collections.abc import Callable
from dataclasses import dataclass
from email.utils import formatdate
from http import HTTPStatus
from typing import Any, cast

from aiohttp import web
from aiohttp.http_exceptions import HttpProcessingError

_CONTENT_LENGTH_RE = re.compile(rb"[0-9]{1,18}")
_CHUNK_SIZE_RE = re.compile(rb"([0-9A-Fa-f]{1,15})[ \t]*(;.*)?")


@dataclass(frozen=True)
class ClientLimits:
    max_connections: int  # open client connections; past it: 503 + Retry-After, then close
    header_timeout: float  # seconds for a request head: from connect, or from its first byte
    body_timeout: float  # seconds for a Content-Length body; longest pause in a chunked one
    max_request_line: int  # bytes, line end excluded; past it: 414
    max_header_bytes: int  # bytes of the whole head; past it: 431
    max_headers: int  # header lines; past it: 431


@dataclass(frozen=True)
class TLSGate:
    """HTTPS on the guarded socket: the context (its SNI callback may swap it per handshake),
    the time a handshake may take, the seconds of HSTS for the guard's own answers (0: none),
    and who hears of a failed handshake (the peer, the error)."""

    context: ssl.SSLContext
    handshake_timeout: float
    hsts: Callable[[], int] = lambda: 0
    on_failure: Callable[[object, BaseException], None] = lambda peer, exc: None


@dataclass(frozen=True)
class _Refusal:
    event: str  # for on_event
    status: HTTPStatus | None = None  # None: close without answering
    reason: str = ""


_CONNECTION_CAP = _Refusal(
    "connection_cap", HTTPStatus.SERVICE_UNAVAILABLE, "too many connections, retry shortly"
)
_HEADER_TIMEOUT = _Refusal("header_timeout", HTTPStatus.REQUEST_TIMEOUT, "request head too slow")
_BODY_TIMEOUT = _Refusal("body_timeout")
_URI_TOO_LONG = _Refusal("uri_too_long", HTTPStatus.REQUEST_URI_TOO_LONG, "request line too long")
_HEADERS_TOO_LARGE = _Refusal(
    "headers_too_large", HTTPStatus.REQUEST_HEADER_FIELDS_TOO_LARGE, "request head too large"
)
_TOO_MANY_HEADERS = _Refusal(
    "too_many_headers", HTTPStatus.REQUEST_HEADER_FIELDS_TOO_LARGE, "too many header lines"
)


_LINGER = 1.0  # seconds a refused connection is drained before it is closed
_MAX_LINGERING = 256  # past this many draining at once, refused connections close at once


def _answer(status: HTTPStatus, reason: str, hsts: int = 0) -> bytes:
    body = f"{reason}\n".encode()
    retry = "Retry-After: 1\r\n" if status is HTTPStatus.SERVICE_UNAVAILABLE else ""
    if hsts > 0:
        retry += f"Strict-Transport-Security: max-age={hsts}\r\n"
    head = (
        f"HTTP/1.1 {status.value} {status.phrase}\r\n"
        f"Date: {formatdate(usegmt=True)}\r\n"
        "Content-Type: text/plain; charset=utf-8\r\n"
        f"Content-Length: {len(body)}\r\n"
        "Connection: close\r\n"
        "Access-Control-Allow-Origin: *\r\n"
        "Cache-Control: no-store\r\n"
        f"{retry}\r\n"
    )
    return head.encode("ascii") + body


class _Phase(enum.Enum):
    HEAD = enum.auto()  # in a request head, or waiting for one
    BODY = enum.auto()  # in a Content-Length body
    CHUNK_SIZE = enum.auto()  # on a chunk-size line
    CHUNK_DATA = enum.auto()  # in a chunk's data
    CHUNK_END = enum.auto()  # on the line ending a chunk's data
    TRAILERS = enum.auto()  # in the trailer lines after the last chunk
    UNFRAMED = enum.auto()  # a chunked body that cannot be followed: body until the end
    CLOSED = enum.auto()  # refused: nothing more reaches the application

    @property
    def chunked(self) -> bool:
        return self not in (_Phase.HEAD, _Phase.BODY, _Phase.CLOSED)


class ConnectionGuard:
    """Wraps a protocol factory (an aiohttp web.Server instance is one: calling it returns a
    RequestHandler). Calling the guard gives the protocol factory for ``loop.create_server``."""

    def __init__(
        self,
        limits: ClientLimits,
        factory: Callable[[], asyncio.Protocol],
        on_event: Callable[[str], None] | None = None,
        on_count: Callable[[int], None] | None = None,
        tls: TLSGate | None = None,
    ) -> None:
        self.limits = limits
        self._factory = factory
        self._on_event = on_event
        self._on_count = on_count
        self.tls = tls
        self._open = 0
        self.lingering = 0  # refused connections being drained before their close

    def __call__(self) -> asyncio.Protocol:
        return _GuardedConnection(self)

    @property
    def open_connections(self) -> int:
        """Connections counted against the cap (TLS ones from accept, handshake included)."""
        return self._open

    async def accept_tls(self, sock: socket.socket) -> None:
        """Serve ``sock``, just accepted, over TLS (needs :attr:`tls`): counted from now, closed
        at once past the cap (no handshake work), its handshake within the gate's timeout (a
        failure is told to the gate's ``on_failure`` and frees its place), then guarded as
        any connection. Runs until the handshake is done."""
        tls = self.tls
        assert tls is not None
        if not self._take():
            self._event(_CONNECTION_CAP.event)
            sock.close()
            return
        connection = _GuardedConnection(self, counted=True)
        try:
            await asyncio.get_running_loop().connect_accepted_socket(
                lambda: connection,
                sock=sock,
                ssl=tls.context,
                ssl_handshake_timeout=tls.handshake_timeout,
            )
        except BaseException as exc:  # refused, timed out, the client left; or cancelled
            connection._free()  # (the TLS layer never hands a failed handshake's loss on)
            if isinstance(exc, Exception):
                tls.on_failure(_peer(sock), exc)
            sock.close()
            if not isinstance(exc, Exception):
                raise

    def _take(self) -> bool:
        if self._open >= self.limits.max_connections:
            return False
        self._open += 1
        if self._on_count is not None:
            self._on_count(self._open)
        return True

    def _release(self) -> None:
        self._open -= 1
        if self._on_count is not None:
            self._on_count(self._open)

    def _event(self, reason: str) -> None:
        if self._on_event is not None:
            self._on_event(reason)


class _GuardedConnection(asyncio.Protocol):
    """One client connection: the application's protocol behind the limits."""

    _transport: asyncio.Transport
    _loop: asyncio.AbstractEventLoop

    def __init__(self, guard: ConnectionGuard, counted: bool = False) -> None:
        self._guard = guard
        self._limits = guard.limits
        self._counted = counted  # holds a place under the cap
        self._inner: asyncio.Protocol | None = None
        self._timer: asyncio.TimerHandle | None = None
        self._held: tuple[float, _Refusal] | None = None  # a timer that expired while paused
        self._phase = _Phase.HEAD
        self._requests = 0  # request heads completed on this connection
        self._line = bytearray()  # the line being received, when it is not yet complete
        self._head_bytes = 0
        self._head_lines = 0  # complete lines of the current head, request line included
        self._content_length = 0
        self._chunked = False
        self._remaining = 0  # bytes left of a Content-Length body or a chunk
        self._lingering = False  # refused, answered, being drained before the close

    # asyncio.Protocol

    def connection_made(self, transport: asyncio.BaseTransport) -> None:
        self._transport = cast(asyncio.Transport, transport)
        self._loop = asyncio.get_running_loop()
        if not self._counted:  # (a TLS one was counted at accept: ConnectionGuard.accept_tls)
            self._counted = self._guard._take()
            if not self._counted:
                self._refuse(_CONNECTION_CAP)
                return
        self._inner = self._guard._factory()
        self._arm(self._limits.header_timeout, _HEADER_TIMEOUT)
        self._inner.connection_made(transport)

    def _free(self) -> None:
        if self._counted:
            self._counted = False
            self._guard._release()

    def data_received(self, data: bytes) -> None:
        if self._inner is None or self._phase is _Phase.CLOSED:
            return
        if self._held is not None:  # the application reads again: the client's time starts anew
            self._arm(*self._held)
        refusal = self._scan(data)
        if refusal is not None:
            self._refuse(refusal)
            return
        if self._phase.chunked:  # a chunked body may pause, not stall
            self._arm(self._limits.body_timeout, _BODY_TIMEOUT)
        self._inner.data_received(data)

    def eof_received(self) -> bool | None:
        if self._inner is None or self._phase is _Phase.CLOSED:
            return None
        return self._inner.eof_received()

    def connection_lost(self, exc: Exception | None) -> None:
        self._cancel_timer()
        if self._lingering:
            self._guard.lingering -= 1
        self._free()
        if self._inner is not None:
            self._inner.connection_lost(exc)

    def pause_writing(self) -> None:
        if self._inner is not None:
            self._inner.pause_writing()

    def resume_writing(self) -> None:
        if self._inner is not None:
            self._inner.resume_writing()

    # limits

    def _refuse(self, refusal: _Refusal) -> None:
        self._phase = _Phase.CLOSED
        self._cancel_timer()
        self._guard._event(refusal.event)
        if refusal.status is None or self._requests:
            self._transport.close()
            return
        # Answer, then half-close and keep reading (and dropping) what the client still sends
        # for a moment: closing with unread bytes would reset the connection before the client
        # has read the answer.
        tls = self._guard.tls
        self._transport.write(_answer(refusal.status, refusal.reason, tls.hsts() if tls else 0))
        if self._guard.lingering >= _MAX_LINGERING or not self._transport.can_write_eof():
            self._transport.close()  # a flood of refusals may not hold descriptors for long
            return
        self._transport.write_eof()
        self._guard.lingering += 1
        self._lingering = True
        self._timer = self._loop.call_later(_LINGER, self._transport.close)

    def _arm(self, delay: float, refusal: _Refusal) -> None:
        self._cancel_timer()
        self._timer = self._loop.call_later(delay, self._expire, delay, refusal)

    def _cancel_timer(self) -> None:
        if self._timer is not None:
            self._timer.cancel()
            self._timer = None
        self._held = None

    def _expire(self, delay: float, refusal: _Refusal) -> None:
        self._timer = None
        if self._transport.is_reading():
            self._refuse(refusal)
        else:  # the application paused reading: the client is not the slow one
            self._arm(delay, refusal)
            self._held = (delay, refusal)

    # framing

    def _scan(self, data: bytes) -> _Refusal | None:
        pos = 0
        while pos < len(data) and self._phase is not _Phase.UNFRAMED:
            if self._phase in (_Phase.BODY, _Phase.CHUNK_DATA):
                taken = min(self._remaining, len(data) - pos)
                self._remaining -= taken
                pos += taken
                if not self._remaining:
                    if self._phase is _Phase.BODY:
                        self._request_done()
                    else:
                        self._phase = _Phase.CHUNK_END
                continue
            end = data.find(b"\n", pos)
            stop = len(data) if end < 0 else end + 1
            piece = data[pos:stop]
            pos = stop
            if self._phase is _Phase.HEAD:
                refusal = self._head_piece(piece, complete=end >= 0)
                if refusal is not None:
                    return refusal
            else:
                self._chunk_piece(piece, complete=end >= 0)
        return None

    def _head_piece(self, piece: bytes, complete: bool) -> _Refusal | None:
        limits = self._limits
        if not self._head_bytes and self._requests:  # a later head: timed from its first byte
            self._arm(limits.header_timeout, _HEADER_TIMEOUT)
        line = self._finish_line(piece) if complete else None
        if not self._head_lines:
            # an incomplete line's last CR may start its CRLF
            length = len(line) if line is not None else len(self._line) + len(piece)
            if line is None and piece.endswith(b"\r"):
                length -= 1
            if length > limits.max_request_line:
                return _URI_TOO_LONG
        self._head_bytes += len(piece)
        if self._head_bytes > limits.max_header_bytes:
            return _HEADERS_TOO_LARGE
        if line is None:
            self._line += piece
        elif not self._head_lines:
            if line:  # blank lines before a request line are ignored (RFC 9112 section 2.2)
                self._head_lines = 1
        elif not line:
            self._head_done()
        elif self._head_lines > limits.max_headers:
            return _TOO_MANY_HEADERS
        else:
            self._head_lines += 1
            self._read_header(line)
        return None

    def _read_header(self, line: bytes) -> None:
        name, colon, value = line.partition(b":")
        if not colon:
            return
        name, value = name.lower(), value.strip()
        if name == b"content-length" and _CONTENT_LENGTH_RE.fullmatch(value):
            self._content_length = int(value)
        elif name == b"transfer-encoding":
            self._chunked = value.rsplit(b",", 1)[-1].strip().lower() == b"chunked"

    def _head_done(self) -> None:
        self._requests += 1
        self._head_bytes = self._head_lines = 0
        if self._chunked:
            self._phase = _Phase.CHUNK_SIZE
            self._arm(self._limits.body_timeout, _BODY_TIMEOUT)
        elif self._content_length:
            self._phase = _Phase.BODY
            self._remaining = self._content_length
            self._arm(self._limits.body_timeout, _BODY_TIMEOUT)
        else:
            self._request_done()
        self._content_length, self._chunked = 0, False

    def _request_done(self) -> None:
        self._phase = _Phase.HEAD
        self._cancel_timer()

    def _chunk_piece(self, piece: bytes, complete: bool) -> None:
        if len(self._line) + len(piece) > self._limits.max_header_bytes:
            self._phase = _Phase.UNFRAMED
        elif not complete:
            self._line += piece
        else:
            line = self._finish_line(piece)
            if self._phase is _Phase.TRAILERS:
                if not line:
                    self._request_done()
            elif self._phase is _Phase.CHUNK_END:
                self._phase = _Phase.CHUNK_SIZE if not line else _Phase.UNFRAMED
            elif match := _CHUNK_SIZE_RE.fullmatch(line):
                self._remaining = int(match[1], 16)
                self._phase = _Phase.CHUNK_DATA if self._remaining else _Phase.TRAILERS
            else:
                self._phase = _Phase.UNFRAMED

    def _finish_line(self, piece: bytes) -> bytes:
        """The line ``piece`` completes, without its CRLF or LF."""
        line = (bytes(self._line) + piece).removesuffix(b"\n").removesuffix(b"\r")
        self._line.clear()
        return line


def _peer(sock: socket.socket) -> object:
    try:
        return sock.getpeername()
    except OSError:
        return "a client that left"


class CorsRequestHandler(web.RequestHandler):
    """handle_error answers with Access-Control-Allow-Origin: * (aiohttp's own error replies
    carry no CORS header), and with a plain one-line reason for 4xx instead of the parser's
    message, which quotes the request."""

    __slots__ = ()

    def handle_error(
        self,
        request: web.BaseRequest,
        status: int = 500,
        exc: BaseException | None = None,
        message: str | None = None,
    ) -> web.StreamResponse:
        if 400 <= status < 500:
            message = f"{HTTPStatus(status).phrase}\n"
        response = super().handle_error(request, status, exc, message)
        response.headers["Access-Control-Allow-Origin"] = "*"
        return response

    def log_exception(self, *args: Any, **kw: Any) -> None:
        """A request the parser refused is the client's mistake: one line at INFO with the
        parser's reason (escaped, at most 200 characters), not a traceback at ERROR."""
        exc = kw.get("exc_info")
        if isinstance(exc, HttpProcessingError) and 400 <= exc.code < 500:
            lines = (exc.message or "").strip().splitlines()
            reason = (lines[0] if lines else HTTPStatus(exc.code).phrase).rstrip(":")
            reason = reason.encode("ascii", "backslashreplace").decode("ascii")[:200]
            where = args[0] % args[1:] if args else "Error handling request"
            self.logger.info("%s: %d %s", where, exc.code, reason)
            return
        super().log_exception(*args, **kw)


def handler_factory(server: web.Server, **handler_kwargs: Any) -> Callable[[], asyncio.Protocol]:
    """What calling ``server`` does, with :class:`CorsRequestHandler`. ``handler_kwargs`` are
    RequestHandler's keyword arguments (``keepalive_timeout``, ``access_log``, ...): the ones
    given to the runner or application are not taken from ``server``."""

    def make() -> asyncio.Protocol:
        return CorsRequestHandler(server, loop=asyncio.get_running_loop(), **handler_kwargs)

    return make
