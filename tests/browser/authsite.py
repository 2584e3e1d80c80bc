"""The restricted site the browser tests of authorization run against, and what they watch.

One shim over HTTPS (``server.tls``, a certificate from the test CA naming every host below)
serves three restricted images, each behind its own policy, and their manifests:

- ``staff/letter`` (policy ``staff``, ``login``, no degraded tier): nothing before login;
- ``terms/map`` (policy ``terms``, ``clickthrough``);
- ``preview/plan`` (policy ``preview``, ``login`` with a degraded tier of DEGRADED_SIZE px).

Its ``public_url`` is ``https://images.example.test:PORT``; the browser (Chromium with
``--host-resolver-rules``) reaches the same shim as ``viewer.example.test`` (another origin of
the same site: where the viewer pages are opened) and as ``viewer.other.test`` (another site:
third-party cookies). The browser trusts the test CA through an NSS database in its own HOME,
as in ``test_https.py``. Every request and response of a browser context, popups and frames
included, is recorded (:class:`Traffic`) so a test can say which tiles were asked for and how
they were answered; :meth:`Visit.until` waits on such a record while letting the browser's
events in. :func:`static_pages` serves a folder of test pages over HTTPS on the viewer's host
(the Auth 2.0 client page). ``IIIF_SHIM_SCREENSHOTS`` says where screenshots go, if anywhere.
"""

from __future__ import annotations

import functools
import http.server
import os
import ssl
import sys
import threading
import time
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any
from urllib.parse import quote, urlsplit

import bcrypt
import yaml
from PIL import Image, ImageDraw

from tests.browser.conftest import CHROMIUM_ARGS, VIEWPORT, Colour, Tab, open_tab
from tests.support import Process, free_port
from tests.tls import CA

IMAGES_HOST = "images.example.test"
VIEWER_HOST = "viewer.example.test"  # same site as IMAGES_HOST (example.test)
OTHER_HOST = "viewer.other.test"  # another site
HOSTS = (IMAGES_HOST, VIEWER_HOST, OTHER_HOST)

USER = "reader"
PASSWORD = "correct horse battery staple"
DEGRADED_SIZE = 300  # the preview policy's degraded tier: longest side in pixels
IMAGE_SIZE = (2400, 1600)


@dataclass(frozen=True)
class Restricted:
    """One restricted image of the site and its object (``object`` names its manifest)."""

    identifier: str
    object: str
    policy: str
    colour: Colour
    title: str


LETTER = Restricted("staff/letter", "letter", "staff", (40, 110, 190), "A staff-only letter")
MAP = Restricted("terms/map", "map", "terms", (190, 70, 40), "A map under terms of use")
PLAN = Restricted("preview/plan", "plan", "preview", (60, 150, 70), "A plan with a preview")
IMAGES = (LETTER, MAP, PLAN)
INK = (20, 20, 20)  # a frame and a cross drawn on each image, so tiles are not one flat colour

POLICIES: dict[str, dict[str, Any]] = {
    "staff": {
        "kind": "login",
        "label": "Example Library staff",
        "heading": "Staff login",
        "note": "This letter is shown to staff only.",
        "confirm_label": "Log in",
        "failure_heading": "Staff login failed",
        "failure_note": "Your browser did not send the login to the image server.",
        "users": {"htpasswd": "users.htpasswd"},
    },
    "terms": {
        "kind": "clickthrough",
        "label": "Example Library terms",
        "heading": "Terms of use",
        "note": "This map may be used for study only.",
        "confirm_label": "I agree",
    },
    "preview": {
        "kind": "login",
        "label": "Example Library readers",
        "heading": "Reader login",
        "note": "Log in to see this plan at full resolution.",
        "confirm_label": "Log in",
        "failure_heading": "Reader login failed",
        "users": {"htpasswd": "users.htpasswd"},
        "degraded": {"max_size": DEGRADED_SIZE},
    },
}


def _image(path: Path, colour: Colour) -> None:
    im = Image.new("RGB", IMAGE_SIZE, colour)
    draw = ImageDraw.Draw(im)
    w, h = IMAGE_SIZE
    draw.rectangle((0, 0, w - 1, h - 1), outline=INK, width=24)
    draw.line((0, 0, w, h), fill=INK, width=16)
    draw.line((0, h, w, 0), fill=INK, width=16)
    path.parent.mkdir(parents=True, exist_ok=True)
    im.save(path, quality=90)


def write_site(folder: Path, port: int, cert: Path, key: Path) -> Path:
    """Images, users, objects and the config of the site in ``folder``; the config's path."""
    images = folder / "images"
    for item in IMAGES:
        _image(images / f"{item.identifier}.jpg", item.colour)
    hashed = bcrypt.hashpw(PASSWORD.encode(), bcrypt.gensalt(rounds=6)).decode()
    (folder / "users.htpasswd").write_text(f"{USER}:{hashed}\n")
    rows = ["object,image,title"] + [f"{i.object},{i.identifier},{i.title}" for i in IMAGES]
    (folder / "objects.csv").write_text("\n".join(rows) + "\n")
    config = {
        "server": {
            "host": "127.0.0.1",
            "public_url": f"https://{IMAGES_HOST}:{port}",
            "tls": {"cert": str(cert), "key": str(key)},
        },
        "iiif": {"prefix": "/iiif"},
        "backends": {"pictures": {"type": "files", "root": str(images)}},
        "routes": [
            *(
                {
                    "match": f"^{i.identifier.split('/')[0]}/",
                    "backend": "pictures",
                    "access": i.policy,
                }
                for i in IMAGES
            ),
            {"backend": "pictures"},
        ],
        "auth": {"policies": POLICIES},
        "presentation": {
            "provider": {"label": "Example Library"},
            "sources": {
                "catalogue": {
                    "type": "csv",
                    "path": str(folder / "objects.csv"),
                    "columns": {"object": "object", "image": "image", "label": "title"},
                }
            },
        },
    }
    path = folder / "site.yaml"
    path.write_text(yaml.safe_dump(config, sort_keys=False))
    return path


@dataclass(frozen=True)
class Site:
    """The running shim and the URLs the browser uses for it."""

    process: Process
    port: int

    def origin(self, host: str = IMAGES_HOST) -> str:
        return f"https://{host}:{self.port}"

    @property
    def iiif(self) -> str:
        return f"{self.origin()}/iiif"

    def manifest(self, item: Restricted) -> str:
        return f"{self.iiif}/presentation/3/{item.object}/manifest"

    def info(self, item: Restricted) -> str:
        return f"{self.iiif}/3/{quote(item.identifier, safe='')}/info.json"

    def full_bases(self, item: Restricted) -> tuple[str, ...]:
        """The paths every full-tier image request of ``item`` starts with (Image API 3.0 and
        2.1: Mirador takes the first image service of the manifest, UV the 2.1 one)."""
        ident = quote(item.identifier, safe="")
        return (f"/iiif/3/{ident}/", f"/iiif/2/{ident}/")

    def degraded_bases(self, item: Restricted) -> tuple[str, ...]:
        ident = quote(item.identifier, safe="")
        return (f"/iiif/degraded/3/{ident}/", f"/iiif/degraded/2/{ident}/")

    def viewer(self, viewer: str, item: Restricted, host: str = VIEWER_HOST) -> str:
        return f"{self.origin(host)}/view/{viewer}?manifest={quote(self.manifest(item), safe='')}"


def start_site(folder: Path, ca: CA) -> Site:
    folder.mkdir(parents=True, exist_ok=True)
    port = free_port()
    issued = ca.issue("auth-site", names=(*HOSTS, "localhost", "127.0.0.1"))
    config = write_site(folder, port, issued.cert, issued.key)
    args = [sys.executable, "-m", "iiif_shim", "serve", "--config", str(config)]
    args += ["--port", str(port), "--processes", "1"]
    return Site(Process(args, port, folder / f"shim-{port}.log"), port)


class _QuietHandler(http.server.SimpleHTTPRequestHandler):
    def log_message(self, format: str, *args: Any) -> None:
        pass


@contextmanager
def static_pages(folder: Path, ca: CA) -> Iterator[int]:
    """The files of ``folder`` over HTTPS on 127.0.0.1 (a port of its own, yielded), as a web
    site of the viewer's host would serve a page; a page the browser was handed by the test
    would not be on the loopback and could not call the shim (Chromium's local network access
    rule)."""
    issued = ca.issue("auth-pages", names=(VIEWER_HOST, OTHER_HOST))
    context = ssl.create_default_context(ssl.Purpose.CLIENT_AUTH)
    context.load_cert_chain(issued.cert, issued.key)
    handler = functools.partial(_QuietHandler, directory=str(folder))
    server = http.server.ThreadingHTTPServer(("127.0.0.1", 0), handler)
    server.socket = context.wrap_socket(server.socket, server_side=True)
    thread = threading.Thread(target=server.serve_forever, name="auth-pages", daemon=True)
    thread.start()
    try:
        yield int(server.server_address[1])
    finally:
        server.shutdown()
        server.server_close()
        thread.join(10)


def launch(browser: Any, chromium_path: str, home: Path) -> Any:
    """Chromium trusting the test CA (its HOME) and resolving every host of the site to
    127.0.0.1."""
    rules = ", ".join(f"MAP {host} 127.0.0.1" for host in HOSTS)
    return browser.browser_type.launch(
        executable_path=chromium_path,
        args=[*CHROMIUM_ARGS, f"--host-resolver-rules={rules}"],
        env={"HOME": str(home), "PATH": "/usr/bin:/bin", "LANG": "C.UTF-8"},
        timeout=60_000,
    )


@dataclass(frozen=True)
class Seen:
    """One answer the browser got: its request's method and URL, its status."""

    method: str
    url: str
    status: int

    @property
    def path(self) -> str:
        return urlsplit(self.url).path


@dataclass
class Traffic:
    """Every response a browser context got (its pages, popups and frames), and the requests
    that failed without one."""

    answers: list[Seen] = field(default_factory=list)
    failed: list[str] = field(default_factory=list)
    _lock: threading.Lock = field(default_factory=threading.Lock)

    def attach(self, context: Any) -> None:
        context.on("response", self._response)
        context.on(
            "requestfailed", lambda r: self.failed.append(f"{r.method} {r.url}: {r.failure}")
        )

    def _response(self, response: Any) -> None:
        with self._lock:
            self.answers.append(Seen(response.request.method, response.url, response.status))

    def mark(self) -> int:
        """Where the record is now: :meth:`since` gives what came after."""
        with self._lock:
            return len(self.answers)

    def since(self, mark: int = 0) -> list[Seen]:
        with self._lock:
            return list(self.answers[mark:])

    def images(self, bases: tuple[str, ...], mark: int = 0) -> list[Seen]:
        """Image requests (not info.json) under one of the paths ``bases``, after ``mark``."""
        return [
            s
            for s in self.since(mark)
            if s.path.startswith(bases) and not s.path.endswith("/info.json") and s.method == "GET"
        ]


@dataclass
class Visit:
    """A browser context on the site: its first tab and its traffic."""

    context: Any
    tab: Tab
    traffic: Traffic
    log: Path | None = None  # the shim's log: its own lines go into the report

    @property
    def page(self) -> Any:
        return self.tab.page

    def until(self, ok: Callable[[], bool], what: str, limit: float = 30) -> None:
        """Wait until ``ok()``, letting the browser's events in meanwhile (Playwright's sync API
        delivers them only while one of its calls runs, never during ``time.sleep``)."""
        deadline = time.monotonic() + limit
        while not ok():
            if time.monotonic() > deadline:
                raise AssertionError(f"not {what} after {limit:g} s")
            self.page.wait_for_timeout(50)

    def report(self) -> str:
        lines = [f"{s.status} {s.method} {s.url}" for s in self.traffic.since()]
        shim: list[str] = []
        if self.log is not None and self.log.exists():
            text = self.log.read_text(errors="replace").splitlines()
            shim = [line for line in text if not line.startswith("127.0.0.1 - ")][-60:]
        return "\n".join(
            [
                "answers:",
                *lines,
                "failed:",
                *self.traffic.failed,
                "console:",
                *self.tab.console,
                "shim:",
                *shim,
            ]
        )


@contextmanager
def visit(browser: Any) -> Iterator[Visit]:
    """A fresh context (its own cookies) with its traffic recorded; closed after use."""
    context = browser.new_context(viewport=VIEWPORT)
    traffic = Traffic()
    traffic.attach(context)
    try:
        yield Visit(context, open_tab(context), traffic)
    finally:
        context.close()


def screenshots_wanted() -> Path | None:
    """Where to write the docs' screenshots: ``IIIF_SHIM_SCREENSHOTS=<folder>`` (``1``: the
    repository's docs/images); None (the default, and in CI) leaves the committed ones alone."""
    value = os.environ.get("IIIF_SHIM_SCREENSHOTS", "")
    if not value:
        return None
    if value == "1":
        return Path(__file__).resolve().parents[2] / "docs" / "images"
    return Path(value)
