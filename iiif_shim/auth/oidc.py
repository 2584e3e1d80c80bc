"""OpenID Connect sign-in for a policy whose users are ``users.oidc``: the authorization code
flow with PKCE (S256), from the provider's discovery document to the user named by a checked
ID token. No HTTP library here: ``web/oidc.py`` speaks HTTP to the browser and hands in a
:class:`Fetch` that speaks it to the provider.

- **Start** (:meth:`OIDCClient.start`): the browser goes to the provider's authorization
  endpoint with ``response_type=code``, the configured scopes, ``redirect_uri``, a ``state``
  and a ``nonce``, and ``code_challenge`` (S256). The state is a value signed by the gate's
  signer for the purpose ``oidc`` (``auth/signing.py``): it names the policy and the
  redirect URI, and expires after :data:`STATE_TTL` seconds. Its random id is the **binding**,
  which ``web/`` keeps in a short-lived cookie of the browser that started, so a state taken
  from one browser does not finish a sign-in in another (login CSRF). The PKCE verifier and
  the nonce are keyed hashes of that id (``Signer.digest``): never stored, never sent
  anywhere but where the protocol sends them (the verifier only to the token endpoint).
- **Finish** (:meth:`OIDCClient.finish`): the state is checked (signed, not expired, this
  policy, this browser), an ``error`` from the provider is a refusal, an ``iss`` parameter
  (RFC 9207) must be the issuer, the code is exchanged at the token endpoint (with
  ``client_secret``, by ``client_secret_basic`` or ``client_secret_post`` as the discovery
  document allows; without it, a public client), and the ID token is checked (joserfc does
  the JOSE work, on the terms set here): a JWS signed with an algorithm in both
  :data:`ALGORITHMS` and the provider's list (never ``none``, never a shared-secret HMAC), by
  a key of the provider's JWKS, and claims ``iss`` (the issuer), ``aud`` (holding the client
  id; ``azp`` the client id when there are others), ``exp``, ``iat`` (with :data:`LEEWAY`),
  ``sub``, and ``nonce`` (this sign-in's). The user is the claim ``user_claim``. With
  ``require``, each of its claims must be in the ID token, equal to its value (or, a list,
  holding it), else the sign-in is refused (403): without it every account the provider
  signs in is admitted.
- **Cache**: the discovery document and the JWKS of each issuer are kept for
  :data:`DISCOVERY_TTL` / :data:`JWKS_TTL` seconds (:class:`ProviderCache`, at most
  :data:`MAX_PROVIDERS` issuers); an ID token signed by a key id the cached JWKS lacks reads
  the JWKS again, at most once per :data:`JWKS_REFRESH_GAP` seconds (the provider rotated).
  Every request to the provider has the policy's ``timeout`` and a size cap.
- **Failures** are :class:`SignInFailed`, with the HTTP status for the user (400: the request
  was not a sign-in this server started; 401: the provider or its token refused the sign-in;
  502: the provider is unreachable or answered what it should not; 504: it did not answer in
  time), a short reason for the audit log (never a code, token or secret), and a sentence for
  the page.
"""

from __future__ import annotations

import asyncio
import base64
import hashlib
import hmac
import json
import re
import time
import urllib.parse
from collections import OrderedDict
from collections.abc import Awaitable, Mapping
from dataclasses import dataclass
from typing import Any, Protocol, cast

from joserfc import jwt
from joserfc.errors import (
    ClaimError,
    ExpiredTokenError,
    JoseError,
    MissingClaimError,
)
from joserfc.jwk import GuestProtocol, Key, KeySet
from joserfc.jws import JWSRegistry

from iiif_shim.auth.settings import OIDCSettings
from iiif_shim.auth.signing import Purpose, Signer

STATE_TTL = 600  # seconds from the start of a sign-in to its callback
LEEWAY = 60  # seconds of clock difference allowed on exp and iat
DISCOVERY_TTL = 3600.0  # seconds a provider's discovery document is kept
JWKS_TTL = 3600.0  # seconds a provider's keys are kept
JWKS_REFRESH_GAP = 30.0  # an unknown key id reads the keys again at most this often
MAX_PROVIDERS = 64  # issuers whose documents are kept
MAX_DOCUMENT = 256 * 1024  # bytes of a discovery document, JWKS or token answer
MAX_PARAMETER = 4096  # characters of a callback's code, state or error
MAX_USER = 256  # characters of the user claim
ALGORITHMS = (  # public-key signatures only: a shared-secret HMAC or `none` never signs a login
    "RS256",
    "RS384",
    "RS512",
    "PS256",
    "PS384",
    "PS512",
    "ES256",
    "ES384",
    "ES512",
    "EdDSA",  # the name before RFC 9864 (providers still use it)
    "Ed25519",  # RFC 9864's names for EdDSA's two curves
    "Ed448",
)
_ERROR_CODE = re.compile(r"[A-Za-z0-9_.-]{1,64}")
_CLAIM = re.compile(r"[A-Za-z0-9_]{1,32}")
_REFUSALS = frozenset(
    {
        "access_denied",
        "login_required",
        "consent_required",
        "interaction_required",
        "account_selection_required",
    }
)


class SignInFailed(Exception):
    """A sign-in that did not end with a user: ``status`` for the browser, ``reason`` for the
    audit log, ``message`` for the page."""

    def __init__(self, status: int, reason: str, message: str) -> None:
        super().__init__(message)
        self.status = status
        self.reason = reason
        self.message = message


def bad_request(reason: str, message: str) -> SignInFailed:
    return SignInFailed(400, reason, message)


def refused(reason: str, message: str) -> SignInFailed:
    return SignInFailed(401, reason, message)


def forbidden(reason: str, message: str) -> SignInFailed:
    return SignInFailed(403, reason, message)


def unreachable(reason: str = "provider unreachable") -> SignInFailed:
    return SignInFailed(502, reason, "The sign-in service could not be reached. Try again later.")


def broken(reason: str) -> SignInFailed:
    return SignInFailed(
        502, reason, "The sign-in service gave an answer this server cannot use. Try again later."
    )


def timed_out(reason: str = "provider timeout") -> SignInFailed:
    return SignInFailed(504, reason, "The sign-in service did not answer in time. Try again.")


@dataclass(frozen=True)
class Answer:
    """What the provider answered: its status and body (at most the ``limit`` asked for)."""

    status: int
    body: bytes


class Fetch(Protocol):
    """One request to the provider within ``timeout`` seconds, reading at most ``limit`` bytes
    of the answer: raises :class:`SignInFailed` (:func:`unreachable`, :func:`timed_out`,
    :func:`broken` for a longer body), never anything else."""

    def __call__(
        self,
        method: str,
        url: str,
        *,
        headers: Mapping[str, str],
        form: Mapping[str, str] | None,
        timeout: float,
        limit: int,
    ) -> Awaitable[Answer]: ...


@dataclass(frozen=True)
class Provider:
    """What the discovery document says this server needs."""

    issuer: str
    authorization_endpoint: str
    token_endpoint: str
    jwks_uri: str
    auth_methods: tuple[str, ...]  # token_endpoint_auth_methods_supported
    algorithms: tuple[str, ...]  # id_token_signing_alg_values_supported, within ALGORITHMS
    pkce_methods: tuple[str, ...] | None  # code_challenge_methods_supported, if given


@dataclass(frozen=True)
class Start:
    """Where to send the browser, and the binding for its cookie."""

    url: str
    binding: str


@dataclass(frozen=True)
class Identity:
    """A signed-in user: the value of ``user_claim`` and the issuer that vouched for it."""

    user: str
    issuer: str


class _Keys:
    def __init__(self, keys: KeySet, read_at: float) -> None:
        self.keys = keys
        self.read_at = read_at


class ProviderCache:
    """Discovery documents and JWKS by issuer, each kept for its TTL; at most
    :data:`MAX_PROVIDERS` issuers (the least recently used goes)."""

    def __init__(self) -> None:
        self._providers: OrderedDict[str, tuple[Provider, float]] = OrderedDict()
        self._keys: OrderedDict[str, _Keys] = OrderedDict()
        self._locks: dict[str, asyncio.Lock] = {}

    def _lock(self, issuer: str) -> asyncio.Lock:
        lock = self._locks.get(issuer)
        if lock is None:
            if len(self._locks) >= MAX_PROVIDERS:
                self._locks.clear()  # locks of idle issuers; any held one is still referenced
            lock = self._locks[issuer] = asyncio.Lock()
        return lock

    @staticmethod
    def _keep(table: OrderedDict[str, Any], issuer: str, value: Any) -> None:
        table[issuer] = value
        table.move_to_end(issuer)
        while len(table) > MAX_PROVIDERS:
            table.popitem(last=False)

    async def provider(self, settings: OIDCSettings, fetch: Fetch) -> Provider:
        issuer = settings.issuer
        async with self._lock(issuer):
            kept = self._providers.get(issuer)
            if kept is not None and time.monotonic() - kept[1] < DISCOVERY_TTL:
                self._providers.move_to_end(issuer)
                return kept[0]
            found = await _discover(settings, fetch)
            self._keep(self._providers, issuer, (found, time.monotonic()))
            return found

    async def keys(self, provider: Provider, settings: OIDCSettings, fetch: Fetch) -> KeySet:
        async with self._lock(provider.issuer):
            kept = self._keys.get(provider.issuer)
            if kept is not None and time.monotonic() - kept.read_at < JWKS_TTL:
                return kept.keys
            return await self._read_keys(provider, settings, fetch)

    async def keys_again(
        self, provider: Provider, settings: OIDCSettings, fetch: Fetch, stale: KeySet
    ) -> KeySet | None:
        """The provider's keys read again (a key id was unknown), unless they were read less
        than :data:`JWKS_REFRESH_GAP` seconds ago; ``None`` when nothing new was read."""
        async with self._lock(provider.issuer):
            kept = self._keys.get(provider.issuer)
            if kept is not None and kept.keys is not stale:
                return kept.keys  # another sign-in read them meanwhile
            if kept is not None and time.monotonic() - kept.read_at < JWKS_REFRESH_GAP:
                return None
            return await self._read_keys(provider, settings, fetch)

    async def _read_keys(self, provider: Provider, settings: OIDCSettings, fetch: Fetch) -> KeySet:
        body = await _get_json(fetch, provider.jwks_uri, settings.timeout, "JWKS")
        listed = body.get("keys")
        if not isinstance(listed, list) or not all(isinstance(k, dict) for k in listed):
            raise broken("JWKS unreadable: no list of keys")
        try:  # no keys at all: every ID token's key is unknown (the provider is rotating?)
            keys = KeySet.import_key_set({"keys": listed}) if listed else KeySet([])
        except (JoseError, ValueError, TypeError, KeyError) as exc:
            raise broken(f"JWKS unreadable: {type(exc).__name__}") from None
        self._keep(self._keys, provider.issuer, _Keys(keys, time.monotonic()))
        return keys


async def _get_json(fetch: Fetch, url: str, timeout: float, what: str) -> dict[str, Any]:
    answer = await fetch(
        "GET", url, headers={"Accept": "application/json"}, form=None, timeout=timeout,
        limit=MAX_DOCUMENT,
    )  # fmt: skip
    if answer.status != 200:
        raise broken(f"{what}: HTTP {answer.status}")
    try:
        found = json.loads(answer.body)
    except (ValueError, RecursionError):  # not JSON, or nested past the parser
        raise broken(f"{what}: not JSON") from None
    if not isinstance(found, dict):
        raise broken(f"{what}: not a JSON object")
    return found


def _url(value: object, issuer: str) -> str | None:
    """An endpoint of the discovery document: an absolute http(s) URL, plain http only when
    the issuer is."""
    if not isinstance(value, str) or len(value) > 2048:
        return None
    parts = urllib.parse.urlsplit(value)
    allowed = ("https", "http") if issuer.startswith("http://") else ("https",)
    if parts.scheme not in allowed or not parts.netloc or parts.fragment:
        return None
    return value


def _strings(value: object) -> tuple[str, ...] | None:
    if isinstance(value, list) and all(isinstance(v, str) for v in value):
        return tuple(value)
    return None


async def _discover(settings: OIDCSettings, fetch: Fetch) -> Provider:
    issuer = settings.issuer
    found = await _get_json(
        fetch,
        issuer.rstrip("/") + "/.well-known/openid-configuration",
        settings.timeout,
        "discovery",
    )
    if found.get("issuer") != issuer:  # OpenID Connect Discovery 1.0, section 4.3
        raise broken("discovery: its issuer is not the configured one")
    endpoints = {
        key: _url(found.get(key), issuer)
        for key in ("authorization_endpoint", "token_endpoint", "jwks_uri")
    }
    missing = [key for key, value in endpoints.items() if value is None]
    if missing:
        raise broken(f"discovery: no usable {', '.join(missing)}")
    algs = _strings(found.get("id_token_signing_alg_values_supported")) or ("RS256",)
    usable = tuple(a for a in algs if a in ALGORITHMS)
    if not usable:
        raise broken("discovery: no ID token signing algorithm this server accepts")
    methods = _strings(found.get("token_endpoint_auth_methods_supported"))
    pkce = _strings(found.get("code_challenge_methods_supported"))
    if pkce is not None and "S256" not in pkce:
        raise broken("discovery: PKCE S256 not supported")
    return Provider(
        issuer=issuer,
        authorization_endpoint=str(endpoints["authorization_endpoint"]),
        token_endpoint=str(endpoints["token_endpoint"]),
        jwks_uri=str(endpoints["jwks_uri"]),
        auth_methods=methods or ("client_secret_basic",),  # the spec's default
        algorithms=usable,
        pkce_methods=pkce,
    )


def _b64(data: bytes) -> str:
    return base64.urlsafe_b64encode(data).rstrip(b"=").decode("ascii")


def _verifier(signer: Signer, binding: str) -> str:
    """The PKCE code verifier of a sign-in: 44 characters (RFC 7636: 43 to 128), keyed by the
    first signing key, so it is never stored and never leaves this server but to the token
    endpoint."""
    return signer.digest("oidc-pkce-1", binding) + signer.digest("oidc-pkce-2", binding)


def _nonce(signer: Signer, binding: str) -> str:
    return signer.digest("oidc-nonce", binding)


def _challenge(verifier: str) -> str:
    return _b64(hashlib.sha256(verifier.encode("ascii")).digest())


class OIDCClient:
    """This server as the client of one policy's provider."""

    def __init__(
        self, policy: str, settings: OIDCSettings, signer: Signer, cache: ProviderCache
    ) -> None:
        self.policy = policy
        self.settings = settings
        self.signer = signer
        self.cache = cache

    async def start(self, redirect_uri: str, fetch: Fetch) -> Start:
        """The authorization request for a new sign-in coming back to ``redirect_uri``."""
        provider = await self.cache.provider(self.settings, fetch)
        state, claims = self.signer.sign(
            Purpose.OIDC, {"p": self.policy, "u": redirect_uri}, STATE_TTL
        )
        binding = str(claims["i"])
        query = {
            "response_type": "code",
            "client_id": self.settings.client_id,
            "redirect_uri": redirect_uri,
            "scope": " ".join(self.settings.scopes),
            "state": state,
            "nonce": _nonce(self.signer, binding),
            "code_challenge": _challenge(_verifier(self.signer, binding)),
            "code_challenge_method": "S256",
        }
        endpoint = provider.authorization_endpoint
        sep = "&" if urllib.parse.urlsplit(endpoint).query else "?"
        return Start(endpoint + sep + urllib.parse.urlencode(query), binding)

    def _state(self, params: Mapping[str, str], binding: str | None) -> dict[str, Any]:
        claims, why = self.signer.examine(Purpose.OIDC, params.get("state"))
        if claims is None:
            if why == "expired":
                raise bad_request(
                    "state expired", "This sign-in took too long. Start again from the viewer."
                )
            raise bad_request(
                f"state {why}", "This is not a sign-in this server started. Start again."
            )
        if claims.get("p") != self.policy or not isinstance(claims.get("u"), str):
            raise bad_request(
                "state of another policy", "This is not a sign-in this server started."
            )
        if not binding or not hmac.compare_digest(binding.encode(), str(claims["i"]).encode()):
            raise bad_request(
                "state not of this browser",
                "This sign-in was started in another browser or window, or its cookie was "
                "refused. Start again.",
            )
        return claims

    async def finish(
        self, params: Mapping[str, str], binding: str | None, fetch: Fetch
    ) -> Identity:
        """The user of a callback with query ``params``, in the browser whose state cookie
        holds ``binding``."""
        if any(len(v) > MAX_PARAMETER for v in params.values()):
            raise bad_request("parameter too long", "This is not a sign-in this server started.")
        claims = self._state(params, binding)
        redirect_uri = str(claims["u"])
        binding = str(claims["i"])
        error = params.get("error")
        if error is not None:
            name = error if _ERROR_CODE.fullmatch(error) else "unreadable"
            if name in _REFUSALS:
                raise refused(f"provider: {name}", "The sign-in was cancelled or refused.")
            if name in ("temporarily_unavailable", "server_error"):
                raise SignInFailed(
                    502, f"provider: {name}", "The sign-in service failed. Try again later."
                )
            raise broken(f"provider: {name}")
        provider = await self.cache.provider(self.settings, fetch)
        iss = params.get("iss")
        if iss is not None and iss != provider.issuer:  # RFC 9207: a mix-up
            raise bad_request(
                "iss of another provider", "This is not a sign-in this server started."
            )
        code = params.get("code")
        if not code:
            raise bad_request("no code", "The sign-in service sent no authorization code.")
        id_token = await self._exchange(provider, code, redirect_uri, binding, fetch)
        found = await self._check(provider, id_token, _nonce(self.signer, binding), fetch)
        user = _user(found, self.settings.user_claim)
        for claim, value in self.settings.require.items():
            if not _holds(found.get(claim), value):
                raise forbidden(
                    f"ID token: {claim} not as required",
                    "This account may not see these images. Ask the library for access.",
                )
        return Identity(user, provider.issuer)

    async def _exchange(
        self, provider: Provider, code: str, redirect_uri: str, binding: str, fetch: Fetch
    ) -> str:
        form = {
            "grant_type": "authorization_code",
            "code": code,
            "redirect_uri": redirect_uri,
            "code_verifier": _verifier(self.signer, binding),
        }
        headers = {"Accept": "application/json"}
        secret = self.settings.client_secret
        if secret is None:
            form["client_id"] = self.settings.client_id
        elif (
            "client_secret_basic" not in provider.auth_methods
            and "client_secret_post" in provider.auth_methods
        ):
            form["client_id"] = self.settings.client_id
            form["client_secret"] = secret
        else:  # RFC 6749 2.3.1: each form-urlencoded, then joined for HTTP Basic
            pair = f"{_quote(self.settings.client_id)}:{_quote(secret)}"
            headers["Authorization"] = "Basic " + base64.b64encode(pair.encode()).decode()
        answer = await fetch(
            "POST", provider.token_endpoint, headers=headers, form=form,
            timeout=self.settings.timeout, limit=MAX_DOCUMENT,
        )  # fmt: skip
        try:
            body = json.loads(answer.body)
        except (ValueError, RecursionError):
            body = None
        if answer.status != 200:
            error = body.get("error") if isinstance(body, dict) else None
            code_name = error if isinstance(error, str) and _ERROR_CODE.fullmatch(error) else "-"
            if answer.status == 400 and code_name == "invalid_grant":
                raise refused(
                    "code refused: invalid_grant",
                    "The sign-in service refused this sign-in (it was used already or took "
                    "too long). Start again.",
                )
            raise broken(f"token endpoint: HTTP {answer.status} {code_name}")
        if not isinstance(body, dict) or not isinstance(body.get("id_token"), str):
            raise broken("token endpoint: no id_token")
        return str(body["id_token"])

    async def _check(
        self, provider: Provider, id_token: str, nonce: str, fetch: Fetch
    ) -> dict[str, Any]:
        keys = await self.cache.keys(provider, self.settings, fetch)
        try:
            return await asyncio.to_thread(
                check_id_token, id_token, keys, provider, self.settings.client_id, nonce
            )
        except _UnknownKey:
            again = await self.cache.keys_again(provider, self.settings, fetch, keys)
            if again is None:
                raise refused(
                    "ID token: unknown key", "The sign-in service's answer was not valid."
                ) from None
        try:
            return await asyncio.to_thread(
                check_id_token, id_token, again, provider, self.settings.client_id, nonce
            )
        except _UnknownKey:
            raise refused(
                "ID token: unknown key", "The sign-in service's answer was not valid."
            ) from None


def _quote(text: str) -> str:
    return urllib.parse.quote(text, safe="")


class _UnknownKey(Exception):
    pass


class _NotYetValid(Exception):
    pass


class _Signatures(JWSRegistry):
    """joserfc's JWS checks with this module's one size cap (:data:`MAX_DOCUMENT`, over the
    whole token) in place of its own smaller ones (a 512-byte header, 1 KiB signature)."""

    max_header_length = MAX_DOCUMENT
    max_payload_length = MAX_DOCUMENT
    max_signature_length = MAX_DOCUMENT


class _Claims(jwt.JWTClaimsRegistry):
    """joserfc's claim checks, telling a token issued in the future or not valid before a
    later time apart from a wrong ``iat`` or ``nbf``."""

    def _not_before(self, value: object) -> None:
        if isinstance(value, bool) or not isinstance(value, int | float):
            return  # joserfc names it a wrong claim
        if value > self.now + self.leeway:
            raise _NotYetValid

    # joserfc checks the value's type itself (annotated ``int`` in its older releases,
    # wider in newer ones): handed on as it came
    def validate_iat(self, value: object) -> None:
        self._not_before(value)
        super().validate_iat(cast(Any, value))

    def validate_nbf(self, value: object) -> None:
        self._not_before(value)
        super().validate_nbf(cast(Any, value))


def check_id_token(
    id_token: str,
    keys: KeySet,
    provider: Provider,
    client_id: str,
    nonce: str,
    *,
    now: float | None = None,
) -> dict[str, Any]:
    """The claims of ``id_token`` once its signature (an algorithm of ``provider.algorithms``,
    a key of ``keys``) and its claims ``iss``, ``aud``, ``azp``, ``exp``, ``iat``, ``sub``
    and ``nonce`` hold; else :class:`SignInFailed` (401) naming the check that failed. CPU
    work: called in a thread."""

    def invalid(what: str) -> SignInFailed:
        return refused(f"ID token: {what}", "The sign-in service's answer was not valid.")

    if id_token.count(".") != 2 or len(id_token) > MAX_DOCUMENT:
        raise invalid("not a signed JWT")  # an encrypted (JWE) or malformed token

    def load_key(token: GuestProtocol) -> Key:
        header = token.headers()
        if "b64" in header:  # RFC 7797's unencoded payload: never a JWT
            raise invalid("not a signed JWT")
        kid = header.get("kid")
        matching = [k for k in keys.keys if kid is None or k.kid == kid]
        usable = [k for k in matching if k.get("use") in (None, "sig")]
        if kid is None and len(usable) != 1:
            raise invalid("no key id, and not one key")
        if not usable:
            raise _UnknownKey
        return usable[0]

    registry = _Claims(
        now=int(time.time() if now is None else now),
        leeway=LEEWAY,
        iss={"essential": True, "value": provider.issuer},
        aud={"essential": True, "value": client_id},
        exp={"essential": True},
        iat={"essential": True},
        sub={"essential": True},
        nonce={"essential": True, "value": nonce},
    )
    signatures = _Signatures(algorithms=list(provider.algorithms), strict_check_header=False)
    try:
        token = jwt.decode(id_token, load_key, registry=signatures)
        registry.validate(token.claims)
    except (_UnknownKey, SignInFailed):
        raise
    except ExpiredTokenError:
        raise invalid("expired") from None
    except _NotYetValid:  # iat or nbf in the future
        raise invalid("not yet valid") from None
    except ClaimError as exc:  # a missing or wrong iss, aud, sub, nonce ...
        named = exc.claim.split(",")[0]  # the missing ones, comma-separated
        what = "no" if isinstance(exc, MissingClaimError) else "wrong"
        raise invalid(f"{what} {named if _CLAIM.fullmatch(named) else 'claim'}") from None
    except JoseError as exc:  # a bad signature, an algorithm not allowed, a malformed token
        raise invalid(exc.error or type(exc).__name__) from None
    except (ValueError, TypeError, KeyError, RecursionError) as exc:  # claims nested too deep
        raise invalid(f"unreadable ({type(exc).__name__})") from None
    found = dict(token.claims)
    aud = found.get("aud")
    if isinstance(aud, list) and len(aud) > 1 and found.get("azp") != client_id:
        raise invalid("wrong azp")
    return found


def _holds(found: object, value: str) -> bool:
    """Whether a claim's value ``found`` is ``value`` (a number or boolean as JSON writes it),
    or a list holding it."""
    if isinstance(found, list):
        return any(_holds(item, value) for item in found if not isinstance(item, list))
    if isinstance(found, bool):
        return value == ("true" if found else "false")
    return isinstance(found, str | int | float) and str(found) == value


def _user(claims: Mapping[str, Any], claim: str) -> str:
    value = claims.get(claim)
    if isinstance(value, bool) or not isinstance(value, str | int):
        raise refused(f"ID token: no {claim}", "The sign-in service did not say who signed in.")
    user = str(value)
    if not user or len(user) > MAX_USER or not user.isprintable():
        raise refused(
            f"ID token: unusable {claim}", "The sign-in service did not say who signed in."
        )
    return user
