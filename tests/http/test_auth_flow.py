"""The access flow over real sockets (``web/auth.py``): the answers of Auth 1.0 and 2.0 in the
shapes of the specs' examples, and the attacks on them, each first shown to work where the
defence is what stops it.

Servers, started once for the module (``tests/http/auth_support.py`` has the policies):

- ``main``: two processes (``server.processes: 2``), Redis, ``auth.allowed_origins`` set;
- ``peer``: another machine: one process, the same key and the same Redis;
- ``other``: another key, logins and tokens of 3 seconds, ``server.public_url`` in ``https``;
- ``single``: one process, no Redis (what a reload must not forget lives in its files).
"""

from __future__ import annotations

import http.client
import json
import logging
import re
import signal
import time
from collections.abc import Iterator
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path
from typing import Any
from urllib.parse import quote, urlencode

import pytest

from iiif_shim.auth import store as store_module
from iiif_shim.auth.signing import Purpose, Signer
from tests.http.auth_support import (
    ORIGIN,
    OTHER_PASSWORD,
    OTHER_SECRET,
    OTHER_USER,
    PASSWORD,
    SECRET,
    USER,
    auth_config,
    cookie,
    form_fields,
    login,
    login_response,
    open_form,
    posted,
    send,
    set_cookies,
    token,
)
from tests.inprocess import InProcessShim
from tests.support import Process, Response, start_redis, start_shim, wait_until

SHORT_TTL = 3  # seconds a login and a token live on the `other` server
AUTH1 = "http://iiif.io/api/auth/1/context.json"
AUTH2 = "http://iiif.io/api/auth/2/context.json"
ERRORS_1 = {
    "invalidRequest",
    "missingCredentials",
    "invalidCredentials",
    "invalidOrigin",
    "unavailable",
}
PROFILES_2 = {
    "invalidRequest",
    "invalidOrigin",
    "missingAspect",
    "invalidAspect",
    "expiredAspect",
    "unavailable",
}
SSO = {
    "kind": "login",
    "label": "Example single sign-on",
    "users": {"header": "X-Remote-User", "trusted_proxies": ["127.0.0.1/32"]},
}
SSO_ELSEWHERE = {**SSO, "users": {"header": "X-Remote-User", "trusted_proxies": ["10.9.9.9"]}}
# every credential the module sees, for the last test: none may appear in a log or a metric
SEEN: set[str] = {PASSWORD, OTHER_PASSWORD, SECRET, OTHER_SECRET}


class Servers:
    def __init__(self, folder: Path, images: Path, *procs: Process) -> None:
        self.folder = folder
        self.images = images
        self.main, self.peer, self.other, self.single = procs


@pytest.fixture(scope="module")
def servers(images: Path, tmp_path_factory: pytest.TempPathFactory) -> Iterator[Servers]:
    tmp = tmp_path_factory.mktemp("auth-flow")
    redis = start_redis(tmp / "redis")
    started: list[Process] = [redis]
    try:
        cache = {"redis": f"redis://127.0.0.1:{redis.port}/0", "redis_prefix": "flow:"}
        shared = {
            "allowed_origins": [ORIGIN],
            "policies": {"sso": SSO, "sso-elsewhere": SSO_ELSEWHERE},
        }
        main = start_shim(
            auth_config(tmp / "main", images, auth=shared, cache=cache), tmp, "--processes", "2"
        )
        started.append(main)
        peer = start_shim(auth_config(tmp / "peer", images, auth=shared, cache=cache), tmp)
        started.append(peer)
        other = start_shim(
            auth_config(
                tmp / "other",
                images,
                auth={"secret": OTHER_SECRET, "session_ttl": SHORT_TTL, "token_ttl": SHORT_TTL},
                server={"public_url": "https://images.example.test"},
            ),
            tmp,
        )
        started.append(other)
        single = start_shim(auth_config(tmp / "single", images), tmp)
        started.append(single)
        wait_until(lambda: len(_workers(main.port)) == 2, "both workers of main answering")
        yield Servers(tmp, images, main, peer, other, single)
    finally:
        for proc in reversed(started):
            proc.stop()


def _workers(port: int) -> set[int]:
    pids = set()
    for _ in range(20):
        answer = send(port, "/health")
        pids.add(json.loads(answer.body)["process"]["pid"])
    return pids


def _seen(*values: str) -> None:
    SEEN.update(v for v in values if v)


def _token_json(port: int, policy: str, value: str | None = None, **more: str) -> Response:
    """``/auth/{policy}/token`` (Auth 1.0, JSON) with the cookie ``value`` (and ``more``
    cookies by policy)."""
    jar = {**(cookie(policy, value) if value else {})}
    for name, other in more.items():
        jar.update(cookie(name, other))
    return send(port, f"/auth/{policy}/token", cookies=jar)


def _works(port: int, policy: str, value: str) -> bool:
    """Whether the login cookie ``value`` opens ``policy`` (its token service gives a token);
    a refusal never echoes what was sent."""
    answer = _token_json(port, policy, value)
    if answer.status != 200:
        assert answer.status == 401 and (not value or value not in answer.text), answer.text
    return answer.status == 200


def _token_page(
    port: int,
    policy: str,
    *,
    version: int = 2,
    message_id: str | None = "m1",
    origin: str | None = ORIGIN,
    cookies: dict[str, str] | None = None,
    headers: dict[str, str] | None = None,
) -> Response:
    query = {k: v for k, v in (("messageId", message_id), ("origin", origin)) if v is not None}
    path = f"/auth/{policy}/{'token2' if version == 2 else 'token'}?{urlencode(query)}"
    return send(port, path, cookies=cookies, headers=headers)


def _probe(port: int, identifier: str, bearer: str | None) -> dict[str, Any]:
    headers = {"Authorization": f"Bearer {bearer}"} if bearer else {}
    answer = send(port, f"/auth/probe/image/{quote(identifier, safe='')}", headers=headers)
    assert answer.status == 200, answer.text
    found: dict[str, Any] = json.loads(answer.body)
    return found


def _forge(secret: str, purpose: Purpose, claims: dict[str, Any], ttl: float, **kw: Any) -> str:
    value, _ = Signer([secret.encode()]).sign(purpose, claims, ttl, **kw)
    return value


def _pages_headers(answer: Response) -> None:
    assert answer.header("Cache-Control") == "no-store"
    assert answer.header("Access-Control-Allow-Credentials") is None


# --- shapes: the access service ------------------------------------------------------------------


def test_the_login_page_is_a_form_of_username_and_password_with_csrf_and_origin(
    servers: Servers,
) -> None:
    answer = send(servers.main.port, "/auth/staff/access?" + urlencode({"origin": ORIGIN}))
    assert answer.status == 200
    assert answer.header("Content-Type") == "text/html; charset=utf-8"
    _pages_headers(answer)
    assert answer.header("X-Frame-Options") == "DENY"
    assert "frame-ancestors 'none'" in (answer.header("Content-Security-Policy") or "")
    page = answer.text
    for name in ("username", "password"):
        assert f'name="{name}"' in page
    assert 'method="post"' in page and "Staff login" in page
    assert "Log in with your library account." in page  # the policy's note
    fields = form_fields(page)
    assert fields["origin"] == ORIGIN and fields["csrf"]
    binding = set_cookies(answer)["iiif-shim-csrf"]
    assert binding["httponly"] and binding["samesite"] == "Strict"
    assert not binding["path"]  # this folder only: /auth/staff/


def test_a_login_sets_an_httponly_cookie_and_the_page_closes_itself(servers: Servers) -> None:
    answer = login_response(servers.main.port, "staff", origin=ORIGIN)
    assert answer.status == 200
    _pages_headers(answer)
    assert "window.close()" in answer.text
    assert "You may close this window" in answer.text
    jar = set_cookies(answer)
    made = jar["iiif-shim-auth-staff"]
    _seen(made.value)
    assert made["httponly"] and made["path"] == "/"
    # plain HTTP on 127.0.0.1: Lax, not Secure, and the flow works
    assert made["samesite"] == "Lax" and not made["secure"]
    assert int(made["max-age"]) == 28800
    assert _works(servers.main.port, "staff", made.value)


def test_over_https_the_cookie_is_secure_and_samesite_none(servers: Servers) -> None:
    answer = login_response(servers.other.port, "staff")
    made = set_cookies(answer)["iiif-shim-auth-staff"]
    _seen(made.value)
    assert made["secure"] and made["samesite"] == "None" and made["httponly"]


def test_a_failed_login_shows_the_form_again_with_the_failure_heading(servers: Servers) -> None:
    answer = login_response(servers.main.port, "staff", USER, "not the password")
    assert answer.status == 200  # a page for a person: see web/auth.py
    assert "Login failed" in answer.text and "Ask the front desk" in answer.text
    assert 'name="password"' in answer.text and "iiif-shim-auth-staff" not in set_cookies(answer)
    assert "not the password" not in answer.text


def test_clickthrough_shows_the_terms_and_a_button_and_a_post_grants(servers: Servers) -> None:
    page = send(servers.main.port, "/auth/terms/access")
    assert page.status == 200
    assert "You agree to use these images for research only." in page.text
    assert "I agree" in page.text and 'name="password"' not in page.text
    assert "iiif-shim-auth-terms" not in set_cookies(page)  # the page load grants nothing
    value = login(servers.main.port, "terms")
    _seen(value)
    assert _works(servers.main.port, "terms", value)


def test_clickthrough_opened_by_a_viewer_grants_at_once_and_closes(servers: Servers) -> None:
    """Auth 1.0: the viewer shows the terms and the confirm button, then opens the access
    service with `origin`, which sets the cookie and closes without another click."""
    port = servers.main.port
    answer = send(port, "/auth/terms/access?" + urlencode({"origin": ORIGIN}))
    assert answer.status == 200 and "window.close()" in answer.text
    assert 'method="post"' not in answer.text
    made = set_cookies(answer)["iiif-shim-auth-terms"]
    _seen(made.value)
    assert made["httponly"] and _works(port, "terms", made.value)
    # an origin that may not use the server gets nothing
    refused = send(port, "/auth/terms/access?origin=https%3A%2F%2Fevil.example")
    assert refused.status == 403 and not set_cookies(refused)


def test_kiosk_and_external_grant_by_address_alone(servers: Servers) -> None:
    port = servers.main.port
    kiosk = send(port, "/auth/kiosk/access")  # 127.0.0.1 is in the kiosk's networks
    assert kiosk.status == 200 and "window.close()" in kiosk.text
    assert not set_cookies(kiosk)  # the address decides each time: nothing to take home
    room = send(port, "/auth/room/access")  # 127.0.0.1 is not in the reading room
    assert room.status == 403
    assert "Reading room only" in room.text and "iiif-shim-auth-room" not in set_cookies(room)
    # the refusal closes itself too, so the viewer goes on to its token service
    assert "window.close()" in room.text and "closes by itself" in room.text
    # behind a proxy of auth.forwarded_by (127.0.0.1), the forwarded client is in the room
    inside = send(port, "/auth/room/access", headers={"X-Forwarded-For": "10.20.4.5"})
    assert inside.status == 200 and "window.close()" in inside.text
    assert not set_cookies(inside)
    # the last untrusted hop counts: a client cannot prepend an address of the room
    spoofed = send(port, "/auth/room/access", headers={"X-Forwarded-For": "10.20.4.5, 192.0.2.7"})
    assert spoofed.status == 403


def test_kiosk_and_external_token_services_give_tokens_at_once_by_address(
    servers: Servers,
) -> None:
    port = servers.main.port
    assert _token_json(port, "kiosk").status == 200
    assert _token_json(port, "room").status == 401
    inside = send(port, "/auth/room/token", headers={"X-Forwarded-For": "10.20.4.5"})
    assert inside.status == 200 and json.loads(inside.body)["accessToken"]
    _seen(json.loads(inside.body)["accessToken"])


def test_kiosk_and_external_cookies_and_tokens_open_nothing_outside_the_network(
    servers: Servers,
) -> None:
    """A reader in the room (10.20.4.5) who takes a cookie or a token home (203.0.113.9)."""
    port = servers.main.port
    inside, outside = {"X-Forwarded-For": "10.20.4.5"}, {"X-Forwarded-For": "203.0.113.9"}
    # a session cookie of the room, as the access page gave one (or as one was forged with
    # the key: the same value)
    made = set_cookies(send(port, "/auth/room/access", headers=inside)).get("iiif-shim-auth-room")
    value = (
        made.value
        if made is not None
        else _forge(SECRET, Purpose.SESSION, {"p": "room", "u": "10.20.4.5"}, 3600)
    )
    _seen(value)
    image = "/iiif/3/room%2Fquad.png/full/max/0/default.png"
    assert send(port, image, headers=inside).status == 200
    assert send(port, image, headers=outside, cookies=cookie("room", value)).status == 401
    info = "/iiif/3/room%2Fquad.png/info.json"
    assert send(port, info, headers=outside, cookies=cookie("room", value)).status == 401
    # the cookie mints no token outside
    minted = send(port, "/auth/room/token", headers=outside, cookies=cookie("room", value))
    assert minted.status == 401, minted.text
    # a token minted inside opens nothing outside (it is bound to the address)
    given = send(port, "/auth/room/token", headers=inside)
    room_token = json.loads(given.body)["accessToken"]
    _seen(room_token)
    for headers, status in ((inside, 200), (outside, 401)):
        bearer = {**headers, "Authorization": f"Bearer {room_token}"}
        assert send(port, info, headers=bearer).status == status
        assert _probe_from(port, "room/quad.png", bearer)["status"] == status


def _probe_from(port: int, identifier: str, headers: dict[str, str]) -> dict[str, Any]:
    answer = send(port, f"/auth/probe/image/{quote(identifier, safe='')}", headers=headers)
    assert answer.status == 200, answer.text
    found: dict[str, Any] = json.loads(answer.body)
    return found


def test_a_sign_on_header_is_believed_from_a_trusted_proxy_only(servers: Servers) -> None:
    port = servers.main.port
    trusted = send(port, "/auth/sso/access", headers={"X-Remote-User": "carol"})
    assert trusted.status == 200 and "iiif-shim-auth-sso" in set_cookies(trusted)
    _seen(set_cookies(trusted)["iiif-shim-auth-sso"].value)
    untrusted = send(port, "/auth/sso-elsewhere/access", headers={"X-Remote-User": "carol"})
    assert untrusted.status == 403 and not set_cookies(untrusted)
    missing = send(port, "/auth/sso/access")
    assert missing.status == 403 and not set_cookies(missing)


def test_unknown_policies_and_actions_are_404_and_acting_methods_are_refused(
    servers: Servers,
) -> None:
    port = servers.main.port
    assert send(port, "/auth/nope/access").status == 404
    assert send(port, "/auth/staff/nothing").status == 404
    assert send(port, "/auth/staff/token", method="POST", form={}).status == 405
    assert send(port, "/auth/staff/logout", method="HEAD").status == 405
    assert send(port, "/iiif/3/quad.png/info.json", method="POST", form={}).status == 405


# --- shapes: token services ----------------------------------------------------------------------


def test_auth1_token_json_shapes(servers: Servers) -> None:
    port = servers.main.port
    value = login(port)
    _seen(value)
    given = _token_json(port, "staff", value)
    assert given.status == 200 and given.header("Content-Type") == "application/json; charset=utf-8"
    _pages_headers(given)
    doc = json.loads(given.body)
    assert set(doc) == {"accessToken", "expiresIn"}
    assert isinstance(doc["accessToken"], str) and doc["accessToken"] != value
    assert isinstance(doc["expiresIn"], int) and 0 < doc["expiresIn"] <= 3600
    _seen(doc["accessToken"])
    missing = _token_json(port, "staff")
    assert missing.status == 401
    error = json.loads(missing.body)
    assert error["error"] == "missingCredentials" and set(error) == {"error", "description"}
    spoofed = send(
        port, "/auth/staff/token?origin=https%3A%2F%2Fevil.example", cookies=cookie("staff", value)
    )
    assert spoofed.status == 403 and json.loads(spoofed.body)["error"] == "invalidOrigin"
    assert "accessToken" not in spoofed.text


def test_auth1_token_page_posts_the_token_with_message_id_to_the_origin(servers: Servers) -> None:
    port = servers.main.port
    value = login(port)
    _seen(value)
    page = _token_page(port, "staff", version=1, cookies=cookie("staff", value))
    assert page.status == 200 and page.header("Content-Type") == "text/html; charset=utf-8"
    found = posted(page)
    assert found is not None
    message, target = found
    assert target == ORIGIN
    assert (
        set(message) == {"accessToken", "expiresIn", "messageId"} and message["messageId"] == "m1"
    )
    _seen(message["accessToken"])
    refused = _token_page(port, "staff", version=1)
    assert refused.status == 200  # always, on the page
    message, target = posted(refused) or ({}, "")
    assert message["error"] == "missingCredentials" and message["messageId"] == "m1"
    assert message["error"] in ERRORS_1


def test_auth2_token_page_shapes(servers: Servers) -> None:
    port = servers.main.port
    value = login(port)
    _seen(value)
    page = _token_page(port, "staff", cookies=cookie("staff", value))
    assert page.status == 200 and page.header("Content-Type") == "text/html; charset=utf-8"
    _pages_headers(page)
    # frameable by the viewer's origin only
    assert page.header("X-Frame-Options") is None
    csp = page.header("Content-Security-Policy") or ""
    assert f"frame-ancestors {ORIGIN}" in csp and "script-src 'nonce-" in csp
    nonce = re.search(r"'nonce-([^']+)'", csp).group(1)  # type: ignore[union-attr]
    assert f'<script nonce="{nonce}">' in page.text
    message, target = posted(page) or ({}, "")
    assert target == ORIGIN
    assert message == {
        "@context": AUTH2,
        "type": "AuthAccessToken2",
        "accessToken": message["accessToken"],
        "expiresIn": message["expiresIn"],
        "messageId": "m1",
    }
    assert message["accessToken"] != value and isinstance(message["expiresIn"], int)
    _seen(message["accessToken"])


@pytest.mark.parametrize(
    ("case", "profile"),
    [
        ("no cookie", "missingAspect"),
        ("origin not allowed", "invalidOrigin"),
        ("no messageId", "invalidRequest"),
        ("forged cookie", "invalidAspect"),
    ],
)
def test_auth2_token_errors(servers: Servers, case: str, profile: str) -> None:
    port = servers.main.port
    kwargs: dict[str, Any] = {}
    origin = ORIGIN
    if case == "origin not allowed":
        value = login(port)
        _seen(value)
        origin = "https://evil.example"
        kwargs = {"origin": origin, "cookies": cookie("staff", value)}
    elif case == "no messageId":
        kwargs = {"message_id": None}
    elif case == "forged cookie":
        kwargs = {"cookies": cookie("staff", "eyJwIjoic3RhZmYifQ." + "A" * 43)}
    page = _token_page(port, "staff", **kwargs)
    assert page.status == 200
    message, target = posted(page) or ({}, "")
    assert target == origin
    assert message["@context"] == AUTH2 and message["type"] == "AuthAccessTokenError2"
    assert message["profile"] == profile and profile in PROFILES_2
    assert "accessToken" not in message
    assert message["messageId"] == ("" if case == "no messageId" else "m1")
    for key in ("heading", "note"):
        if key in message:
            assert isinstance(message[key], dict)  # a language map
    assert f"frame-ancestors {origin}" in (page.header("Content-Security-Policy") or "")


def test_auth2_token_page_without_origin_posts_nothing(servers: Servers) -> None:
    page = _token_page(servers.main.port, "staff", origin=None)
    assert page.status == 200 and posted(page) is None
    assert "invalidRequest" in page.text
    assert "frame-ancestors 'none'" in (page.header("Content-Security-Policy") or "")
    bad = _token_page(servers.main.port, "staff", origin="javascript:alert(1)")
    assert bad.status == 200 and posted(bad) is None


def test_a_message_id_cannot_break_out_of_the_script(servers: Servers) -> None:
    hostile = "</script><script>alert(1)</script><!-- \u2028\u2029 '\""
    for version in (1, 2):
        page = _token_page(servers.main.port, "staff", version=version, message_id=hostile)
        assert page.status == 200
        assert page.text.count("</script>") == 1  # the page's own, once
        assert "<script>" not in page.text and "<!--" not in page.text
        message, _ = posted(page) or ({}, "")
        assert message["messageId"] == hostile  # echoed exactly, once decoded


def test_token_expiry_follows_the_login(servers: Servers) -> None:
    """expiredAspect for an expired cookie: the other server's logins last SHORT_TTL s."""
    port = servers.other.port
    value = login(port)
    _seen(value)
    message, _ = posted(_token_page(port, "staff", cookies=cookie("staff", value))) or ({}, "")
    assert message["type"] == "AuthAccessToken2" and message["expiresIn"] <= SHORT_TTL
    wait_until(lambda: not _works(port, "staff", value), "the login expired", 15)
    page = _token_page(port, "staff", cookies=cookie("staff", value))
    assert (posted(page) or ({}, ""))[0]["profile"] == "expiredAspect"
    assert json.loads(_token_json(port, "staff", value).body)["error"] == "invalidCredentials"


# --- logout --------------------------------------------------------------------------------------


def test_logout_clears_the_cookie_on_a_visible_page(servers: Servers) -> None:
    port = servers.main.port
    value = login(port)
    _seen(value)
    answer = send(port, "/auth/staff/logout", cookies=cookie("staff", value))
    assert answer.status == 200 and "logged out" in answer.text
    _pages_headers(answer)
    assert "window.close" not in answer.text  # it stays open: the user reads it
    cleared = set_cookies(answer)["iiif-shim-auth-staff"]
    assert cleared.value == "" and cleared["max-age"] == "0" and cleared["path"] == "/"
    assert answer.header("Clear-Site-Data") is None  # plain HTTP: browsers ignore it there


def test_logout_over_https_clears_the_browser_cache(servers: Servers) -> None:
    """Restricted tiles are `private` with a max-age: on a shared machine the next person
    would see them from the cache; the logout page drops it (HTTPS only, as browsers do)."""
    port = servers.other.port  # server.public_url is https
    value = set_cookies(login_response(port, "staff"))["iiif-shim-auth-staff"].value
    _seen(value)
    answer = send(port, "/auth/staff/logout", cookies=cookie("staff", value))
    assert answer.status == 200
    assert answer.header("Clear-Site-Data") == '"cache"'


def _served_by(port: int, path: str, cookies: dict[str, str]) -> tuple[int, int]:
    """(the pid of the worker, the status) of ``path``: ``/health`` then ``path`` on one
    fresh keep-alive connection, so the same worker answers both."""
    conn = http.client.HTTPConnection("127.0.0.1", port, timeout=30)
    try:
        conn.request("GET", "/health")
        pid = json.loads(conn.getresponse().read())["process"]["pid"]
        conn.request(
            "GET", path, headers={"Cookie": "; ".join(f"{k}={v}" for k, v in cookies.items())}
        )
        answer = conn.getresponse()
        answer.read()
        return pid, answer.status
    finally:
        conn.close()


def _by_worker(port: int, path: str, cookies: dict[str, str]) -> dict[int, int]:
    """The status each worker gives ``path``, over fresh connections until both answered."""
    found: dict[int, int] = {}
    deadline = time.monotonic() + 30
    while len(found) < 2 and time.monotonic() < deadline:
        pid, status = _served_by(port, path, cookies)
        found.setdefault(pid, status)
    assert len(found) == 2, found
    return found


def test_a_cookie_replayed_after_logout_is_refused_by_every_process(servers: Servers) -> None:
    port = servers.main.port
    value = login(port)
    _seen(value)
    jar = cookie("staff", value)
    assert set(_by_worker(port, "/auth/staff/token", jar).values()) == {200}  # it works
    assert send(port, "/auth/staff/logout", cookies=jar).status == 200
    assert set(_by_worker(port, "/auth/staff/token", jar).values()) == {401}


def test_a_logout_on_one_machine_is_refused_on_another_sharing_redis(servers: Servers) -> None:
    value = login(servers.main.port)
    _seen(value)
    assert _works(servers.peer.port, "staff", value)  # the same key: valid on both machines
    assert (
        send(servers.main.port, "/auth/staff/logout", cookies=cookie("staff", value)).status == 200
    )
    wait_until(lambda: not _works(servers.peer.port, "staff", value), "the peer refusing", 10)


def test_a_token_given_before_logout_is_refused_after_it(servers: Servers) -> None:
    port = servers.main.port
    value = login(port, "vault")
    access = token(port, "vault", value)
    _seen(value, access)
    assert _probe(port, "vault/quad.png", access)["status"] == 200
    assert send(port, "/auth/vault/logout", cookies=cookie("vault", value)).status == 200
    assert _probe(port, "vault/quad.png", access)["status"] == 401


def test_a_reload_brings_new_policies_and_forgets_no_logout_nor_failure(
    servers: Servers,
) -> None:
    proc = servers.single
    port = proc.port
    value = login(port, "vault")
    _seen(value)
    assert _works(port, "vault", value)
    assert send(port, "/auth/vault/logout", cookies=cookie("vault", value)).status == 200
    assert not _works(port, "vault", value)
    for attempt in range(10):
        assert login_response(port, "staff", OTHER_USER, f"guess {attempt}").status == 200
    assert login_response(port, "staff", OTHER_USER, OTHER_PASSWORD).status == 429
    assert send(port, "/auth/late/access").status == 404
    late = {"kind": "clickthrough", "label": "Added by a reload"}
    auth_config(servers.folder / "single", servers.images, auth={"policies": {"late": late}})
    proc.proc.send_signal(signal.SIGHUP)
    wait_until(lambda: send(port, "/auth/late/access").status == 200, "the new policy", 10)
    assert not _works(port, "vault", value)  # the logout still holds
    assert login_response(port, "staff", OTHER_USER, OTHER_PASSWORD).status == 429


# --- attacks -------------------------------------------------------------------------------------


def test_a_full_revocation_set_fails_closed_and_never_forgets_a_logout(
    images: Path, tmp_path: Path, monkeypatch: pytest.MonkeyPatch, caplog: pytest.LogCaptureFixture
) -> None:
    """The reviewer's flush: logins and logouts fill the revocations until a real logout is
    dropped and its cookie works again. With the bound lowered to 5 (in this process), a
    full set refuses every login made before it instead: the victim's old cookie stays
    refused, a new login works, and the rule is logged once."""
    monkeypatch.setattr(store_module, "MAX_REVOKED", 5)
    shim = InProcessShim(auth_config(tmp_path / "cfg", images))
    try:
        port = shim.port
        victim = login(port, "staff")
        assert _works(port, "staff", victim)
        send(port, "/auth/staff/logout", cookies=cookie("staff", victim))
        assert not _works(port, "staff", victim)
        with caplog.at_level(logging.WARNING, logger="iiif_shim"):
            for i in range(6):  # each from an address of its own
                headers = {"X-Forwarded-For": f"192.0.2.{100 + i}"}
                answer = login_response(port, "vault", headers=headers)
                value = set_cookies(answer)["iiif-shim-auth-vault"].value
                assert _works(port, "vault", value)
                send(port, "/auth/vault/logout", cookies=cookie("vault", value), headers=headers)
                assert not _works(port, "vault", value)
        assert not _works(port, "staff", victim)  # never flushed out
        assert _works(port, "staff", login(port, "staff"))  # logging in again works
        said = [r for r in caplog.records if "logouts are remembered at once" in r.getMessage()]
        assert len(said) == 1, said
    finally:
        shim.stop()


def test_logins_from_one_address_are_bounded(servers: Servers) -> None:
    """Logins of `login` policies (each may add a revocation) are bounded per address: 60 per
    window (`max_failures.logins_per_address`), then 429 with Retry-After, for a right
    password too; another address is not held."""
    port = servers.single.port
    headers = {"X-Forwarded-For": "192.0.2.70"}
    statuses = [login_response(port, "staff", headers=headers).status for _ in range(61)]
    assert statuses[:60] == [200] * 60 and statuses[60] == 429, statuses
    limited = login_response(port, "vault", headers=headers)
    assert limited.status == 429 and int(limited.header("Retry-After") or "0") > 0
    assert not set_cookies(limited).get("iiif-shim-auth-vault")
    other = login_response(port, "staff", headers={"X-Forwarded-For": "192.0.2.71"})
    assert other.status == 200


def test_clickthroughs_lock_no_login_out(servers: Servers) -> None:
    """The reviewer's lock-out: 60 free clickthroughs from a shared address used to refuse
    every login from it for 10 minutes. A clickthrough is not counted (its logout revokes
    nothing), so a login from that address still works."""
    port = servers.single.port
    headers = {"X-Forwarded-For": "192.0.2.72"}
    statuses = [login_response(port, "terms", headers=headers).status for _ in range(61)]
    assert statuses == [200] * 61, statuses
    answer = login_response(port, "staff", headers=headers)
    assert answer.status == 200 and "iiif-shim-auth-staff" in set_cookies(answer)


def test_failures_from_one_address_are_limited_across_user_names(servers: Servers) -> None:
    """`max_failures.per_address` (30): guesses spread over many user names from one address
    (an IPv6 /64 counts as one address) are refused after 30, for a right password too;
    another address is not held."""
    port = servers.single.port

    def address(i: int) -> dict[str, str]:
        return {"X-Forwarded-For": f"2001:db8:77:1::{i + 1:x}"}  # one /64, many /128s

    for i in range(30):
        answer = login_response(port, "vault", f"guess{i}", "wrong", headers=address(i))
        assert answer.status == 200 and "Login failed" in answer.text, i
    limited = login_response(port, "vault", USER, PASSWORD, headers=address(99))
    assert limited.status == 429 and int(limited.header("Retry-After") or "0") > 0
    elsewhere = {"X-Forwarded-For": "2001:db8:77:2::1"}
    assert login_response(port, "vault", USER, PASSWORD, headers=elsewhere).status == 200


def test_address_tokens_and_clickthroughs_cannot_log_everyone_out(
    images: Path, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    """The reviewer's flood: from inside a kiosk network, token then logout with it, over and
    over (and clickthrough logins, their tokens and logouts) filled the revocations until the
    not-before logged every user out. Those logouts revoke nothing now: with the bound
    lowered to 5, a staff login made before the flood still works after it."""
    monkeypatch.setattr(store_module, "MAX_REVOKED", 5)
    shim = InProcessShim(auth_config(tmp_path / "cfg", images))
    try:
        port = shim.port
        victim = login(port, "staff")
        assert _works(port, "staff", victim)
        for _ in range(20):  # the kiosk is 127.0.0.0/8: the tests' own address
            page = send(port, "/auth/kiosk/token")
            assert page.status == 200, page.text
            bearer = {"Authorization": "Bearer " + json.loads(page.text)["accessToken"]}
            assert send(port, "/auth/kiosk/logout", headers=bearer).status == 200
        for i in range(20):
            headers = {"X-Forwarded-For": f"192.0.2.{150 + i}"}
            value = login(port, "terms") if i % 2 else ""
            if value:
                access = token(port, "terms", value)
                headers["Authorization"] = "Bearer " + access
            send(port, "/auth/terms/logout", cookies=cookie("terms", value), headers=headers)
        assert _works(port, "staff", victim)
    finally:
        shim.stop()


def test_a_forged_cookie_is_refused(servers: Servers) -> None:
    port = servers.main.port
    # what the defence stops: a cookie signed with the server's key opens the policy ...
    genuine = _forge(SECRET, Purpose.SESSION, {"p": "vault", "u": "mallory"}, 600)
    assert _works(port, "vault", genuine)
    # ... and one made without it does not: another user in the payload, the old signature
    payload, _, mac = genuine.partition(".")
    tampered = _forge("x" * 40, Purpose.SESSION, {"p": "vault", "u": "root"}, 600)
    for forged in (
        tampered,
        tampered.partition(".")[0] + "." + mac,
        payload + "." + mac[::-1],
        payload,
        "",
        "A" * 5000,
    ):
        assert not _works(port, "vault", forged), forged[:40]
    _seen(genuine)


def test_a_cookie_signed_with_another_secret_is_refused(servers: Servers) -> None:
    value = login(servers.other.port, "vault")
    _seen(value)
    assert _works(servers.other.port, "vault", value)
    assert not _works(servers.main.port, "vault", value)


def test_a_cookie_or_token_of_another_policy_opens_nothing_here(servers: Servers) -> None:
    port = servers.main.port
    terms = login(port, "terms")
    terms_token = token(port, "terms", terms)
    _seen(terms, terms_token)
    assert _works(port, "terms", terms)
    assert _probe(port, "terms/quad.png", terms_token)["status"] == 200
    # the terms cookie under the vault's name, and the terms token sent to the vault's probe
    assert not _works(port, "vault", terms)
    assert _probe(port, "vault/quad.png", terms_token)["status"] == 401


def test_a_token_sent_as_a_cookie_and_a_cookie_sent_as_a_token_are_refused(
    servers: Servers,
) -> None:
    port = servers.main.port
    value = login(port, "vault")
    access = token(port, "vault", value)
    _seen(value, access)
    assert _works(port, "vault", value) and _probe(port, "vault/quad.png", access)["status"] == 200
    assert not _works(port, "vault", access)
    assert _probe(port, "vault/quad.png", value)["status"] == 401


def test_origin_spoofing_gets_no_token_and_no_login_page(servers: Servers) -> None:
    port = servers.main.port
    value = login(port)
    _seen(value)
    for spoof in (
        "https://evil.example",
        "http://viewer.example.test:8001",
        "http://viewer.example.test.evil.example:8000",
    ):
        page = _token_page(port, "staff", origin=spoof, cookies=cookie("staff", value))
        message, target = posted(page) or ({}, "")
        assert message["profile"] == "invalidOrigin" and "accessToken" not in page.text
        access = send(port, "/auth/staff/access?" + urlencode({"origin": spoof}))
        assert access.status == 403 and 'name="password"' not in access.text
    # the allowed origin, written with a trailing slash (the 1.0 spec's example), is the same
    page = _token_page(port, "staff", origin=ORIGIN + "/", cookies=cookie("staff", value))
    message, target = posted(page) or ({}, "")
    assert message["type"] == "AuthAccessToken2" and target == ORIGIN
    _seen(message["accessToken"])


def _post_form(port: int, policy: str, csrf: str | None, binding: str | None) -> Response:
    form = {"username": USER, "password": PASSWORD, "origin": ""}
    if csrf is not None:
        form["csrf"] = csrf
    return send(
        port,
        f"/auth/{policy}/access",
        method="POST",
        form=form,
        cookies={"iiif-shim-csrf": binding} if binding else None,
    )


def test_csrf_refused_without_with_another_policy_s_and_expired(servers: Servers) -> None:
    port = servers.main.port
    fields, binding = open_form(port, "staff")
    other_fields, other_binding = open_form(port, "vault")
    expired = _forge(
        SECRET, Purpose.CSRF, {"p": "staff", "b": binding}, 3600, now=time.time() - 7200
    )
    attempts = {
        "no csrf": (None, binding),
        "no binding cookie": (fields["csrf"], None),
        "another browser's cookie": (fields["csrf"], other_binding),
        "another policy's csrf": (other_fields["csrf"], other_binding),
        "expired csrf": (expired, binding),
    }
    for case, (csrf, bound) in attempts.items():
        answer = _post_form(port, "staff", csrf, bound)
        assert answer.status == 403, case
        assert "iiif-shim-auth-staff" not in set_cookies(answer), case
    # the same post with this browser's valid value logs in
    answer = _post_form(port, "staff", fields["csrf"], binding)
    assert answer.status == 200 and "iiif-shim-auth-staff" in set_cookies(answer)
    _seen(set_cookies(answer)["iiif-shim-auth-staff"].value)
    # the clickthrough is a POST with CSRF too: a bare POST accepts nothing
    bare = _post_form(port, "terms", None, None)
    assert bare.status == 403 and not any(k.startswith("iiif-shim-auth") for k in set_cookies(bare))


def test_brute_force_is_limited_after_ten_failures_with_retry_after(servers: Servers) -> None:
    port = servers.main.port
    for attempt in range(10):
        answer = login_response(port, "staff", OTHER_USER, f"guess {attempt}")
        assert answer.status == 200 and "Login failed" in answer.text, attempt
    limited = login_response(port, "staff", OTHER_USER, "guess 11")
    assert limited.status == 429
    assert int(limited.header("Retry-After") or "0") > 0
    # the limit holds for the right password too, and on the other machine (Redis)
    assert login_response(port, "staff", OTHER_USER, OTHER_PASSWORD).status == 429
    assert login_response(servers.peer.port, "staff", OTHER_USER, OTHER_PASSWORD).status == 429
    # another user from the same address is not locked out
    assert login_response(port, "vault", USER, PASSWORD).status == 200


def test_a_failed_login_names_no_user_the_file_has_not(servers: Servers) -> None:
    """A password typed into the user field goes into no audit line: the line has
    `user: null` and a keyed hash of what was typed; a known user is named."""
    typed = "my password typed in the wrong field"
    _seen(typed)
    headers = {"X-Forwarded-For": "192.0.2.60"}
    for user in (typed, USER):
        answer = login_response(servers.single.port, "vault", user, "wrong", headers=headers)
        assert answer.status == 200
    text = (servers.folder / "single" / "audit.log").read_text()
    assert typed not in text
    lines = [json.loads(line) for line in text.splitlines()]
    failed = [x for x in lines if x["event"] == "login_failed" and x["address"] == "192.0.2.60"]
    assert failed[0]["user"] is None and failed[0]["user_hash"]
    assert failed[1]["user"] == USER and "user_hash" not in failed[1]


@pytest.mark.parametrize("which", ["main", "single"])
def test_a_burst_of_parallel_guesses_gets_no_more_checks_than_the_limit(
    servers: Servers, which: str
) -> None:
    """30 wrong passwords posted at once (forms fetched first, as an attacker would): at most
    `per_user` (10) are checked, the rest are 429; then the right password is 429 too. On
    `main` the count is Redis's (two processes), on `single` the journal's."""
    server = servers.main if which == "main" else servers.single
    port = server.port
    address = {"main": "192.0.2.50", "single": "192.0.2.51"}[which]
    headers = {"X-Forwarded-For": address}
    forms = [open_form(port, "vault") for _ in range(30)]

    def post(i: int) -> int:
        fields, binding = forms[i]
        return send(
            port,
            "/auth/vault/access",
            method="POST",
            cookies={"iiif-shim-csrf": binding},
            form={**fields, "username": OTHER_USER, "password": f"burst {i}"},
            headers=headers,
        ).status

    with ThreadPoolExecutor(max_workers=30) as pool:
        statuses = list(pool.map(post, range(30)))
    audit = servers.folder / which / "audit.log"

    def failed() -> list[dict[str, Any]]:
        lines = [json.loads(line) for line in audit.read_text().splitlines()]
        return [x for x in lines if x["event"] == "login_failed" and x.get("address") == address]

    checked = failed()
    assert 1 <= len(checked) <= 10, (len(checked), statuses)
    assert statuses.count(200) == len(checked) and statuses.count(429) == 30 - len(checked)
    assert all(x["user"] == OTHER_USER and x["policy"] == "vault" for x in checked)
    right = login_response(port, "vault", OTHER_USER, OTHER_PASSWORD, headers=headers)
    assert right.status == 429 and int(right.header("Retry-After") or "0") > 0
    assert len(failed()) == len(checked)  # nothing more was checked


# --- CORS ----------------------------------------------------------------------------------------


def test_preflight_names_authorization_and_nothing_allows_credentials(servers: Servers) -> None:
    port = servers.main.port
    preflight = send(
        port,
        "/iiif/3/staff%2Fquad.png/info.json",
        method="OPTIONS",
        headers={
            "Origin": ORIGIN,
            "Access-Control-Request-Method": "GET",
            "Access-Control-Request-Headers": "authorization",
        },
    )
    assert preflight.status == 204
    allowed = [
        h.strip() for h in (preflight.header("Access-Control-Allow-Headers") or "").split(",")
    ]
    assert "Authorization" in allowed
    value = login(port)
    _seen(value)
    for path in (
        "/iiif/3/staff%2Fquad.png/info.json",
        "/iiif/3/vault%2Fquad.png/full/max/0/default.jpg",
        "/auth/probe/image/staff%2Fquad.png",
        "/auth/staff/token",
        "/auth/staff/token2?messageId=1&origin=" + quote(ORIGIN),
    ):
        for jar in (None, cookie("staff", value)):
            answer = send(port, path, cookies=jar, headers={"Origin": ORIGIN})
            assert answer.header("Access-Control-Allow-Credentials") is None, path
            assert answer.header("Access-Control-Allow-Origin") in (None, "*"), path


# --- what is written -----------------------------------------------------------------------------


def test_the_audit_log_names_every_event(servers: Servers) -> None:
    lines = [
        json.loads(line)
        for line in (servers.folder / "main" / "audit.log").read_text().splitlines()
    ]
    events = {line["event"] for line in lines}
    assert {
        "login",
        "login_failed",
        "logout",
        "refused",
        "rate_limited",
        "token",
        "token_refused",
    } <= events
    reasons = {line.get("reason") for line in lines if line["event"] == "refused"}
    assert {"csrf", "origin", "address"} <= reasons
    assert all({"time", "event"} <= set(line) for line in lines)


def test_no_password_cookie_token_or_key_in_logs_audit_or_metrics(servers: Servers) -> None:
    """Last: every credential the module used, against everything the servers wrote."""
    assert len(SEEN) > 10
    written = {
        "main log": servers.main.log.read_text(),
        "peer log": servers.peer.log.read_text(),
        "other log": servers.other.log.read_text(),
        "main metrics": send(servers.main.port, "/metrics").text,
        "peer metrics": send(servers.peer.port, "/metrics").text,
    }
    for name in ("main", "peer", "other"):
        audit = servers.folder / name / "audit.log"
        written[f"{name} audit"] = audit.read_text() if audit.exists() else ""
    for where, text in written.items():
        for secret in SEEN:
            assert secret not in text, f"a credential in the {where}"
