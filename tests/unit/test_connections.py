"""Client connection limits over real sockets: each attack first works on a bare aiohttp server,
then the guard stops it, answering with CORS headers; nothing is left open or scheduled after."""

from __future__ import annotations

import asyncio
import socket
import ssl
from collections.abc import Awaitable, Callable
from dataclasses import dataclass, replace
from pathlib import Path

import pytest
from aiohttp import web

from iiif_shim.web.connections import ClientLimits, ConnectionGuard, handler_factory
from tests.tls import make_ca

LIMITS = ClientLimits(
    max_connections=3,
    header_timeout=0.5,
    body_timeout=0.5,
    max_request_line=100,
    max_header_bytes=600,
    max_headers=8,
)
SLACK = 0.5
HEAD_DEADLINE = LIMITS.header_timeout + SLACK
BODY_DEADLINE = LIMITS.body_timeout + SLACK
GET = b"GET / HTTP/1.1\r\nHost: t\r\n\r\n"


@dataclass(frozen=True)
class Reply:
    status: int
    headers: dict[str, str]  # lower-case names
    body: bytes


class Client:
    def __init__(self, reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        self.reader, self.writer = reader, writer

    async def send(self, data: bytes) -> None:
        self.writer.write(data)
        await self.writer.drain()

    async def reply(self, timeout: float = 2) -> Reply:
        head = await asyncio.wait_for(self.reader.readuntil(b"\r\n\r\n"), timeout)
        status_line, *lines = head.decode("latin-1").split("\r\n")[:-2]
        headers = {}
        for line in lines:
            name, _, value = line.partition(":")
            headers[name.strip().lower()] = value.strip()
        length = int(headers.get("content-length", "0"))
        body = await asyncio.wait_for(self.reader.readexactly(length), timeout)
        return Reply(int(status_line.split()[1]), headers, body)

    async def get(self, request: bytes = GET) -> Reply:
        await self.send(request)
        return await self.reply()

    async def closed_within(self, seconds: float) -> bool:
        """Whether the server closes the connection within ``seconds``, sending nothing more."""
        try:
            data = await asyncio.wait_for(self.reader.read(1), seconds)
        except TimeoutError:
            return False
        except ConnectionResetError:
            return True
        assert data == b"", f"unexpected data {data!r}"
        return True

    async def dribble(self, data: bytes, every: float) -> None:
        """Send ``data`` one byte at a time (run it as a task; cancel it when done with it)."""
        for byte in data:
            self.writer.write(bytes([byte]))
            await asyncio.sleep(every)

    def close(self) -> None:
        self.writer.close()


async def connect(port: int) -> Client:
    return Client(*await asyncio.open_connection("127.0.0.1", port))


@dataclass(frozen=True)
class Servers:
    guarded: int  # ConnectionGuard(limits, handler_factory(...))
    bare: int  # handler_factory(...) alone
    plain: int  # aiohttp's own RequestHandler (the web.Server itself)
    guard: ConnectionGuard
    server: web.Server
    events: list[str]  # what the guard reported


async def ok(request: web.Request) -> web.Response:
    return web.Response(text="ok")


async def slow(request: web.Request) -> web.Response:
    await asyncio.sleep(0.3)
    return web.Response(text="slow")


async def echo(request: web.Request) -> web.Response:
    return web.Response(body=await request.read())


def serve(main: Callable[[Servers], Awaitable[None]], limits: ClientLimits = LIMITS) -> None:
    """Run ``main`` against the three servers, then check every connection is gone."""

    async def run() -> None:
        app = web.Application()
        app.router.add_get("/", ok)
        app.router.add_route("*", "/slow", slow)
        app.router.add_post("/echo", echo)
        runner = web.AppRunner(app, access_log=None)
        await runner.setup()
        server = runner.server
        assert server is not None
        factory = handler_factory(server, keepalive_timeout=30, access_log=None)
        events: list[str] = []
        guard = ConnectionGuard(limits, factory, events.append)
        loop = asyncio.get_running_loop()
        listeners = [
            await loop.create_server(protocols, "127.0.0.1", 0)
            for protocols in (guard, factory, server)
        ]
        guarded, bare, plain = (listener.sockets[0].getsockname()[1] for listener in listeners)
        try:
            await main(Servers(guarded, bare, plain, guard, server, events))
            await settled(guard, server)
        finally:
            for listener in listeners:
                listener.close()
            await runner.cleanup()

    asyncio.run(run())


async def settled(guard: ConnectionGuard, server: web.Server) -> None:
    """Wait until the guard counts no connection and aiohttp holds no handler."""
    for _ in range(100):
        if guard.open_connections == 0 and not server.connections:
            return
        await asyncio.sleep(0.02)
    raise AssertionError(f"{guard.open_connections} guarded, {server.connections} open")


def assert_refused(reply: Reply, status: int, text: str) -> None:
    assert reply.status == status
    assert reply.headers["access-control-allow-origin"] == "*"
    assert reply.headers["connection"] == "close"
    assert reply.headers["cache-control"] == "no-store"
    assert reply.headers["content-type"] == "text/plain; charset=utf-8"
    assert reply.body == f"{text}\n".encode()


def test_get_and_keep_alive() -> None:
    async def main(s: Servers) -> None:
        client = await connect(s.guarded)
        for _ in range(3):
            reply = await client.get()
            assert (reply.status, reply.body) == (200, b"ok")
        assert s.guard.open_connections == 1
        client.close()
        assert s.events == []

    serve(main)


def test_pipelined_requests_with_bodies_are_all_answered() -> None:
    requests = (
        GET
        + b"POST /echo HTTP/1.1\r\nHost: t\r\nContent-Length: 5\r\n\r\nhello"
        + b"POST /echo HTTP/1.1\r\nHost: t\r\nTransfer-Encoding: chunked\r\n\r\n"
        + b"3;x=y\r\nabc\r\n2\r\nde\r\n0\r\nTrailer: t\r\n\r\n"
        + GET
    )

    async def main(s: Servers) -> None:
        client = await connect(s.guarded)
        await client.send(requests)
        assert [(await client.reply()).body for _ in range(4)] == [b"ok", b"hello", b"abcde", b"ok"]
        # the same, a byte at a time: the next head is still found after each body
        dribbling = asyncio.create_task(client.dribble(requests, 0))
        assert [(await client.reply()).body for _ in range(4)] == [b"ok", b"hello", b"abcde", b"ok"]
        await dribbling
        client.close()
        assert s.events == []

    serve(main)


def test_idle_connection_gets_408() -> None:
    async def bare(s: Servers) -> None:
        client = await connect(s.bare)
        assert not await client.closed_within(HEAD_DEADLINE)
        client.close()

    async def guarded(s: Servers) -> None:
        loop = asyncio.get_running_loop()
        start = loop.time()
        client = await connect(s.guarded)
        assert_refused(await client.reply(HEAD_DEADLINE), 408, "request head too slow")
        assert await client.closed_within(0.1)
        assert loop.time() - start < HEAD_DEADLINE

    async def main(s: Servers) -> None:
        await asyncio.gather(bare(s), guarded(s))
        assert s.events == ["header_timeout"]

    serve(main)


def test_slowloris_is_cut_off_though_it_keeps_sending() -> None:
    head = b"GET / HTTP/1.1\r\nHost: t\r\nX-Slow: " + b"a" * 50

    async def bare(s: Servers) -> None:
        client = await connect(s.bare)
        dribbling = asyncio.create_task(client.dribble(head, 0.2))
        assert not await client.closed_within(HEAD_DEADLINE)
        dribbling.cancel()
        client.close()

    async def guarded(s: Servers) -> None:
        loop = asyncio.get_running_loop()
        start = loop.time()
        client = await connect(s.guarded)
        dribbling = asyncio.create_task(client.dribble(head, 0.2))
        assert_refused(await client.reply(HEAD_DEADLINE), 408, "request head too slow")
        assert loop.time() - start < HEAD_DEADLINE
        dribbling.cancel()
        client.close()

    async def guarded_later_request(s: Servers) -> None:
        """After a first request its answer may still be on its way: close, without a 408."""
        client = await connect(s.guarded)
        assert (await client.get()).status == 200
        await asyncio.sleep(LIMITS.header_timeout)  # idle between requests is not timed here
        loop = asyncio.get_running_loop()
        start = loop.time()
        dribbling = asyncio.create_task(client.dribble(head, 0.2))
        assert await client.closed_within(HEAD_DEADLINE)
        assert loop.time() - start < HEAD_DEADLINE
        dribbling.cancel()
        client.close()

    async def main(s: Servers) -> None:
        await asyncio.gather(bare(s), guarded(s), guarded_later_request(s))
        assert s.events == ["header_timeout", "header_timeout"]

    serve(main)


def test_long_request_line_gets_414_as_it_arrives() -> None:
    def request(line_length: int) -> bytes:
        line = b"GET /" + b"a" * (line_length - len(b"GET / HTTP/1.1")) + b" HTTP/1.1"
        assert len(line) == line_length
        return line + b"\r\nHost: t\r\n\r\n"

    too_long = request(LIMITS.max_request_line + 1)

    async def main(s: Servers) -> None:
        bare = await connect(s.bare)
        assert (await bare.get(too_long)).status == 404
        bare.close()
        fits = await connect(s.guarded)
        assert (await fits.get(request(LIMITS.max_request_line))).status == 404
        fits.close()
        guarded = await connect(s.guarded)
        await guarded.send(too_long[: LIMITS.max_request_line + 1])  # the line is not even over
        assert_refused(await guarded.reply(), 414, "request line too long")
        assert await guarded.closed_within(0.1)
        assert s.events == ["uri_too_long"]

    serve(main)


def test_too_many_or_too_large_headers_get_431() -> None:
    def request(headers: int, value_length: int = 1) -> bytes:
        """A head with ``headers`` header lines, Host included."""
        fields = b"".join(b"X-%d: %s\r\n" % (n, b"v" * value_length) for n in range(headers - 1))
        return b"GET / HTTP/1.1\r\nHost: t\r\n" + fields + b"\r\n"

    too_many = request(LIMITS.max_headers + 1)
    too_large = request(2, LIMITS.max_header_bytes)

    async def main(s: Servers) -> None:
        for attack in (too_many, too_large):
            bare = await connect(s.bare)
            assert (await bare.get(attack)).status == 200
            bare.close()
        fits = await connect(s.guarded)
        assert (await fits.get(request(LIMITS.max_headers))).status == 200
        fits.close()
        for attack, text in (
            (too_many, "too many header lines"),
            (too_large, "request head too large"),
        ):
            guarded = await connect(s.guarded)
            await guarded.send(attack)
            assert_refused(await guarded.reply(), 431, text)
            assert await guarded.closed_within(0.1)
        assert s.events == ["too_many_headers", "headers_too_large"]

    serve(main)


def test_connections_past_the_cap_get_503_until_some_close() -> None:
    async def main(s: Servers) -> None:
        admitted = [await connect(s.guarded) for _ in range(LIMITS.max_connections)]
        for client in admitted:
            assert (await client.get()).status == 200
        extra = await connect(s.guarded)
        reply = await extra.reply()
        assert_refused(reply, 503, "too many connections, retry shortly")
        assert reply.headers["retry-after"] == "1"
        assert await extra.closed_within(0.1)
        for client in admitted:
            assert (await client.get()).status == 200
        assert s.guard.open_connections == LIMITS.max_connections
        for client in admitted:
            client.close()
        await settled(s.guard, s.server)
        later = [await connect(s.guarded) for _ in range(LIMITS.max_connections)]
        for client in later:
            assert (await client.get()).status == 200
            client.close()
        assert s.events == ["connection_cap"]

    serve(main)


def test_stalled_bodies_are_closed_and_slow_chunks_are_not() -> None:
    stalled_length = b"POST /echo HTTP/1.1\r\nHost: t\r\nContent-Length: 1000\r\n\r\n" + b"x" * 10
    chunked = b"POST /echo HTTP/1.1\r\nHost: t\r\nTransfer-Encoding: chunked\r\n\r\n"
    stalled_chunk = chunked + b"5\r\nhello\r\n"

    async def bare(s: Servers, stalled: bytes) -> None:
        client = await connect(s.bare)
        await client.send(stalled)
        assert not await client.closed_within(BODY_DEADLINE)
        client.close()

    async def guarded_stalled(s: Servers, stalled: bytes) -> None:
        client = await connect(s.guarded)
        loop = asyncio.get_running_loop()
        start = loop.time()
        await client.send(stalled)
        assert await client.closed_within(BODY_DEADLINE)
        assert loop.time() - start < BODY_DEADLINE

    async def guarded_slow_chunks(s: Servers) -> None:
        """Each pause is short; the whole body takes longer than body_timeout."""
        client = await connect(s.guarded)
        await client.send(chunked)
        await client.dribble(b"1\r\na\r\n0\r\n\r\n", LIMITS.body_timeout / 5)
        assert (await client.reply()).body == b"a"
        client.close()

    async def main(s: Servers) -> None:
        await asyncio.gather(
            bare(s, stalled_length),
            bare(s, stalled_chunk),
            guarded_stalled(s, stalled_length),
            guarded_stalled(s, stalled_chunk),
            guarded_slow_chunks(s),
        )
        assert s.events == ["body_timeout", "body_timeout"]

    serve(main)


def test_a_body_the_application_has_not_read_yet_is_not_timed() -> None:
    """aiohttp pauses reading a body its handler has not asked for: that is not a slow client."""

    async def main(s: Servers) -> None:
        client = await connect(s.guarded)
        body = b"x" * 1_000_000  # far more than aiohttp buffers before it pauses reading
        head = b"POST /slow HTTP/1.1\r\nHost: t\r\nContent-Length: %d\r\n\r\n" % len(body)
        client.writer.write(head + body)
        reply = await client.reply()  # /slow takes longer than body_timeout
        assert (reply.status, reply.body) == (200, b"slow")
        await client.writer.drain()
        assert (await client.get()).status == 200
        client.close()
        assert s.events == []

    serve(main, replace(LIMITS, body_timeout=0.2))


def test_parser_errors_carry_cors_and_no_exception_text() -> None:
    malformed = b"GET / HTTP/1.1\r\nBad Header\r\n\r\n"

    async def main(s: Servers) -> None:
        plain = await connect(s.plain)
        reply = await plain.get(malformed)
        assert reply.status == 400
        assert "access-control-allow-origin" not in reply.headers
        assert b"Bad Header" in reply.body  # aiohttp quotes the request back
        plain.close()
        for port in (s.bare, s.guarded):
            client = await connect(port)
            reply = await client.get(malformed)
            assert (reply.status, reply.body) == (400, b"Bad Request\n")
            assert reply.headers["access-control-allow-origin"] == "*"
            assert await client.closed_within(0.5)
        assert s.events == []

    serve(main)


def test_connections_lost_in_any_phase_leave_nothing_behind() -> None:
    """Clients hang up in each phase: the count and aiohttp's handlers come back to nothing
    (``serve`` checks that after every test) and no timer fires later."""

    async def main(s: Servers) -> None:
        partial_head = b"GET / HTTP/1.1\r\nHost"
        partial_body = b"POST /echo HTTP/1.1\r\nHost: t\r\nContent-Length: 9\r\n\r\nabc"
        partial_chunk = b"POST /echo HTTP/1.1\r\nHost: t\r\nTransfer-Encoding: chunked\r\n\r\n5\r\n"
        for data in (b"", GET, partial_head, partial_body, partial_chunk):
            client = await connect(s.guarded)
            await client.send(data)
            await asyncio.sleep(0.05)  # the server reads it: the phase is reached
            client.close()
        slow_answer = await connect(s.guarded)
        await slow_answer.send(b"GET /slow HTTP/1.1\r\nHost: t\r\n\r\n")
        slow_answer.close()  # while the handler runs
        timed_out = await connect(s.guarded)
        assert (await timed_out.reply(HEAD_DEADLINE)).status == 408
        timed_out.close()
        await settled(s.guard, s.server)
        assert s.events == ["header_timeout"]
        await asyncio.sleep(max(LIMITS.header_timeout, LIMITS.body_timeout) + 0.1)
        assert s.events == ["header_timeout"], "a timer outlived its connection"

    serve(main)


def _tls_server_context(folder: Path) -> tuple[ssl.SSLContext, ssl.SSLContext]:
    """A server context with a certificate of a test CA, and a client context trusting it."""
    ca = make_ca(folder)
    issued = ca.issue("guard")
    server = ssl.create_default_context(ssl.Purpose.CLIENT_AUTH)
    server.load_cert_chain(issued.cert, issued.key)
    return server, ssl.create_default_context(cafile=str(ca.root))


@pytest.mark.parametrize("loop_kind", ["asyncio", "uvloop"])
def test_tls_handshakes_count_against_the_cap_from_accept(tmp_path: Path, loop_kind: str) -> None:
    """Clients that connect and never send a ClientHello hold at most the cap; past it a
    connection is closed at once (nothing can be said before TLS); a failed or abandoned
    handshake frees its place; a real client then gets its answer, and the guard's own answers
    carry HSTS over TLS."""
    from iiif_shim.web.connections import TLSGate  # (new with it)

    server_context, client_context = _tls_server_context(tmp_path / "ca")
    failures: list[object] = []
    limits = replace(LIMITS, header_timeout=30.0)  # the idle ones are not timed out meanwhile

    async def run() -> None:
        app = web.Application()
        app.router.add_get("/", ok)
        runner = web.AppRunner(app, access_log=None)
        await runner.setup()
        assert runner.server is not None
        events: list[str] = []
        gate = TLSGate(server_context, 30.0, lambda: 600, lambda peer, exc: failures.append(exc))
        factory = handler_factory(runner.server, keepalive_timeout=30, access_log=None)
        guard = ConnectionGuard(limits, factory, events.append, tls=gate)
        loop = asyncio.get_running_loop()
        listening = socket.create_server(("127.0.0.1", 0))
        listening.setblocking(False)
        port = listening.getsockname()[1]
        handshakes: set[asyncio.Task[None]] = set()

        async def accept() -> None:  # as the server's Listener does
            while True:
                conn, _ = await loop.sock_accept(listening)
                conn.setblocking(False)
                task = loop.create_task(guard.accept_tls(conn))
                handshakes.add(task)
                task.add_done_callback(handshakes.discard)

        accepting = loop.create_task(accept())
        try:
            idle = [await connect(port) for _ in range(20)]
            closed = await asyncio.gather(*(c.closed_within(5) for c in idle[3:]))
            assert all(closed) and guard.open_connections == 3
            assert events.count("connection_cap") == 17
            assert not any(await asyncio.gather(*(c.closed_within(0.2) for c in idle[:3])))
            for client in idle:
                client.close()
            for _ in range(100):
                if guard.open_connections == 0 and len(failures) == 3:
                    break
                await asyncio.sleep(0.05)
            assert guard.open_connections == 0 and len(failures) == 3, failures
            reader, writer = await asyncio.open_connection(
                "127.0.0.1", port, ssl=client_context, server_hostname="localhost"
            )
            writer.write(GET)
            reply = await Client(reader, writer).reply()
            assert reply.status == 200 and reply.body == b"ok"
            writer.close()
            reader, writer = await asyncio.open_connection(
                "127.0.0.1", port, ssl=client_context, server_hostname="localhost"
            )
            writer.write(b"GET /" + b"a" * 200 + b" HTTP/1.1\r\nHost: t\r\n\r\n")
            refused = await Client(reader, writer).reply()
            assert refused.status == 414
            assert refused.headers["strict-transport-security"] == "max-age=600"
            writer.close()
            for _ in range(100):
                if guard.open_connections == 0:
                    break
                await asyncio.sleep(0.05)
            assert guard.open_connections == 0
        finally:
            accepting.cancel()
            listening.close()
            await runner.cleanup()

    if loop_kind == "uvloop":
        import uvloop  # the test extra's: missing is a failure, never a skip

        uvloop.run(run())
    else:
        asyncio.run(run())
