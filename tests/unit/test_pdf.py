"""The PDF writer: documents rendered by the real poppler tools (pdftoppm, pdfinfo) show each
JPEG page at its size and colour with its title; the xref table points at every object; page
data is written out at once and never kept; bad input is refused with ValueError."""

from __future__ import annotations

import io
import os
import re
import subprocess
import sys
import tracemalloc
from pathlib import Path

import pytest
from hypothesis import given
from hypothesis import strategies as st
from PIL import Image, ImageStat

from iiif_shim.presentation.pdf import PdfWriter, jpeg_size
from tests.support import need_tool

DPI = 150.0
RENDER_DPI = 30


def jpeg(mode: str, size: tuple[int, int], color: int | tuple[int, ...], **save: object) -> bytes:
    buffer = io.BytesIO()
    Image.new(mode, size, color).save(buffer, "JPEG", quality=90, **save)
    return buffer.getvalue()


def add(writer: PdfWriter, data: bytes) -> None:
    width, height, components = jpeg_size(data)
    writer.add_jpeg(data, width, height, components)


def render(pdf: Path, tmp_path: Path) -> list[Image.Image]:
    """Every page of ``pdf`` as rendered by pdftoppm at RENDER_DPI, in page order."""
    pdftoppm = need_tool("pdftoppm")
    prefix = tmp_path / "page"
    result = subprocess.run(
        [pdftoppm, "-r", str(RENDER_DPI), "-png", str(pdf), str(prefix)],
        capture_output=True,
        text=True,
        timeout=60,
        check=False,
    )
    assert result.returncode == 0, result.stderr
    assert result.stderr == "", result.stderr  # poppler reports a repaired xref here
    files = sorted(tmp_path.glob("page-*.png"), key=lambda p: int(p.stem.rsplit("-", 1)[1]))
    pages = []
    for file in files:
        with Image.open(file) as image:
            pages.append(image.convert("RGB"))
    return pages


def pdfinfo(pdf: Path) -> dict[str, str]:
    result = subprocess.run(
        [need_tool("pdfinfo"), "-enc", "UTF-8", str(pdf)],
        capture_output=True,
        timeout=60,
        check=False,
    )
    stderr = result.stderr.decode("utf-8", "replace")
    assert result.returncode == 0, stderr
    assert stderr == "", stderr
    info = {}
    for line in result.stdout.decode("utf-8").splitlines():
        key, _, value = line.partition(":")
        info[key.strip()] = value.strip()
    return info


def assert_page(page: Image.Image, size: tuple[int, int], color: tuple[int, int, int]) -> None:
    width, height = size
    expected = (width * RENDER_DPI / DPI, height * RENDER_DPI / DPI)
    assert abs(page.width - expected[0]) <= 1 and abs(page.height - expected[1]) <= 1, (
        page.size,
        expected,
    )
    assert page.width / page.height == pytest.approx(width / height, rel=0.05)
    median = ImageStat.Stat(page).median
    assert all(abs(got - want) <= 24 for got, want in zip(median, color, strict=True)), (
        median,
        color,
    )


def test_pages_render_at_their_size_and_colour_with_a_non_ascii_title(tmp_path: Path) -> None:
    pages = [
        (jpeg("RGB", (600, 400), (255, 0, 0)), (600, 400), (255, 0, 0)),
        (jpeg("RGB", (300, 450), (0, 255, 0), progressive=True), (300, 450), (0, 255, 0)),
        (jpeg("RGB", (450, 450), (0, 0, 255)), (450, 450), (0, 0, 255)),
    ]
    pdf = tmp_path / "object.pdf"
    with pdf.open("wb") as out:
        writer = PdfWriter(out, title="Händel (Autograph)", dpi=DPI)
        for data, _, _ in pages:
            add(writer, data)
        total = writer.close()
    assert total == pdf.stat().st_size

    info = pdfinfo(pdf)
    assert info["Pages"] == "3"
    assert info["Title"] == "Händel (Autograph)"
    assert info["Producer"] == "iiif-shim"
    assert info["PDF version"] == "1.4"
    assert info["Page size"].startswith("288 x 192 pts")  # 600x400 px at 150 dpi

    rendered = render(pdf, tmp_path)
    assert len(rendered) == 3
    for page, (_, size, color) in zip(rendered, pages, strict=True):
        assert_page(page, size, color)


def test_a_grayscale_page_and_an_ascii_title_with_parentheses_and_backslashes(
    tmp_path: Path,
) -> None:
    data = jpeg("L", (400, 200), 90)
    assert jpeg_size(data) == (400, 200, 1)
    title = r"Letter (draft) \ copy \(2\)"
    pdf = tmp_path / "gray.pdf"
    with pdf.open("wb") as out:
        writer = PdfWriter(out, title=title, dpi=DPI)
        add(writer, data)
        writer.close()
    assert b"/ColorSpace /DeviceGray" in pdf.read_bytes()

    info = pdfinfo(pdf)
    assert info["Pages"] == "1"
    assert info["Title"] == title
    [page] = render(pdf, tmp_path)
    assert_page(page, (400, 200), (90, 90, 90))


def test_the_xref_table_points_at_every_object() -> None:
    out = io.BytesIO()
    writer = PdfWriter(out, title="x")
    for color in ((255, 0, 0), (0, 0, 255)):
        add(writer, jpeg("RGB", (20, 10), color))
    total = writer.close()
    pdf = out.getvalue()
    assert total == len(pdf)
    assert pdf.startswith(b"%PDF-1.4\n%")
    assert all(byte >= 128 for byte in pdf[10:14])  # the binary comment line

    startxref = int(re.search(rb"startxref\n(\d+)\n%%EOF\n$", pdf)[1])  # type: ignore[index]
    assert pdf[startxref:].startswith(b"xref\n0 10\n0000000000 65535 f \n")
    table = pdf[startxref + len(b"xref\n0 10\n") :].split(b"trailer")[0]
    entries = [table[i : i + 20] for i in range(0, len(table), 20)]
    assert len(entries) == 10 and all(len(entry) == 20 for entry in entries)
    for number, entry in enumerate(entries[1:], start=1):
        assert entry.endswith(b" 00000 n \n")
        offset = int(entry[:10])
        assert pdf[offset:].startswith(b"%d 0 obj\n" % number)
    assert b"/Kids [5 0 R 8 0 R] /Count 2" in pdf
    assert b"/Size 10 /Root 1 0 R /Info 9 0 R" in pdf
    assert b"/MediaBox [0 0 9.6 4.8]" in pdf  # 20x10 px at 150 dpi
    assert b"q 9.6 0 0 4.8 0 0 cm /Im0 Do Q" in pdf


def test_the_title_is_escaped_or_utf16() -> None:
    def info(title: str) -> bytes:
        out = io.BytesIO()
        writer = PdfWriter(out, title=title)
        add(writer, jpeg("L", (8, 8), 0))
        writer.close()
        return out.getvalue().split(b"\nxref\n")[0].rsplit(b" 0 obj\n", 1)[1]

    assert b"/Title (a\\(b\\)c\\\\d)" in info("a(b)c\\d")
    assert b"/Title <FEFF00480065007200E4>" in info("Herä")
    assert b"/Title <FEFFD834DD1E>" in info("\U0001d11e")  # outside the BMP: a surrogate pair
    assert b"/Producer (iiif-shim)" in info("x")


class Discard(io.RawIOBase):
    """A binary sink that keeps nothing, so only the writer's own memory is measured."""

    def __init__(self) -> None:
        self.count = 0

    def writable(self) -> bool:
        return True

    def write(self, data: bytes) -> int:  # type: ignore[override]
        self.count += len(data)
        return len(data)


def test_page_data_is_written_at_once_and_never_kept() -> None:
    noise = Image.frombytes("RGB", (700, 700), os.urandom(700 * 700 * 3))
    buffer = io.BytesIO()
    noise.save(buffer, "JPEG", quality=95)
    data = buffer.getvalue()
    assert len(data) > 500_000

    sink = Discard()
    writer = PdfWriter(sink)  # type: ignore[arg-type]
    references = sys.getrefcount(data)
    before = sink.count
    writer.add_jpeg(data, 700, 700)
    assert sink.count - before > len(data)  # out already has the page, before close
    assert sys.getrefcount(data) == references  # and the writer keeps no reference to it

    tracemalloc.start()
    try:
        start, _ = tracemalloc.get_traced_memory()
        tracemalloc.reset_peak()
        for _ in range(20):
            writer.add_jpeg(data, 700, 700)
        current, peak = tracemalloc.get_traced_memory()
    finally:
        tracemalloc.stop()
    # 20 pages of >500 kB: the writer neither copies (peak) nor keeps (current) page data.
    assert peak - start < 64_000
    assert current - start < 16_000
    assert writer.close() == sink.count


def test_bad_input_is_refused() -> None:
    page = jpeg("RGB", (10, 10), (0, 0, 0))
    writer = PdfWriter(io.BytesIO())
    with pytest.raises(ValueError, match="SOI"):
        writer.add_jpeg(b"\x89PNG\r\n\x1a\n", 10, 10)
    with pytest.raises(ValueError, match="SOI"):
        writer.add_jpeg(b"", 10, 10)
    with pytest.raises(ValueError, match="size"):
        writer.add_jpeg(page, 0, 10)
    with pytest.raises(ValueError, match="size"):
        writer.add_jpeg(page, 10, -1)
    with pytest.raises(ValueError, match="components"):
        writer.add_jpeg(jpeg("CMYK", (10, 10), (0, 0, 0, 0)), 10, 10, 4)
    with pytest.raises(ValueError, match="components"):
        writer.add_jpeg(page, 10, 10, 2)
    with pytest.raises(ValueError, match="page"):
        writer.close()  # no page yet: still open, a page can still be added

    writer.add_jpeg(page, 10, 10)
    writer.close()
    with pytest.raises(ValueError, match="closed"):
        writer.add_jpeg(page, 10, 10)
    with pytest.raises(ValueError, match="closed"):
        writer.close()
    for dpi in (0.0, -72.0, float("nan"), float("inf")):
        with pytest.raises(ValueError, match="dpi"):
            PdfWriter(io.BytesIO(), dpi=dpi)


def test_jpeg_size_reads_the_frame_header() -> None:
    assert jpeg_size(jpeg("RGB", (123, 45), (1, 2, 3))) == (123, 45, 3)
    assert jpeg_size(jpeg("RGB", (45, 123), (1, 2, 3), progressive=True)) == (45, 123, 3)
    assert jpeg_size(jpeg("L", (7, 9), 0)) == (7, 9, 1)
    assert jpeg_size(jpeg("CMYK", (5, 6), (0, 0, 0, 0))) == (5, 6, 4)
    exif = Image.Exif()
    exif[0x010E] = "x" * 5000  # ImageDescription: a long APP1 segment before the frame
    with_exif = jpeg("RGB", (31, 17), (0, 0, 0), exif=exif, icc_profile=b"\0" * 3000)
    assert jpeg_size(with_exif) == (31, 17, 3)


@pytest.mark.parametrize(
    "garbage",
    [
        b"",
        b"\xff",
        b"\xff\xd8",
        b"GIF89a",
        b"\xff\xd8\xff",
        b"\xff\xd8\x00\x00",
        b"\xff\xd8\xff\xe0\x00",
        b"\xff\xd8\xff\xe0\x00\x01",  # a length shorter than itself
        b"\xff\xd8\xff\xe0\xff\xff\x00",  # a segment longer than the data
        b"\xff\xd8\xff\xd9",  # EOI before a frame
        b"\xff\xd8\xff\xda\x00\x02",  # scan data before a frame
        b"\xff\xd8\xff\xc0\x00\x05\x08\x00",  # a frame header cut short
        b"\xff\xd8\xff\xc0\x00\x0b\x08\x00\x00\x00\x10\x03\x01\x11\x00",  # height 0
    ],
)
def test_jpeg_size_refuses_garbage(garbage: bytes) -> None:
    with pytest.raises(ValueError):
        jpeg_size(garbage)


@given(st.binary(max_size=64))
def test_jpeg_size_raises_only_value_error(tail: bytes) -> None:
    for data in (tail, b"\xff\xd8" + tail, b"\xff\xd8\xff" + tail):
        try:
            width, height, components = jpeg_size(data)
        except ValueError:
            continue
        assert width >= 1 and height >= 1 and components >= 1
