"""Access control wherever the bytes go, through real shims over sockets: info.json and images of
restricted routes, their degraded tier, the Auth 2.0 probes, every cache tier (memory, disk, a
real Redis), originals passed through, manifests, collections, object pages and PDFs.

Each defence is first shown to be needed: the same image on a public route (its plain
identifier: the catch-all route serves the same file) gives its bytes; behind ``access`` and
without a login, none come. The policies are those of ``tests/http/auth_support.py``
(``staff``: a login with a degraded tier of :data:`DEGRADED` pixels; ``vault``: a login with
nothing for the others).
"""

from __future__ import annotations

import json
import re
import subprocess
import sys
import time
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any
from urllib.parse import quote, urlsplit

import pytest
import yaml
from PIL import Image, ImageChops, ImageStat

from iiif_shim.iiif.profile import Version
from tests.http.auth_support import (
    DEGRADED,
    ORIGIN,
    auth_config,
    cookie,
    login,
    send,
    token,
)
from tests.support import (
    Process,
    Response,
    make_images,
    start_redis,
    start_shim,
    wait_until,
)

AUTH2 = "http://iiif.io/api/auth/2/context.json"
AUTH1 = "http://iiif.io/api/auth/1/context.json"
BIG = (1200, 800)  # big.jpg: large enough that the degraded tier is a real reduction
K = 16  # big.jpg halved until it fits in DEGRADED: its tier pixels are 16x16 of the image's


def enc(identifier: str) -> str:
    return quote(identifier, safe="")


@dataclass
class Site:
    shim: Process
    upstream: Process
    redis: Process
    config: Path
    tmp: Path
    staff: str  # a staff login's cookie value
    vault: str

    def get(
        self,
        path: str,
        *,
        login: str | None = None,
        policy: str = "staff",
        headers: dict[str, str] | None = None,
        shim: Process | None = None,
    ) -> Response:
        cookies = cookie(policy, login) if login else None
        return send((shim or self.shim).port, path, cookies=cookies, headers=headers)


def _config(tmp: Path, images: Path, upstream: int, redis: int) -> Path:
    path = auth_config(
        tmp / "conf",
        images,
        cache={
            "disk": str(tmp / "disk"),
            "redis": f"redis://127.0.0.1:{redis}/0",
            "redis_prefix": "enforce:",
        },
    )
    body: dict[str, Any] = yaml.safe_load(path.read_text())
    body["backends"]["up"] = {"type": "iiif", "url": f"http://127.0.0.1:{upstream}/iiif/3/{{id}}"}
    body["routes"].insert(
        0, {"match": "^up/(?P<rest>.+)$", "backend": "up", "id": "{rest}", "access": "staff"}
    )
    (tmp / "conf" / "objects.csv").write_text(
        "obj,img,acc\n"
        "open,quad.png,\n"
        "letters,staff/quad.png,\n"
        "letters,staff/big.jpg,\n"
        "sealed,vault/quad.png,\n"
        "mixed,quad.png,vault\n"
        "duo,staff/quad.png,vault\n"
        "unknown,quad.png,nope\n"
    )
    body["presentation"] = {
        "sources": {
            "cat": {
                "type": "csv",
                "path": "objects.csv",
                "columns": {"object": "obj", "image": "img", "access": "acc"},
            }
        }
    }
    path.write_text(yaml.safe_dump(body, sort_keys=False))
    return path


@pytest.fixture(scope="module")
def site(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Site]:
    tmp = tmp_path_factory.mktemp("enforce")
    images = make_images(tmp / "images")
    Image.effect_noise(BIG, 60).convert("RGB").save(images / "big.jpg", quality=90)
    up_config = tmp / "up.yaml"
    up_config.write_text(
        yaml.safe_dump(
            {
                "iiif": {"prefix": "/iiif"},
                "backends": {"local": {"type": "files", "root": str(images)}},
                "routes": [{"backend": "local"}],
            }
        )
    )
    upstream = start_shim(up_config, tmp)
    redis = start_redis(tmp / "redis")
    config = _config(tmp, images, upstream.port, redis.port)
    shim = start_shim(config, tmp)
    try:
        yield Site(shim, upstream, redis, config, tmp, login(shim.port), login(shim.port, "vault"))
    finally:
        shim.stop()
        redis.stop()
        upstream.stop()


def _no_image(resp: Response) -> None:
    """An answer that holds nothing of an image."""
    assert not (resp.header("Content-Type") or "").startswith("image/")
    assert b"\x89PNG" not in resp.body and b"\xff\xd8\xff" not in resp.body


def path_of(url: str) -> str:
    return urlsplit(url).path


def _private(resp: Response) -> None:
    assert "private" in (resp.header("Cache-Control") or "") or "no-store" in (
        resp.header("Cache-Control") or ""
    ), resp.headers
    assert "Cookie" in (resp.header("Vary") or "") and "Authorization" in (
        resp.header("Vary") or ""
    )


def _metric(shim: Process, start: str) -> float:
    for line in shim.get("/metrics").text.splitlines():
        if line.startswith(start + " "):
            return float(line.split()[-1])
    return 0.0


def _lookups(shim: Process, tier: str, result: str) -> float:
    return _metric(shim, f'iiif_shim_cache_lookups_total{{result="{result}",tier="{tier}"}}')


# --- info.json --------------------------------------------------------------------------------


def test_info_json_of_a_restricted_image_answers_by_the_verdict(site: Site) -> None:
    public = site.get("/iiif/3/quad.png/info.json")
    assert public.status == 200
    assert "Cookie" not in (public.header("Vary") or "")  # public routes: as before
    assert "service" not in json.loads(public.body)

    staff = f"/iiif/3/{enc('staff/quad.png')}/info.json"
    redirected = site.get(staff)
    assert redirected.status == 302
    assert (redirected.header("Location") or "").endswith(
        f"/iiif/degraded/3/{enc('staff/quad.png')}/info.json"
    )
    _private(redirected)

    vault = site.get(f"/iiif/3/{enc('vault/quad.png')}/info.json")
    assert vault.status == 401
    _private(vault)
    doc = json.loads(vault.body)
    assert (doc["width"], doc["height"]) == (300, 200)  # the whole document, with its services
    assert doc["@context"][0] == AUTH2
    probe, cookie1 = doc["service"]
    assert probe["type"] == "AuthProbeService2"
    assert probe["id"].endswith(f"/auth/probe/image/{enc('vault/quad.png')}")
    assert "@context" not in probe
    assert cookie1["@type"] == "AuthCookieService1"
    assert cookie1["profile"] == "http://iiif.io/api/auth/1/login"
    assert cookie1["@id"].endswith("/auth/vault/access")

    allowed = site.get(staff, login=site.staff)
    assert allowed.status == 200
    _private(allowed)
    assert json.loads(allowed.body)["id"].endswith(f"/iiif/3/{enc('staff/quad.png')}")
    again = site.get(
        staff, login=site.staff, headers={"If-None-Match": allowed.header("ETag") or ""}
    )
    assert again.status == 304
    refused = site.get(staff, headers={"If-None-Match": allowed.header("ETag") or ""})
    assert refused.status == 302  # no 304 before the verdict


def test_info_json_2_1_declares_services_with_their_own_contexts(site: Site) -> None:
    resp = site.get(f"/iiif/2/{enc('vault/quad.png')}/info.json")
    assert resp.status == 401
    doc = json.loads(resp.body)
    assert doc["@context"] == "http://iiif.io/api/image/2/context.json"
    probe, cookie1 = doc["service"]
    assert probe["@context"] == AUTH2 and probe["type"] == "AuthProbeService2"
    assert cookie1["@context"] == AUTH1 and "@id" in cookie1 and "@type" not in cookie1
    token_service = cookie1["service"][0]
    assert token_service["profile"] == "http://iiif.io/api/auth/1/token"


def test_a_bearer_token_opens_info_json_but_not_images(site: Site) -> None:
    access = token(site.shim.port, "staff", site.staff)
    bearer = {"Authorization": f"Bearer {access}"}
    info = site.get(f"/iiif/3/{enc('staff/quad.png')}/info.json", headers=bearer)
    assert info.status == 200
    tile = site.get(f"/iiif/3/{enc('staff/quad.png')}/full/max/0/default.jpg", headers=bearer)
    assert tile.status == 401
    _no_image(tile)
    # a token of another policy opens nothing of this one
    vault = site.get(f"/iiif/3/{enc('vault/quad.png')}/info.json", headers=bearer)
    assert vault.status == 401


# --- images -----------------------------------------------------------------------------------


@pytest.mark.parametrize(
    "tail", ["full/max/0/default.jpg", "0,0,150,100/150,/0/default.png", "full/60,/0/gray.jpg"]
)
def test_images_of_restricted_routes_need_a_login(site: Site, tail: str) -> None:
    public = site.get(f"/iiif/3/quad.png/{tail}")
    assert public.status == 200 and public.image().width > 0  # the bytes, when public
    for policy, login_value in (("staff", site.staff), ("vault", site.vault)):
        path = f"/iiif/3/{enc(policy + '/quad.png')}/{tail}"
        refused = site.get(path)
        assert refused.status == 401, refused.text  # never a redirect for an image
        _no_image(refused)
        _private(refused)
        other = site.get(path, login=site.vault if policy == "staff" else site.staff,
                         policy="vault" if policy == "staff" else "staff")  # fmt: skip
        assert other.status == 401  # another policy's login opens nothing here
        allowed = site.get(path, login=login_value, policy=policy)
        assert allowed.status == 200
        assert allowed.image().size == public.image().size
        _private(allowed)


def test_an_original_is_not_passed_through_without_a_login(site: Site) -> None:
    public = site.get("/iiif/3/quad.png/full/max/0/default.png")
    assert public.status == 200 and public.header("Accept-Ranges") == "bytes"  # the master's
    path = f"/iiif/3/{enc('staff/quad.png')}/full/max/0/default.png"
    refused = site.get(path, headers={"Range": "bytes=0-99"})
    assert refused.status == 401
    _no_image(refused)
    allowed = site.get(path, login=site.staff)
    assert allowed.status == 200 and allowed.header("Accept-Ranges") == "bytes"
    assert allowed.body == public.body
    _private(allowed)


# --- the degraded tier ------------------------------------------------------------------------


def test_the_degraded_tier_info_json(site: Site) -> None:
    for version in ("3", "2"):
        resp = site.get(f"/iiif/degraded/{version}/{enc('staff/big.jpg')}/info.json")
        assert resp.status == 200
        doc = json.loads(resp.body)
        ident = doc.get("id") or doc["@id"]
        assert ident.endswith(f"/iiif/degraded/{version}/{enc('staff/big.jpg')}")
        assert (doc["width"], doc["height"]) == BIG  # canvas coordinates hold
        limits = doc if version == "3" else doc["profile"][1]
        assert limits["maxWidth"] == DEGRADED and limits["maxHeight"] == DEGRADED
        assert max(max(s["width"], s["height"]) for s in doc["sizes"]) == DEGRADED
        # the same Auth 1.0 login, so 1.0 viewers (UV) offer it; no Auth 2.0 probe: the tier is
        # everyone's, and a substitute must not have the full image's probe (Auth 2.0, 7.1)
        services = doc["service"]
        kinds = {s.get("type") or s.get("@type") or s.get("profile") for s in services}
        assert "AuthProbeService2" not in kinds and AUTH2 not in json.dumps(doc)
        cookie_service = [s for s in services if "auth/1/login" in str(s.get("profile"))]
        assert len(cookie_service) == 1, services
        for factor in doc["tiles"][0]["scaleFactors"]:  # every tile it offers is served
            tile = doc["tiles"][0]["width"]
            span = tile * factor
            w = min(span, BIG[0]) // factor
            got = site.get(
                f"/iiif/degraded/{version}/{enc('staff/big.jpg')}/0,0,{min(span, BIG[0])},"
                f"{min(span, BIG[1])}/{w},/0/default.jpg"
            )
            assert got.status == 200, (factor, got.text)
    assert site.get(f"/iiif/degraded/3/{enc('vault/quad.png')}/info.json").status == 404
    assert site.get("/iiif/degraded/3/quad.png/info.json").status == 404


def test_the_degraded_tier_never_serves_more_than_max_size(site: Site) -> None:
    base = f"/iiif/degraded/3/{enc('staff/big.jpg')}"
    whole = site.get(f"{base}/full/max/0/default.jpg")
    assert whole.status == 200
    assert max(whole.image().size) == DEGRADED
    confined = site.get(f"{base}/full/!5000,5000/0/default.png")
    assert max(confined.image().size) == DEGRADED
    # the output is confined to maxWidth/maxHeight like any server's (its pixels are the
    # tier's: see the tests below); past them, an explicit size is a 400
    region = site.get(f"{base}/0,0,300,300/max/0/default.png")
    assert region.status == 200 and region.image().size == (DEGRADED, DEGRADED)
    assert site.get(f"{base}/0,0,300,300/300,/0/default.png").status == 400
    assert site.get(f"{base}/full/1200,/0/default.png").status == 400
    assert site.get(f"/iiif/3/{enc('staff/big.jpg')}/full/max/0/default.jpg").status == 401
    assert site.get("/iiif/3/big.jpg/full/max/0/default.jpg").image().size == BIG


def _tier_reference(site: Site) -> Image.Image:
    """big.jpg as the degraded tier's virtual image should be: the master (from the public
    route), each tier pixel the mean of its ``K`` x ``K`` block."""
    master = site.get("/iiif/3/big.jpg/full/max/0/default.png").image().convert("RGB")
    assert -(-max(BIG) // K) <= DEGRADED < -(-max(BIG) // (K // 2))  # K: halved until it fits
    return master.reduce(K)


def _expected(reference: Image.Image, region: str, size: tuple[int, int]) -> Image.Image:
    """What a tile of the tier shows: its region of the virtual image, resampled to ``size``."""
    x, y, w, h = (0, 0, *BIG) if region == "full" else map(int, region.split(","))
    box = (x / K, y / K, (x + w) / K, (y + h) / K)
    return reference.resize(size, Image.Resampling.LANCZOS, box=box)


def _mean_error(a: Image.Image, b: Image.Image) -> float:
    diff = ImageChops.difference(a.convert("RGB"), b.convert("RGB"))
    return sum(ImageStat.Stat(diff).mean) / 3


def test_the_degraded_tier_gives_no_pixel_finer_than_its_scale(site: Site) -> None:
    """The attacks of a review: regions smaller than one pixel of the tier (100 px of 1200: 16x16
    of the image each) gave the master's own pixels (the public route shows what they were).
    Now each answers from the tier's virtual pixels: the colour around that tier pixel, an
    average of its 16x16 pixels of the image, never the master's pixel, and a region of noise
    scaled up comes back smooth."""
    base3 = f"/iiif/degraded/3/{enc('staff/big.jpg')}"
    base2 = f"/iiif/degraded/2/{enc('staff/big.jpg')}"
    reference = _tier_reference(site)
    master = site.get("/iiif/3/big.jpg/full/max/0/default.png").image().convert("RGB")
    for x, y in ((600, 400), (1199, 799), (7, 13), (611, 397)):
        want = _expected(reference, f"{x},{y},1,1", (1, 1)).getpixel((0, 0))
        for path in (
            f"{base3}/{x},{y},1,1/1,1/0/default.png",
            f"{base3}/{x},{y},1,1/max/0/default.png",
            f"{base2}/{x},{y},1,1/1,/0/default.png",
            f"{base2}/{x},{y},1,1/full/0/default.png",
        ):
            resp = site.get(path)
            assert resp.status == 200, (path, resp.status, resp.text)
            got = resp.image().convert("RGB").getpixel((0, 0))
            assert isinstance(got, tuple) and isinstance(want, tuple)
            assert max(abs(g - w) for g, w in zip(got, want, strict=True)) < 16, (got, want)
    # noise of sigma 60 (about 5 once averaged over a tier pixel): the master's own pixel is
    # mostly far from the tier's colour, which is what comes back
    far = 0
    for n in range(30):
        x, y = 37 * n + 5, 26 * n + 3
        own = master.getpixel((x, y))
        got = site.get(f"{base3}/{x},{y},1,1/1,1/0/default.png").image().convert("RGB")
        pixel = got.getpixel((0, 0))
        assert isinstance(own, tuple) and isinstance(pixel, tuple)
        far += max(abs(g - o) for g, o in zip(pixel, own, strict=True)) > 30
    assert far >= 10, far
    assert site.get(f"{base3}/pct:50,50,0.1,0.1/max/0/default.png").status == 200
    # a 48x48 region at 48x48 (4x4 tier pixels scaled up) is smooth, the master's is noise
    tile = site.get(f"{base3}/600,396,48,48/48,48/0/default.png").image().convert("L")
    noise = master.convert("L").crop((600, 396, 648, 444))
    assert ImageStat.Stat(tile).stddev[0] < ImageStat.Stat(noise).stddev[0] / 3
    assert _mean_error(tile, _expected(reference, "600,396,48,48", (48, 48)).convert("L")) < 8


def _osd_between(width: int, height: int, tile: int) -> list[tuple[str, str]]:
    """The tiles OpenSeadragon asks at every power-of-two level down to the full resolution,
    built by hand from ``width``/``height`` and the tile size alone (what it does for a level
    the info.json does not list): squares of ``tile * 2^k`` at ``tile`` (edges rounded up)."""
    found = []
    k = 0
    while True:
        span = tile << k
        for y in range(0, height, span):
            for x in range(0, width, span):
                w, h = min(span, width - x), min(span, height - y)
                found.append((f"{x},{y},{w},{h}", f"{-(-w // (1 << k))},{-(-h // (1 << k))}"))
        if span >= max(width, height):
            return found
        k += 1


def test_every_tile_viewers_build_from_the_degraded_info_json_answers(site: Site) -> None:
    """OpenSeadragon, Mirador, Leaflet and the canonical tiles of the degraded info.json, the
    finer levels OpenSeadragon asks from ``width``/``height`` at a closer zoom, and those
    between built by hand, both versions: all 200, each the right part of the tier's virtual
    image (the master averaged down, then scaled to the tile: a small mean error)."""
    from tests.unit.test_degraded_tier import tier_tiles

    reference = _tier_reference(site)
    checked = finer_checked = 0
    for version in (Version.V3, Version.V2):
        base = f"/iiif/degraded/{version.value}/{enc('staff/big.jpg')}"
        doc = json.loads(site.get(f"{base}/info.json").body)
        least = min(doc["tiles"][0]["scaleFactors"])
        assert least == K  # 1200 halved 4 times fits in 100
        within, finer = tier_tiles(doc, version, least)
        assert len(within) > 3 and finer  # one tile at 16, and the sizes; finer levels too
        tile = doc["tiles"][0]["width"]
        by_hand = _osd_between(*BIG, tile)
        for region, size in dict.fromkeys(within + finer + by_hand):
            got = site.get(f"{base}/{region}/{size}/0/default.png")
            assert got.status == 200, (version, region, size, got.text)
            image = got.image()
            assert _mean_error(image, _expected(reference, region, image.size)) < 8, (
                region,
                size,
            )
            checked += 1
            finer_checked += (region, size) in finer
    assert checked > 100 and finer_checked > 20


def test_the_backend_is_never_asked_for_more_than_the_degraded_tier(site: Site) -> None:
    """``up/...`` is served by an upstream IIIF server (another shim) that scales: its own
    access log shows what it was asked for."""
    base = f"/iiif/degraded/3/{enc('up/big.jpg')}"
    asks = [
        "full/max/0/default.jpg",
        "0,0,600,600/max/0/default.jpg",
        "600,0,600,600/50,/0/default.png",
        "full/!90,90/0/default.jpg",
        # finer than the tier: OpenSeadragon's closer levels, and a single pixel
        "0,0,100,100/100,100/0/default.jpg",
        "300,200,50,50/50,50/0/default.jpg",
        "601,401,1,1/1,1/0/default.png",
    ]
    for tail in asks:
        got = site.get(f"{base}/{tail}")
        assert got.status == 200, (tail, got.text)
        assert max(got.image().size) <= DEGRADED
    lines: list[str] = []

    def asked() -> bool:
        lines[:] = [
            line
            for line in site.upstream.log.read_text().splitlines()
            if "/iiif/3/big.jpg/" in line and "/info.json" not in line
        ]
        return len(lines) >= len(asks)

    wait_until(asked, "the upstream's log lines of the degraded requests", 10)
    sizes = []
    for line in lines:
        found = re.search(r"/iiif/3/big\.jpg/([^/ ]+)/([^/ ]+)/", line)
        assert found is not None, line
        region, size = found.groups()
        if size in ("max", "full"):
            w, h = BIG if region == "full" else map(int, region.split(",")[2:])
        else:
            w_text, _, h_text = size.lstrip("!^").partition(",")
            w = int(w_text) if w_text else 0
            h = int(h_text) if h_text else 0
        sizes.append((line, w, h))
    assert sizes
    for line, w, h in sizes:
        assert max(w, h) <= DEGRADED, line
        # and never more than the tier's pixels of the region it asks for (K image pixels
        # a tier pixel)
        found = re.search(r"/iiif/3/big\.jpg/([^/ ]+)/", line)
        assert found is not None
        region = found.group(1)
        rw, rh = BIG if region == "full" else map(int, region.split(",")[2:])
        assert w <= -(-rw // K) and h <= -(-rh // K), line
    # without a login the image itself is refused before the upstream is asked anything
    before = len(site.upstream.log.read_text().splitlines())
    whole = f"/iiif/3/{enc('up/big.jpg')}/full/max/0/default.jpg"
    refused = site.get(whole)
    assert refused.status == 401
    _no_image(refused)
    # logged in, it asks for the full size (streamed through as the upstream sends it)
    full = site.get(whole, login=site.staff)
    assert full.status == 200 and full.image().size == BIG
    wait_until(
        lambda: "/iiif/3/big.jpg/full/" in site.upstream.log.read_text(),
        "the full-size request in the upstream's log",
        10,
    )
    asked = site.upstream.log.read_text().splitlines()[before:]
    assert len([line for line in asked if "/iiif/3/big.jpg/full/" in line]) == 1


def test_a_degraded_tile_of_an_odd_sized_image_asks_the_upstream_for_its_blocks_alone(
    site: Site,
) -> None:
    """A 6001x4001 master (its long side shares no factor with max_size, as most scans'):
    every degraded tile made the upstream render the whole image (30 tiles, 30 ``full/100,67``).
    Now its tier is the image halved until it fits (6 times: 94x63 pixels of 64x64 blocks) and
    each tile asks the upstream for the blocks it covers at exactly 1/64, nothing else; each
    answer is the right part of the master averaged over those blocks."""
    odd = (6001, 4001)
    k = 64
    master = Image.effect_noise(odd, 60).convert("RGB")
    master.save(site.tmp / "images" / "odd.jpg", quality=90)
    reference = Image.open(site.tmp / "images" / "odd.jpg").convert("RGB").reduce(k)
    base = f"/iiif/degraded/3/{enc('up/odd.jpg')}"
    doc = json.loads(site.get(f"{base}/info.json").body)
    assert min(doc["tiles"][0]["scaleFactors"]) == k
    tile = doc["tiles"][0]["width"]
    # OpenSeadragon's tiles of the tier's level and the next finer, then small regions (the
    # review's `x,y,64,64/8,`), each in blocks no other request reads
    asks = []
    for level in (k, k // 2):
        span = tile * level
        for y in range(0, odd[1], span):
            for x in range(0, odd[0], span):
                w, h = min(span, odd[0] - x), min(span, odd[1] - y)
                asks.append((f"{x},{y},{w},{h}", f"{-(-w // level)},{-(-h // level)}"))
    asks += [
        (f"{x},{y},64,64", "8,8") for x, y in ((k * 3 * n + 5, k * 2 * n + 7) for n in range(12))
    ]
    for region, size in asks:
        got = site.get(f"{base}/{region}/{size}/0/default.png")
        assert got.status == 200, (region, size, got.text)
        image = got.image()
        x, y, w, h = map(int, region.split(","))
        want = reference.resize(
            image.size, Image.Resampling.LANCZOS, box=_tier_box(x, y, w, h, odd, k)
        )
        assert _mean_error(image, want) < 10, (region, size)
    lines: list[str] = []

    def asked() -> bool:
        lines[:] = [
            line
            for line in site.upstream.log.read_text().splitlines()
            if "/iiif/3/odd.jpg/" in line and "/info.json" not in line
        ]
        return len(lines) >= len(asks)

    wait_until(asked, "the upstream's log lines of the degraded tiles", 10)
    for line in lines:
        found = re.search(r"/iiif/3/odd\.jpg/([^/ ]+)/([^/ ]+)/", line)
        assert found is not None, line
        region, size = found.groups()
        assert region != "full", line  # never the whole image for a tile
        x, y, w, h = map(int, region.split(","))
        assert x % k == 0 and y % k == 0, line  # whole blocks
        assert w * h <= (tile * k) ** 2, line  # no more than a tile of the tier's level
        assert size == f"{-(-w // k)},{-(-h // k)}", line  # exactly 1/64


def _tier_box(
    x: int, y: int, w: int, h: int, full: tuple[int, int], k: int
) -> tuple[float, float, float, float]:
    """A region of the image in the tier's virtual pixels (a block cut by the edge counts
    whole)."""
    right = -(-full[0] // k) if x + w >= full[0] else (x + w) / k
    bottom = -(-full[1] // k) if y + h >= full[1] else (y + h) / k
    return x / k, y / k, right, bottom


# --- the cache tiers --------------------------------------------------------------------------


def test_no_cache_tier_answers_without_a_login(site: Site) -> None:
    """Warm every tier with a logged-in request, then ask without: refused before any lookup
    (the lookups do not move). A second shim on the same disk folder and Redis finds the
    entries there for a login, and refuses the others just the same."""
    path = f"/iiif/3/{enc('staff/big.jpg')}/0,0,512,512/256,/0/default.jpg"
    first = site.get(path, login=site.staff)
    assert first.status == 200
    hits = _lookups(site.shim, "image", "hit")
    warm = site.get(path, login=site.staff)
    assert warm.status == 200 and warm.body == first.body
    assert _lookups(site.shim, "image", "hit") == hits + 1
    looked = sum(_lookups(site.shim, t, r) for t in ("image", "disk", "redis")
                 for r in ("hit", "miss"))  # fmt: skip
    refused = site.get(path)
    assert refused.status == 401
    _no_image(refused)
    after = sum(_lookups(site.shim, t, r) for t in ("image", "disk", "redis")
                for r in ("hit", "miss"))  # fmt: skip
    assert after == looked  # the verdict came first: no tier was even looked at

    (site.tmp / "second").mkdir(exist_ok=True)
    second = start_shim(site.config, site.tmp / "second")
    try:
        assert send(second.port, path).status == 401
        assert _lookups(second, "disk", "hit") + _lookups(second, "redis", "hit") == 0
        got = send(second.port, path, cookies=cookie("staff", site.staff))
        assert got.status == 200 and got.body == first.body
        assert _lookups(second, "disk", "hit") + _lookups(second, "redis", "hit") == 1
    finally:
        second.stop()


def test_the_degraded_tier_never_gets_a_full_tier_entry(site: Site) -> None:
    """The same request of both tiers, the full one first: the degraded one is a miss of its
    own, with another ETag."""
    tail = "full/90,/0/default.jpg"  # within both tiers
    full = site.get(f"/iiif/3/{enc('staff/big.jpg')}/{tail}", login=site.staff)
    assert full.status == 200
    misses = _lookups(site.shim, "image", "miss")
    degraded = site.get(f"/iiif/degraded/3/{enc('staff/big.jpg')}/{tail}")
    assert degraded.status == 200
    assert _lookups(site.shim, "image", "miss") == misses + 1
    assert degraded.header("ETag") != full.header("ETag")
    assert degraded.image().size == full.image().size


# --- probes -----------------------------------------------------------------------------------


def test_the_image_probe(site: Site) -> None:
    path = f"/auth/probe/image/{enc('staff/quad.png')}"
    denied = site.get(path, headers={"Origin": ORIGIN})
    assert denied.status == 200
    assert denied.header("Access-Control-Allow-Origin") == "*"
    assert denied.header("Access-Control-Allow-Credentials") is None
    doc = json.loads(denied.body)
    assert doc["@context"] == AUTH2 and doc["type"] == "AuthProbeResult2"
    assert doc["status"] == 401
    assert doc["substitute"][0]["id"].endswith(f"/iiif/degraded/3/{enc('staff/quad.png')}")
    assert doc["substitute"][0]["type"] == "ImageService3"
    assert doc["substitute"][0]["profile"] == "level2"
    # the 2.1 service as Presentation 3.0 names one (and the manifests do)
    assert doc["substitute"][1] == {
        "@id": doc["substitute"][0]["id"].replace("/degraded/3/", "/degraded/2/"),
        "@type": "ImageService2",
        "profile": "http://iiif.io/api/image/2/level2.json",
    }
    manifest = json.loads(site.get("/iiif/presentation/3/letters/manifest").body)
    assert any(
        doc["substitute"][1] in item.get("service", [])
        for canvas in manifest["items"]
        for item in canvas.get("thumbnail", [])
    )
    assert "heading" in doc
    access = token(site.shim.port, "staff", site.staff)
    granted = json.loads(site.get(path, headers={"Authorization": f"Bearer {access}"}).body)
    assert granted == {"@context": AUTH2, "type": "AuthProbeResult2", "status": 200}
    assert json.loads(site.get(path, login=site.staff).body)["status"] == 200
    vault = json.loads(site.get(f"/auth/probe/image/{enc('vault/quad.png')}").body)
    assert vault["status"] == 401 and "substitute" not in vault
    assert site.get("/auth/probe/image/quad.png").status == 404  # public: no probe
    preflight = send(
        site.shim.port,
        path,
        method="OPTIONS",
        headers={
            "Origin": ORIGIN,
            "Access-Control-Request-Method": "GET",
            "Access-Control-Request-Headers": "authorization",
        },
    )
    assert "Authorization" in (preflight.header("Access-Control-Allow-Headers") or "")


# --- presentation -----------------------------------------------------------------------------


def test_manifests_declare_restricted_images_and_thumbnails_come_from_the_degraded_tier(
    site: Site,
) -> None:
    anonymous = site.get("/iiif/presentation/3/letters/manifest")
    logged_in = site.get("/iiif/presentation/3/letters/manifest", login=site.staff)
    assert anonymous.body == logged_in.body  # the same for everyone: its caches stay right
    assert "public" in (anonymous.header("Cache-Control") or "")
    doc = json.loads(anonymous.body)
    assert doc["@context"][0] == AUTH2
    for canvas in doc["items"]:
        body = canvas["items"][0]["items"][0]["body"]
        service = body["service"][0]
        probe, cookie1 = service["service"]
        assert probe["type"] == "AuthProbeService2" and "@context" not in probe
        assert cookie1["@type"] == "AuthCookieService1"
        assert "/iiif/degraded/3/" in canvas["thumbnail"][0]["id"]
        assert "rendering" not in canvas  # no original of a restricted image
    thumb = site.get(path_of(doc["thumbnail"][0]["id"]))
    assert thumb.status == 200 and max(thumb.image().size) <= DEGRADED
    sealed = json.loads(site.get("/iiif/presentation/3/sealed/manifest").body)
    assert "thumbnail" not in sealed and "thumbnail" not in sealed["items"][0]
    assert sealed["rendering"][0]["service"][0]["type"] == "AuthProbeService2"
    public = json.loads(site.get("/iiif/presentation/3/open/manifest").body)
    assert public["@context"] == "http://iiif.io/api/presentation/3/context.json"
    assert "/iiif/3/quad.png/" in public["thumbnail"][0]["id"]

    two = json.loads(site.get("/iiif/presentation/2/letters/manifest").body)
    canvas = two["sequences"][0]["canvases"][0]
    service = canvas["images"][0]["resource"]["service"]
    probe, cookie1 = service["service"]
    assert probe["@context"] == AUTH2 and cookie1["@context"] == AUTH1
    assert "/iiif/degraded/2/" in canvas["thumbnail"]["@id"]

    collection = json.loads(site.get("/iiif/presentation/3/collection/cat").body)
    thumbs = {item["id"].split("/")[-2]: item.get("thumbnail") for item in collection["items"]}
    assert thumbs["sealed"] is None
    assert "/iiif/degraded/3/" in thumbs["letters"][0]["id"]


def test_the_object_page_of_a_restricted_object(site: Site) -> None:
    page = site.get("/objects/letters").text
    assert "/iiif/degraded/3/" in page
    assert f"/iiif/3/{enc('staff/quad.png')}/full/" not in page
    assert '/auth/staff/access" target="_blank"' in page and "/auth/staff/logout" in page
    sealed = site.get("/objects/sealed").text
    assert f"{enc('vault/quad.png')}/full/" not in sealed and "/auth/vault/access" in sealed
    assert "/auth/" not in site.get("/objects/open").text


def test_a_restricted_pdf_needs_a_login(site: Site) -> None:
    public = site.get("/iiif/presentation/open/pdf")
    assert public.status == 200 and public.body.startswith(b"%PDF")
    for name, policy, value in (
        ("letters", "staff", site.staff),
        ("sealed", "vault", site.vault),
        ("mixed", "vault", site.vault),  # public images, the object's own access
    ):
        refused = site.get(f"/iiif/presentation/{name}/pdf")
        assert refused.status == 401, name
        _private(refused)
        head = send(site.shim.port, f"/iiif/presentation/{name}/pdf", method="HEAD")
        assert head.status == 401
        assert not refused.body.startswith(b"%PDF")
        allowed = site.get(f"/iiif/presentation/{name}/pdf", login=value, policy=policy)
        assert allowed.status == 200 and allowed.body.startswith(b"%PDF"), name
        # kept now: still refused without the login
        assert site.get(f"/iiif/presentation/{name}/pdf").status == 401
        probe = json.loads(site.get(f"/auth/probe/pdf/{name}").body)
        assert probe["status"] == 401
        assert json.loads(site.get(f"/auth/probe/pdf/{name}", login=value, policy=policy)
                          .body)["status"] == 200  # fmt: skip
    assert site.get("/auth/probe/pdf/open").status == 404


def test_an_object_naming_an_unknown_policy_is_never_shown(site: Site) -> None:
    """Its image is public, but the object says it is not: fail closed (404 naming why),
    whatever the source's strictness, and left out of its collection."""
    for path in (
        "/iiif/presentation/3/unknown/manifest",
        "/iiif/presentation/unknown/pdf",
        "/objects/unknown",
    ):
        resp = site.get(path)
        assert resp.status == 404, path
        assert "nope" in resp.text and not resp.body.startswith(b"%PDF")
    collection = json.loads(site.get("/iiif/presentation/3/collection/cat").body)
    assert not any(item["id"].endswith("/unknown/manifest") for item in collection["items"])


def test_check_config_names_an_unknown_policy_of_a_source(site: Site, tmp_path: Path) -> None:
    body: dict[str, Any] = yaml.safe_load(site.config.read_text())
    body["presentation"]["sources"]["cat"]["access"] = "nobody"
    body["presentation"]["sources"]["cat"]["path"] = str(site.config.parent / "objects.csv")
    body["auth"]["policies"]["staff"]["users"]["htpasswd"] = str(
        site.config.parent / "users.htpasswd"
    )
    body["auth"]["policies"]["vault"]["users"]["htpasswd"] = str(
        site.config.parent / "users.htpasswd"
    )
    bad = tmp_path / "bad.yaml"
    bad.write_text(yaml.safe_dump(body, sort_keys=False))
    checked = subprocess.run(
        [sys.executable, "-m", "iiif_shim", "check-config", str(bad)],
        capture_output=True,
        text=True,
        timeout=60,
    )
    assert checked.returncode != 0
    assert "presentation.sources.cat.access" in checked.stdout + checked.stderr
    assert "'nobody'" in checked.stdout + checked.stderr


# --- an object's own access: its PDF only, said where it can be missed -------------------------


def test_the_object_page_of_an_object_whose_access_guards_only_its_pdf(site: Site) -> None:
    """``mixed`` names ``vault`` but its image is on a public route: the page says the login is
    for the PDF, not that its images are restricted."""
    page = site.get("/objects/mixed").text
    assert f"/iiif/3/{enc('quad.png')}/full/" in page  # the image is public, as its route
    assert "Log in to get the PDF" in page and "/auth/vault/access" in page
    assert "some of this is restricted" not in page
    letters = site.get("/objects/letters").text
    assert "some of this is restricted" in letters and "to get the PDF" not in letters
    # the shim's log says it once (the record loader), naming the object and the fix
    wait_until(
        lambda: (
            "object 'mixed'" in site.shim.log.read_text()
            and "give its route `access` too" in site.shim.log.read_text()
        ),
        "the warning about mixed's public image in the log",
        10,
    )
    site.get("/iiif/presentation/3/mixed/manifest")
    said = [
        line
        for line in site.shim.log.read_text().splitlines()
        if "object 'mixed'" in line
        and "guards only its PDF, text and search: its image 'quad.png'" in line
    ]
    assert len(said) == 1, said


def _check(site: Site, tmp_path: Path, body: dict[str, Any], *args: str) -> str:
    for name in ("staff", "vault"):
        body["auth"]["policies"][name]["users"]["htpasswd"] = str(
            site.config.parent / "users.htpasswd"
        )
    body["presentation"]["sources"]["cat"]["path"] = str(site.config.parent / "objects.csv")
    path = tmp_path / "checked.yaml"
    path.write_text(yaml.safe_dump(body, sort_keys=False))
    checked = subprocess.run(
        [sys.executable, "-m", "iiif_shim", "check-config", str(path), *args],
        capture_output=True,
        text=True,
        timeout=60,
    )
    assert checked.returncode == 0, checked.stdout + checked.stderr
    return checked.stdout + checked.stderr


def test_check_config_says_which_objects_access_leaves_their_images_public(
    site: Site, tmp_path: Path
) -> None:
    body: dict[str, Any] = yaml.safe_load(site.config.read_text())
    out = _check(site, tmp_path, body)
    assert (
        "presentation.sources.cat: 2 objects with an access that guards only the PDF, text" in out
    )
    listed = _check(site, tmp_path, body, "--sources")
    line = next(line for line in listed.splitlines() if "object 'mixed'" in line)
    assert "'vault'" in line and "'quad.png'" in line and "public" in line, line
    assert not any("object 'letters'" in line for line in listed.splitlines())


def test_check_config_warns_of_a_source_access_when_every_route_is_public(
    site: Site, tmp_path: Path
) -> None:
    body: dict[str, Any] = yaml.safe_load(site.config.read_text())
    for route in body["routes"]:
        route.pop("access", None)
    body["presentation"]["sources"]["cat"]["access"] = "staff"
    out = _check(site, tmp_path, body)
    assert "presentation.sources.cat.access" in out
    assert "'staff' guards only the PDFs, text and search of its objects" in out
    body["routes"][0]["access"] = "staff"  # a restricted route: each object is checked instead
    assert "presentation.sources.cat.access" not in _check(site, tmp_path, body)


# --- the audit log of refusals ----------------------------------------------------------------


def _refused_lines(site: Site, identifier: str) -> list[dict[str, Any]]:
    log = site.config.parent / "audit.log"
    found = []
    for line in log.read_text().splitlines() if log.exists() else []:
        entry = json.loads(line)
        if entry["event"] == "refused" and entry.get("identifier") == identifier:
            found.append(entry)
    return found


def test_refusals_are_audited_without_flooding_the_log(site: Site) -> None:
    """info.json, PDF and probe refusals are written with the identifier; an image's only when
    it carried a cookie of the policy that did not verify (forged, expired, logged out), at
    most once per address and policy in 10 s: a viewer's tiles without a login write
    nothing."""
    image = "vault/quad.png"
    before = len(_refused_lines(site, image))  # earlier tests refused it too

    def new() -> list[dict[str, Any]]:
        return _refused_lines(site, image)[before:]

    tiles = [f"/iiif/3/{enc(image)}/{x},0,8,8/8,8/0/default.png" for x in range(100)]
    for path in tiles:  # no cookie: refused, nothing written
        assert site.get(path).status == 401
    assert new() == []
    # a forged cookie (the vault login's value, its signature changed) on 20 tiles: one line
    forged = site.vault[:-4] + ("AAAA" if not site.vault.endswith("AAAA") else "BBBB")
    # (each step from an address of its own: the same refusal from the same address within
    # 10 s, by an earlier test too, is counted, not written)
    for path in tiles[:20]:
        assert site.get(path, login=forged, policy="vault", headers=_FROM_89).status == 401
    lines = new()
    assert len(lines) == 1, lines
    assert lines[0]["policy"] == "vault" and lines[0]["reason"] == "cookie invalid"
    assert lines[0].get("user") is None
    assert lines[0]["address"] == "192.0.2.89"
    assert forged not in json.dumps(lines) and site.vault not in json.dumps(lines)
    # info.json: always, with the identifier
    assert site.get(f"/iiif/3/{enc(image)}/info.json", headers=_FROM_90).status == 401
    lines = new()
    assert len(lines) == 2 and lines[-1]["reason"] == "not logged in"
    staff = "staff/big.jpg"  # a 302 to the degraded tier is a refusal of the image too
    assert site.get(f"/iiif/2/{enc(staff)}/info.json", headers=_FROM_90).status == 302
    assert _refused_lines(site, staff)[-1]["reason"] == "not logged in (degraded tier)"
    # a login that was logged out, replayed: the line says so
    old = login(site.shim.port, "vault")
    assert site.get("/auth/vault/logout", login=old, policy="vault").status == 200
    replay = site.get(
        f"/iiif/3/{enc(image)}/info.json", login=old, policy="vault", headers=_FROM_90
    )
    assert replay.status == 401
    lines = new()
    assert len(lines) == 3 and lines[-1]["reason"] == "cookie revoked", lines
    # the probe and the PDF: always
    probe = f"/auth/probe/image/{enc(image)}"
    assert json.loads(site.get(probe, headers=_FROM_91).body)["status"] == 401
    assert len(new()) == 4
    pdfs = len(_refused_lines(site, "sealed"))
    assert site.get("/iiif/presentation/sealed/pdf", headers=_FROM_92).status == 401
    pdf = _refused_lines(site, "sealed")[pdfs:]
    assert len(pdf) == 1 and pdf[0]["policy"] == "vault"


_FROM_89 = {"X-Forwarded-For": "192.0.2.89"}
_FROM_90 = {"X-Forwarded-For": "192.0.2.90"}
_FROM_91 = {"X-Forwarded-For": "192.0.2.91"}
_FROM_92 = {"X-Forwarded-For": "192.0.2.92"}


def test_a_flood_of_refused_probes_and_tokens_writes_a_few_lines(site: Site) -> None:
    """The reviewer's flood: 1000 anonymous probes and 1000 token requests from one address
    wrote 2000 lines. The same refusal from the same address is written once per 10 s."""
    image = "vault/quad.png"
    address = "192.0.2.93"
    headers = {"X-Forwarded-For": address}
    audit = site.config.parent / "audit.log"
    start = time.monotonic()
    for _ in range(1000):
        assert site.get(f"/auth/probe/image/{enc(image)}", headers=headers).status == 200
        assert site.get("/auth/vault/token", headers=headers).status == 401
    windows = 1 + int((time.monotonic() - start) // 10)  # a line per 10 s may be written
    lines = [json.loads(x) for x in audit.read_text().splitlines()]
    mine = [x for x in lines if x.get("address") == address]
    refused = [x for x in mine if x["event"] == "refused"]
    tokens = [x for x in mine if x["event"] == "token_refused"]
    assert 1 <= len(refused) <= windows + 1 and 1 <= len(tokens) <= windows + 1, mine


def test_a_pdf_that_needs_two_policies_is_left_out_of_the_manifests(site: Site) -> None:
    """``duo`` (its own ``access: vault``, its image on a ``staff`` route): an Auth 2.0 client
    holds one token per policy and the PDF's probe can name one, so it could never get the
    PDF: the manifests leave it out; the object page's link still works for someone logged in
    to both (the browser sends both cookies)."""
    v3 = json.loads(site.get("/iiif/presentation/3/duo/manifest").body)
    assert all("/pdf" not in r["id"] for r in v3.get("rendering", []))
    v2 = json.loads(site.get("/iiif/presentation/2/duo/manifest").body)
    assert "rendering" not in v2 or "/pdf" not in json.dumps(v2["rendering"])
    # one policy: still offered, with its probe
    sealed = json.loads(site.get("/iiif/presentation/3/sealed/manifest").body)
    assert any(r["id"].endswith("/sealed/pdf") and r.get("service") for r in sealed["rendering"])
    pdf = "/iiif/presentation/duo/pdf"
    assert site.get(pdf, login=site.vault, policy="vault").status == 401
    assert site.get(pdf, login=site.staff).status == 401
    both = {**cookie("staff", site.staff), **cookie("vault", site.vault)}
    got = send(site.shim.port, pdf, cookies=both)
    assert got.status == 200 and got.body.startswith(b"%PDF")
    page = site.get("/objects/duo").text
    assert "/iiif/presentation/duo/pdf" in page and "/auth/vault/access" in page
