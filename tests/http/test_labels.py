"""Labels, languages and dates over real sockets: a CSV catalogue's display labels (one, or
one per language) in the 3.0 and 2.1 manifests and on the object page, and a year-only date
shown as the year while navDate stays a valid xsd:dateTime."""

from __future__ import annotations

import json
from collections.abc import Iterator
from typing import Any

import pytest
from PIL import Image

from tests.inprocess import InProcessShim
from tests.presentation_checks import check_v2, check_v3
from tests.support import write_config


@pytest.fixture(scope="module")
def shim(tmp_path_factory: pytest.TempPathFactory) -> Iterator[InProcessShim]:
    tmp = tmp_path_factory.mktemp("labels")
    (tmp / "objects").mkdir()
    Image.new("RGB", (300, 200), (200, 30, 40)).save(tmp / "objects" / "p1.jpg")
    (tmp / "catalogue.csv").write_text(
        "obj,image,title,year,extent,creator\n"
        "book,p1,The book,1887,3 pages,A. Printer\n"
        "letter,p1,A letter,1887-05,1 leaf,\n"
        "diary,p1,A diary,1887-05-17,,\n",
        encoding="utf-8",
    )
    config = write_config(
        tmp / "shim.yaml",
        f"""
        backends:
          objects: {{type: files, root: "{tmp / "objects"}"}}
        routes:
          - {{backend: objects}}
        presentation:
          language: de
          sources:
            catalogue:
              type: csv
              path: catalogue.csv
              columns:
                object: obj
                image: image
                label: title
                nav_date: year
                metadata:
                  - creator
                  - {{column: extent, label: Umfang}}
                  - {{column: year, label: {{en: Date, fr: Date, de: Datum}}}}
        """,
    )
    served = InProcessShim(config)
    yield served
    served.stop()


def _json(shim: InProcessShim, path: str) -> dict[str, Any]:
    resp = shim.get(path)
    assert resp.status == 200, resp.text
    doc: dict[str, Any] = json.loads(resp.body)
    return doc


@pytest.mark.parametrize(
    ("name", "shown", "nav"),
    [
        ("book", "1887", "1887-01-01T00:00:00Z"),
        ("letter", "1887-05", "1887-05-01T00:00:00Z"),
        ("diary", "1887-05-17", "1887-05-17T00:00:00Z"),
    ],
)
def test_a_date_is_shown_at_the_catalogues_precision(
    shim: InProcessShim, name: str, shown: str, nav: str
) -> None:
    page = shim.get(f"/objects/{name}").text
    assert f"<th>Date</th><td>{shown}</td>" in page, page
    if shown != nav[:10]:
        assert nav[:10] not in page  # no invented month or day
    for version, check in (("3", check_v3), ("2", check_v2)):
        doc = _json(shim, f"/iiif/presentation/{version}/{name}/manifest")
        assert check(doc) == []
        assert doc["navDate"] == nav


def test_labels_in_several_languages_reach_both_manifests_and_the_page(
    shim: InProcessShim,
) -> None:
    doc = _json(shim, "/iiif/presentation/3/book/manifest")
    assert doc["metadata"] == [
        {"label": {"de": ["creator"]}, "value": {"de": ["A. Printer"]}},  # as before
        {"label": {"de": ["Umfang"]}, "value": {"de": ["3 pages"]}},
        {"label": {"en": ["Date"], "fr": ["Date"], "de": ["Datum"]}, "value": {"de": ["1887"]}},
    ]
    doc2 = _json(shim, "/iiif/presentation/2/book/manifest")
    assert doc2["metadata"] == [
        {"label": "creator", "value": "A. Printer"},
        {"label": "Umfang", "value": "3 pages"},
        {
            "label": [
                {"@value": "Date", "@language": "en"},
                {"@value": "Date", "@language": "fr"},
                {"@value": "Datum", "@language": "de"},
            ],
            "value": "1887",
        },
    ]
    page = shim.get("/objects/book").text
    assert "<th>Umfang</th><td>3 pages</td>" in page
    assert "<th>Datum</th><td>1887</td>" in page  # the configured language's label
