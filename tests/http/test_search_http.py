"""Content Search 2.0 and 1.0 and the text of objects over a real shim (the server process), on
SQLite and on PostgreSQL: the answers' shapes as the specifications' examples, hit boxes of
known words at known places (ALTO in pixels and in mm10, hOCR, plain text) on canvases of
another size than their OCR page, diacritics, a phrase over two lines, prefixes, paging, empty
and missing ``q``, autocomplete with ``min``, whatever a client sends as ``q``, ``page`` or
``min`` (a clear 4xx, never a 500), objects without text, restricted objects, and HTTP as the
Presentation API has it (CORS, ETag and 304, gzip, HEAD, content negotiation)."""

from __future__ import annotations

import gzip
import json
import random
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any
from urllib.parse import quote, urlsplit

import pytest
import yaml
from PIL import Image

from tests import ocr_files
from tests.http.auth_support import auth_config, cookie, login, send
from tests.support import Process, Response, log_lines, start_shim

PAGE_SIZE = 3
LD2 = 'application/ld+json;profile="http://iiif.io/api/search/2/context.json"'
LD1 = 'application/ld+json;profile="http://iiif.io/api/search/1/context.json"'
BOOK, MANY, SECRET, BARE = "srch-book", "srch-many", "srch-secret", "srch-bare"
WIDE = "srch-wide"  # one page of plain text in UTF-16

# canvas sizes (the images) and what is written on them, in each OCR page's own units
# canvas 1: 1000x1500, ALTO in pixels of a 2000x3000 master (x 0.5)
LINES_1 = [
    [("Zürich", (200, 400, 300, 60)), ("lake", (560, 400, 200, 60))],
    [("A", (200, 600, 40, 60)), ("bird", (260, 600, 160, 60)), ("in", (440, 600, 60, 60)),
     ("the", (520, 600, 100, 60)), ("hand", (640, 600, 160, 60))],
    [("is", (200, 700, 60, 60)), ("worth", (280, 700, 200, 60))],
]  # fmt: skip
# canvas 2: 800x600, ALTO in mm10 of a 400x300 mm page (x 0.2)
LINES_2 = [
    [("Zürich", (1000, 500, 1500, 250))],
    [("Zürichsee", (1000, 1000, 2000, 250)), ("harbour", (3100, 1000, 800, 250))],
]
# canvas 3: 600x400, hOCR of a 1200x800 page (x 0.5)
LINES_3 = [[("ZÜRICH", (100, 100, 300, 50)), ("harbour", (500, 100, 300, 50))]]
# canvas 4: 500x500, plain text (no boxes: the whole canvas)
LINES_4 = [["Zürich", "is", "on", "the", "lake"]]
SIZES = [(1000, 1500), (800, 600), (600, 400), (500, 500), (300, 300)]
# where "Zürich" is on each canvas, in the canvas's pixels
ZURICH = {1: "#xywh=100,200,150,30", 2: "#xywh=200,100,300,50", 3: "#xywh=50,50,150,25", 4: ""}
# spec example keys (Content Search 2.0 4.2.2 and 4.3.1, 1.0 3.3.2 and 3.4.2)
KEYS_2 = {"@context", "id", "type", "partOf", "startIndex", "items", "annotations"}
ITEM_KEYS_2 = {"id", "type", "motivation", "body", "target"}
KEYS_1 = {"@context", "@id", "@type", "within", "startIndex", "resources", "hits"}
RESOURCE_KEYS_1 = {"@id", "@type", "motivation", "resource", "on"}


@dataclass
class Site:
    shim: Process
    engine: str
    folder: Path
    staff: str  # a staff login's cookie value

    def get(
        self, path: str, *, login: bool = False, headers: dict[str, str] | None = None
    ) -> Response:
        cookies = cookie("staff", self.staff) if login else None
        return send(self.shim.port, path, cookies=cookies, headers=headers)

    def json(self, path: str) -> Any:
        answer = self.get(path)
        assert answer.status == 200, (path, answer.status, answer.text)
        return json.loads(answer.body)

    def base(self) -> str:
        return f"http://127.0.0.1:{self.shim.port}/iiif"


def _objects(conf: Path, images: Path) -> None:
    ocr = conf / "ocr"
    ocr.mkdir()
    (ocr / "p1.xml").write_bytes(ocr_files.alto(LINES_1, (2000, 3000), "pixel"))
    (ocr / "p2.xml").write_bytes(ocr_files.alto(LINES_2, (4000, 3000), "mm10", version=4))
    (ocr / "p3.hocr").write_bytes(ocr_files.hocr(LINES_3, (1200, 800)))
    (ocr / "p4.txt").write_bytes(ocr_files.plain(LINES_4))
    echoes = [[("echo", (100, 100 + 100 * i, 200, 50))] for i in range(8)]
    (ocr / "many.xml").write_bytes(ocr_files.alto(echoes, (1000, 1000)))
    (ocr / "wide.txt").write_bytes(ocr_files.plain(LINES_4, encoding="utf-16"))
    for i, size in enumerate(SIZES, 1):
        Image.new("RGB", size, (200, 200, 200)).save(images / f"srch-{i}.png")
    rows = [
        "obj,img,txt,acc",
        f"{BOOK},srch-1.png,ocr/p1.xml,",
        f"{BOOK},srch-2.png,ocr/p2.xml,",
        f"{BOOK},srch-3.png,ocr/p3.hocr,",
        f"{BOOK},srch-4.png,ocr/p4.txt,",
        f"{BOOK},srch-5.png,,",
        f"{MANY},srch-1.png,ocr/many.xml,",
        f"{SECRET},srch-1.png,ocr/p1.xml,staff",
        f"{BARE},srch-1.png,,",
        f"{WIDE},srch-4.png,ocr/wide.txt,",
    ]
    (conf / "objects.csv").write_text("\n".join(rows) + "\n")


@pytest.fixture(scope="module", params=["sqlite", "postgres"])
def site(
    request: pytest.FixtureRequest, tmp_path_factory: pytest.TempPathFactory
) -> Iterator[Site]:
    engine: str = request.param
    tmp = tmp_path_factory.mktemp(f"search-{engine}")
    images = tmp / "images"
    images.mkdir()
    path = auth_config(tmp / "conf", images)
    _objects(tmp / "conf", images)
    body: dict[str, Any] = yaml.safe_load(path.read_text())
    body["presentation"] = {
        "sources": {
            "cat": {
                "type": "csv",
                "path": "objects.csv",
                "columns": {"object": "obj", "image": "img", "text": "txt", "access": "acc"},
            }
        }
    }
    search: dict[str, Any] = {"page_size": PAGE_SIZE}
    if engine == "postgres":
        search["postgres"] = request.getfixturevalue("postgres_dsn")
    else:
        search["folder"] = str(tmp / "index")
    body["search"] = search
    path.write_text(yaml.safe_dump(body, sort_keys=False))
    shim = start_shim(path, tmp)
    try:
        yield Site(shim, engine, tmp, login(shim.port, "staff"))
    finally:
        shim.stop()


def _search(api: str, name: str = BOOK, query: str = "", tail: str = "") -> str:
    return f"/iiif/search/{api}/{quote(name, safe='')}{tail}{query}"


def _canvas_ids(manifest: dict[str, Any]) -> list[str]:
    if "items" in manifest:
        return [c["id"] for c in manifest["items"]]
    return [c["@id"] for c in manifest["sequences"][0]["canvases"]]


# --- shapes and places ---------------------------------------------------------------------------


def test_search_2_finds_zurich_at_its_places_on_every_kind_of_page(site: Site) -> None:
    for q in ("zurich", quote("Zürich"), "ZURICH", "zu%CC%88rich"):  # u + combining diaeresis
        doc = site.json(_search("2", query=f"?q={q}"))
        assert set(doc) == KEYS_2 | {"next"}, doc.keys()
        assert doc["@context"] == "http://iiif.io/api/search/2/context.json"
        assert doc["type"] == "AnnotationPage"
        assert doc["partOf"]["type"] == "AnnotationCollection"
        assert doc["partOf"]["total"] == 4
        items = doc["items"]
        assert all(set(item) == ITEM_KEYS_2 for item in items)
        assert {item["motivation"] for item in items} == {"painting"}
        assert {item["body"]["value"] for item in items} == {"Zürich", "ZÜRICH"}
        canvas = f"{site.base()}/presentation/3/{BOOK}/canvas/"
        # page 1 of 2 (3 a page): canvases 1 to 3, then 4
        assert [item["target"] for item in items] == [f"{canvas}{n}{ZURICH[n]}" for n in (1, 2, 3)]
        rest = site.json(urlsplit(doc["next"]["id"]).path + "?" + urlsplit(doc["next"]["id"]).query)
        assert [item["target"] for item in rest["items"]] == [f"{canvas}4"]
        assert rest["startIndex"] == 3 and "next" not in rest


def test_search_1_has_hits_with_snippets_and_resources_on_canvases(site: Site) -> None:
    doc = site.json(_search("1", query="?q=harbour"))
    assert set(doc) - {"next"} == KEYS_1, doc.keys()
    assert doc["@context"] == [
        "http://iiif.io/api/presentation/2/context.json",
        "http://iiif.io/api/search/1/context.json",
    ]
    assert doc["@type"] == "sc:AnnotationList"
    assert doc["within"]["@type"] == "sc:Layer" and doc["within"]["total"] == 2
    assert all(set(r) == RESOURCE_KEYS_1 for r in doc["resources"])
    assert {r["motivation"] for r in doc["resources"]} == {"sc:painting"}
    canvas = f"{site.base()}/presentation/3/{BOOK}/canvas/"
    assert [r["on"] for r in doc["resources"]] == [
        f"{canvas}2#xywh=620,200,160,50",  # mm10 x 0.2
        f"{canvas}3#xywh=250,50,150,25",  # hOCR x 0.5
    ]
    first, second = doc["hits"]
    assert first["@type"] == "search:Hit" and first["annotations"] == [doc["resources"][0]["@id"]]
    assert first["match"] == "harbour" and "Zürichsee" in first["before"]
    assert second["match"] == "harbour" and "ZÜRICH" in second["before"]


def test_a_phrase_over_two_lines_has_two_targets(site: Site) -> None:
    canvas = f"{site.base()}/presentation/3/{BOOK}/canvas/1"
    doc = site.json(_search("2", query="?q=%22hand+is%22"))
    assert [item["target"] for item in doc["items"]] == [
        f"{canvas}#xywh=320,300,80,30",
        f"{canvas}#xywh=100,350,30,30",
    ]
    assert [item["body"]["value"] for item in doc["items"]] == ["hand", "is"]
    [context] = doc["annotations"][0]["items"]
    assert context["motivation"] == "contextualizing"
    assert [t["source"] for t in context["target"]] == [item["id"] for item in doc["items"]]
    assert doc["partOf"]["total"] == 2
    listed = site.json(_search("1", query="?q=%22hand%20is%22"))
    [hit] = listed["hits"]
    assert hit["annotations"] == [r["@id"] for r in listed["resources"]]
    assert hit["match"] == "hand is" and listed["within"]["total"] == 1


def test_prefixes_and_words_all_of_them(site: Site) -> None:
    found = site.json(_search("2", query="?q=zur*"))
    assert found["partOf"]["total"] == 5  # Zürich four times, Zürichsee once
    both = site.json(_search("2", query="?q=zurich+harbour"))  # pages with both words
    canvases = {item["target"].split("#")[0].rsplit("/", 1)[1] for item in both["items"]}
    assert canvases == {"2", "3"}
    assert site.json(_search("2", query="?q=zurich+nowhere"))["items"] == []


def test_hits_target_the_canvases_of_the_manifest_that_names_the_service(site: Site) -> None:
    for version in ("3", "2"):
        manifest = site.json(f"/iiif/presentation/{version}/{BOOK}/manifest")
        services = manifest["service"]
        services = services if isinstance(services, list) else [services]
        one = next(s for s in services if s.get("profile") == "http://iiif.io/api/search/1/search")
        url = urlsplit(one.get("@id") or one["id"])
        assert url.path.startswith("/iiif/search/1/")
        doc = site.json(f"{url.path}?q=zurich")
        targets = {r["on"].split("#")[0] for r in doc["resources"]}
        assert targets and targets <= set(_canvas_ids(manifest)), (version, targets)


def test_empty_or_missing_q_lists_every_line_page_by_page(site: Site) -> None:
    for query in ("", "?q=", "?q=+++"):
        doc = site.json(_search("2", query=query))
        assert doc["partOf"]["total"] == 7  # 3 + 2 + 1 + 1 lines
        assert len(doc["items"]) == PAGE_SIZE
        listed = site.json(_search("1", query=query))
        assert listed["within"]["total"] == 7 and len(listed["hits"]) == PAGE_SIZE
        assert listed["resources"][0]["resource"]["chars"] == "Zürich lake"


def test_paging_across_three_pages_of_results(site: Site) -> None:
    ids = []
    url = _search("2", MANY, "?q=echo")
    seen = 0
    for number in (1, 2, 3):
        doc = site.json(url)
        assert doc["startIndex"] == seen and doc["partOf"]["total"] == 8
        assert doc["id"].endswith(f"page={number}")
        seen += len(doc["items"])
        ids += [item["id"] for item in doc["items"]]
        assert (number < 3) == ("next" in doc) and (number > 1) == ("prev" in doc)
        if number < 3:
            parts = urlsplit(doc["next"]["id"])
            url = f"{parts.path}?{parts.query}"
    assert seen == 8 and len(set(ids)) == 8
    first = site.json(_search("1", MANY, "?q=echo"))
    assert "page=" not in first["@id"] and first["within"]["last"].endswith("page=3")
    last = site.json(_search("1", MANY, "?q=echo&page=3"))
    assert len(last["resources"]) == 2 and last["startIndex"] == 6 and "next" not in last
    assert last["prev"].endswith("page=2")
    for api in ("2", "1"):
        assert site.get(_search(api, MANY, "?q=echo&page=4")).status == 404
        none = site.json(_search(api, MANY, "?q=nowhere"))  # page 1 of no hits: empty
        assert none.get("items", none.get("resources")) == []
        assert site.get(_search(api, MANY, "?q=nowhere&page=2")).status == 404


def test_motivation_date_and_user(site: Site) -> None:
    painted = site.json(_search("2", query="?q=zurich&motivation=painting"))
    assert painted["partOf"]["total"] == 4 and "ignored" not in painted
    none = site.json(_search("2", query="?q=zurich&motivation=commenting"))
    assert none["items"] == []
    ignored = site.json(_search("2", query="?q=zurich&user=https%3A%2F%2Fx.org%2Fu&date="))
    assert ignored["ignored"] == ["user"] and "user=" not in ignored["id"]
    listed = site.json(
        _search("1", query="?q=zurich&date=2020-01-01T00:00:00Z/2021-01-01T00:00:00Z")
    )
    assert listed["within"]["ignored"] == ["date"]
    assert site.json(_search("1", query="?q=zurich&motivation=sc:painting"))["within"]["total"] == 4


def test_autocomplete_with_min(site: Site) -> None:
    page = site.json(_search("2", query="?q=Zu", tail="/autocomplete"))
    assert page["@context"] == "http://iiif.io/api/search/2/context.json"
    assert page["type"] == "TermPage"
    # each term as the text writes it most often (Zürich three times, ZÜRICH once)
    assert page["items"] == [{"value": "Zürich", "total": 4}, {"value": "Zürichsee", "total": 1}]
    fewer = site.json(_search("2", query="?q=zu&min=2", tail="/autocomplete"))
    assert fewer["items"] == [{"value": "Zürich", "total": 4}]
    listed = site.json(_search("1", query="?q=har", tail="/autocomplete"))
    assert listed["@type"] == "search:TermList"
    [term] = listed["terms"]
    assert term["match"] == "harbour" and term["count"] == 2
    url = urlsplit(term["url"])
    assert site.json(f"{url.path}?{url.query}")["within"]["total"] == 2
    [written] = site.json(_search("1", query="?q=z%C3%BCrichs", tail="/autocomplete"))["terms"]
    assert written["match"] == "Zürichsee"
    url = urlsplit(written["url"])  # its search finds it (q is folded)
    assert site.json(f"{url.path}?{url.query}")["within"]["total"] == 1
    for query in ("", "?q=", "?q=%20"):  # q MUST be present
        answer = site.get(_search("2", query=query, tail="/autocomplete"))
        assert answer.status == 400 and "q" in answer.text


# --- the text of canvases and of the object ------------------------------------------------------


def test_canvas_text_annotations_and_ocr_files(site: Site) -> None:
    page = site.json(f"/iiif/text/{BOOK}/1/3")
    assert page["type"] == "AnnotationPage"
    assert [item["body"]["value"] for item in page["items"]] == [
        "Zürich lake", "A bird in the hand", "is worth",
    ]  # fmt: skip
    assert {item["motivation"] for item in page["items"]} == {"supplementing"}
    canvas = f"{site.base()}/presentation/3/{BOOK}/canvas/1"
    assert page["items"][0]["target"] == f"{canvas}#xywh=100,200,280,30"
    listed = site.json(f"/iiif/text/{BOOK}/3/2")
    assert listed["@type"] == "sc:AnnotationList"
    assert listed["resources"][0]["on"] == (
        f"{site.base()}/presentation/2/{BOOK}/canvas/3#xywh=50,50,350,25"
    )
    plain = site.json(f"/iiif/text/{BOOK}/4/3")
    assert plain["items"][0]["target"] == f"{site.base()}/presentation/3/{BOOK}/canvas/4"
    hocr = site.get(f"/iiif/text/{BOOK}/3/ocr")
    assert hocr.status == 200
    assert hocr.body == (site.folder / "conf" / "ocr" / "p3.hocr").read_bytes()
    assert hocr.header("Content-Type") == "text/vnd.hocr+html"
    assert hocr.header("X-Content-Type-Options") == "nosniff"
    assert hocr.header("Content-Security-Policy") == "sandbox; default-src 'none'"
    alto = site.get(f"/iiif/text/{BOOK}/2/ocr")
    assert alto.header("Content-Type") == "application/xml"
    assert site.get(f"/iiif/text/{BOOK}/4/ocr").header("Content-Type") == (
        "text/plain; charset=utf-8"
    )
    wide = site.get(f"/iiif/text/{WIDE}/1/ocr")
    assert wide.header("Content-Type") == "text/plain; charset=utf-16"
    assert wide.body.decode("utf-16") == "Zürich is on the lake\n"
    assert site.json(_search("2", WIDE, "?q=zurich"))["partOf"]["total"] == 1
    for tail in ("5/3", "5/ocr", "6/3", "0/3", "1/4", "x/3", "01/3"):
        assert site.get(f"/iiif/text/{BOOK}/{tail}").status == 404, tail


def test_plain_text_of_an_object(site: Site) -> None:
    answer = site.get(f"/iiif/text/{BOOK}/plain")
    assert answer.status == 200
    assert answer.header("Content-Type") == "text/plain; charset=utf-8"
    pages = answer.text.split("\n\f\n")
    assert len(pages) == 5
    assert pages[0] == "Zürich lake\nA bird in the hand\nis worth"
    assert pages[3] == "Zürich is on the lake"
    assert pages[4] == "\n"  # the canvas without text


# --- objects without text, restricted objects ----------------------------------------------------


def test_an_object_without_text_has_no_search(site: Site) -> None:
    for path in (_search("2", BARE, "?q=x"), _search("1", BARE, "?q=x"),
                 _search("2", BARE, "?q=x", "/autocomplete"), f"/iiif/text/{BARE}/plain",
                 f"/iiif/text/{BARE}/1/3", _search("2", "no-such-object", "?q=x")):  # fmt: skip
        answer = site.get(path)
        assert answer.status == 404, (path, answer.status)
    manifest = site.json(f"/iiif/presentation/3/{BARE}/manifest")
    assert "search" not in json.dumps(manifest.get("service", []))


def test_a_restricted_object_needs_a_login_for_its_text(site: Site) -> None:
    paths = [
        _search("2", SECRET, "?q=zurich"),
        _search("1", SECRET, "?q=zurich"),
        _search("1", SECRET, "?q=zu", "/autocomplete"),
        f"/iiif/text/{SECRET}/plain",
        f"/iiif/text/{SECRET}/1/ocr",
        f"/iiif/text/{SECRET}/1/3",
    ]
    for path in paths:
        refused = site.get(path)
        assert refused.status == 401, (path, refused.status)
        assert refused.header("Cache-Control") == "no-store"
        assert "zurich" not in refused.text.lower() and "restricted" in refused.text
        allowed = site.get(path, login=True)
        assert allowed.status == 200, (path, allowed.status, allowed.text)
        assert (allowed.header("Cache-Control") or "").startswith("private")
        assert "Cookie" in (allowed.header("Vary") or "")
    doc = json.loads(site.get(_search("2", SECRET, "?q=zurich"), login=True).body)
    assert doc["partOf"]["total"] == 1
    lines = log_lines(site.folder / "conf" / "audit.log", f'"identifier": "{SECRET}"')
    assert '"refused"' in lines[0] and '"policy": "staff"' in lines[0]  # (repeats left out)
    public = site.get(_search("2", query="?q=zurich"))
    assert (public.header("Cache-Control") or "").startswith("public")


# --- whatever a client sends --------------------------------------------------------------------


@pytest.mark.parametrize(
    ("query", "status"),
    [
        ("?q=" + "a" * 10_000, None),  # longer than a request line or than q may be: a 4xx
        ("?q=" + "ab%20" * 400, 400),  # 1,200 characters
        ("?q=%22NEAR(", 200),
        ("?q=NEAR(zurich%2C+lake)", 200),
        ("?q=%27%3B+DROP+TABLE+x%3B+--", 200),
        ("?q=zurich%27+OR+%271%27%3D%271", 200),
        ("?q=%00", 400),  # nothing to search for
        ("?q=zurich%00", 200),
        ("?q=%FF%FE", 400),  # not UTF-8
        ("?q=***", 400),
        ("?q=%22", 400),  # nothing to search for
        ("?q=z*", 200),
        ("?q=-zurich", 200),
        ("?q=zurich&page=0", 400),
        ("?q=zurich&page=-1", 400),
        ("?q=zurich&page=abc", 400),
        ("?q=zurich&page=1.5", 400),
        ("?q=zurich&page=99999999999999999999", 400),
        ("?q=zurich&page=999999", 404),
        ("?q=zurich&page=", 400),
        ("?q=a&q=b", 200),
        ("?" + "&".join(f"p{i}=1" for i in range(100)), 400),
    ],
)
def test_any_query_is_answered_clearly(site: Site, query: str, status: int | None) -> None:
    for api in ("2", "1"):
        answer = site.get(_search(api, query=query))
        if status is None:
            assert 400 <= answer.status < 500, answer.status
        else:
            assert answer.status == status, (api, query[:80], answer.status, answer.text)
        if answer.status >= 400:
            assert answer.text.strip() and "Traceback" not in answer.text


@pytest.mark.parametrize(
    ("query", "status"),
    [
        ("?q=zu&min=abc", 400),
        ("?q=zu&min=-1", 400),
        ("?q=zu&min=0", 200),
        ("?q=zu&min=99999999", 200),
        ("?q=zu&min=999999999999", 400),
        ("?q=%22NEAR(", 200),
        ("?q=%25", 200),
        ("?q=%27%3B+DROP+TABLE+x%3B+--", 200),
        ("?q=" + "z" * 1001, 400),
    ],
)
def test_any_autocomplete_is_answered_clearly(site: Site, query: str, status: int) -> None:
    for api in ("2", "1"):
        answer = site.get(_search(api, query=query, tail="/autocomplete"))
        assert answer.status == status, (api, query[:80], answer.status, answer.text)


def test_random_queries_are_never_a_server_error(site: Site) -> None:
    """Queries made of what search syntaxes give meaning to (FTS5, tsquery, SQL, regex),
    letters with marks, controls and NULs: each a 200 or a 400, on both APIs and autocomplete."""
    pieces = [*"\"*^():-+|&!~';\\%_<>{}[]", "NEAR", "OR", "AND", "NOT", "$1"]
    pieces += ["zurich", "zü", "harbour", "\x00", "\t", "\n", "\u0301", "ß", "ﬁ", "字"]
    pieces += ["🙂", " ", "  "]
    chooser = random.Random(18)
    for _ in range(60):
        q = "".join(chooser.choice(pieces) for _ in range(chooser.randint(1, 12)))
        encoded = quote(q, safe="")
        for path in (_search("2", query=f"?q={encoded}"), _search("1", query=f"?q={encoded}"),
                     _search("2", query=f"?q={encoded}", tail="/autocomplete")):  # fmt: skip
            answer = site.get(path)
            assert answer.status in (200, 400), (q, path, answer.status, answer.text)
            if answer.status == 200:
                json.loads(answer.body)


def test_urls_that_are_not_search_urls(site: Site) -> None:
    for path in ("/iiif/search/3/srch-book?q=x", "/iiif/search/2/", "/iiif/search/2/srch-book/x",
                 "/iiif/search/2/srch-book/manifest3", "/iiif/text/srch-book",
                 "/iiif/text/srch-book/1", "/iiif/search/2/%FF", "/iiif/text/srch-book/1/ocr/x",
                 "/iiif/search/2/" + "a" * 2000):  # fmt: skip
        answer = site.get(path)
        assert answer.status in (400, 404), (path, answer.status)


# --- HTTP --------------------------------------------------------------------------------------


def test_http_like_the_presentation_api(site: Site) -> None:
    path = _search("2", query="?q=zurich")
    first = site.get(path)
    assert first.header("Content-Type") == LD2
    assert first.header("Access-Control-Allow-Origin") == "*"
    assert first.header("Vary") == "Accept, Accept-Encoding"
    etag = first.header("ETag")
    assert etag
    again = site.get(path, headers={"If-None-Match": etag})
    assert again.status == 304 and not again.body
    zipped = site.get(path, headers={"Accept-Encoding": "gzip"})
    assert zipped.header("Content-Encoding") == "gzip"
    assert json.loads(gzip.decompress(zipped.body)) == json.loads(first.body)
    head = send(site.shim.port, path, method="HEAD")
    assert head.status == 200 and not head.body and head.header("ETag") == etag
    assert (
        site.get(path, headers={"Accept": "application/json"}).header("Content-Type")
        == "application/json"
    )
    one = _search("1", query="?q=zurich")
    assert site.get(one).header("Content-Type") == "application/json"
    assert site.get(one, headers={"Accept": "application/ld+json"}).header("Content-Type") == LD1
    text = site.get(f"/iiif/text/{BOOK}/1/3")
    assert text.header("Content-Type") == (
        'application/ld+json;profile="http://iiif.io/api/presentation/3/context.json"'
    )
    assert site.get(f"/iiif/text/{BOOK}/1/2").header("Content-Type") == "application/json"
    ocr = site.get(f"/iiif/text/{BOOK}/1/ocr")
    tag = ocr.header("ETag")
    assert (
        tag and site.get(f"/iiif/text/{BOOK}/1/ocr", headers={"If-None-Match": tag}).status == 304
    )
