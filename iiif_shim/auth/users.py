"""Who may sign in: the htpasswd files of bcrypt hashes, and the header a trusted single
sign-on proxy sets.

htpasswd: lines ``user:hash``; only bcrypt hashes (``$2y$``, ``$2b$``, ``$2a$``, what
``htpasswd -B`` writes) are accepted: a line of another kind (MD5 ``$apr1$``, SHA-1 ``{SHA}``,
crypt, plain text) matches no password, and :func:`htpasswd_findings` names its line (never
its hash) for ``check-config``. The file is read again when it changes (its size, time or
inode: one ``stat`` per login), at most :data:`MAX_FILE` bytes. Each check runs bcrypt in a
thread, at most :data:`CONCURRENT_CHECKS` at once (bcrypt is slow on purpose: without the
bound a burst of logins would take every thread), waiting at most :data:`CHECK_WAIT` seconds
for a turn; an unknown user is checked against a dummy hash of the same cost, so the time of
the answer does not tell whether the user exists.

Header users: the header names the user only when the request's peer (the socket's address,
never ``X-Forwarded-For``) is inside ``users.trusted_proxies``.
"""

from __future__ import annotations

import asyncio
import functools
import ipaddress
import logging
import os
import re
from dataclasses import dataclass
from pathlib import Path

from iiif_shim.base.files import read_head
from iiif_shim.base.schema import Finding, problem, warning

MAX_FILE = 4 * 1024 * 1024  # bytes of an htpasswd file
MAX_PASSWORD = 72  # bytes of a password bcrypt reads (bcrypt 5 refuses longer ones; the rest is
# cut, as htpasswd -B and every bcrypt before 5 did)
MAX_USER = 128  # characters of a user name (a session's cookie carries it)
CONCURRENT_CHECKS = max(1, min(4, os.cpu_count() or 1))  # bcrypt checks at once, per process
CHECK_WAIT = 10.0  # seconds a check waits for its turn before it fails
_BCRYPT_RE = re.compile(r"\$2[aby]\$(\d\d)\$[./A-Za-z0-9]{53}")
log = logging.getLogger("iiif_shim")


class CheckBusy(Exception):
    """Too many password checks are waiting: the login is refused, try again later."""


@dataclass(frozen=True)
class Parsed:
    """What an htpasswd file holds: bcrypt hashes by user, and the lines that are not."""

    hashes: dict[str, bytes]
    bad_lines: tuple[tuple[int, str], ...]  # (line number, why), never the hash


def parse_htpasswd(text: str) -> Parsed:
    hashes: dict[str, bytes] = {}
    bad: list[tuple[int, str]] = []
    for number, raw in enumerate(text.splitlines(), 1):
        line = raw.strip()
        if not line or line.startswith("#"):
            continue
        user, sep, hashed = line.partition(":")
        if not sep or not user:
            bad.append((number, "is not `user:hash`"))
        elif len(user) > MAX_USER:
            bad.append((number, f"has a user name over {MAX_USER} characters"))
        elif not _BCRYPT_RE.fullmatch(hashed):
            kind = (
                "MD5 ($apr1$)"
                if hashed.startswith("$apr1$")
                else "SHA-1 ({SHA})"
                if hashed.startswith("{SHA}")
                else "not bcrypt"
            )
            bad.append((number, f"user {user!r}: the hash is {kind}; make it with `htpasswd -B`"))
        else:
            hashes[user] = hashed.encode("ascii")
    return Parsed(hashes, tuple(bad))


def _read(path: Path) -> str:
    """The htpasswd file's text, read as every file the configuration names is (a link
    followed, as Kubernetes mounts its Secrets; never a pipe), at most :data:`MAX_FILE`."""
    data = read_head(path, MAX_FILE + 1)
    if len(data) > MAX_FILE:
        raise OSError(f"{path} is larger than {MAX_FILE} bytes")
    return data.decode("utf-8", "replace")


def htpasswd_findings(path: Path, key: str) -> list[Finding]:
    """``check-config``'s findings about the htpasswd file ``path`` (the YAML key ``key``):
    missing, unreadable, too large, no user, lines that are not bcrypt."""
    try:
        parsed = parse_htpasswd(_read(path))
    except OSError as exc:
        return [problem(key, f"cannot read {path}: {exc.strerror or exc}")]
    found = [problem(key, f"{path} line {n} {why}") for n, why in parsed.bad_lines]
    if not parsed.hashes and not parsed.bad_lines:
        found.append(warning(key, f"{path} holds no user: nobody can sign in"))
    return found


class Htpasswd:
    """The users of one htpasswd file, read again when it changes."""

    def __init__(self, path: Path, checks: asyncio.Semaphore | None = None) -> None:
        self.path = path
        self._seen: tuple[int, int, int] | None = None
        self._hashes: dict[str, bytes] = {}
        self._dummy: bytes | None = None
        self._dummy_cost = 0
        self._checks = checks or asyncio.Semaphore(CONCURRENT_CHECKS)
        self._warned = False

    def _load(self) -> None:
        try:
            info = os.stat(self.path)
            seen = (info.st_ino, info.st_size, info.st_mtime_ns)
            if seen == self._seen:
                return
            parsed = parse_htpasswd(_read(self.path))
        except OSError as exc:
            if not self._warned:
                self._warned = True
                log.warning("cannot read the htpasswd file %s: %s", self.path, exc)
            return  # the users last read stay
        self._warned = False
        self._seen, self._hashes = seen, parsed.hashes
        costs = [int(h[4:6]) for h in self._hashes.values()]
        cost = max(set(costs), key=costs.count) if costs else 10
        self._dummy_for(min(max(cost, 4), 16))
        for number, why in parsed.bad_lines:
            log.warning("htpasswd file %s line %d %s: it is ignored", self.path, number, why)

    def _dummy_for(self, cost: int) -> bytes:
        import bcrypt  # here: the configuration reads this module's parser without it

        if self._dummy is None or self._dummy_cost != cost:
            self._dummy = bcrypt.hashpw(os.urandom(16), bcrypt.gensalt(cost))
            self._dummy_cost = cost
        return self._dummy

    def _check(self, user: str, password: bytes) -> bool:
        import bcrypt

        self._load()
        hashed = self._hashes.get(user)
        if hashed is None:
            bcrypt.checkpw(password, self._dummy_for(self._dummy_cost or 10))
            return False
        return bool(bcrypt.checkpw(password, hashed))

    def known(self, user: str) -> bool:
        """Whether the file (as last read) has ``user``."""
        return user in self._hashes

    async def check(self, user: str, password: str) -> bool:
        """Whether ``password`` is ``user``'s; bcrypt in a thread. Raises :class:`CheckBusy`
        when no turn came within :data:`CHECK_WAIT` seconds."""
        secret = password.encode("utf-8", "surrogatepass")[:MAX_PASSWORD]
        if len(user) > MAX_USER:
            user = ""
        try:
            async with asyncio.timeout(CHECK_WAIT):
                await self._checks.acquire()
        except TimeoutError:
            raise CheckBusy from None
        try:
            return await asyncio.to_thread(self._check, user, secret)
        finally:
            self._checks.release()


@functools.lru_cache(maxsize=64)
def _networks(
    proxies: tuple[str, ...],
) -> tuple[ipaddress.IPv4Network | ipaddress.IPv6Network, ...]:
    """``proxies`` parsed, once per configuration's tuple."""
    return tuple(ipaddress.ip_network(p, strict=False) for p in proxies)


def parse_address(text: str) -> ipaddress.IPv4Address | ipaddress.IPv6Address | None:
    """``text`` (a socket peer, an ``X-Forwarded-For`` entry; brackets and an IPv6 zone
    dropped) as an address, an IPv4 address mapped into IPv6 as itself; ``None`` when it is
    not one. The one reading of a client address for every check of ``auth/``."""
    try:
        found = ipaddress.ip_address(text.strip().strip("[]").split("%", 1)[0])
    except ValueError:
        return None
    if isinstance(found, ipaddress.IPv6Address) and found.ipv4_mapped is not None:
        return found.ipv4_mapped
    return found


def trusted_peer(peer: str | None, proxies: tuple[str, ...]) -> bool:
    """Whether the socket peer ``peer`` is inside one of ``proxies`` (addresses or CIDR)."""
    address = parse_address(peer) if peer else None
    return address is not None and any(address in network for network in _networks(proxies))
