"""The search service against a real SQLite index and a real CSV source over real files:
indexing on demand (single-flight, ``build_wait`` then 503 with ``Retry-After``), what is read
again and what is not (stamps), refused files remembered, canvases removed, background looks
(``recheck``), hits with boxes scaled to the canvas, terms, a canvas's OCR file as it is."""

from __future__ import annotations

import asyncio
import os
import time
from collections.abc import AsyncIterator, Callable, Coroutine
from contextlib import asynccontextmanager
from pathlib import Path
from typing import Any, TypeVar

import pytest
from PIL import Image

from iiif_shim.base.errors import NotFound, ShimError
from iiif_shim.config.settings import Settings, parse_settings
from iiif_shim.core.service import open_service
from iiif_shim.model.text import Hit, Query
from iiif_shim.presentation.service import PresentationService, open_presentation
from iiif_shim.search import ocr, words
from iiif_shim.search import service as service_module
from iiif_shim.search.index import StoredPage, open_index
from iiif_shim.search.service import IndexBuilding, SearchService, open_search
from iiif_shim.telemetry.metrics import Metrics
from tests import ocr_files

T = TypeVar("T")
CANVAS = (400, 300)  # the canvases' size (the images')
PAGE = (800, 600)  # the OCR pages' size (pixels): boxes are halved on the canvas


def run(coro: Coroutine[Any, Any, T]) -> T:
    return asyncio.run(coro)


def _alto(*lines: list[tuple[str, tuple[float, float, float, float]]]) -> bytes:
    return ocr_files.alto(list(lines), PAGE)


PAGES = {
    "p1.xml": _alto([("Zürich", (100, 100, 200, 40)), ("harbour", (320, 100, 160, 40))]),
    "p2.hocr": ocr_files.hocr([[("second", (40, 60, 120, 20)), ("page", (180, 60, 80, 20))]], PAGE),
    "p3.txt": ocr_files.plain([["plain", "words", "here"]]),
}


def catalogue(tmp: Path, pages: dict[str, bytes] | None = None, rows: str = "") -> Path:
    """Images, OCR files and a CSV of object ``book`` (three canvases with text) and
    ``bare`` (none): the folder of the configuration."""
    images = tmp / "images"
    images.mkdir(parents=True, exist_ok=True)
    for name in ("p1", "p2", "p3"):
        Image.new("RGB", CANVAS, (200, 200, 200)).save(images / f"{name}.png")
    (tmp / "ocr").mkdir(exist_ok=True)
    for name, data in (PAGES if pages is None else pages).items():
        (tmp / "ocr" / name).write_bytes(data)
    (tmp / "objects.csv").write_text(
        "object,image,text\n"
        "book,p1,ocr/p1.xml\n"
        "book,p2,ocr/p2.hocr\n"
        "book,p3,ocr/p3.txt\n"
        "bare,p1,\n" + rows
    )
    return tmp


def settings_of(folder: Path, **search: Any) -> Settings:
    config = {
        "backends": {"local": {"type": "files", "root": "images"}},
        "routes": [{"backend": "local"}],
        "presentation": {
            "sources": {
                "catalogue": {
                    "type": "csv",
                    "path": "objects.csv",
                    "columns": {"object": "object", "image": "image", "text": "text"},
                }
            }
        },
        "search": {"folder": "index", **search},
    }
    return parse_settings(config, folder)


@asynccontextmanager
async def services(
    settings: Settings, metrics: Metrics | None = None
) -> AsyncIterator[tuple[PresentationService, SearchService]]:
    async with (
        open_service(settings.service(), metrics=metrics) as images,
        open_presentation(settings.presentation, images, watch=False) as presentation,
        open_search(settings.search, presentation, settings.origin) as search,
    ):
        yield presentation, search


def count_reads(presentation: PresentationService) -> list[str]:
    """The text files the catalogue source reads from now on (its own reads, counted)."""
    source = presentation.sources["catalogue"]
    reads: list[str] = []
    real = source.read_text

    async def counted(ref: Any, limit: int) -> Any:
        reads.append(ref.where)
        return await real(ref, limit)

    source.read_text = counted  # type: ignore[method-assign]
    return reads


async def eventually(check: Callable[[], Coroutine[Any, Any, bool]], what: str) -> None:
    """Wait (polling every 20 ms, within 30 s) until ``check`` holds."""
    deadline = time.monotonic() + 30
    while not await check():
        if time.monotonic() > deadline:
            pytest.fail(f"not {what} after 30s")
        await asyncio.sleep(0.02)


def q(text: str) -> Query:
    return words.parse_query(text)


def test_first_search_indexes_the_object_and_boxes_are_on_the_canvas(tmp_path: Path) -> None:
    folder = catalogue(tmp_path)

    async def check() -> None:
        async with services(settings_of(folder)) as (_, search):
            record = await search.record("book")
            hits = await search.hits(record, q("zurich"))
            assert [(h.canvas, h.match) for h in hits] == [(0, "Zürich")]
            (span,) = hits[0].spans
            assert span.box == (50, 50, 100, 20)  # 800x600 page on a 400x300 canvas
            hocr = await search.hits(record, q("page"))
            assert [(h.canvas, h.spans[0].box) for h in hocr] == [(1, (90, 30, 40, 10))]
            (plain,) = await search.hits(record, q("words"))
            assert plain.canvas == 2 and plain.spans[0].box is None  # the whole canvas
            assert await search.hits(record, q("absent")) == []
            everything = await search.hits(record, Query())
            assert [h.canvas for h in everything] == [0, 1, 2]  # each line of each page

    run(check())


def test_an_object_without_text_is_not_searchable(tmp_path: Path) -> None:
    folder = catalogue(tmp_path)

    async def check() -> None:
        async with services(settings_of(folder)) as (_, search):
            with pytest.raises(NotFound, match="has no text"):
                await search.record("bare")
            with pytest.raises(NotFound):
                await search.record("nothing-of-that-name")

    run(check())


def test_two_searches_of_a_fresh_object_build_it_once(tmp_path: Path) -> None:
    folder = catalogue(tmp_path)

    async def check() -> None:
        async with services(settings_of(folder)) as (presentation, search):
            reads = count_reads(presentation)
            record = await search.record("book")
            first, second = await asyncio.gather(
                search.hits(record, q("zurich")), search.hits(record, q("second"))
            )
            assert [h.canvas for h in first] == [0] and [h.canvas for h in second] == [1]
            assert sorted(reads) == ["ocr/p1.xml", "ocr/p2.hocr", "ocr/p3.txt"]

    run(check())


def test_past_build_wait_a_search_gets_503_and_the_build_goes_on(tmp_path: Path) -> None:
    folder = catalogue(tmp_path)

    async def check() -> None:
        async with services(settings_of(folder, build_wait=0)) as (presentation, search):
            reads = count_reads(presentation)
            record = await search.record("book")
            with pytest.raises(IndexBuilding) as refused:
                await search.hits(record, q("zurich"))
            assert refused.value.status == 503
            assert refused.value.retry_after is not None and refused.value.retry_after >= 1
            assert "being indexed" in refused.value.public_text()

            async def answered() -> bool:
                try:
                    return len(await search.hits(record, q("zurich"))) == 1
                except IndexBuilding:
                    return False

            await eventually(answered, "answered once the build is done")
            assert len(reads) == 3  # one build, though asked twice or more

    run(check())


def test_only_changed_files_are_read_again(tmp_path: Path) -> None:
    folder = catalogue(tmp_path)

    async def check() -> None:
        async with services(settings_of(folder)) as (presentation, search):
            record = await search.record("book")
            first = await search.index_object(record)
            assert (first.pages, first.skipped, first.refused, first.removed) == (3, 0, (), 0)
            reads = count_reads(presentation)
            again = await search.index_object(record)
            assert (again.pages, again.skipped, reads) == (0, 3, [])
            changed = _alto([("Geneva", (100, 100, 200, 40))])
            (folder / "ocr" / "p1.xml").write_bytes(changed)
            third = await search.index_object(record)
            assert (third.pages, third.skipped, reads) == (1, 2, ["ocr/p1.xml"])
            assert await search.hits(record, q("zurich")) == []
            assert [h.match for h in await search.hits(record, q("geneva"))] == ["Geneva"]
            forced = await search.index_object(record, force=True)
            assert forced.pages == 3 and len(reads) == 4

    run(check())


def test_a_refused_file_leaves_its_page_without_text_and_is_not_read_again(
    tmp_path: Path, caplog: pytest.LogCaptureFixture
) -> None:
    pages = dict(PAGES, **{"p2.hocr": ocr_files.billion_laughs("hocr")})
    folder = catalogue(tmp_path, pages)
    metrics = Metrics()

    async def check() -> None:
        async with services(settings_of(folder), metrics) as (presentation, search):
            record = await search.record("book")
            report = await search.index_object(record)
            (refusal,) = report.refused
            assert (refusal.canvas, refusal.name) == (1, "ocr/p2.hocr")
            assert "entit" in refusal.reason.lower()  # says why: it declares entities
            assert report.pages == 2  # the others are indexed
            assert [h.canvas for h in await search.hits(record, q("zurich"))] == [0]
            assert await search.hits(record, q("lol")) == []
            reads = count_reads(presentation)
            again = await search.index_object(record)
            assert reads == [] and [r.canvas for r in again.refused] == [1]  # still said
            (folder / "ocr" / "p2.hocr").write_bytes(PAGES["p2.hocr"])
            fixed = await search.index_object(record)
            assert (fixed.pages, fixed.refused, reads) == (1, (), ["ocr/p2.hocr"])
            assert [h.canvas for h in await search.hits(record, q("second"))] == [1]

    with caplog.at_level("WARNING", logger="iiif_shim"):
        run(check())
    logged = [r.getMessage() for r in caplog.records if "refused" in r.getMessage()]
    assert len(logged) == 1 and "ocr/p2.hocr" in logged[0]  # once per file and stamp
    # the builds that changed something (not the second), the pages read, the refusal
    counted = metrics.render()[0].decode()
    for what, count in (("objects", 2), ("pages", 3), ("refused", 1)):
        assert f'iiif_shim_search_indexed_total{{what="{what}"}} {count}.0' in counted


def test_a_missing_file_is_refused_by_name(tmp_path: Path) -> None:
    folder = catalogue(tmp_path)
    (folder / "ocr" / "p3.txt").unlink()

    async def check() -> None:
        async with services(settings_of(folder)) as (_, search):
            record = await search.record("book")
            report = await search.index_object(record)
            assert [(r.canvas, r.name, r.reason) for r in report.refused] == [
                (2, "ocr/p3.txt", "it is not there")
            ]
            assert report.pages == 2

    run(check())


def test_canvases_removed_from_an_object_are_dropped_from_its_index(tmp_path: Path) -> None:
    folder = catalogue(tmp_path)

    async def index_then_search(word: str) -> tuple[int, list[int]]:
        async with services(settings_of(folder)) as (_, search):
            record = await search.record("book")
            report = await search.index_object(record)
            return report.removed, [h.canvas for h in await search.hits(record, q(word))]

    assert run(index_then_search("words")) == (0, [2])
    csv = (folder / "objects.csv").read_text().replace("book,p3,ocr/p3.txt\n", "")
    (folder / "objects.csv").write_text(csv)
    assert run(index_then_search("words")) == (1, [])
    # a canvas added: the object's signature changed, its first search indexes the new page
    (folder / "objects.csv").write_text(csv + "book,p3,ocr/p3.txt\n")

    async def search_only() -> list[int]:
        async with services(settings_of(folder)) as (presentation, search):
            reads = count_reads(presentation)
            record = await search.record("book")
            found = [h.canvas for h in await search.hits(record, q("words"))]
            assert reads == ["ocr/p3.txt"]  # the others are as they were
            return found

    assert run(search_only()) == [2]


def test_an_old_index_answers_while_it_is_looked_at_again(tmp_path: Path) -> None:
    folder = catalogue(tmp_path)

    async def check() -> None:
        async with services(settings_of(folder, recheck=0)) as (_, search):
            record = await search.record("book")
            assert len(await search.hits(record, q("zurich"))) == 1
            changed = _alto([("Geneva", (100, 100, 200, 40))])
            (folder / "ocr" / "p1.xml").write_bytes(changed)
            os.utime(folder / "ocr" / "p1.xml", (time.time() + 5, time.time() + 5))

            async def updated() -> bool:
                return len(await search.hits(record, q("geneva"))) == 1

            await eventually(updated, "the changed page found by a later search")
            assert await search.hits(record, q("zurich")) == []

    run(check())


def test_terms_and_the_ocr_file(tmp_path: Path) -> None:
    folder = catalogue(tmp_path)

    async def check() -> None:
        async with services(settings_of(folder)) as (_, search):
            record = await search.record("book")
            assert await search.terms(record, "ZÜ") == [("Zürich", 1)]  # as written
            assert await search.terms(record, "p") == [("page", 1), ("plain", 1)]
            assert await search.terms(record, "p", least=2) == []
            file = await search.ocr(record, 1)
            assert file.data == PAGES["p2.hocr"] and file.name == "ocr/p2.hocr"
            with pytest.raises(NotFound):
                await search.ocr(record, 3)
            pages = await search.pages(record, [2, 0, 7])
            assert [p.canvas for p in pages] == [0, 2]
            assert pages[1].page.text == "plain words here"

    run(check())


def test_an_index_that_cannot_be_made_is_a_503(tmp_path: Path) -> None:
    folder = catalogue(tmp_path)
    settings = settings_of(folder)  # (made a file after: the settings' check refuses it)
    (folder / "index").write_text("a file where the index's folder should be\n")

    async def check() -> None:
        async with services(settings) as (_, search):
            record = await search.record("book")
            with pytest.raises(ShimError) as failed:
                await search.hits(record, q("zurich"))
            assert failed.value.status == 503

    run(check())


def test_an_objects_text_is_read_once_for_its_searches_and_again_when_it_changes(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    folder = catalogue(tmp_path)
    reads: list[str] = []
    real = service_module._read_text

    def counted(index: Any, name: str, canvases: int, limit: int) -> Any:
        reads.append(name)
        return real(index, name, canvases, limit)

    monkeypatch.setattr(service_module, "_read_text", counted)

    async def check() -> None:
        settings = settings_of(folder)
        async with services(settings) as (_, search):
            record = await search.record("book")
            found = await asyncio.gather(
                *(search.hits(record, q(w)) for w in ("zurich", "harbour", "page", "absent"))
            )
            assert [[h.canvas for h in hits] for hits in found] == [[0], [0], [1], []]
            assert reads == ["book"]  # once, for every search at once and after
            # another writer (iiif-shim index, another process) stores a page anew
            other = open_index(settings.search, settings.origin)  # (its namespace)
            try:
                state = other.state("book")
                assert state is not None
                page = ocr.parse(_alto([("Geneva", (100, 100, 200, 40))]), None, "p1", 100)
                stored = StoredPage(0, state.stamps[0], page.scaled(*CANVAS))
                other.store("book", state.signature, [stored], checked=state.checked)
            finally:
                other.close()
            assert [h.match for h in await search.hits(record, q("geneva"))] == ["Geneva"]
            assert await search.hits(record, q("zurich")) == []
            assert reads == ["book", "book"]

    run(check())


def test_results_are_a_page_of_the_hits_and_their_count(tmp_path: Path) -> None:
    many = [[("tide", (10 + 40 * c, 10 + 20 * r, 30, 10)) for c in range(5)] for r in range(3)]
    pages = dict(PAGES, **{"p2.hocr": ocr_files.hocr(many, PAGE)})
    folder = catalogue(tmp_path, pages)

    async def check() -> None:
        async with services(settings_of(folder)) as (_, search):
            record = await search.record("book")
            every = await search.hits(record, q("tide"))
            assert len(every) == 15
            shown = await search.results(record, q("tide"), 4, 9)
            assert (shown.start, shown.total, shown.annotations) == (4, 15, 15)
            assert shown.hits == tuple(every[4:9]) and shown.annotations_before == 4
            past = await search.results(record, q("tide"), 20, 30)
            assert (past.hits, past.total, past.annotations_before) == ((), 15, 15)
            lines = await search.results(record, Query(), 0, 50)
            assert [h.match for h in lines.hits] == [
                "Zürich harbour", "tide tide tide tide tide", "tide tide tide tide tide",
                "tide tide tide tide tide", "plain words here",
            ]  # fmt: skip

    run(check())


def test_an_object_too_large_to_keep_is_searched_in_the_index_the_same(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    folder = catalogue(tmp_path)
    queries = ["zurich", "page second", "pla*", '"words here"', "absent", ""]

    async def answers() -> list[list[Hit]]:
        async with services(settings_of(folder)) as (_, search):
            record = await search.record("book")
            return [await search.hits(record, q(text)) for text in queries]

    kept = run(answers())
    assert [len(hits) for hits in kept] == [1, 2, 1, 1, 0, 3]
    monkeypatch.setattr(service_module, "TEXT_BUDGET", 100)  # no object's text fits
    monkeypatch.setattr(service_module, "HIT_CHUNK", 2)
    assert run(answers()) == kept
