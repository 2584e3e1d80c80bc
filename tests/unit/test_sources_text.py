"""Each object source gives its canvases their text (OCR), and reads it only where it may: CSV
paths under the CSV file's folder (never outside it, links included) and URLs on its own server
or its ``text_origins`` (a CSV read from a file: only those), a folder's sidecar files in every
format, a JSON catalogue's text URLs (relative to the object's URL), CONTENTdm's full-text
field per page through its stand-in. Files larger than the limit are refused naming the file
and the limit; stamps change when a file does. Real files and real HTTP on 127.0.0.1."""

from __future__ import annotations

import asyncio
import json
import os
import posixpath
import subprocess
import sys
import time
from collections.abc import AsyncIterator, Awaitable, Callable, Iterator
from contextlib import asynccontextmanager
from dataclasses import replace
from pathlib import Path
from typing import Any, TypeVar

import pytest
from aiohttp import web
from PIL import Image

from iiif_shim.base.errors import BackendError, BadRecord
from iiif_shim.base.schema import Reader
from iiif_shim.config.settings import parse_settings
from iiif_shim.core.routing import Router
from iiif_shim.model.text import TextFormat
from iiif_shim.presentation.records import ObjectRecord, TextRef
from iiif_shim.presentation.sources.base import ObjectSource, SourceContext
from iiif_shim.presentation.sources.registry import source_for
from iiif_shim.presentation.sources.settings import SOURCE_SETTINGS
from tests import ocr_files
from tests.servers import start_standin
from tests.support import Process, free_port

T = TypeVar("T")
ALTO = ocr_files.alto([[("Zürich", (10, 20, 100, 30)), ("harbour", (120, 20, 140, 30))]])
HOCR = ocr_files.hocr([[("Basel", (10, 20, 90, 30))]])
PLAIN = ocr_files.plain([["Bern", "station"]])


async def _blocking(fn: Callable[..., T], *args: Any) -> T:
    return await asyncio.to_thread(fn, *args)


CONTEXT = SourceContext(_blocking, {}, Router(()))


def run(coro: Awaitable[T]) -> T:
    async def main() -> T:
        return await coro

    return asyncio.run(main())


def settings_of(type_name: str, data: dict[str, Any], base: Path) -> Any:
    reader = Reader(base)
    settings = reader.read(SOURCE_SETTINGS[type_name], {"type": type_name, **data}, "s")
    assert settings is not None and not reader.problems, reader.problems
    return settings


def problems_of(type_name: str, data: dict[str, Any], base: Path) -> list[tuple[str, str]]:
    reader = Reader(base)
    reader.read(SOURCE_SETTINGS[type_name], {"type": type_name, **data}, "s")
    return reader.problems


@asynccontextmanager
async def opened(
    type_name: str, data: dict[str, Any], base: Path, *, strict: bool = False
) -> AsyncIterator[ObjectSource[Any]]:
    source = source_for("src", settings_of(type_name, data, base))
    await source.start(replace(CONTEXT, strict=strict))
    try:
        yield source
    finally:
        await source.close()


def texts(record: ObjectRecord | None) -> list[TextRef | None]:
    assert record is not None
    return [canvas.text for canvas in record.canvases]


class Files:
    """An HTTP server on 127.0.0.1 serving ``files`` (path -> body, headers), recording each
    request's path and Authorization header; ``redirects`` (path -> Location) are answered 302.
    With ``lax``, a path is read as IIS and servlet containers read it: ``\\`` a ``/``, a
    segment's ``;params`` dropped, then dot segments resolved."""

    def __init__(self, *, lax: bool = False) -> None:
        self.port = free_port()
        self.base = f"http://127.0.0.1:{self.port}"
        self.files: dict[str, tuple[bytes, dict[str, str]]] = {}
        self.redirects: dict[str, str] = {}
        self.seen: list[tuple[str, str | None]] = []
        self.lax = lax
        self._runner: web.AppRunner | None = None

    async def handle(self, request: web.Request) -> web.StreamResponse:
        self.seen.append((request.path, request.headers.get("Authorization")))
        if request.path in self.redirects:
            raise web.HTTPFound(self.redirects[request.path])
        path = request.path
        if self.lax:
            segments = [s.split(";", 1)[0] for s in path.replace("\\", "/").split("/")]
            path = posixpath.normpath("/".join(segments))
        found = self.files.get(path)
        if found is None:
            raise web.HTTPNotFound(text="not here")
        body, headers = found
        return web.Response(body=body, headers=headers)

    async def __aenter__(self) -> Files:
        app = web.Application()
        app.router.add_route("GET", "/{tail:.*}", self.handle)
        self._runner = web.AppRunner(app, access_log=None)
        await self._runner.setup()
        await web.TCPSite(self._runner, "127.0.0.1", self.port).start()
        return self

    async def __aexit__(self, *exc: object) -> None:
        assert self._runner is not None
        await self._runner.cleanup()


# --- CSV: files ---------------------------------------------------------------------------------


def _csv(folder: Path, rows: str, **more: Any) -> dict[str, Any]:
    (folder / "objects.csv").write_text("obj,img,ocr\n" + rows, encoding="utf-8")
    columns = {"object": "obj", "image": "img", "text": "ocr"}
    return {"path": "objects.csv", "columns": columns, **more}


def test_csv_text_paths_are_read_from_the_csv_files_folder_in_each_format(tmp_path: Path) -> None:
    data_dir = tmp_path / "data"
    (data_dir / "ocr").mkdir(parents=True)
    (data_dir / "ocr" / "p1.xml").write_bytes(ALTO)
    (data_dir / "ocr" / "p2.hocr").write_bytes(HOCR)
    (data_dir / "ocr" / "p3.txt").write_bytes(PLAIN)
    (data_dir / "ocr" / "p4.ocr").write_bytes(PLAIN)
    data = _csv(
        data_dir,
        "b,b/1,ocr/p1.xml\nb,b/2,ocr/p2.hocr\nb,b/3,./ocr/p3.txt\nb,b/4,"
        f"{data_dir / 'ocr' / 'p4.ocr'}\nb,b/5,\nplain,p/1,\n",
    )

    async def check() -> None:
        async with opened("csv", data, data_dir) as src:
            record = await src.record("b")
            assert texts(record) == [
                TextRef("ocr/p1.xml", "alto"),
                TextRef("ocr/p2.hocr", "hocr"),
                TextRef("./ocr/p3.txt", "plain"),
                TextRef(str(data_dir / "ocr" / "p4.ocr"), None),  # absolute, inside: allowed
                None,
            ]
            assert record is not None and record.has_text and not record.skipped
            first = await src.read_text(TextRef("ocr/p1.xml", "alto"), 1 << 20)
            assert first is not None
            assert (first.data, first.format, first.name) == (ALTO, TextFormat.ALTO, "ocr/p1.xml")
            third = await src.read_text(TextRef("./ocr/p3.txt", "plain"), 1 << 20)
            assert third is not None and third.data == PLAIN
            assert third.format is TextFormat.PLAIN
            unknown = await src.read_text(TextRef(str(data_dir / "ocr" / "p4.ocr")), 1 << 20)
            assert unknown is not None and unknown.format is None  # told from its bytes later
            plain = await src.record("plain")
            assert plain is not None and not plain.has_text
            # the stamp: size and modification time, as the file read carries it
            stamp = await src.text_stamp(TextRef("ocr/p1.xml", "alto"))
            assert stamp == first.stamp
            (data_dir / "ocr" / "p1.xml").write_bytes(ALTO + b" ")
            later = time.time_ns() + 10**9
            os.utime(data_dir / "ocr" / "p1.xml", ns=(later, later))
            assert await src.text_stamp(TextRef("ocr/p1.xml", "alto")) not in (None, stamp)
            # gone: None, not an error
            assert await src.text_stamp(TextRef("ocr/gone.xml")) is None
            assert await src.read_text(TextRef("ocr/gone.xml"), 1 << 20) is None
            # larger than the limit: refused, naming the file and the limit
            with pytest.raises(BadRecord, match=r"text file 'ocr/p1.xml' is larger than 100 b"):
                await src.read_text(TextRef("ocr/p1.xml", "alto"), 100)

    run(check())


def test_csv_text_paths_never_leave_the_csv_files_folder(tmp_path: Path) -> None:
    (tmp_path / "secret.txt").write_text("the password is swordfish")
    data_dir = tmp_path / "data"
    data_dir.mkdir()
    (data_dir / "link.txt").symlink_to(tmp_path / "secret.txt")  # a link that leads out
    (data_dir / "sub").mkdir()
    (data_dir / "sub" / "ok.txt").write_bytes(PLAIN)
    data = _csv(
        data_dir,
        "x,x/1,../secret.txt\nx,x/2,sub/../../secret.txt\n"
        f"x,x/3,{tmp_path / 'secret.txt'}\nx,x/4,sub/../sub/ok.txt\n",
    )

    async def check() -> None:
        async with opened("csv", data, data_dir) as src:
            record = await src.record("x")
            assert texts(record) == [None, None, None, TextRef("sub/../sub/ok.txt", "plain")]
            assert record is not None
            left = [(s.field, s.canvas, s.where, s.column, s.message) for s in record.skipped]
            assert left == [
                ("text", 0, "objects.csv line 2", "ocr",
                 "text file '../secret.txt' is outside the CSV file's folder"),
                ("text", 1, "objects.csv line 3", "ocr",
                 "text file 'sub/../../secret.txt' is outside the CSV file's folder"),
                ("text", 2, "objects.csv line 4", "ocr",
                 f"text file {str(tmp_path / 'secret.txt')!r} is outside the CSV file's folder"),
            ]  # fmt: skip
            # a reference made some other way is refused when read, never followed out
            for place in ("../secret.txt", str(tmp_path / "secret.txt"), "link.txt"):
                with pytest.raises(BadRecord, match="is outside its folder"):
                    await src.read_text(TextRef(place), 1 << 20)
                with pytest.raises(BadRecord, match="is outside its folder"):
                    await src.text_stamp(TextRef(place))
        async with opened("csv", data, data_dir, strict=True) as src:  # strict: refused
            with pytest.raises(BackendError, match="outside the CSV file's folder"):
                await src.record("x")

    run(check())


def test_a_survey_names_csv_text_files_that_cannot_be_read(tmp_path: Path) -> None:
    """What check-config --sources lists: each text path of the CSV that is not there, leads
    out of its folder (a link) or is not a file, by its line; the others say nothing (the
    objects are served: only those pages have no text)."""
    (tmp_path / "outside.txt").write_bytes(PLAIN)
    data_dir = tmp_path / "data"
    (data_dir / "ocr" / "dir.txt").mkdir(parents=True)
    (data_dir / "ocr" / "p1.txt").write_bytes(PLAIN)
    (data_dir / "ocr" / "link.txt").symlink_to(tmp_path / "outside.txt")
    rows = ("b,b/1,ocr/p1.txt\nb,b/2,ocr/missing.xml\nb,b/3,ocr/link.txt\nb,b/4,ocr/dir.txt\n"
            "b,b/5,\nc,c/1,ocr/p1.txt\n")  # fmt: skip
    data = _csv(data_dir, rows)

    async def check() -> None:
        async with opened("csv", data, data_dir) as src:
            survey = await src.survey(100)
            found = [(p.where, p.column, p.object, p.reason, p.kind) for p in survey.problems]
            assert found == [
                ("objects.csv line 3", "ocr", "b", "text file 'ocr/missing.xml' is not there",
                 "text"),
                ("objects.csv line 4", "ocr", "b", "text file 'ocr/link.txt' is outside its "
                 "folder", "text"),
                ("objects.csv line 5", "ocr", "b", "text file 'ocr/dir.txt' is not a regular "
                 "file", "text"),
            ]  # fmt: skip
            assert survey.texts == 3 and survey.as_json()["texts"] == 3
            assert survey.state.value == "ok"  # served all the same
            assert (survey.cells, survey.affected, survey.hidden) == (0, 0, 0)

    run(check())


def test_check_config_says_which_text_files_cannot_be_read(tmp_path: Path) -> None:
    (tmp_path / "images").mkdir()
    (tmp_path / "ocr").mkdir()
    (tmp_path / "ocr" / "p1.txt").write_bytes(PLAIN)
    (tmp_path / "objects.csv").write_text("obj,img,ocr\nb,b/1,ocr/p1.txt\nb,b/2,ocr/gone.txt\n")
    config = tmp_path / "shim.yaml"
    config.write_text(
        "backends:\n  local: {type: files, root: images}\nroutes:\n  - {backend: local}\n"
        "presentation:\n  sources:\n    cat:\n      type: csv\n      path: objects.csv\n"
        "      columns: {object: obj, image: img, text: ocr}\n"
    )
    command = [sys.executable, "-m", "iiif_shim", "check-config", str(config)]
    done = subprocess.run(command, capture_output=True, text=True, timeout=60, check=False)
    assert done.returncode == 0, done.stdout + done.stderr
    assert "warning: presentation.sources.cat: 1 text file cannot be read" in done.stdout
    listed = subprocess.run([*command, "--sources"], capture_output=True, text=True,
                            timeout=60, check=False)  # fmt: skip
    line = next(line for line in listed.stdout.splitlines() if "gone.txt" in line)
    assert "objects.csv line 3, column 'ocr': text file 'ocr/gone.txt' is not there" in line


def test_a_pipe_where_a_text_file_should_be_is_refused_not_waited_on(tmp_path: Path) -> None:
    os.mkfifo(tmp_path / "p1.txt")
    data = _csv(tmp_path, "x,x/1,p1.txt\n")

    async def check() -> None:
        async with opened("csv", data, tmp_path) as src:
            with pytest.raises(BadRecord, match=r"'p1\.txt' is not a regular file"):
                await asyncio.wait_for(src.read_text(TextRef("p1.txt"), 1 << 20), 10)

    run(check())


def test_a_csv_file_fetches_text_urls_only_from_its_text_origins(tmp_path: Path) -> None:
    async def check() -> None:
        async with Files() as ocr, Files() as other:
            ocr.files["/alto/p1.xml"] = (ALTO, {"ETag": '"v1"'})
            ocr.files["/big.xml"] = (ALTO * 10, {})
            other.files["/p1.txt"] = (PLAIN, {})
            rows = (
                f"x,x/1,{ocr.base}/alto/p1.xml\nx,x/2,{other.base}/p1.txt\n"
                f"x,x/3,{ocr.base}/private/p1.xml\n"
            )
            data = _csv(tmp_path, rows)
            async with opened("csv", data, tmp_path) as src:  # no text_origins: none
                record = await src.record("x")
                assert texts(record) == [None, None, None]
                assert record is not None and "only from those" in record.skipped[0].message
                with pytest.raises(BadRecord, match="not under the source's `text_origins`"):
                    await src.read_text(TextRef(f"{ocr.base}/alto/p1.xml"), 1 << 20)
            data = _csv(tmp_path, rows, text_origins=[f"{ocr.base}/alto"])
            async with opened("csv", data, tmp_path) as src:
                record = await src.record("x")
                assert texts(record) == [TextRef(f"{ocr.base}/alto/p1.xml", "alto"), None, None]
                assert record is not None
                assert [s.canvas for s in record.skipped] == [1, 2]
                read = await src.read_text(TextRef(f"{ocr.base}/alto/p1.xml", "alto"), 1 << 20)
                assert read is not None and read.data == ALTO and read.stamp == 'etag "v1"'
                assert read.name == f"{ocr.base}/alto/p1.xml"
                stamp = await src.text_stamp(TextRef(f"{ocr.base}/alto/p1.xml"))
                assert stamp == 'etag "v1"'
                assert await src.text_stamp(TextRef(f"{ocr.base}/alto/gone.xml")) is None
                assert await src.read_text(TextRef(f"{ocr.base}/alto/gone.xml"), 100) is None
                for refused in (f"{other.base}/p1.txt", f"{ocr.base}/alto-private/p1.xml"):
                    with pytest.raises(BadRecord, match="text_origins"):
                        await src.read_text(TextRef(refused), 1 << 20)
            assert other.seen == []  # never asked

    run(check())


# text URLs that stay under /alto/ only for servers that read "/" alone as a separator
LEAVING = ["/alto/..\\private/x.xml", "/alto/..%5Cprivate/x.xml", "/alto/..;/private/x.xml",
           "/alto/%c0%ae%c0%ae/private/x.xml", "/alto/..%255cprivate/x.xml"]  # fmt: skip


def test_text_urls_and_their_redirects_never_leave_a_text_origins_folder(tmp_path: Path) -> None:
    """Against a server that reads a backslash as a separator and drops ";params", as IIS and
    servlet containers do: none of these is fetched, and a redirect to one is refused."""

    async def check() -> None:
        async with Files(lax=True) as ocr:
            ocr.files["/alto/p1.xml"] = (ALTO, {})
            ocr.files["/private/x.xml"] = (b"not for you", {})
            ocr.redirects["/alto/moved.xml"] = "/alto/..%5Cprivate/x.xml"
            ocr.redirects["/alto/gone.xml"] = "/alto/..;/private/x.xml"
            rows = "".join(f"x,x/{i},{ocr.base}{path}\n" for i, path in enumerate(LEAVING))
            rows += f"x,x/8,{ocr.base}/alto/moved.xml\nx,x/9,{ocr.base}/alto/gone.xml\n"
            data = _csv(tmp_path, rows, text_origins=[f"{ocr.base}/alto"])
            async with opened("csv", data, tmp_path) as src:
                record = await src.record("x")
                assert texts(record)[: len(LEAVING)] == [None] * len(LEAVING)
                assert record is not None
                assert all("text_origins" in s.message for s in record.skipped), record.skipped
                for path in LEAVING:
                    with pytest.raises(BadRecord, match="text_origins"):
                        await src.read_text(TextRef(f"{ocr.base}{path}"), 1 << 20)
                for moved in ("/alto/moved.xml", "/alto/gone.xml"):
                    with pytest.raises(BackendError, match="redirected outside"):
                        await src.read_text(TextRef(f"{ocr.base}{moved}"), 1 << 20)
            assert {path for path, _ in ocr.seen} == {"/alto/moved.xml", "/alto/gone.xml"}

    run(check())


def test_csv_text_origins_are_checked(tmp_path: Path) -> None:
    columns = {"object": "o", "image": "i", "text": "t"}
    for bad in ("ftp://h", "http://u:p@h", "http://h/x?y=1", "no url", "http://h/{x}"):
        found = problems_of("csv", {"path": "x.csv", "columns": columns,
                                    "text_origins": [bad]}, tmp_path)  # fmt: skip
        assert [key for key, _ in found] == ["s.text_origins"], (bad, found)
    good = {"path": "x.csv", "columns": columns, "text_origins": ["https://h", "http://h:8/a/"]}
    assert problems_of("csv", good, tmp_path) == []
    data = {"url": "http://h/{object}", "fields": {"images": "$.i", "text": "$.t"},
            "text_origins": ["https://ocr.example.org/"]}  # fmt: skip
    assert problems_of("json", data, tmp_path) == []
    assert problems_of("json", {**data, "text_origins": ["x"]}, tmp_path)[0][0] == "s.text_origins"


# --- CSV read from a URL ------------------------------------------------------------------------


def test_a_csv_at_a_url_resolves_text_paths_against_it_and_sends_credentials_home_only(
    tmp_path: Path,
) -> None:
    async def check() -> None:
        async with Files() as cat, Files() as ocr:
            cat.files["/export/objects.csv"] = (
                f"obj,img,ocr\nx,x/1,ocr/p1.xml\nx,x/2,/other/p2.txt\nx,x/3,{ocr.base}/p3.hocr\n"
                f"x,x/4,//127.0.0.1:{ocr.port}/p4.txt\n".encode(),
                {},
            )
            cat.files["/export/ocr/p1.xml"] = (
                ALTO,
                {"Last-Modified": "Mon, 07 Dec 2026 06:00:00 GMT"},
            )
            cat.files["/other/p2.txt"] = (PLAIN, {})
            ocr.files["/p3.hocr"] = (HOCR, {"ETag": '"h"'})
            ocr.files["/p4.txt"] = (PLAIN, {})
            columns = {"object": "obj", "image": "img", "text": "ocr"}
            data = {"path": f"{cat.base}/export/objects.csv", "columns": columns,
                    "username": "reader", "password": "s3cret",
                    "text_origins": [f"{ocr.base}/"]}  # fmt: skip
            async with opened("csv", data, tmp_path) as src:
                record = await src.record("x")
                assert texts(record) == [
                    TextRef(f"{cat.base}/export/ocr/p1.xml", "alto"),
                    TextRef(f"{cat.base}/other/p2.txt", "plain"),
                    TextRef(f"{ocr.base}/p3.hocr", "hocr"),
                    TextRef(f"{ocr.base}/p4.txt", "plain"),
                ]
                assert record is not None
                for ref, body in zip(record.canvases, (ALTO, PLAIN, HOCR, PLAIN), strict=True):
                    assert ref.text is not None
                    read = await src.read_text(ref.text, 1 << 20)
                    assert read is not None and read.data == body
                first = await src.read_text(TextRef(f"{cat.base}/export/ocr/p1.xml"), 1 << 20)
                assert first is not None
                assert first.stamp == f"modified Mon, 07 Dec 2026 06:00:00 GMT {len(ALTO)}"
                assert await src.text_stamp(TextRef(f"{cat.base}/export/ocr/p1.xml")) == (
                    first.stamp
                )
                # no ETag, no Last-Modified: its stamp says so (read again), its bytes' hash
                assert await src.text_stamp(TextRef(f"{cat.base}/other/p2.txt")) == "unvalidated"
                second = await src.read_text(TextRef(f"{cat.base}/other/p2.txt"), 1 << 20)
                assert second is not None and second.stamp.startswith("sha256 ")
                with pytest.raises(BadRecord, match=r"'http://127.0.0.1:\d+/other/p2.txt' is "
                                   r"larger than 5 bytes"):  # fmt: skip
                    await src.read_text(TextRef(f"{cat.base}/other/p2.txt?key=1"), 5)
            home = {auth for path, auth in cat.seen}
            assert home == {"Basic cmVhZGVyOnMzY3JldA=="}  # its own server: its credentials
            assert ocr.seen and all(auth is None for _, auth in ocr.seen)  # never elsewhere

    run(check())


# --- folder sidecars ----------------------------------------------------------------------------


def _folder_config(root: Path) -> dict[str, Any]:
    return {
        "backends": {"local": {"type": "files", "root": str(root)}},
        "routes": [{"backend": "local"}],
        "presentation": {"sources": {"f": {"type": "folder", "backend": "local"}}},
    }


@asynccontextmanager
async def folder_source(root: Path, base: Path) -> AsyncIterator[ObjectSource[Any]]:
    from iiif_shim.core.service import open_service
    from iiif_shim.presentation.service import open_presentation

    settings = parse_settings(_folder_config(root), base)
    async with (
        open_service(settings.service()) as service,
        open_presentation(settings.presentation, service, watch=False) as pres,
    ):
        yield pres.sources["f"]


def test_folder_sidecars_in_every_format_the_first_found_in_order(tmp_path: Path) -> None:
    root = tmp_path / "images"
    book = root / "book"
    book.mkdir(parents=True)
    for stem in ("p1", "p2", "p3", "p4", "p5", "p6", "p7"):
        Image.new("RGB", (8, 8)).save(book / f"{stem}.jpg")
    (book / "p1.xml").write_bytes(ALTO)
    (book / "p1.txt").write_bytes(PLAIN)  # .xml comes first
    (book / "p2.alto").write_bytes(ALTO)
    (book / "p3.hocr").write_bytes(HOCR)
    (book / "p3.txt").write_bytes(PLAIN)
    (book / "p4.HTML").write_bytes(HOCR)  # any case
    (book / "p5.txt").write_bytes(PLAIN)
    (book / "p6.json").write_text("{}")  # not a text sidecar
    (tmp_path / "outside.txt").write_text("not for you")
    (book / "p7.txt").symlink_to(tmp_path / "outside.txt")  # leads out of the root
    (root / "plain").mkdir()
    Image.new("RGB", (8, 8)).save(root / "plain" / "1.jpg")

    async def check() -> None:
        async with folder_source(root, tmp_path) as src:
            record = await src.record("book")
            assert texts(record) == [
                TextRef("book/p1.xml", "alto"),
                TextRef("book/p2.alto", "alto"),
                TextRef("book/p3.hocr", "hocr"),
                TextRef("book/p4.HTML", "hocr"),
                TextRef("book/p5.txt", "plain"),
                None,
                TextRef("book/p7.txt", "plain"),
            ]
            for ref, body in ((TextRef("book/p1.xml", "alto"), ALTO),
                              (TextRef("book/p4.HTML", "hocr"), HOCR)):  # fmt: skip
                read = await src.read_text(ref, 1 << 20)
                assert read is not None and read.data == body and read.name == ref.where
                assert read.stamp == await src.text_stamp(ref)
            stamp = await src.text_stamp(TextRef("book/p5.txt"))
            (book / "p5.txt").write_bytes(PLAIN + PLAIN)
            assert await src.text_stamp(TextRef("book/p5.txt")) not in (None, stamp)
            with pytest.raises(BadRecord, match=r"'book/p1.xml' is larger than 10 bytes"):
                await src.read_text(TextRef("book/p1.xml"), 10)
            # what leads out of the backend's root is never read, and said as such (a link
            # leading out is not a file that is not there)
            for place in ("book/p7.txt", "../outside.txt", "book/../../outside.txt"):
                with pytest.raises(BadRecord, match=r"text file '.*' is outside its folder"):
                    await src.read_text(TextRef(place), 1 << 20)
                with pytest.raises(BadRecord, match=r"text file '.*' is outside its folder"):
                    await src.text_stamp(TextRef(place))
            assert await src.read_text(TextRef("book/gone.txt"), 1 << 20) is None
            assert await src.text_stamp(TextRef("book/gone.txt")) is None
            plain = await src.record("plain")
            assert plain is not None and not plain.has_text

    run(check())


# --- JSON catalogue -----------------------------------------------------------------------------


def test_json_text_urls_relative_to_the_object_and_only_on_its_origins(tmp_path: Path) -> None:
    async def check() -> None:
        async with Files() as cat, Files() as ocr:
            doc = {
                "files": [
                    {"id": "b/1", "alto": "ocr/1.xml"},
                    {"id": "b/2", "alto": f"{ocr.base}/2.hocr"},
                    {"id": "b/3", "alto": "/elsewhere/3"},
                    {"id": "b/4", "alto": ""},
                    {"id": "b/5", "alto": "http://u:p@127.0.0.1:1/x.txt"},
                ]
            }
            cat.files["/api/items/book"] = (json.dumps(doc).encode(), {})
            cat.files["/api/items/ocr/1.xml"] = (ALTO, {"ETag": '"1"'})
            cat.files["/elsewhere/3"] = (PLAIN, {})
            ocr.files["/2.hocr"] = (HOCR, {})
            data = {
                "url": f"{cat.base}/api/items/{{object}}",
                "objects": ["book"],
                "fields": {"images": "$.files[*].id", "text": "$.files[*].alto"},
            }
            async with opened("json", data, tmp_path) as src:
                record = await src.record("book")
                assert texts(record) == [
                    TextRef(f"{cat.base}/api/items/ocr/1.xml", "alto"),
                    None,  # another server
                    TextRef(f"{cat.base}/elsewhere/3", None),
                    None,
                    None,  # credentials in it
                ]
                assert record is not None
                assert [(s.field, s.canvas) for s in record.skipped] == [("text", 1), ("text", 4)]
                assert "list it in `text_origins`" in record.skipped[0].message
                assert "holds credentials" in record.skipped[1].message
                read = await src.read_text(TextRef(f"{cat.base}/api/items/ocr/1.xml"), 1 << 20)
                assert read is not None and read.data == ALTO and read.stamp == 'etag "1"'
                third = await src.read_text(TextRef(f"{cat.base}/elsewhere/3"), 1 << 20)
                assert third is not None and third.format is None
            async with opened("json", {**data, "text_origins": [ocr.base]}, tmp_path) as src:
                record = await src.record("book")
                assert texts(record)[1] == TextRef(f"{ocr.base}/2.hocr", "hocr")
                read = await src.read_text(TextRef(f"{ocr.base}/2.hocr", "hocr"), 1 << 20)
                assert read is not None and read.data == HOCR
                with pytest.raises(BadRecord, match=r"2.hocr' is larger than 20 bytes"):
                    await src.read_text(TextRef(f"{ocr.base}/2.hocr"), 20)
            async with opened("json", data, tmp_path, strict=True) as src:
                with pytest.raises(BackendError, match="text_origins"):
                    await src.record("book")

    run(check())


# --- CONTENTdm ----------------------------------------------------------------------------------

ITEMS = {
    "20": {
        "title": "Letters",
        "cpd": {"type": "Document", "page": [
            {"pagetitle": "Front", "pagefile": "21.jp2", "pageptr": "21"},
            {"pagetitle": "Back", "pagefile": "22.jp2", "pageptr": "22"},
        ]},
    },
    "21": {"title": "Front", "full": "Dear Z&uuml;rich &amp; Basel,"},
    "22": {"title": "Back", "full": ""},
    "10": {"title": "A map", "full": "Bern"},
}  # fmt: skip


@pytest.fixture(scope="module")
def cdm(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Process]:
    root = tmp_path_factory.mktemp("cdm-text")
    (root / "letters").mkdir()
    (root / "letters" / "items.json").write_text(json.dumps(ITEMS))
    proc = start_standin("contentdm", root, tmp_path_factory.mktemp("cdm-text-log"))
    yield proc
    proc.stop()


def test_contentdm_full_text_per_page(cdm: Process, tmp_path: Path) -> None:
    async def check() -> None:
        data = {"url": f"http://127.0.0.1:{cdm.port}", "collection": "letters", "retries": 0}
        async with opened("contentdm", data, tmp_path) as src:  # no full-text field: no text
            record = await src.record("20")
            assert texts(record) == [None, None]
        data["fields"] = {"text": "full"}
        async with opened("contentdm", data, tmp_path) as src:
            record = await src.record("20")
            assert texts(record) == [TextRef("21", "plain"), TextRef("22", "plain")]
            assert texts(await src.record("10")) == [TextRef("10", "plain")]
            front = await src.read_text(TextRef("21", "plain"), 1 << 20)
            assert front is not None
            assert front.data == "Dear Zürich & Basel,".encode()
            assert front.format is TextFormat.PLAIN and front.name == "page 21 (full)"
            assert await src.text_stamp(TextRef("21", "plain")) == front.stamp
            back = await src.read_text(TextRef("22", "plain"), 1 << 20)
            assert back is not None and back.data == b""  # a page without words
            assert await src.read_text(TextRef("99", "plain"), 1 << 20) is None
            assert await src.text_stamp(TextRef("99", "plain")) is None
            with pytest.raises(BadRecord, match=r"page 21 \(full\) is larger than 4 bytes"):
                await src.read_text(TextRef("21", "plain"), 4)
            with pytest.raises(BadRecord, match="not a page with text"):
                await src.read_text(TextRef("../21", "plain"), 1 << 20)

    run(check())


def test_a_text_value_that_is_neither_a_path_nor_an_http_url_is_refused(tmp_path: Path) -> None:
    (tmp_path / "secret.txt").write_text("not for you")

    async def check() -> None:
        async with Files() as cat:
            secret = f"file://{tmp_path / 'secret.txt'}"
            cat.files["/objects.csv"] = (f"obj,img,ocr\nx,x/1,{secret}\n".encode(), {})
            columns = {"object": "obj", "image": "img", "text": "ocr"}
            data = {"path": f"{cat.base}/objects.csv", "columns": columns}
            async with opened("csv", data, tmp_path) as src:
                record = await src.record("x")
                assert texts(record) == [None]
                assert record is not None and "not an http(s) URL" in record.skipped[0].message
                with pytest.raises(BadRecord, match="not an http"):
                    await src.read_text(TextRef(secret), 1 << 20)
                with pytest.raises(BadRecord, match="not an http"):
                    await src.read_text(TextRef("secret.txt"), 1 << 20)
        data = _csv(tmp_path, "y,y/1,ftp://h/p1.xml\ny,y/2,secret.txt\n")
        async with opened("csv", data, tmp_path) as src:
            record = await src.record("y")
            assert texts(record) == [None, TextRef("secret.txt", "plain")]
            assert record is not None and "not an http(s) URL" in record.skipped[0].message

    run(check())


def test_json_text_urls_stay_with_their_images(tmp_path: Path) -> None:
    async def check() -> None:
        async with Files() as cat:
            files = [{"id": "b/1", "alto": "1.xml"}, {"id": "b/2", "alto": None},
                     {"id": "b/3", "alto": "3.txt"}]  # fmt: skip
            cat.files["/api/items/nulls"] = (json.dumps({"files": files}).encode(), {})
            files = [{"id": "b/1", "alto": "1.xml"}, {"id": "b/2"}, {"id": "b/3", "alto": "3.txt"}]
            cat.files["/api/items/missing"] = (json.dumps({"files": files}).encode(), {})
            files = [{"id": "b/1", "alto": {"url": "1.xml"}}]
            cat.files["/api/items/object"] = (json.dumps({"files": files}).encode(), {})
            data = {
                "url": f"{cat.base}/api/items/{{object}}",
                "fields": {"images": "$.files[*].id", "text": "$.files[*].alto"},
            }
            async with opened("json", data, tmp_path) as src:
                assert texts(await src.record("nulls")) == [
                    TextRef(f"{cat.base}/api/items/1.xml", "alto"),
                    None,
                    TextRef(f"{cat.base}/api/items/3.txt", "plain"),
                ]
                missing = await src.record("missing")  # 2 for 3 images: which is whose?
                assert texts(missing) == [None, None, None]
                assert missing is not None
                assert [s.message for s in missing.skipped] == [
                    '2 values at $.files[*].alto for 3 images: give each image one (null or "" '
                    "for none)"
                ]
                wrong = await src.record("object")
                assert texts(wrong) == [None] and wrong is not None
                assert (
                    wrong.skipped[0].message == "matches an object, not a URL, at $.files[*].alto"
                )

    run(check())
