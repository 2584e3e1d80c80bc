"""HTTPS in a real browser. Debian's Chromium trusts a test CA the way a user's machine would: an
NSS database made with ``certutil`` (libnss3-tools) in the browser's own temporary HOME, never
``--ignore-certificate-errors`` (a browser without that database refuses the same pages). Over
https:// it opens the object page of the sample object ``book`` and Mirador, through the shipped
nginx site (TLS, HTTP/2: deploy/nginx-proxy.conf) and from the shim's own TLS (``server.tls``),
with no mixed-content message, no request that is not https:// and no failed request.

A deep-zoom session (OpenSeadragon zoomed into the 6000x4000 colour chart, then panned at full
size, dozens of tiles) counts the TCP connections the browser opened and the protocol they
spoke: from nginx's access log (``$connection``, ``$server_protocol``) and from the browser's
own record (the DevTools protocol's ``connectionId``). Over HTTP/2 every tile travels on one
connection (the session opens one more, for the viewer's fetch without credentials); over
HTTP/1.1 a browser opens several (up to six a host). The counts are printed (``-s``) for
docs/deployment.md.
"""

from __future__ import annotations

import re
from collections.abc import Iterator
from contextlib import contextmanager
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import pytest
import yaml

from iiif_shim.defaults.make_samples import BOOK_COLOURS
from iiif_shim.presentation.viewers import viewer_url
from tests.browser.conftest import (
    BOOK_INK,
    BOOK_REGION,
    CHROMIUM_ARGS,
    VIEWPORT,
    SampleObject,
    Tab,
    open_tab,
    wait_for_colours,
)
from tests.http.test_deploy import PUBLIC_HOST, Nginx, nginx_with, shipped_site
from tests.support import ROOT, Process, start_shim, write_config
from tests.tls import CA, Issued, make_ca, trusting_home

MIRADOR_CANVAS = "#viewer .openseadragon-canvas"
DEFAULTS = ROOT / "iiif_shim" / "defaults"
# the deep-zoom session: image zoom (1: full size) and the image point at the view's centre,
# each step needing tiles no step before it loaded
ZOOM_STEPS = (
    (0.5, 3000, 2000),
    (1.0, 900, 700),
    (1.0, 5100, 700),
    (1.0, 900, 3300),
    (1.0, 5100, 3300),
)
TILE_RE = re.compile(r"/\d+,\d+,\d+,\d+/[^/]+/0/default\.jpg$")


def samples_config(path: Path, trust_forwarded: bool = False, tls: Issued | None = None) -> Path:
    """The embedded default config (its sample objects) with its paths made absolute; behind
    a proxy, or with the shim's own TLS."""
    config = yaml.safe_load((DEFAULTS / "config.yaml").read_text())
    config["backends"]["samples"]["root"] = str(DEFAULTS / "images")
    config["presentation"]["sources"]["catalogue"]["path"] = str(DEFAULTS / "objects.csv")
    config["auth"]["policies"]["staff"]["users"]["htpasswd"] = str(DEFAULTS / "users.htpasswd")
    config["server"]["trust_forwarded"] = trust_forwarded
    if tls is not None:
        config["server"]["tls"] = {"cert": str(tls.cert), "key": str(tls.key)}
    return write_config(path, yaml.safe_dump(config))


@pytest.fixture(scope="module")
def ca(tmp_path_factory: pytest.TempPathFactory) -> CA:
    return make_ca(tmp_path_factory.mktemp("https-ca"))


def launch(browser: Any, chromium_path: str, home: Path) -> Any:
    """Chromium with ``home`` as its HOME (where it finds the user's NSS database), resolving
    images.example.org to 127.0.0.1."""
    return browser.browser_type.launch(
        executable_path=chromium_path,
        args=[*CHROMIUM_ARGS, f"--host-resolver-rules=MAP {PUBLIC_HOST} 127.0.0.1"],
        env={"HOME": str(home), "PATH": "/usr/bin:/bin", "LANG": "C.UTF-8"},
        timeout=60_000,
    )


@pytest.fixture(scope="module")
def trusting(
    browser: Any, chromium_path: str, ca: CA, tmp_path_factory: pytest.TempPathFactory
) -> Iterator[Any]:
    """A Chromium whose HOME holds an NSS database trusting the test CA, made as a user's
    trust is set up on Linux (`certutil -d sql:$HOME/.pki/nssdb -A -t C,, -i ca.crt`)."""
    home = trusting_home(tmp_path_factory.mktemp("https-home"), ca)
    launched = launch(browser, chromium_path, home)
    yield launched
    launched.close()


@pytest.fixture(scope="module")
def untrusting(
    browser: Any, chromium_path: str, tmp_path_factory: pytest.TempPathFactory
) -> Iterator[Any]:
    """The same Chromium with a HOME of its own and no such database."""
    launched = launch(browser, chromium_path, tmp_path_factory.mktemp("https-home-empty"))
    yield launched
    launched.close()


@pytest.fixture(scope="module")
def behind(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Process]:
    """The sample shim, plain HTTP on 127.0.0.1, trusting nginx's forwarding headers."""
    tmp = tmp_path_factory.mktemp("https-behind")
    proc = start_shim(samples_config(tmp / "shim.yaml", trust_forwarded=True), tmp)
    yield proc
    proc.stop()


@pytest.fixture(scope="module")
def front(behind: Process, ca: CA, tmp_path_factory: pytest.TempPathFactory) -> Iterator[Nginx]:
    """The shipped nginx site, TLS and HTTP/2 with the test CA's certificate, before ``behind``."""
    proc = nginx_with(shipped_site(behind.port), tmp_path_factory.mktemp("https-nginx"), True, ca)
    yield proc
    proc.stop()


@pytest.fixture(scope="module")
def direct(ca: CA, tmp_path_factory: pytest.TempPathFactory) -> Iterator[Process]:
    """The sample shim with its own TLS (``server.tls``): HTTP/1.1 over TLS, no proxy."""
    tmp = tmp_path_factory.mktemp("https-direct")
    issued = ca.issue("shim", names=(PUBLIC_HOST, "localhost", "127.0.0.1"))
    proc = start_shim(samples_config(tmp / "shim.yaml", tls=issued), tmp)
    yield proc
    proc.stop()


@pytest.fixture(scope="module")
def plain(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Process]:
    """The sample shim in plain HTTP/1.1, no proxy: the deep-zoom session's baseline."""
    tmp = tmp_path_factory.mktemp("https-plain")
    proc = start_shim(samples_config(tmp / "shim.yaml"), tmp)
    yield proc
    proc.stop()


@dataclass(frozen=True)
class Site:
    """Where a shim's pages are, as the browser addresses them: ``pages`` is the origin (and
    public path) of its object and viewer pages, ``iiif`` that of its IIIF APIs."""

    pages: str
    iiif: str

    def book(self) -> SampleObject:
        return SampleObject(
            manifest=f"{self.iiif}/presentation/3/book/manifest",
            canvases=(),
            label="A sample book",
            metadata_value="3 pages",
            colours=BOOK_COLOURS,
            region=BOOK_REGION,
            region_colours={BOOK_COLOURS[2]: 0.5, BOOK_INK: 0.2},
            image_service="",
        )


def through_nginx(front: Nginx) -> Site:
    origin = f"https://{PUBLIC_HOST}:{front.port}/images"
    return Site(origin, origin)


def from_shim(proc: Process, scheme: str = "https") -> Site:
    host = PUBLIC_HOST if scheme == "https" else "127.0.0.1"
    origin = f"{scheme}://{host}:{proc.port}"
    return Site(origin, origin + "/iiif")


@dataclass
class Session:
    """What one browser context did: every request's URL, the console, failed requests, and
    each response's protocol and connection as the browser's DevTools protocol reports them."""

    tab: Tab
    requests: list[str] = field(default_factory=list)
    responses: list[dict[str, Any]] = field(default_factory=list)

    def mixed_content(self) -> list[str]:
        return [m for m in self.tab.console if "mixed content" in m.lower()]

    def insecure(self) -> list[str]:
        return [u for u in self.requests if not u.startswith(("https://", "data:", "blob:"))]

    def connections(self) -> set[int]:
        return {int(r["connectionId"]) for r in self.responses if not r.get("fromDiskCache")}

    def protocols(self) -> set[str]:
        return {str(r.get("protocol")) for r in self.responses if not r.get("fromDiskCache")}

    def tiles(self) -> list[str]:
        return [u for u in self.requests if TILE_RE.search(u)]

    def problems(self) -> list[str]:
        return [*self.tab.failures.seen, *self.mixed_content(), *self.insecure()]

    def check_secure(self) -> None:
        assert self.problems() == [], "\n".join([*self.problems(), "console:", *self.tab.console])
        assert self.requests and self.protocols() <= {"h2", "http/1.1"}, self.protocols()

    @contextmanager
    def watched(self) -> Iterator[None]:
        """A wait that fails says what the browser saw go wrong meanwhile."""
        try:
            yield
        except Exception as exc:
            seen = "\n".join([*self.problems(), "console:", *self.tab.console])
            raise AssertionError(f"{exc}\nwhat went wrong in the browser:\n{seen}") from exc


@pytest.fixture
def session_of() -> Iterator[Any]:
    """``session_of(browser)``: a fresh browser context (its own connections), recorded."""
    contexts: list[Any] = []

    def open_session(browser: Any) -> Session:
        context = browser.new_context(viewport=VIEWPORT)
        contexts.append(context)
        session = Session(open_tab(context))
        page = session.tab.page
        page.on("request", lambda r: session.requests.append(r.url))
        cdp = context.new_cdp_session(page)
        cdp.on("Network.responseReceived", lambda e: session.responses.append(e["response"]))
        cdp.send("Network.enable")
        return session

    yield open_session
    for context in contexts:
        context.close()


def expect_text(page: Any, text: str) -> None:
    page.get_by_text(text, exact=False).first.wait_for(state="visible", timeout=30_000)


def object_page(session: Session, site: Site) -> None:
    """The object page of ``book``: its label, three thumbnails in their pages' colours, and
    the embedded Mirador drawing the first page."""
    with session.watched():
        book = site.book()
        page = session.tab.page
        page.goto(f"{site.pages}/objects/book", wait_until="load")
        expect_text(page, book.label)
        page.wait_for_function(
            "() => { const i = [...document.querySelectorAll('ul.canvases img')];"
            " return i.length === 3 && i.every(i => i.complete && i.naturalWidth > 0); }",
            timeout=30_000,
        )
        for i, colour in enumerate(book.colours):
            wait_for_colours(page, f"ul.canvases li:nth-child({i + 1}) img", {colour: 0.4})
        wait_for_colours(page, "iframe", {book.colours[0]: 0.2})  # Mirador, in the frame
    session.check_secure()


def mirador(session: Session, site: Site) -> None:
    """Mirador at the manifest of ``book``: label, metadata, the first page, then the next."""
    with session.watched():
        book = site.book()
        page = session.tab.page
        page.goto(site.pages + viewer_url("mirador", book.manifest), wait_until="load")
        expect_text(page, book.label)
        expect_text(page, book.metadata_value)
        wait_for_colours(page, MIRADOR_CANVAS, {book.colours[0]: 0.25})
        page.get_by_role("button", name="Next item").first.click()
        wait_for_colours(page, MIRADOR_CANVAS, {book.colours[1]: 0.25}, {book.colours[0]: 0.01})
    session.check_secure()


def deep_zoom(session: Session, site: Site) -> None:
    """OpenSeadragon at the colour chart, then each of ZOOM_STEPS, each step waited for until
    its tiles are all drawn."""
    with session.watched():
        page = session.tab.page
        info = f"{site.iiif}/3/chart/info.json"
        page.goto(site.pages + viewer_url("osd", info), wait_until="load")
        page.wait_for_function(
            "() => window.iiifViewer && window.iiifViewer.world.getItemCount() === 1"
            " && window.iiifViewer.world.getItemAt(0).getFullyLoaded()",
            timeout=30_000,
        )
        page.evaluate(
            "() => { window.tilesLoaded = 0;"
            " window.iiifViewer.addHandler('tile-loaded', () => { window.tilesLoaded += 1; }); }"
        )
        for zoom, x, y in ZOOM_STEPS:
            before = page.evaluate("() => window.tilesLoaded")
            page.evaluate(
                "([zoom, x, y]) => { const vp = window.iiifViewer.viewport;"
                " vp.zoomTo(vp.imageToViewportZoom(zoom), undefined, true);"
                " vp.panTo(vp.imageToViewportCoordinates(x, y), true); }",
                [zoom, x, y],
            )
            page.wait_for_function(
                "before => window.tilesLoaded > before"
                " && window.iiifViewer.world.getItemAt(0).getFullyLoaded()",
                arg=before,
                timeout=30_000,
            )


@dataclass(frozen=True)
class Count:
    """A deep-zoom session: its tiles, the TCP connections that carried them, all the
    connections it opened (Chromium keeps requests without credentials, such as the viewer
    page's ``fetch(info.json, {credentials: "omit"})``, on connections of their own) and the
    protocols they spoke."""

    tiles: int
    tile_connections: int
    connections: int
    protocols: tuple[str, ...]

    def line(self, what: str) -> str:
        return (
            f"deep zoom, {what}: {self.tiles} tiles over {self.tile_connections} TCP"
            f" connection(s), {self.connections} in all, {', '.join(self.protocols)}"
        )


def counted(session: Session, what: str) -> Count:
    """The session's count (printed for the docs); dozens of tiles, as deep zoom asks."""
    tiles = [r for r in session.responses if TILE_RE.search(r["url"])]
    count = Count(
        len(tiles),
        len({int(r["connectionId"]) for r in tiles}),
        len(session.connections()),
        tuple(sorted(session.protocols())),
    )
    print(count.line(what))
    assert count.tiles == len(session.tiles()) >= 48, session.tiles()
    return count


def nginx_lines(front: Nginx, start: int) -> list[tuple[str, str, str]]:
    """(connection, protocol, request) of each access log line written after byte ``start``."""
    text = front.access_log.read_bytes()[start:].decode()
    found = []
    for line in text.splitlines():
        m = re.match(r'(\d+) \d+ (\S+) "([^"]*)" "([^"]*)"', line)
        assert m, line
        found.append((m.group(1), m.group(2), m.group(4)))
    return found


# --- the tests -----------------------------------------------------------------------------------


def test_without_the_test_ca_the_browser_refuses_the_certificate(
    untrusting: Any, front: Nginx, session_of: Any
) -> None:
    """The control: the same page in a browser whose HOME has no such database."""
    session = session_of(untrusting)
    with pytest.raises(Exception, match="ERR_CERT_AUTHORITY_INVALID"):
        session.tab.page.goto(f"{through_nginx(front).pages}/objects/book")


def test_object_page_over_https_through_nginx(trusting: Any, front: Nginx, session_of: Any) -> None:
    session = session_of(trusting)
    object_page(session, through_nginx(front))
    assert session.protocols() == {"h2"}


def test_mirador_over_https_through_nginx(trusting: Any, front: Nginx, session_of: Any) -> None:
    session = session_of(trusting)
    mirador(session, through_nginx(front))
    assert session.protocols() == {"h2"}


def test_deep_zoom_through_nginx_is_one_http2_connection(
    trusting: Any, front: Nginx, session_of: Any
) -> None:
    start = front.access_log.stat().st_size
    session = session_of(trusting)
    deep_zoom(session, through_nginx(front))
    session.check_secure()
    count = counted(session, "https through nginx")
    assert count.protocols == ("h2",) and count.tile_connections == 1
    # nginx's own record of the same requests: HTTP/2 only, every tile on one connection, and
    # besides it at most the viewer's credential-less fetch of info.json
    logged = nginx_lines(front, start)
    assert {protocol for _, protocol, _ in logged} == {"HTTP/2.0"}
    tiles = [(c, r) for c, _, r in logged if TILE_RE.search(r.split()[1])]
    assert len(tiles) == count.tiles and len({c for c, _ in tiles}) == 1
    (main,) = {c for c, _ in tiles}
    others = [r for c, _, r in logged if c != main]
    assert all(r.split()[1].endswith("/info.json") for r in others), others
    assert len({c for c, _, _ in logged}) == count.connections


def test_deep_zoom_over_plain_http_1_1_from_the_shim(
    trusting: Any, plain: Process, session_of: Any
) -> None:
    """The baseline: the shim serving the browser itself, in HTTP/1.1."""
    session = session_of(trusting)
    deep_zoom(session, from_shim(plain, "http"))
    count = counted(session, "plain http from the shim")
    assert count.protocols == ("http/1.1",) and 1 <= count.tile_connections <= 6


def test_object_page_over_https_from_the_shims_own_tls(
    trusting: Any, direct: Process, session_of: Any
) -> None:
    session = session_of(trusting)
    object_page(session, from_shim(direct))
    assert session.protocols() == {"http/1.1"}


def test_mirador_over_https_from_the_shims_own_tls(
    trusting: Any, direct: Process, session_of: Any
) -> None:
    session = session_of(trusting)
    mirador(session, from_shim(direct))


def test_deep_zoom_from_the_shims_own_tls(trusting: Any, direct: Process, session_of: Any) -> None:
    session = session_of(trusting)
    deep_zoom(session, from_shim(direct))
    session.check_secure()
    count = counted(session, "https from the shim")
    assert count.protocols == ("http/1.1",) and 1 <= count.tile_connections <= 6
