"""The built-in viewers' settings, links, pages and static files
(iiif_shim/presentation/viewers.py), with aiohttp's test server; the viewers themselves run in
tests/browser."""

from __future__ import annotations

import asyncio
import gzip
import json
import re
from collections.abc import Awaitable, Callable
from pathlib import Path
from typing import Any

import pytest
from aiohttp import web
from aiohttp.test_utils import TestClient, TestServer
from yarl import URL

from iiif_shim.base.schema import Reader
from iiif_shim.iiif import contentstate
from iiif_shim.iiif.contentstate import Target
from iiif_shim.presentation import viewers
from iiif_shim.presentation.viewers import PACKAGES, ViewerSettings, target_from_query
from iiif_shim.web import viewers as web_viewers
from iiif_shim.web.viewers import asset_file

ROOT = Path(__file__).resolve().parents[2]
MANIFEST = "https://example.org/iiif/book/manifest"


def read(data: Any, tmp_path: Path) -> tuple[ViewerSettings | None, list[tuple[str, str]]]:
    reader = Reader(tmp_path)
    return reader.read(ViewerSettings, data, "viewers"), reader.problems


# --- settings and the pinned packages ---------------------------------------------------------


def test_pinned_versions_match_the_install_script() -> None:
    script = (ROOT / "deploy" / "viewers.sh").read_text()
    table = re.search(r"PINNED=\((.*?)\n\)", script, re.S)
    assert table is not None
    rows = re.findall(r'"(\S+)\s+(\S+)\s+([0-9a-f]{128})"', table.group(1))
    assert {name: version for name, version, _ in rows} == dict(PACKAGES)


def test_default_settings(tmp_path: Path) -> None:
    settings, problems = read({}, tmp_path)
    assert problems == [] and settings is not None
    assert settings.default == "mirador"
    assert settings.folder == ROOT / ".viewers"
    assert dict(settings.external) == {}


def test_settings_read_and_checked(tmp_path: Path) -> None:
    settings, problems = read(
        {
            "assets": "assets",
            "base_url": "https://cdn.jsdelivr.net/npm",
            "default": "uv",
            "external": {"Theseus": "https://theseusviewer.org/?iiif-content={url}"},
        },
        tmp_path,
    )
    assert problems == [] and settings is not None
    assert settings.folder == tmp_path / "assets"
    assert viewers.external_links(settings, "https://h/m?a=1") == (
        ("Theseus", "https://theseusviewer.org/?iiif-content=https%3A%2F%2Fh%2Fm%3Fa%3D1"),
    )


@pytest.mark.parametrize(
    ("data", "where", "message"),
    [
        ({"default": "tify"}, "viewers.default", "built-in viewers"),
        ({"base_url": "javascript:alert(1)"}, "viewers.base_url", "http"),
        ({"base_url": "https://cdn.example/npm?x=1"}, "viewers.base_url", "query"),
        ({"external": {"X": "https://x.example/"}}, "viewers.external", "{url}"),
        ({"external": {"X": "javascript:{url}"}}, "viewers.external", "http"),
        ({"colour": "red"}, "viewers.colour", "unknown key"),
    ],
)
def test_settings_refused(data: dict[str, Any], where: str, message: str, tmp_path: Path) -> None:
    settings, problems = read(data, tmp_path)
    assert settings is None
    assert any(path == where and message in text for path, text in problems), problems


# --- links and queries ------------------------------------------------------------------------


def test_viewer_url_percent_encodes_the_content() -> None:
    assert viewers.viewer_url("uv", "https://h/m?a=1&b=2") == (
        "/view/uv?iiif-content=https://h/m%3Fa%3D1%26b%3D2"
    )
    state = contentstate.encode({"id": MANIFEST, "type": "Manifest"})
    assert viewers.viewer_url("mirador", state) == f"/view/mirador?iiif-content={state}"
    with pytest.raises(ValueError):
        viewers.viewer_url("tify", MANIFEST)
    assert list(viewers.BUILTIN_VIEWERS) == ["mirador", "uv", "osd", "leaflet", "clover"]


def test_query_forms() -> None:
    canvas = "https://example.org/iiif/book/canvas/p2"
    assert target_from_query({"iiif-content": [MANIFEST]}) == Target(manifest=MANIFEST)
    assert target_from_query({"manifest": [MANIFEST]}) == Target(manifest=MANIFEST)
    assert target_from_query({"manifest": [MANIFEST], "canvas": [canvas + "#xywh=1,2,3,4"]}) == (
        Target(manifest=MANIFEST, canvas=canvas, region=(1, 2, 3, 4))
    )
    assert target_from_query({"image": ["https://img.example/iiif/3/a"]}) == Target(
        image_service="https://img.example/iiif/3/a"
    )
    # a manifest URL that happens to end in info.json is still a manifest when named so
    assert target_from_query({"manifest": ["https://h/x/info.json"]}).manifest is not None


@pytest.mark.parametrize(
    ("query", "message"),
    [
        ({}, "say what to open"),
        ({"iiif-content": [MANIFEST], "manifest": [MANIFEST]}, "only one of"),
        ({"iiif-content": [MANIFEST, MANIFEST]}, "more than once"),
        ({"iiif-content": [MANIFEST], "canvas": ["https://h/c"]}, "canvas goes with manifest"),
        ({"manifest": ["javascript:alert(1)"]}, "only http"),
        ({"manifest": [MANIFEST], "canvas": ["data:text/html,x"]}, "only http"),
        ({"manifest": [contentstate.encode({"id": MANIFEST, "type": "Manifest"})]}, "URL"),
        ({"image": [contentstate.encode({"id": MANIFEST, "type": "Manifest"})]}, "image service"),
    ],
)
def test_query_refused(query: dict[str, list[str]], message: str) -> None:
    with pytest.raises(ValueError, match=re.escape(message)):
        target_from_query(query)


# --- pages ------------------------------------------------------------------------------------


HOSTILE = 'https://evil.example/m?</script><script>alert(1)</script><!--&x=\u2028"'


@pytest.mark.parametrize("viewer", list(viewers.BUILTIN_VIEWERS))
def test_page_carries_the_target_as_inert_json(viewer: str) -> None:
    target = Target(manifest=HOSTILE, canvas=HOSTILE + "c", region=(1, 2, 3, 4))
    page = viewers.viewer_page(viewer, target, "../viewers")
    assert "<script>alert(1)" not in page and "<!--" not in page
    blob = re.search(r'<script type="application/json" id="iiif-target">(.*?)</script>', page, re.S)
    assert blob is not None
    data = json.loads(blob.group(1))
    assert data["manifest"] == HOSTILE and data["region"] == [1, 2, 3, 4]
    # the page's own scripts are fixed text: the target appears in the JSON blob only
    assert page.count("evil.example") == 3  # the blob (manifest, canvas) and the escaped title
    for src in re.findall(r'<script src="([^"]+)"', page):
        assert src.startswith("../viewers/") and "@" in src


def test_page_loads_assets_from_the_base_url() -> None:
    page = viewers.viewer_page("mirador", Target(manifest=MANIFEST), "https://cdn.example/npm/")
    assert '<script src="https://cdn.example/npm/mirador@4.0.0/dist/mirador.min.js">' in page


# --- the handlers, over HTTP ------------------------------------------------------------------


def install(folder: Path, packages: list[str]) -> None:
    for package in packages:
        base = folder / f"{package}@{PACKAGES[package]}"
        base.mkdir(parents=True, exist_ok=True)
        (base / viewers.STAMP).write_text("installed\n")


def serve(
    settings: ViewerSettings, check: Callable[[TestClient[Any, Any]], Awaitable[None]]
) -> None:
    async def view(request: web.Request) -> web.StreamResponse:
        return await web_viewers.view(request, settings, request.match_info["viewer"])

    async def asset(request: web.Request) -> web.StreamResponse:
        raw = request.raw_path.split("?", 1)[0]
        return await web_viewers.asset(request, settings, raw.removeprefix("/viewers/"))

    async def main() -> None:
        app = web.Application()
        app.router.add_get("/view/{viewer}", view)
        app.router.add_get("/viewers/{path:.+}", asset)
        async with TestClient(TestServer(app)) as client:
            await check(client)

    asyncio.run(main())


def test_view_statuses(tmp_path: Path) -> None:
    settings = ViewerSettings(assets=tmp_path / "assets")
    install(settings.folder, ["openseadragon"])

    async def check(client: TestClient[Any, Any]) -> None:
        r = await client.get("/view/tify", params={"iiif-content": MANIFEST})
        assert r.status == 404 and "built in: mirador, uv" in await r.text()
        r = await client.get("/view/osd", params={"iiif-content": "javascript:alert(1)"})
        assert r.status == 400 and "only http" in await r.text()
        r = await client.get("/view/osd", params={"iiif-content": "%%%"})
        assert r.status == 400 and r.content_type == "text/plain"
        r = await client.get("/view/mirador", params={"image": "https://img.example/iiif/3/a"})
        assert r.status == 400 and "/view/osd?iiif-content=" in await r.text()
        r = await client.get("/view/mirador", params={"iiif-content": MANIFEST})
        body = await r.text()
        assert r.status == 503 and r.content_type == "text/html"
        assert f"bash deploy/viewers.sh {settings.folder}" in body and "mirador@4.0.0" in body
        r = await client.get("/view/osd", params={"iiif-content": MANIFEST + "/info.json"})
        assert r.status == 200 and r.content_type == "text/html"
        assert r.headers["Cache-Control"] == "no-cache"
        assert "openseadragon@6.1.1/build/openseadragon/openseadragon.min.js" in await r.text()

    serve(settings, check)


def test_missing_default_folder_names_the_plain_command() -> None:
    page = viewers.missing_page("uv", viewers.DEFAULT_ASSETS, ["universalviewer"])
    assert "<code>bash deploy/viewers.sh</code>" in page


def test_base_url_needs_no_local_files(tmp_path: Path) -> None:
    settings = ViewerSettings(assets=tmp_path / "none", base_url="https://cdn.example/npm")

    async def check(client: TestClient[Any, Any]) -> None:
        r = await client.get("/view/uv", params={"iiif-content": MANIFEST})
        assert r.status == 200
        assert "https://cdn.example/npm/universalviewer@4.4.0/dist/uv.css" in await r.text()

    serve(settings, check)


def test_assets_are_served_with_long_caching(tmp_path: Path) -> None:
    settings = ViewerSettings(assets=tmp_path / "assets")
    base = settings.folder / "mirador@4.0.0" / "dist"
    base.mkdir(parents=True)
    script = b"window.Mirador = {};\n" * 200
    (base / "mirador.min.js").write_bytes(script)
    (base / "mirador.min.js.gz").write_bytes(gzip.compress(script))
    (base / "icon.svg").write_text("<svg xmlns='http://www.w3.org/2000/svg'/>")
    (settings.folder / "mirador@4.0.0" / "LICENSE").write_text("Apache-2.0\n")

    async def check(client: TestClient[Any, Any]) -> None:
        r = await client.get("/viewers/mirador@4.0.0/dist/mirador.min.js")
        assert r.status == 200 and await r.read() == script
        assert r.headers["Cache-Control"] == "public, max-age=31536000, immutable"
        assert r.headers["Content-Type"] == "text/javascript; charset=utf-8"
        assert r.headers["Content-Encoding"] == "gzip" and r.headers["Vary"] == "Accept-Encoding"
        r = await client.head("/viewers/mirador@4.0.0/dist/mirador.min.js")
        assert r.status == 200 and await r.read() == b""
        r = await client.get("/viewers/mirador%404.0.0/dist/icon.svg")
        assert r.status == 200 and r.headers["Content-Type"] == "image/svg+xml"
        r = await client.get("/viewers/mirador@4.0.0/LICENSE")
        assert r.status == 200 and r.headers["Content-Type"].startswith("text/plain")
        for bad in (
            "/viewers/mirador@4.0.0/dist/mirador.min.js.gz",
            "/viewers/mirador@4.0.0/.installed",
            "/viewers/mirador@4.0.0/dist/..%2f..%2f..%2fetc%2fpasswd",
            "/viewers/mirador@4.0.0/dist/%2e%2e/%2e%2e/secret.js",
            "/viewers/mirador@4.0.0/dist",
        ):
            r = await client.get(URL(bad, encoded=True))
            assert r.status == 404, bad

    serve(settings, check)


@pytest.mark.parametrize(
    "path",
    [
        "",
        "../outside.js",
        "pkg@1/../../outside.js",
        "pkg@1/./a.js",
        "/etc/passwd.js",
        "pkg@1//a.js",
        "pkg@1/a.js%00.js",
        "pkg@1%2fa.js",
        "pkg@1%5ca.js",
        "pkg@1\\a.js",
        "pkg@1/a.js\x00",
        "pkg@1/%252e%252e/a.js",
        "pkg@1/.hidden.js",
        "pkg@1/page.html",
        "pkg@1/missing.js",
        "pkg@1/link.js",
        "pkg@1/%ff.js",
        "pkg@1/" + "a" * 600 + ".js",
    ],
)
def test_hostile_asset_paths_find_nothing(path: str, tmp_path: Path) -> None:
    folder = tmp_path / "assets"
    (folder / "pkg@1").mkdir(parents=True)
    (folder / "pkg@1" / "a.js").write_text("ok")
    (folder / "pkg@1" / ".hidden.js").write_text("no")
    (folder / "pkg@1" / "page.html").write_text("<script>no</script>")
    (tmp_path / "outside.js").write_text("secret")
    (folder / "pkg@1" / "link.js").symlink_to(tmp_path / "outside.js")
    assert asset_file(folder, "pkg@1/a.js") == (folder / "pkg@1" / "a.js").resolve()
    assert asset_file(folder, path) is None


def test_a_link_inside_the_folder_is_followed(tmp_path: Path) -> None:
    folder = tmp_path / "assets"
    (folder / "pkg@1").mkdir(parents=True)
    (folder / "pkg@1" / "a.js").write_text("ok")
    (folder / "pkg@1" / "b.js").symlink_to(folder / "pkg@1" / "a.js")
    assert asset_file(folder, "pkg@1/b.js") == (folder / "pkg@1" / "a.js").resolve()
