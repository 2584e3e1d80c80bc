"""OpenID Connect login (``users.oidc``) against a real provider: npm ``oidc-provider``
(``tests/oidc/provider.mjs``, installed by ``bash deploy/setup.sh test``) on 127.0.0.1, driven
over plain HTTP through its development login pages; and against ``tests/oidc/hostile.py``,
a provider that signs in anyone and then gets one thing of its ID token wrong, for the checks
a correct provider never fails. The shim is the real command on real sockets.
"""

from __future__ import annotations

import asyncio
import json
import re
import socket
import sys
from collections.abc import Iterator
from dataclasses import dataclass
from html import unescape
from pathlib import Path
from urllib.parse import parse_qs, urlencode, urljoin, urlsplit

import aiohttp
import pytest

from tests.support import (
    ROOT,
    Process,
    free_port,
    need_tool,
    request,
    start_faulty,
    start_shim,
    wait_until,
    write_config,
)

PROVIDER_DIR = ROOT / ".oidc-provider"
SECRET = "k" * 48
CLIENT_SECRET = "client-secret-of-the-shim"
TILE = "/iiif/3/locked-quad.png/full/max/0/default.png"
PUBLIC_TILE = "/iiif/3/quad.png/full/max/0/default.png"
FAILURE_HEADING = "Signing in through Example ID did not work"


def _config(
    tmp: Path,
    images: Path,
    issuer: str,
    *,
    client_secret: str | None,
    require: dict[str, str] | None = None,
) -> Path:
    secret = f", client_secret: {client_secret}" if client_secret else ""
    if require:
        secret += ", require: " + json.dumps(require)
    return write_config(
        tmp / "shim.yaml",
        f"""
        iiif: {{prefix: /iiif}}
        backends:
          local: {{type: files, root: "{images}"}}
        auth:
          secret: "{SECRET}"
          audit_log: "{tmp / "audit.log"}"
          policies:
            sso:
              kind: login
              label: Example ID
              failure_heading: "{FAILURE_HEADING}"
              users:
                oidc: {{issuer: "{issuer}", client_id: iiif-shim, timeout: 2{secret}}}
        routes:
          - {{match: "^locked-(?P<rest>.+)$", backend: local, id: "{{rest}}", access: sso}}
          - {{backend: local}}
        """,
    )


def start_provider(tmp: Path, port: int, redirect_uri: str) -> Process:
    """The real provider (``tests/oidc/provider.mjs``) on ``port``."""
    node = need_tool("node")
    if not (PROVIDER_DIR / "node_modules" / "oidc-provider" / "package.json").exists():
        pytest.fail("oidc-provider is not installed: run `bash deploy/setup.sh test`")
    script = str(ROOT / "tests" / "oidc" / "provider.mjs")
    args = [node, script, str(port), redirect_uri, CLIENT_SECRET]
    return Process(args, port, tmp / f"provider-{port}.log")


def audit(tmp: Path) -> list[dict[str, object]]:
    path = tmp / "audit.log"
    if not path.exists():
        return []
    return [json.loads(line) for line in path.read_text().splitlines() if line.strip()]


def audited(tmp: Path, **fields: object) -> dict[str, object]:
    """The first audit line holding ``fields`` (waited for: the log is written after the
    answer)."""
    found: list[dict[str, object]] = []

    def there() -> bool:
        found[:] = [e for e in audit(tmp) if all(e.get(k) == v for k, v in fields.items())]
        return bool(found)

    wait_until(there, f"an audit line with {fields}", 10)
    return found[0]


@dataclass
class Site:
    tmp: Path
    shim: Process
    provider: Process | None
    issuer: str

    @property
    def base(self) -> str:
        return f"http://127.0.0.1:{self.shim.port}"

    @property
    def callback(self) -> str:
        return f"{self.base}/auth/sso/oidc/callback"


@pytest.fixture
def site(images: Path, tmp_path: Path) -> Iterator[Site]:
    provider_port = free_port()
    issuer = f"http://127.0.0.1:{provider_port}"
    shim = start_shim(_config(tmp_path, images, issuer, client_secret=CLIENT_SECRET), tmp_path)
    provider = start_provider(
        tmp_path, provider_port, f"http://127.0.0.1:{shim.port}/auth/sso/oidc/callback"
    )
    yield Site(tmp_path, shim, provider, issuer)
    provider.stop()
    shim.stop()


def _form(html: str, page: str) -> tuple[str, dict[str, str]]:
    """The action (absolute) and hidden fields of the first form of a page."""
    found = re.search(r'<form[^>]*action="([^"]+)"', html)
    assert found, f"no form on the provider's page:\n{html[:2000]}"
    fields = {
        unescape(name): unescape(value)
        for name, value in re.findall(
            r'<input[^>]*type="hidden"[^>]*name="([^"]+)"[^>]*value="([^"]*)"', html
        )
    }
    return urljoin(page, unescape(found.group(1))), fields


async def _walk(
    session: aiohttp.ClientSession,
    method: str,
    url: str,
    stop: str,
    data: dict[str, str] | None = None,
) -> tuple[str, str | None]:
    """Follows redirects by hand from ``method url`` until a ``Location`` starts with
    ``stop`` (returned, not fetched) or a page answers (its URL and HTML)."""
    for _ in range(20):
        async with session.request(method, url, data=data, allow_redirects=False) as response:
            if response.status in (301, 302, 303, 307, 308):
                location = urljoin(url, response.headers["Location"])
                if location.startswith(stop):
                    return location, None
                method, url, data = "GET", location, None
                continue
            assert response.status == 200, f"{url}: {response.status} {await response.text()}"
            return url, await response.text()
    raise AssertionError("more than 20 redirects")


async def _sign_in(site: Site, user: str, *, abort: bool = False) -> tuple[str, str, str]:
    """Through the shim's access page and the provider's login and consent pages, as a
    browser would; the callback URL the provider sends back to, the state cookie's value and
    the access page's ``Location``. The callback itself is not fetched."""
    jar = aiohttp.CookieJar(unsafe=True)  # cookies of 127.0.0.1
    async with aiohttp.ClientSession(cookie_jar=jar) as session:
        async with session.get(f"{site.base}/auth/sso/access", allow_redirects=False) as access:
            assert access.status == 302, await access.text()
            authorize = access.headers["Location"]
        binding = next(c.value for c in jar if c.key == "iiif-shim-oidc-sso")
        url, page = await _walk(session, "GET", authorize, site.callback)
        assert page is not None, "the provider sent the browser back without a login"
        if abort:  # the login page's "Cancel" link
            found = re.search(r'href="([^"]*/abort)"', page)
            assert found, page[:2000]
            url, page = await _walk(session, "GET", urljoin(url, found.group(1)), site.callback)
        for _ in range(3):  # the login page, then the consent page
            if page is None:
                break
            action, fields = _form(page, url)
            if fields.get("prompt") == "login":
                fields.update(login=user, password="anything")
            url, page = await _walk(session, "POST", action, site.callback, fields)
        assert page is None, f"still on a page of the provider:\n{page[:2000]}"
        return url, binding, authorize


def _callback(site: Site, url: str, binding: str | None) -> tuple[int, str, str]:
    """Fetches the callback URL with the state cookie: status, body, Set-Cookie lines."""
    parts = urlsplit(url)
    headers = {"Cookie": f"iiif-shim-oidc-sso={binding}"} if binding else {}
    got = request(site.shim.port, f"{parts.path}?{parts.query}", headers=headers)
    cookies = "\n".join(got.headers.get_all("Set-Cookie") or [])
    return got.status, got.text, cookies


def _session_cookie(set_cookie: str) -> str:
    found = re.search(r"iiif-shim-auth-sso=([^;\s]+)", set_cookie)
    assert found, set_cookie
    return found.group(1)


def test_oidc_login_opens_restricted_tiles(site: Site) -> None:
    assert request(site.shim.port, TILE).status == 401
    url, binding, authorize = asyncio.run(_sign_in(site, "alice"))

    # the authorization request: code flow, PKCE S256, state, nonce, this server's callback
    asked = parse_qs(urlsplit(authorize).query)
    assert authorize.startswith(site.issuer + "/")
    assert asked["response_type"] == ["code"]
    assert asked["client_id"] == ["iiif-shim"]
    assert asked["redirect_uri"] == [site.callback]
    assert asked["code_challenge_method"] == ["S256"]
    assert len(asked["code_challenge"][0]) == 43
    assert asked["state"][0] and asked["nonce"][0]
    assert "openid" in asked["scope"][0].split()

    status, body, set_cookie = _callback(site, url, binding)
    assert status == 200, body
    assert "window.close()" in body and "close this window" in body
    cookie = _session_cookie(set_cookie)
    assert re.search(r"iiif-shim-oidc-sso=(\"\")?;[^\n]*Max-Age=0", set_cookie)  # used once
    tile = request(site.shim.port, TILE, headers={"Cookie": f"iiif-shim-auth-sso={cookie}"})
    assert tile.status == 200
    assert tile.image().size == (300, 200)
    assert request(site.shim.port, TILE).status == 401  # still closed to everyone else
    login = audited(site.tmp, event="login", policy="sso")
    assert login["user"] == "alice"
    text = (site.tmp / "audit.log").read_text()
    code = parse_qs(urlsplit(url).query)["code"][0]
    assert code not in text and cookie not in text and CLIENT_SECRET not in text


def test_replayed_callback_is_refused(site: Site) -> None:
    url, binding, _ = asyncio.run(_sign_in(site, "bob"))
    status, _, _ = _callback(site, url, binding)
    assert status == 200
    # the same callback again, cookie and all (as someone who captured both would): the
    # provider refuses a code used once, and so no second login starts
    status, body, set_cookie = _callback(site, url, binding)
    assert status == 401, body
    assert FAILURE_HEADING in body and "used already" in body
    assert "iiif-shim-auth-sso=" not in set_cookie
    entry = audited(site.tmp, event="refused", policy="sso")
    assert "invalid_grant" in str(entry["reason"])


def test_forged_or_foreign_state_is_refused(site: Site) -> None:
    url, binding, _ = asyncio.run(_sign_in(site, "carol"))
    query = parse_qs(urlsplit(url).query)
    state = query["state"][0]
    payload, _, mac = state.partition(".")
    forged = payload + "." + ("A" if mac[0] != "A" else "B") + mac[1:]
    for params, cookie, why in (
        ({**query, "state": [forged]}, binding, "invalid"),  # its signature broken
        ({k: v for k, v in query.items() if k != "state"}, binding, "missing"),
        (query, None, "not of this browser"),  # another browser (no state cookie)
        (query, "someone-else", "not of this browser"),
    ):
        target = f"{site.callback}?{urlencode({k: v[0] for k, v in params.items()})}"
        status, body, set_cookie = _callback(site, target, cookie)
        assert status == 400, (why, body)
        assert FAILURE_HEADING in body
        assert "iiif-shim-auth-sso=" not in set_cookie
        audited(site.tmp, event="refused", reason=f"oidc: state {why}")
    # the code was never used by a refused callback: the real one still signs in
    status, _, set_cookie = _callback(site, url, binding)
    assert status == 200
    assert _session_cookie(set_cookie)
    # a repeated parameter is not guessed at
    status, _, _ = _callback(site, url + "&state=" + state, binding)
    assert status == 400


def test_cancelled_at_the_provider(site: Site) -> None:
    url, binding, _ = asyncio.run(_sign_in(site, "dave", abort=True))
    assert parse_qs(urlsplit(url).query)["error"] == ["access_denied"]
    status, body, set_cookie = _callback(site, url, binding)
    assert status == 401, body
    assert FAILURE_HEADING in body and "cancelled" in body
    assert "iiif-shim-auth-sso=" not in set_cookie
    audited(site.tmp, event="refused", reason="oidc: provider: access_denied")


def test_provider_down_or_silent(site: Site, images: Path, tmp_path: Path) -> None:
    # discovery is cached: the access page still sends the browser off; the provider is then
    # stopped before the callback exchanges the code
    url, binding, _ = asyncio.run(_sign_in(site, "erin"))
    assert site.provider is not None
    site.provider.stop()
    status, body, _ = _callback(site, url, binding)
    assert status == 502, body
    assert FAILURE_HEADING in body and "could not be reached" in body
    audited(site.tmp, event="refused", reason="oidc: provider unreachable: ClientConnectorError")

    # a shim that has not read the provider yet: its access page says so (502)
    other = tmp_path / "cold"
    other.mkdir()
    cold = start_shim(_config(other, images, site.issuer, client_secret=None), other)
    try:
        got = request(cold.port, "/auth/sso/access")
        assert got.status == 502, got.text
        assert "could not be reached" in got.text
        # a provider that takes the connection and never answers: 504 within its timeout
        with socket.socket() as silent:
            silent.bind(("127.0.0.1", 0))
            silent.listen(8)
            port = silent.getsockname()[1]
            mute = tmp_path / "mute"
            mute.mkdir()
            issuer = f"http://127.0.0.1:{port}"
            stuck = start_shim(_config(mute, images, issuer, client_secret=None), mute)
            try:
                got = request(stuck.port, "/auth/sso/access", timeout=15)
                assert got.status == 504, got.text
                assert "did not answer in time" in got.text
                audited(mute, event="refused", reason="oidc: provider timeout")
            finally:
                stuck.stop()
    finally:
        cold.stop()


# --- the hostile provider: ID tokens a correct provider never sends --------------------------


@pytest.fixture(scope="module")
def hostile(images: Path, tmp_path_factory: pytest.TempPathFactory) -> Iterator[Site]:
    tmp = tmp_path_factory.mktemp("hostile")
    port = free_port()
    args = [sys.executable, "-m", "tests.oidc.hostile", "--port", str(port)]
    provider = Process([*args, "--client-id", "iiif-shim"], port, tmp / "hostile.log", cwd=ROOT)
    issuer = f"http://127.0.0.1:{port}"
    shim = start_shim(_config(tmp, images, issuer, client_secret=None), tmp)
    yield Site(tmp, shim, provider, issuer)
    shim.stop()
    provider.stop()


async def _hostile_sign_in(site: Site, mode: str) -> tuple[int, str, str]:
    assert site.provider is not None
    assert request(site.provider.port, f"/_mode/{mode}").status == 200
    jar = aiohttp.CookieJar(unsafe=True)
    async with aiohttp.ClientSession(cookie_jar=jar) as session:
        url, page = await _walk(session, "GET", f"{site.base}/auth/sso/access", site.callback)
        assert page is None
        async with session.get(url, allow_redirects=False) as response:
            cookies = "\n".join(response.headers.getall("Set-Cookie", []))
            return response.status, await response.text(), cookies


@pytest.mark.parametrize(
    ("mode", "status", "reason"),
    [
        ("wrong-aud", 401, "oidc: ID token: wrong aud"),
        ("wrong-nonce", 401, "oidc: ID token: wrong nonce"),
        ("no-nonce", 401, "oidc: ID token: no nonce"),
        ("expired", 401, "oidc: ID token: expired"),
        ("wrong-iss", 401, "oidc: ID token: wrong iss"),
        ("alg-none", 401, None),
        ("hs256", 401, None),
        ("other-key", 401, "oidc: ID token: unknown key"),
        ("no-id-token", 502, "oidc: token endpoint: no id_token"),
        ("token-500", 502, "oidc: token endpoint: HTTP 500 -"),
        ("deep-json", 502, "oidc: token endpoint: no id_token"),
        ("deep-claims", 401, "oidc: ID token: unreadable (RecursionError)"),
    ],
)
def test_bad_id_tokens_are_refused(
    hostile: Site, mode: str, status: int, reason: str | None
) -> None:
    logins = sum(e.get("event") == "login" for e in audit(hostile.tmp))
    got, body, cookies = asyncio.run(_hostile_sign_in(hostile, mode))
    assert got == status, body
    assert FAILURE_HEADING in body
    assert "iiif-shim-auth-sso=" not in cookies
    if reason is not None:
        audited(hostile.tmp, event="refused", reason=reason)
    assert sum(e.get("event") == "login" for e in audit(hostile.tmp)) == logins


def test_the_hostile_provider_signs_in_when_it_makes_no_mistake(hostile: Site) -> None:
    """The refusals above are the checks', not a provider the shim cannot use at all."""
    got, body, cookies = asyncio.run(_hostile_sign_in(hostile, "good"))
    assert got == 200, body
    cookie = _session_cookie(cookies)
    tile = request(hostile.shim.port, TILE, headers={"Cookie": f"iiif-shim-auth-sso={cookie}"})
    assert tile.status == 200
    assert audited(hostile.tmp, event="login")["user"] == "mallory"
    assert request(hostile.shim.port, PUBLIC_TILE).status == 200


@pytest.mark.parametrize(
    ("require", "admitted"),
    [
        ({"groups": "readers", "department": "library"}, True),  # a list holding it, equal
        ({"groups": "staff"}, False),  # the list lacks it
        ({"department": "finance"}, False),  # another value
        ({"office": "3"}, False),  # a claim the token has not
    ],
)
def test_require_admits_only_the_accounts_with_those_claims(
    hostile: Site, tmp_path: Path, images: Path, require: dict[str, str], admitted: bool
) -> None:
    """Without `require` every account the provider signs in is admitted (the test above,
    `mallory` with no group asked); with it, only ID tokens that have each claim."""
    config = _config(tmp_path, images, hostile.issuer, client_secret=None, require=require)
    shim = start_shim(config, tmp_path)
    try:
        site = Site(tmp_path, shim, hostile.provider, hostile.issuer)
        got, body, cookies = asyncio.run(_hostile_sign_in(site, "good"))
        tile = request(shim.port, TILE, headers={"Cookie": _cookie_header(cookies)})
        if admitted:
            assert got == 200 and tile.status == 200, body
            assert audited(tmp_path, event="login")["user"] == "mallory"
        else:
            assert got == 403 and FAILURE_HEADING in body, body
            assert "iiif-shim-auth-sso=" not in cookies and tile.status == 401
            claim = next(iter(require))
            audited(tmp_path, event="refused", reason=f"oidc: ID token: {claim} not as required")
            assert not any(e.get("event") == "login" for e in audit(tmp_path))
    finally:
        shim.stop()


def _cookie_header(cookies: str) -> str:
    """The Cookie header a browser sends after the callback's ``Set-Cookie`` lines."""
    found = [x for x in cookies.splitlines() if x.startswith("iiif-shim-auth-sso=")]
    return found[0].split(";", 1)[0] if found else "none=1"


def test_a_provider_that_answers_nonsense(images: Path, tmp_path: Path) -> None:
    """Discovery from a server that is no provider (``tests/faulty.py``): each policy's access
    page is a 502 with the failure heading, never a 500."""
    faulty = start_faulty(images, tmp_path)
    policies = {  # name: (issuer's path, why)
        "missing": ("status/404/x", "discovery: HTTP 404"),
        "huge": ("jsonbomb/x", "answer longer than 262144 bytes"),
        "html": ("html200/x", "discovery: not JSON"),
        "hangup": ("refuse/x", "provider unreachable: ServerDisconnectedError"),
    }
    try:
        found = {
            name: {
                "kind": "login",
                "label": name,
                "failure_heading": FAILURE_HEADING,
                "users": {
                    "oidc": {"issuer": f"http://127.0.0.1:{faulty.port}/{path}", "client_id": "c"}
                },
            }
            for name, (path, _) in policies.items()
        }
        config = write_config(
            tmp_path / "shim.yaml",
            f"""
            iiif: {{prefix: /iiif}}
            backends: {{local: {{type: files, root: "{images}"}}}}
            auth:
              secret: "{SECRET}"
              audit_log: "{tmp_path / "audit.log"}"
              policies: {json.dumps(found)}
            routes: [{{backend: local}}]
            """,
        )
        shim = start_shim(config, tmp_path)
        try:
            for name, (_, why) in policies.items():
                got = request(shim.port, f"/auth/{name}/access")
                assert got.status == 502, (name, got.text)
                assert FAILURE_HEADING in got.text
                audited(tmp_path, event="refused", policy=name, reason=f"oidc: {why}")
        finally:
            shim.stop()
    finally:
        faulty.stop()
