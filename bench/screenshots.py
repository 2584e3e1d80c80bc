"""Screenshots of the sample object "book" in the built-in viewers, for the documentation.

    .venv/bin/python bench/screenshots.py [OUT_DIR]      (default: docs/screenshots)

Starts the working tree's shim with its embedded default config on a free port, opens the book
in Mirador and in the Universal Viewer, and its object page, in Debian's Chromium (driven by
playwright), and writes mirador.png, uv.png and object-page.png once the first page is drawn.
Needs `bash deploy/setup.sh test` (Chromium, playwright and the viewers' files).
"""

from __future__ import annotations

import io
import os
import socket
import subprocess
import sys
import time
from pathlib import Path
from typing import Any

from PIL import Image
from playwright.sync_api import sync_playwright

ROOT = Path(__file__).resolve().parent.parent
CHROMIUM = "/usr/bin/chromium"
ARGS = [
    "--headless",
    "--no-sandbox",
    "--disable-gpu",
    "--disable-quic",
    "--no-first-run",
    "--disable-background-networking",
    "--disable-component-update",
    "--disable-sync",
]
FIRST_PAGE = (178, 34, 52)  # the book's cover colour


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


def wait_for_port(port: int, timeout: float = 20) -> None:
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        try:
            with socket.create_connection(("127.0.0.1", port), timeout=0.5):
                return
        except OSError:
            time.sleep(0.1)
    raise SystemExit(f"the shim is not listening on {port} after {timeout:g} s")


def share_of(png: bytes, colour: tuple[int, int, int]) -> float:
    im = Image.open(io.BytesIO(png)).convert("RGB").resize((160, 100))
    data = im.tobytes()
    near = sum(
        1
        for i in range(0, len(data), 3)
        if all(abs(data[i + k] - colour[k]) <= 40 for k in range(3))
    )
    return near / (im.width * im.height)


def shoot(page: Any, url: str, out: Path, drawn: str | None, timeout: float = 30) -> None:
    page.goto(url, wait_until="load", timeout=timeout * 1000)
    deadline = time.monotonic() + timeout
    while drawn is not None:
        if share_of(page.locator(drawn).first.screenshot(timeout=10_000), FIRST_PAGE) > 0.15:
            break
        if time.monotonic() > deadline:
            raise SystemExit(f"{url}: the first page was not drawn in {timeout:g} s")
        time.sleep(0.5)
    time.sleep(1)  # let fades and thumbnails settle
    page.screenshot(path=str(out))
    print(f"wrote {out}")


def main() -> None:
    out_dir = Path(sys.argv[1]) if len(sys.argv) > 1 else ROOT / "docs" / "screenshots"
    out_dir.mkdir(parents=True, exist_ok=True)
    port = free_port()
    env = {**os.environ, "IIIF_SHIM_CONFIG": ""}
    shim = subprocess.Popen(
        [sys.executable, "-m", "iiif_shim", "serve", "--port", str(port)],
        cwd=ROOT,
        env=env,
        stdout=subprocess.DEVNULL,
        stderr=subprocess.DEVNULL,
    )
    try:
        wait_for_port(port)
        origin = f"http://127.0.0.1:{port}"
        manifest = f"{origin}/iiif/presentation/3/book/manifest"
        with sync_playwright() as p:
            browser = p.chromium.launch(executable_path=CHROMIUM, args=ARGS, timeout=60_000)
            page = browser.new_page(viewport={"width": 1280, "height": 800})
            canvas = "#viewer .openseadragon-canvas"
            shoot(
                page,
                f"{origin}/view/mirador?iiif-content={manifest}",
                out_dir / "mirador.png",
                canvas,
            )
            shoot(page, f"{origin}/view/uv?iiif-content={manifest}", out_dir / "uv.png", canvas)
            object_page = f"{origin}/objects/book"
            if page.request.get(object_page).status == 200:
                shoot(page, object_page, out_dir / "object-page.png", None)
            browser.close()
    finally:
        shim.terminate()
        try:
            shim.wait(10)
        except subprocess.TimeoutExpired:
            shim.kill()
            shim.wait(5)


if __name__ == "__main__":
    main()
