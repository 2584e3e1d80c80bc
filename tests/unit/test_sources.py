"""Object sources over real files and real HTTP on 127.0.0.1: CSV (a file and a URL), a JSON
catalogue (an aiohttp server in the test, which records every path it is asked for) and
CONTENTdm (the stand-in of tests/standins.py, as a process); records built right, and every bad
input answered as a 502 or 504 naming the source, or as "not this source's object"."""

from __future__ import annotations

import asyncio
import contextlib
import json
import os
import time
from collections.abc import AsyncIterator, Awaitable, Callable, Iterator
from contextlib import asynccontextmanager
from dataclasses import replace
from pathlib import Path
from typing import Any, TypeVar
from urllib.parse import unquote

import pytest
from aiohttp import web

from iiif_shim.backends.settings import Extract
from iiif_shim.base.errors import BackendError, BackendTimeout
from iiif_shim.base.schema import Reader
from iiif_shim.config.settings import parse_settings
from iiif_shim.core.routing import Router
from iiif_shim.presentation.records import RangeRecord
from iiif_shim.presentation.sources.base import ObjectSource, SourceContext, UnusableObject
from iiif_shim.presentation.sources.registry import SOURCE_TYPES, source_for
from iiif_shim.presentation.sources.settings import SOURCE_SETTINGS, ConfigView
from iiif_shim.upstream.jsonpath import MAX_RESULTS, compile_path, select
from tests.servers import start_standin
from tests.support import Process, free_port

T = TypeVar("T")
CC_BY = "http://creativecommons.org/licenses/by/4.0/"
NOC = "http://rightsstatements.org/vocab/NoC-US/1.0/"


async def _blocking(fn: Callable[..., T], *args: Any) -> T:
    return await asyncio.to_thread(fn, *args)


CONTEXT = SourceContext(_blocking, {}, Router(()))
VIEW = ConfigView({}, Router(()))


def settings_of(type_name: str, data: dict[str, Any], base: Path) -> Any:
    reader = Reader(base)
    settings = reader.read(SOURCE_SETTINGS[type_name], {"type": type_name, **data}, "s")
    assert settings is not None and not reader.problems, reader.problems
    return settings


def _plain(metadata: Any) -> tuple[tuple[str, str], ...]:
    """Metadata pairs as (label, value) texts in the configured language."""
    return tuple((str(label), str(value)) for label, value in metadata)


def problems_of(type_name: str, data: dict[str, Any], base: Path) -> list[tuple[str, str]]:
    reader = Reader(base)
    reader.read(SOURCE_SETTINGS[type_name], {"type": type_name, **data}, "s")
    return reader.problems


@asynccontextmanager
async def opened(
    type_name: str, data: dict[str, Any] | Any, base: Path, name: str = "src"
) -> AsyncIterator[ObjectSource[Any]]:
    """A started source, from its config section (or settings already read)."""
    settings = settings_of(type_name, data, base) if isinstance(data, dict) else data
    source = source_for(name, settings)
    await source.start(CONTEXT)
    try:
        yield source
    finally:
        await source.close()


def run(coro: Awaitable[T]) -> T:
    async def main() -> T:
        return await coro

    return asyncio.run(main())


# --- jsonpath ---------------------------------------------------------------------------------

DOC = {
    "title": "A book",
    "files": [{"iiif_id": "b/1", "label": "Cover"}, {"iiif_id": "b/2"}, {"iiif_id": 3}],
    "image": {"width": "6000", "sizes": [{"width": 100}, {"width": 200}]},
    "key with spaces": {"it's": 1},
    "$x": "dollar",
    "0": "zero",
}


@pytest.mark.parametrize(
    ("path", "expected"),
    [
        ("$", [DOC]),
        ("$.title", ["A book"]),
        ("title", ["A book"]),
        ("image.width", ["6000"]),  # the template backend's dotted form
        ("image.sizes.1.width", [200]),  # with integer indexes
        ("image.sizes.-1.width", [200]),
        ("$.image.sizes[0].width", [100]),
        ("$.image.sizes[-1].width", [200]),
        ("$.files[*].iiif_id", ["b/1", "b/2", 3]),
        ("$.files.*.label", ["Cover"]),
        ("$.image.*", ["6000", [{"width": 100}, {"width": 200}]]),
        ("$['key with spaces']['it\\'s']", [1]),
        ('$["key with spaces"]', [{"it's": 1}]),
        ("$x", ["dollar"]),  # a name that starts with $, not the root
        ("$.0", ["zero"]),  # digits on an object are a key
        ("$.files[7].iiif_id", []),
        ("$.title.x", []),
        ("$.missing[*]", []),
        ("$[0]", []),
    ],
)
def test_json_paths_select_every_match_in_order(path: str, expected: list[Any]) -> None:
    assert select(DOC, path) == expected


@pytest.mark.parametrize(
    "path",
    ["", "$..title", "$.files[?(@.x)]", "$.files[0:2]", "$.a.", "$['a'", "$[", "a]", "x" * 501],
)
def test_bad_json_paths_are_refused_when_compiled(path: str) -> None:
    with pytest.raises(ValueError):
        compile_path(path)


def test_json_paths_are_bounded() -> None:
    wide = [[0] * 1000] * 101
    assert len(select(wide, "$[0][*]")) == 1000
    with pytest.raises(ValueError, match=str(MAX_RESULTS)):
        select(wide, "$[*][*]")
    with pytest.raises(ValueError, match="steps"):
        compile_path("a" + ".a" * 40)


def test_the_template_backend_reads_numbers_by_json_path() -> None:
    answer = json.dumps({"image": {"width": "6000", "sizes": [{"w": 10}, {"w": 20}]}})
    assert Extract(json="image.width").find(answer) == 6000
    assert Extract(json="image.sizes.1.w").find(answer) == 20
    assert Extract(json="$.image.sizes[*].w").find(answer) == 10  # the first match
    with pytest.raises(ValueError):
        Extract(json="image.height").find(answer)
    with pytest.raises(ValueError):
        Extract(json="image.width").find("<html>")
    reader = Reader(Path("."))
    assert reader.read(Extract, {"json": "$..w"}, "width") is None
    assert reader.problems and reader.problems[0][0] == "width.json"


# --- csv --------------------------------------------------------------------------------------

CATALOGUE = (
    "obj,image_id,title,page,description,rights,credit,date,seq,chapter,creator,extent\n"
    f"book,book/p10,The book,Back,Three pages,{CC_BY},Library,1887-05-17,10,Text,A. Printer,3 p.\n"
    "Brief an Händel,letters/1,Ein Brief,,,,,1750,,,,\n"
    "book,book/p1,Ignored title,Cover,,,,,1,Cover,Not the first row,\n"
    "a/b,slash/1,,,,,,,,,,\n"
    "book,book/p2,,Middle,,,,,2,Text,,\n"
    "natural,n/p10,,,,,,,p10,,,\n"
    "natural,n/p2,,,,,,,p2,,,\n"
    "natural,n/p1,,,,,,,,,,\n"
    ",,,,,,,,,,,\n"
)
COLUMNS = {
    "object": "obj",
    "image": "image_id",
    "label": "title",
    "canvas_label": "page",
    "summary": "description",
    "rights": "rights",
    "required_statement": "credit",
    "nav_date": "date",
    "order": "seq",
    "range": "chapter",
    "metadata": ["creator", "date", "extent"],
}


def test_csv_rows_become_ordered_canvases_with_first_row_fields(tmp_path: Path) -> None:
    (tmp_path / "objects.csv").write_text(CATALOGUE, encoding="utf-8-sig")  # with a BOM

    async def check() -> None:
        async with opened("csv", {"path": "objects.csv", "columns": COLUMNS}, tmp_path) as src:
            assert await src.names(100) == ["book", "Brief an Händel", "a/b", "natural"]
            assert await src.names(2) == ["book", "Brief an Händel"]
            book = await src.record("book")
            assert book is not None
            assert [c.image for c in book.canvases] == ["book/p1", "book/p2", "book/p10"]
            assert [c.label for c in book.canvases] == ["Cover", "Middle", "Back"]
            assert book.ranges == (RangeRecord("Cover", 0, 0), RangeRecord("Text", 1, 2))
            assert (book.label, book.summary, book.rights) == ("The book", "Three pages", CC_BY)
            assert book.required_statement == "Library"
            assert book.nav_date.nav == "1887-05-17T00:00:00Z"
            assert _plain(book.metadata) == (
                ("creator", "A. Printer"),  # the first row in the file, not the first canvas
                ("date", "1887-05-17"),
                ("extent", "3 p."),
            )
            natural = await src.record("natural")
            assert natural is not None
            assert [c.image for c in natural.canvases] == ["n/p2", "n/p10", "n/p1"]
            slash = await src.record("a/b")
            assert slash is not None and slash.label == "a/b"
            letter = await src.record("Brief an Händel")
            assert letter is not None and letter.nav_date.nav == "1750-01-01T00:00:00Z"
            assert await src.record("nothing") is None
            assert await src.record("../objects.csv") is None

    run(check())


def test_csv_with_another_delimiter_and_encoding(tmp_path: Path) -> None:
    (tmp_path / "latin.csv").write_bytes("obj;img;title\nx;x/1;Händel\n".encode("cp1252"))
    columns = {"object": "obj", "image": "img", "label": "title"}

    async def check() -> None:
        data = {"path": "latin.csv", "columns": columns, "delimiter": ";", "encoding": "cp1252"}
        async with opened("csv", data, tmp_path) as src:
            record = await src.record("x")
            assert record is not None and record.label == "Händel"
        async with opened("csv", {**data, "encoding": "utf-8"}, tmp_path, "latin") as src:
            with pytest.raises(BackendError) as caught:
                await src.record("x")
            assert caught.value.status == 502
            assert "source 'latin'" in caught.value.message
            assert "latin.csv is not utf-8 text (byte 21)" in caught.value.message

    run(check())


def test_a_missing_column_fails_that_source_alone(tmp_path: Path) -> None:
    (tmp_path / "broken.csv").write_text("obj,title\nx,No image column\n")
    (tmp_path / "good.csv").write_text("obj,image_id\ny,y/1\n")
    (tmp_path / "images").mkdir()
    config = {
        "backends": {"local": {"type": "files", "root": "images"}},
        "routes": [{"backend": "local"}],
        "presentation": {
            "sources": {
                "broken": {"type": "csv", "path": "broken.csv",
                           "columns": {"object": "obj", "image": "image_id", "label": "nope"}},
                "good": {"type": "csv", "path": "good.csv",
                         "columns": {"object": "obj", "image": "image_id"}},
            }
        },
    }  # fmt: skip
    # loads: the files are read by the sources (and check-config's survey), not the settings
    settings = parse_settings(config, tmp_path)
    assert not any(k.startswith("presentation.sources") for k, _ in settings.warnings)

    async def check() -> None:
        sources = settings.presentation.sources
        async with (
            opened("csv", sources["broken"], tmp_path, "broken") as broken,
            opened("csv", sources["good"], tmp_path, "good") as good,
        ):
            for attempt in (broken.names(10), broken.record("x")):
                with pytest.raises(BackendError) as caught:
                    await attempt
                message = caught.value.message
                assert caught.value.status == 502 and message.startswith("source 'broken'")
                assert "'image_id' (columns.image)" in message and "'nope'" in message
            assert await broken.record("y") is None  # not in its file: not its object
            assert await good.record("y") is not None

    run(check())


@pytest.mark.parametrize(
    ("content", "extra", "fragment"),
    [
        ("obj,img\nx,x/1\ny,y/1\nz,z/1\n", {"max_rows": 2}, "more than max_rows (2)"),
        ("obj,img\nx,x/1\n", {"max_bytes": 10}, "larger than max_bytes (10)"),
        ("", {}, "is empty (no header row)"),
        ('obj,img\nx,"x/1\n', {}, None),  # an unclosed quote: the rest is one value
        ("obj,img\n" + "x,x/1\n" * 2001, {}, "more than 2000 images"),
    ],
)
def test_bad_csv_content_is_a_502_naming_the_source(
    tmp_path: Path, content: str, extra: dict[str, Any], fragment: str | None
) -> None:
    (tmp_path / "t.csv").write_text(content)

    async def check() -> None:
        data = {"path": "t.csv", "columns": {"object": "obj", "image": "img"}, **extra}
        async with opened("csv", data, tmp_path, "cat") as src:
            if fragment is None:
                record = await src.record("x")
                assert record is not None and record.canvases[0].image == "x/1"
                return
            with pytest.raises(BackendError) as caught:
                await src.record("x")
            assert caught.value.status == 502
            assert caught.value.message.startswith("source 'cat'")
            assert fragment in caught.value.message, caught.value.message

    run(check())


def test_a_row_without_its_image_is_skipped_unless_strict(tmp_path: Path) -> None:
    (tmp_path / "t.csv").write_text("obj,img\nx,x/1\nx,\ny,\n")

    async def check() -> None:
        data = {"path": "t.csv", "columns": {"object": "obj", "image": "img"}}
        async with opened("csv", data, tmp_path, "cat") as src:
            record = await src.record("x")
            assert record is not None and [c.image for c in record.canvases] == ["x/1"]
            assert [(s.field, s.canvas) for s in record.skipped] == [("image", 1)]
            with pytest.raises(UnusableObject) as unusable:
                await src.record("y")
            assert unusable.value.status == 404 and "object 'y'" in unusable.value.message
        source = source_for("cat", settings_of("csv", data, tmp_path))
        await source.start(replace(CONTEXT, strict=True))
        try:
            with pytest.raises(BackendError) as caught:
                await source.record("x")
            assert caught.value.status == 502
            assert "object 'x': line 3: no image (column 'img')" in caught.value.message
        finally:
            await source.close()

    run(check())


def test_a_changed_csv_file_is_read_again(tmp_path: Path) -> None:
    path = tmp_path / "t.csv"
    path.write_text("obj,img\nx,x/1\n")

    async def check() -> None:
        data = {"path": str(path), "columns": {"object": "obj", "image": "img"}}
        async with opened("csv", data, tmp_path) as src:
            assert await src.names(10) == ["x"]
            path.write_text("obj,img\nx,x/1\ny,y/1\n")
            os.utime(path, ns=(time.time_ns(), time.time_ns() + 10**9))
            assert await src.names(10) == ["x", "y"]
            path.write_text("obj,nothing\n")  # broken now: the error, not the old table
            os.utime(path, ns=(time.time_ns(), time.time_ns() + 2 * 10**9))
            with pytest.raises(BackendError, match="no column 'img'"):
                await src.names(10)

    run(check())


# --- an HTTP server in the test ---------------------------------------------------------------

OBJECTS: dict[str, Any] = {
    "book": {
        "title": "The book",
        "creator": ["A. Printer", "B. Binder"],
        "date": 1887,
        "rights": CC_BY,
        "behavior": "paged",
        "files": [
            {"iiif_id": "book/p1", "label": "Cover"},
            {"iiif_id": "book/p2", "label": "Page 2"},
        ],
    },
    "a/b": {"title": "Slash", "files": [{"iiif_id": "s/1"}]},
    "Brief an Händel": {"title": "Ein Brief", "files": [{"iiif_id": "letters/1"}]},
    "empty": {"title": "No images", "files": []},
    "bad-label": {"title": {"en": "an object"}, "files": [{"iiif_id": "x/1"}]},
    "gaps": {
        "title": "Labels with gaps",
        "files": [
            {"iiif_id": "g/1", "label": None},
            {"iiif_id": "g/2", "label": "Second"},
            {"iiif_id": "g/3", "label": "Third"},
        ],
    },
    "holes": {
        "title": "A label missing",
        "files": [{"iiif_id": "h/1"}, {"iiif_id": "h/2", "label": "Second"}],
    },
}
LISTING = {"items": [{"id": "book"}, {"id": "a/b"}, {"id": "Brief an Händel"}, {"x": 1}]}


class LocalServer:
    """An aiohttp server on a free 127.0.0.1 port for the length of an ``async with``; every
    GET goes to :meth:`handle`."""

    def __init__(self) -> None:
        self.port = free_port()
        self.base = f"http://127.0.0.1:{self.port}"
        self._runner: web.AppRunner | None = None
        self._closing = asyncio.Event()  # set when the server stops (ends held requests)

    async def handle(self, request: web.Request) -> web.StreamResponse:
        raise NotImplementedError

    async def __aenter__(self: S) -> S:
        app = web.Application()
        app.router.add_route("GET", "/{tail:.*}", self.handle)
        self._runner = web.AppRunner(app, access_log=None)
        await self._runner.setup()
        await web.TCPSite(self._runner, "127.0.0.1", self.port).start()
        return self

    async def __aexit__(self, *exc: object) -> None:
        assert self._runner is not None
        self._closing.set()
        await self._runner.cleanup()


S = TypeVar("S", bound=LocalServer)


class Catalogue(LocalServer):
    """A JSON catalogue on 127.0.0.1 that records the raw path of every request."""

    def __init__(self) -> None:
        super().__init__()
        self.seen: list[str] = []
        self.csv = "obj,img,title\nx,x/1,From the web\n"
        self.csv_fails = False

    async def handle(self, request: web.Request) -> web.StreamResponse:
        raw = request.raw_path
        self.seen.append(raw)
        path, _, _ = raw.partition("?")
        if path.startswith("/api/items/") and "/" not in path[len("/api/items/") :]:
            doc = OBJECTS.get(unquote(path[len("/api/items/") :]))
            if doc is None:
                raise web.HTTPNotFound(text="no such item")
            return web.json_response(doc)
        if path == "/api/list":
            return web.json_response(LISTING)
        if path == "/api/names":
            return web.json_response(["book", "empty"])
        if path.startswith("/slow/"):
            with contextlib.suppress(TimeoutError):
                await asyncio.wait_for(self._closing.wait(), 10)
        if path.startswith("/garbage/"):
            return web.Response(text='{"title": "cut', content_type="application/json")
        if path.startswith("/html/"):
            return web.Response(text="<html><body>Login</body></html>", content_type="text/html")
        if path.startswith("/fail/"):
            raise web.HTTPInternalServerError(text="boom")
        if path == "/export/objects.csv" and self.csv_fails:
            raise web.HTTPServiceUnavailable(text="down for maintenance")
        if path == "/export/objects.csv":
            etag = f'"{len(self.csv)}"'
            if request.headers.get("If-None-Match") == etag:
                return web.Response(status=304, headers={"ETag": etag})
            return web.Response(text=self.csv, content_type="text/csv", headers={"ETag": etag})
        raise web.HTTPNotFound(text="not here")


def _catalogue_source(base: str, **more: Any) -> dict[str, Any]:
    return {
        "url": f"{base}/api/items/{{object}}",
        "fields": {
            "label": "$.title",
            "images": "$.files[*].iiif_id",
            "canvas_labels": "$.files[*].label",
            "nav_date": "$.date",
            "rights": "$.rights",
            "behavior": "$.behavior",
            "metadata": {"Creator": "$.creator", "Title": "title"},
        },
        **more,
    }


def test_a_json_catalogue_with_a_list(tmp_path: Path) -> None:
    async def check() -> None:
        async with Catalogue() as cat:
            data = _catalogue_source(
                cat.base, list=f"{cat.base}/api/list", list_path="$.items[*]", name_path="$.id"
            )
            async with opened("json", data, tmp_path, "api") as src:
                assert await src.names(10) == ["book", "a/b", "Brief an Händel"]
                book = await src.record("book")
                assert book is not None and book.source == "api"
                assert [(c.image, c.label) for c in book.canvases] == [
                    ("book/p1", "Cover"),
                    ("book/p2", "Page 2"),
                ]
                assert (book.label, book.rights, book.behavior) == ("The book", CC_BY, ("paged",))
                assert book.nav_date.nav == "1887-01-01T00:00:00Z"
                assert _plain(book.metadata) == (
                    ("Creator", "A. Printer; B. Binder"),
                    ("Title", "The book"),
                )
                slash = await src.record("a/b")
                letter = await src.record("Brief an Händel")
                assert slash is not None and slash.label == "Slash"
                assert letter is not None and letter.canvases[0].image == "letters/1"
                before = len(cat.seen)
                assert await src.record("empty") is None  # not listed: no request
                assert await src.record("../x") is None
                assert len(cat.seen) == before
                assert cat.seen.count("/api/list") == 1  # kept for `refresh` seconds
            assert "/api/items/a%2Fb" in cat.seen
            assert "/api/items/Brief%20an%20H%C3%A4ndel" in cat.seen

    run(check())


def test_canvas_labels_stay_with_their_images(tmp_path: Path) -> None:
    """A null label is a canvas without one, never the next canvas's label; labels that are
    not one per image (a file without the key) cannot be paired up: all are left out, said."""

    async def check() -> None:
        async with (
            Catalogue() as cat,
            opened("json", _catalogue_source(cat.base), tmp_path) as src,
        ):
            gaps = await src.record("gaps")
            assert gaps is not None
            assert [c.label for c in gaps.canvases] == [None, "Second", "Third"]
            holes = await src.record("holes")
            assert holes is not None
            assert [c.label for c in holes.canvases] == [None, None]
            assert any(s.field == "canvas_label" for s in holes.skipped)

    run(check())


def test_a_json_catalogue_with_objects_or_without_a_list(tmp_path: Path) -> None:
    async def check() -> None:
        async with Catalogue() as cat:
            fixed = _catalogue_source(cat.base, objects=["book", "missing"])
            async with opened("json", fixed, tmp_path) as src:
                assert await src.names(10) == ["book", "missing"]
                assert await src.record("missing") is None  # listed, but the server says 404
                assert await src.record("a/b") is None  # not listed
            plain = _catalogue_source(cat.base, list=f"{cat.base}/api/names")
            async with opened("json", plain, tmp_path) as src:
                assert await src.names(10) == ["book", "empty"]
            async with opened("json", _catalogue_source(cat.base), tmp_path) as src:
                assert await src.names(10) == []
                assert (await src.record("a/b")) is not None
                assert await src.record("nothing") is None

    run(check())


@pytest.mark.parametrize(
    "name",
    [
        "../x",
        "..",
        "a/../../x",
        "..%2Fx",
        "%2e%2e",
        "%252e%252e%252fx",
        "x\\..\\y",
        "//evil.example/x",
        "http://evil.example/x",
    ],
)
def test_names_that_would_climb_out_never_reach_another_path(tmp_path: Path, name: str) -> None:
    async def check() -> None:
        async with Catalogue() as cat:
            async with opened("json", _catalogue_source(cat.base), tmp_path) as src:
                assert await src.record(name) is None
                assert await src.record("a/b") is not None
            assert cat.seen == ["/api/items/a%2Fb"]  # the hostile name sent nothing at all

    run(check())


@pytest.mark.parametrize(
    ("prefix", "extra", "status", "fragment"),
    [
        ("garbage", {"retries": 0}, 502, "source 'cat' sent object 'x' that is not JSON"),
        ("html", {}, 502, "that is not JSON (text/html)"),
        ("fail", {"retries": 1}, 502, "source 'cat' answered HTTP 500 for object 'x'"),
        ("slow", {"timeout": 0.5}, 504, "source 'cat' did not answer within 0.5s"),
    ],
)
def test_a_json_catalogue_that_fails_is_a_502_or_504_naming_it(
    tmp_path: Path, prefix: str, extra: dict[str, Any], status: int, fragment: str
) -> None:
    async def check() -> None:
        async with Catalogue() as cat:
            data = {"url": f"{cat.base}/{prefix}/{{object}}", "fields": {"images": "$.i"}}
            async with opened("json", {**data, **extra}, tmp_path, "cat") as src:
                started = time.monotonic()
                with pytest.raises((BackendError, BackendTimeout)) as caught:
                    await src.record("x")
                assert time.monotonic() - started < 3
                assert caught.value.status == status
                assert fragment in caught.value.message, caught.value.message

    run(check())


def test_a_json_object_without_images_is_a_404_and_a_field_not_text_is_left_out(
    tmp_path: Path,
) -> None:
    async def check() -> None:
        async with (
            Catalogue() as cat,
            opened("json", _catalogue_source(cat.base), tmp_path, "api") as src,
        ):
            with pytest.raises(UnusableObject) as caught:
                await src.record("empty")
            assert caught.value.status == 404
            assert "object 'empty' cannot be shown" in caught.value.message
            assert "no images at $.files[*].iiif_id" in caught.value.message
            found = await src.record("bad-label")  # lenient: the label left out, named
            assert found is not None and found.label == "bad-label"
            assert ("label", "matches an object, not text at $.title") in [
                (s.field, s.message) for s in found.skipped
            ]
        strict = CONTEXT.__class__(_blocking, {}, Router(()), strict=True)
        async with Catalogue() as cat:
            source = source_for("api", settings_of("json", _catalogue_source(cat.base), tmp_path))
            await source.start(strict)
            try:
                with pytest.raises(BackendError, match="object 'bad-label': label: matches an"):
                    await source.record("bad-label")
                with pytest.raises(BackendError, match="object 'empty': images: no images at"):
                    await source.record("empty")
            finally:
                await source.close()

    run(check())


def test_a_json_list_of_objects_without_name_path_is_a_clear_502(tmp_path: Path) -> None:
    async def check() -> None:
        async with Catalogue() as cat:
            data = _catalogue_source(cat.base, list=f"{cat.base}/api/list", list_path="$.items")
            async with opened("json", data, tmp_path, "api") as src:
                with pytest.raises(BackendError, match="set `name_path`"):
                    await src.names(10)

    run(check())


@pytest.mark.parametrize(
    ("data", "where", "fragment"),
    [
        ({"url": "http://h/items", "fields": {"images": "$.i"}}, "s.url", "{object}"),
        ({"url": "http://h/{object}/{x}", "fields": {"images": "$.i"}}, "s.url", "{object}"),
        ({"url": "ftp://h/{object}", "fields": {"images": "$.i"}}, "s.url", ""),
        ({"url": "http://h/{object}", "fields": {"images": "$..i"}}, "s.fields.images", "`..`"),
        ({"url": "http://h/{object}", "fields": {}}, "s.fields.images", "required"),
        (
            {"url": "http://h/{object}", "list": "http://h/l", "objects": ["a"],
             "fields": {"images": "$.i"}},
            "s.list",
            "not both",
        ),
        (
            {"url": "http://h/{object}", "fields": {"images": "$.i", "metadata": {"A": "$["}}},
            "s.fields.metadata.A",
            "unclosed",
        ),
        ({"url": "http://h/{object}", "name_path": "$.id", "fields": {"images": "$.i"}},
         "s.name_path", "with `list`"),
    ],
)  # fmt: skip
def test_json_source_config_problems(
    tmp_path: Path, data: dict[str, Any], where: str, fragment: str
) -> None:
    found = problems_of("json", data, tmp_path)
    assert any(p == where and fragment in m for p, m in found), found


def test_a_csv_at_a_url_is_fetched_kept_and_refreshed(tmp_path: Path) -> None:
    async def check() -> None:
        async with Catalogue() as cat:
            url = f"{cat.base}/export/objects.csv"
            columns = {"object": "obj", "image": "img", "label": "title"}
            settings = settings_of("csv", {"path": url, "columns": columns}, tmp_path)
            assert settings.url == url
            async with opened("csv", {"path": url, "columns": columns}, tmp_path) as src:
                record = await src.record("x")
                assert record is not None and record.label == "From the web"
                assert await src.names(10) == ["x"]
                assert cat.seen.count("/export/objects.csv") == 1
            data = {"path": url, "columns": columns, "refresh": 0}
            async with opened("csv", data, tmp_path) as src:
                assert await src.names(10) == ["x"]
                assert await src.names(10) == ["x"]  # 304: the same table
                cat.csv += "y,y/1,Another\n"
                assert await src.names(10) == ["x", "y"]
            data = {"path": url, "columns": columns, "refresh": 0}
            async with opened("csv", data, tmp_path) as src:
                assert await src.names(10) == ["x", "y"]
                cat.csv_fails = True  # a failed refetch: the last good copy stays in use
                assert await src.names(10) == ["x", "y"]
                stale = await src.survey(10, 3)  # ... and the source is degraded, saying why
                assert stale.state.value == "degraded" and stale.stale is not None
                assert "503" in stale.stale and stale.as_json(False)["stale"] == stale.stale
                cat.csv_fails = False
                assert (await src.survey(10, 3)).state.value == "ok"
            data = {"path": f"{cat.base}/fail/objects.csv", "columns": columns}
            async with opened("csv", data, tmp_path, "web") as src:
                with pytest.raises(BackendError, match="source 'web' answered HTTP 500"):
                    await src.names(10)
            data = {"path": f"{cat.base}/gone.csv", "columns": columns}
            async with opened("csv", data, tmp_path, "web") as src:
                with pytest.raises(BackendError, match="source 'web': its CSV is not found"):
                    await src.record("x")

    run(check())


def test_csv_path_problems(tmp_path: Path) -> None:
    columns = {"object": "o", "image": "i"}
    assert problems_of("csv", {"path": "x.csv", "columns": {"object": "o"}}, tmp_path) == [
        ("s.columns.image", "required")
    ]
    found = problems_of("csv", {"path": "x.csv", "columns": columns, "delimiter": ";;"}, tmp_path)
    assert found and found[0][0] == "s.delimiter"
    found = problems_of("csv", {"path": "x.csv", "columns": columns, "encoding": "nope"}, tmp_path)
    assert found and found[0][0] == "s.encoding"
    found = problems_of("csv", {"path": "http://", "columns": columns}, tmp_path)
    assert found and found[0][0] == "s.path"


# --- CONTENTdm, through its stand-in ----------------------------------------------------------

ITEMS = {
    "10": {"title": "A map", "descri": "", "rights": NOC, "date": "1887",
           "creato": "Someone &amp; Co.", "subjec": "Maps"},
    "20": {
        "title": "Letters", "rights": "All rights reserved", "date": "circa 1900",
        "cpd": {"type": "Document", "page": [
            {"pagetitle": "Front", "pagefile": "21.jp2", "pageptr": "21"},
            {"pagetitle": "Back", "pagefile": "22.jp2", "pageptr": "22"},
            {"pagetitle": "Reading", "pagefile": "23.mp3", "pageptr": "23"},
        ]},
    },
    "21": {"title": "Front"}, "22": {"title": "Back"}, "23": {"title": "Reading"},
    "30": {
        "title": "A county history", "date": "1901-02",
        "cpd": {"type": "Monograph", "node": {"nodetitle": "A county history", "node": [
            {"nodetitle": "Chapter 1", "page": [
                {"pagetitle": "p. 1", "pagefile": "31.jp2", "pageptr": "31"},
                {"pagetitle": "p. 2", "pagefile": "32.jp2", "pageptr": "32"},
            ]},
            {"nodetitle": "Chapter 2", "page": {"pagetitle": "p. 3", "pagefile": "33.jp2",
                                                "pageptr": "33"}},
        ]}},
    },
    "31": {"title": "p. 1"}, "32": {"title": "p. 2"}, "33": {"title": "p. 3"},
    "40": {"title": "A recording", "cpd": {"type": "Document", "page": [
        {"pagetitle": "Side A", "pagefile": "41.mp3", "pageptr": "41"}]}},
    "41": {"title": "Side A"},
}  # fmt: skip


@pytest.fixture(scope="module")
def cdm(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Process]:
    root = tmp_path_factory.mktemp("cdm")
    (root / "maps").mkdir()
    (root / "maps" / "items.json").write_text(json.dumps(ITEMS))
    proc = start_standin("contentdm", root, tmp_path_factory.mktemp("cdm-log"))
    yield proc
    proc.stop()


def test_contentdm_objects_from_its_web_services(cdm: Process, tmp_path: Path) -> None:
    async def check() -> None:
        data = {"url": f"http://127.0.0.1:{cdm.port}", "collection": "maps", "retries": 0}
        async with opened("contentdm", data, tmp_path, "cdm") as src:
            assert await src.names(100) == ["30", "10", "40", "20"]  # by title, no pages
            assert await src.names(2) == ["30", "10"]
            single = await src.record("10")
            assert single is not None
            assert [c.image for c in single.canvases] == ["maps:10"]
            assert (single.label, single.rights, single.summary) == ("A map", NOC, None)
            assert single.nav_date.nav == "1887-01-01T00:00:00Z"
            assert _plain(single.metadata) == (
                ("Creator", "Someone & Co."),
                ("Date", "1887"),
                ("Subject", "Maps"),
            )
            letters = await src.record("20")
            assert letters is not None
            assert [(c.image, c.label) for c in letters.canvases] == [
                ("maps:21", "Front"),
                ("maps:22", "Back"),
            ]  # the mp3 page left out
            assert letters.rights is None and letters.nav_date is None
            assert ("Rights", "All rights reserved") in _plain(letters.metadata)
            history = await src.record("30")
            assert history is not None and len(history.canvases) == 3
            assert history.ranges == (
                RangeRecord("Chapter 1", 0, 1),
                RangeRecord("Chapter 2", 2, 2),
            )
            assert history.nav_date.nav == "1901-02-01T00:00:00Z"
            for name in ("99", "abc", "../10", "10/../20", "1 0", ""):
                assert await src.record(name) is None, name
            with pytest.raises(UnusableObject, match="object '40' cannot be shown: image: none"):
                await src.record("40")
        custom = {**data, "image_id": "{alias}/{pointer}", "fields": {"label": None}}
        async with opened("contentdm", custom, tmp_path, "cdm") as src:
            single = await src.record("10")
            assert single is not None and single.canvases[0].image == "maps/10"
            assert single.label == "10"
        async with opened("contentdm", {**data, "collection": "nope"}, tmp_path, "cdm") as src:
            with pytest.raises(BackendError, match="source 'cdm': CONTENTdm has no collection"):
                await src.record("10")

    run(check())


@pytest.mark.parametrize(
    ("data", "where"),
    [
        ({"url": "http://h", "collection": "a/b"}, "s.collection"),
        ({"url": "http://h?x=1", "collection": "a"}, "s.url"),
        ({"url": "http://h", "collection": "a", "image_id": "{id}"}, "s.image_id"),
        ({"url": "http://h", "collection": "a", "api_path": "index.php"}, "s.api_path"),
        ({"url": "http://h", "collection": "a", "fields": {"label": "ti tle"}}, "s.fields.label"),
    ],
)
def test_contentdm_config_problems(tmp_path: Path, data: dict[str, Any], where: str) -> None:
    found = problems_of("contentdm", data, tmp_path)
    assert any(p == where for p, _ in found), found


def test_the_source_types_are_registered() -> None:
    assert {"folder", "csv", "json", "contentdm"} <= set(SOURCE_TYPES)
    for name, cls in SOURCE_TYPES.items():  # one settings class for each, under the same name
        assert SOURCE_SETTINGS[name] is cls.settings_class
    assert set(SOURCE_SETTINGS) == set(SOURCE_TYPES)


class HostileContentdm(LocalServer):
    """A CONTENTdm look-alike whose answers are shaped wrong: lists of strings where pages or
    nodes belong, and a dmQuery that answers full pages of compound-object pages forever."""

    def __init__(self) -> None:
        super().__init__()
        self.queries = 0

    async def handle(self, request: web.Request) -> web.StreamResponse:
        q = request.query.get("q", "")
        if q.startswith("dmQuery/"):
            self.queries += 1
            maxrecs = int(q.split("/")[5])
            records = [{"pointer": str(i), "parentobject": "5"} for i in range(maxrecs)]
            return web.json_response({"pager": {"total": "99999"}, "records": records})
        if q.startswith("dmGetItemInfo/"):
            return web.json_response({"title": "Hostile"})
        if q.startswith("dmGetCompoundObjectInfo/maps/7/"):
            return web.json_response({"type": "Document", "page": ["x", 3]})
        if q.startswith("dmGetCompoundObjectInfo/maps/8/"):
            return web.json_response({"type": "Monograph", "node": {"node": ["x"]}})
        raise web.HTTPNotFound(text="not here")


def test_contentdm_answers_of_the_wrong_shape_are_502s_and_listing_ends(tmp_path: Path) -> None:
    async def check() -> None:
        async with HostileContentdm() as cdm:
            data = {"url": f"http://127.0.0.1:{cdm.port}", "collection": "maps", "retries": 0}
            async with opened("contentdm", data, tmp_path, "cdm") as src:
                for pointer in ("7", "8"):
                    try:
                        found = await src.record(pointer)
                    except (BackendError, UnusableObject) as exc:
                        assert "source 'cdm'" in exc.message
                    else:
                        assert found is None or found.canvases
                assert await asyncio.wait_for(src.names(5000), 10) == []
                assert cdm.queries <= 5000 // 1024 + 3

    run(check())


# --- review findings: surveys, placing, lenient sources ----------------------------------------


def _csv(tmp_path: Path, text: str, **columns: str) -> dict[str, Any]:
    (tmp_path / "cat.csv").write_text(text)
    return {"path": "cat.csv", "columns": {"object": "obj", "image": "img", **columns}}


def test_a_survey_sorts_each_object_once_and_places_each_row_left_out(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    from iiif_shim.presentation.sources import csv as csv_source

    rows = [f"book,{f'p{n}' if n % 2 else ''},{n}" for n in range(400, 0, -1)]
    data = _csv(tmp_path, "obj,img,n\n" + "\n".join(rows) + "\n", order="n")
    sorts = []
    original = csv_source.order_rows

    def counted(*args: Any) -> Any:
        sorts.append(1)
        return original(*args)

    monkeypatch.setattr(csv_source, "order_rows", counted)

    async def check() -> None:
        async with opened("csv", data, tmp_path, "cat") as src:
            survey = await src.survey(100)
            assert len(sorts) == 1  # once for the object, not once more per row left out
            assert survey.rows == 200 and survey.affected == 1
            # the row of n is line 402 - n; the even ones have no image
            lines = {p.where for p in survey.problems if p.kind == "row"}
            assert lines == {f"cat.csv line {402 - n}" for n in range(2, 401, 2)}

    run(check())


def test_a_record_keeps_the_places_of_its_rows_when_the_file_is_read_again(
    tmp_path: Path,
) -> None:
    data = _csv(tmp_path, "obj,img\nx,p1\nx,\nx,\n")

    async def check() -> None:
        async with opened("csv", data, tmp_path, "cat") as src:
            record = await src.record("x")
            assert record is not None
            (tmp_path / "cat.csv").write_text("obj,img\nx,p1\n")  # read again: one row
            assert await src.names(10) == ["x"]
            where = [p.where for p in src.problems(record)]
            assert where == ["cat.csv line 3", "cat.csv line 4"]

    run(check())


def test_a_long_cell_doubled_columns_and_rows_without_an_object(tmp_path: Path) -> None:
    long = "x" * 200_000  # more than Python's csv field limit (131072)
    text = f"obj,img,title,extra,extra\nbook,p1,{long},a,b\n,p2,,,\nbook,p3,T,,\n,,,,\n"
    data = _csv(tmp_path, text, label="title")

    async def check() -> None:
        async with opened("csv", data, tmp_path, "cat") as src:
            survey = await src.survey(10)
            assert survey.error is None, survey.error
            found = {(p.where, p.column, p.kind) for p in survey.problems}
            assert ("cat.csv line 2", "title", "cell") in found  # the cell left out, not the file
            assert ("cat.csv", "extra", "note") in found  # a column no setting names: a note
            assert ("cat.csv line 3", "obj", "row") in found  # no object name: counted
            assert not any(w == "cat.csv line 5" for w, _, _ in found)  # a blank row is nothing
            record = await src.record("book")
            assert record is not None and record.label == "book" and len(record.canvases) == 2
        twice = _csv(tmp_path, "obj,img,img\nbook,,p1\n")
        async with opened("csv", twice, tmp_path, "cat") as src:
            survey = await src.survey(10)
            assert survey.error is not None and "'img' (columns.image) more than once" in (
                survey.error
            )
            with pytest.raises(BackendError, match="more than once"):
                await src.record("book")

    run(check())


def test_a_json_catalogue_that_cannot_be_reached_is_down(tmp_path: Path) -> None:
    port = free_port()  # nothing listens there
    data = {"url": f"http://127.0.0.1:{port}/o/{{object}}", "objects": ["a", "b", "c"],
            "fields": {"images": "$.i"}, "retries": 0}  # fmt: skip

    async def check() -> None:
        async with opened("json", data, tmp_path, "api") as src:
            survey = await src.survey(100, 2)
            assert survey.error is not None, survey
            assert survey.error.startswith("every object read failed (2)"), survey.error
            assert survey.state.value == "down"
            assert src.remote

    run(check())


def test_contentdm_is_remote_and_its_free_text_takes_the_lenient_or_strict_way(
    cdm: Process, tmp_path: Path
) -> None:
    data = {"url": f"http://127.0.0.1:{cdm.port}", "collection": "maps", "retries": 0,
            "fields": {"nav_date": "date"}}  # fmt: skip

    async def check() -> None:
        async with opened("contentdm", data, tmp_path, "cdm") as src:
            assert src.remote  # checks read its list and a few objects, never all
            letters = await src.record("20")
            assert letters is not None and letters.nav_date is None
            said = {(s.field, s.note) for s in letters.skipped}
            assert said == {("rights", False), ("nav_date", True)}, letters.skipped
            shown = dict(_plain(letters.metadata))
            assert shown["Date"] == "circa 1900" and shown["Rights"] == "All rights reserved"
        strict = SourceContext(_blocking, {}, Router(()), strict=True)
        source = source_for("cdm", settings_of("contentdm", data, tmp_path))
        await source.start(strict)
        try:
            with pytest.raises(BackendError, match="object '20': rights:"):
                await source.record("20")
        finally:
            await source.close()

    run(check())


def test_a_folder_object_file_with_an_unknown_or_misshapen_key_is_served(tmp_path: Path) -> None:
    from PIL import Image

    images = tmp_path / "images"
    (images / "book").mkdir(parents=True)
    Image.new("RGB", (8, 8)).save(images / "book" / "p1.jpg")
    (images / "book" / "object.yaml").write_text("label: A book\ndate: 1887\nmetadata: [x]\n")
    config = {
        "backends": {"local": {"type": "files", "root": "images"}},
        "routes": [{"backend": "local"}],
        "presentation": {"sources": {"f": {"type": "folder", "backend": "local"}}},
    }
    for strict in (False, True):
        config["presentation"]["strict"] = strict  # type: ignore[index]
        settings = parse_settings(config, tmp_path)

        async def check(settings: Any = settings, strict: bool = strict) -> None:
            from iiif_shim.core.service import open_service
            from iiif_shim.presentation.service import open_presentation

            async with (
                open_service(settings.service()) as service,
                open_presentation(settings.presentation, service, watch=False) as pres,
            ):
                source = pres.sources["f"]
                if strict:
                    with pytest.raises(BackendError, match="object 'book': date: not a key"):
                        await source.record("book")
                    return
                record = await source.record("book")
                assert record is not None and record.label == "A book"
                left = {(p.where, p.column) for p in source.problems(record)}
                assert left == {("book/object.yaml", "date"), ("book/object.yaml", "metadata")}

        run(check())


def test_a_later_rows_access_other_than_the_first_rows_is_said_and_not_used(
    tmp_path: Path,
) -> None:
    """An object's access is its first row's: a later row naming another is left out and said
    (its page would be as open as the rest: its image by its route, its text by the object's
    access); presentation.strict refuses the object."""
    text = ("obj,img,acc\nmixed,p1,\nmixed,p2,staff\nmixed,p3,\n"
            "same,p1,staff\nsame,p2,staff\nsame,p3,\nother,p1,staff\nother,p2,vault\n")  # fmt: skip
    data = _csv(tmp_path, text, access="acc")

    async def check() -> None:
        async with opened("csv", data, tmp_path, "cat") as src:
            mixed = await src.record("mixed")
            assert mixed is not None and mixed.access is None
            assert [(p.where, p.column, p.reason) for p in src.problems(mixed)] == [
                ("cat.csv line 3", "acc",
                 "access 'staff' is not the object's (its first row's: none): an object's "
                 "access is its first row's, which guards its PDF, text and search; this "
                 "row's is not used"),
            ]  # fmt: skip
            same = await src.record("same")  # the same, or none: nothing to say
            assert same is not None and same.access == "staff" and not same.skipped
            other = await src.record("other")
            assert other is not None and other.access == "staff"
            assert ["'vault' is not the object's (its first row's: 'staff')" in p.reason
                    for p in src.problems(other)] == [True]  # fmt: skip
            survey = await src.survey(100)
            assert (survey.cells, survey.affected) == (2, 2)
        strict = source_for("cat", settings_of("csv", data, tmp_path))
        await strict.start(replace(CONTEXT, strict=True))
        try:
            with pytest.raises(BackendError, match="access 'staff' is not the object's"):
                await strict.record("mixed")
            assert await strict.record("same") is not None
        finally:
            await strict.close()

    run(check())
