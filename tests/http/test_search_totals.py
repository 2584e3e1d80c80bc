"""Search results over a real shim (the server process), on SQLite and on PostgreSQL, for a
word on every line of a book: the number of hits is all of them, however many (a search
counts them all and makes only the page of them asked for), every page of results to the
last is there, with the right ``startIndex``, and the one past it is a 404."""

from __future__ import annotations

import json
from collections.abc import Iterator
from typing import Any

import pytest
from PIL import Image

from tests import ocr_files
from tests.support import Process, start_shim

PAGES = 3
ROWS, COLUMNS = 50, 80  # words "the" on each page: 4,000, so 12,000 in the book
TOTAL = PAGES * ROWS * COLUMNS
SIZE = 50  # search.page_size


@pytest.fixture(scope="module", params=["sqlite", "postgres"])
def shim(
    request: pytest.FixtureRequest, tmp_path_factory: pytest.TempPathFactory
) -> Iterator[Process]:
    tmp = tmp_path_factory.mktemp(f"totals-{request.param}")
    (tmp / "images").mkdir()
    (tmp / "ocr").mkdir()
    Image.new("RGB", (800, 1000), (220, 220, 220)).save(tmp / "images" / "page.png")
    rows = ["object,image,text"]
    for p in range(1, PAGES + 1):
        words: list[list[ocr_files.WordSpec]] = [
            [("the", (c * 20, r * 40, 18, 30)) for c in range(COLUMNS)] for r in range(ROWS)
        ]
        words[0][0] = (f"page{p}", (0, 0, 18, 30))  # each page's first word its own
        (tmp / "ocr" / f"p{p}.xml").write_bytes(ocr_files.alto(words, (1600, 2000)))
        rows.append(f"book,page,ocr/p{p}.xml")
    (tmp / "objects.csv").write_text("\n".join(rows) + "\n")
    if request.param == "postgres":
        from tests.postgres import new_database

        search = f"postgres: '{new_database(request.getfixturevalue('postgres_dsn'))}'"
    else:
        search = "folder: index"
    config = ocr_files.catalogue_config(tmp, f"{{{search}, page_size: {SIZE}}}")
    process = start_shim(config, tmp)
    yield process
    process.stop()


def get(shim: Process, path: str) -> Any:
    answer = shim.get(path, timeout=120)
    assert answer.status == 200, (path, answer.status, answer.text)
    return json.loads(answer.body)


def test_every_hit_is_counted_and_every_page_of_them_is_there(shim: Process) -> None:
    first = get(shim, "/iiif/search/1/book?q=the")
    assert first["within"]["total"] == TOTAL - PAGES
    assert len(first["hits"]) == SIZE
    assert first["hits"][0]["match"] == "the" and first["hits"][0]["before"].startswith("page1 ")
    last_page = -(-(TOTAL - PAGES) // SIZE)
    assert first["within"]["last"].endswith(f"page={last_page}")
    last = get(shim, f"/iiif/search/1/book?q=the&page={last_page}")
    assert last["startIndex"] == (last_page - 1) * SIZE
    assert len(last["hits"]) == (TOTAL - PAGES) - (last_page - 1) * SIZE
    assert last["resources"][-1]["on"].split("#")[0].endswith("/canvas/3")
    assert shim.get(f"/iiif/search/1/book?q=the&page={last_page + 1}").status == 404
    middle = get(shim, "/iiif/search/2/book?q=the&page=100")
    assert middle["partOf"]["total"] == TOTAL - PAGES  # (annotations: one line each)
    assert middle["startIndex"] == 99 * SIZE
    assert len(middle["items"]) == SIZE


def test_every_line_is_a_hit_of_no_q(shim: Process) -> None:
    everything = get(shim, "/iiif/search/1/book")
    assert everything["within"]["total"] == PAGES * ROWS
    assert everything["hits"][0]["match"].startswith("page1 the the")
