"""An OpenID Connect provider that signs in anyone at once and then gets one thing wrong on
purpose, for the ID token checks the real provider (``provider.mjs``) never fails.

    python -m tests.oidc.hostile --port P --client-id ID

Its issuer is ``http://127.0.0.1:P``: discovery, JWKS (one RSA key, made at start), an
authorization endpoint that redirects back at once with a code and the request's state, and a
token endpoint that answers an ID token signed with that key, its claims right (``iss``,
``aud`` = the client id, ``sub`` = ``mallory``, ``iat``, ``exp`` in five minutes, the nonce
of the authorization request, ``groups`` = ``["readers", "alumni"]``, ``department`` =
``library``) except for the mistake of the moment, set by
``GET /_mode/<mode>``:

- ``good``: no mistake; ``wrong-aud``: ``aud`` another client; ``wrong-nonce``: another nonce;
  ``no-nonce``: no nonce; ``expired``: ``exp`` an hour ago; ``wrong-iss``: another issuer;
  ``alg-none``: unsigned (``alg: none``); ``hs256``: HMAC-signed with the client id as key;
  ``other-key``: signed by a key not in the JWKS (its key id unknown); ``no-id-token``: a
  token answer without one; ``token-500``: the token endpoint answers 500; ``deep-json``: a
  token answer of 100 000 nested arrays (200 KB); ``deep-claims``: an ID token, well signed,
  whose claims are 50 000 nested arrays.

It is a test double, not a provider: no login, no client authentication.
"""

from __future__ import annotations

import argparse
import base64
import hashlib
import hmac
import json
import secrets
import time
from typing import Any
from urllib.parse import urlencode

from aiohttp import web
from joserfc import jws, jwt
from joserfc.jwk import RSAKey

MODES = (
    "good", "wrong-aud", "wrong-nonce", "no-nonce", "expired", "wrong-iss", "alg-none",
    "hs256", "other-key", "no-id-token", "token-500", "deep-json", "deep-claims",
)  # fmt: skip


def _b64(data: bytes) -> str:
    return base64.urlsafe_b64encode(data).rstrip(b"=").decode()


def main() -> None:
    parser = argparse.ArgumentParser()
    parser.add_argument("--port", type=int, required=True)
    parser.add_argument("--client-id", required=True)
    args = parser.parse_args()
    issuer = f"http://127.0.0.1:{args.port}"
    key = RSAKey.generate_key(2048, parameters={"kid": "k1"})
    other = RSAKey.generate_key(2048, parameters={"kid": "k2"})
    state: dict[str, Any] = {"mode": "good", "nonces": {}}

    async def discovery(request: web.Request) -> web.Response:
        return web.json_response(
            {
                "issuer": issuer,
                "authorization_endpoint": issuer + "/authorize",
                "token_endpoint": issuer + "/token",
                "jwks_uri": issuer + "/jwks",
                "id_token_signing_alg_values_supported": ["RS256"],
                "token_endpoint_auth_methods_supported": ["client_secret_basic", "none"],
                "code_challenge_methods_supported": ["S256"],
            }
        )

    async def jwks(request: web.Request) -> web.Response:
        return web.json_response({"keys": [key.as_dict(private=False)]})

    async def authorize(request: web.Request) -> web.Response:
        code = secrets.token_urlsafe(16)
        state["nonces"][code] = request.query.get("nonce")
        back = {"code": code, "state": request.query.get("state", "")}
        raise web.HTTPFound(request.query["redirect_uri"] + "?" + urlencode(back))

    async def token(request: web.Request) -> web.Response:
        form = await request.post()
        mode = state["mode"]
        if mode == "token-500":
            return web.Response(status=500, text="internal error")
        if mode == "deep-json":
            deep = "[" * 100_000 + "]" * 100_000
            return web.Response(text=deep, content_type="application/json")
        if mode == "deep-claims":
            payload = ('{"a":' + "[" * 50_000 + "]" * 50_000 + "}").encode()
            header = {"alg": "RS256", "kid": "k1"}
            signed = jws.serialize_compact(header, payload, key, algorithms=["RS256"])
            return web.json_response(
                {"access_token": "x", "token_type": "Bearer", "id_token": signed}
            )
        if mode == "no-id-token":
            return web.json_response({"access_token": "x", "token_type": "Bearer"})
        now = int(time.time())
        claims: dict[str, Any] = {
            "iss": "http://127.0.0.1:1" if mode == "wrong-iss" else issuer,
            "aud": "another-client" if mode == "wrong-aud" else args.client_id,
            "sub": "mallory",
            "iat": now - 7200 if mode == "expired" else now,
            "exp": now - 3600 if mode == "expired" else now + 300,
            "nonce": "not-the-nonce"
            if mode == "wrong-nonce"
            else state["nonces"].pop(str(form.get("code")), None),
            "groups": ["readers", "alumni"],
            "department": "library",
        }
        if mode == "no-nonce":
            del claims["nonce"]
        if mode == "alg-none":
            header = _b64(json.dumps({"alg": "none", "typ": "JWT"}).encode())
            id_token = f"{header}.{_b64(json.dumps(claims).encode())}."
        elif mode == "hs256":  # by hand: joserfc rightly will not sign with so short a secret
            header = _b64(json.dumps({"alg": "HS256", "typ": "JWT", "kid": "k1"}).encode())
            signing_input = f"{header}.{_b64(json.dumps(claims).encode())}"
            mac = hmac.new(args.client_id.encode(), signing_input.encode(), hashlib.sha256)
            id_token = f"{signing_input}.{_b64(mac.digest())}"
        else:
            signer = other if mode == "other-key" else key
            kid = "k2" if mode == "other-key" else "k1"
            id_token = jwt.encode({"alg": "RS256", "kid": kid}, claims, signer, ["RS256"])
        return web.json_response(
            {"access_token": "x", "token_type": "Bearer", "id_token": id_token}
        )

    async def set_mode(request: web.Request) -> web.Response:
        mode = request.match_info["mode"]
        if mode not in MODES:
            return web.Response(status=404, text=f"modes: {', '.join(MODES)}")
        state["mode"] = mode
        return web.Response(text=mode)

    app = web.Application()
    app.router.add_get("/.well-known/openid-configuration", discovery)
    app.router.add_get("/jwks", jwks)
    app.router.add_get("/authorize", authorize)
    app.router.add_post("/token", token)
    app.router.add_get("/_mode/{mode}", set_mode)
    web.run_app(app, host="127.0.0.1", port=args.port, print=None)


if __name__ == "__main__":
    main()
