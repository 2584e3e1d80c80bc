"""What the tests of access control share: a configuration with one policy of each kind, an
htpasswd file made with bcrypt, and a client that logs in over HTTP as a browser does.

The configuration (:func:`auth_config`) serves the test images on these routes:

- ``staff/{id}``: policy ``staff``, a ``login`` of :data:`USER` / :data:`PASSWORD` (htpasswd,
  bcrypt), with a degraded tier of :data:`DEGRADED` pixels;
- ``vault/{id}``: policy ``vault``, the same users, no degraded tier (nothing without login);
- ``terms/{id}``: policy ``terms``, a ``clickthrough``;
- ``kiosk/{id}``: policy ``kiosk``, networks ``127.0.0.0/8`` (the tests' own address);
- ``room/{id}``: policy ``room``, ``external``, networks ``10.20.0.0/16`` (reached by the tests
  only through ``X-Forwarded-For``: ``127.0.0.1`` is in ``auth.forwarded_by``);
- anything else: public.

Overrides go in as dictionaries merged into the sections (``auth={"token_ttl": 2}``).
"""

from __future__ import annotations

import html
import http.client
import json
import re
from collections.abc import Mapping
from http.cookies import SimpleCookie
from pathlib import Path
from typing import Any
from urllib.parse import urlencode

import bcrypt
import yaml

from tests.support import Response

USER = "alice"
PASSWORD = "correct horse battery staple"
OTHER_USER = "bob"
OTHER_PASSWORD = "hunter2-but-longer"
SECRET = "k7Qm2vX9pL4sT8wZ1yB6nR3cF5hJ0dG2aE7uK9xM4qV1"  # one key, 44 characters
OTHER_SECRET = "Zp3Lq8Rt1Wv6Yx0Bn4Mc7Kd2Jf5Hg9Sa3De6Fr8Tg1Yh"
DEGRADED = 100  # the staff policy's degraded tier: longest side
POLICIES = ("staff", "vault", "terms", "kiosk", "room")
ORIGIN = "http://viewer.example.test:8000"


def write_htpasswd(path: Path, users: Mapping[str, str]) -> Path:
    """An htpasswd file of bcrypt hashes, as ``htpasswd -B`` writes them (``$2y$``); cost 4,
    the least bcrypt allows, so tests stay fast."""
    lines = []
    for user, password in users.items():
        hashed = bcrypt.hashpw(password.encode(), bcrypt.gensalt(rounds=4)).decode()
        lines.append(f"{user}:{hashed.replace('$2b$', '$2y$', 1)}")
    path.write_text("\n".join(lines) + "\n")
    return path


def _merged(base: dict[str, Any], extra: Mapping[str, Any] | None) -> dict[str, Any]:
    out = dict(base)
    for key, value in (extra or {}).items():
        if isinstance(value, Mapping) and isinstance(out.get(key), dict):
            out[key] = _merged(out[key], value)
        else:
            out[key] = value
    return out


def auth_config(
    folder: Path,
    images: Path,
    *,
    name: str = "shim.yaml",
    auth: Mapping[str, Any] | None = None,
    server: Mapping[str, Any] | None = None,
    cache: Mapping[str, Any] | None = None,
) -> Path:
    """``folder/name``: the test images behind the policies of this module's text, with
    ``users.htpasswd`` beside it and the audit log at ``folder/audit.log``."""
    folder.mkdir(parents=True, exist_ok=True)
    write_htpasswd(folder / "users.htpasswd", {USER: PASSWORD, OTHER_USER: OTHER_PASSWORD})
    login = {
        "kind": "login",
        "label": "Example Library staff",
        "heading": "Staff login",
        "note": "Log in with your library account.",
        "confirm_label": "Log in",
        "failure_heading": "Login failed",
        "failure_note": "Ask the front desk for an account.",
        "users": {"htpasswd": "users.htpasswd"},
    }
    policies = {
        "staff": {**login, "degraded": {"max_size": DEGRADED}},
        "vault": {**login, "label": "Vault"},
        "terms": {
            "kind": "clickthrough",
            "label": "Terms of use",
            "heading": "Restricted material",
            "note": "You agree to use these images for research only.",
            "confirm_label": "I agree",
        },
        "kiosk": {"kind": "kiosk", "label": "Gallery kiosk", "networks": ["127.0.0.0/8"]},
        "room": {
            "kind": "external",
            "label": "Reading room",
            "failure_heading": "Reading room only",
            "networks": ["10.20.0.0/16"],
        },
    }
    body: dict[str, Any] = {
        "server": _merged({"cache_control": "public, max-age=60"}, server),
        "iiif": {"prefix": "/iiif", "tile_size": 256},
        "backends": {"local": {"type": "files", "root": str(images)}},
        "routes": [
            *(
                {"match": f"^{p}/(?P<rest>.+)$", "backend": "local", "id": "{rest}", "access": p}
                for p in POLICIES
            ),
            {"backend": "local"},
        ],
        "auth": _merged(
            {
                "secret": SECRET,
                "forwarded_by": ["127.0.0.1/32"],
                "audit_log": str(folder / "audit.log"),
                "policies": policies,
            },
            auth,
        ),
    }
    if cache:
        body["cache"] = dict(cache)
    path = folder / name
    path.write_text(yaml.safe_dump(body, sort_keys=False))
    return path


# --- a browser, by hand -----------------------------------------------------------------------


def send(
    port: int,
    path: str,
    *,
    method: str = "GET",
    cookies: Mapping[str, str] | None = None,
    form: Mapping[str, str] | None = None,
    headers: Mapping[str, str] | None = None,
) -> Response:
    """One request with these cookies (and a urlencoded form body), as a browser sends it."""
    out = dict(headers or {})
    if cookies:
        out["Cookie"] = "; ".join(f"{k}={v}" for k, v in cookies.items())
    body = None
    if form is not None:
        body = urlencode(form).encode()
        out["Content-Type"] = "application/x-www-form-urlencoded"
        out["Content-Length"] = str(len(body))
    conn = http.client.HTTPConnection("127.0.0.1", port, timeout=30)
    try:
        conn.putrequest(method, path, skip_accept_encoding=True)
        for k, v in out.items():
            conn.putheader(k, v)
        conn.endheaders(body)
        resp = conn.getresponse()
        return Response(resp.status, resp.headers, resp.read())
    finally:
        conn.close()


def set_cookies(response: Response) -> dict[str, Any]:
    """The cookies an answer sets, by name (``http.cookies.Morsel``: value and attributes)."""
    jar: SimpleCookie = SimpleCookie()
    for header in response.headers.get_all("Set-Cookie") or []:
        jar.load(header)
    return dict(jar)


def form_fields(page: str) -> dict[str, str]:
    """The hidden fields of a form page (``csrf``, ``origin``)."""
    return {
        html.unescape(m.group(1)): html.unescape(m.group(2))
        for m in re.finditer(r'<input type="hidden" name="([^"]*)" value="([^"]*)">', page)
    }


def open_form(port: int, policy: str, origin: str | None = None) -> tuple[dict[str, str], str]:
    """GET a policy's access page: its hidden fields and the CSRF cookie it set."""
    query = "?" + urlencode({"origin": origin}) if origin else ""
    page = send(port, f"/auth/{policy}/access{query}")
    assert page.status == 200, page.text
    csrf_cookie = set_cookies(page)["iiif-shim-csrf"].value
    return form_fields(page.text), csrf_cookie


def login_response(
    port: int,
    policy: str = "staff",
    user: str = USER,
    password: str = PASSWORD,
    *,
    origin: str | None = None,
    headers: Mapping[str, str] | None = None,
) -> Response:
    """The answer to a login (or, for a clickthrough policy, a confirmation) made as a browser
    makes it: the form fetched, then posted with its CSRF value and cookie."""
    fields, csrf_cookie = open_form(port, policy, origin)
    form = {**fields, "username": user, "password": password}
    return send(
        port,
        f"/auth/{policy}/access",
        method="POST",
        cookies={"iiif-shim-csrf": csrf_cookie},
        form=form,
        headers=headers,
    )


def login(port: int, policy: str = "staff", user: str = USER, password: str = PASSWORD) -> str:
    """Log in (or click through) over HTTP; the value of the policy's cookie."""
    answer = login_response(port, policy, user, password)
    assert answer.status == 200, answer.text
    jar = set_cookies(answer)
    assert f"iiif-shim-auth-{policy}" in jar, answer.headers
    value: str = jar[f"iiif-shim-auth-{policy}"].value
    return value


def cookie(policy: str, value: str) -> dict[str, str]:
    """The Cookie a browser sends after logging in to ``policy``."""
    return {f"iiif-shim-auth-{policy}": value}


_POSTED = re.compile(r"window\.parent\.postMessage\((\{.*?\}),\s*(\"[^\"]*\")\);", re.S)


def posted(page: Response) -> tuple[dict[str, Any], str] | None:
    """The message a token page posts and the target origin; ``None`` when it posts nothing."""
    found = _POSTED.search(page.text)
    if found is None:
        return None
    message: dict[str, Any] = json.loads(found.group(1))
    target: str = json.loads(found.group(2))
    return message, target


def token(port: int, policy: str, value: str, origin: str = ORIGIN) -> str:
    """An Auth 2.0 access token for the login whose cookie is ``value``."""
    query = urlencode({"messageId": "t1", "origin": origin})
    page = send(port, f"/auth/{policy}/token2?{query}", cookies=cookie(policy, value))
    found = posted(page)
    assert found is not None and found[0]["type"] == "AuthAccessToken2", page.text
    access: str = found[0]["accessToken"]
    return access
