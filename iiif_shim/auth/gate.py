"""The gate: the one place that decides who sees which tier of a restricted resource, and that
starts and ends logins and gives out access tokens. Everything else asks it (``web/`` builds a
:class:`Caller` from the request and speaks HTTP; ``auth/`` never does).

**Decision** (:meth:`Gate.decide`, sync, no I/O but a ``stat``, on every tile): a
``kiosk``/``external`` policy is decided by the address alone: ``full`` when its ``networks``
hold the caller's address, or (``bearer_ok``) for a token of that policy bound to that very
address; no cookie is ever made or accepted for it (one taken home would open the room from
outside). For the other kinds the caller is ``full`` when it sends that policy's cookie
(``iiif-shim-auth-<policy>``), validly signed for the session purpose (verified once per
cookie value: the claims are kept for the next tile, :data:`CLAIMS_KEPT` of them), not
expired, its sid not revoked (checked on every call), or ``bearer_ok`` and it sends an
``Authorization: Bearer`` token of that policy, validly signed for the token purpose, not
expired, its session not revoked. Else ``degraded`` when the policy has a ``degraded`` tier,
else ``none``. A policy name the gate does not know is ``none`` (fail closed).

**Values** (``signing.py``; each also carries ``t``, when it was issued, for a full
revocation set's not-before: ``store.py``): a session cookie holds
``{p: policy, u: user, i: sid, e: exp}``;
the user is there for the audit lines of later events (logout, token): the cookie is
``HttpOnly`` and names only its own holder. A token holds ``{p: policy, s: sid}`` (or
``{p, a: keyed hash of the address}`` for kiosk/external) plus its own jti and exp
(``auth.token_ttl``, never beyond the session's end): it is seen by viewer scripts, so it
names no user. A CSRF value holds ``{p: policy, b: binding}``. Each verifies only for its
purpose and policy.

**Audit**: the gate writes the lines of what it does itself: ``login`` (:meth:`start_session`),
``logout`` (:meth:`end_session`), ``login_failed`` and ``rate_limited`` (:meth:`try_login`;
``rate_limited`` also :meth:`allow_session`), ``token`` and ``token_refused``
(:meth:`issue_token`).
``refused`` (a resource denied) is written by the caller that refuses, through
``gate.audit.event(...)``.

**Keys**: ``AuthSettings.keys()``; with none, a random 48-byte key of this process
(the configuration makes one at parse time so all workers of one server share it).
"""

from __future__ import annotations

import functools
import ipaddress
import logging
import math
import secrets
import time
from collections.abc import Mapping
from dataclasses import dataclass
from enum import StrEnum
from pathlib import Path
from types import MappingProxyType
from typing import Any

from iiif_shim.auth.audit import Audit
from iiif_shim.auth.documents import (
    EXPIRED_ASPECT,
    INVALID_ASPECT,
    MISSING_ASPECT,
)
from iiif_shim.auth.settings import AuthSettings, PolicySettings
from iiif_shim.auth.signing import MAX_VALUE, Purpose, Signer
from iiif_shim.auth.store import Store
from iiif_shim.auth.users import (
    CHECK_WAIT,
    MAX_USER,
    CheckBusy,
    Htpasswd,
    parse_address,
    trusted_peer,
)
from iiif_shim.cache.settings import CacheSettings

log = logging.getLogger("iiif_shim")

COOKIE_PREFIX = "iiif-shim-auth-"
CSRF_TTL = 3600  # seconds a login form's CSRF value stays good
IPV6_GROUP = 64  # an IPv6 client counts as its /64 for the per-address limits (one host's)
RANDOM_KEY_BYTES = 48
CLAIMS_KEPT = 4096  # verified cookie values kept (a few hundred bytes each), least used out


def _origin_key(origin: str) -> str:
    """An origin as compared: lower case, without its scheme's default port."""
    key = origin.lower()
    for scheme, port in (("https://", ":443"), ("http://", ":80")):
        if key.startswith(scheme) and key.endswith(port):
            return key[: -len(port)]
    return key


def cookie_name(policy: str) -> str:
    """The name of the cookie that carries a login of ``policy``."""
    return COOKIE_PREFIX + policy


class Tier(StrEnum):
    FULL = "full"
    DEGRADED = "degraded"
    NONE = "none"


@dataclass(frozen=True)
class Caller:
    """Who asks, as ``web/`` read it from the request."""

    address: str  # the client address (X-Forwarded-For only from auth.forwarded_by)
    cookies: Mapping[str, str]
    bearer: str | None  # the Authorization: Bearer value, or None


@dataclass(frozen=True)
class Verdict:
    """What the gate says for one policy and one caller."""

    policy: str | None  # None: public
    tier: Tier
    max_size: int | None  # the degraded tier's max_size when tier is DEGRADED
    user: str | None  # who, for the audit log

    @property
    def full(self) -> bool:
        return self.tier is Tier.FULL


PUBLIC = Verdict(None, Tier.FULL, None, None)


class Outcome(StrEnum):
    OK = "ok"  # the password is right
    FAILED = "failed"  # wrong (or no such user): counted
    LIMITED = "limited"  # too many failures: not tried
    BUSY = "busy"  # the password checker is full: not tried, not counted


@dataclass(frozen=True)
class Attempt:
    """What became of a login attempt (:meth:`Gate.try_login`)."""

    outcome: Outcome
    retry_after: float | None = None  # seconds, for LIMITED and BUSY


@dataclass(frozen=True)
class Session:
    """A login: the policy, who, its sid, when it ends (Unix seconds) and when it began (Unix
    milliseconds)."""

    policy: str
    user: str
    sid: str
    exp: int
    issued: int = 0


def _issued(claims: Mapping[str, object]) -> int:
    """When a value (a token: its login) was issued; 0 for one made before values said so."""
    issued = claims.get("t")
    return issued if type(issued) is int else 0


@dataclass(frozen=True)
class Token:
    """An access token given out, with its claims."""

    value: str
    policy: str
    jti: str
    exp: int
    expires_in: int  # seconds from when it was made


@functools.lru_cache(maxsize=4096)
def limit_key(text: str) -> str:
    """The address a per-address limit counts ``text`` under: an IPv4 address itself, an
    IPv6 address its /:data:`IPV6_GROUP` (a single host or home is given a whole /64, so a
    /128 key would be no limit at all), anything else as it is."""
    found = parse_address(text)
    if isinstance(found, ipaddress.IPv6Address):
        return str(ipaddress.IPv6Network((found, IPV6_GROUP), strict=False))
    return str(found) if found is not None else text


class _Policy:
    """A policy as the hot path wants it: its settings, networks parsed, verdicts made."""

    def __init__(self, name: str, settings: PolicySettings) -> None:
        self.name = name
        self.settings = settings
        self.cookie = cookie_name(name)
        self.networks = tuple(ipaddress.ip_network(n, strict=False) for n in settings.networks)
        self.by_address = settings.kind in ("kiosk", "external")  # no cookie: the address
        max_size = settings.degraded.max_size if settings.degraded is not None else None
        self.other = (
            Verdict(name, Tier.DEGRADED, max_size, None)
            if max_size is not None
            else Verdict(name, Tier.NONE, None, None)
        )
        self.inside = Verdict(name, Tier.FULL, None, None)
        self._holds: dict[str, bool] = {}

    def holds(self, address: str) -> bool:
        """Whether ``address`` is inside the policy's networks (kept per address: at most
        :data:`CLAIMS_KEPT`, then forgotten all at once; the table lives with this policy)."""
        known = self._holds.get(address)
        if known is None:
            if len(self._holds) >= CLAIMS_KEPT:
                self._holds.clear()
            found = parse_address(address)
            known = self._holds[address] = found is not None and any(
                found in n for n in self.networks
            )
        return known


class Gate:
    """See the module docstring."""

    def __init__(
        self,
        settings: AuthSettings,
        store: Store,
        *,
        keys: tuple[bytes, ...] | None = None,
        audit: Audit | None = None,
    ) -> None:
        self.settings = settings
        self.store = store
        keys = keys or settings.keys()
        if not keys:
            log.warning(
                "auth: no signing key (auth.secret, $IIIF_SHIM_AUTH_SECRET): this process "
                "made a random one; its logins are not accepted by other processes"
            )
            keys = (secrets.token_bytes(RANDOM_KEY_BYTES),)
        self.signer = Signer(keys)
        self.audit = audit or Audit(settings.audit_log)
        self._policies = MappingProxyType(
            {name: _Policy(name, p) for name, p in settings.policies.items()}
        )
        self._htpasswd: dict[Path, Htpasswd] = {}
        self._origins = frozenset(_origin_key(o) for o in settings.allowed_origins)
        # verified cookie claims by cookie value (or None: not valid); expiry and revocation
        # are still checked on every call (:meth:`_session`)
        self._session_claims = functools.lru_cache(maxsize=CLAIMS_KEPT)(self._verify_session)

    @classmethod
    async def open(
        cls, settings: AuthSettings, cache: CacheSettings | None, run_dir: Path | None = None
    ) -> Gate:
        """The gate of ``settings``, its store in ``auth.state_dir`` (else the run folder)
        and, with ``cache.redis`` and policies to keep logins of, Redis (a configuration
        without policies never talks to Redis for them)."""
        shared = cache if settings.policies else None
        store = await Store.open(
            settings.state_dir, shared, run_dir, window=settings.max_failures.window
        )
        store.horizon = math.ceil(max(settings.session_ttl, settings.token_ttl))
        return cls(settings, store)

    async def close(self) -> None:
        await self.store.close()
        self.audit.close()

    # --- policies ------------------------------------------------------------------------

    @property
    def policies(self) -> Mapping[str, PolicySettings]:
        return self.settings.policies

    def policy(self, name: str) -> PolicySettings:
        """The settings of policy ``name`` (KeyError when there is none: callers check the
        name against :attr:`policies` first, or answer 404)."""
        return self._policies[name].settings

    # --- the decision --------------------------------------------------------------------

    def decide(self, policy: str | None, caller: Caller, *, bearer_ok: bool = False) -> Verdict:
        """The tier ``caller`` gets of a resource of ``policy`` (see the module docstring)."""
        if policy is None:
            return PUBLIC
        found = self._policies.get(policy)
        if found is None:
            return Verdict(policy, Tier.NONE, None, None)
        if found.networks and found.holds(caller.address):
            return found.inside
        cookie = None if found.by_address else caller.cookies.get(found.cookie)
        if cookie:
            session = self._session(found.name, cookie)
            if session is not None:
                return Verdict(policy, Tier.FULL, None, session.user)
        if bearer_ok and caller.bearer and self._token_ok(found, caller):
            return found.inside
        return found.other

    def _verify_session(self, value: str) -> Mapping[str, Any] | None:
        claims = self.signer.verify(Purpose.SESSION, value)
        return MappingProxyType(claims) if claims is not None else None

    def _session(self, policy: str, value: str) -> Session | None:
        claims = self._session_claims(value) if len(value) <= MAX_VALUE else None
        if claims is None or claims.get("p") != policy or claims["e"] <= time.time():
            return None
        if self.store.revoked(claims["i"], _issued(claims)):
            return None
        user = claims.get("u")
        return Session(
            policy, user if isinstance(user, str) else "", claims["i"], claims["e"], _issued(claims)
        )

    def _token_ok(self, found: _Policy, caller: Caller) -> bool:
        claims = self.signer.verify(Purpose.TOKEN, caller.bearer)
        if claims is None or claims.get("p") != found.name:
            return False
        if self.store.revoked(claims["i"], _issued(claims)):
            return False
        if "a" in claims or found.by_address:  # bound to the address it was given to
            return bool(claims.get("a") == self._address_digest(caller.address))
        sid = claims.get("s")
        return isinstance(sid, str) and not self.store.revoked(sid, _issued(claims))

    # --- sessions ------------------------------------------------------------------------

    def start_session(
        self, policy: str, user: str, *, address: str | None = None
    ) -> tuple[str, Session]:
        """A new login of ``user`` to ``policy``: the cookie's value and the session. Writes
        the ``login`` audit line (``address``: the client's, for that line)."""
        self.policy(policy)
        user = user[:MAX_USER].encode("utf-8", "replace").decode("utf-8")  # no lone surrogate
        value, claims = self.signer.sign(
            Purpose.SESSION, {"p": policy, "u": user}, self.settings.session_ttl
        )
        session = Session(policy, user, claims["i"], claims["e"], claims["t"])
        self.audit.event("login", policy=policy, user=user, address=address)
        return value, session

    def session(self, policy: str, caller: Caller) -> Session | None:
        """The valid, unrevoked login of ``policy`` the caller's cookie carries."""
        found = self._policies.get(policy)
        cookie = caller.cookies.get(cookie_name(policy))
        if found is None or found.by_address or not cookie:
            return None
        return self._session(policy, cookie)

    async def end_session(self, policy: str, caller: Caller) -> None:
        """Log out: the session of ``policy`` that the caller's **cookie** carries (and so
        every token made from it: a token is refused once its sid is) is revoked in every
        process (and machine, with Redis), when it is a login of a ``login`` policy. Nothing
        else is ever revoked, so only logins with credentials (counted per address:
        :meth:`allow_session`) fill the revocations: not a bearer token alone, not a
        kiosk/external token (short-lived, bound to an address that is checked anyway), not
        a clickthrough session (its cookie is cleared in that browser; accepting terms is no
        credential worth a revocation every machine keeps). Writes the ``logout`` line."""
        found = self._policies.get(policy)
        session = self.session(policy, caller)  # None: no login, or one already refused
        reason = None if session is not None else "no session"
        if session is not None and found is not None and found.settings.kind == "login":
            await self.store.revoke(session.sid, session.exp, session.issued)
        elif session is not None:
            reason = "cookie cleared, nothing revoked"
        self.audit.event(
            "logout",
            policy=policy,
            user=session.user if session else None,
            address=caller.address,
            reason=reason,
        )

    # --- tokens --------------------------------------------------------------------------

    def issue_token(self, policy: str, caller: Caller) -> Token | str:
        """An access token for the caller's access to ``policy``; or the Auth 2.0 error
        profile saying why not (``missingAspect``, ``invalidAspect``, ``expiredAspect``).
        Writes the ``token`` or ``token_refused`` line. The origin is checked by the caller
        (:meth:`origin_allowed`)."""
        found = self._policies.get(policy)
        if found is None:
            self.audit.event("token_refused", policy=policy, address=caller.address)
            return INVALID_ASPECT
        ttl = self.settings.token_ttl
        now = time.time()
        cookie = None if found.by_address else caller.cookies.get(found.cookie)
        claims, why = self.signer.examine(Purpose.SESSION, cookie, now=now)
        if claims is not None and (
            claims.get("p") != policy or self.store.revoked(claims["i"], _issued(claims))
        ):
            claims, why = None, "invalid"
        if claims is not None:
            exp = min(int(now + ttl), claims["e"])
            bound: dict[str, str | int] = {"p": policy, "s": claims["i"], "t": _issued(claims)}
            user = claims.get("u") if isinstance(claims.get("u"), str) else None
        elif found.networks and found.holds(caller.address):
            exp, user = int(now + ttl), None
            bound = {"p": policy, "a": self._address_digest(caller.address)}
        else:
            profile = {"missing": MISSING_ASPECT, "expired": EXPIRED_ASPECT}.get(
                why, INVALID_ASPECT
            )
            self.audit.event("token_refused", policy=policy, address=caller.address, reason=profile)
            return profile
        value, signed = self.signer.sign(Purpose.TOKEN, bound, ttl, now=now, expires=exp)
        self.audit.event("token", policy=policy, user=user, address=caller.address)
        return Token(value, policy, signed["i"], exp, max(1, exp - int(now)))

    def _address_digest(self, address: str) -> str:
        return self.signer.digest("token-address", address)

    # --- logins --------------------------------------------------------------------------

    async def try_login(self, policy: str, user: str, password: str, address: str) -> Attempt:
        """Check ``password`` for ``user`` of the policy's htpasswd file, within the limits of
        ``auth.max_failures``. The attempt is counted (for the user and the address)
        **before** bcrypt runs, in one step with the check of the limits (``Store.reserve``),
        so a burst of parallel guesses gets at most the limit checked, not as many as bcrypt
        can do meanwhile. A right password takes its count back (the limits are of
        failures: a reading room's logins from one address never lock it out); so does a
        checker too busy to run (``busy``: nothing was tried, nothing is counted, the user is
        asked to come back). Audited: ``rate_limited``, ``login_failed`` (the user's name only
        when the file has that user, else its keyed hash: a password typed into the user
        field is never written); a success is audited by :meth:`start_session`."""
        found = self._policies.get(policy)
        users = found.settings.users if found is not None else None
        if users is None or users.htpasswd is None:
            return Attempt(Outcome.FAILED)
        checker = self._htpasswd.get(users.htpasswd)
        if checker is None:
            checker = self._htpasswd[users.htpasswd] = Htpasswd(users.htpasswd)
        window = self.settings.max_failures.window
        keys = self._failure_keys(policy, user, address)
        wait, ticket = await self.store.reserve(keys, window)
        if ticket is None:
            self.audit.event(
                "rate_limited",
                policy=policy,
                address=address,
                reason=f"retry after {wait:g}s",
                **self._user_fields(checker, user),
            )
            return Attempt(Outcome.LIMITED, wait)
        try:
            ok = await checker.check(user, password)
        except CheckBusy:
            await self.store.release(ticket, window)
            log.warning("auth: too many password checks waiting; a login was asked to wait")
            return Attempt(Outcome.BUSY, CHECK_WAIT)
        if ok:
            await self.store.release(ticket, window)
            return Attempt(Outcome.OK)
        self.audit.event(
            "login_failed", policy=policy, address=address, **self._user_fields(checker, user)
        )
        return Attempt(Outcome.FAILED)

    async def allow_session(self, policy: str, address: str) -> float | None:
        """``None`` when one more login may start from ``address`` (counted now); else the
        seconds to wait and a ``rate_limited`` line. At most
        ``max_failures.logins_per_address`` logins of ``login`` policies per
        ``max_failures.window`` from one address (:func:`limit_key`): each may end in a
        logout, which the revocations keep until the login would have expired, so these
        logins are what bounds them. Other kinds are not counted: their logouts revoke
        nothing (:meth:`end_session`)."""
        found = self._policies.get(policy)
        if found is None or found.settings.kind != "login":
            return None
        limits = self.settings.max_failures
        key = "s." + self.signer.digest("address", limit_key(address))
        wait, _ = await self.store.reserve([(key, limits.logins_per_address)], limits.window)
        if wait is not None:
            self.audit.event(
                "rate_limited", policy=policy, address=address, reason=f"logins: {wait:g}s"
            )
        return wait

    def _user_fields(self, checker: Htpasswd, user: str) -> dict[str, str | None]:
        """How an audit line names a user typed into a form: as typed when the htpasswd file
        has that user, else ``user: null`` and a keyed hash (the same for the same text)."""
        if checker.known(user):
            return {"user": user}
        return {"user": None, "user_hash": self.signer.digest("audit-user", user)}

    def header_user(self, policy: str, peer: str | None, value: str | None) -> str | None:
        """The user the policy's ``users.header`` names, believed only when the socket peer
        ``peer`` is one of its ``trusted_proxies``; else ``None``."""
        found = self._policies.get(policy)
        users = found.settings.users if found is not None else None
        if users is None or users.header is None or not value:
            return None
        if not trusted_peer(peer, users.trusted_proxies):
            return None
        user = value.strip()
        return user[:MAX_USER] if user and user.isprintable() else None

    def _failure_keys(self, policy: str, user: str, address: str) -> list[tuple[str, int]]:
        limits = self.settings.max_failures
        return [
            ("u." + self.signer.digest("user", f"{policy}\0{user}"), limits.per_user),
            ("a." + self.signer.digest("address", limit_key(address)), limits.per_address),
        ]

    # --- forms and origins ---------------------------------------------------------------

    def csrf(self, policy: str, binding: str = "") -> str:
        """A CSRF value for a form of ``policy``, good for :data:`CSRF_TTL` seconds;
        ``binding`` (e.g. a random value of a cookie set with the form) ties it to one
        browser."""
        value, _ = self.signer.sign(Purpose.CSRF, {"p": policy, "b": binding}, CSRF_TTL)
        return value

    def csrf_ok(self, policy: str, value: str | None, binding: str = "") -> bool:
        claims = self.signer.verify(Purpose.CSRF, value)
        return claims is not None and claims.get("p") == policy and claims.get("b") == binding

    def origin_allowed(self, origin: str | None) -> bool:
        """Whether a token may be posted to ``origin``: any origin when
        ``auth.allowed_origins`` is empty, else one of them (the case of the scheme and host
        ignored, a default port written or not: ``https://x:443`` is ``https://x``). Never one
        that is not ``scheme://host[:port]`` (no path, no quote)."""
        if not origin:
            return False
        scheme, sep, rest = origin.partition("://")
        if scheme.lower() not in ("http", "https") or not sep or not rest or "/" in rest:
            return False
        if any(c in origin for c in "\"'<>\\ \t\r\n") or not origin.isprintable():
            return False
        return not self._origins or _origin_key(origin) in self._origins
