"""Manifests of objects with text, over a real socket: Search 2.0 and 1.0 services (each with
its autocomplete) in 3.0, Search 1.0 as its specification writes it in 2.1, each canvas with
text pointing at its OCR file (``seeAlso``, with its format and profile) and at its lines
(``annotations`` / ``otherContent``), the whole text as a ``rendering`` (with the PDF's probe
when the object is restricted); documents valid by the suite's checks (3.0 rules, iiif-prezi
for 2.1). An object without text keeps the documents it had."""

from __future__ import annotations

import json
from collections.abc import Iterator
from typing import Any

import pytest
from PIL import Image

from tests import ocr_files
from tests.inprocess import InProcessShim
from tests.presentation_checks import CONTEXT_2, CONTEXT_3, check_v2, check_v3
from tests.support import write_config

SEARCH_2 = "http://iiif.io/api/search/2/context.json"
SEARCH_1 = "http://iiif.io/api/search/1/context.json"
AUTH_2 = "http://iiif.io/api/auth/2/context.json"
ALTO_PROFILE = "http://www.loc.gov/standards/alto/"
HOCR_PROFILE = "http://kba.github.io/hocr-spec/1.2/"
WORDS = [[("Zürich", (10, 20, 100, 30))]]


@pytest.fixture(scope="module")
def shim(tmp_path_factory: pytest.TempPathFactory) -> Iterator[InProcessShim]:
    tmp = tmp_path_factory.mktemp("search-manifests")
    root = tmp / "objects"
    (root / "book").mkdir(parents=True)
    for stem in ("p1", "p2", "p3", "p4"):
        Image.new("RGB", (1200, 1600), (200, 30, 40)).save(root / "book" / f"{stem}.jpg")
    (root / "book" / "p1.xml").write_bytes(ocr_files.alto(WORDS, (2400, 3200)))
    (root / "book" / "p2.hocr").write_bytes(ocr_files.hocr(WORDS))
    (root / "book" / "p3.txt").write_bytes(ocr_files.plain([["Zürich"]]))
    (root / "book" / "object.yaml").write_text("label: A book\nbehavior: paged\n")
    (root / "plain").mkdir()
    Image.new("RGB", (400, 300), (30, 160, 60)).save(root / "plain" / "1.jpg")
    (tmp / "ocr").mkdir()
    (tmp / "ocr" / "letter.txt").write_bytes(ocr_files.plain([["Dear", "Basel"]]))
    (tmp / "catalogue.csv").write_text(
        "obj,image_id,ocr,access\nletter,plain/1,ocr/letter.txt,terms\n", encoding="utf-8"
    )
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
        auth:
          secret: k7Qm2vX9pL4sT8wZ1yB6nR3cF5hJ0dG2aE7uK9xM4qV1
          policies:
            terms: {{kind: clickthrough, label: Terms of use, heading: Restricted material,
                     note: For research only., confirm_label: I agree}}
        presentation:
          language: en
          sources:
            scans: {{type: folder, backend: objects}}
            catalogue:
              type: csv
              path: catalogue.csv
              columns: {{object: obj, image: image_id, text: ocr, access: access}}
    """,
    )
    served = InProcessShim(config)
    yield served
    served.stop()


def _doc(shim: InProcessShim, path: str) -> dict[str, Any]:
    resp = shim.get(path)
    assert resp.status == 200, resp.text
    doc: dict[str, Any] = json.loads(resp.body)
    return doc


def test_a_3_manifest_with_text_declares_both_searches_and_each_canvas_text(
    shim: InProcessShim,
) -> None:
    doc = _doc(shim, "/iiif/presentation/3/book/manifest")
    assert check_v3(doc) == []
    base = f"http://127.0.0.1:{shim.port}/iiif"
    assert doc["@context"] == [SEARCH_2, CONTEXT_3]  # extensions first, Presentation last
    assert doc["service"] == [
        {
            "id": f"{base}/search/2/book",
            "type": "SearchService2",
            "service": [
                {"id": f"{base}/search/2/book/autocomplete", "type": "AutoCompleteService2"}
            ],
        },
        {
            "@id": f"{base}/search/1/book",
            "@type": "SearchService1",
            "profile": "http://iiif.io/api/search/1/search",
            "service": [
                {
                    "@id": f"{base}/search/1/book/autocomplete",
                    "@type": "AutoCompleteService1",
                    "profile": "http://iiif.io/api/search/1/autocomplete",
                }
            ],
        },
    ]
    assert doc["rendering"][1:] == [
        {"id": f"{base}/text/book/plain", "type": "Text", "label": {"en": ["Text"]},
         "format": "text/plain"}
    ]  # fmt: skip
    assert doc["rendering"][0]["format"] == "application/pdf"
    canvases = doc["items"]
    assert [c["id"] for c in canvases] == [
        f"{base}/presentation/3/book/canvas/{n}" for n in (1, 2, 3, 4)
    ]
    assert [c.get("seeAlso") for c in canvases] == [
        [{"id": f"{base}/text/book/1/ocr", "type": "Dataset", "label": {"en": ["ALTO"]},
          "format": "application/xml", "profile": ALTO_PROFILE}],
        [{"id": f"{base}/text/book/2/ocr", "type": "Dataset", "label": {"en": ["hOCR"]},
          "format": "text/vnd.hocr+html", "profile": HOCR_PROFILE}],
        [{"id": f"{base}/text/book/3/ocr", "type": "Dataset", "label": {"en": ["Text"]},
          "format": "text/plain"}],
        None,
    ]  # fmt: skip
    assert [c.get("annotations") for c in canvases] == [
        [{"id": f"{base}/text/book/{n}/3", "type": "AnnotationPage"}] for n in (1, 2, 3)
    ] + [None]


def test_a_2_manifest_with_text_declares_search_1_and_each_canvas_text(
    shim: InProcessShim,
) -> None:
    doc = _doc(shim, "/iiif/presentation/2/book/manifest")
    assert check_v2(doc) == []
    base = f"http://127.0.0.1:{shim.port}/iiif"
    assert doc["@context"] == CONTEXT_2
    assert doc["service"] == [
        {
            "@context": SEARCH_1,
            "@id": f"{base}/search/1/book/manifest2",
            "profile": "http://iiif.io/api/search/1/search",
            "service": {
                "@id": f"{base}/search/1/book/manifest2/autocomplete",
                "profile": "http://iiif.io/api/search/1/autocomplete",
            },
        }
    ]
    assert doc["rendering"][0]["format"] == "application/pdf"
    assert doc["rendering"][1] == {
        "@id": f"{base}/text/book/plain",
        "label": "Text",
        "format": "text/plain",
    }
    canvases = doc["sequences"][0]["canvases"]
    assert [c["@id"] for c in canvases] == [
        f"{base}/presentation/2/book/canvas/{n}" for n in (1, 2, 3, 4)
    ]
    assert canvases[0]["seeAlso"] == {
        "@id": f"{base}/text/book/1/ocr",
        "label": "ALTO",
        "format": "application/xml",
        "profile": ALTO_PROFILE,
    }
    assert canvases[2]["seeAlso"] == {
        "@id": f"{base}/text/book/3/ocr",
        "label": "Text",
        "format": "text/plain",
    }
    assert [c.get("otherContent") for c in canvases] == [
        [{"@id": f"{base}/text/book/{n}/2", "@type": "sc:AnnotationList"}] for n in (1, 2, 3)
    ] + [None]
    assert "seeAlso" not in canvases[3]


def test_an_object_without_text_has_none_of_it(shim: InProcessShim) -> None:
    doc = _doc(shim, "/iiif/presentation/3/plain/manifest")
    assert check_v3(doc) == []
    assert doc["@context"] == CONTEXT_3
    assert "service" not in doc
    assert [r["format"] for r in doc["rendering"]] == ["application/pdf"]
    assert not {"seeAlso", "annotations"} & set(doc["items"][0])
    doc2 = _doc(shim, "/iiif/presentation/2/plain/manifest")
    assert check_v2(doc2) == []
    assert "service" not in doc2 and doc2["rendering"]["format"] == "application/pdf"
    canvas = doc2["sequences"][0]["canvases"][0]
    assert not {"seeAlso", "otherContent"} & set(canvas)


def test_a_restricted_object_offers_its_text_as_its_pdf(shim: InProcessShim) -> None:
    doc = _doc(shim, "/iiif/presentation/3/letter/manifest")
    assert check_v3(doc) == []
    base = f"http://127.0.0.1:{shim.port}"
    assert doc["@context"] == [AUTH_2, SEARCH_2, CONTEXT_3]  # auth first, Presentation last
    pdf, text = doc["rendering"]
    assert text["id"] == f"{base}/iiif/text/letter/plain"
    assert text["service"] == pdf["service"]  # what its PDF needs, the same probe
    assert text["service"][0]["id"] == f"{base}/auth/probe/pdf/letter"
    assert [s.get("type", s.get("@type")) for s in doc["service"]] == [
        "SearchService2",
        "SearchService1",
    ]
    doc2 = _doc(shim, "/iiif/presentation/2/letter/manifest")
    assert check_v2(doc2) == []
    assert doc2["rendering"][1]["service"] == doc2["rendering"][0]["service"]


def test_the_page_of_a_restricted_object_with_text_says_its_text_needs_the_login(
    shim: InProcessShim,
) -> None:
    """The object's own access guards its PDF, its text and its search: its page says so."""
    page = shim.get("/objects/letter").text
    assert "the PDF, the text and its search are restricted" in page
    assert "Log in to get them" in page and "to get the PDF" not in page


def test_the_object_page_says_the_text_can_be_searched(shim: InProcessShim) -> None:
    page = shim.get("/objects/book")
    assert page.status == 200
    assert f'href="http://127.0.0.1:{shim.port}/iiif/text/book/plain">Text</a>' in page.text
    assert "<p class=search>Search inside:" in page.text
    plain = shim.get("/objects/plain")
    assert plain.status == 200
    assert "/text/plain" not in plain.text and "Search inside" not in plain.text


def test_an_export_declares_no_search_nor_text_it_does_not_hold() -> None:
    from iiif_shim.export.documents import Level0Builder
    from iiif_shim.iiif.profile import Version
    from iiif_shim.presentation.documents import Picture, Urls
    from iiif_shim.presentation.records import TextRef, build_record
    from iiif_shim.presentation.settings import PresentationSettings

    record = build_record(
        "book", "scans", {}, [{"image": "book/p1", "text": TextRef("book/p1.xml", "alto")}]
    )
    pictures = [Picture("book/p1", 1200, 1600, (1200, 1600), (150, 200))]
    builder = Level0Builder(
        PresentationSettings(), Urls("https://x.org", "https://x.org/iiif"), "All",
        (Version.V3, Version.V2),
    )  # fmt: skip
    doc = builder.exported_manifest(Version.V3, record, pictures)
    assert check_v3(doc) == []
    assert doc["@context"] == CONTEXT_3 and "service" not in doc
    assert not {"seeAlso", "annotations"} & set(doc["items"][0])
    doc2 = builder.exported_manifest(Version.V2, record, pictures)
    assert check_v2(doc2) == []
    assert "service" not in doc2
    assert not {"seeAlso", "otherContent"} & set(doc2["sequences"][0]["canvases"][0])
