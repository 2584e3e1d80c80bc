"""The ``auth:`` section: access policies (who may see which images, and what everyone else
gets), the keys that sign cookies and tokens, their lifetimes, and the login limits.

A route's ``access:`` (``core/routing.py``) and an object's ``access`` field name a policy of
``auth.policies``; ``config/settings.py`` checks that each name exists. Everything here is read
once and frozen; ``auth/`` builds its gate from it (``auth/gate.py``).
"""

from __future__ import annotations

import ipaddress
import os
import re
from collections.abc import Mapping
from dataclasses import dataclass
from pathlib import Path
from types import MappingProxyType

from iiif_shim.auth.users import htpasswd_findings
from iiif_shim.base.schema import Finding, at_least, option, problem, warning

KINDS = ("login", "clickthrough", "kiosk", "external")
_POLICY_NAME = re.compile(r"[A-Za-z0-9_-]{1,64}")
RESERVED_NAMES = frozenset({"probe"})  # path segments under /auth/ that are not policies
SECRET_ENV = "IIIF_SHIM_AUTH_SECRET"  # the keys when `auth.secret` is not given
MIN_KEY_LENGTH = 32  # characters of one signing key
MAX_KEYS = 16  # keys in the secret (the first signs, every one verifies)
MAX_TTL = 30 * 86400  # seconds a token or a login may live, at most


def _network(value: str) -> str | None:
    try:
        ipaddress.ip_network(value, strict=False)
    except ValueError:
        return f"{value!r} is not an address or a network (CIDR, e.g. 10.20.0.0/16)"
    return None


def _networks(values: tuple[str, ...]) -> str | None:
    return next((p for v in values if (p := _network(v)) is not None), None)


def _origins(values: tuple[str, ...]) -> str | None:
    for value in values:
        scheme, sep, rest = value.partition("://")
        if scheme not in ("http", "https") or not sep or not rest or "/" in rest:
            return (
                f"{value!r} is not an origin: write scheme://host[:port], with no path, "
                "e.g. https://viewer.example.org"
            )
    return None


def _one_line(value: str | None) -> str | None:
    if value is not None and ("\n" in value or "\r" in value or len(value) > 1000):
        return "must be one line of at most 1000 characters"
    return None


@dataclass(frozen=True)
class OIDCSettings:
    """An OpenID Connect provider that signs users in (authorization code flow with PKCE)."""

    issuer: str = option(
        doc="the provider's issuer URL; its `/.well-known/openid-configuration` is read at start"
    )
    client_id: str = option(doc="this server's client id at the provider")
    client_secret: str | None = option(
        None,
        doc="this server's client secret at the provider (absent: a public client, PKCE alone)",
        secret=True,
    )
    scopes: tuple[str, ...] = option(("openid",), doc="scopes asked for; `openid` is needed")
    user_claim: str = option("sub", doc="the ID token's claim that names the user in the audit log")
    require: Mapping[str, str] = option(
        MappingProxyType({}),
        doc="claims the ID token must have for the sign-in to be admitted: each claim equal "
        "to its value, or, when the claim is a list (e.g. `groups`), holding it; otherwise 403 "
        "and a `refused` audit line (e.g. `{groups: library-staff}`). Absent: every account "
        "the provider signs in for this client is admitted (students, guests, social "
        "accounts: restrict them here or at the provider)",
    )
    timeout: float = option(
        10.0, doc="seconds for one request to the provider", check=at_least(0.1)
    )

    def findings(self) -> list[Finding]:
        found: list[Finding] = []
        if "openid" not in self.scopes:
            found.append(problem("scopes", "must hold `openid`"))
        if not self.issuer.startswith(("https://", "http://")):
            found.append(problem("issuer", "must be an http(s) URL"))
        elif self.issuer.startswith("http://") and not _loopback_url(self.issuer):
            found.append(
                warning(
                    "issuer", "is plain http: ID tokens and codes cross the network unencrypted"
                )
            )
        return found


def _loopback_url(url: str) -> bool:
    host = url.split("://", 1)[1].split("/", 1)[0].rsplit(":", 1)[0].strip("[]")
    return host in ("localhost", "127.0.0.1", "::1")


@dataclass(frozen=True)
class UsersSettings:
    """Who may sign in to a `login` policy: exactly one of `htpasswd`, `header`, `oidc`."""

    htpasswd: Path | None = option(
        None,
        doc="an htpasswd file of bcrypt hashes (`htpasswd -B`), relative to the config file; "
        "read again when it changes",
    )
    header: str | None = option(
        None,
        doc="a request header naming the user, set by a single sign-on proxy in front; trusted "
        "only from `trusted_proxies`",
    )
    trusted_proxies: tuple[str, ...] = option(
        (),
        doc="addresses or networks (CIDR) whose `header` is believed; from any other address "
        "the header is ignored",
        check=_networks,
    )
    oidc: OIDCSettings | None = option(None, doc="sign in through an OpenID Connect provider")

    def findings(self) -> list[Finding]:
        given = [k for k in ("htpasswd", "header", "oidc") if getattr(self, k) is not None]
        if len(given) != 1:
            return [
                problem(
                    "",
                    "needs exactly one of `htpasswd`, `header`, `oidc`"
                    + (f" (has {', '.join(given)})" if given else ""),
                )
            ]
        if self.header is not None and not self.trusted_proxies:
            return [problem("trusted_proxies", "is needed with `header` (whom to believe)")]
        if self.header is None and self.trusted_proxies:
            return [problem("trusted_proxies", "is only read with `header`")]
        if self.htpasswd is not None:
            return htpasswd_findings(self.htpasswd, "htpasswd")
        return []


@dataclass(frozen=True)
class DegradedSettings:
    """The tier everyone who may not see the image gets instead."""

    max_size: int = option(
        doc="the longest side, in pixels, of any image of the degraded tier", check=at_least(1)
    )


@dataclass(frozen=True)
class PolicySettings:
    """One access policy: how a user gets access, and what those without it get."""

    kind: str = option(
        doc="`login` (a user signs in), `clickthrough` (a user accepts terms), `kiosk` or "
        "`external` (the client's address decides)",
        check=lambda v: None if v in KINDS else f"must be one of {', '.join(KINDS)}",
    )
    label: str = option(doc="the institution or service, as viewers show it", check=_one_line)
    heading: str | None = option(None, doc="the heading of the login prompt", check=_one_line)
    note: str | None = option(
        None, doc="the text of the login prompt (terms, how to get an account)"
    )
    confirm_label: str | None = option(
        None, doc="the label of the button that opens the login page", check=_one_line
    )
    failure_heading: str | None = option(
        None, doc="the heading shown when access failed", check=_one_line
    )
    failure_note: str | None = option(None, doc="the text shown when access failed")
    users: UsersSettings | None = option(None, doc="`login` only: who may sign in")
    networks: tuple[str, ...] = option(
        (),
        doc="`kiosk` and `external`: client addresses or networks (CIDR) that have access on "
        "every request",
        check=_networks,
    )
    degraded: DegradedSettings | None = option(
        None,
        doc="what everyone without access gets: images no longer than `max_size` on either "
        "side (absent: nothing, 401)",
    )

    def findings(self) -> list[Finding]:
        found: list[Finding] = []
        if self.kind == "login" and self.users is None:
            found.append(problem("users", "a `login` policy needs `users`"))
        if self.kind != "login" and self.users is not None:
            found.append(problem("users", f"is only read by `login` policies, not `{self.kind}`"))
        if self.kind in ("kiosk", "external") and not self.networks:
            found.append(problem("networks", f"a `{self.kind}` policy needs `networks`"))
        if self.kind not in ("kiosk", "external") and self.networks:
            found.append(
                problem(
                    "networks", f"is only read by kiosk and external policies, not `{self.kind}`"
                )
            )
        if self.failure_note is not None and self.failure_heading is None:
            found.append(problem("failure_note", "needs `failure_heading`"))
        return found


@dataclass(frozen=True)
class FailureLimits:
    """How many failed logins (and logins) are allowed before 429."""

    per_user: int = option(10, doc="failed logins of one user name in `window`", check=at_least(1))
    per_address: int = option(
        30, doc="failed logins from one client address in `window`", check=at_least(1)
    )
    window: float = option(600.0, doc="seconds over which failures are counted", check=at_least(1))
    logins_per_address: int = option(
        60,
        doc="logins of `login` policies (passwords, sign-on proxy, OpenID Connect) started "
        "from one client address in `window`, successful ones included, then 429: each may "
        "end in a logout the server remembers until the login would have expired, so this "
        "bounds them; one every 10 s by default, far above a reading room's logins. An IPv6 "
        "address counts as its /64 here and for `per_address`",
        check=at_least(1),
    )


def _keys_text(value: str | None) -> str | None:
    if value is None:
        return None
    keys = [line.strip() for line in value.splitlines() if line.strip()]
    if not keys:
        return "holds no key"
    if len(keys) > MAX_KEYS:
        return f"holds {len(keys)} keys; at most {MAX_KEYS}"
    if any(len(k) < MIN_KEY_LENGTH for k in keys):
        return (
            f"each key (one per line) needs at least {MIN_KEY_LENGTH} characters; make one with "
            "`openssl rand -base64 48`"
        )
    return None


@dataclass(frozen=True)
class AuthSettings:
    secret: str | None = option(
        None,
        doc="the keys that sign cookies and tokens, one per line: the first signs, every one "
        f"verifies (add a new first line to rotate); absent: ${SECRET_ENV}, else a random key "
        "made at start (logins then end at a restart or reload and are not shared with other "
        "machines)",
        secret=True,
        check=_keys_text,
    )
    token_ttl: int = option(
        3600,
        doc="seconds an access token lives",
        check=lambda v: None if 1 <= v <= MAX_TTL else f"must be between 1 and {MAX_TTL}",
    )
    session_ttl: int = option(
        28800,
        doc="seconds a login (its cookie) lives",
        check=lambda v: None if 1 <= v <= MAX_TTL else f"must be between 1 and {MAX_TTL}",
    )
    allowed_origins: tuple[str, ...] = option(
        (),
        doc="the viewer origins (scheme://host[:port]) that may receive tokens; empty: any",
        check=_origins,
    )
    max_failures: FailureLimits = option(
        FailureLimits(),
        doc="failed logins allowed per user and per address (then 429 with `Retry-After`)",
    )
    forwarded_by: tuple[str, ...] = option(
        (),
        doc="addresses or networks (CIDR) of proxies in front (nginx) whose `X-Forwarded-For` "
        "gives the client's address, for `networks`, login limits and the audit log; from any "
        "other peer the header is ignored",
        check=_networks,
    )
    audit_log: Path | None = option(
        None,
        doc="a file that gets one JSON line per login, logout and refusal (absent: the "
        "`iiif_shim.audit` logger, on the server's log)",
    )
    state_dir: Path | None = option(
        None,
        doc="a folder where logouts and failed logins are kept for every process of this "
        "server and across restarts (absent: the server's run folder, so they are forgotten "
        "at a restart; with `cache.redis` they are also shared with other machines)",
    )
    policies: Mapping[str, PolicySettings] = option(
        MappingProxyType({}), doc="access policies by name; a route's `access` names one"
    )

    def keys(self) -> tuple[bytes, ...]:
        """The signing keys (the first signs): from `secret`, else the environment; empty when
        neither gives any (the caller makes a random one)."""
        text = self.secret if self.secret is not None else os.environ.get(SECRET_ENV, "")
        return tuple(k.strip().encode() for k in text.splitlines() if k.strip())

    def findings(self) -> list[Finding]:
        found: list[Finding] = []
        if self.policies and self.secret is None:
            env = os.environ.get(SECRET_ENV)
            if env is None:
                found.append(
                    warning(
                        "secret",
                        "not given (nor $" + SECRET_ENV + "): a random key is made at start, "
                        "so logins end at each restart or reload and other machines do not "
                        "accept them",
                    )
                )
            elif (p := _keys_text(env)) is not None:
                found.append(problem("secret", f"${SECRET_ENV} {p}"))
        for name in self.policies:
            if not _POLICY_NAME.fullmatch(name):
                found.append(
                    problem(
                        f"policies.{name}",
                        "a policy name is 1 to 64 ASCII letters, digits, '-' or '_' (it is "
                        "part of URLs and cookie names)",
                    )
                )
            elif name in RESERVED_NAMES:
                found.append(
                    problem(
                        f"policies.{name}",
                        f"{name!r} is taken by the server's own URLs (/auth/{name}/...); "
                        "choose another name",
                    )
                )
        if self.token_ttl > self.session_ttl:
            found.append(warning("token_ttl", "is longer than `session_ttl`"))
        if self.state_dir is not None and (p := _folder_problem(self.state_dir)) is not None:
            found.append(problem("state_dir", p))
        if self.audit_log is not None and (p := _folder_problem(self.audit_log.parent)):
            found.append(
                warning("audit_log", f"{p}: its lines will go to the server's log instead")
            )
        return found


def _folder_problem(path: Path) -> str | None:
    """Why the shim could not write in the folder ``path`` (made at start when missing, so
    then its nearest existing parent is asked)."""
    existing = path
    while not existing.exists() and existing != existing.parent:
        existing = existing.parent
    if not existing.is_dir():
        return f"{existing} is not a folder"
    if not os.access(existing, os.W_OK | os.X_OK):
        return f"{existing} is not writable by this user"
    return None
