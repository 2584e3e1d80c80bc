"""TLS on the listening sockets: the one place an ``ssl.SSLContext`` is made and kept current, and
the plain-HTTP port that sends clients to HTTPS.

- :func:`server_context`: the context for ``server.tls``: the ssl module's secure defaults for a
  server (``create_default_context(Purpose.CLIENT_AUTH)``), TLS 1.2 at least, ALPN
  ``http/1.1`` (aiohttp speaks HTTP/1.1 only: HTTP/2 comes from a proxy in front).
- :class:`Certificates`: what a process serves with. The context given to the listening socket
  stays the same for the process's life; its SNI callback (called on every handshake, with or
  without a server name) hands each new handshake the newest context. A renewal (the ``cert``
  or ``key`` file replaced, in place, by rename or by a symlink swap: seen by their device,
  inode, size and modification time, every ``server.tls.watch`` seconds) or a SIGHUP loads the
  files again, off the event loop, through the same checks as ``check-config``
  (``config/tls.py``); files that fail them (a half-written renewal: the certificate written,
  its key not yet) are logged in one line and the certificate in use is kept, to be tried
  again at the next check. Connections already open keep the certificate they were made with.
- :class:`Redirect`: the handler of ``server.http_redirect_port``: every request gets a 308 to
  the same path and query over HTTPS, nothing else.

A TLS handshake is bounded by ``server.header_timeout`` (``ssl_handshake_timeout`` where the
socket is served); one that fails is the client's business, never a traceback: asyncio's own
server (one process) says nothing of it, a worker's accept loop one debug line
(:func:`handshake_failed`).
"""

from __future__ import annotations

import asyncio
import logging
import os
import ssl
from collections.abc import Callable
from dataclasses import dataclass
from urllib.parse import urlsplit

from aiohttp import web

from iiif_shim.config.tls import TLSSettings, describe, examine
from iiif_shim.web.baseurl import valid_host

log = logging.getLogger("iiif_shim")

CHECK_LIMIT = 30.0  # seconds one look at the certificate files may take (a stuck network mount)
IDLE = 60.0  # seconds between looks at whether watching was turned on (server.tls.watch: 0)

#: (device, inode, size, modification time in ns) of the cert and the key file; None: missing
Signature = tuple[tuple[int, int, int, int] | None, ...]


class CertificateError(Exception):
    """The files of ``server.tls`` cannot be served: one line saying why."""


def server_context(tls: TLSSettings) -> ssl.SSLContext:
    """A server context serving ``tls``'s certificate chain and key (raises ``ssl.SSLError`` or
    ``OSError``). A password is always given, so an encrypted key never makes OpenSSL prompt."""
    context = ssl.create_default_context(ssl.Purpose.CLIENT_AUTH)
    context.minimum_version = ssl.TLSVersion.TLSv1_2
    context.set_alpn_protocols(["http/1.1"])
    context.load_cert_chain(tls.cert, tls.key, password=tls.password or "")
    return context


def signature(tls: TLSSettings) -> Signature:
    """What tells a renewed file from the one served (symlinks followed)."""
    found: list[tuple[int, int, int, int] | None] = []
    for path in (tls.cert, tls.key):
        try:
            facts = os.stat(path)
        except OSError:
            found.append(None)
            continue
        found.append((facts.st_dev, facts.st_ino, facts.st_size, facts.st_mtime_ns))
    return tuple(found)


@dataclass(frozen=True)
class Loaded:
    """A context made from the files as they were at ``signature``."""

    context: ssl.SSLContext
    signature: Signature
    described: str  # which certificate (serial, subject, expiry)
    notes: tuple[str, ...]  # warnings (one that expires soon)


def load(tls: TLSSettings) -> Loaded:
    """Check ``tls``'s files as ``check-config`` does and make a context of them; raises
    :class:`CertificateError`. Reads files: call it off the event loop."""
    before = signature(tls)
    findings = examine(tls)
    problems = [f"server.tls.{f.key}: {f.message}" for f in findings if f.error]
    if problems:
        raise CertificateError("; ".join(problems))
    try:
        context = server_context(tls)
    except (ssl.SSLError, OSError) as exc:
        raise CertificateError(f"server.tls: {exc}") from None
    if signature(tls) != before:  # what was checked may not be what was loaded
        raise CertificateError("server.tls: the files changed while they were read")
    notes = tuple(f"server.tls.{f.key}: {f.message}" for f in findings)
    return Loaded(context, before, describe(tls.cert), notes)


class Certificates:
    """The certificate a process serves, renewed without a restart (see the module's doc)."""

    def __init__(self, tls: TLSSettings, loaded: Loaded) -> None:
        self.tls = tls
        self.context = loaded.context  # given to the listening sockets, for the process's life
        self.current = loaded.context  # what new handshakes get
        self.signature = loaded.signature
        self.described = loaded.described
        self._reported: tuple[Signature, str] | None = None  # the failure last logged
        self._checking: asyncio.Future[Loaded | Signature] | None = None
        self.context.sni_callback = self._choose

    @classmethod
    def open(cls, tls: TLSSettings) -> Certificates:
        """At start (the loop does not serve yet): raises :class:`CertificateError`."""
        loaded = load(tls)
        for note in loaded.notes:
            log.warning("%s", note)
        return cls(tls, loaded)

    def _choose(self, sslobj: ssl.SSLObject, name: str | None, context: ssl.SSLContext) -> None:
        current = self.current
        if current is not context:
            sslobj.context = current

    async def reload(self, tls: TLSSettings | None = None) -> bool:
        """SIGHUP: load the files again (those of ``tls``, a new configuration's, if given),
        changed or not; whether the context now serving comes from them."""
        if tls is not None:
            self.tls = tls
        return await self._renew(force=True)

    async def watch(self) -> None:
        """Every ``tls.watch`` seconds, load the files again if they changed (until cancelled)."""
        while True:
            await asyncio.sleep(self.tls.watch or IDLE)
            if self.tls.watch:
                await self._renew(force=False)

    def _check(self, tls: TLSSettings, known: Signature | None) -> Loaded | Signature:
        """In a thread: a new context, or the signature of files unchanged since ``known``."""
        now = signature(tls)
        if now == known:
            return now
        return load(tls)

    async def _renew(self, force: bool) -> bool:
        tls = self.tls
        if self._checking is not None and not self._checking.done():
            log.warning("server.tls: the last look at the files is not done; not looked again")
            return False
        loop = asyncio.get_running_loop()
        known = None if force else self.signature
        self._checking = loop.run_in_executor(None, self._check, tls, known)
        self._checking.add_done_callback(_retrieved)  # (a look given up on may fail later)
        try:
            async with asyncio.timeout(CHECK_LIMIT):
                found = await asyncio.shield(self._checking)
        except TimeoutError:
            log.warning("server.tls: reading %s took over %gs; kept the certificate in use",
                        tls.cert, CHECK_LIMIT)  # fmt: skip
            return False
        except CertificateError as exc:
            self._failed(tls, str(exc))
            return False
        if not isinstance(found, Loaded):
            return False  # unchanged
        self.current, self.signature, self.described = (
            found.context,
            found.signature,
            found.described,
        )
        self._reported = None
        log.info("server.tls: new connections get the certificate %s", found.described)
        for note in found.notes:
            log.warning("%s", note)
        return True

    def _failed(self, tls: TLSSettings, message: str) -> None:
        """Kept the certificate in use; said once for each state of the files."""
        seen = (signature(tls), message)
        level = logging.DEBUG if seen == self._reported else logging.WARNING
        self._reported = seen
        again = f"looked at again in {tls.watch:g}s" if tls.watch else "again on SIGHUP"
        log.log(level, "server.tls: still serving the certificate %s (%s): %s",
                self.described, again, message)  # fmt: skip


def _retrieved(future: asyncio.Future[Loaded | Signature]) -> None:
    if not future.cancelled():
        future.exception()


def handshake_failed(peer: object, exc: BaseException) -> None:
    """A client's TLS handshake failed or timed out: one debug line, no traceback."""
    log.debug("TLS handshake with %s failed: %s", peer, exc or type(exc).__name__)


class Redirect:
    """The handler of ``server.http_redirect_port``: a 308 to ``https://`` + host + the HTTPS
    port (``server.public_url``'s origin when set, else the request's ``Host`` with its port
    replaced) + the same path and query. A ``Host`` that is not a plain host[:port], or a
    request target that is not a path, is a 400."""

    def __init__(self, port: int, public_url: Callable[[], str | None]) -> None:
        self.port = port
        self.public_url = public_url

    async def __call__(self, request: web.BaseRequest) -> web.StreamResponse:
        target = request.rel_url.raw_path_qs
        if not target.startswith("/") or not target.isascii() or not target.isprintable():
            return _plain(400, "Bad Request: the request target is not a path")
        public = self.public_url()
        if public:
            split = urlsplit(public)
            origin = f"{split.scheme}://{split.netloc}"
        else:
            host = request.headers.get("Host", "")
            if not valid_host(host):
                return _plain(400, "Bad Request: the Host header is not a valid host")
            bare = host[: host.index("]") + 1] if host.startswith("[") else host.split(":")[0]
            origin = f"https://{bare}" + ("" if self.port == 443 else f":{self.port}")
        location = origin + target
        response = _plain(308, f"This server speaks HTTPS: {location}")
        response.headers["Location"] = location
        return response


def _plain(status: int, text: str) -> web.Response:
    return web.Response(
        status=status,
        text=text + "\n",
        content_type="text/plain",
        headers={"Access-Control-Allow-Origin": "*", "Cache-Control": "no-store"},
    )
