"""PDFs within bounds, served by real shim processes (as deployed: aiohttp does not cancel a
handler whose client left, where its test server would), their pages from a real slow upstream
(``tests/faulty.py``): a client that leaves stops its PDF, ``HEAD`` renders nothing, PDFs
beyond the per-process cap wait then get 503 with ``Retry-After``, and a PDF once built is kept
on disk until one of its images is purged. The evidence is counted, never timed: the
upstream's own request counts, and the shim's metrics of PDF pages written and PDF builds by
outcome."""

from __future__ import annotations

import json
import os
import socket
import threading
from collections.abc import Iterator
from pathlib import Path

import pytest
from PIL import Image

from tests.support import (
    Process,
    Response,
    request,
    start_faulty,
    start_redis,
    start_shim,
    wait_until,
    write_config,
)

PAGES = 40  # pages of the object "long"
DELAY = 0.3  # seconds the upstream takes for each request of a "slow" image
TOKEN = "purge-token-0123456789"
PAGES_WRITTEN = "iiif_shim_pdf_pages_total"


def _builds(outcome: str) -> str:
    return f'iiif_shim_pdf_builds_total{{outcome="{outcome}"}}'


@pytest.fixture(scope="module")
def upstream(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Process]:
    root = tmp_path_factory.mktemp("pdf-pages")
    for i in range(1, PAGES + 1):
        colour = (i * 6 % 256, 255 - i * 5 % 256, 90)
        Image.new("RGB", (400, 300), colour).save(root / f"p{i}.jpg", quality=80)
        (root / f"p{i}.json").write_text('{"width": 400, "height": 300}')
    proc = start_faulty(root, tmp_path_factory.mktemp("pdf-upstream"))
    yield proc
    proc.stop()


def _shim(
    tmp: Path,
    upstream: Process,
    presentation: str = "",
    cache: str = "",
    max_pages: int = PAGES - 1,
) -> Process:
    rows = ["object,image"]
    rows += [f"long,slow:p{i}.jpg" for i in range(1, PAGES + 1)]
    rows += [f"short,quick:p{i}.jpg" for i in (1, 2, 3)]
    rows += [f"w{n},slow:p{i}.jpg" for n in (1, 2, 3, 4) for i in range(1, 9)]
    rows += [f"over,quick:p{i}.jpg" for i in range(1, PAGES + 1)]
    rows += [f"held{n},held:p{n + 1}" for n in range(10)]  # one page each, never sent
    (tmp / "objects.csv").write_text("\n".join(rows) + "\n")
    base = f"http://127.0.0.1:{upstream.port}"
    config = write_config(
        tmp / "shim.yaml",
        f"""
        server: {{request_timeout: 120, health_interval: 3600}}
        cache: {{purge_token: {TOKEN}{cache}}}
        backends:
          slow: {{type: http, url: "{base}/delay/{DELAY}/{{id}}", max_connections: 16}}
          quick: {{type: http, url: "{base}/ok/{{id}}"}}
          held:
            type: template
            info: {{url: "{base}/ok/{{id}}.json", width: {{json: width}}, height: {{json: height}}}}
            image: {{url: "{base}/stall/{{id}}"}}
        routes:
          - {{match: "^slow:(?P<rest>.+)$", backend: slow, id: "{{rest}}"}}
          - {{match: "^quick:(?P<rest>.+)$", backend: quick, id: "{{rest}}"}}
          - {{match: "^held:(?P<rest>.+)$", backend: held, id: "{{rest}}"}}
        presentation:
          pdf_max_pages: {max_pages}
          sources:
            catalogue: {{type: csv, path: objects.csv, columns: {{object: object, image: image}}}}
          {presentation}
        """,
    )
    return start_shim(config, tmp)


def _metric(shim: Process, sample: str) -> float:
    for line in shim.get("/metrics").text.splitlines():
        if line.startswith(sample + " "):
            return float(line.split()[-1])
    return 0.0


def _sent(upstream: Process) -> int:
    """Requests for images the upstream has had (its root: the shim's health checks)."""
    paths = json.loads(request(upstream.port, "/_stats").body)["paths"]
    return sum(count for path, count in paths.items() if path != "/")


def _pdf(resp: Response) -> bytes:
    assert resp.status == 200, resp.text
    assert resp.header("Content-Type") == "application/pdf" and resp.body.startswith(b"%PDF-")
    return resp.body


def test_a_client_that_leaves_stops_its_pdf(tmp_path: Path, upstream: Process) -> None:
    """The client of a 40-page PDF whose every page takes the upstream a while hangs up after
    the first pages: the build stops (abandoned), its remaining pages are never fetched nor
    written."""
    shim = _shim(tmp_path, upstream, max_pages=PAGES)
    try:
        request(upstream.port, "/_reset")
        with socket.create_connection(("127.0.0.1", shim.port)) as client:
            client.sendall(b"GET /iiif/presentation/long/pdf HTTP/1.1\r\nHost: t\r\n\r\n")
            # first the facts of every page, then the pages one at a time
            wait_until(lambda: _sent(upstream) >= PAGES + 2, "two pages asked for", 60)
        # the shim either stops, or goes on and asks for every page (then fetch 2 x PAGES)
        wait_until(
            lambda: _metric(shim, _builds("abandoned")) >= 1 or _sent(upstream) >= 2 * PAGES,
            "the PDF stopped or finished",
            60,
        )
        assert _sent(upstream) < 2 * PAGES, "every page was fetched for a client that left"
        assert _metric(shim, _builds("abandoned")) == 1
        written = _metric(shim, PAGES_WRITTEN)
        assert 0 < written < PAGES
        _pdf(shim.get("/iiif/presentation/short/pdf"))  # a later PDF adds its own pages only
        assert _metric(shim, PAGES_WRITTEN) == written + 3
        assert _metric(shim, _builds("abandoned")) == 1
    finally:
        shim.stop()


def test_head_of_a_pdf_renders_nothing(tmp_path: Path, upstream: Process) -> None:
    """``HEAD`` (what link checkers send for every `rendering`) answers from the object's
    record: no image is asked for, no page written; ``Content-Length`` once a kept copy is
    known; a 413 for an object with too many pages, as for ``GET``."""
    shim = _shim(tmp_path, upstream, cache=f', disk: "{tmp_path / "disk"}"')
    try:
        request(upstream.port, "/_reset")
        head = shim.get("/iiif/presentation/short/pdf", method="HEAD")
        assert head.status == 200 and head.body == b""
        assert head.header("Content-Type") == "application/pdf"
        assert 'filename="short.pdf"' in (head.header("Content-Disposition") or "")
        assert head.header("Content-Length") is None and head.header("X-Request-ID")
        assert _sent(upstream) == 0 and _metric(shim, PAGES_WRITTEN) == 0
        too_long = shim.get("/iiif/presentation/over/pdf", method="HEAD")
        assert too_long.status == 413 and _sent(upstream) == 0
        body = _pdf(shim.get("/iiif/presentation/short/pdf"))
        assert _metric(shim, PAGES_WRITTEN) == 3
        sent = _sent(upstream)
        again = shim.get("/iiif/presentation/short/pdf", method="HEAD")
        assert again.status == 200 and again.header("Content-Length") == str(len(body))
        assert _sent(upstream) == sent and _metric(shim, PAGES_WRITTEN) == 3
        assert shim.get("/iiif/presentation/nothing/pdf", method="HEAD").status == 404
    finally:
        shim.stop()


def _asked(upstream: Process, prefix: str, suffix: str = "") -> int:
    """Requests the upstream has had for paths that start with ``prefix`` (and end with
    ``suffix``)."""
    paths = json.loads(request(upstream.port, "/_stats").body)["paths"]
    return sum(n for path, n in paths.items() if path.startswith(prefix) and path.endswith(suffix))


def test_pdfs_beyond_the_cap_wait_then_get_503_with_retry_after(
    tmp_path: Path, upstream: Process
) -> None:
    """One PDF at a time, a second of waiting: while one PDF is being built (its page never
    comes from the upstream), three others asked at once each wait their second, then get 503
    with Retry-After; once the first's client leaves, its build stops, leaving no marker in the
    disk tier (they stayed, and kept its source folders), and the next PDF is built."""
    disk = tmp_path / "disk"
    shim = _shim(
        tmp_path, upstream, "pdf_concurrency: 1\n          pdf_wait: 1", f', disk: "{disk}"'
    )
    try:
        request(upstream.port, "/_reset")
        with socket.create_connection(("127.0.0.1", shim.port)) as client:
            client.sendall(b"GET /iiif/presentation/held0/pdf HTTP/1.1\r\nHost: t\r\n\r\n")
            wait_until(lambda: _asked(upstream, "/stall/") == 1, "the first PDF's page asked for")
            assert len(list(disk.glob("*/.document-*"))) == 1  # its one image's
            answers: dict[str, Response] = {}

            def ask(name: str) -> None:
                answers[name] = shim.get(f"/iiif/presentation/{name}/pdf", timeout=120)

            threads = [threading.Thread(target=ask, args=(f"w{n}",)) for n in (1, 2, 3)]
            for t in threads:
                t.start()
            for t in threads:
                t.join(150)
            for resp in answers.values():
                assert resp.status == 503, resp.text
                assert resp.header("Retry-After") == "1" and "busy" in resp.text, resp.text
            assert len(answers) == 3 and _metric(shim, _builds("busy")) == 3
        wait_until(lambda: _metric(shim, _builds("abandoned")) == 1, "the first PDF abandoned")
        wait_until(
            lambda: not list(disk.glob("*/.document-*")), "the abandoned build's markers gone"
        )
        assert _pdf(shim.get("/iiif/presentation/short/pdf")).count(b"/Type /Page ") == 3
        assert _metric(shim, _builds("built")) == 1
    finally:
        shim.stop()


def test_a_pdf_that_would_find_the_line_full_is_refused_at_once(
    tmp_path: Path, upstream: Process
) -> None:
    """One PDF being built and eight in line (as many as wait per build slot): the next PDF
    gets 503 at once, without its images' facts being looked up (they were, for nothing)."""
    cache = f', disk: "{tmp_path / "disk"}"'
    shim = _shim(tmp_path, upstream, "pdf_concurrency: 1\n          pdf_wait: 100", cache)
    held: list[socket.socket] = []
    try:
        request(upstream.port, "/_reset")
        for n in range(9):  # the first is built (its page never comes), eight wait in line
            held.append(socket.create_connection(("127.0.0.1", shim.port)))
            held[-1].sendall(
                f"GET /iiif/presentation/held{n}/pdf HTTP/1.1\r\nHost: t\r\n\r\n".encode()
            )
        misses = 'iiif_shim_cache_lookups_total{result="miss",tier="pdf"}'
        wait_until(lambda: _metric(shim, misses) == 9, "nine PDFs past their kept-copy lookup")
        wait_until(lambda: _asked(upstream, "/stall/") == 1, "the first PDF's page asked for")
        refused = shim.get("/iiif/presentation/short/pdf")
        assert refused.status == 503 and "line is full" in refused.text, refused.text
        assert refused.header("Retry-After")
        assert _asked(upstream, "/ok/", ".jpg") == 0, "the refused PDF's facts were looked up"
    finally:
        for conn in held:
            conn.close()
        shim.stop()


def test_a_pdf_is_kept_until_one_of_its_images_is_purged(tmp_path: Path, upstream: Process) -> None:
    """A PDF built once is served from the disk tier's folder (by this process and the next),
    until a purge of one of its images, or of everything: then it is built again."""
    cache = f', disk: "{tmp_path / "disk"}"'
    path = "/iiif/presentation/short/pdf"
    auth = {"Authorization": f"Bearer {TOKEN}"}
    shim = _shim(tmp_path, upstream, cache=cache)
    try:
        first = _pdf(shim.get(path))
        assert _metric(shim, PAGES_WRITTEN) == 3
        assert _pdf(shim.get(path)) == first
        assert _metric(shim, PAGES_WRITTEN) == 3
        assert _metric(shim, 'iiif_shim_cache_lookups_total{result="hit",tier="pdf"}') == 1
    finally:
        shim.stop()
    shim = _shim(tmp_path, upstream, cache=cache)  # a process that never built it
    try:
        assert _pdf(shim.get(path)) == first and _metric(shim, PAGES_WRITTEN) == 0
        purged = shim.get("/admin/cache/quick:p2.jpg", method="DELETE", headers=auth)
        assert purged.status == 200, purged.text
        head = shim.get(path, method="HEAD")
        assert head.status == 200 and head.header("Content-Length") is None
        _pdf(shim.get(path))
        assert _metric(shim, PAGES_WRITTEN) == 3  # made again
        _pdf(shim.get(path))
        assert _metric(shim, PAGES_WRITTEN) == 3  # and kept again
        assert shim.get("/admin/cache", method="DELETE", headers=auth).status == 200
        _pdf(shim.get(path))
        assert _metric(shim, PAGES_WRITTEN) == 6
    finally:
        shim.stop()


def _redis(port: int, *words: str) -> bytes:
    """One command to a real Redis, in its own protocol; the raw reply."""
    command = f"*{len(words)}\r\n" + "".join(f"${len(w)}\r\n{w}\r\n" for w in words)
    with socket.create_connection(("127.0.0.1", port), timeout=5) as conn:
        conn.sendall(command.encode())
        return conn.recv(4096)


def test_a_redis_reconnect_leaves_the_kept_pdfs(tmp_path: Path, upstream: Process) -> None:
    """After its purge subscription reconnects, a process drops its memory entries (a purge
    may have been missed meanwhile), but the PDFs kept on disk are still valid (every purge
    removes their markers) and still served: they used to be wiped from the whole machine."""
    redis = start_redis(tmp_path / "redis")
    url = f"redis://127.0.0.1:{redis.port}"
    cache = f', disk: "{tmp_path / "disk"}", redis: "{url}", redis_retry: 0.2'
    shim = _shim(tmp_path, upstream, cache=cache)
    path, info = "/iiif/presentation/short/pdf", "/iiif/3/quick:p1.jpg/info.json"
    facts_misses = 'iiif_shim_cache_lookups_total{result="miss",tier="facts"}'
    subscribed = b":1\r\n"
    try:
        first = _pdf(shim.get(path))
        assert _metric(shim, PAGES_WRITTEN) == 3
        assert shim.get(info).status == 200  # its facts: in memory now
        misses = _metric(shim, facts_misses)

        def numsub() -> bytes:
            return _redis(redis.port, "PUBSUB", "NUMSUB", "iiif-shim:purge")

        wait_until(lambda: numsub().endswith(subscribed), "the shim subscribed")
        assert _redis(redis.port, "CLIENT", "KILL", "TYPE", "pubsub") == b":1\r\n"
        wait_until(lambda: numsub().endswith(subscribed), "the shim subscribed again")

        def dropped() -> bool:  # facts it held in memory before are a miss there now
            assert shim.get(info).status == 200
            return _metric(shim, facts_misses) > misses

        wait_until(dropped, "the shim's memory entries dropped after it reconnected")
        assert _pdf(shim.get(path)) == first
        assert _metric(shim, PAGES_WRITTEN) == 3  # the kept one: nothing made again
    finally:
        shim.stop()
        redis.stop()


def test_a_kept_pdf_keeps_its_validators(tmp_path: Path, upstream: Process) -> None:
    """A hit on a kept PDF is recorded beside it (for the LRU), never on the PDF itself: its
    ETag and Last-Modified (the file's) stay the same however long between two requests, so
    a conditional GET gets 304 (a hit a minute after the last touched the PDF: new validators
    about once a minute, and no 304)."""
    shim = _shim(tmp_path, upstream, cache=f', disk: "{tmp_path / "disk"}"')
    path = "/iiif/presentation/short/pdf"
    try:
        body = _pdf(shim.get(path))
        (kept,) = (tmp_path / "disk" / "documents").glob("*/*.pdf")
        long_ago = kept.stat().st_mtime - 600

        def minutes_pass() -> None:  # as if the PDF had been left alone for ten minutes
            for name in kept.parent.iterdir():
                os.utime(name, (long_ago, long_ago))

        minutes_pass()
        first = shim.get(path)
        assert _pdf(first) == body
        etag, modified = first.header("ETag"), first.header("Last-Modified")
        assert etag and modified
        minutes_pass()
        again = shim.get(path, headers={"If-None-Match": etag})
        assert again.status == 304, (etag, again.header("ETag"))
        later = shim.get(path)
        assert later.header("ETag") == etag and later.header("Last-Modified") == modified
        assert _metric(shim, PAGES_WRITTEN) == 3
        documents = tmp_path / "disk" / "documents"
        wait_until(lambda: not list(documents.glob(".tmp-*")), "every reader's link removed")
    finally:
        shim.stop()


def test_a_pdf_not_kept_is_sent_whole(tmp_path: Path, upstream: Process) -> None:
    """Without a disk tier nothing is kept: a PDF viewer's range requests would each make the
    whole PDF again for a slice of it. So such a PDF offers no ranges and is sent whole, a
    Range header notwithstanding (it was a 206 of a PDF made for that one slice)."""
    shim = _shim(tmp_path, upstream)
    try:
        whole = shim.get("/iiif/presentation/short/pdf")
        body = _pdf(whole)
        assert whole.header("Accept-Ranges") in (None, "none")
        assert whole.header("Content-Length") == str(len(body))
        ranged = shim.get("/iiif/presentation/short/pdf", headers={"Range": "bytes=0-99"})
        assert ranged.status == 200 and _pdf(ranged).count(b"/Type /Page ") == 3
    finally:
        shim.stop()


def test_a_pdf_made_from_before_a_purge_is_not_kept(tmp_path: Path, upstream: Process) -> None:
    """Two processes share the disk tier. One purges an image; the other, which holds that
    image's page in memory and hears of purges about once a second, is asked for the PDF at
    once. It hears of the purge before building, so the page is asked of the upstream again:
    it used to build from its memory and keep that PDF, valid on disk for every process until
    the next purge of one of its images."""
    cache = f', disk: "{tmp_path / "disk"}"'
    path = "/iiif/presentation/short/pdf"
    auth = {"Authorization": f"Bearer {TOKEN}"}
    purging = _shim(tmp_path, upstream, cache=cache)
    other = _shim(tmp_path, upstream, cache=cache)

    def asked_for_p2() -> int:
        paths = json.loads(request(upstream.port, "/_stats").body)["paths"]
        return int(paths.get("/ok/p2.jpg", 0))

    try:
        _pdf(other.get(path))  # its pages in its memory now, and the PDF kept
        assert _metric(other, PAGES_WRITTEN) == 3
        purged = purging.get("/admin/cache/quick:p2.jpg", method="DELETE", headers=auth)
        assert purged.status == 200, purged.text
        before = asked_for_p2()
        _pdf(other.get(path))  # made again (the kept one is invalid)
        assert _metric(other, PAGES_WRITTEN) == 6
        # it heard of the purge before building: the page came from the upstream again, not
        # from its memory (then that PDF, kept, would serve the old page to every process)
        assert asked_for_p2() > before, "a PDF was made from a page held since before the purge"
        _pdf(purging.get(path))
        assert _metric(purging, PAGES_WRITTEN) == 0  # the PDF kept by the other, valid
    finally:
        purging.stop()
        other.stop()
