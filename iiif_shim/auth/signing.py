"""Signed values: the one place that makes and checks the cookies, tokens, CSRF values and
OIDC states of ``auth/``.

A value is ``<payload>.<mac>``: the payload is the claims as compact JSON, base64url without
padding; the mac is HMAC-SHA256 over ``<purpose>|<payload>`` with a key of ``auth.secret``,
base64url. Both parts use only ``A-Z a-z 0-9 - _``, so a value fits a cookie, a URL and an
``Authorization: Bearer`` header as it is.

- **Purpose**: the mac covers the purpose (:class:`Purpose`), so a value made for one purpose
  never verifies as another: a token sent as a cookie, a cookie sent as a token, a CSRF value
  as either: refused.
- **Keys**: the first key signs, every key verifies (rotation: add a new first line).
- **Claims**: every value carries ``i`` (a random id of 96 bits: the session's sid, the token's
  jti; two values made in the same second are never equal), ``e`` (when it expires, Unix
  seconds), checked on every verify, and ``t`` (when it was issued, Unix milliseconds, or the
  caller's own ``t``: a token carries its login's, for the revocations' not-before). The
  rest is up to the caller. The payload is signed, not encrypted: nothing secret goes in it.
- **Bounds**: a value longer than :data:`MAX_VALUE` characters is refused before anything is
  decoded; the mac is compared in constant time (``hmac.compare_digest``).

Verifying is a pure function of the keys and the value: every process and every machine that
shares the keys accepts the same values.
"""

from __future__ import annotations

import base64
import binascii
import hashlib
import hmac
import json
import secrets
import time
from collections.abc import Mapping, Sequence
from enum import StrEnum
from typing import Any

MAX_VALUE = 2048  # characters of a signed value; longer ones are refused before decoding
ID_BYTES = 12  # random bytes of a value's id (16 characters)
_MAC_CHARS = 43  # base64url of 32 bytes, without padding
_ALPHABET = frozenset("ABCDEFGHIJKLMNOPQRSTUVWXYZabcdefghijklmnopqrstuvwxyz0123456789-_")


class Purpose(StrEnum):
    """What a signed value is for; a value verifies only for the purpose it was made for."""

    SESSION = "session"  # the cookie of a login
    TOKEN = "token"  # an access token (Auth 1.0 and 2.0)
    CSRF = "csrf"  # the hidden field of a login or confirm form
    OIDC = "oidc"  # the state carried through an OpenID Connect provider


Claims = Mapping[str, Any]


def _b64(data: bytes) -> str:
    return base64.urlsafe_b64encode(data).rstrip(b"=").decode("ascii")


def _unb64(text: str) -> bytes:
    return base64.urlsafe_b64decode(text + "=" * (-len(text) % 4))


def new_id() -> str:
    """A random id (sid, jti, nonce): 96 bits, base64url."""
    return _b64(secrets.token_bytes(ID_BYTES))


class Signer:
    """Makes and checks signed values with ``keys`` (the first signs, all verify)."""

    def __init__(self, keys: Sequence[bytes]) -> None:
        if not keys:
            raise ValueError("a signer needs at least one key")
        self._keys = tuple(keys)

    def _mac(self, key: bytes, purpose: Purpose, payload: str) -> str:
        data = purpose.value.encode() + b"|" + payload.encode("ascii")
        return _b64(hmac.new(key, data, hashlib.sha256).digest())

    def sign(
        self,
        purpose: Purpose,
        claims: Claims,
        ttl: float,
        *,
        now: float | None = None,
        expires: int | None = None,
    ) -> tuple[str, dict[str, Any]]:
        """A value for ``purpose`` holding ``claims`` plus a new id ``i``, an expiry ``e``
        (``expires``, or ``now + ttl``) and an issue time ``t`` (unless ``claims`` has one);
        the value and the claims as signed."""
        now = time.time() if now is None else now
        exp = int(expires) if expires is not None else int(now + ttl)
        full = {
            **claims,
            "i": claims.get("i") or new_id(),
            "e": exp,
            "t": claims.get("t", int(now * 1000)),
        }
        text = json.dumps(full, separators=(",", ":"), ensure_ascii=False)
        payload = _b64(text.encode("utf-8"))
        value = f"{payload}.{self._mac(self._keys[0], purpose, payload)}"
        if len(value) > MAX_VALUE:
            raise ValueError(f"a signed value of {len(value)} characters (at most {MAX_VALUE})")
        return value, full

    def verify(
        self, purpose: Purpose, value: str | None, *, now: float | None = None
    ) -> dict[str, Any] | None:
        """The claims of ``value`` when it was signed by one of the keys for ``purpose`` and
        has not expired; else ``None`` (see :meth:`examine` for why)."""
        claims, _ = self.examine(purpose, value, now=now)
        return claims

    def examine(
        self, purpose: Purpose, value: str | None, *, now: float | None = None
    ) -> tuple[dict[str, Any] | None, str]:
        """The claims of a valid ``value`` and ``""``; or ``None`` and why not: ``missing``,
        ``invalid`` (malformed, too long, another key or purpose, forged) or ``expired``."""
        if not value:
            return None, "missing"
        if len(value) > MAX_VALUE:
            return None, "invalid"
        payload, dot, mac = value.partition(".")
        if not dot or len(mac) != _MAC_CHARS or not payload or not _ALPHABET.issuperset(payload):
            return None, "invalid"
        if not _ALPHABET.issuperset(mac):
            return None, "invalid"
        ok = False
        for key in self._keys:  # every key is tried, so the time does not tell which matched
            ok |= hmac.compare_digest(self._mac(key, purpose, payload), mac)
        if not ok:
            return None, "invalid"
        try:
            claims = json.loads(_unb64(payload))
        except (binascii.Error, ValueError):
            return None, "invalid"
        if (
            not isinstance(claims, dict)
            or not isinstance(claims.get("i"), str)
            or type(claims.get("e")) is not int
        ):
            return None, "invalid"
        if claims["e"] <= (time.time() if now is None else now):
            return None, "expired"
        return claims, ""

    def digest(self, purpose: str, text: str) -> str:
        """A keyed hash of ``text`` (a user name, an address) to count or store it without
        keeping it: the same on every machine sharing the first key."""
        data = purpose.encode() + b"|" + text.encode("utf-8", "surrogatepass")
        return _b64(hmac.new(self._keys[0], data, hashlib.sha256).digest()[:16])
