"""A misbehaving upstream HTTP server, for fault-injection tests of the backends.

    python -m tests.faulty --port P [--root DIR]

It is written on raw asyncio streams, not aiohttp, so that it can break HTTP at the byte level.
It answers GET and HEAD (HEAD: the same head, no body) on 127.0.0.1, one request per connection,
always with ``Connection: close``. The first path segment picks the fault; where a fault serves a
file, the rest of the path, percent-decoded, names it under ``--root`` (404 when it is missing or
outside the root). ``n`` is at most 2**31.

- ``/ok/<file>``: 200, the file with its media type (by extension), Content-Length, ETag and
  Last-Modified.
- ``/refuse/...``: closes the connection without an answer.
- ``/reset/...``: sends ``HTTP/1.1 2``, then resets the connection (SO_LINGER 0): ECONNRESET.
- ``/stall/...``: sends nothing and holds the connection until the client goes away.
- ``/slow/<file>``: the head of ``ok`` at once, then the body one byte every 0.5 s.
- ``/html200/...``: 200 ``image/jpeg`` with an HTML error page for a body.
- ``/truncated/<file>``: the head of ``ok`` (full Content-Length), half the body, then a close.
- ``/wrongtype/<file>``: ``ok`` but ``text/plain``. ``/garbage/...``: 200 ``image/png``, 4 KiB of
  random bytes.
- ``/oversize/<n>``: 200 ``image/jpeg``, n bytes (a JPEG start, then zeros) with Content-Length,
  made on the fly. ``/nolength/<n>``: the same without Content-Length (ended by the close).
- ``/gzipbomb/<n>``: 200 ``application/json``, ``Content-Encoding: gzip`` of n zero bytes,
  compressed on the fly, without Content-Length (1e9 bytes are about 1 MB on the wire).
- ``/gzipimage/<n>``: 200 ``image/jpeg``, ``Content-Encoding: gzip`` of n bytes (a JPEG start,
  then zeros), compressed on the fly, without Content-Length (though the client asked for
  ``identity``).
- ``/tailtiff/<n>``: 200 ``image/tiff``, an uncompressed 8-bit grey TIFF of about n bytes (at
  least 64 KiB; 16 000 pixels a row, zeros) whose directory is at the end, after its pixels,
  as many writers leave it; made on the fly, with Content-Length, and ``Range: bytes=a-b``
  (one range) answered 206 with ``Content-Range``. ``/tailtiffwhole/<n>``: the same file, the
  ``Range`` header ignored (always 200 and the whole file).
- ``/ranged/<file>``: ``ok``, with ``Range: bytes=a-b`` (one range) answered 206 with
  ``Content-Range`` (416 past the end); the bytes sent for each path are counted.
- ``/gzipped/<file>``: ``ok`` but ``Content-Encoding: gzip`` (without Content-Length), though
  the client asked for ``identity``, as some stores send what was uploaded compressed.
- ``/gzipjunk/<n>``: 200 ``application/json``, ``Content-Encoding: gzip`` of ``{"ok": true}``,
  then n bytes that are not part of it (without Content-Length).
- ``/trickle/<file>``: ``ok``, its first 2 bytes sent alone, the rest 0.2 s later.
- ``/bomb/<w>x<h>``: 200 ``image/png``, a valid 1-bit greyscale PNG of w x h zero pixels (its raw
  rows at most 2**31 bytes), made once per size in a thread and kept.
- ``/jsonbomb/...``: 200 ``application/json``, 10 MiB of valid JSON: 100 000 nested arrays.
- ``/status/<code>/...``: that status (200-599), with a one-line text body (none for 204 or 304).
- ``/redirect/<location>``: 302 to the rest of the path, percent-decoded once.
- ``/flaky/<k>/<file>``: 503 for the first k requests of that exact path, then ``ok``.
- ``/delay/<seconds>/<file>``: ``ok`` after that many seconds (at most 600).

No connection lasts more than 600 s. Each request is logged as one line ``METHOD TARGET FAULT
REQUEST-ID`` (``-`` without an ``X-Request-ID``) and counted per path (without the query).
``/_stats`` answers ``{"total": N, "paths": {path: count}, "sent": {path: bytes}}`` (``sent``:
the bytes of ``ranged`` bodies); ``/_reset`` clears the counts,
which ``flaky`` uses too. Neither is counted.
"""

from __future__ import annotations

import argparse
import asyncio
import contextlib
import json
import os
import re
import socket
import struct
import zlib
from collections import Counter
from collections.abc import Awaitable, Callable, Iterable, Iterator
from email.utils import formatdate
from http import HTTPStatus
from pathlib import Path
from urllib.parse import unquote_to_bytes

BUNDLED = Path(__file__).resolve().parent.parent / "iiif_shim" / "defaults" / "images"
HEAD_TIMEOUT = 10  # seconds to receive a request head
HEAD_LIMIT = 64 * 1024  # bytes of a request head
CONNECTION_TIMEOUT = 600  # seconds any connection may last: stall, slow, delay
SLOW_INTERVAL = 0.5  # seconds between the bytes of a slow body
CHUNK = 64 * 1024
MAX_BYTES = 2**31
JSON_BOMB_SIZE = 10 * 1024 * 1024
JSON_BOMB_DEPTH = 100_000
TAIL_TIFF_MIN = 64 * 1024
JPEG_START = b"\xff\xd8\xff\xe0"
PNG_SIGNATURE = b"\x89PNG\r\n\x1a\n"
HTML_ERROR = (
    b"<!DOCTYPE html>\n<html><head><title>500 Internal Server Error</title></head>\n"
    b"<body><h1>Internal Server Error</h1><p>The image could not be made.</p></body></html>\n"
)
MEDIA = {
    ".png": "image/png",
    ".jpg": "image/jpeg",
    ".jpeg": "image/jpeg",
    ".tif": "image/tiff",
    ".tiff": "image/tiff",
    ".jp2": "image/jp2",
    ".gif": "image/gif",
    ".json": "application/json",
}


class Exchange:
    """One request on one connection, and the ways to answer it."""

    def __init__(
        self,
        reader: asyncio.StreamReader,
        writer: asyncio.StreamWriter,
        method: str,
        path: str,
        head: bytes = b"",
    ) -> None:
        self.reader = reader
        self.writer = writer
        self.path = path
        self.with_body = method != "HEAD"
        self.request_head = head

    def header(self, name: str) -> str | None:
        """The value of the request's header ``name`` (case-insensitive), if it was sent."""
        wanted = name.lower().encode("latin-1") + b":"
        for line in self.request_head.split(b"\r\n")[1:]:
            if line.lower().startswith(wanted):
                return line.split(b":", 1)[1].strip().decode("latin-1")
        return None

    async def head(self, status: int, headers: dict[str, str]) -> None:
        try:
            reason = HTTPStatus(status).phrase
        except ValueError:
            reason = "Unknown"
        lines = [
            f"HTTP/1.1 {status} {reason}",
            f"Date: {formatdate(usegmt=True)}",
            "Server: faulty",
            *(f"{name}: {value}" for name, value in headers.items()),
            "Connection: close",
        ]
        self.writer.write(("\r\n".join(lines) + "\r\n\r\n").encode("latin-1"))
        await self.writer.drain()

    async def body(self, chunks: Iterable[bytes]) -> None:
        if not self.with_body:
            return
        for chunk in chunks:
            self.writer.write(chunk)
            await self.writer.drain()
            await asyncio.sleep(0)  # other connections run between chunks

    async def send(self, status: int, headers: dict[str, str], body: bytes) -> None:
        await self.head(status, {**headers, "Content-Length": str(len(body))})
        await self.body([body])

    async def text(self, status: int, message: str) -> None:
        body = f"{message}\n".encode()
        await self.send(status, {"Content-Type": "text/plain; charset=utf-8"}, body)


Fault = Callable[[Exchange, str], Awaitable[None]]


class Faulty:
    """The server: the faults, the files they serve, the request counts and the PNG bombs."""

    def __init__(self, root: Path) -> None:
        self.root = root.resolve()
        self.counts: Counter[str] = Counter()
        self.sent: Counter[str] = Counter()
        self.bombs: dict[tuple[int, int], bytes] = {}
        self.faults: dict[str, Fault] = {
            "ok": self.ok,
            "refuse": self.refuse,
            "reset": self.reset,
            "stall": self.stall,
            "slow": self.slow,
            "html200": self.html200,
            "truncated": self.truncated,
            "wrongtype": self.wrongtype,
            "garbage": self.garbage,
            "oversize": self.oversize,
            "nolength": self.nolength,
            "gzipbomb": self.gzipbomb,
            "gzipimage": self.gzipimage,
            "tailtiff": self.tailtiff,
            "tailtiffwhole": self.tailtiff,
            "ranged": self.ranged,
            "gzipped": self.gzipped,
            "gzipjunk": self.gzipjunk,
            "trickle": self.trickle,
            "bomb": self.bomb,
            "jsonbomb": self.jsonbomb,
            "status": self.status,
            "redirect": self.redirect,
            "flaky": self.flaky,
            "delay": self.delay,
        }

    async def handle(self, reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        try:
            async with asyncio.timeout(CONNECTION_TIMEOUT):
                await self.exchange(reader, writer)
        except (ConnectionError, TimeoutError, asyncio.IncompleteReadError):
            pass  # the client went away or was too slow, or the connection outlived its cap
        finally:
            writer.close()

    async def exchange(self, reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        try:
            async with asyncio.timeout(HEAD_TIMEOUT):
                head = await reader.readuntil(b"\r\n\r\n")
        except asyncio.LimitOverrunError:
            print("- - head-too-large", flush=True)
            await Exchange(reader, writer, "GET", "").text(431, "request head over 64 KiB")
            return
        words = head.split(b"\r\n", 1)[0].decode("latin-1").split()
        if len(words) != 3 or not words[1].startswith("/") or not words[2].startswith("HTTP/"):
            print("- - bad-request", flush=True)
            await Exchange(reader, writer, "GET", "").text(400, "bad request line")
            return
        method, target = words[0], words[1]
        path = target.split("?", 1)[0]
        fault, _, tail = path[1:].partition("/")
        rid = next(
            (
                line.split(b":", 1)[1].strip().decode("latin-1")
                for line in head.split(b"\r\n")[1:]
                if line.lower().startswith(b"x-request-id:")
            ),
            "-",
        )
        print(f"{method} {target} {fault} {rid}", flush=True)
        ex = Exchange(reader, writer, method, path, head)
        if method not in ("GET", "HEAD"):
            await ex.head(405, {"Allow": "GET, HEAD", "Content-Length": "0"})
        elif path == "/_stats":
            stats = {
                "total": self.counts.total(),
                "paths": dict(self.counts),
                "sent": dict(self.sent),
            }
            await ex.send(200, {"Content-Type": "application/json"}, json.dumps(stats).encode())
        elif path == "/_reset":
            self.counts.clear()
            self.sent.clear()
            await ex.text(200, "counts cleared")
        else:
            self.counts[path] += 1
            answer = self.faults.get(fault)
            await (answer(ex, tail) if answer else ex.text(404, f"no fault {fault!r}"))

    async def file(self, ex: Exchange, name: str) -> tuple[Path, bytes] | None:
        """The file ``name`` names under the root and its bytes, or None once 404 is sent."""
        path = (self.root / decoded(name).decode("utf-8", "surrogateescape")).resolve()
        if path.is_relative_to(self.root) and path.is_file():
            return path, path.read_bytes()
        await ex.text(404, "no such file")
        return None

    async def ok(self, ex: Exchange, tail: str) -> None:
        if found := await self.file(ex, tail):
            path, body = found
            await ex.head(200, file_headers(path, body))
            await ex.body([body])

    async def refuse(self, ex: Exchange, tail: str) -> None:
        """No answer: the connection is closed once this returns."""

    async def reset(self, ex: Exchange, tail: str) -> None:
        ex.writer.write(b"HTTP/1.1 2")
        await ex.writer.drain()
        await asyncio.sleep(0.1)  # the partial line leaves before the reset drops what is queued
        sock = ex.writer.get_extra_info("socket")
        sock.setsockopt(socket.SOL_SOCKET, socket.SO_LINGER, struct.pack("ii", 1, 0))
        ex.writer.transport.abort()

    async def stall(self, ex: Exchange, tail: str) -> None:
        while await ex.reader.read(CHUNK):
            pass  # until the client closes (or the connection's cap ends it)

    async def slow(self, ex: Exchange, tail: str) -> None:
        if found := await self.file(ex, tail):
            path, body = found
            await ex.head(200, file_headers(path, body))
            for i in range(len(body) if ex.with_body else 0):
                ex.writer.write(body[i : i + 1])
                await ex.writer.drain()
                await asyncio.sleep(SLOW_INTERVAL)

    async def html200(self, ex: Exchange, tail: str) -> None:
        await ex.send(200, {"Content-Type": "image/jpeg"}, HTML_ERROR)

    async def truncated(self, ex: Exchange, tail: str) -> None:
        if found := await self.file(ex, tail):
            path, body = found
            await ex.head(200, file_headers(path, body))
            await ex.body([body[: len(body) // 2]])

    async def wrongtype(self, ex: Exchange, tail: str) -> None:
        if found := await self.file(ex, tail):
            path, body = found
            await ex.head(200, {**file_headers(path, body), "Content-Type": "text/plain"})
            await ex.body([body])

    async def garbage(self, ex: Exchange, tail: str) -> None:
        await ex.send(200, {"Content-Type": "image/png"}, os.urandom(4096))

    async def oversize(self, ex: Exchange, tail: str) -> None:
        if (n := await number(ex, tail, 0, MAX_BYTES)) is not None:
            await ex.head(200, {"Content-Type": "image/jpeg", "Content-Length": str(n)})
            await ex.body(fake_jpeg(n))

    async def nolength(self, ex: Exchange, tail: str) -> None:
        if (n := await number(ex, tail, 0, MAX_BYTES)) is not None:
            await ex.head(200, {"Content-Type": "image/jpeg"})
            await ex.body(fake_jpeg(n))

    async def gzipbomb(self, ex: Exchange, tail: str) -> None:
        if (n := await number(ex, tail, 0, MAX_BYTES)) is not None:
            headers = {"Content-Type": "application/json", "Content-Encoding": "gzip"}
            await ex.head(200, headers)
            await ex.body(gzipped_zeros(n))

    async def gzipimage(self, ex: Exchange, tail: str) -> None:
        if (n := await number(ex, tail, 0, MAX_BYTES)) is not None:
            headers = {"Content-Type": "image/jpeg", "Content-Encoding": "gzip"}
            await ex.head(200, headers)
            await ex.body(gzipped(fake_jpeg(n)))

    async def tailtiff(self, ex: Exchange, tail: str) -> None:
        if (n := await number(ex, tail, TAIL_TIFF_MIN, MAX_BYTES)) is None:
            return
        tiff = TailTiff(n)
        wanted = ex.header("Range") if ex.path.startswith("/tailtiff/") else None
        found = re.fullmatch(r"bytes=(\d+)-(\d*)", wanted or "")
        headers = {"Content-Type": "image/tiff", "ETag": f'"tail-{n:x}"'}
        if found is None:
            await ex.head(200, {**headers, "Content-Length": str(tiff.size)})
            await ex.body(tiff.pieces(0, tiff.size))
            return
        start = int(found[1])
        end = min(int(found[2]) + 1 if found[2] else tiff.size, tiff.size)
        if start >= end:
            await ex.head(416, {"Content-Range": f"bytes */{tiff.size}", "Content-Length": "0"})
            return
        headers["Content-Range"] = f"bytes {start}-{end - 1}/{tiff.size}"
        await ex.head(206, {**headers, "Content-Length": str(end - start)})
        await ex.body(tiff.pieces(start, end))

    async def ranged(self, ex: Exchange, tail: str) -> None:
        if not (found := await self.file(ex, tail)):
            return
        path, body = found
        headers = file_headers(path, body)
        asked = re.fullmatch(r"bytes=(\d+)-(\d*)", ex.header("Range") or "")
        if asked is None:
            self.sent[ex.path] += len(body)
            await ex.head(200, headers)
            await ex.body([body])
            return
        start = int(asked[1])
        end = min(int(asked[2]) + 1 if asked[2] else len(body), len(body))
        if start >= end:
            headers.update({"Content-Range": f"bytes */{len(body)}", "Content-Length": "0"})
            await ex.head(416, headers)
            return
        headers["Content-Range"] = f"bytes {start}-{end - 1}/{len(body)}"
        headers["Content-Length"] = str(end - start)
        self.sent[ex.path] += end - start
        await ex.head(206, headers)
        await ex.body([body[start:end]])

    async def gzipped(self, ex: Exchange, tail: str) -> None:
        if found := await self.file(ex, tail):
            path, body = found
            headers = file_headers(path, body)
            del headers["Content-Length"]
            await ex.head(200, {**headers, "Content-Encoding": "gzip"})
            await ex.body(gzipped([body]))

    async def gzipjunk(self, ex: Exchange, tail: str) -> None:
        if (n := await number(ex, tail, 0, MAX_BYTES)) is not None:
            headers = {"Content-Type": "application/json", "Content-Encoding": "gzip"}
            await ex.head(200, headers)
            await ex.body([zlib.compress(b'{"ok": true}', wbits=31)])
            await ex.body(repeated(n, b"x"))

    async def trickle(self, ex: Exchange, tail: str) -> None:
        if found := await self.file(ex, tail):
            path, body = found
            await ex.head(200, file_headers(path, body))
            await ex.body([body[:2]])
            await asyncio.sleep(0.2)  # the client has read the two bytes alone
            await ex.body([body[2:]])

    async def bomb(self, ex: Exchange, tail: str) -> None:
        w, _, h = tail.partition("x")
        width, height = small_int(w, 1, 2**31 - 1), small_int(h, 1, 2**31 - 1)
        if width is None or height is None or height * (1 + (width + 7) // 8) > MAX_BYTES:
            await ex.text(400, "want /bomb/<w>x<h>, at most 2**31 bytes of raw rows")
            return
        if (width, height) not in self.bombs:
            self.bombs[width, height] = await asyncio.to_thread(png_bomb, width, height)
        await ex.send(200, {"Content-Type": "image/png"}, self.bombs[width, height])

    async def jsonbomb(self, ex: Exchange, tail: str) -> None:
        headers = {"Content-Type": "application/json", "Content-Length": str(JSON_BOMB_SIZE)}
        await ex.head(200, headers)
        await ex.body(json_bomb())

    async def status(self, ex: Exchange, tail: str) -> None:
        code = await number(ex, tail.partition("/")[0], 200, 599)
        if code in (204, 304):
            await ex.head(code, {})
        elif code is not None:
            await ex.text(code, f"status {code}")

    async def redirect(self, ex: Exchange, tail: str) -> None:
        location = decoded(tail).decode("latin-1")
        if not location or any(c in location for c in "\r\n\0"):
            await ex.text(400, "want /redirect/<location> without CR, LF or NUL")
            return
        await ex.send(302, {"Location": location, "Content-Type": "text/plain"}, b"moved\n")

    async def flaky(self, ex: Exchange, tail: str) -> None:
        k, _, name = tail.partition("/")
        failures = await number(ex, k, 0, 10**9)
        if failures is None:
            return
        if self.counts[ex.path] <= failures:
            await ex.text(503, f"failure {self.counts[ex.path]} of {failures}")
        else:
            await self.ok(ex, name)

    async def delay(self, ex: Exchange, tail: str) -> None:
        seconds, _, name = tail.partition("/")
        try:
            wait = float(seconds)
        except ValueError:
            wait = -1
        if not 0 <= wait <= CONNECTION_TIMEOUT:
            await ex.text(400, f"want /delay/<seconds>/<file>, 0 to {CONNECTION_TIMEOUT} s")
            return
        await asyncio.sleep(wait)
        await self.ok(ex, name)


def decoded(text: str) -> bytes:
    """The bytes of a request-target part (read as latin-1), percent-decoded once."""
    return unquote_to_bytes(text.encode("latin-1"))


def small_int(text: str, low: int, high: int) -> int | None:
    if not (text.isascii() and text.isdigit() and len(text) <= 12):
        return None
    value = int(text)
    return value if low <= value <= high else None


async def number(ex: Exchange, text: str, low: int, high: int) -> int | None:
    """``text`` as a whole number from low to high, or None once 400 is sent."""
    value = small_int(text, low, high)
    if value is None:
        await ex.text(400, f"want a whole number from {low} to {high}, not {text!r}")
    return value


def file_headers(path: Path, body: bytes) -> dict[str, str]:
    mtime = path.stat().st_mtime
    return {
        "Content-Type": MEDIA.get(path.suffix.lower(), "application/octet-stream"),
        "Content-Length": str(len(body)),
        "ETag": f'"{len(body):x}-{int(mtime * 1e6):x}"',
        "Last-Modified": formatdate(mtime, usegmt=True),
    }


def repeated(n: int, byte: bytes = b"\0", size: int = CHUNK) -> Iterator[bytes]:
    """n copies of one byte, in pieces of ``size``."""
    block = byte * size
    for start in range(0, n, size):
        yield block[: min(size, n - start)]


def fake_jpeg(n: int) -> Iterator[bytes]:
    yield JPEG_START[:n]
    yield from repeated(n - min(n, len(JPEG_START)))


def gzipped_zeros(n: int) -> Iterator[bytes]:
    return gzipped(repeated(n, size=2**20))  # about 5 ms of compressing each piece


def gzipped(pieces: Iterable[bytes]) -> Iterator[bytes]:
    packer = zlib.compressobj(9, zlib.DEFLATED, 31)  # wbits 31: a gzip header and trailer
    for piece in pieces:
        yield packer.compress(piece)  # often empty, still a point where other connections run
    yield packer.flush()


class TailTiff:
    """An uncompressed 8-bit grey TIFF of about ``n`` bytes, laid out as its header (pointing
    at the end), its pixels (zeros, one strip) and then its directory; never held whole."""

    WIDTH = 16_000

    def __init__(self, n: int) -> None:
        self.width = self.WIDTH
        self.height = max(1, n // self.WIDTH)
        pixels = self.width * self.height
        self.ifd_at = 8 + pixels + (pixels % 2)  # a directory starts on a word boundary
        entries = [  # (tag, type: 3 SHORT / 4 LONG, value), in tag order
            (256, 4, self.width),
            (257, 4, self.height),
            (258, 3, 8),  # BitsPerSample
            (259, 3, 1),  # no compression
            (262, 3, 1),  # BlackIsZero
            (273, 4, 8),  # the strip starts after the header
            (277, 3, 1),  # SamplesPerPixel
            (278, 4, self.height),  # RowsPerStrip: one strip
            (279, 4, pixels),
        ]
        ifd = struct.pack("<H", len(entries))
        for tag, kind, value in entries:
            packed = struct.pack("<HI", value, 0)[:4] if kind == 3 else struct.pack("<I", value)
            ifd += struct.pack("<HHI", tag, kind, 1) + packed
        self.head = b"II*\x00" + struct.pack("<I", self.ifd_at)
        self.tail = ifd + struct.pack("<I", 0)  # no next directory
        self.size = self.ifd_at + len(self.tail)

    def pieces(self, start: int, end: int) -> Iterator[bytes]:
        """Bytes ``start`` to ``end`` (excluded) of the file, in pieces of at most ``CHUNK``."""
        pos = start
        while pos < end:
            if pos < len(self.head):
                piece = self.head[pos:end]
            elif pos < self.ifd_at:
                piece = bytes(min(pos + CHUNK, end, self.ifd_at) - pos)
            else:
                piece = self.tail[pos - self.ifd_at : end - self.ifd_at]
            yield piece
            pos += len(piece)


def json_bomb() -> Iterator[bytes]:
    yield b"[" * JSON_BOMB_DEPTH
    yield from repeated(JSON_BOMB_SIZE - 2 * JSON_BOMB_DEPTH, b" ")
    yield b"]" * JSON_BOMB_DEPTH


def png_chunk(kind: bytes, data: bytes) -> bytes:
    return struct.pack(">I", len(data)) + kind + data + struct.pack(">I", zlib.crc32(kind + data))


def png_bomb(width: int, height: int) -> bytes:
    """A 1-bit greyscale PNG of zeros, its rows compressed one at a time."""
    row = bytes(1 + (width + 7) // 8)  # filter type 0, then the pixels, 8 to a byte
    packer = zlib.compressobj(9)
    idat = b"".join(packer.compress(row) for _ in range(height)) + packer.flush()
    ihdr = struct.pack(">IIBBBBB", width, height, 1, 0, 0, 0, 0)
    return (
        PNG_SIGNATURE
        + png_chunk(b"IHDR", ihdr)
        + png_chunk(b"IDAT", idat)
        + png_chunk(b"IEND", b"")
    )


async def serve(port: int, root: Path) -> None:
    faulty = Faulty(root)
    server = await asyncio.start_server(
        faulty.handle, "127.0.0.1", port, limit=HEAD_LIMIT, backlog=1024
    )
    print(f"faulty on 127.0.0.1:{port}, files from {faulty.root}", flush=True)
    async with server:
        await server.serve_forever()


def main() -> None:
    parser = argparse.ArgumentParser(description="A misbehaving upstream HTTP server.")
    parser.add_argument("--port", type=int, required=True)
    parser.add_argument("--root", type=Path, default=BUNDLED, help="the files faults serve")
    args = parser.parse_args()
    with contextlib.suppress(KeyboardInterrupt):
        asyncio.run(serve(args.port, args.root))


if __name__ == "__main__":
    main()
