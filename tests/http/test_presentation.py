"""The Presentation API over real sockets: manifests and collections from a folder, a CSV and a
JSON catalogue, valid (3.0 by the validator's schema rules, 2.1 by iiif-prezi), every id the shim
serves dereferenceable with the stated sizes, HTTP like the Image API, a PDF that poppler reads
with the first canvas's colours, an object page, and bad input answered clearly."""

from __future__ import annotations

import gzip
import json
import os
import re
import subprocess
import sys
import time
from collections.abc import Iterator
from pathlib import Path
from typing import Any
from urllib.parse import quote, urlsplit

import pytest
from PIL import Image

from tests.inprocess import InProcessShim
from tests.presentation_checks import check_v2, check_v3
from tests.support import Process, Response, need_tool, start_faulty, write_config

RED, GREEN, BLUE = (200, 30, 40), (30, 160, 60), (40, 60, 200)
LD3 = 'application/ld+json;profile="http://iiif.io/api/presentation/3/context.json"'


def _page(path: Path, colour: tuple[int, int, int], size: tuple[int, int]) -> None:
    path.parent.mkdir(parents=True, exist_ok=True)
    Image.new("RGB", size, colour).save(path, quality=92)


@pytest.fixture(scope="module")
def faulty(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Process]:
    tmp = tmp_path_factory.mktemp("prez-faulty")
    proc = start_faulty(tmp, tmp)
    yield proc
    proc.stop()


@pytest.fixture(scope="module")
def shim(tmp_path_factory: pytest.TempPathFactory, faulty: Process) -> Iterator[InProcessShim]:
    tmp = tmp_path_factory.mktemp("prez")
    root = tmp / "objects"
    _page(root / "book" / "p1.jpg", RED, (1200, 1600))
    _page(root / "book" / "p2.jpg", GREEN, (1000, 1500))
    _page(root / "book" / "p10.jpg", BLUE, (3000, 2000))  # natural order: after p2
    (root / "book" / "object.yaml").write_text(
        "label: The book\n"
        "summary: Three pages\n"
        "rights: http://creativecommons.org/licenses/by/4.0/\n"
        "nav_date: '1887-05-17'\n"
        "behavior: paged\n"
        "metadata: {Creator: A. Printer, Extent: 3 pages}\n"
        "canvases: {p1: {label: Cover, range: Cover}, p2: {range: Text}, p10: {range: Text}}\n"
    )
    _page(root / "Brief an Händel" / "1.jpg", GREEN, (400, 300))
    _page(root / "evil" / "1.jpg", RED, (100, 100))
    (root / "evil" / "object.yaml").write_text(
        "label: <img src=x onerror=alert(1)>\n"
        "summary: <script>alert(2)</script>\n"
        "required_statement: <b onmouseover=alert(3)>x</b>\n"
        "metadata: {Rights: <script>alert(4)</script>, '<i>': <svg onload=alert(5)>}\n"
        "canvases: {'1': {label: <img src=y onerror=alert(6)>}}\n"
    )
    _page(root / "badrights" / "1.jpg", RED, (100, 100))
    (root / "badrights" / "object.yaml").write_text("rights: all rights reserved\n")
    (tmp / "catalogue.csv").write_text(
        "obj,image_id,title,page,seq,creator\n"
        "a/b,book/p10,Slash object,last,2,Someone\n"
        "a/b,book/p1,Slash object,first,1,Someone\n"
        "ghost,nope/none,Ghost,,1,\n",
        encoding="utf-8",
    )
    (tmp / "broken.csv").write_text("obj,title\nx,No image column\n")
    config = write_config(
        tmp / "shim.yaml",
        f"""
        server:
          cache_control: "public, max-age=60"
        iiif: {{prefix: /iiif, max_width: 2500, max_height: 2500}}
        backends:
          objects: {{type: files, root: "{root}"}}
        routes:
          - {{backend: objects}}
        presentation:
          language: en
          provider: {{label: Test Library, homepage: "https://library.example.org"}}
          sources:
            scans: {{type: folder, backend: objects}}
            catalogue:
              type: csv
              path: catalogue.csv
              columns: {{object: obj, image: image_id, label: title, canvas_label: page,
                         order: seq, metadata: [creator]}}
            broken:
              type: csv
              path: broken.csv
              columns: {{object: obj, image: image_id}}
            slow:
              type: json
              url: "http://127.0.0.1:{faulty.port}/stall/{{object}}"
              objects: [late]
              fields: {{images: "$.images[*]"}}
              timeout: 1
    """,
    )
    served = InProcessShim(config)
    yield served
    served.stop()


def _json(resp: Response) -> dict[str, Any]:
    assert resp.status == 200, resp.text
    doc: dict[str, Any] = json.loads(resp.body)
    return doc


def _path(url: str) -> str:
    split = urlsplit(url)
    return split.path + (f"?{split.query}" if split.query else "")


def test_a_folder_object_is_a_valid_manifest_sized_from_its_images(shim: InProcessShim) -> None:
    resp = shim.get("/iiif/presentation/3/book/manifest")
    doc = _json(resp)
    assert check_v3(doc) == []
    assert resp.header("Content-Type") == LD3
    assert resp.header("Access-Control-Allow-Origin") == "*"
    assert doc["id"] == f"http://127.0.0.1:{shim.port}/iiif/presentation/3/book/manifest"
    assert doc["label"] == {"en": ["The book"]}
    assert doc["navDate"] == "1887-05-17T00:00:00Z"
    sizes = [(c["width"], c["height"]) for c in doc["items"]]
    assert sizes == [(1200, 1600), (1000, 1500), (3000, 2000)]  # p1, p2, p10
    body = doc["items"][2]["items"][0]["items"][0]["body"]
    assert (body["width"], body["height"]) == (2500, 1666)  # what max answers under the limits
    assert [r["label"]["en"][0] for r in doc["structures"]] == ["Cover", "Text"]
    assert doc["structures"][1]["items"] == [
        {"id": doc["items"][1]["id"], "type": "Canvas"},
        {"id": doc["items"][2]["id"], "type": "Canvas"},
    ]
    assert {"label": {"en": ["Creator"]}, "value": {"en": ["A. Printer"]}} in doc["metadata"]
    assert doc["provider"][0]["label"] == {"en": ["Test Library"]}


def test_every_id_the_shim_serves_dereferences_with_its_stated_size(shim: InProcessShim) -> None:
    doc = _json(shim.get("/iiif/presentation/3/book/manifest"))
    seen: set[str] = set()

    def visit(node: Any) -> None:
        if isinstance(node, list):
            for item in node:
                visit(item)
            return
        if not isinstance(node, dict):
            return
        url = node.get("id") or node.get("@id")
        kind = node.get("type") or node.get("@type")
        if isinstance(url, str) and url.startswith(f"http://127.0.0.1:{shim.port}/"):
            path = _path(url)
            if kind in ("ImageService3", "ImageService2"):
                info = _json(shim.get(f"{path}/info.json"))
                assert info.get("id", info.get("@id")) == url
            elif kind in ("Manifest", "Collection"):
                assert _json(shim.get(path))["id"] == url
            elif kind == "Image" and path not in seen:
                resp = shim.get(path)
                assert resp.status == 200, (url, resp.text)
                assert resp.image().size == (node["width"], node["height"]), url
            elif kind == "Text":
                resp = shim.get(path)
                assert resp.status == 200, (url, resp.text)
                assert (resp.header("Content-Type") or "").startswith(node["format"]), url
            seen.add(path)
        for value in node.values():
            visit(value)

    visit(doc)
    assert any(p.endswith("/pdf") for p in seen) and any("/objects/" in p for p in seen)
    assert sum("/full/" in p for p in seen) >= 6  # bodies and thumbnails


def test_manifest_2_is_read_by_iiif_prezi(shim: InProcessShim) -> None:
    doc = _json(shim.get("/iiif/presentation/2/book/manifest"))
    assert check_v2(doc) == []
    canvases = doc["sequences"][0]["canvases"]
    assert [c["label"] for c in canvases] == ["Cover", "2", "3"]


def test_collections_list_every_source_and_their_manifests(shim: InProcessShim) -> None:
    top = _json(shim.get("/iiif/presentation/3/collection"))
    assert check_v3(top) == []
    assert [c["label"]["en"][0] for c in top["items"]] == ["scans", "catalogue", "broken", "slow"]
    scans = _json(shim.get(_path(top["items"][0]["id"])))
    assert check_v3(scans) == []
    labels = {i["label"]["en"][0]: i for i in scans["items"]}
    assert {"The book", "Brief an Händel", "badrights"} <= set(labels)
    thumb = labels["The book"]["thumbnail"][0]
    assert shim.get(_path(thumb["id"])).image().size == (thumb["width"], thumb["height"])
    assert check_v2(_json(shim.get("/iiif/presentation/2/collection/scans"))) == []
    assert check_v2(_json(shim.get("/iiif/presentation/2/collection"))) == []


def test_csv_objects_take_their_rows_in_order(shim: InProcessShim) -> None:
    doc = _json(shim.get("/iiif/presentation/3/a%2Fb/manifest"))
    assert check_v3(doc) == []
    assert doc["id"].endswith("/presentation/3/a%2Fb/manifest")
    assert [c["label"]["en"][0] for c in doc["items"]] == ["first", "last"]
    assert doc["metadata"] == [{"label": {"en": ["creator"]}, "value": {"en": ["Someone"]}}]
    unicode = _json(shim.get(f"/iiif/presentation/3/{quote('Brief an Händel')}/manifest"))
    assert unicode["label"] == {"en": ["Brief an Händel"]}


def test_http_behaves_like_the_image_api(shim: InProcessShim) -> None:
    path = "/iiif/presentation/3/book/manifest"
    first = shim.get(path)
    etag = first.header("ETag")
    assert etag and "Accept" in (first.header("Vary") or "")
    assert shim.get(path, headers={"If-None-Match": etag}).status == 304
    head = shim.get(path, method="HEAD")
    assert head.status == 200 and head.body == b""
    plain = shim.get(path, headers={"Accept": "application/json"})
    assert plain.header("Content-Type") == "application/json"
    refused = shim.get(path, headers={"Accept": "application/ld+json;q=0"})
    assert refused.header("Content-Type") == "application/json"
    unquoted = shim.get(
        path,
        headers={
            "Accept": "application/ld+json;profile=http://iiif.io/api/presentation/3/context.json"
        },
    )
    assert unquoted.header("Content-Type") == LD3
    zipped = shim.get(path, headers={"Accept-Encoding": "gzip"})
    assert zipped.header("Content-Encoding") == "gzip"
    assert json.loads(gzip.decompress(zipped.body)) == json.loads(first.body)
    preflight = shim.get(
        path,
        method="OPTIONS",
        headers={"Origin": "http://x", "Access-Control-Request-Method": "GET"},
    )
    assert preflight.status == 204 and preflight.header("Access-Control-Allow-Origin") == "*"


@pytest.mark.parametrize(
    ("path", "status", "fragment"),
    [
        ("/iiif/presentation/3/nothing-here/manifest", 404, "no object"),
        ("/iiif/presentation/3/..%2F..%2Fetc/manifest", 404, "no object"),
        ("/iiif/presentation/3/ghost/manifest", 502, "image 'nope/none' is not one"),
        ("/iiif/presentation/3/collection/nosuchsource", 404, "no object source"),
        ("/iiif/presentation/4/book/manifest", 404, "not a Presentation API URL"),
        ("/iiif/presentation/3/%FF/manifest", 400, "UTF-8"),
    ],
)
def test_bad_input_gets_a_clear_error(
    shim: InProcessShim, path: str, status: int, fragment: str
) -> None:
    resp = shim.get(path)
    assert resp.status == status, resp.text
    assert fragment in resp.text
    assert resp.header("Access-Control-Allow-Origin") == "*"


def test_rights_that_are_not_a_uri_are_shown_as_metadata(shim: InProcessShim) -> None:
    doc = _json(shim.get("/iiif/presentation/3/badrights/manifest"))
    assert check_v3(doc) == [] and "rights" not in doc
    assert {"label": {"en": ["Rights"]}, "value": {"en": ["all rights reserved"]}} in doc[
        "metadata"
    ]


def test_a_csv_without_its_column_fails_alone(shim: InProcessShim) -> None:
    resp = shim.get("/iiif/presentation/3/collection/broken")
    assert resp.status == 502 and "source 'broken'" in resp.text and "image_id" in resp.text
    assert shim.get("/iiif/presentation/3/book/manifest").status == 200
    assert shim.get("/iiif/presentation/3/collection").status == 200


def test_a_json_source_that_stalls_is_a_504_within_its_timeout(shim: InProcessShim) -> None:
    started = time.monotonic()
    resp = shim.get("/iiif/presentation/3/late/manifest")
    assert resp.status == 504 and "source 'slow'" in resp.text, resp.text
    assert time.monotonic() - started < 1 + 2
    assert shim.get("/iiif/presentation/3/book/manifest").status == 200


def test_the_pdf_opens_in_poppler_with_the_first_canvas_colours(
    shim: InProcessShim, tmp_path: Path
) -> None:
    tool = need_tool("pdftoppm")
    resp = shim.get("/iiif/presentation/book/pdf")
    assert resp.status == 200 and resp.header("Content-Type") == "application/pdf"
    assert resp.body.startswith(b"%PDF-")
    (tmp_path / "book.pdf").write_bytes(resp.body)
    subprocess.run(
        [tool, "-r", "20", "-png", str(tmp_path / "book.pdf"), str(tmp_path / "page")],
        check=True,
        timeout=60,
    )
    pages = sorted(tmp_path.glob("page*.png"))
    assert len(pages) == 3
    for page, colour in zip(pages, (RED, GREEN, BLUE), strict=True):
        with Image.open(page) as im:
            got = im.convert("RGB").resize((1, 1), Image.Resampling.BOX).getpixel((0, 0))
        assert all(abs(a - b) < 25 for a, b in zip(got, colour, strict=True)), (page, got)
    assert not list(Path(os.environ.get("TMPDIR", "/tmp")).glob("iiif-shim-*.pdf"))


def test_the_object_page_shows_the_object(shim: InProcessShim) -> None:
    resp = shim.get("/objects/book")
    assert resp.status == 200 and (resp.header("Content-Type") or "").startswith("text/html")
    page = resp.text
    assert "<h1>The book</h1>" in page and "A. Printer" in page
    assert page.count('class="canvases"') == 1 and page.count("<li>") == 3
    assert "/view/mirador?iiif-content=" in page and "/presentation/book/pdf" in page
    assert "?manifest=http" in page  # the IIIF drag-and-drop link
    assert shim.get("/objects/nothing-here").status == 404
    landing = shim.get("/").text
    assert "/objects/book" in landing and "The book" in landing


def test_catalogue_text_never_becomes_markup(shim: InProcessShim) -> None:
    page = shim.get("/objects/evil").text
    landing = shim.get("/").text
    for html in (page, landing):  # no tag of the catalogue's survives as a tag
        assert not re.search(r"<(script|img src=[xy]|svg|b on|i>)", html), html
    assert "&lt;script&gt;alert(4)&lt;/script&gt;" in page  # shown as text, Rights label or not
    assert "&lt;img src=x onerror=alert(1)&gt;" in page
    doc = _json(shim.get("/iiif/presentation/3/evil/manifest"))
    assert check_v3(doc) == []
    assert doc["summary"] == {"en": ["<span>&lt;script&gt;alert(2)&lt;/script&gt;</span>"]}
    assert doc["label"] == {"en": [" <img src=x onerror=alert(1)>"]}  # no HTML in labels
    assert doc["metadata"][1]["value"] == {"en": ["<span>&lt;svg onload=alert(5)&gt;</span>"]}


def test_a_pipe_where_a_file_should_be_is_refused_not_waited_on(tmp_path: Path) -> None:
    """An ``object.yaml`` or a catalogue that is a pipe nobody writes used to hold a thread (and
    the request, and check-config) forever; a pipe is no file: the object is served without
    its ``object.yaml``, the catalogue is a 502 that says why, check-config fails on it."""
    root = tmp_path / "objects"
    _page(root / "piped" / "1.jpg", RED, (100, 100))
    os.mkfifo(root / "piped" / "object.yaml")
    os.mkfifo(tmp_path / "piped.csv")
    config = write_config(
        tmp_path / "shim.yaml",
        f"""
        backends:
          objects: {{type: files, root: "{root}"}}
        routes:
          - {{backend: objects}}
        presentation:
          sources:
            scans: {{type: folder, backend: objects}}
            piped: {{type: csv, path: piped.csv, columns: {{object: o, image: i}}}}
        """,
    )
    checked = subprocess.run(
        [sys.executable, "-m", "iiif_shim", "check-config", str(config)],
        capture_output=True,
        text=True,
        timeout=30,
    )
    assert checked.returncode == 1, checked  # once, as a problem (the survey reads it)
    assert "cannot read piped.csv (not a regular file)" in checked.stderr, checked
    shim = InProcessShim(config)
    try:
        manifest = shim.get("/iiif/presentation/3/piped/manifest", timeout=10)
        assert manifest.status == 200 and _json(manifest)["label"] == {"none": ["piped"]}
        collection = shim.get("/iiif/presentation/3/collection/piped", timeout=10)
        assert collection.status == 502 and "cannot read piped.csv" in collection.text
    finally:
        shim.stop()
