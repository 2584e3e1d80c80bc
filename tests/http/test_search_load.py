"""Searches under load and misuse, over a real shim (the server process, SQLite): many slow
searches of one large object, each another query, whose clients go away, do not keep the
process counting for them (each is stopped, logged 499, and a search of another object is
answered); more slow searches than the process counts at once and lets wait are refused at
once (503 with Retry-After), never queued without end."""

from __future__ import annotations

import asyncio
import random
import time
from collections.abc import Iterator
from pathlib import Path

import aiohttp
import pytest
from PIL import Image

from tests import ocr_files
from tests.support import Process, log_lines, start_shim

LINES, PER_LINE = 500, 100  # a newspaper page of 50,000 words, "w<number>"
PAGES = 2
SLOW = 60  # distinct slow queries at once: more than the slots and line of a process (4 + 16)


def _slow_queries() -> list[str]:
    # prefixes each matching thousands of the page's words: a slow count, each query another
    return [f"w{a}* w{b}* w{c}*" for a in range(1, 10) for b in range(1, 10) for c in (1, 2)][:SLOW]


@pytest.fixture(scope="module")
def shim(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Process]:
    tmp = tmp_path_factory.mktemp("search-load")
    (tmp / "images").mkdir()
    (tmp / "ocr").mkdir()
    Image.new("RGB", (800, 1000), (220, 220, 220)).save(tmp / "images" / "page.png")
    rng = random.Random(7)
    rows = ["object,image,text"]
    for p in range(PAGES):
        words: list[list[ocr_files.WordSpec]] = [
            [(f"w{rng.randrange(100_000)}", (c * 8, r * 4, 7, 3)) for c in range(PER_LINE)]
            for r in range(LINES)
        ]
        (tmp / "ocr" / f"many{p}.xml").write_bytes(ocr_files.alto(words, (800, 2000)))
        rows.append(f"many,page,ocr/many{p}.xml")
    (tmp / "ocr" / "small.xml").write_bytes(
        ocr_files.alto([[("lake", (0, 0, 10, 10)), ("boat", (20, 0, 10, 10))]], (800, 1000))
    )
    rows.append("small,page,ocr/small.xml")
    (tmp / "objects.csv").write_text("\n".join(rows) + "\n")
    config = ocr_files.catalogue_config(tmp, "{folder: index, build_wait: 120}")
    process = start_shim(config, tmp)
    for name in ("many", "small"):  # indexed, and their text read, before the tests
        answer = process.get(f"/iiif/search/2/{name}?q=lake", timeout=180)
        assert answer.status == 200, answer.text
    yield process
    process.stop()


async def _abandoned(port: int, queries: list[str]) -> None:
    """Each query sent on a connection of its own, closed as soon as all are sent."""
    opened = [await asyncio.open_connection("127.0.0.1", port) for _ in queries]
    for (_, writer), q in zip(opened, queries, strict=True):
        path = "/iiif/search/2/many?q=" + q.replace(" ", "+").replace("*", "%2A")
        writer.write(f"GET {path} HTTP/1.1\r\nHost: x\r\n\r\n".encode())
    for _, writer in opened:
        await writer.drain()
    for _, writer in opened:
        writer.close()


def _status_of(line: str) -> int:
    return int(line.split('" ', 1)[1].split()[0])


def test_abandoned_slow_searches_are_stopped_and_another_object_is_answered(
    shim: Process,
) -> None:
    queries = _slow_queries()[:40]
    asyncio.run(_abandoned(shim.port, queries))
    # the abandoned searches give their places back as each thread reaches its next page: the
    # line may still be full for a moment (503 busy), never for the time of their counts
    deadline = time.monotonic() + 30
    probe = shim.get("/iiif/search/2/small?q=boat", timeout=120)
    while probe.status == 503 and "being counted" in probe.text and time.monotonic() < deadline:
        time.sleep(0.2)
        probe = shim.get("/iiif/search/2/small?q=boat", timeout=120)
    assert probe.status == 200, probe.text
    lines = log_lines(shim.log, "GET /iiif/search/2/many?q=w", len(queries), timeout=120)
    statuses = [_status_of(line) for line in lines]
    # stopped (499), or refused at once when the line was full (503); each was counted for
    # nobody before, logged 200 once done (all of them, one after another)
    assert statuses.count(200) <= 4, statuses  # (a few may be done before their client left)
    assert 499 in statuses, statuses


def test_more_slow_searches_than_a_process_counts_or_lets_wait_are_refused_at_once(
    shim: Process,
) -> None:
    async def run() -> list[tuple[int, str | None, str]]:
        timeout = aiohttp.ClientTimeout(total=120)
        connector = aiohttp.TCPConnector(limit=0)
        async with aiohttp.ClientSession(timeout=timeout, connector=connector) as session:

            async def one(q: str) -> tuple[int, str | None, str]:
                url = f"http://127.0.0.1:{shim.port}/iiif/search/2/many"
                async with session.get(url, params={"q": q + " w3*"}) as answer:
                    return answer.status, answer.headers.get("Retry-After"), await answer.text()

            return await asyncio.gather(*(one(q) for q in _slow_queries()))

    answers = asyncio.run(run())
    statuses = sorted(status for status, _, _ in answers)
    assert set(statuses) == {200, 503}, statuses
    assert statuses.count(200) >= 4 + 16 - 4, statuses  # (slots and line; a few may time out)
    for status, retry, text in answers:
        if status == 503:
            assert retry is not None and int(retry) >= 1, (retry, text)
            assert "searches being counted" in text, text


def test_log_of_the_server_names_no_traceback(shim: Process) -> None:
    assert "Traceback" not in Path(shim.log).read_text()
