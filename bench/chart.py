"""The chart of docs/performance.png, drawn with Pillow: one bar per ratio of bench/perf.py
(iiif-shim against a peer, or against itself), on a log scale, with its target marked and the
bar green when the target is met, red when not, grey when the ratio has no target."""

from __future__ import annotations

import math
from dataclasses import dataclass
from pathlib import Path

from PIL import Image, ImageDraw, ImageFont


@dataclass(frozen=True)
class Bar:
    label: str
    ratio: float
    target: float | None = None  # the ratio must be at least this


LOW, HIGH = 0.1, 100.0
GREEN, RED, GREY, INK = (46, 139, 87), (200, 60, 50), (150, 150, 150), (30, 30, 30)


def draw(bars: list[Bar], title: str, out: Path) -> None:
    font = ImageFont.load_default(size=15)
    small = ImageFont.load_default(size=13)
    label_w, plot_w, row, top = 430, 560, 26, 60
    width, height = label_w + plot_w + 90, top + row * max(1, len(bars)) + 50
    im = Image.new("RGB", (width, height), "white")
    d = ImageDraw.Draw(im)
    d.text((12, 12), title, fill=INK, font=font)

    def x_of(ratio: float) -> float:
        r = min(max(ratio, LOW), HIGH)
        return label_w + plot_w * (math.log10(r) - math.log10(LOW)) / math.log10(HIGH / LOW)

    bottom = top + row * len(bars)
    for tick in (0.1, 0.3, 1, 3, 10, 30, 100):
        x = x_of(tick)
        d.line([(x, top - 6), (x, bottom)], fill=(225, 225, 225) if tick != 1 else INK)
        d.text((x - 8, bottom + 6), f"{tick:g}x", fill=INK, font=small)
    d.text(
        (label_w, 38),
        "iiif-shim / other (log scale; > 1 means iiif-shim is faster)",
        fill=INK,
        font=small,
    )
    for i, bar in enumerate(bars):
        y = top + i * row
        d.text((12, y + 5), bar.label, fill=INK, font=small)
        colour = GREY if bar.target is None else GREEN if bar.ratio >= bar.target else RED
        x0, x1 = x_of(1.0), x_of(bar.ratio)
        d.rectangle([min(x0, x1), y + 5, max(x0, x1), y + row - 5], fill=colour)
        d.text((max(x0, x1) + 6, y + 5), f"{bar.ratio:.2f}x", fill=INK, font=small)
        if bar.target is not None:
            xt = x_of(bar.target)
            d.line([(xt, y + 1), (xt, y + row - 1)], fill=INK, width=3)
    out.parent.mkdir(parents=True, exist_ok=True)
    im.save(out, optimize=True)
