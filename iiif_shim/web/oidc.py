"""OpenID Connect sign-in over HTTP: the access page of a policy whose users are ``users.oidc``
(``GET /auth/{policy}/access``: :func:`start`) and the provider's way back
(``GET /auth/{policy}/oidc/callback``: :func:`callback`); ``web/auth.py`` dispatches both here.
The protocol is ``auth/oidc.py``'s; this module speaks HTTP to the browser and to the provider.

- :func:`start` redirects (302) to the provider's authorization endpoint, with
  ``redirect_uri`` = the public base (``web/baseurl.py``) + ``/auth/{policy}/oidc/callback``,
  and sets the state's binding in the cookie ``iiif-shim-oidc-{policy}`` (``HttpOnly``, path
  of the callback as the browser addresses it, a proxy's prefix included,
  :data:`auth.oidc.STATE_TTL` seconds, ``SameSite=Lax`` so the provider's
  redirect back brings it; ``Secure`` over HTTPS).
- :func:`callback` finishes the sign-in: on success a login starts (``gate.start_session``),
  the audit log names the user (the claim ``user_claim``), and the same closing page as the
  other logins answers (``web/auth.py``); on failure a page with the policy's failure heading
  and the status of :class:`auth.oidc.SignInFailed` (400, 401, 502, 504), audited with its
  reason. Either way the state cookie is cleared: a callback is used once.
- Requests to the provider (:func:`fetch`): one short-lived client session each (sign-ins
  are rare), no redirects followed, the policy's ``timeout`` over the whole request, at most
  the asked number of bytes read; a refused connection or a DNS failure is 502, a timeout
  504. Discovery documents and keys are kept per process (:data:`CACHE`).
"""

from __future__ import annotations

import asyncio
from collections.abc import Mapping
from urllib.parse import urlsplit

import aiohttp
from aiohttp import web

from iiif_shim.auth.oidc import (
    STATE_TTL,
    Answer,
    OIDCClient,
    ProviderCache,
    SignInFailed,
    bad_request,
    broken,
    timed_out,
    unreachable,
)
from iiif_shim.auth.settings import OIDCSettings, PolicySettings
from iiif_shim.web import auth
from iiif_shim.web.runtime import Runtime
from iiif_shim.web.state import runtime_of

STATE_COOKIE = "iiif-shim-oidc-"  # + the policy's name
CACHE = ProviderCache()  # discovery documents and keys, per process, for every runtime


def _settings(policy: PolicySettings) -> OIDCSettings:
    users = policy.users
    if users is None or users.oidc is None:  # web/auth.py dispatches only such policies
        raise web.HTTPNotFound(text="this policy does not sign in through OpenID Connect\n")
    return users.oidc


async def fetch(
    method: str,
    url: str,
    *,
    headers: Mapping[str, str],
    form: Mapping[str, str] | None,
    timeout: float,
    limit: int,
) -> Answer:
    """One request to the provider (see the module's docstring); raises only
    :class:`SignInFailed`."""
    try:
        async with asyncio.timeout(timeout):
            async with (
                aiohttp.ClientSession(
                    timeout=aiohttp.ClientTimeout(total=timeout), auto_decompress=True
                ) as session,
                session.request(
                    method,
                    url,
                    headers=dict(headers),
                    data=dict(form) if form is not None else None,
                    allow_redirects=False,
                ) as response,
            ):
                body = bytearray()
                async for chunk in response.content.iter_chunked(65536):
                    body += chunk
                    if len(body) > limit:
                        raise broken(f"answer longer than {limit} bytes")
                return Answer(response.status, bytes(body))
    except TimeoutError:
        raise timed_out() from None
    except (aiohttp.ClientError, OSError) as exc:
        raise unreachable(f"provider unreachable: {type(exc).__name__}") from None


def _client(runtime: Runtime, name: str, settings: OIDCSettings) -> OIDCClient:
    return OIDCClient(name, settings, runtime.gate.signer, CACHE)


def _redirect_uri(request: web.Request, runtime: Runtime, name: str) -> str:
    site = runtime.public.site(request.scheme, request.host, request.headers)
    return f"{site}/auth/{name}/oidc/callback"


def _failed(
    request: web.Request, runtime: Runtime, name: str, policy: PolicySettings, exc: SignInFailed
) -> web.Response:
    gate = runtime.gate
    caller = auth.caller_of(request, gate)
    title = "Sign-in failed" if exc.status in (400, 401, 403) else "Sign-in unavailable"
    response = auth.refuse(
        gate, name, policy, caller, exc.status, title, exc.message, f"oidc: {exc.reason}"
    )
    _clear_state(request, runtime, response, name)
    return response


def _state_path(request: web.Request, runtime: Runtime, name: str) -> str:
    """The state cookie's ``Path``: the callback's folder as the browser addresses it (behind a
    proxy that serves the shim under a prefix, ``/images/auth/{name}/oidc/``)."""
    site = runtime.public.site(request.scheme, request.host, request.headers)
    return f"{urlsplit(site).path.rstrip('/')}/auth/{name}/oidc/"


def _clear_state(
    request: web.Request, runtime: Runtime, response: web.StreamResponse, name: str
) -> None:
    response.set_cookie(
        STATE_COOKIE + name,
        "",
        path=_state_path(request, runtime, name),
        max_age=0,
        expires="Thu, 01 Jan 1970 00:00:00 GMT",
        httponly=True,
        secure=auth.is_https(request, runtime),
        samesite="Lax",
    )


async def start(request: web.Request, name: str) -> web.StreamResponse:
    """``GET /auth/{name}/access``: off to the provider's login."""
    runtime = runtime_of(request)
    gate = runtime.gate
    policy = gate.policy(name)
    settings = _settings(policy)
    if request.method != "GET":
        return auth.plain_text(405, "use GET", {"Allow": "GET"})
    if auth.origin_refused(gate, request.query.get("origin")):
        return auth.refuse(
            gate, name, policy, auth.caller_of(request, gate), 403,
            "Not available to this viewer",
            "The viewer that opened this page may not use this service.", "origin",
        )  # fmt: skip
    try:
        begun = await _client(runtime, name, settings).start(
            _redirect_uri(request, runtime, name), fetch
        )
    except SignInFailed as exc:
        return _failed(request, runtime, name, policy, exc)
    response = web.Response(
        status=302,
        headers={
            "Location": begun.url,
            "Cache-Control": "no-store",
            "Referrer-Policy": "no-referrer",
        },
    )
    response.set_cookie(
        STATE_COOKIE + name,
        begun.binding,
        path=_state_path(request, runtime, name),
        max_age=STATE_TTL,
        httponly=True,
        secure=auth.is_https(request, runtime),
        samesite="Lax",  # sent on the provider's top-level redirect back, never on a subrequest
    )
    return response


async def callback(request: web.Request, name: str) -> web.StreamResponse:
    """``GET /auth/{name}/oidc/callback``: the provider sent the browser back."""
    runtime = runtime_of(request)
    gate = runtime.gate
    policy = gate.policy(name)
    settings = _settings(policy)
    params = {key: request.query.getone(key) for key in request.query}
    binding = request.cookies.get(STATE_COOKIE + name)
    try:
        if len(params) != len(request.query):  # a parameter given twice: which one counts?
            raise bad_request("parameter repeated", "This is not a sign-in this server started.")
        identity = await _client(runtime, name, settings).finish(params, binding, fetch)
    except SignInFailed as exc:
        return _failed(request, runtime, name, policy, exc)
    caller = auth.caller_of(request, gate)
    response = await auth.granted(request, runtime, name, policy, caller, identity.user)
    _clear_state(request, runtime, response, name)
    return response
