"""``http``: master images on a web server, one URL per image from a template.

Facts come from the first bytes only (a ``Range`` request; a server that ignores ``Range`` is read
until Pillow has the header, then the connection is dropped), so an info.json never downloads a
master. Image requests fetch the whole file, bounded by ``max_bytes``; Pillow does the rest.

Upstream answers map to IIIF errors: 404/410 -> 404; refused, 5xx, or a body that is not an image
-> 502; timeout -> 504. Messages name the backend, never the upstream URL (it may hold
credentials).
"""

from __future__ import annotations

import email.utils
from dataclasses import dataclass

import aiohttp
from yarl import URL

from ..errors import BackendError, NotFound
from ..imaging import probe
from ..model import Fetched, NativeOp, SourceInfo, Target
from ..schema import at_least, option
from ..urltemplate import UrlTemplate
from .base import Backend, upstream_errors

_CHUNK = 64 * 1024


def _template(text: str) -> str | None:
    try:
        UrlTemplate.parse(text)
    except ValueError as exc:
        return str(exc)
    return None


@dataclass(frozen=True)
class HttpSettings:
    type: str = option(doc="`http`")
    url: str = option(
        doc="URL template of one image, e.g. `http://host/masters/{id}.tif`", check=_template
    )
    timeout: float = option(
        30.0, doc="seconds for one upstream request, body included", check=at_least(0.1)
    )
    connect_timeout: float = option(5.0, doc="seconds to open a connection", check=at_least(0.1))
    max_connections: int = option(8, doc="concurrent connections to this server", check=at_least(1))
    max_bytes: int = option(
        256 * 1024 * 1024, doc="largest master it will download", check=at_least(1024)
    )
    probe_bytes: int = option(
        256 * 1024, doc="bytes read to learn an image's size", check=at_least(1024)
    )


class HttpBackend(Backend):
    type_name = "http"
    settings_class = HttpSettings
    settings: HttpSettings
    _session: aiohttp.ClientSession | None = None

    @classmethod
    def placeholders(cls, settings: HttpSettings) -> frozenset[str]:
        return UrlTemplate.parse(settings.url).placeholders

    async def start(self) -> None:
        self._template = UrlTemplate.parse(self.settings.url)
        self._session = aiohttp.ClientSession(
            connector=aiohttp.TCPConnector(limit=self.settings.max_connections),
            timeout=aiohttp.ClientTimeout(
                total=None,
                connect=self.settings.connect_timeout,
                sock_read=self.settings.timeout,
            ),
            auto_decompress=False,
        )

    async def close(self) -> None:
        if self._session is not None:
            await self._session.close()

    def url(self, target: Target) -> URL:
        return URL(self._template.expand(target.template_values()), encoded=True)

    @property
    def session(self) -> aiohttp.ClientSession:
        if self._session is None:
            raise RuntimeError("backend not started")
        return self._session

    def _check_status(self, status: int) -> None:
        if status in (404, 410):
            raise NotFound("no such image")
        if status >= 400:
            raise BackendError(f"backend '{self.name}' answered HTTP {status}")

    async def _read(self, resp: aiohttp.ClientResponse, limit: int) -> bytes:
        """Read at most ``limit`` bytes of the body."""
        data = bytearray()
        async for chunk in resp.content.iter_chunked(_CHUNK):
            data += chunk
            if len(data) >= limit:
                break
        return bytes(data[:limit])

    async def facts(self, target: Target) -> SourceInfo:
        url = self.url(target)
        described = f"backend '{self.name}'"
        headers = {"Range": f"bytes=0-{self.settings.probe_bytes - 1}"}
        async with (
            upstream_errors(self.name, self.settings.timeout),
            self.session.get(url, headers=headers) as resp,
        ):
            if resp.status == 416:  # empty file, or a server that dislikes the range
                partial, complete = b"", False
            else:
                self._check_status(resp.status)
                partial = await self._read(resp, self.settings.probe_bytes)
                complete = resp.status == 200 and resp.content.at_eof()
            validators = resp.headers.get("ETag"), resp.headers.get("Last-Modified")
        try:
            width, height, colour, fmt = await self.run_blocking(
                probe, Fetched(data=partial, described=described)
            )
        except BackendError:
            if complete:
                raise
            # The header lies further in (a TIFF with its directory at the end, say).
            whole = await self._download(url)
            width, height, colour, fmt = await self.run_blocking(
                probe, Fetched(data=whole, described=described)
            )
        etag, modified = validators
        return SourceInfo(
            width=width,
            height=height,
            colour=colour,
            format=fmt,
            version=etag or modified,
            last_modified=_http_date(modified),
        )

    async def _download(self, url: URL) -> bytes:
        limit = self.settings.max_bytes
        async with (
            upstream_errors(self.name, self.settings.timeout),
            self.session.get(url) as resp,
        ):
            self._check_status(resp.status)
            if (resp.content_length or 0) > limit:
                raise BackendError(
                    f"backend '{self.name}': the master is larger than max_bytes ({limit})"
                )
            if resp.content_type in ("text/html", "text/plain", "application/json"):
                raise BackendError(f"backend '{self.name}' sent {resp.content_type}, not an image")
            data = await self._read(resp, limit + 1)
        if len(data) > limit:
            raise BackendError(
                f"backend '{self.name}': the master is larger than max_bytes ({limit})"
            )
        return data

    async def fetch(self, target: Target, op: NativeOp, info: SourceInfo) -> Fetched:
        data = await self._download(self.url(target))
        return Fetched(data=data, described=f"backend '{self.name}'")


def _http_date(value: str | None) -> float | None:
    if not value:
        return None
    try:
        return email.utils.parsedate_to_datetime(value).timestamp()
    except (TypeError, ValueError):
        return None
