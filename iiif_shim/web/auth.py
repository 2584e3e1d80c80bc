"""The access flow over HTTP (IIIF Auth 1.0 and 2.0): ``/auth/{policy}/access``, ``/token``,
``/token2`` and ``/logout``, the cookies they set, and who the caller is.

What is decided here, once:

- **The caller** (:func:`caller_of`): the client address is the peer's, or, when the peer is
  one of ``auth.forwarded_by``, the last hop of ``X-Forwarded-For`` that is not one of them;
  the cookies are the shim's own (``iiif-shim-auth-*``); the bearer is ``Authorization:
  Bearer``'s value. Image and presentation handlers call it too.
- **Cookies** (:func:`set_session_cookie`): ``iiif-shim-auth-{policy}``, ``Path=/``,
  ``HttpOnly``; over HTTPS (the connection is TLS, or the public base URL is ``https``:
  ``web/baseurl.py``) ``Secure; SameSite=None`` so a viewer on another site can use it, over
  plain HTTP ``SameSite=Lax`` without ``Secure`` (development on 127.0.0.1).
- **Forms** (login, and clickthrough when opened without ``origin``) carry a CSRF value
  signed for the policy, short-lived and bound (``gate.csrf``) to a random value the form's
  page puts in a ``SameSite=Strict`` cookie of its own folder (:data:`CSRF_COOKIE`). A POST
  is taken only with both, matching, so a page elsewhere can neither post a value it fetched
  itself (bound to its own browser's cookie, not the victim's) nor make the victim's browser
  send the cookie (Strict); a refused POST is 403 with a fresh form. A failed login shows
  the form again with the policy's failure heading (HTTP 200: the page is for a person,
  viewers only wait for the window to close, and 401 would need a ``WWW-Authenticate``
  challenge a form has not); too many failures answer 429 with ``Retry-After``, a password
  checker too busy to take the attempt 503 with ``Retry-After`` (``gate.try_login``, which
  counts each attempt before it is checked). A clickthrough opened by a viewer (with an
  allowed ``origin``) grants at once (Auth 1.0: the viewer showed the terms already).
- **Origins** (:func:`origin_of`): ``scheme://host[:port]`` (a default port and a trailing
  ``/`` dropped), and one of ``auth.allowed_origins`` when that is set (``gate.origin_allowed``),
  for the access page (403 otherwise) and the token services (``invalidOrigin``). Nothing here
  redirects to a URL taken from the request.
- **Token pages** post to exactly the request's ``origin`` and may be framed by that origin
  only (``frame-ancestors``); every other page of the flow may not be framed at all. Every
  answer is ``Cache-Control: no-store``.

Every login, failure, logout, refusal, limit and token goes to the audit log: the gate writes
what it does itself (logins, logouts, failures, limits, tokens), this module the refusals it
makes (``gate.audit``); no line holds a password, cookie, token or key. The probes
(``/auth/probe/...``) are ``web/access.py``'s; OpenID Connect logins ``web/oidc.py``'s.
"""

from __future__ import annotations

import functools
import importlib
import json
import logging
import math
import secrets
from collections.abc import Awaitable, Callable, Mapping
from typing import Any
from urllib.parse import urlsplit

from aiohttp import web

from iiif_shim.auth import documents
from iiif_shim.auth.gate import (
    COOKIE_PREFIX,
    CSRF_TTL,
    Caller,
    Gate,
    Outcome,
    Token,
    cookie_name,
)
from iiif_shim.auth.settings import PolicySettings
from iiif_shim.auth.users import parse_address, trusted_peer
from iiif_shim.base.errors import ShimError
from iiif_shim.web import authpages
from iiif_shim.web.baseurl import valid_host
from iiif_shim.web.middleware import text_response
from iiif_shim.web.runtime import Runtime
from iiif_shim.web.state import observed, runtime_of

log = logging.getLogger("iiif_shim")

CSRF_COOKIE = "iiif-shim-csrf"  # a random value binding a form's CSRF value to one browser
MAX_USER = 256  # characters of a user name given in a form
MAX_PASSWORD = 1024  # characters of a password (bcrypt reads the first 72 bytes)
MAX_MESSAGE_ID = 1024  # characters of a messageId
MAX_FORWARDED_HOPS = 32  # X-Forwarded-For entries read, from the right
CLOSE_AFTER = 4.0  # seconds a refusal shown to a viewer's window stays before it closes

# --- who is asking -------------------------------------------------------------------------


@functools.lru_cache(maxsize=4096)
def _address(text: str) -> str | None:
    """``text`` as an address (``auth/users.parse_address``) written out, or ``None``. Kept:
    the same few addresses come on every tile."""
    found = parse_address(text)
    return None if found is None else str(found)


@functools.lru_cache(maxsize=4096)
def _trusted(address: str, networks: tuple[str, ...]) -> bool:
    return trusted_peer(address, networks)


def client_address(request: web.Request, forwarded_by: tuple[str, ...]) -> str:
    """The peer's address; when the peer is one of ``forwarded_by``, ``X-Forwarded-For``'s last
    hop that is not (a proxy appends the address it saw, so hops to the right of the first
    untrusted one were written by trusted proxies and those to its left by the client).
    An entry that is not an address ends the walk at the last trusted hop."""
    peer = request.remote or ""
    found = _address(peer)
    if found is None:
        return peer
    if not forwarded_by or not _trusted(found, forwarded_by):
        return found
    hops = ",".join(request.headers.getall("X-Forwarded-For", [])).split(",")
    for entry in reversed(hops[-MAX_FORWARDED_HOPS:]):
        hop = _address(entry)
        if hop is None:
            break
        found = hop
        if not _trusted(hop, forwarded_by):
            break
    return found


def bearer_of(request: web.Request) -> str | None:
    scheme, _, value = request.headers.get("Authorization", "").strip().partition(" ")
    value = value.strip()
    return value if scheme.lower() == "bearer" and value else None


def caller_of(request: web.Request, gate: Gate) -> Caller:
    """Who asks: the client address (see :func:`client_address`), the shim's cookies and the
    bearer token of ``request``. Every check of access starts here."""
    settings = gate.settings
    cookies = {k: v for k, v in request.cookies.items() if k.startswith(COOKIE_PREFIX)}
    return Caller(
        address=client_address(request, settings.forwarded_by),
        cookies=cookies,
        bearer=bearer_of(request),
    )


def is_https(request: web.Request, runtime: Runtime) -> bool:
    """Whether the browser reaches the shim over HTTPS: the connection is TLS, or the public
    base URL (``server.public_url``, or a trusted proxy's headers) says ``https``."""
    if request.secure:
        return True
    try:
        base = runtime.public.base(request.scheme, request.host, request.headers)
    except ShimError:  # a Host that is not a host: the connection's own scheme decides
        return False
    return base.startswith("https://")


def set_session_cookie(
    response: web.StreamResponse, policy: str, value: str, max_age: int, https: bool
) -> None:
    response.set_cookie(
        cookie_name(policy),
        value,
        path="/",
        max_age=max_age,
        httponly=True,
        secure=https,
        samesite="None" if https else "Lax",
    )


def clear_session_cookie(response: web.StreamResponse, policy: str, https: bool) -> None:
    response.set_cookie(
        cookie_name(policy),
        "",
        path="/",
        max_age=0,
        expires="Thu, 01 Jan 1970 00:00:00 GMT",
        httponly=True,
        secure=https,
        samesite="None" if https else "Lax",
    )


def origin_of(value: str | None) -> str | None:
    """``value`` as an origin (``scheme://host[:port]``, scheme and host in lower case, a
    default port and a trailing ``/`` dropped), or ``None`` when it is not one."""
    if not value or len(value) > 300:
        return None
    try:
        parts = urlsplit(value)
        port = parts.port
    except ValueError:
        return None
    host = parts.netloc.lower()
    if (
        parts.scheme.lower() not in ("http", "https")
        or parts.path not in ("", "/")
        or parts.query
        or parts.fragment
        or "@" in host
        or not valid_host(host)
        or (port is not None and port == 0)
    ):
        return None
    scheme = parts.scheme.lower()
    if port == {"http": 80, "https": 443}[scheme]:  # as browsers write it: no default port
        host = host.rsplit(":", 1)[0]
    return f"{scheme}://{host}"


# --- answers -------------------------------------------------------------------------------


def _csp(nonce: str, frame_ancestors: str) -> str:
    return (
        f"default-src 'none'; script-src 'nonce-{nonce}'; style-src 'nonce-{nonce}'; "
        f"form-action 'self'; base-uri 'none'; frame-ancestors {frame_ancestors}"
    )


def _html(
    render: Callable[[str], str],
    status: int = 200,
    *,
    frame_ancestors: str | None = None,
    headers: Mapping[str, str] | None = None,
) -> web.Response:
    """A page of the flow: ``render(nonce)``'s markup with its CSP. ``frame_ancestors`` (an
    origin) lets that origin frame it; else no one may."""
    nonce = secrets.token_urlsafe(16)
    out = {
        "Cache-Control": "no-store",
        "Content-Security-Policy": _csp(nonce, frame_ancestors or "'none'"),
        "Referrer-Policy": "no-referrer",
        "X-Content-Type-Options": "nosniff",
        **(headers or {}),
    }
    if frame_ancestors is None:
        out["X-Frame-Options"] = "DENY"
    return web.Response(status=status, text=render(nonce), content_type="text/html", headers=out)


def _json(doc: Mapping[str, Any], status: int = 200) -> web.Response:
    return web.Response(
        status=status,
        text=json.dumps(doc, indent=2),
        content_type="application/json",
        headers={"Cache-Control": "no-store", "X-Content-Type-Options": "nosniff"},
    )


def plain_text(status: int, text: str, headers: Mapping[str, str] | None = None) -> web.Response:
    """A plain-text answer of the access flow: never stored."""
    return text_response(status, text, headers={"Cache-Control": "no-store", **(headers or {})})


def probe_answer(doc: Mapping[str, Any]) -> web.Response:
    """An Auth 2.0 probe result (``AuthProbeResult2``): always HTTP 200 (the verdict is its
    ``status``), JSON-LD, never stored by a cache (it depends on the ``Authorization`` sent);
    readable by any origin, as every answer (no credentials mode is needed)."""
    return web.Response(
        text=json.dumps(doc, indent=2),
        content_type="application/ld+json",
        headers={
            "Cache-Control": "no-store",
            "Vary": "Authorization",
            "X-Content-Type-Options": "nosniff",
        },
    )


# --- the dispatcher ------------------------------------------------------------------------


async def auth_request(request: web.Request, tail: str) -> web.StreamResponse:
    """``/auth/{policy}/{action}``: the access flow of a policy (unknown policy: 404)."""
    runtime = runtime_of(request)
    seen = observed(request)
    seen.endpoint = "auth"
    name, _, action = tail.partition("/")
    gate = runtime.gate
    policy = _policy(gate, name)
    if policy is None:
        return plain_text(404, "no such access policy")
    if request.method == "HEAD":  # the flow's GETs act (set or revoke a login): never on HEAD
        return plain_text(405, "use GET", {"Allow": "GET"})
    post = request.method == "POST"
    if action == "access":
        if policy.users is not None and policy.users.oidc is not None:
            oidc = importlib.import_module("iiif_shim.web.oidc")
            handler: Callable[[web.Request, str], Awaitable[web.StreamResponse]] = oidc.start
            return await handler(request, name)
        return await (_access_post if post else _access_get)(request, runtime, name, policy)
    if action == "oidc/callback" and not post:
        if policy.users is None or policy.users.oidc is None:
            return plain_text(404, "this policy does not sign in through OpenID Connect")
        oidc = importlib.import_module("iiif_shim.web.oidc")
        callback: Callable[[web.Request, str], Awaitable[web.StreamResponse]] = oidc.callback
        return await callback(request, name)
    if post:
        return plain_text(405, "use GET", {"Allow": "GET"})
    if action == "token":
        return await _token_1(request, gate, name, policy)
    if action == "token2":
        return await _token_2(request, gate, name, policy)
    if action == "logout":
        return await _logout(request, runtime, name, policy)
    return plain_text(404, "not an address of the access flow: access, token, token2 or logout")


def _policy(gate: Gate, name: str) -> PolicySettings | None:
    if name not in gate.settings.policies:
        return None
    return gate.policy(name)


# --- access --------------------------------------------------------------------------------


async def granted(
    request: web.Request,
    runtime: Runtime,
    name: str,
    policy: PolicySettings,
    caller: Caller,
    user: str,
) -> web.Response:
    """Access is granted to ``user``: a new login (audited by the gate), its cookie, and the
    page that closes itself; 429 with ``Retry-After`` when the address has started too many
    logins lately (``gate.allow_session``)."""
    gate = runtime.gate
    wait = await gate.allow_session(name, caller.address)
    if wait is not None:
        seconds = max(1, math.ceil(wait))
        return _html(
            lambda nonce: authpages.message(
                "Too many logins",
                f"Too many logins from this address: try again in {seconds} seconds.",
                nonce,
            ),
            429,
            headers={"Retry-After": str(seconds)},
        )
    value, _session = gate.start_session(name, user, address=caller.address)
    response = _html(lambda nonce: authpages.closing(policy, nonce))
    https = is_https(request, runtime)
    set_session_cookie(response, name, value, gate.settings.session_ttl, https)
    if CSRF_COOKIE in request.cookies:
        response.del_cookie(CSRF_COOKIE, path="", secure=https, httponly=True, samesite="Strict")
    return response


def refuse(
    gate: Gate,
    name: str,
    policy: PolicySettings,
    caller: Caller,
    status: int,
    title: str,
    text: str,
    reason: str,
    *,
    close_after: float | None = None,
) -> web.Response:
    """A page refusing access (the policy's failure heading and note under ``text``), and
    its ``refused`` audit line; ``close_after``: seconds after which the page closes itself
    (:func:`authpages.message`)."""
    gate.audit.event("refused", policy=name, address=caller.address, reason=reason)
    return _html(
        lambda nonce: authpages.message(title, text, nonce, policy, close_after=close_after),
        status,
    )


def origin_refused(gate: Gate, given: str | None) -> bool:
    """A viewer origin was given and it is not one that may use this server."""
    if not given:
        return False
    origin = origin_of(given)
    return origin is None or not gate.origin_allowed(origin)


def _form_page(
    request: web.Request,
    runtime: Runtime,
    name: str,
    policy: PolicySettings,
    origin: str | None,
    status: int = 200,
    *,
    failed: bool = False,
    username: str = "",
) -> web.Response:
    """The login or clickthrough form with a fresh CSRF value, bound to this browser by a
    random value in the ``SameSite=Strict`` cookie :data:`CSRF_COOKIE` (no ``Path``: it goes
    back to this folder, ``…/auth/{policy}/``, alone)."""
    binding = secrets.token_urlsafe(16)
    csrf = runtime.gate.csrf(name, binding)
    if policy.kind == "clickthrough":
        response = _html(lambda nonce: authpages.confirm_form(policy, csrf, origin, nonce), status)
    else:
        response = _html(
            lambda nonce: authpages.login_form(
                policy, csrf, origin, nonce, failed=failed, username=username
            ),
            status,
        )
    response.set_cookie(
        CSRF_COOKIE,
        binding,
        path="",  # no Path attribute: the browser's default, this page's folder
        httponly=True,
        secure=is_https(request, runtime),
        samesite="Strict",
        max_age=CSRF_TTL,
    )
    return response


async def _access_get(
    request: web.Request, runtime: Runtime, name: str, policy: PolicySettings
) -> web.Response:
    """``GET /auth/{p}/access``: the login form; for kiosk and external the address decides
    at once; for a sign-on proxy its header does; a clickthrough opened by a viewer
    (``?origin=``, an allowed one) grants at once, without it shows the confirm form."""
    gate = runtime.gate
    caller = caller_of(request, gate)
    given = request.query.get("origin")
    if origin_refused(gate, given):
        return refuse(
            gate, name, policy, caller, 403, "Not available to this viewer",
            "The viewer that opened this page may not use this service.", "origin",
        )  # fmt: skip
    if policy.kind in ("kiosk", "external"):  # the address alone decides, on every request
        if gate.decide(name, Caller(caller.address, {}, None)).full:
            gate.audit.event("login", policy=name, address=caller.address, reason="address")
            return _html(lambda nonce: authpages.closing(policy, nonce))  # no cookie
        return refuse(
            gate, name, policy, caller, 403, "Not available here",
            "Access is given only on the institution's own network, not from where you are.",
            "address", close_after=CLOSE_AFTER,
        )  # fmt: skip
    users = policy.users
    if users is not None and users.header is not None:
        user = gate.header_user(name, request.remote, request.headers.get(users.header))
        if user is None:
            return refuse(
                gate, name, policy, caller, 403, "Not available here",
                "This login works only through the institution's sign-on.", "no trusted header",
            )  # fmt: skip
        return await granted(request, runtime, name, policy, caller, user)
    if policy.kind == "clickthrough" and given:
        # a viewer opened it (Auth 1.0: after showing the terms and the confirm button): set
        # the cookie and close at once; a person following a link gets the confirm form
        return await granted(request, runtime, name, policy, caller, "clickthrough")
    return _form_page(request, runtime, name, policy, origin_of(given))


async def _access_post(
    request: web.Request, runtime: Runtime, name: str, policy: PolicySettings
) -> web.Response:
    """``POST /auth/{p}/access``: a login form (``username``, ``password``) or a
    clickthrough's confirmation, each with its CSRF value."""
    gate = runtime.gate
    caller = caller_of(request, gate)
    users = policy.users
    if policy.kind not in ("login", "clickthrough") or (users and users.htpasswd is None):
        return plain_text(405, "use GET", {"Allow": "GET"})
    try:  # a body past client_max_size is aiohttp's 413
        form = await request.post()
    except ValueError:  # not UTF-8, a broken multipart body
        return plain_text(400, "the form could not be read")
    fields = {k: v for k, v in form.items() if isinstance(v, str)}
    given = fields.get("origin") or None
    if origin_refused(gate, given):
        return refuse(
            gate, name, policy, caller, 403, "Not available to this viewer",
            "The viewer that opened this page may not use this service.", "origin",
        )  # fmt: skip
    origin = origin_of(given)
    binding = request.cookies.get(CSRF_COOKIE, "")
    if not binding or not gate.csrf_ok(name, fields.get("csrf"), binding):
        gate.audit.event("refused", policy=name, address=caller.address, reason="csrf")
        return _form_page(request, runtime, name, policy, origin, 403)
    if policy.kind == "clickthrough":
        return await granted(request, runtime, name, policy, caller, "clickthrough")
    user = fields.get("username", "")
    password = fields.get("password", "")
    if not user or not password or len(user) > MAX_USER or len(password) > MAX_PASSWORD:
        return _form_page(request, runtime, name, policy, origin, failed=True)
    attempt = await gate.try_login(name, user, password, caller.address)  # audits itself
    if attempt.outcome is Outcome.OK:
        return await granted(request, runtime, name, policy, caller, user)
    if attempt.outcome is Outcome.FAILED:
        return _form_page(request, runtime, name, policy, origin, failed=True, username=user)
    seconds = max(1, math.ceil(attempt.retry_after or 1))
    if attempt.outcome is Outcome.LIMITED:
        title, status = "Too many attempts", 429
        text = f"Too many failed logins: try again in {seconds} seconds."
    else:  # BUSY: nothing was tried, nothing counted
        title, status = "Busy", 503
        text = f"Too many logins at once: try again in {seconds} seconds."
    return _html(
        lambda nonce: authpages.message(title, text, nonce),
        status,
        headers={"Retry-After": str(seconds)},
    )


# --- tokens --------------------------------------------------------------------------------


def _token(
    request: web.Request, gate: Gate, name: str, origin: str | None, malformed: bool
) -> Token | str:
    """A token for the caller, or the Auth 2.0 error profile: ``invalidRequest`` when the
    request is ``malformed``, ``invalidOrigin`` for an origin that may not get tokens, else
    the gate's answer (which audits itself)."""
    caller = caller_of(request, gate)
    profile = None
    if malformed:
        profile = documents.INVALID_REQUEST
    elif origin is not None and not gate.origin_allowed(origin):
        profile = documents.INVALID_ORIGIN
    if profile is not None:
        gate.audit.event("token_refused", policy=name, address=caller.address, reason=profile)
        return profile
    return gate.issue_token(name, caller)


def _token_page(msg: dict[str, Any], origin: str | None) -> web.Response:
    """A token service's page: posts ``msg`` to ``origin``, which alone may frame it."""
    return _html(
        lambda nonce: authpages.token_page(msg, origin, nonce), frame_ancestors=origin or "'none'"
    )


async def _token_2(
    request: web.Request, gate: Gate, name: str, policy: PolicySettings
) -> web.Response:
    """Auth 2.0 access token service: an HTML page (always 200) posting ``AuthAccessToken2``
    or ``AuthAccessTokenError2`` to the ``origin`` asked for."""
    message_id = request.query.get("messageId")
    origin = origin_of(request.query.get("origin"))
    malformed = message_id is None or origin is None or len(message_id) > MAX_MESSAGE_ID
    found = _token(request, gate, name, origin, malformed)
    shown_id = (message_id or "")[:MAX_MESSAGE_ID]
    if isinstance(found, str):
        msg = documents.token_error_2(found, shown_id, policy=policy)
    else:
        msg = documents.token_2(found.value, found.expires_in, shown_id)
    return _token_page(msg, origin)


async def _token_1(
    request: web.Request, gate: Gate, name: str, policy: PolicySettings
) -> web.Response:
    """Auth 1.0 access token service: JSON without ``messageId`` (an error with its HTTP
    status), else an HTML page (200) posting the same object plus ``messageId`` to
    ``origin``."""
    message_id = request.query.get("messageId")
    given = request.query.get("origin")
    origin = origin_of(given)
    malformed = (given is not None and origin is None) or (
        message_id is not None and (origin is None or len(message_id) > MAX_MESSAGE_ID)
    )
    found = _token(request, gate, name, origin, malformed)
    shown_id = None if message_id is None else message_id[:MAX_MESSAGE_ID]
    status = 200
    if isinstance(found, str):
        doc, status = documents.token_error_1(found, shown_id)
    else:
        doc = documents.token_1(found.value, found.expires_in, shown_id)
    if message_id is None:
        return _json(doc, status)
    return _token_page(doc, origin)


# --- logout --------------------------------------------------------------------------------


async def _logout(
    request: web.Request, runtime: Runtime, name: str, policy: PolicySettings
) -> web.Response:
    """Ends the browser's login of this policy everywhere (every process, and every machine
    sharing Redis: audited by the gate) and clears its cookie; a visible page says so. Over
    HTTPS (where browsers honour it) ``Clear-Site-Data: "cache"`` drops the restricted tiles
    the browser kept (``private``, with a max-age), so the next person at a shared machine
    does not see them."""
    gate = runtime.gate
    await gate.end_session(name, caller_of(request, gate))
    https = is_https(request, runtime)
    response = _html(
        lambda nonce: authpages.logged_out(policy, nonce),
        headers={"Clear-Site-Data": '"cache"'} if https else None,
    )
    clear_session_cookie(response, name, https)
    return response
