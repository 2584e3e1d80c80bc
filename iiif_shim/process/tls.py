"""TLS on the listening sockets: the certificate a process serves and keeps current, the last good
pair a supervisor keeps for its workers, and the plain-HTTP port that sends clients to HTTPS.

- :class:`Certificates`: what a process serves with. The context (``config/tls.py``'s
  :func:`~iiif_shim.config.tls.server_context`, the one place a server context is made) given
  to the connection guard stays the same for the process's life; its SNI callback (called on
  every handshake, with or without a server name) hands each new handshake the newest context. A
  renewal (the ``cert`` or ``key`` file replaced, in place, by rename or by a symlink swap: seen
  by their device, inode, size and modification time, every ``server.tls.watch`` seconds) or a
  SIGHUP loads the files again, off the event loop, through the same checks as
  ``check-config``; files that fail them (a half-written renewal: the certificate written, its
  key not yet) are logged in one line and the certificate in use is kept, to be tried again at
  the next check. Connections already open keep the certificate they were made with. At each
  tick (every ``watch`` seconds, else every :data:`IDLE`) it also looks at the served
  certificate's dates, with no I/O: a warning a day within ``EXPIRY_WARNING`` of its end, an
  error a day once it has ended (it is still served, as nginx does). Nothing stops the watch:
  an unexpected exception is logged once for each distinct error and the next tick tries again.
- At start a process serves the configured files when they pass every check; otherwise (files
  that went bad after the supervisor checked them: mid-renewal, a permission change, expiry)
  the last good pair the supervisor kept (:func:`good_pair`, in its memory, handed to the
  worker as sealed in-memory files: ``handover.py``, :func:`kept`), and else the configured
  files if only their dates are wrong (an error line): a worker that
  replaces a dead one never dies of its certificate files. ``check-config`` and the first
  start refuse an expired certificate through the configuration's checks.
- :class:`Redirect`: the handler of ``server.http_redirect_port``: every request gets a 308 to
  the same path and query over HTTPS, except ``GET /.well-known/acme-challenge/<token>``, which
  is answered from ``server.tls.acme_dir`` (certbot's ``--webroot`` folder) when it is set,
  walking down from that folder without following any link.

The TLS handshake itself is done by the connection guard (``web/connections.py``), which counts
a connection from accept, handshake included, and bounds the handshake by
``server.header_timeout``; one that fails is the client's business, never a traceback: one
debug line (:func:`handshake_failed`) and a count in the metrics.
"""

from __future__ import annotations

import asyncio
import datetime
import logging
import os
import re
import ssl
import stat
from collections.abc import Callable
from dataclasses import dataclass, field, replace
from pathlib import Path
from urllib.parse import urlsplit

from aiohttp import web

from iiif_shim.base.files import FOLDER, READ
from iiif_shim.config.tls import EXPIRY_WARNING, TLSSettings, inspect, server_context
from iiif_shim.process import handover
from iiif_shim.web.baseurl import valid_host

log = logging.getLogger("iiif_shim")

CHECK_LIMIT = 30.0  # seconds one look at the certificate files may take (a stuck network mount)
IDLE = 60.0  # seconds between ticks when server.tls.watch is 0 (the dates are still looked at)
DAY = datetime.timedelta(days=1)
ACME_PREFIX = "/.well-known/acme-challenge/"
MAX_CHALLENGE = 4096  # bytes: a key authorization is about 90
_TOKEN = re.compile(r"[A-Za-z0-9_-]{1,255}")

#: (device, inode, size, modification time in ns) of the cert and the key file; None: missing
Signature = tuple[tuple[int, int, int, int] | None, ...]


class CertificateError(Exception):
    """The files of ``server.tls`` cannot be served: one line saying why."""


def signature(tls: TLSSettings) -> Signature:
    """What tells a renewed file from the one served (symlinks followed). Does I/O."""
    found: list[tuple[int, int, int, int] | None] = []
    for path in (tls.cert, tls.key):
        try:
            facts = os.stat(path)
        except (OSError, ValueError):  # (ValueError: a NUL in the path)
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
    not_after: datetime.datetime
    notes: tuple[str, ...]  # warnings (one that expires soon)
    errors: tuple[str, ...] = ()  # served all the same: its dates (only when told to)


@dataclass(frozen=True)
class Failed:
    """Files that cannot be served, as they were at ``signature``."""

    signature: Signature
    message: str


def load(tls: TLSSettings, dates: bool = True) -> Loaded:
    """Check ``tls``'s files as ``check-config`` does and make a context of them; raises
    :class:`CertificateError`. ``dates`` False: a certificate expired or not yet valid is
    loaded, its problem in ``errors``. Reads files: call it off the event loop."""
    before = signature(tls)
    found = inspect(tls)
    problems = [f"server.tls.{f.key}: {f.message}" for f in found.problems]
    dated = [f"server.tls.{f.key}: {f.message}" for f in found.dates]
    if problems or (dates and dated):
        raise CertificateError("; ".join(dated + problems))
    try:
        context = server_context(tls)
    except (ssl.SSLError, OSError, ValueError) as exc:
        raise CertificateError(f"server.tls: {exc}") from None
    if signature(tls) != before or found.leaf is None:  # what was checked is not what was loaded
        raise CertificateError("server.tls: the files changed while they were read")
    notes = tuple(f"server.tls.{f.key}: {f.message}" for f in found.findings)
    return Loaded(
        context,
        before,
        found.described(),
        found.leaf.not_valid_after_utc,
        notes,
        tuple(dated),
    )


@dataclass(frozen=True)
class Pair:
    """A certificate chain and its key, as their files held them when they passed every check:
    what a supervisor keeps in memory for workers that start later."""

    cert: bytes = field(repr=False)
    key: bytes = field(repr=False)
    described: str  # which certificate (serial, subject, expiry)


def good_pair(tls: TLSSettings) -> Pair | None:
    """A supervisor's: ``tls``'s files when they pass every check, dates included (None
    otherwise). Reads files: call it off the event loop."""
    before = signature(tls)
    found = inspect(tls)
    if found.problems or found.dates or found.leaf is None or signature(tls) != before:
        return None
    return Pair(found.cert_data, found.key_data, found.described())


def kept(tls: TLSSettings, fds: tuple[int, ...]) -> TLSSettings | None:
    """``tls`` reading the pair its supervisor handed over (the descriptors of the certificate
    and of the key: ``handover.py``), if it did."""
    if len(fds) != 2:
        return None
    cert, key = (handover.path(fd) for fd in fds)
    return replace(tls, cert=cert, key=key)


def _open(tls: TLSSettings, fallback: TLSSettings | None) -> Loaded:
    """At start: the configured files if they pass every check, else the last good pair kept by
    the supervisor, else the configured files whatever their dates say."""
    try:
        return load(tls)
    except CertificateError as exc:
        trouble = exc
    if fallback is not None:
        try:
            loaded = load(fallback, dates=False)
        except CertificateError:
            pass
        else:
            log.error(
                "server.tls: %s; serving the last good certificate the supervisor kept (%s) "
                "until the files pass the checks",
                trouble,
                loaded.described,
            )
            return replace(loaded, signature=signature(tls))  # the configured files: watched
    return load(tls, dates=False)


class Certificates:
    """The certificate a process serves, renewed without a restart (see the module's doc)."""

    def __init__(
        self,
        tls: TLSSettings,
        loaded: Loaded,
        on_change: Callable[[datetime.datetime], None] | None = None,
    ) -> None:
        self.tls = tls
        self.context = loaded.context  # given to the connection guard, for the process's life
        self.current = loaded.context  # what new handshakes get
        self.signature = loaded.signature
        self.described = loaded.described
        self.not_after = loaded.not_after
        self.on_change = on_change
        self._reported: tuple[Signature, str] | None = None  # the failure last logged
        self._checking: asyncio.Future[Loaded | Signature | Failed] | None = None
        self._told: dict[tuple[str, datetime.datetime], datetime.datetime] = {}
        self._unexpected: set[str] = set()  # errors already logged by the watch
        self.context.sni_callback = self._choose
        for error in loaded.errors:
            log.error("%s: served all the same", error)
        if on_change is not None:
            on_change(self.not_after)

    @classmethod
    def open(
        cls,
        tls: TLSSettings,
        fallback: TLSSettings | None = None,
        on_change: Callable[[datetime.datetime], None] | None = None,
    ) -> Certificates:
        """At start (the loop does not serve yet; reads files): raises :class:`CertificateError`
        only when neither the files nor ``fallback`` (the pair the supervisor kept) can be
        served at all."""
        loaded = _open(tls, fallback)
        for note in loaded.notes:
            log.warning("%s", note)
        return cls(tls, loaded, on_change)

    def _choose(self, sslobj: ssl.SSLObject, name: str | None, context: ssl.SSLContext) -> None:
        current = self.current
        if current is not context:
            sslobj.context = current

    def status(self, now: datetime.datetime | None = None) -> dict[str, object]:
        """For ``/health/ready``: when the served certificate ends, and in how many days."""
        left = self.not_after - (now or datetime.datetime.now(datetime.UTC))
        return {
            "not_after": self.not_after.isoformat().replace("+00:00", "Z"),
            "days_left": round(left / DAY, 1),
        }

    def check_expiry(self, now: datetime.datetime | None = None) -> None:
        """A warning a day within ``EXPIRY_WARNING`` of the served certificate's end, an error
        a day after it (no I/O)."""
        now = now or datetime.datetime.now(datetime.UTC)
        left = self.not_after - now
        if left >= EXPIRY_WARNING:
            return
        kind = "expired" if left <= datetime.timedelta(0) else "soon"
        last = self._told.get((kind, self.not_after))
        if last is not None and now - last < DAY:
            return
        self._told[(kind, self.not_after)] = now
        when = self.not_after.strftime("%Y-%m-%d %H:%M UTC")
        if kind == "expired":
            log.error(
                "server.tls: serving an expired certificate (%s) since %s: clients refuse it; "
                "renew it",
                self.described,
                when,
            )
        else:
            log.warning(
                "server.tls: the certificate served (%s) expires in %s: renew it",
                self.described,
                f"{left / DAY:.1f} days",
            )

    async def reload(self, tls: TLSSettings | None = None) -> bool:
        """SIGHUP: load the files again (those of ``tls``, a new configuration's, if given),
        changed or not; whether the context now serving comes from them."""
        if tls is not None:
            self.tls = tls
        return await self._renew(force=True)

    async def watch(self) -> None:
        """Every ``tls.watch`` seconds, load the files again if they changed, and look at the
        dates (every :data:`IDLE` seconds when ``watch`` is 0); until cancelled, whatever fails."""
        while True:
            await asyncio.sleep(self.tls.watch or IDLE)
            try:
                if self.tls.watch:
                    await self._renew(force=False)
                self.check_expiry()
            except Exception as exc:
                self._failed_unexpectedly(exc)

    def _check(self, tls: TLSSettings, known: Signature | None) -> Loaded | Signature | Failed:
        """In a thread: a new context, the signature of files unchanged since ``known``, or why
        the files cannot be served."""
        now = signature(tls)
        if now == known:
            return now
        try:
            return load(tls)
        except CertificateError as exc:
            return Failed(signature(tls), str(exc))

    async def _renew(self, force: bool) -> bool:
        tls = self.tls
        if self._checking is not None and not self._checking.done():
            log.warning(
                "server.tls: the last look at the files is not done; not looked again (%s)",
                f"the next look in {tls.watch:g}s" if tls.watch else "send SIGHUP again later",
            )
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
        except Exception as exc:
            self._failed_unexpectedly(exc)
            return False
        if isinstance(found, Failed):
            self._failed(tls, found)
            return False
        if not isinstance(found, Loaded):
            return False  # unchanged
        self.current, self.signature, self.described, self.not_after = (
            found.context,
            found.signature,
            found.described,
            found.not_after,
        )
        self._reported = None
        log.info("server.tls: new connections get the certificate %s", found.described)
        for note in found.notes:
            log.warning("%s", note)
        if self.on_change is not None:
            self.on_change(self.not_after)
        return True

    def _failed(self, tls: TLSSettings, failed: Failed) -> None:
        """Kept the certificate in use; said once for each state of the files."""
        seen = (failed.signature, failed.message)
        level = logging.DEBUG if seen == self._reported else logging.WARNING
        self._reported = seen
        again = f"looked at again in {tls.watch:g}s" if tls.watch else "again on SIGHUP"
        log.log(level, "server.tls: still serving the certificate %s (%s): %s",
                self.described, again, failed.message)  # fmt: skip

    def _failed_unexpectedly(self, exc: BaseException) -> None:
        """Logged once for each distinct error (with its traceback); the next tick tries again."""
        said = f"{type(exc).__name__}: {exc}"
        first = said not in self._unexpected
        self._unexpected.add(said)
        log.log(
            logging.ERROR if first else logging.DEBUG,
            "server.tls: looking at the files failed (%s); still serving the certificate %s, "
            "tried again at the next check",
            said,
            self.described,
            exc_info=exc if first else None,
        )


def _retrieved(future: asyncio.Future[Loaded | Signature | Failed]) -> None:
    if not future.cancelled():
        future.exception()


def handshake_failed(peer: object, exc: BaseException) -> None:
    """A client's TLS handshake failed or timed out: one debug line, no traceback."""
    log.debug("TLS handshake with %s failed: %s", peer, exc or type(exc).__name__)


def read_challenge(folder: Path, token: str) -> bytes | None:
    """The file ``folder/.well-known/acme-challenge/<token>`` (certbot's ``--webroot`` layout),
    opened one step at a time from ``folder`` (each folder ``O_DIRECTORY|O_NOFOLLOW`` relative
    to the one before, the file ``O_NOFOLLOW``): a link anywhere on the way (``acme-challenge``
    a link to ``/proc/self`` or ``/etc``) gives None, as does a file that is not regular, not on
    ``folder``'s device or more than :data:`MAX_CHALLENGE` bytes. Does I/O."""
    if not _TOKEN.fullmatch(token):
        return None
    flags = os.O_RDONLY | os.O_NONBLOCK | os.O_CLOEXEC
    opened: list[int] = []
    try:
        opened.append(os.open(folder, flags | os.O_DIRECTORY))
        device = os.fstat(opened[0]).st_dev
        for part in (".well-known", "acme-challenge"):
            opened.append(os.open(part, FOLDER, dir_fd=opened[-1]))
        opened.append(os.open(token, READ, dir_fd=opened[-1]))
        facts = os.fstat(opened[-1])
        if (
            not stat.S_ISREG(facts.st_mode)
            or facts.st_dev != device
            or facts.st_size > MAX_CHALLENGE
        ):
            return None
        data = os.read(opened[-1], MAX_CHALLENGE + 1)
    except (OSError, ValueError):
        return None
    finally:
        for fd in reversed(opened):
            os.close(fd)
    return data if len(data) <= MAX_CHALLENGE else None


class Redirect:
    """The handler of ``server.http_redirect_port``: a 308 to ``https://`` + host + the HTTPS
    port (``server.public_url``'s origin when set, else the request's ``Host`` with its port
    replaced) + the same path and query. A ``Host`` that is not a plain host[:port], or a
    request target that is not a path, is a 400. With ``acme_dir`` giving a folder, ``GET`` or
    ``HEAD`` of ``/.well-known/acme-challenge/<token>`` (letters, digits, ``-`` and ``_``)
    answers that file (:func:`read_challenge`) or 404."""

    def __init__(
        self,
        port: int,
        public_url: Callable[[], str | None],
        acme_dir: Callable[[], Path | None] = lambda: None,
    ) -> None:
        self.port = port
        self.public_url = public_url
        self.acme_dir = acme_dir

    async def __call__(self, request: web.BaseRequest) -> web.StreamResponse:
        target = request.rel_url.raw_path_qs
        if not target.startswith("/") or not target.isascii() or not target.isprintable():
            return _plain(400, "Bad Request: the request target is not a path")
        folder = self.acme_dir()
        token = target.removeprefix(ACME_PREFIX)
        if (
            folder is not None
            and token != target
            and request.method in ("GET", "HEAD")
            and _TOKEN.fullmatch(token)
        ):
            return await _challenge(folder, token)
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


async def _challenge(folder: Path, token: str) -> web.Response:
    try:
        async with asyncio.timeout(CHECK_LIMIT):
            data = await asyncio.to_thread(read_challenge, folder, token)
    except TimeoutError:
        data = None
    if data is None:
        return _plain(404, "Not Found: no such ACME challenge")
    return web.Response(
        body=data,
        content_type="text/plain",
        headers={"Cache-Control": "no-store"},
    )


def _plain(status: int, text: str) -> web.Response:
    return web.Response(
        status=status,
        text=text + "\n",
        content_type="text/plain",
        headers={"Access-Control-Allow-Origin": "*", "Cache-Control": "no-store"},
    )
