"""``iiif-shim index``, run as the real command on a configuration of real files: its progress
and summary, incremental runs (on SQLite and on PostgreSQL), a hostile OCR file named with its
reason, a file its server did not give counted apart from a refused one, why the index cannot
be used (never with the password of its URL), objects dropped, its exit statuses; and a
server: searching what the command indexed, indexing an object once for searches at once
(503 with ``Retry-After`` meanwhile), a reload."""

from __future__ import annotations

import json
import os
import re
import signal
import subprocess
import sys
from pathlib import Path
from typing import Any

import pytest
from PIL import Image

from tests import ocr_files
from tests.support import ROOT, start_faulty, start_shim, wait_until

CANVAS = (400, 300)
PAGE = (800, 600)
SUMMARY = re.compile(
    r"indexed: (?P<objects>\d+) objects, (?P<pages>\d+) pages indexed, (?P<unchanged>\d+) "
    r"unchanged, (?P<refused>\d+) refused, (?P<unread>\d+) not read now, (?P<removed>\d+) "
    r"pages and (?P<dropped>\d+) objects dropped, (?P<failed>\d+) objects or sources not "
    r"read, in [\d.]+s \([\d.]+ pages/s\)"
)


def _page(word: str) -> bytes:
    return ocr_files.alto([[(word, (100, 100, 200, 40)), ("common", (320, 100, 160, 40))]], PAGE)


def catalogue(tmp: Path, extra: str = "", books: int = 2, pages: int = 3) -> Path:
    """``books`` objects of ``pages`` canvases, each page with its own word (``b1p2``) and
    ``common``; an object without text; the configuration (``extra``: its ``search:``
    keys)."""
    images = tmp / "images"
    images.mkdir(parents=True, exist_ok=True)
    Image.new("RGB", CANVAS, (220, 220, 220)).save(images / "page.png")
    (tmp / "ocr").mkdir(exist_ok=True)
    rows = ["object,image,text"]
    for b in range(1, books + 1):
        for p in range(1, pages + 1):
            (tmp / "ocr" / f"b{b}p{p}.xml").write_bytes(_page(f"b{b}p{p}"))
            rows.append(f"book{b},page,ocr/b{b}p{p}.xml")
    rows.append("bare,page,")
    (tmp / "objects.csv").write_text("\n".join(rows) + "\n")
    config = ocr_files.catalogue_config(tmp, extra or "folder: index\n")
    return config


def index(config: Path, *args: str) -> subprocess.CompletedProcess[str]:
    command = [sys.executable, "-m", "iiif_shim", "index", "--config", str(config), *args]
    return subprocess.run(
        command, capture_output=True, text=True, timeout=300, cwd=ROOT, check=False
    )


def summary(done: subprocess.CompletedProcess[str]) -> dict[str, int]:
    found = SUMMARY.search(done.stdout)
    assert found is not None, (done.stdout, done.stderr)
    return {key: int(value) for key, value in found.groupdict().items()}


def test_a_run_says_its_progress_and_its_summary(tmp_path: Path) -> None:
    config = catalogue(tmp_path)
    done = index(config)
    assert done.returncode == 0, done.stderr
    assert summary(done) == {"objects": 3, "pages": 6, "unchanged": 0, "refused": 0,
                             "unread": 0, "removed": 0, "dropped": 0, "failed": 0}  # fmt: skip
    # not a terminal: plain progress lines, the last one when done
    lines = [line for line in done.stderr.splitlines() if line.startswith("index: ")]
    assert lines and lines[-1].startswith("index: 3/3 objects, 6 pages (6 indexed"), done.stderr
    assert "\r" not in done.stderr
    assert (tmp_path / "index" / "index.sqlite").is_file()


def _incremental(tmp_path: Path, search: str) -> None:
    config = catalogue(tmp_path, search)
    first = index(config)
    assert first.returncode == 0, first.stderr
    assert summary(first)["pages"] == 6
    # a file's bytes replaced by garbage of the same size and time: a run that read it would
    # refuse it; an incremental one does not read it (its stamp is the same)
    kept = tmp_path / "ocr" / "b1p1.xml"
    stat = kept.stat()
    kept.write_bytes(b"\0" * stat.st_size)
    os.utime(kept, ns=(stat.st_atime_ns, stat.st_mtime_ns))
    second = index(config)
    assert second.returncode == 0, second.stderr
    assert summary(second) == {"objects": 3, "pages": 0, "unchanged": 6, "refused": 0,
                               "unread": 0, "removed": 0, "dropped": 0, "failed": 0}  # fmt: skip
    # a changed file is read again, and only it
    (tmp_path / "ocr" / "b2p3.xml").write_bytes(_page("changed"))
    third = index(config)
    assert third.returncode == 0, third.stderr
    assert (summary(third)["pages"], summary(third)["unchanged"]) == (1, 5)
    # what the index now holds, as a server answers from it (without indexing anything): the
    # changed page's new word, and its old one no more
    server = start_shim(config, tmp_path)
    try:
        found = json.loads(server.get("/iiif/search/2/book2?q=changed").body)
        assert [item["body"]["value"] for item in found["items"]] == ["changed"], found
        assert found["items"][0]["target"].split("#")[0].endswith("/canvas/3"), found
        assert json.loads(server.get("/iiif/search/2/book2?q=b2p3").body)["items"] == []
        kept = json.loads(server.get("/iiif/search/2/book2?q=b2p2").body)
        assert len(kept["items"]) == 1  # the pages not read again still found
        assert "indexed:" not in server.log.read_text()
    finally:
        server.stop()
    # --force reads every file (and so finds the garbage)
    forced = index(config, "--force")
    assert forced.returncode == 1
    assert summary(forced)["pages"] == 5 and summary(forced)["refused"] == 1
    assert "refused ocr/b1p1.xml (object 'book1', canvas 1): " in forced.stderr


def test_a_second_run_reads_only_what_changed(tmp_path: Path) -> None:
    _incremental(tmp_path, "folder: index\n")


def test_a_second_run_reads_only_what_changed_on_postgres(
    tmp_path: Path, request: pytest.FixtureRequest
) -> None:
    dsn = request.getfixturevalue("postgres_dsn")
    _incremental(tmp_path, f"postgres: {json.dumps(dsn)}\n")


def test_a_hostile_file_is_named_with_its_reason_and_the_rest_is_indexed(tmp_path: Path) -> None:
    config = catalogue(tmp_path)
    (tmp_path / "ocr" / "b2p2.xml").write_bytes(ocr_files.billion_laughs())
    done = index(config)
    assert done.returncode == 1
    assert summary(done)["pages"] == 5 and summary(done)["refused"] == 1
    (line,) = [line for line in done.stderr.splitlines() if "refused " in line]
    assert line.startswith("index: refused ocr/b2p2.xml (object 'book2', canvas 2): ")
    assert "entit" in line.lower(), line  # why: it declares entities
    # the next run says it again without reading it, until it changes
    again = index(config)
    assert again.returncode == 1 and summary(again)["refused"] == 1
    assert summary(again)["pages"] == 0
    (tmp_path / "ocr" / "b2p2.xml").write_bytes(_page("mended"))
    mended = index(config)
    assert mended.returncode == 0 and summary(mended)["pages"] == 1


def test_a_file_its_server_did_not_give_is_not_read_now_apart_from_a_refused_one(
    tmp_path: Path,
) -> None:
    """Of one object's pages, one on a text server that answers 503, one hostile file: the
    first is "not read now" (tried again at the next run), the second "refused" (remembered
    until it changes), each on its own line and in its own count of the summary."""
    catalogue(tmp_path, books=1, pages=3)
    (tmp_path / "ocr" / "b1p3.xml").write_bytes(ocr_files.billion_laughs())
    upstream = start_faulty(tmp_path / "ocr", tmp_path)
    try:
        origin = f"http://127.0.0.1:{upstream.port}"
        csv = tmp_path / "objects.csv"
        csv.write_text(csv.read_text().replace("ocr/b1p2.xml", f"{origin}/status/503/b1p2.xml"))
        config = tmp_path / "shim.yaml"
        columns = "columns: {object: object, image: image, text: text}"
        config.write_text(
            config.read_text().replace(columns, f'{columns}\n      text_origins: ["{origin}/"]')
        )
        first = index(config)
        assert first.returncode == 1, first.stderr
        found = summary(first)
        assert (found["pages"], found["refused"], found["unread"], found["failed"]) == (1, 1, 1, 0)
        said = [line for line in first.stderr.splitlines() if "canvas " in line]
        assert len(said) == 2, first.stderr
        where = f"{origin}/status/503/b1p2.xml (object 'book1', canvas 2)"
        assert said[0].startswith(f"index: {where}: not read now: "), said
        assert said[0].endswith("(read at the next run)")
        assert said[1].startswith("index: refused ocr/b1p3.xml (object 'book1', canvas 3): ")
        asked = json.loads(upstream.get("/_stats").body)["paths"]["/status/503/b1p2.xml"]
        # the next run asks its server again; the refused file is not read again
        again = index(config)
        assert again.returncode == 1, again.stderr
        found = summary(again)
        assert (found["pages"], found["unchanged"], found["refused"], found["unread"]) == (
            0, 1, 1, 1,
        )  # fmt: skip
        assert json.loads(upstream.get("/_stats").body)["paths"]["/status/503/b1p2.xml"] > asked
    finally:
        upstream.stop()


@pytest.mark.parametrize("engine", ["sqlite", "postgres"])
def test_why_the_index_cannot_be_used_is_said_without_its_password(
    tmp_path: Path, engine: str
) -> None:
    """An SQLite file that cannot be opened (a folder in its place), a PostgreSQL URL (with a
    password) on a port where nothing listens: the command says what its engine said (as the
    server logs it), and never the password."""
    if engine == "sqlite":
        config = catalogue(tmp_path)
        (tmp_path / "index" / "index.sqlite").mkdir(parents=True)
        told = "unable to open database file"
    else:
        dsn = "postgresql://shim:hunter2secret@127.0.0.1:1/iiif"
        config = catalogue(tmp_path, f"postgres: {json.dumps(dsn)}\n")
        told = "Connection refused"
    done = index(config)
    assert done.returncode == 1, done.stderr
    (line,) = [line for line in done.stderr.splitlines() if "search index" in line]
    assert line.startswith("index: the search index cannot be read: the search index ("), line
    assert told in line, line
    assert "hunter2" not in done.stdout + done.stderr


def test_a_damaged_index_is_set_aside_and_made_again(tmp_path: Path) -> None:
    """An SQLite file cut short (or of garbage): the command sets it aside, says so, and
    indexes every object into a new one (which the next run finds unchanged)."""
    config = catalogue(tmp_path)
    assert index(config).returncode == 0
    path = tmp_path / "index" / "index.sqlite"
    with path.open("r+b") as file:
        file.truncate(path.stat().st_size // 2)
    with path.open("r+b") as file:
        file.seek(100)
        file.write(b"\xff" * 30000)  # the schema's pages too: no read of it succeeds
    for suffix in ("-wal", "-shm"):
        Path(f"{path}{suffix}").unlink(missing_ok=True)
    done = index(config)
    assert done.returncode == 0, done.stderr
    assert summary(done)["pages"] == 6, done.stdout
    (said,) = [line for line in done.stderr.splitlines() if "set aside" in line]
    assert str(path) in said and "damaged" in said, said
    assert [p.name for p in path.parent.iterdir() if ".damaged-" in p.name], said
    again = index(config)
    assert summary(again)["unchanged"] == 6 and "set aside" not in again.stderr


def test_objects_and_pages_no_longer_there_are_dropped(tmp_path: Path) -> None:
    config = catalogue(tmp_path)
    assert index(config).returncode == 0
    csv = tmp_path / "objects.csv"
    rows = [
        r
        for r in csv.read_text().splitlines()
        if not r.startswith(("book1,", "book2,page,ocr/b2p3"))
    ]
    csv.write_text("\n".join(rows) + "\n")
    done = index(config)
    assert done.returncode == 0, done.stderr
    found = summary(done)
    assert (found["dropped"], found["removed"], found["objects"]) == (1, 1, 2)


def test_one_source_or_one_object(tmp_path: Path) -> None:
    config = catalogue(tmp_path)
    done = index(config, "--object", "book2")
    assert done.returncode == 0, done.stderr
    assert (summary(done)["objects"], summary(done)["pages"]) == (1, 3)
    done = index(config, "--source", "catalogue")
    assert done.returncode == 0, done.stderr
    assert (summary(done)["pages"], summary(done)["unchanged"]) == (3, 3)
    bare = index(config, "--object", "bare")
    assert bare.returncode == 0 and "object 'bare' has no text" in bare.stderr


@pytest.mark.parametrize(
    ("args", "said"),
    [
        (("--source", "nowhere"), "no object source named 'nowhere'"),
        (("--object", "nothing"), "no object named 'nothing' in any source"),
        (("--jobs", "0"), "--jobs must be 1 to 64"),
    ],
)
def test_unknown_sources_and_objects_are_exit_2(
    tmp_path: Path, args: tuple[str, ...], said: str
) -> None:
    done = index(catalogue(tmp_path), *args)
    assert (done.returncode, done.stdout) == (2, ""), done.stderr
    assert said in done.stderr


def test_a_configuration_with_problems_is_exit_2(tmp_path: Path) -> None:
    config = catalogue(tmp_path, "page_size: 0\n")
    done = index(config)
    assert done.returncode == 2
    assert "search.page_size" in done.stderr


def test_a_server_searches_what_the_command_indexed(tmp_path: Path) -> None:
    config = catalogue(tmp_path)
    assert index(config).returncode == 0
    server = start_shim(config, tmp_path)
    try:
        answer = server.get("/iiif/search/2/book2?q=b2p3")
        assert answer.status == 200, answer.text
        doc: dict[str, Any] = json.loads(answer.body)
        assert len(doc["items"]) == 1
        assert "indexed:" not in server.log.read_text()  # nothing indexed again
    finally:
        server.stop()


def test_a_server_indexes_an_object_once_for_searches_at_once(tmp_path: Path) -> None:
    """Two searches of an object nobody indexed yet, with ``build_wait: 0``: 503 with
    ``Retry-After`` while it is being indexed, one build, then answers."""
    config = catalogue(tmp_path, "folder: index\nbuild_wait: 0\n", books=1, pages=40)
    server = start_shim(config, tmp_path)
    try:
        first = server.get("/iiif/search/2/book1?q=common")
        assert first.status == 503, first.text
        assert int(first.header("Retry-After") or 0) >= 1
        assert "being indexed" in first.text
        answers: list[int] = []

        def answered() -> bool:
            answers.append(server.get("/iiif/search/1/book1?q=b1p40").status)
            return answers[-1] == 200

        wait_until(answered, "answered once the object is indexed")
        assert set(answers) <= {200, 503}
        built = [line for line in server.log.read_text().splitlines()
                 if "object 'book1' indexed" in line]  # fmt: skip
        assert len(built) == 1, built
    finally:
        server.stop()


def test_a_reload_keeps_searching_and_a_shutdown_is_clean(tmp_path: Path) -> None:
    config = catalogue(tmp_path)
    server = start_shim(config, tmp_path)
    try:
        path = "/iiif/search/2/book1?q=common"
        assert len(json.loads(server.get(path).body)["items"]) == 3
        # the new configuration's own search service: one hit a page now
        config.write_text(
            config.read_text().replace("folder: index", "folder: index\n  page_size: 1")
        )
        server.proc.send_signal(signal.SIGHUP)

        def reloaded() -> bool:
            answer = server.get(path)
            assert answer.status == 200, answer.text
            return len(json.loads(answer.body)["items"]) == 1

        wait_until(reloaded, "searching with the reloaded configuration")
        assert len(json.loads(server.get("/iiif/search/1/book2?q=b2p1").body)["resources"]) == 1
        server.proc.send_signal(signal.SIGTERM)
        assert server.proc.wait(30) == 0
        # the old configuration's search service closed on reload, the new one at the end
        assert "Traceback" not in server.log.read_text()
        assert "closing the previous configuration failed" not in server.log.read_text()
    finally:
        server.stop()


def test_past_build_wait_a_search_of_slow_text_files_gets_503_and_the_build_goes_on(
    tmp_path: Path,
) -> None:
    """Text files on an upstream that answers each request after 1 s, ``build_wait: 0.5``:
    the first searches get 503 with ``Retry-After``, one build reads each file once (a file
    never indexed is not asked for its stamp first), and the same search is answered once it
    is done."""
    catalogue(tmp_path, books=1, pages=4)
    upstream = start_faulty(tmp_path / "ocr", tmp_path)
    try:
        origin = f"http://127.0.0.1:{upstream.port}"
        rows = (tmp_path / "objects.csv").read_text().replace("ocr/", f"{origin}/delay/1/")
        (tmp_path / "objects.csv").write_text(rows)
        config = tmp_path / "shim.yaml"
        columns = "columns: {object: object, image: image, text: text}"
        text = config.read_text().replace(columns, f'{columns}\n      text_origins: ["{origin}/"]')
        config.write_text(text.replace("folder: index", "folder: index\n  build_wait: 0.5"))
        server = start_shim(config, tmp_path)
        try:
            path = "/iiif/search/2/book1?q=b1p4"
            first, second = server.get(path), server.get(path)
            for answer in (first, second):
                assert answer.status == 503, answer.text
                assert int(answer.header("Retry-After") or 0) >= 1
            wait_until(lambda: server.get(path).status == 200, "answered once indexed")
            assert len(json.loads(server.get(path).body)["items"]) == 1
            stats = json.loads(upstream.get("/_stats").body)["paths"]
            files = {p: n for p, n in stats.items() if p.startswith("/delay/")}
            assert len(files) == 4 and set(files.values()) == {1}, files  # read (no stamp)
        finally:
            server.stop()
    finally:
        upstream.stop()
