"""The Image API over real sockets: statuses, headers and pixels (checklist A and B).

``quad`` is 300x200: red top-left, green top-right, blue bottom-left, white bottom-right.
"""

from __future__ import annotations

import json
import math
import threading
from email.utils import formatdate

import pytest
from PIL import Image

from tests.http.conftest import CC_BY
from tests.inprocess import InProcessShim
from tests.support import VALIDATOR_ID, Response

RED, GREEN, BLUE, WHITE = (255, 0, 0), (0, 255, 0), (0, 0, 255), (255, 255, 255)
Q3, Q2 = "/iiif/3/quad", "/iiif/2/quad"


def close(got: tuple[int, ...], want: tuple[int, ...], tol: int = 12) -> bool:
    return all(abs(a - b) <= tol for a, b in zip(got, want, strict=False))


def rgb(im: Image.Image, x: int, y: int) -> tuple[int, ...]:
    return tuple(im.convert("RGB").getpixel((x, y)))  # type: ignore[arg-type]


def image(shim: InProcessShim, path: str, **kw: object) -> Image.Image:
    resp = shim.get(path, **kw)
    assert resp.status == 200, f"{path}: {resp.status} {resp.text[:200]}"
    return resp.image()


def info(shim: InProcessShim, path: str, **kw: object) -> dict:  # type: ignore[type-arg]
    resp = shim.get(path, **kw)
    assert resp.status == 200, resp.text
    return json.loads(resp.body)  # type: ignore[no-any-return]


# --- info.json ---------------------------------------------------------------------------


def test_info_v3(shim: InProcessShim) -> None:
    resp = shim.get(f"{Q3}/info.json")
    assert resp.status == 200
    assert resp.header("Content-Type") == (
        'application/ld+json;profile="http://iiif.io/api/image/3/context.json"'
    )
    assert resp.header("Access-Control-Allow-Origin") == "*"
    assert resp.header("Vary") == "Accept"
    assert resp.header("Cache-Control") == "public, max-age=60"
    doc = json.loads(resp.body)
    assert doc["id"] == f"http://127.0.0.1:{shim.port}/iiif/3/quad"
    assert (doc["type"], doc["profile"], doc["width"], doc["height"]) == (
        "ImageService3",
        "level2",
        300,
        200,
    )
    assert (doc["maxWidth"], doc["maxHeight"], doc["maxArea"]) == (5000, 5000, 16000000)
    assert doc["tiles"] == [{"type": "Tile", "width": 256, "scaleFactors": [1, 2]}]
    assert "rights" not in doc


def test_info_v2_and_negotiation(shim: InProcessShim) -> None:
    resp = shim.get(f"{Q2}/info.json")
    assert resp.header("Content-Type") == "application/json"
    doc = json.loads(resp.body)
    assert doc["@id"] == f"http://127.0.0.1:{shim.port}/iiif/2/quad"
    assert doc["@context"] == "http://iiif.io/api/image/2/context.json"
    assert doc["profile"][0] == "http://iiif.io/api/image/2/level2.json"
    ld = shim.get(f"{Q2}/info.json", headers={"Accept": "application/ld+json"})
    assert ld.header("Content-Type") == "application/ld+json"
    plain3 = shim.get(f"{Q3}/info.json", headers={"Accept": "application/json"})
    assert plain3.header("Content-Type") == "application/json"
    both = shim.get(
        f"{Q3}/info.json", headers={"Accept": "application/json;q=0.5, application/ld+json"}
    )
    assert both.header(
        "Content-Type",
    ).startswith("application/ld+json")  # type: ignore[union-attr]


def test_rights_per_route(shim: InProcessShim) -> None:
    assert info(shim, "/iiif/3/licensed-quad/info.json")["rights"] == CC_BY
    doc2 = info(shim, "/iiif/2/licensed-quad/info.json")
    assert doc2["license"] == CC_BY
    assert doc2["@id"].endswith("/iiif/2/licensed-quad")


def test_every_advertised_size_and_tile_is_servable(shim: InProcessShim) -> None:
    doc = info(shim, "/iiif/3/chart/info.json")
    assert (doc["width"], doc["height"]) == (6000, 4000)
    assert all(s["width"] <= 5000 for s in doc["sizes"])  # within maxWidth
    for s in doc["sizes"]:
        im = image(shim, f"/iiif/3/chart/full/{s['width']},{s['height']}/0/default.jpg")
        assert im.size == (s["width"], s["height"])
        im2 = image(shim, f"/iiif/2/chart/full/{s['width']},/0/default.jpg")
        assert im2.size == (s["width"], s["height"])
    tile = doc["tiles"][0]
    w = tile["width"]
    for sf in tile["scaleFactors"]:
        span = w * sf
        cols, rows = math.ceil(6000 / span), math.ceil(4000 / span)
        for col, row in {(0, 0), (cols - 1, rows - 1), (cols // 2, 0)}:
            x, y = col * span, row * span
            rw, rh = min(span, 6000 - x), min(span, 4000 - y)
            tw, th = math.ceil(rw / sf), math.ceil(rh / sf)
            im = image(shim, f"/iiif/3/chart/{x},{y},{rw},{rh}/{tw},{th}/0/default.jpg")
            assert im.size == (tw, th)


def test_gray_source_offers_no_color(shim: InProcessShim) -> None:
    doc = info(shim, "/iiif/3/gray/info.json")
    assert "color" not in doc["extraQualities"]
    assert image(shim, "/iiif/3/gray/full/max/0/color.png").mode == "L"  # color never errors


def test_base_uri_redirects(shim: InProcessShim) -> None:
    for path in (Q3, Q3 + "/", Q2):
        resp = shim.get(path)
        assert resp.status == 303
        assert (
            resp.header("Location") == f"http://127.0.0.1:{shim.port}{path.rstrip('/')}/info.json"
        )
        assert resp.header("Access-Control-Allow-Origin") == "*"


# --- identifiers -------------------------------------------------------------------------


def test_identifier_decoded_once(shim: InProcessShim) -> None:
    doc = info(shim, "/iiif/3/sub%2Fpage%201/info.json")
    assert doc["id"].endswith("/iiif/3/sub%2Fpage%201")
    assert image(shim, "/iiif/3/sub%2Fpage%201/full/max/0/default.png").size == (300, 200)
    needless = image(shim, "/iiif/3/%71u%61d/full/max/0/default.png")  # "quad"
    assert rgb(needless, 10, 10) == RED
    assert info(shim, "/iiif/3/%71uad/info.json")["id"].endswith("/iiif/3/quad")
    assert shim.get("/iiif/3/%2571uad/info.json").status == 404  # %25 -> "%71uad", no such file
    assert shim.get("/iiif/3/sub/page%201/info.json").status == 404  # raw '/' is a separator


@pytest.mark.parametrize(
    "ident",
    [
        "..%2F..%2Fetc%2Fpasswd",
        "%2E%2E%2Fquad",
        "sub%2F..%2Fquad",
        "%2Fetc%2Fpasswd",
        "escape",
        "quad%00",
        "nothing-here",
        "a%2Fb",
        "%5Bfrob%5D",
        "[frob]",
    ],
)
def test_unknown_or_escaping_identifiers_are_404(shim: InProcessShim, ident: str) -> None:
    resp = shim.get(f"/iiif/3/{ident}/full/max/0/default.jpg")
    assert resp.status == 404, resp.text
    assert resp.header("Access-Control-Allow-Origin") == "*"
    assert resp.header(
        "Content-Type",
    ).startswith("text/plain")  # type: ignore[union-attr]


def test_bad_utf8_and_long_identifiers_are_400(shim: InProcessShim) -> None:
    assert shim.get("/iiif/3/%FF%FE/info.json").status == 400
    assert shim.get("/iiif/3/" + "a" * 2000 + "/info.json").status == 400


# --- regions, sizes, pixels --------------------------------------------------------------


@pytest.mark.parametrize(
    ("region", "size", "corner"),
    [
        ("full", (300, 200), RED),
        ("square", (200, 200), RED),  # centred: x 50..250
        ("150,0,150,100", (150, 100), GREEN),
        ("pct:0,50,50,50", (150, 100), BLUE),
        ("125,15,200,200", (175, 185), RED),  # spec example, clipped
        ("pct:41.6,7.5,66.6,100", (175, 185), RED),
        ("200,150,500,500", (100, 50), WHITE),
    ],
)
def test_regions(
    shim: InProcessShim, region: str, size: tuple[int, int], corner: tuple[int, int, int]
) -> None:
    im = image(shim, f"{Q3}/{region}/max/0/default.png")
    assert im.size == size
    assert close(rgb(im, 2, 2), corner)


def test_square_is_centred(shim: InProcessShim) -> None:
    im = image(shim, f"{Q3}/square/max/0/default.png")
    assert close(rgb(im, 90, 50), RED) and close(rgb(im, 110, 50), GREEN)


@pytest.mark.parametrize(
    ("path", "size"),
    [
        ("full/max", (300, 200)),
        ("full/^max", (300, 200)),
        ("full/150,", (150, 100)),
        ("full/,150", (225, 150)),
        ("full/pct:50", (150, 100)),
        ("full/225,100", (225, 100)),
        ("full/!225,100", (150, 100)),
        ("full/^360,", (360, 240)),
        ("full/^,240", (360, 240)),
        ("full/^pct:120", (360, 240)),
        ("full/^360,360", (360, 360)),
        ("full/^!360,360", (360, 240)),
        ("full/%5E!360,360", (360, 240)),  # browsers send ^ as %5E
    ],
)
def test_sizes_v3(shim: InProcessShim, path: str, size: tuple[int, int]) -> None:
    im = image(shim, f"{Q3}/{path}/0/default.jpg")
    assert im.size == size
    assert close(rgb(im, 3, 3), RED) and close(rgb(im, size[0] - 3, size[1] - 3), WHITE)


@pytest.mark.parametrize(
    ("path", "size"),
    [
        ("full/full", (300, 200)),
        ("full/max", (300, 200)),
        ("full/150,", (150, 100)),
        ("full/150,100", (150, 100)),  # what OpenSeadragon sends for 2.x tiles
        ("full/200,100", (200, 100)),  # sizeByDistortedWh
        ("full/600,", (600, 400)),  # sizeAboveFull
        ("full/pct:200", (600, 400)),
        ("full/!600,600", (600, 400)),
        ("square/full", (200, 200)),
    ],
)
def test_sizes_v2(shim: InProcessShim, path: str, size: tuple[int, int]) -> None:
    assert image(shim, f"{Q2}/{path}/0/default.jpg").size == size


def test_max_respects_limits(shim: InProcessShim) -> None:
    # maxArea 16M binds before maxWidth 5000: sqrt(16M / 24M) = 0.8165
    assert image(shim, "/iiif/3/chart/full/max/0/default.jpg").size == (4898, 3265)
    assert image(shim, "/iiif/2/chart/full/max/0/default.jpg").size == (4898, 3265)
    assert image(shim, "/iiif/3/chart/0,0,6000,2000/max/0/default.jpg").size == (5000, 1666)
    resp = shim.get("/iiif/2/chart/full/full/0/default.jpg")
    assert resp.status == 400 and "limits" in resp.text


def test_thumbnail_of_large_jpeg_and_jp2(shim: InProcessShim) -> None:
    assert image(shim, "/iiif/3/chart/full/256,/0/default.jpg").size == (256, 171)
    rings = image(shim, "/iiif/3/rings/full/!200,200/0/default.png")
    assert rings.size == (200, 133)
    full = image(shim, "/iiif/3/rings/1100,700,200,200/max/0/default.png")
    assert full.size == (200, 200)


@pytest.mark.parametrize(
    ("rotation", "size", "top_left"),
    [
        ("0", (300, 200), RED),
        ("90", (200, 300), BLUE),
        ("180", (300, 200), WHITE),
        ("270", (200, 300), GREEN),
        ("!0", (300, 200), GREEN),
        ("!90", (200, 300), WHITE),
        ("!180", (300, 200), BLUE),
        ("360", (300, 200), RED),
    ],
)
def test_rotation_and_mirroring(
    shim: InProcessShim, rotation: str, size: tuple[int, int], top_left: tuple[int, int, int]
) -> None:
    im = image(shim, f"{Q3}/full/max/{rotation}/default.png")
    assert im.size == size
    assert rgb(im, 2, 2) == top_left


def test_arbitrary_rotation(shim: InProcessShim) -> None:
    angle = 30
    want_w = 300 * math.cos(math.radians(angle)) + 200 * math.sin(math.radians(angle))
    want_h = 200 * math.cos(math.radians(angle)) + 300 * math.sin(math.radians(angle))
    png = image(shim, f"{Q3}/full/max/{angle}/default.png")
    # the tight bounding box: no slack around the turned corners (359.8 x 323.2)
    assert (png.size, round(want_w), round(want_h)) == ((360, 323), 360, 323)
    assert png.mode == "RGBA" and png.getpixel((0, 0))[3] == 0  # transparent corner
    cx, cy = png.width // 2, png.height // 2
    assert png.getpixel((cx, cy))[3] == 255
    jpg = image(shim, f"{Q3}/full/max/22.5/default.jpg")
    assert close(rgb(jpg, 0, 0), (0, 0, 0))  # no alpha in JPEG: black, as libvips
    webp = image(shim, f"{Q3}/full/max/45/default.webp")
    assert webp.mode == "RGBA" and webp.getpixel((0, 0))[3] == 0


def test_spec_order_of_operations(shim: InProcessShim) -> None:
    """Region, size, mirror, rotate, quality: .../125,15,120,140/90,/!345/gray.jpg."""
    im = image(shim, f"{Q3}/125,15,120,140/90,/!345/gray.png")
    assert im.mode == "LA"  # gray, with the transparent corners of the rotation
    w = 90 * math.cos(math.radians(15)) + 105 * math.sin(math.radians(15))
    assert abs(im.width - w) <= 2


def test_qualities(shim: InProcessShim) -> None:
    gray = image(shim, f"{Q3}/full/max/0/gray.jpg")
    assert gray.mode == "L"
    bitonal = image(shim, f"{Q3}/full/max/0/bitonal.png")
    assert {c for _, c in bitonal.convert("L").getcolors()} <= {0, 255}
    assert bitonal.convert("L").getpixel((250, 150)) == 255  # white stays white
    assert bitonal.convert("L").getpixel((50, 150)) == 0  # blue is dark
    color = image(shim, f"{Q3}/full/max/0/color.jpg")
    assert color.mode == "RGB" and close(rgb(color, 200, 50), GREEN)


@pytest.mark.parametrize(
    ("fmt", "media_type", "pil_format"),
    [
        ("jpg", "image/jpeg", "JPEG"),
        ("png", "image/png", "PNG"),
        ("webp", "image/webp", "WEBP"),
        ("gif", "image/gif", "GIF"),
        ("tif", "image/tiff", "TIFF"),
        ("jp2", "image/jp2", "JPEG2000"),
    ],
)
def test_formats(shim: InProcessShim, fmt: str, media_type: str, pil_format: str) -> None:
    resp = shim.get(f"{Q3}/full/150,/0/default.{fmt}")
    assert resp.status == 200
    assert resp.header("Content-Type") == media_type
    im = resp.image()
    assert im.format == pil_format and im.size == (150, 100)
    assert close(rgb(im, 5, 5), RED, tol=30) and close(rgb(im, 145, 95), WHITE, tol=30)


def test_pdf(shim: InProcessShim) -> None:
    resp = shim.get(f"{Q3}/full/150,/0/default.pdf")
    assert resp.status == 200 and resp.header("Content-Type") == "application/pdf"
    assert resp.body.startswith(b"%PDF-") and b"/Width 150" in resp.body


def test_unusual_source_modes(shim: InProcessShim) -> None:
    assert close(rgb(image(shim, "/iiif/3/cmyk/full/max/0/default.png"), 5, 5), RED, tol=20)
    deep = image(shim, "/iiif/3/deep/full/max/0/default.png")
    assert deep.mode == "L" and abs(deep.getpixel((5, 5)) - 40000 // 256) <= 1  # type: ignore[operator]
    flat = image(shim, "/iiif/3/alpha/full/max/0/default.jpg")
    assert close(rgb(flat, 5, 5), (127, 191, 127), tol=6)  # 50% green over white
    kept = image(shim, "/iiif/3/alpha/full/max/0/default.png")
    assert kept.mode == "RGBA" and kept.getpixel((5, 5))[3] == 128
    assert image(shim, "/iiif/3/quad-tif/full/max/0/default.jpg").size == (300, 200)


# --- errors ------------------------------------------------------------------------------


@pytest.mark.parametrize(
    ("path", "status", "fragment"),
    [
        (f"{Q3}/0,0,0,10/max/0/default.jpg", 400, "region"),
        (f"{Q3}/300,0,10,10/max/0/default.jpg", 400, "outside"),
        (f"{Q3}/bogus/max/0/default.jpg", 400, "region"),
        (f"{Q3}/full/full/0/default.jpg", 400, "max"),
        (f"{Q3}/full/301,/0/default.jpg", 400, "^"),
        (f"{Q3}/full/!600,600/0/default.jpg", 400, "^"),
        (f"{Q3}/full/pct:0.1/0/default.jpg", 400, "pixel"),
        (f"{Q3}/full/^6000,/0/default.jpg", 400, "limits"),
        (f"{Q3}/full/max/361/default.jpg", 400, "rotation"),
        (f"{Q3}/full/max/1e2/default.jpg", 400, "rotation"),
        (f"{Q3}/full/max/0/grey.jpg", 400, "quality"),
        (f"{Q3}/full/max/0/default.bmp", 400, "format"),
        (f"{Q3}/full/max/0/default", 400, "quality"),
        (f"{Q2}/full/^max/0/default.jpg", 400, "3.0"),
        ("/iiif/4/quad/info.json", 404, "version"),
        ("/iiif/3/quad/full/max/0/default.jpg/extra", 404, "%2F"),
        ("/iiif/3/not-an-image/info.json", 502, "image"),
        ("/iiif/3/truncated/full/max/0/default.jpg", 502, "decoded"),
    ],
)
def test_errors(shim: InProcessShim, path: str, status: int, fragment: str) -> None:
    resp = shim.get(path)
    assert resp.status == status, resp.text
    assert resp.header(
        "Content-Type",
    ).startswith("text/plain")  # type: ignore[union-attr]
    assert fragment in resp.text
    assert "Traceback" not in resp.text
    assert resp.header("Access-Control-Allow-Origin") == "*"


# --- HTTP --------------------------------------------------------------------------------


def test_link_headers(shim: InProcessShim) -> None:
    base = f"http://127.0.0.1:{shim.port}"
    resp = shim.get(f"{Q3}/pct:0,0,100,100/pct:50/0/default.jpg")
    assert resp.header("Link") == (
        f'<{base}/iiif/3/quad/full/150,100/0/default.jpg>;rel="canonical",'
        '<http://iiif.io/api/image/3/level2.json>;rel="profile"'
    )
    resp2 = shim.get(f"{Q2}/pct:0,0,100,100/pct:50/0/default.jpg")
    assert resp2.header("Link") == (
        f'<{base}/iiif/2/quad/full/150,/0/default.jpg>;rel="canonical",'
        '<http://iiif.io/api/image/2/level2.json>;rel="profile"'
    )


def _conditional(shim: InProcessShim, path: str) -> None:
    first = shim.get(path)
    etag, modified = first.header("ETag"), first.header("Last-Modified")
    assert first.status == 200 and etag and modified
    again = shim.get(path, headers={"If-None-Match": etag})
    assert again.status == 304 and again.body == b""
    assert again.header("ETag") == etag and again.header("Access-Control-Allow-Origin") == "*"
    assert shim.get(path, headers={"If-None-Match": '"other"'}).status == 200
    assert shim.get(path, headers={"If-Modified-Since": modified}).status == 304
    old = formatdate(0, usegmt=True)
    assert shim.get(path, headers={"If-Modified-Since": old}).status == 200


def test_conditional_requests(shim: InProcessShim) -> None:
    _conditional(shim, f"{Q3}/full/100,/0/default.jpg")
    _conditional(shim, f"{Q3}/info.json")
    # different requests, different tags
    a = shim.get(f"{Q3}/full/100,/0/default.jpg").header("ETag")
    b = shim.get(f"{Q3}/full/101,/0/default.jpg").header("ETag")
    assert a != b


def test_head(shim: InProcessShim) -> None:
    resp = shim.get(f"{Q3}/full/100,/0/default.png", method="HEAD")
    assert resp.status == 200 and resp.body == b""
    assert resp.header("Content-Type") == "image/png"
    assert int(resp.header("Content-Length") or 0) > 0
    assert shim.get(f"{Q3}/info.json", method="HEAD").status == 200


def test_cors_preflight(shim: InProcessShim) -> None:
    resp = shim.get(
        f"{Q3}/info.json",
        method="OPTIONS",
        headers={
            "Origin": "https://viewer.example",
            "Access-Control-Request-Method": "GET",
            "Access-Control-Request-Headers": "authorization",
        },
    )
    assert resp.status == 204
    assert resp.header("Access-Control-Allow-Origin") == "*"
    assert "Authorization" in (resp.header("Access-Control-Allow-Headers") or "")
    assert "GET" in (resp.header("Access-Control-Allow-Methods") or "")
    image_resp = shim.get(f"{Q3}/full/10,/0/default.jpg", headers={"Origin": "https://x.org"})
    assert image_resp.header("Access-Control-Allow-Origin") == "*"
    assert "Link" in (image_resp.header("Access-Control-Expose-Headers") or "")


def test_concurrent_identical_requests(shim: InProcessShim) -> None:
    path = "/iiif/3/chart/1000,1000,2000,1000/500,/0/default.png"
    results: list[Response] = []

    def fetch() -> None:
        results.append(shim.get(path))

    threads = [threading.Thread(target=fetch) for _ in range(8)]
    for t in threads:
        t.start()
    for t in threads:
        t.join(60)
    assert len(results) == 8 and all(r.status == 200 for r in results)
    assert len({r.body for r in results}) == 1


def test_health_and_landing(shim: InProcessShim, images: object) -> None:
    health = shim.get("/health")
    assert health.status == 200 and json.loads(health.body)["status"] == "ok"
    page = shim.get("/")
    assert page.status == 200 and page.header(
        "Content-Type",
    ).startswith("text/html")  # type: ignore[union-attr]
    assert f"/iiif/3/{VALIDATOR_ID}/info.json" in page.text
    assert "/iiif/3/sub%2Fpage%201/info.json" in page.text
    assert "/iiif/2/quad/full/!240,240/0/default.jpg" in page.text
