"""Screenshots of the sample object "book" in the built-in viewers, for the documentation.

    .venv/bin/python bench/screenshots.py [OUT_DIR]      (default: docs/screenshots)

Starts the working tree's shim with its embedded default config on a free port, opens the book
in Mirador and in the Universal Viewer, and its object page, in Debian's Chromium (driven by
playwright, as the browser tests do, with their helpers), and writes mirador.png, uv.png and
object-page.png once the first page is drawn.
Needs `bash deploy/setup.sh test` (Chromium, playwright and the viewers' files).
"""

from __future__ import annotations

import sys
import tempfile
import time
from pathlib import Path
from typing import Any

from playwright.sync_api import sync_playwright

sys.path.insert(0, str(Path(__file__).resolve().parent.parent))

from iiif_shim.defaults.make_samples import BOOK_COLOURS
from tests.browser.conftest import (
    CHROMIUM,
    CHROMIUM_ARGS,
    VIEWPORT,
    start_default_shim,
    wait_for_colours,
)
from tests.support import ROOT

CANVAS = "#viewer .openseadragon-canvas"


def shoot(page: Any, url: str, out: Path, drawn: str | None) -> None:
    page.goto(url, wait_until="load", timeout=30_000)
    if drawn is not None:
        wait_for_colours(page, drawn, {BOOK_COLOURS[0]: 0.15})
    time.sleep(1)  # let fades and thumbnails settle
    page.screenshot(path=str(out))
    print(f"wrote {out}")


def main() -> None:
    out_dir = Path(sys.argv[1]) if len(sys.argv) > 1 else ROOT / "docs" / "screenshots"
    out_dir.mkdir(parents=True, exist_ok=True)
    with tempfile.TemporaryDirectory() as tmp:
        shim = start_default_shim(Path(tmp))
        try:
            origin = f"http://127.0.0.1:{shim.port}"
            manifest = f"{origin}/iiif/presentation/3/book/manifest"
            with sync_playwright() as p:
                browser = p.chromium.launch(
                    executable_path=CHROMIUM, args=CHROMIUM_ARGS, timeout=60_000
                )
                page = browser.new_page(viewport=VIEWPORT)
                for viewer in ("mirador", "uv"):
                    url = f"{origin}/view/{viewer}?iiif-content={manifest}"
                    shoot(page, url, out_dir / f"{viewer}.png", CANVAS)
                shoot(page, f"{origin}/objects/book", out_dir / "object-page.png", None)
                browser.close()
        finally:
            shim.stop()


if __name__ == "__main__":
    main()
