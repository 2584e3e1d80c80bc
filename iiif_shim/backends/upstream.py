"""The HTTP side every network backend shares: settings, one client per backend, error mapping.

Each backend that talks to a legacy server over HTTP has its own :class:`Upstream` (so its
connection limit and timeouts are its own) and gets answers through :meth:`Upstream.get`, which
turns every upstream fault into the shim's errors, naming the backend and never its URL:
404/410 -> 404; refused, other 4xx/5xx, a body over ``max_bytes`` or a body that is not what
was promised -> 502; no answer within ``timeout`` -> 504.
"""

from __future__ import annotations

import asyncio
import email.utils
from collections.abc import AsyncIterator, Mapping
from contextlib import asynccontextmanager
from dataclasses import dataclass

import aiohttp
from yarl import URL

from ..errors import BackendError, BackendTimeout, NotFound, ShimError
from ..schema import at_least, option

_CHUNK = 64 * 1024

# Leading bytes of the image formats legacy servers send.
_IMAGE_MAGIC = (
    b"\xff\xd8\xff",  # JPEG
    b"\x89PNG\r\n\x1a\n",
    b"GIF87a",
    b"GIF89a",
    b"II*\x00",  # TIFF
    b"MM\x00*",
    b"II+\x00",  # BigTIFF
    b"MM\x00+",
    b"\x00\x00\x00\x0cjP  \r\n\x87\n",  # JPEG 2000 (JP2)
    b"\xff\x4f\xff\x51",  # JPEG 2000 codestream
    b"BM",
)


@asynccontextmanager
async def upstream_errors(backend: str, timeout: float) -> AsyncIterator[None]:
    """Translate aiohttp and timeout failures into 502/504 naming the backend, never its URL."""
    try:
        async with asyncio.timeout(timeout):
            yield
    except ShimError:
        raise
    except TimeoutError:
        raise BackendTimeout(f"backend '{backend}' did not answer within {timeout:g}s") from None
    except aiohttp.ClientConnectorError as exc:
        reason = exc.os_error.strerror if exc.os_error else "connection failed"
        raise BackendError(f"backend '{backend}' is unreachable ({reason})") from None
    except aiohttp.ClientPayloadError:
        raise BackendError(f"backend '{backend}' sent a broken response body") from None
    except aiohttp.ClientError as exc:
        raise BackendError(f"backend '{backend}' failed ({type(exc).__name__})") from None


def looks_like_image(data: bytes) -> bool:
    if data[:4] == b"RIFF" and data[8:12] == b"WEBP":
        return True
    return any(data.startswith(magic) for magic in _IMAGE_MAGIC)


@dataclass(frozen=True, kw_only=True)
class UpstreamSettings:
    """Connection settings shared by every HTTP backend (each backend adds its own keys)."""

    timeout: float = option(
        30.0, doc="seconds for one upstream request, body included", check=at_least(0.1)
    )
    connect_timeout: float = option(5.0, doc="seconds to open a connection", check=at_least(0.1))
    max_connections: int = option(8, doc="concurrent connections to this server", check=at_least(1))
    max_bytes: int = option(
        256 * 1024 * 1024, doc="largest response it will read", check=at_least(1024)
    )


@dataclass(frozen=True)
class Answer:
    status: int
    headers: Mapping[str, str]  # case-insensitive
    body: bytes
    complete: bool  # the whole body was read (not cut at a limit)

    @property
    def content_type(self) -> str:
        return self.headers.get("Content-Type", "").split(";", 1)[0].strip().lower()

    def text(self) -> str:
        return self.body.decode("utf-8", "replace")

    @property
    def version(self) -> str | None:
        """What changes when the resource changes: its ETag, else its Last-Modified."""
        return self.headers.get("ETag") or self.headers.get("Last-Modified")

    @property
    def last_modified(self) -> float | None:
        value = self.headers.get("Last-Modified")
        if not value:
            return None
        try:
            return email.utils.parsedate_to_datetime(value).timestamp()
        except (TypeError, ValueError):
            return None


class Upstream:
    """One backend's HTTP client."""

    def __init__(self, backend: str, settings: UpstreamSettings) -> None:
        self.backend = backend
        self.settings = settings
        self._session: aiohttp.ClientSession | None = None
        self.requests = 0  # what this backend has asked and received (for /health and probe)
        self.bytes_received = 0

    async def start(self) -> None:
        s = self.settings
        self._session = aiohttp.ClientSession(
            connector=aiohttp.TCPConnector(limit=s.max_connections),
            timeout=aiohttp.ClientTimeout(
                total=None, connect=s.connect_timeout, sock_read=s.timeout
            ),
            auto_decompress=True,
        )

    async def close(self) -> None:
        if self._session is not None:
            await self._session.close()

    async def get(
        self,
        url: str | URL,
        *,
        headers: Mapping[str, str] | None = None,
        limit: int | None = None,
        image: bool = False,
        what: str = "",
    ) -> Answer:
        """GET ``url``; read at most ``limit`` bytes (default ``max_bytes``; more is a 502
        unless a ``limit`` was asked for); with ``image``, the body must be an image."""
        if self._session is None:
            raise RuntimeError("backend not started")
        name = self.backend
        cap = limit or self.settings.max_bytes
        target = url if isinstance(url, URL) else URL(url, encoded=True)
        async with (
            upstream_errors(name, self.settings.timeout),
            self._session.get(target, headers=headers, allow_redirects=True) as resp,
        ):
            if resp.status in (404, 410):
                raise NotFound("no such image" + (f" ({what})" if what else ""))
            if resp.status >= 400 and resp.status != 416:
                raise BackendError(
                    f"backend '{name}' answered HTTP {resp.status}"
                    + (f" for {what}" if what else "")
                )
            if limit is None and (resp.content_length or 0) > cap:
                raise BackendError(
                    f"backend '{name}': the response is larger than max_bytes ({cap})"
                )
            body = bytearray()
            async for chunk in resp.content.iter_chunked(_CHUNK):
                body += chunk
                if len(body) > cap:
                    break
            complete = resp.content.at_eof() and len(body) <= cap
            # headers.copy() keeps the lookups case-insensitive ("Etag" is "ETag")
            answer = Answer(resp.status, resp.headers.copy(), bytes(body[:cap]), complete)
        self.requests += 1
        self.bytes_received += len(answer.body)
        if not complete and limit is None:
            raise BackendError(f"backend '{name}': the response is larger than max_bytes ({cap})")
        if image and not looks_like_image(answer.body):
            kind = answer.content_type or "something else"
            raise BackendError(
                f"backend '{name}' sent {kind}, not an image" + (f" for {what}" if what else "")
            )
        return answer
