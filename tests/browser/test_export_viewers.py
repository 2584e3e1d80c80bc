"""The viewers on a level-0 export served by plain nginx, in headless Chromium.

The sample object ``book`` (and the validator's image) is exported once for the module by the
real command and served by nginx with the locations docs/export.md gives
(tests/validator/test_export_level0.py does both); the viewer pages come from another origin,
the shim's built-in pages (tests/browser/conftest.py), so CORS matters. OpenSeadragon and
Leaflet-IIIF open a page's Image API 3.0 and 2.1 info.json, Mirador the book's 3.0 and 2.1
manifests. Each draws the page in its colour (BOOK_COLOURS of iiif_shim/defaults/make_samples.py),
is zoomed in until tiles at full resolution (scale factor 1) load, and draws the page again:
no request fails, and every request but the viewer's own files goes to the export.
"""

from __future__ import annotations

import re
from collections.abc import Callable, Iterator
from dataclasses import dataclass
from typing import Any

import pytest

from iiif_shim.defaults.make_samples import BOOK_COLOURS
from iiif_shim.presentation.viewers import viewer_url
from tests.browser.conftest import Tab, wait_for_colours
from tests.validator.test_export_level0 import Exported, export_sample

MIRADOR_CANVAS = "#viewer .openseadragon-canvas"
# a tile at scale factor 1: its region's width is its size's width (3.0 "w,h", 2.1 "w,")
FULL_RESOLUTION_TILE = re.compile(r"/\d+,\d+,(\d+),\d+/(\d+),(\d*)/0/default\.jpg$")
SMALL_VIEW = {"width": 480, "height": 320}
ZOOM = {
    "osd": "window.iiifViewer.viewport.zoomBy(4, undefined, true)",
    "leaflet": "window.iiifViewer.setZoom(window.iiifViewer.getZoom() + 2, {animate: false})",
}


@pytest.fixture(scope="module")
def exported(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Exported]:
    yield from export_sample(tmp_path_factory.mktemp("export-viewers"))


@dataclass
class Requests:
    """Every URL the page asked for, in order."""

    urls: list[str]

    @classmethod
    def of(cls, tab: Tab) -> Requests:
        seen = cls([])
        tab.page.on("request", lambda r: seen.urls.append(r.url))
        return seen


def _full_resolution_tile(url: str, base: str, identifier: str) -> bool:
    match = FULL_RESOLUTION_TILE.search(url)
    return (
        match is not None
        and url.startswith(f"{base}/iiif/")
        and f"/{identifier}/" in url
        and match.group(1) == match.group(2)
    )


def _all_from_export(tab: Tab, requests: Requests, pages: str, exported: Exported) -> None:
    assert tab.failures.seen == [], "\n".join([*tab.failures.seen, "console:", *tab.console])
    others = [
        u for u in requests.urls if not u.startswith((pages + "/", exported.base + "/", "data:"))
    ]
    assert others == [], others
    assert any(u.startswith(exported.base + "/iiif/") for u in requests.urls), requests.urls


def _zoom_in_to_full_resolution(
    tab: Tab, requests: Requests, exported: Exported, identifier: str, zoom: Callable[[], Any]
) -> None:
    """Zoom in (``zoom()``) and wait for a tile of ``identifier`` at scale factor 1, none of
    which was asked for before."""
    assert not any(_full_resolution_tile(u, exported.base, identifier) for u in requests.urls)
    with tab.page.expect_request(
        lambda r: _full_resolution_tile(r.url, exported.base, identifier), timeout=30_000
    ):
        zoom()


@pytest.mark.parametrize("version", ["3", "2"])
@pytest.mark.parametrize("viewer", ["osd", "leaflet"])
def test_deep_zoom_viewers_draw_and_zoom_into_an_exported_image(
    tab: Tab, pages: str, exported: Exported, viewer: str, version: str
) -> None:
    info = f"{exported.base}/iiif/{version}/book%2Fp1/info.json"
    requests = Requests.of(tab)
    tab.page.set_viewport_size(SMALL_VIEW)  # so that the whole page is drawn from reduced tiles
    tab.page.goto(pages + viewer_url(viewer, info), wait_until="load")
    # the whole page fits the view: its colour covers part of it
    wait_for_colours(tab.page, "#viewer", {BOOK_COLOURS[0]: 0.3}, {BOOK_COLOURS[1]: 0.01})
    _zoom_in_to_full_resolution(
        tab, requests, exported, "book%2Fp1", lambda: tab.page.evaluate(ZOOM[viewer])
    )
    # zoomed in: the page covers the view
    wait_for_colours(tab.page, "#viewer", {BOOK_COLOURS[0]: 0.5})
    _all_from_export(tab, requests, pages, exported)


@pytest.mark.parametrize("version", ["3", "2"])
def test_mirador_opens_the_exported_book_turns_the_page_and_zooms(
    tab: Tab, pages: str, exported: Exported, version: str
) -> None:
    manifest = f"{exported.base}/iiif/presentation/{version}/book/manifest"
    requests = Requests.of(tab)
    page = tab.page
    page.goto(pages + viewer_url("mirador", manifest), wait_until="load")
    page.get_by_text("A sample book", exact=False).first.wait_for(state="visible")
    wait_for_colours(page, MIRADOR_CANVAS, {BOOK_COLOURS[0]: 0.25})
    page.get_by_role("button", name="Next item").first.click()
    wait_for_colours(page, MIRADOR_CANVAS, {BOOK_COLOURS[1]: 0.25}, {BOOK_COLOURS[0]: 0.01})
    zoom_in = page.get_by_role("button", name="Zoom in").first

    def zoom() -> None:
        for _ in range(3):
            zoom_in.click()

    _zoom_in_to_full_resolution(tab, requests, exported, "book%2Fp2", zoom)
    wait_for_colours(page, MIRADOR_CANVAS, {BOOK_COLOURS[1]: 0.5}, {BOOK_COLOURS[0]: 0.01})
    _all_from_export(tab, requests, pages, exported)
