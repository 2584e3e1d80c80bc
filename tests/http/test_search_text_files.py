"""The text of objects over a real shim (the server process) whose OCR files are on a real
text server (the catalogue's own, an HTTP server in the test that counts its requests and how
many it answers at once): a canvas's OCR file asked again with its ETag is answered from what the
index knows of it, without asking the text server; OCR files are read and sent a few at a time
per process, more are 503 with ``Retry-After``; a large one is sent as it is, a small one
gzipped when asked; plain text and every error body of ``/text/`` say ``nosniff``."""

from __future__ import annotations

import gzip
import hashlib
import threading
from collections import Counter
from collections.abc import Iterator
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass, field
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer

import pytest
from PIL import Image

from iiif_shim.search.service import OCR_READS
from iiif_shim.web.search import OCR_GZIP_MAX
from tests import ocr_files
from tests.support import Process, Response, request, start_shim, wait_until, write_config

SMALL = 3  # canvases of object "small", each its own small ALTO file
LARGE = 12  # canvases of object "large", each an ALTO file larger than OCR_GZIP_MAX
HOLD = 1.0  # seconds the text server holds a request unless more than OCR_READS are in flight


def _alto(word: str, lines: int = 2) -> bytes:
    return ocr_files.alto(
        [[(f"{word}{i}", (100, 100 + 60 * i, 300, 40))] for i in range(lines)], (1000, 1000)
    )


@dataclass
class TextServer:
    """A catalogue's CSV and its OCR files at ``/alto/...``, with an ETag each; requests
    counted per path, and the most answered at once. While ``holding``, a request of a large
    file waits until more than OCR_READS are in flight (or HOLD seconds), so that reads
    allowed at once meet."""

    files: dict[str, bytes]
    counts: Counter[str] = field(default_factory=Counter)
    in_flight: int = 0
    most: int = 0
    holding: bool = False
    lock: threading.Condition = field(default_factory=threading.Condition)

    def handler(self) -> type[BaseHTTPRequestHandler]:
        server = self

        class Handler(BaseHTTPRequestHandler):
            protocol_version = "HTTP/1.1"

            def log_message(self, *args: object) -> None:
                pass

            def do_GET(self) -> None:
                path = self.path.split("?", 1)[0]
                body = server.files.get(path)
                with server.lock:
                    server.counts[path] += 1
                    server.in_flight += 1
                    server.most = max(server.most, server.in_flight)
                    server.lock.notify_all()
                    if server.holding and body is not None and len(body) > OCR_GZIP_MAX:
                        server.lock.wait_for(lambda: server.in_flight > OCR_READS, HOLD)
                try:
                    if body is None:
                        self.send_response(404)
                        self.send_header("Content-Length", "0")
                        self.end_headers()
                        return
                    tag = hashlib.sha256(body).hexdigest()[:16]
                    self.send_response(200)
                    self.send_header("Content-Type", "application/xml")
                    self.send_header("ETag", f'"{tag}"')
                    self.send_header("Content-Length", str(len(body)))
                    self.end_headers()
                    self.wfile.write(body)
                finally:
                    with server.lock:
                        server.in_flight -= 1

        return Handler


@dataclass
class Site:
    shim: Process
    text: TextServer

    def get(self, path: str, headers: dict[str, str] | None = None) -> Response:
        return request(self.shim.port, path, headers=headers)


@pytest.fixture(scope="module")
def site(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Site]:
    tmp = tmp_path_factory.mktemp("text-files")
    images = tmp / "images"
    images.mkdir()
    Image.new("RGB", (500, 500), (210, 210, 210)).save(images / "page.png")
    files = {f"/alto/s{i}.xml": _alto(f"small{i}") for i in range(1, SMALL + 1)}
    big = _alto("large", lines=OCR_GZIP_MAX // 150 + 1)  # about 180 bytes a line
    assert len(big) > OCR_GZIP_MAX
    files.update({f"/alto/l{i}.xml": big for i in range(1, LARGE + 1)})
    text = TextServer(files)
    server = ThreadingHTTPServer(("127.0.0.1", 0), text.handler())
    threading.Thread(target=server.serve_forever, daemon=True).start()
    origin = f"http://127.0.0.1:{server.server_address[1]}"
    files["/alto/p1.txt"] = ocr_files.plain([["<script>alert(1)</script>", "x"]])
    rows = ["object,image,text"]
    rows += [f"small,page,{origin}/alto/s{i}.xml" for i in range(1, SMALL + 1)]
    rows += [f"large,page,{origin}/alto/l{i}.xml" for i in range(1, LARGE + 1)]
    rows += [f"local,page,{origin}/alto/p1.txt"]
    files["/objects.csv"] = ("\n".join(rows) + "\n").encode()
    config = write_config(
        tmp / "shim.yaml",
        f"""\
backends:
  local: {{type: files, root: images}}
routes:
  - {{backend: local}}
presentation:
  sources:
    cat:
      type: csv
      path: "{origin}/objects.csv"
      columns: {{object: object, image: image, text: text}}
      max_connections: 32  # (its own pool would let 16 text files be read at once)
search:
  folder: index
""",
    )
    shim = start_shim(config, tmp)
    try:
        yield Site(shim, text)
    finally:
        shim.stop()
        server.shutdown()
        server.server_close()


def _indexed(site: Site, name: str) -> None:
    """Object ``name`` indexed (a search waits for it)."""
    wait_until(lambda: site.get(f"/iiif/search/2/{name}?q=x").status == 200, f"{name} indexed")


def test_an_ocr_file_asked_again_with_its_etag_is_not_read_again(site: Site) -> None:
    _indexed(site, "small")
    read = dict(site.text.counts)
    assert all(read[f"/alto/s{i}.xml"] == 1 for i in range(1, SMALL + 1)), read  # the build's
    first = site.get("/iiif/text/small/1/ocr")
    assert first.status == 200 and first.body == site.text.files["/alto/s1.xml"]
    tag = first.header("ETag")
    assert tag and first.header("X-Content-Type-Options") == "nosniff"
    assert site.text.counts["/alto/s1.xml"] == 2  # a whole answer reads the file
    for _ in range(5):
        again = site.get("/iiif/text/small/1/ocr", headers={"If-None-Match": tag})
        assert again.status == 304 and not again.body
        assert again.header("ETag") == tag
        assert again.header("X-Content-Type-Options") == "nosniff"
    assert site.text.counts["/alto/s1.xml"] == 2  # not one request more
    zipped = site.get(
        "/iiif/text/small/1/ocr", headers={"If-None-Match": tag, "Accept-Encoding": "gzip"}
    )
    assert zipped.status == 304  # the same file, whatever its encoding
    assert site.text.counts["/alto/s1.xml"] == 2  # not one request more
    # another tag, or none: the file is read and sent
    other = site.get("/iiif/text/small/1/ocr", headers={"If-None-Match": '"other"'})
    assert other.status == 200 and other.header("ETag") == tag
    assert site.text.counts["/alto/s1.xml"] == 3
    # a canvas's tag is its own
    second = site.get("/iiif/text/small/2/ocr", headers={"If-None-Match": tag})
    assert second.status == 200 and second.header("ETag") not in (None, tag)
    head = request(site.shim.port, "/iiif/text/small/1/ocr", method="HEAD")
    assert head.status == 200 and not head.body and head.header("ETag") == tag
    assert head.header("Content-Length") == str(len(site.text.files["/alto/s1.xml"]))


def test_small_ocr_files_are_gzipped_large_ones_sent_as_they_are(site: Site) -> None:
    small = site.get("/iiif/text/small/3/ocr", headers={"Accept-Encoding": "gzip"})
    assert small.status == 200 and small.header("Content-Encoding") == "gzip"
    assert gzip.decompress(small.body) == site.text.files["/alto/s3.xml"]
    large = site.get("/iiif/text/large/1/ocr", headers={"Accept-Encoding": "gzip"})
    assert large.status == 200 and large.header("Content-Encoding") is None
    assert large.body == site.text.files["/alto/l1.xml"]


def test_ocr_files_are_read_a_few_at_a_time(site: Site) -> None:
    """Many large OCR files asked at once: the text server never has more than OCR_READS of
    the shim's requests at once (each is held until more come, or HOLD seconds), though the
    source's own pool would allow more; those past the line are 503 with Retry-After, the
    others the whole file."""
    asked = 3 * LARGE
    site.text.most = 0
    site.text.holding = True
    try:
        with ThreadPoolExecutor(asked) as pool:
            paths = [f"/iiif/text/large/{i % LARGE + 1}/ocr" for i in range(asked)]
            answers = list(pool.map(site.get, paths))
    finally:
        site.text.holding = False
    statuses = Counter(a.status for a in answers)
    assert set(statuses) <= {200, 503}, statuses
    assert statuses[200] >= OCR_READS, statuses
    assert all(a.body == site.text.files["/alto/l1.xml"] for a in answers if a.status == 200)
    assert all(a.header("Retry-After") for a in answers if a.status == 503)
    assert 1 <= site.text.most <= OCR_READS, site.text.most


def test_plain_text_and_text_errors_say_nosniff(site: Site) -> None:
    _indexed(site, "local")
    plain = site.get("/iiif/text/local/plain")
    assert plain.status == 200 and b"<script>" in plain.body
    assert plain.header("X-Content-Type-Options") == "nosniff"
    assert plain.header("Content-Security-Policy") == "sandbox; default-src 'none'"
    for path in (
        "/iiif/text/%3Cscript%3Ealert(1)%3C%2Fscript%3E/plain",
        "/iiif/text/local/9/ocr",
        "/iiif/text/local/x",
        "/iiif/search/2/%3Cscript%3E?q=a",
    ):
        answer = site.get(path)
        assert answer.status == 404, (path, answer.status)
        assert (answer.header("Content-Type") or "").startswith("text/plain"), path
        assert answer.header("X-Content-Type-Options") == "nosniff", path
