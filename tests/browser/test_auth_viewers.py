"""Authorization in a real browser: Mirador 4 and UV 4.4 (Auth 1.0) and a client of the Auth 2.0
flow, against restricted images of the shim (``tests/browser/authsite.py``).

The viewer pages are the shim's own ``/view/mirador`` and ``/view/uv`` opened on
``https://viewer.example.test``; the manifests, images and auth services are on
``https://images.example.test``: two origins of one site, as docs/authorization.md tells
operators to deploy. Each browser context blocks third-party cookies (Chrome's incognito default,
Safari's and Firefox's too): the same-site flow must not need them.

For each viewer: a ``login`` image (the prompt shows; its button opens the access service in a
popup; username and password are filled in and sent; the popup closes itself; full-resolution
tiles are drawn, checked by colour and by every tile request's status), a ``clickthrough`` image
(the terms shown and accepted in the viewer; its access window grants and closes at once) and
an image with a degraded tier (the degraded tier is drawn before login and no full-tier image is
even asked for; full-tier tiles after login). The Auth 2.0
client page (``auth_pages/auth2-client.html``: probe, access window, token iframe with a
messageId, probe again with the token) gets ``status: 401`` and the substitute before login,
``status: 200`` after.

Cross-site (the viewer on ``viewer.other.test``, third-party cookies blocked): the login in the
popup is first-party and sets the cookie, but the token page in the viewer's frame is
third-party, gets no cookie and posts ``missingCredentials``. Mirador 4.0.0 then shows its login
prompt again (it starts a new token request at once and never reloads the frame, so its failure
text never appears); UV 4.4 says "Your log-in attempt did not appear to be successful". Neither
draws anything restricted. docs/authorization.md tells operators to keep viewer and images on
one site for that reason.

``IIIF_SHIM_SCREENSHOTS=1`` writes docs/images/auth-mirador-login.png and auth-degraded.png
(a folder instead of ``1`` writes them there); without it nothing is written.
"""

from __future__ import annotations

import json
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any
from urllib.parse import quote, urlsplit

import pytest

from iiif_shim.presentation.viewers import ViewerSettings
from tests.browser import authsite
from tests.browser.authsite import (
    DEGRADED_SIZE,
    LETTER,
    MAP,
    OTHER_HOST,
    PASSWORD,
    PLAN,
    USER,
    VIEWER_HOST,
    Restricted,
    Site,
    Visit,
)
from tests.browser.conftest import wait_for_colours
from tests.tls import CA, make_ca, trusting_home

CANVAS = "#viewer .openseadragon-canvas"
CLIENT_PAGE = Path(__file__).parent / "auth_pages" / "auth2-client.html"
COOKIE_PREFIX = "iiif-shim-auth-"


# --- fixtures -------------------------------------------------------------------------------------


@pytest.fixture(scope="module")
def ca(tmp_path_factory: pytest.TempPathFactory) -> CA:
    return make_ca(tmp_path_factory.mktemp("auth-ca"))


@pytest.fixture(scope="module")
def site(
    viewer_settings: ViewerSettings, ca: CA, tmp_path_factory: pytest.TempPathFactory
) -> Iterator[Site]:
    started = authsite.start_site(tmp_path_factory.mktemp("auth-site"), ca)
    yield started
    started.process.stop()


@pytest.fixture(scope="module")
def chromium(
    browser: Any, chromium_path: str, ca: CA, tmp_path_factory: pytest.TempPathFactory
) -> Iterator[Any]:
    home = trusting_home(tmp_path_factory.mktemp("auth-home"), ca)
    launched = authsite.launch(browser, chromium_path, home)
    yield launched
    launched.close()


@pytest.fixture(scope="module")
def pages_port(ca: CA) -> Iterator[int]:
    """The port of the static pages of auth_pages/ on the viewer's host."""
    with authsite.static_pages(CLIENT_PAGE.parent, ca) as port:
        yield port


@pytest.fixture
def visit(chromium: Any, site: Site) -> Iterator[Visit]:
    """A fresh browser context (no cookie yet) blocking third-party cookies, its first tab."""
    with authsite.visit(chromium) as opened:
        opened.log = site.process.log
        cdp = opened.context.new_cdp_session(opened.page)
        cdp.send(
            "Network.setCookieControls",
            {
                "enableThirdPartyCookieRestriction": True,
                "disableThirdPartyCookieMetadata": True,
                "disableThirdPartyCookieHeuristics": True,
            },
        )
        yield opened


# --- steps ----------------------------------------------------------------------------------------


def watched(visit: Visit, step: Callable[[], None]) -> None:
    """Run ``step``; if it fails, say what the browser saw meanwhile."""
    try:
        step()
    except (Exception, pytest.fail.Exception) as exc:  # wait_until fails with pytest.fail
        raise AssertionError(f"{exc}\n{visit.report()}") from exc


def expect_text(page: Any, text: str, timeout: float = 30_000) -> None:
    page.get_by_text(text, exact=False).first.wait_for(state="visible", timeout=timeout)


def in_popup(visit: Visit, open_it: Callable[[], None]) -> Any:
    """The window (tab or popup) that ``open_it`` opens, once its access page has loaded."""
    with visit.context.expect_page(timeout=30_000) as opened:
        open_it()
    popup = opened.value
    popup.set_default_timeout(30_000)
    popup.on("console", lambda m: visit.tab.console.append(f"popup {m.type}: {m.text}"))
    return popup


def log_in(popup: Any) -> None:
    """Fill the access service's login form in and send it; the page then closes itself."""
    popup.locator("input[name=username]").wait_for(state="visible")
    popup.locator("input[name=username]").fill(USER)
    popup.locator("input[name=password]").fill(PASSWORD)
    with popup.expect_event("close", timeout=30_000):
        popup.locator("form [type=submit]").first.click()


def accepted(popup: Any) -> None:
    """A clickthrough's access page opened by a viewer grants at once and closes itself (the
    viewer showed the terms and took the click: Auth 1.0's clickthrough)."""
    if not popup.is_closed():
        popup.wait_for_event("close", timeout=30_000)


def cookie_of(visit: Visit, site: Site, policy: str) -> str | None:
    for cookie in visit.context.cookies(site.origin()):
        if cookie["name"] == COOKIE_PREFIX + policy:
            return str(cookie["value"])
    return None


def full_tiles(visit: Visit, site: Site, item: Restricted, mark: int = 0) -> list[authsite.Seen]:
    return visit.traffic.images(site.full_bases(item), mark)


def degraded_tiles(
    visit: Visit, site: Site, item: Restricted, mark: int = 0
) -> list[authsite.Seen]:
    return visit.traffic.images(site.degraded_bases(item), mark)


def drawn_in_full(visit: Visit, site: Site, item: Restricted, mark: int) -> None:
    """After login: full-tier tiles answered 200 and drawn, none refused."""
    visit.until(
        lambda: any(s.status == 200 for s in full_tiles(visit, site, item, mark)),
        f"a full-tier tile of {item.identifier} answered 200",
    )
    wait_for_colours(visit.page, CANVAS, {item.colour: 0.2})
    tiles = full_tiles(visit, site, item, mark)
    assert tiles and all(s.status == 200 for s in tiles), tiles


def nothing_restricted_drawn(
    visit: Visit, site: Site, item: Restricted, *, asked: bool = False
) -> None:
    """Before login, no full-tier image of ``item`` came with 200, and its colour is not shown.
    ``asked``: the viewer draws the 401 info.json (Mirador does), so wait until it has asked
    for a full-tier tile and been refused."""
    if asked:
        visit.until(
            lambda: any(s.status == 401 for s in full_tiles(visit, site, item)),
            f"a full-tier tile of {item.identifier} refused",
        )
    tiles = full_tiles(visit, site, item)
    assert all(s.status == 401 for s in tiles), tiles
    wait_for_colours(visit.page, CANVAS, {}, {item.colour: 0.01})


def screenshot(visit: Visit, name: str) -> None:
    folder = authsite.screenshots_wanted()
    if folder is not None:
        folder.mkdir(parents=True, exist_ok=True)
        visit.page.screenshot(path=str(folder / name))


# Mirador 4: the bar at the top of the window shows the cookie service's label; with a header
# or description it first shows "Continue", which opens header, description and the confirm
# button (confirmLabel).


def mirador_prompt(visit: Visit, site: Site, item: Restricted, host: str = VIEWER_HOST) -> None:
    policy = authsite.POLICIES[item.policy]
    visit.page.goto(site.viewer("mirador", item, host), wait_until="load")
    expect_text(visit.page, item.title)
    expect_text(visit.page, policy["label"])
    visit.page.get_by_role("button", name=policy["label"]).first.click()
    expect_text(visit.page, policy["heading"])
    expect_text(visit.page, policy["note"])


def mirador_confirm(visit: Visit, item: Restricted) -> Any:
    label = authsite.POLICIES[item.policy]["confirm_label"]
    button = visit.page.get_by_role("button", name=label, exact=True).first
    return in_popup(visit, button.click)


# UV 4.4: a dialogue (header, description, confirm button) for a 401; for a degraded image an
# information bar with the cookie service's label and a button with its confirmLabel.


def uv_open(visit: Visit, site: Site, item: Restricted) -> None:
    visit.page.goto(site.viewer("uv", item), wait_until="load")


def uv_dialogue_confirm(visit: Visit, item: Restricted) -> Any:
    policy = authsite.POLICIES[item.policy]
    expect_text(visit.page, policy["heading"])
    expect_text(visit.page, policy["note"])
    button = visit.page.locator(".overlay.auth .confirm").filter(has_text=policy["confirm_label"])
    return in_popup(visit, button.first.click)


# --- Mirador --------------------------------------------------------------------------------------


def test_mirador_logs_in_and_draws_the_full_image(visit: Visit, site: Site) -> None:
    def run() -> None:
        mirador_prompt(visit, site, LETTER)
        screenshot(visit, "auth-mirador-login.png")
        nothing_restricted_drawn(visit, site, LETTER, asked=True)
        mark = visit.traffic.mark()
        log_in(mirador_confirm(visit, LETTER))
        assert cookie_of(visit, site, "staff")
        drawn_in_full(visit, site, LETTER, mark)

    watched(visit, run)


def test_mirador_clickthrough(visit: Visit, site: Site) -> None:
    def run() -> None:
        mirador_prompt(visit, site, MAP)
        nothing_restricted_drawn(visit, site, MAP, asked=True)
        mark = visit.traffic.mark()
        accepted(mirador_confirm(visit, MAP))
        assert cookie_of(visit, site, "terms")
        drawn_in_full(visit, site, MAP, mark)

    watched(visit, run)


def test_mirador_draws_the_degraded_tier_then_the_full_image(visit: Visit, site: Site) -> None:
    def run() -> None:
        mirador_prompt(visit, site, PLAN)
        wait_for_colours(visit.page, CANVAS, {PLAN.colour: 0.2})
        degraded = degraded_tiles(visit, site, PLAN)
        assert degraded and all(s.status == 200 for s in degraded), degraded
        assert full_tiles(visit, site, PLAN) == []  # not even asked for
        screenshot(visit, "auth-degraded.png")
        mark = visit.traffic.mark()
        log_in(mirador_confirm(visit, PLAN))
        drawn_in_full(visit, site, PLAN, mark)

    watched(visit, run)


def test_mirador_cross_site_without_third_party_cookies_asks_for_login_again(
    visit: Visit, site: Site
) -> None:
    """The viewer on another site: the login itself works (a first-party popup sets the
    cookie), but the token page in Mirador's frame is third-party, gets no cookie and posts
    ``missingCredentials``. Mirador 4.0.0 then marks the login failed, asks for a token again
    at once (its frame is not reloaded, so it waits for ever) and shows the same login prompt
    as before: no failure text, nothing drawn. This is what docs/authorization.md tells
    operators to avoid (one site for viewer and images)."""

    def run() -> None:
        mirador_prompt(visit, site, LETTER, host=OTHER_HOST)
        mark = visit.traffic.mark()
        log_in(mirador_confirm(visit, LETTER))
        assert cookie_of(visit, site, "staff"), "the first-party login set no cookie"
        access = f"{site.origin()}/auth/staff/access"
        visit.page.wait_for_function(
            """service => {
              const state = window.iiifViewer.store.getState();
              const auth = (state.mirador || state).auth || {};
              return auth[service] && auth[service].ok === false;
            }""",
            arg=access,
        )
        (frame,) = [f for f in visit.page.frames if "/auth/staff/token?" in f.url]
        assert '"error":"missingCredentials"' in frame.content()
        tokens = [s for s in visit.traffic.since(mark) if "/auth/staff/token?" in s.url]
        assert [s.status for s in tokens] == [200], tokens
        # the prompt is the one shown before login, with its button to log in again
        policy = authsite.POLICIES["staff"]
        expect_text(visit.page, policy["label"])
        bar = visit.page.get_by_role("button", name=policy["label"]).first
        if "continue" in bar.inner_text().lower():
            bar.click()
        expect_text(visit.page, policy["note"])
        visit.page.get_by_role("button", name=policy["confirm_label"], exact=True).wait_for()
        assert all(s.status == 401 for s in full_tiles(visit, site, LETTER)), full_tiles(
            visit, site, LETTER
        )
        wait_for_colours(visit.page, CANVAS, {}, {LETTER.colour: 0.01})

    watched(visit, run)


def test_uv_cross_site_without_third_party_cookies_shows_the_failure(
    visit: Visit, site: Site
) -> None:
    """UV on another site: after the login its token frame gets ``missingCredentials``; UV
    shows its own "log-in attempt did not appear to be successful" dialogue (not the policy's
    failure text) and draws nothing."""

    def run() -> None:
        visit.page.goto(site.viewer("uv", LETTER, OTHER_HOST), wait_until="load")
        popup = uv_dialogue_confirm(visit, LETTER)
        log_in(popup)
        assert cookie_of(visit, site, "staff"), "the first-party login set no cookie"
        expect_text(visit.page, "log-in attempt did not appear to be successful")
        (frame,) = [f for f in visit.page.frames if "/auth/staff/token?" in f.url]
        assert '"error":"missingCredentials"' in frame.content()
        assert all(s.status == 401 for s in full_tiles(visit, site, LETTER)), full_tiles(
            visit, site, LETTER
        )
        wait_for_colours(visit.page, CANVAS, {}, {LETTER.colour: 0.01})

    watched(visit, run)


# --- UV -------------------------------------------------------------------------------------------


def test_uv_logs_in_and_draws_the_full_image(visit: Visit, site: Site) -> None:
    def run() -> None:
        uv_open(visit, site, LETTER)
        mark = visit.traffic.mark()
        popup = uv_dialogue_confirm(visit, LETTER)
        nothing_restricted_drawn(visit, site, LETTER)
        log_in(popup)
        assert cookie_of(visit, site, "staff")
        drawn_in_full(visit, site, LETTER, mark)

    watched(visit, run)


def test_uv_clickthrough(visit: Visit, site: Site) -> None:
    def run() -> None:
        uv_open(visit, site, MAP)
        popup = uv_dialogue_confirm(visit, MAP)
        mark = visit.traffic.mark()
        accepted(popup)
        assert cookie_of(visit, site, "terms")
        drawn_in_full(visit, site, MAP, mark)

    watched(visit, run)


def test_uv_draws_the_degraded_tier_then_the_full_image(visit: Visit, site: Site) -> None:
    def run() -> None:
        uv_open(visit, site, PLAN)
        policy = authsite.POLICIES["preview"]
        wait_for_colours(visit.page, CANVAS, {PLAN.colour: 0.2})
        degraded = degraded_tiles(visit, site, PLAN)
        assert degraded and all(s.status == 200 for s in degraded), degraded
        assert full_tiles(visit, site, PLAN) == []
        expect_text(visit.page, policy["label"])
        mark = visit.traffic.mark()
        button = visit.page.get_by_text(policy["confirm_label"], exact=True).first
        log_in(in_popup(visit, button.click))
        drawn_in_full(visit, site, PLAN, mark)

    watched(visit, run)


# --- the Auth 2.0 client flow ---------------------------------------------------------------------


def test_auth2_client_flow_gets_the_substitute_then_status_200(
    visit: Visit, site: Site, pages_port: int
) -> None:
    """The spec's client workflow, run by auth_pages/auth2-client.html, served from the
    viewer's host (same site, another origin)."""
    page = visit.page

    def run() -> None:
        page_url = f"https://{VIEWER_HOST}:{pages_port}/{CLIENT_PAGE.name}"
        page.goto(f"{page_url}?resource={quote(site.manifest(PLAN), safe='')}")
        page.wait_for_function("() => window.clientState !== 'start'")
        first = page.evaluate("() => window.probeResults[0]")
        assert first["httpStatus"] == 200 and not first["withToken"], first
        result = first["result"]
        assert result["type"] == "AuthProbeResult2" and result["status"] == 401, result
        substitutes = result["substitute"]
        assert substitutes and all(
            urlsplit(s.get("id") or s["@id"]).path.startswith("/iiif/degraded/")
            for s in substitutes
        ), substitutes
        expect_text(page, authsite.POLICIES["preview"]["heading"])
        # the substitute is what the page shows meanwhile: the degraded tier, at most its size
        page.wait_for_function(
            "() => { const i = document.querySelector('#substitute img');"
            " return i && i.complete && i.naturalWidth > 0; }"
        )
        size = page.evaluate(
            "() => { const i = document.querySelector('#substitute img');"
            " return [i.naturalWidth, i.naturalHeight]; }"
        )
        assert max(size) <= DEGRADED_SIZE, size
        button = page.get_by_role("button", name=authsite.POLICIES["preview"]["confirm_label"])
        log_in(in_popup(visit, button.click))
        page.wait_for_function("() => ['done', 'failed'].includes(window.clientState)")
        messages = page.evaluate("() => window.tokenMessages")
        (message,) = messages
        assert message["origin"] == site.origin(), message
        assert message["data"]["type"] == "AuthAccessToken2", message
        last = page.evaluate("() => window.probeResults[window.probeResults.length - 1]")
        assert last["withToken"] and last["httpStatus"] == 200, last
        assert last["result"]["status"] == 200 and "substitute" not in last["result"], last
        assert page.evaluate("() => window.clientState") == "done"
        # the token is not the login cookie
        token = message["data"]["accessToken"]
        assert token and token != cookie_of(visit, site, "preview")

    try:
        run()
    except Exception as exc:
        results = page.evaluate("() => [window.probeResults, window.tokenMessages]")
        raise AssertionError(f"{exc}\n{json.dumps(results, indent=1)}\n{visit.report()}") from exc
