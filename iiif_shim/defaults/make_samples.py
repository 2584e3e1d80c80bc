"""Regenerate the bundled sample images (deterministic; run from anywhere).

    python -m iiif_shim.defaults.make_samples

- ``chart.jpg``: 6000x4000 colour chart whose labels come in three sizes, so each zoom level of
  a deep-zoom viewer shows new detail (large grid labels, 500 px cells, 100 px cells).
- ``gray-gradient.png``: 1200x800 grayscale (mode L) gradient: info.json offers no ``color``.
- ``rings.jp2``: 2400x1600 JPEG 2000 with concentric rings: exercises the reduced-resolution
  decode of JPEG 2000 sources.
- ``book/p1.jpg`` to ``book/p3.jpg``: 1200x1600 pages of the sample object ``book`` (crimson, teal,
  goldenrod, each with its page number), listed by the ``folder`` source; ``book/object.yaml``
  (hand-written) describes the object. Each page is ruled (the cover only where it has words),
  with a few lines of words printed on its first ruled lines (:data:`BOOK_TEXT`), and has the
  OCR of those words beside it, at the printed places, as the folder source's text sidecars
  (same stem): ``p1.xml`` ALTO v4 in the pixels of a 2400x3200 master (twice the image),
  ``p2.hocr`` hOCR as Tesseract writes it, ``p3.xml`` ALTO v2 in tenths of a millimetre
  (200 dpi). The search tests and the screenshot of search in Mirador rely on these words and
  places (:func:`book_layout`).
- ``restricted/letter.jpg``: 3000x2000 letter in small handwriting-like strokes, shown to the
  embedded default's ``staff`` policy only (log in as demo/demo); everyone else gets its
  degraded tier, where the small print is a blur.
- ``67352ccc-d1b0-11e1-89ae-279075081939.png``: the official IIIF validator test image, copied
  unchanged from the validator's fixtures (not generated here).
"""

from __future__ import annotations

import html
import math
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path

from PIL import Image, ImageDraw, ImageFont

HERE = Path(__file__).parent / "images"


def chart(width: int = 6000, height: int = 4000) -> Image.Image:
    # hue runs left to right, brightness top to bottom (smooth: compresses well)
    hue = Image.linear_gradient("L").rotate(90).resize((width, height))
    sat = Image.new("L", (width, height), 150)
    val = Image.linear_gradient("L").resize((width, height)).point(lambda v: 255 - v // 3)
    im = Image.merge("HSV", (hue, sat, val)).convert("RGB")
    draw = ImageDraw.Draw(im)
    big, mid, small = (ImageFont.load_default(size=s) for s in (220, 48, 14))
    for x in range(0, width, 100):
        draw.line(
            [(x, 0), (x, height)],
            fill=(255, 255, 255) if x % 500 else (20, 20, 20),
            width=1 if x % 500 else 4,
        )
    for y in range(0, height, 100):
        draw.line(
            [(0, y), (width, y)],
            fill=(255, 255, 255) if y % 500 else (20, 20, 20),
            width=1 if y % 500 else 4,
        )
    for cy in range(0, height, 100):
        for cx in range(0, width, 100):
            if cx % 500 and cy % 500:
                draw.text((cx + 6, cy + 6), f"{cx},{cy}", font=small, fill=(30, 30, 30))
    for cy in range(0, height, 500):
        for cx in range(0, width, 500):
            draw.text((cx + 12, cy + 10), f"{cx // 500}:{cy // 500}", font=mid, fill=(0, 0, 0))
    for i, (cx, cy) in enumerate(((1500, 1000), (4500, 1000), (1500, 3000), (4500, 3000))):
        draw.text(
            (cx, cy),
            "ABCD"[i],
            font=big,
            fill=(255, 255, 255),
            anchor="mm",
            stroke_width=8,
            stroke_fill=(0, 0, 0),
        )
    return im


def gray_gradient(width: int = 1200, height: int = 800) -> Image.Image:
    im = Image.linear_gradient("L").rotate(90).resize((width, height))
    draw = ImageDraw.Draw(im)
    for i in range(0, width, 100):
        shade = (i * 255) // width
        draw.rectangle([i + 30, height // 2 - 40, i + 70, height // 2 + 40], fill=shade)
    return im


def rings(width: int = 2400, height: int = 1600) -> Image.Image:
    im = Image.new("RGB", (width, height), (250, 248, 240))
    draw = ImageDraw.Draw(im)
    cx, cy = width // 2, height // 2
    for r in range(int(math.hypot(cx, cy)), 0, -40):
        shade = (r // 40) % 2
        colour = (40, 90, 160) if shade else (230, 140, 40)
        draw.ellipse([cx - r, cy - r, cx + r, cy + r], fill=colour)
    return im


# the sample book's pages: a clear dominant colour each, so a viewer's screenshot tells them apart
BOOK_COLOURS = ((178, 34, 52), (0, 128, 128), (218, 165, 32))
BOOK_TEXT_INK = (24, 22, 28)  # the printed words, on every page
BOOK_FONT_SIZE = 34

# the words printed on each page, written on its first ruled lines (wrapped to each line's
# length). "Zürich" is on pages 1 and 3, "harbour" on pages 2 and 3: a search finds hits on two
# canvases, and "zurich" finds the word with the diacritic.
BOOK_TEXT = (
    "Letters from the Lake: a journey from Zürich by boat and on foot, with drawings of the "
    "towns along the shore. Printed for the iiif-shim samples.",
    "The morning boat left the harbour at seven, and the lake was still grey under a low sky. "
    "We counted eleven sails before the bridge at Rapperswil, where a fisherman sold us bread "
    "and cheese.",
    "By noon the clouds had lifted and the mountains stood white above the water. We came back "
    "to the harbour of Zürich at dusk, when the ferryman lit his lantern and the bells rang.",
)

Box = tuple[int, int, int, int]  # x0, y0, x1, y1 on the page image, in pixels


@dataclass(frozen=True)
class Printed:
    """A word as printed on a page: its text, where it was drawn (left end of its baseline)
    and the box of its ink (the box an OCR engine gives)."""

    text: str
    x: int
    baseline: int
    box: Box


def _rules(width: int, height: int) -> list[tuple[int, int]]:
    """The page's ruled lines: (top, right end) of each; each starts at x=150, 18 px thick."""
    return [(y, width - 150 - (y * 37) % 300) for y in range(200, height - 200, 60)]


def _font() -> ImageFont.FreeTypeFont:
    font = ImageFont.load_default(size=BOOK_FONT_SIZE)
    assert isinstance(font, ImageFont.FreeTypeFont)  # Pillow with FreeType: Aileron
    return font


def _drawn(word: str) -> str:
    return word.replace("ü", "u")  # the embedded font has no ü: its dots are drawn (_print)


def book_layout(number: int, width: int = 1200, height: int = 1600) -> list[list[Printed]]:
    """The words of page ``number``, line by line: each line written on a ruled line (its
    baseline 8 px above it), wrapped to the ruled line's length."""
    font = _font()
    space = font.getlength(" ")
    words = BOOK_TEXT[number - 1].split()
    lines: list[list[Printed]] = []
    for top, right in _rules(width, height):
        if not words:
            break
        x, baseline = 160.0, top - 8
        line: list[Printed] = []
        while words and (not line or x + font.getlength(_drawn(words[0])) <= right - 10):
            word = words.pop(0)
            x0, y0, x1, y1 = (int(v) for v in font.getbbox(_drawn(word), anchor="ls"))
            if "ü" in word:
                y0 = min(y0, _DOTS_TOP)
            left = round(x)
            line.append(
                Printed(word, left, baseline, (left + x0, baseline + y0, left + x1, baseline + y1))
            )
            x += font.getlength(_drawn(word)) + space
        lines.append(line)
    if words:
        raise ValueError(f"page {number}: the text does not fit on its lines")
    return lines


_DOTS_TOP = -BOOK_FONT_SIZE * 3 // 4  # above the baseline: the top of a ü's dots


def _print(draw: ImageDraw.ImageDraw, font: ImageFont.FreeTypeFont, word: Printed) -> None:
    draw.text(
        (word.x, word.baseline), _drawn(word.text), font=font, fill=BOOK_TEXT_INK, anchor="ls"
    )
    u0, _, u1, _ = font.getbbox("u", anchor="ls")
    r = 2
    for i, char in enumerate(word.text):
        if char == "ü":
            left = word.x + font.getlength(_drawn(word.text[:i]))
            for cx in (left + u0 + (u1 - u0) * 0.28, left + u0 + (u1 - u0) * 0.72):
                top = word.baseline + _DOTS_TOP
                draw.ellipse([cx - r, top, cx + r, top + 2 * r], fill=BOOK_TEXT_INK)


def book_page(number: int, width: int = 1200, height: int = 1600) -> Image.Image:
    colour = BOOK_COLOURS[number - 1]
    im = Image.new("RGB", (width, height), colour)
    draw = ImageDraw.Draw(im)
    ink = tuple(max(0, c - 60) for c in colour)
    lines = book_layout(number, width, height)
    rules = _rules(width, height)
    if number == 1:  # the cover: only the lines with words on them
        rules = rules[: len(lines)]
    for top, right in rules:  # ruled lines in a darker shade
        draw.rectangle([150, top, right, top + 18], fill=ink)
    font = _font()
    for line in lines:
        for word in line:
            _print(draw, font, word)
    draw.text(
        (width // 2, height - 110),
        str(number),
        font=ImageFont.load_default(size=90),
        fill=(255, 255, 255),
        anchor="mm",
    )
    return im


# The sidecar OCR files of the book's pages, as digitisation typically delivers them: page 1 in
# ALTO v4 measured on a 2400x3200 master (twice the served image: boxes scale by 1/2 to the
# canvas), page 2 in hOCR as Tesseract writes it for the 1200x1600 image, page 3 in ALTO v2
# measured in tenths of a millimetre (the page scanned at 200 dpi: 1.27 mm10 a pixel).
MM10_PER_PIXEL = 254 / 200


def _scaled(box: Box, factor: float) -> Box:
    """``box`` times ``factor``, rounded outwards (an OCR box holds all of the word's ink)."""
    x0, y0, x1, y1 = box
    return (
        math.floor(x0 * factor),
        math.floor(y0 * factor),
        math.ceil(x1 * factor),
        math.ceil(y1 * factor),
    )


def _union(boxes: list[Box]) -> Box:
    return (
        min(b[0] for b in boxes),
        min(b[1] for b in boxes),
        max(b[2] for b in boxes),
        max(b[3] for b in boxes),
    )


def _alto_box(box: Box) -> str:
    x0, y0, x1, y1 = box
    return f'HPOS="{x0}" VPOS="{y0}" WIDTH="{x1 - x0}" HEIGHT="{y1 - y0}"'


def book_alto(
    number: int, version: int, unit: str, factor: float, width: int = 1200, height: int = 1600
) -> str:
    """ALTO ``version`` (2 to 4) of page ``number``: its boxes in ``unit`` (``pixel`` of an
    image ``factor`` times the page image's size, or ``mm10`` with ``factor`` mm10 a pixel)."""
    lines = [[(w.text, _scaled(w.box, factor)) for w in line] for line in book_layout(number)]
    page_w, page_h = round(width * factor), round(height * factor)
    block = _union([b for line in lines for _, b in line])
    ns = f"http://www.loc.gov/standards/alto/ns-v{version}#"
    schema = {2: "alto-v2.0.xsd", 3: "v3/alto-3-1.xsd", 4: "v4/alto-4-2.xsd"}[version]
    out = [
        '<?xml version="1.0" encoding="UTF-8"?>',
        f'<alto xmlns="{ns}" xmlns:xsi="http://www.w3.org/2001/XMLSchema-instance"'
        f' xsi:schemaLocation="{ns} http://www.loc.gov/standards/alto/{schema}">',
        "  <Description>",
        f"    <MeasurementUnit>{unit}</MeasurementUnit>",
        "    <sourceImageInformation>",
        f"      <fileName>p{number}.tif</fileName>",
        "    </sourceImageInformation>",
        "  </Description>",
        "  <Layout>",
        f'    <Page ID="page{number}" PHYSICAL_IMG_NR="{number}" WIDTH="{page_w}"'
        f' HEIGHT="{page_h}">',
        f"      <PrintSpace {_alto_box((0, 0, page_w, page_h))}>",
        f'        <TextBlock ID="block{number}" {_alto_box(block)}>',
    ]
    for i, line in enumerate(lines, 1):
        out.append(
            f'          <TextLine ID="line{number}_{i}" {_alto_box(_union([b for _, b in line]))}>'
        )
        for j, (text, box) in enumerate(line, 1):
            if j > 1:
                previous = line[j - 2][1]
                out.append(
                    f'            <SP HPOS="{previous[2]}" VPOS="{previous[1]}"'
                    f' WIDTH="{box[0] - previous[2]}"/>'
                )
            out.append(
                f'            <String ID="word{number}_{i}_{j}" CONTENT="{html.escape(text)}"'
                f' {_alto_box(box)} WC="0.96"/>'
            )
        out.append("          </TextLine>")
    out += ["        </TextBlock>", "      </PrintSpace>", "    </Page>", "  </Layout>", "</alto>"]
    return "\n".join(out) + "\n"


def book_hocr(number: int, width: int = 1200, height: int = 1600) -> str:
    """hOCR of page ``number`` as Tesseract 5 writes it, in the page image's pixels."""

    def bbox(box: Box) -> str:
        return "bbox {} {} {} {}".format(*box)

    layout = book_layout(number)
    block = _union([w.box for line in layout for w in line])
    out = [
        '<?xml version="1.0" encoding="UTF-8"?>',
        '<!DOCTYPE html PUBLIC "-//W3C//DTD XHTML 1.0 Transitional//EN"',
        '    "http://www.w3.org/TR/xhtml1/DTD/xhtml1-transitional.dtd">',
        '<html xmlns="http://www.w3.org/1999/xhtml" xml:lang="en" lang="en">',
        " <head>",
        "  <title></title>",
        '  <meta http-equiv="Content-Type" content="text/html;charset=utf-8"/>',
        "  <meta name='ocr-system' content='tesseract 5.3.0' />",
        "  <meta name='ocr-capabilities' content='ocr_page ocr_carea ocr_par ocr_line ocrx_word"
        " ocrp_wconf'/>",
        " </head>",
        " <body>",
        f"  <div class='ocr_page' id='page_1' title='image \"p{number}.jpg\";"
        f" bbox 0 0 {width} {height}; ppageno 0; scan_res 200 200'>",
        f"   <div class='ocr_carea' id='block_1_1' title=\"{bbox(block)}\">",
        f"    <p class='ocr_par' id='par_1_1' lang='eng' title=\"{bbox(block)}\">",
    ]
    n = 0
    for i, line in enumerate(layout, 1):
        box = _union([w.box for w in line])
        offset = line[0].baseline - box[3]
        out.append(
            f"     <span class='ocr_line' id='line_1_{i}' title=\"{bbox(box)}; baseline 0"
            f' {offset}; x_size {BOOK_FONT_SIZE}; x_descenders 7; x_ascenders 9">'
        )
        for word in line:
            n += 1
            out.append(
                f"      <span class='ocrx_word' id='word_1_{n}' title='{bbox(word.box)};"
                f" x_wconf 96'>{html.escape(word.text)}</span>"
            )
        out.append("     </span>")
    out += ["    </p>", "   </div>", "  </div>", " </body>", "</html>"]
    return "\n".join(out) + "\n"


BOOK_OCR: dict[str, Callable[[], str]] = {
    "p1.xml": lambda: book_alto(1, 4, "pixel", 2),
    "p2.hocr": lambda: book_hocr(2),
    "p3.xml": lambda: book_alto(3, 2, "mm10", MM10_PER_PIXEL),
}


def letter(width: int = 3000, height: int = 2000) -> Image.Image:
    paper, ink = (236, 222, 190), (60, 45, 110)
    im = Image.new("RGB", (width, height), paper)
    draw = ImageDraw.Draw(im)
    draw.rectangle([60, 60, width - 60, height - 60], outline=(150, 110, 60), width=12)
    head = ImageFont.load_default(size=120)
    draw.text((width // 2, 220), "Restricted letter", font=head, fill=ink, anchor="mm")
    small = ImageFont.load_default(size=22)
    line = "the small print of this letter is legible only at full resolution; " * 3
    for n, y in enumerate(range(420, height - 160, 44)):
        draw.text((180, y), f"{n + 1:02d}  {line}"[:235], font=small, fill=ink)
    return im


def main() -> None:
    HERE.mkdir(exist_ok=True)
    chart().save(HERE / "chart.jpg", quality=80, optimize=True, progressive=False)
    gray_gradient().save(HERE / "gray-gradient.png", optimize=True)
    rings().save(HERE / "rings.jp2", quality_mode="rates", quality_layers=[40], irreversible=True)
    (HERE / "book").mkdir(exist_ok=True)
    for n in (1, 2, 3):
        book_page(n).save(HERE / "book" / f"p{n}.jpg", quality=85, optimize=True)
    for name, make in BOOK_OCR.items():
        (HERE / "book" / name).write_text(make(), encoding="utf-8")
    (HERE / "restricted").mkdir(exist_ok=True)
    letter().save(HERE / "restricted" / "letter.jpg", quality=85, optimize=True)


if __name__ == "__main__":
    main()
