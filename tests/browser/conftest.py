"""Browser tests of the built-in viewers: Debian's Chromium driven by Python playwright.

One browser per session, and two shims started from the working tree with the embedded default
config (its sample object ``book``): one serves the manifest and the images, the other the viewer
pages and their files, so every manifest, info.json and tile request a viewer makes crosses
origins and CORS matters. Every failed request (network failure or HTTP status >= 400) is
recorded and must be none.

Chromium or the viewers' files missing: a skip on a workstation, a failure in CI (``CI=true``);
``bash deploy/test.sh`` installs both.
"""

from __future__ import annotations

import io
import json
import sys
import time
from collections.abc import Iterator, Mapping
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any
from urllib.parse import urlsplit

import pytest
from PIL import Image

from iiif_shim.defaults.make_samples import BOOK_COLOURS
from iiif_shim.presentation import viewers
from iiif_shim.presentation.viewers import ViewerSettings
from tests.support import ROOT, Process, free_port, need_tool, request

CHROMIUM = "/usr/bin/chromium"
CHROMIUM_ARGS = [
    "--headless",
    "--no-sandbox",
    "--disable-gpu",
    "--disable-quic",
    "--no-first-run",
    "--disable-background-networking",
    "--disable-component-update",
    "--disable-sync",
]
VIEWPORT = {"width": 1280, "height": 800}

# the sample object "book" of the embedded default (iiif_shim/defaults/make_samples.py): three
# 1200x1600 pages, one colour each with "lines of text" in a darker shade
BOOK_INK = (158, 105, 0)  # the lines of page 3
BOOK_REGION = (150, 200, 600, 400)  # on page 3: seven lines, a third of the region is ink

Colour = tuple[int, int, int]


def _unavailable(message: str) -> None:
    """A missing tool fails the test, as tests.support.need_tool does for programs."""
    pytest.fail(f"{message}: run `bash deploy/test.sh`, which installs it")


@dataclass(frozen=True)
class SampleObject:
    """What the viewers are pointed at, and what they should then show."""

    manifest: str
    canvases: tuple[str, ...]
    label: str
    metadata_value: str
    colours: tuple[Colour, ...]  # each page's dominant colour
    region: tuple[int, int, int, int]  # on canvas 3
    region_colours: Mapping[Colour, float]  # the least share of each once zoomed in
    image_service: str  # of canvas 1


@pytest.fixture(scope="session")
def chromium_path() -> str:
    need_tool("chromium", CHROMIUM)
    try:
        import playwright.sync_api  # noqa: F401
    except ImportError:
        _unavailable("the Python package playwright is not installed")
    return CHROMIUM


@pytest.fixture(scope="session")
def viewer_settings() -> ViewerSettings:
    settings = ViewerSettings()
    missing = sorted(
        {p for v in viewers.BUILTIN_VIEWERS for p in viewers.missing_packages(settings, v)}
    )
    if missing:
        _unavailable(f"the viewers' files are not in {settings.folder} ({', '.join(missing)})")
    return settings


@pytest.fixture(scope="package")
def browser(chromium_path: str) -> Iterator[Any]:
    """One browser for these tests. Playwright's sync API keeps an event loop running in this
    thread while it is open, so it is closed when this package's tests end: the tests after it
    run their own event loops."""
    from playwright.sync_api import sync_playwright

    with sync_playwright() as p:
        launched = p.chromium.launch(
            executable_path=chromium_path, args=CHROMIUM_ARGS, timeout=60_000
        )
        yield launched
        launched.close()


def start_default_shim(tmp: Path) -> Process:
    """``iiif-shim serve`` of the working tree with its embedded default config."""
    port = free_port()
    args = [sys.executable, "-m", "iiif_shim", "serve", "--port", str(port)]
    return Process(args, port, tmp / f"shim-{port}.log", env={"IIIF_SHIM_CONFIG": ""}, cwd=ROOT)


@pytest.fixture(scope="session")
def shim(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Process]:
    """Serves the manifests and the images."""
    proc = start_default_shim(tmp_path_factory.mktemp("shim"))
    yield proc
    proc.stop()


@pytest.fixture(scope="session")
def pages(
    viewer_settings: ViewerSettings, tmp_path_factory: pytest.TempPathFactory
) -> Iterator[str]:
    """The origin of the viewer pages: another shim."""
    proc = start_default_shim(tmp_path_factory.mktemp("pages"))
    yield f"http://127.0.0.1:{proc.port}"
    proc.stop()


def manifest_url(shim: Process) -> str:
    """The object under test (change this line to test another manifest)."""
    return f"http://127.0.0.1:{shim.port}/iiif/presentation/3/book/manifest"


@pytest.fixture(scope="session")
def book(shim: Process) -> SampleObject:
    manifest = manifest_url(shim)
    response = request(shim.port, urlsplit(manifest).path)
    assert response.status == 200, response.text
    data = json.loads(response.body)
    body = data["items"][0]["items"][0]["items"][0]["body"]
    return SampleObject(
        manifest=manifest,
        canvases=tuple(c["id"] for c in data["items"]),
        label="A sample book",
        metadata_value="3 pages",
        colours=BOOK_COLOURS,
        region=BOOK_REGION,
        region_colours={BOOK_COLOURS[2]: 0.5, BOOK_INK: 0.2},
        image_service=next(s["id"] for s in body["service"] if s.get("type") == "ImageService3"),
    )


@dataclass
class Failures:
    """Requests that failed (network) or answered >= 400, as the browser saw them."""

    seen: list[str] = field(default_factory=list)

    def attach(self, page: Any) -> None:
        page.on("requestfailed", lambda r: self.seen.append(f"{r.method} {r.url}: {r.failure}"))
        page.on("response", self._response)

    def _response(self, response: Any) -> None:
        if response.status >= 400:
            self.seen.append(f"{response.request.method} {response.url}: {response.status}")


@dataclass
class Tab:
    page: Any
    failures: Failures
    console: list[str]


def open_tab(context: Any) -> Tab:
    """A page of ``context`` whose failed requests and console messages are recorded."""
    page = context.new_page()
    page.set_default_timeout(30_000)
    page.set_default_navigation_timeout(30_000)
    failures = Failures()
    failures.attach(page)
    console: list[str] = []
    page.on("console", lambda m: console.append(f"{m.type}: {m.text}"))
    page.on("pageerror", lambda e: console.append(f"page error: {e}"))
    return Tab(page, failures, console)


@pytest.fixture
def tab(browser: Any) -> Iterator[Tab]:
    context = browser.new_context(viewport=VIEWPORT)
    yield open_tab(context)
    context.close()


def colour_fraction(png: bytes, colour: Colour, tolerance: int = 40) -> float:
    """Share of the screenshot's pixels within ``tolerance`` (per channel) of ``colour``."""
    im = Image.open(io.BytesIO(png)).convert("RGB")
    im = im.resize((max(1, im.width // 4), max(1, im.height // 4)), Image.Resampling.NEAREST)
    data = im.tobytes()
    r, g, b = colour
    near = sum(
        1
        for i in range(0, len(data), 3)
        if abs(data[i] - r) <= tolerance
        and abs(data[i + 1] - g) <= tolerance
        and abs(data[i + 2] - b) <= tolerance
    )
    return near / (im.width * im.height)


def wait_for_colours(
    page: Any,
    selector: str,
    at_least: Mapping[Colour, float],
    at_most: Mapping[Colour, float] | None = None,
    timeout: float = 30,
) -> None:
    """Screenshot ``selector`` until each colour of ``at_least`` covers at least its share of
    it, and each of ``at_most`` at most its share."""
    deadline = time.monotonic() + timeout
    seen: dict[Colour, float] = {}
    while time.monotonic() < deadline:
        png = page.locator(selector).first.screenshot(timeout=10_000)
        seen = {c: colour_fraction(png, c) for c in [*at_least, *(at_most or {})]}
        if all(seen[c] >= share for c, share in at_least.items()) and all(
            seen[c] <= share for c, share in (at_most or {}).items()
        ):
            return
        time.sleep(0.5)
    shares = ", ".join(f"{c}: {share:.0%}" for c, share in seen.items())
    raise AssertionError(
        f"in {selector} after {timeout:g} s: {shares}; wanted at least {dict(at_least)}"
        f" and at most {dict(at_most or {})}"
    )
