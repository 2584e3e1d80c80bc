"""The built-in viewers, in a real browser: each opens the sample object from another origin and
draws its pages (checked by colour, not by bytes), Mirador and UV also at a content-state link
(canvas 3, zoomed to a region). No request may fail."""

from __future__ import annotations

from typing import Any

from iiif_shim.iiif import contentstate
from iiif_shim.presentation.viewers import viewer_url
from tests.browser.conftest import SampleObject, Tab, wait_for_colours

MIRADOR_CANVAS = "#viewer .openseadragon-canvas"
UV_CANVAS = "#viewer .openseadragon-canvas"


def open_page(tab: Tab, pages: str, viewer: str, content: str) -> None:
    tab.page.goto(pages + viewer_url(viewer, content), wait_until="load")


def region_link(book: SampleObject) -> str:
    """Content state of canvas 3 zoomed to the region, in the spec's compact target form."""
    x, y, w, h = book.region
    return contentstate.encode(
        {
            "id": f"{book.canvases[2]}#xywh={x},{y},{w},{h}",
            "type": "Canvas",
            "partOf": [{"id": book.manifest, "type": "Manifest"}],
        }
    )


def expect_text(page: Any, text: str) -> None:
    page.get_by_text(text, exact=False).first.wait_for(state="visible", timeout=30_000)


def no_failures(tab: Tab) -> None:
    assert tab.failures.seen == [], "\n".join([*tab.failures.seen, "console:", *tab.console])


def test_mirador_opens_the_object_and_turns_the_page(
    tab: Tab, pages: str, book: SampleObject
) -> None:
    open_page(tab, pages, "mirador", book.manifest)
    page = tab.page
    expect_text(page, book.label)
    expect_text(page, book.metadata_value)  # the info panel is open on these pages
    wait_for_colours(page, MIRADOR_CANVAS, {book.colours[0]: 0.25})
    page.get_by_role("button", name="Next item").first.click()
    wait_for_colours(page, MIRADOR_CANVAS, {book.colours[1]: 0.25}, {book.colours[0]: 0.01})
    no_failures(tab)


def test_mirador_opens_a_content_state_at_a_zoomed_region(
    tab: Tab, pages: str, book: SampleObject
) -> None:
    open_page(tab, pages, "mirador", region_link(book))
    wait_for_colours(tab.page, MIRADOR_CANVAS, book.region_colours)
    no_failures(tab)


def test_uv_opens_the_object_and_turns_the_page(tab: Tab, pages: str, book: SampleObject) -> None:
    open_page(tab, pages, "uv", book.manifest)
    page = tab.page
    expect_text(page, book.label)
    wait_for_colours(page, UV_CANVAS, {book.colours[0]: 0.2})
    page.locator(".rightPanel .expandButton").first.click()
    expect_text(page, book.metadata_value)
    page.locator("button.next").first.click()
    wait_for_colours(page, UV_CANVAS, {book.colours[1]: 0.2}, {book.colours[0]: 0.01})
    no_failures(tab)


def test_uv_opens_a_content_state_at_a_zoomed_region(
    tab: Tab, pages: str, book: SampleObject
) -> None:
    open_page(tab, pages, "uv", region_link(book))
    wait_for_colours(tab.page, UV_CANVAS, book.region_colours)
    no_failures(tab)


def test_openseadragon_draws_an_image_service(tab: Tab, pages: str, book: SampleObject) -> None:
    open_page(tab, pages, "osd", book.image_service + "/info.json")
    wait_for_colours(tab.page, "#viewer", {book.colours[0]: 0.3})
    no_failures(tab)


def test_openseadragon_finds_the_canvas_and_region_in_a_manifest(
    tab: Tab, pages: str, book: SampleObject
) -> None:
    open_page(tab, pages, "osd", region_link(book))
    wait_for_colours(tab.page, "#viewer", book.region_colours)
    no_failures(tab)


def test_leaflet_draws_the_first_page(tab: Tab, pages: str, book: SampleObject) -> None:
    open_page(tab, pages, "leaflet", book.manifest)
    wait_for_colours(tab.page, "#viewer", {book.colours[0]: 0.3})
    no_failures(tab)


def test_leaflet_zooms_to_the_region(tab: Tab, pages: str, book: SampleObject) -> None:
    open_page(tab, pages, "leaflet", region_link(book))
    wait_for_colours(tab.page, "#viewer", book.region_colours)
    no_failures(tab)


def test_clover_draws_the_first_page(tab: Tab, pages: str, book: SampleObject) -> None:
    open_page(tab, pages, "clover", book.manifest)
    expect_text(tab.page, book.label)
    wait_for_colours(tab.page, "#viewer .openseadragon-canvas", {book.colours[0]: 0.25})
    no_failures(tab)


def test_the_object_page_shows_its_thumbnails_and_viewer(
    tab: Tab, shim: Any, book: SampleObject
) -> None:
    page = tab.page
    page.goto(f"http://127.0.0.1:{shim.port}/objects/book", wait_until="load")
    expect_text(page, book.label)
    thumbs = page.locator("ul.canvases img")
    assert thumbs.count() == 3
    page.wait_for_function(
        "() => [...document.querySelectorAll('ul.canvases img')]"
        ".every(i => i.complete && i.naturalWidth > 0)",
        timeout=30_000,
    )
    for i, colour in enumerate(book.colours):  # each canvas's thumbnail in its page's colour
        wait_for_colours(page, f"ul.canvases li:nth-child({i + 1}) img", {colour: 0.4})
    frame = page.frame_locator("iframe").locator(MIRADOR_CANVAS)  # the embedded default viewer
    frame.wait_for(state="visible", timeout=30_000)
    no_failures(tab)
