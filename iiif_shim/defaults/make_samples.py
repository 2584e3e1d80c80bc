"""Regenerate the bundled sample images (deterministic; run from anywhere).

    python -m iiif_shim.defaults.make_samples

- ``chart.jpg``: 6000x4000 colour chart whose labels come in three sizes, so each zoom level of
  a deep-zoom viewer shows new detail (large grid labels, 500 px cells, 100 px cells).
- ``gray-gradient.png``: 1200x800 grayscale (mode L) gradient: info.json offers no ``color``.
- ``rings.jp2``: 2400x1600 JPEG 2000 with concentric rings: exercises the reduced-resolution
  decode of JPEG 2000 sources.
- ``book/p1.jpg`` to ``book/p3.jpg``: 1200x1600 pages of the sample object ``book`` (crimson, teal,
  goldenrod, each with its page number), listed by the ``folder`` source; ``book/object.yaml``
  (hand-written) describes the object.
- ``restricted/letter.jpg``: 3000x2000 letter in small handwriting-like strokes, shown to the
  embedded default's ``staff`` policy only (log in as demo/demo); everyone else gets its
  degraded tier, where the small print is a blur.
- ``67352ccc-d1b0-11e1-89ae-279075081939.png``: the official IIIF validator test image, copied
  unchanged from the validator's fixtures (not generated here).
"""

from __future__ import annotations

import math
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


def book_page(number: int, width: int = 1200, height: int = 1600) -> Image.Image:
    colour = BOOK_COLOURS[number - 1]
    im = Image.new("RGB", (width, height), colour)
    draw = ImageDraw.Draw(im)
    ink = tuple(max(0, c - 60) for c in colour)
    for y in range(200, height - 200, 60):  # "lines of text" in a darker shade
        draw.rectangle([150, y, width - 150 - (y * 37) % 300, y + 18], fill=ink)
    draw.text(
        (width // 2, height - 110),
        str(number),
        font=ImageFont.load_default(size=90),
        fill=(255, 255, 255),
        anchor="mm",
    )
    return im


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
    (HERE / "restricted").mkdir(exist_ok=True)
    letter().save(HERE / "restricted" / "letter.jpg", quality=85, optimize=True)


if __name__ == "__main__":
    main()
