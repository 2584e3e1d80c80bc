"""Containment against real servers: no identifier, however encoded, reaches a file outside the
folder a backend's URL template names, through any backend type.

The site below is served by nginx (stock settings: it decodes ``%2F`` and resolves ``..``),
by lighttpd (with ``url-path-2f-decode``, as legacy sites enable it; iipsrv behind it), and
read by Thumbor's file loader. Each backend's template points into ``public/``; a magenta
``secret`` sits next to ``public/`` in every format. First the attacks are shown to work against
the servers themselves; then every encoding of them through the shim is answered 400/404
without a single request reaching the backend, and the servers' own logs show no request that
resolves outside the templates' folders. iipsrv strips ``../`` from ``FIF`` itself, which the
test records too. Redirects are followed only within a template's origin and folder.
"""

from __future__ import annotations

import io
import json
import re
import subprocess
import sys
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path
from urllib.parse import quote, unquote

import pytest
from PIL import Image

from tests.servers import THUMBOR_KEY, IipServer, make_tiff, start_thumbor
from tests.support import (
    Process,
    free_port,
    log_lines,
    need_tool,
    nginx_config,
    nginx_resolves,
    request,
    start_shim,
    write_config,
)

SECRET = (255, 0, 255)
PUBLIC = (0, 160, 0)


@dataclass
class Site:
    root: Path
    nginx: Process
    nginx_log: Path
    lighttpd: IipServer
    thumbor: Process
    shim: Process


def _pyramids(source: Path, dz: Path, zoomify: Path) -> None:
    vips = need_tool("vips")
    for layout, out in (("dz", dz), ("zoomify", zoomify)):
        subprocess.run(
            [vips, "dzsave", str(source), str(out), "--layout", layout],
            check=True,
            capture_output=True,
            timeout=120,
        )


def build_site(root: Path) -> None:
    public = root / "public"
    for folder in (public / "dz", public / "zoomify"):
        folder.mkdir(parents=True)
    Image.new("RGB", (300, 200), PUBLIC).save(public / "quad.png")
    Image.new("RGB", (300, 200), SECRET).save(root / "secret.png")
    _pyramids(public / "quad.png", public / "dz" / "quad", public / "zoomify" / "quad")
    _pyramids(root / "secret.png", root / "secret", root / "zsecret")
    make_tiff(public / "quad.png", public / "quad.tif")
    make_tiff(root / "secret.png", root / "secret.tif")


BACKENDS = {
    # prefix: backend YAML ({nginx}, {lighttpd}, {thumbor}, {root} filled in)
    "files": '{{type: files, root: "{root}/public"}}',
    "http-nginx": '{{type: http, url: "{nginx}/public/{{id}}.png"}}',
    "http-lighttpd": '{{type: http, url: "{lighttpd}/public/{{id}}.png"}}',
    "deepzoom": '{{type: deepzoom, url: "{nginx}/public/dz/{{id}}.dzi"}}',
    "zoomify": '{{type: zoomify, url: "{nginx}/public/zoomify/{{id}}/"}}',
    "iip": '{{type: iip, url: "{lighttpd}/fcgi-bin/iipsrv.fcgi", path: "{{id}}.tif"}}',
    "iiif": '{{type: iiif, url: "{lighttpd}/iiif/{{id}}.tif"}}',
    "thumbor": (
        '{{type: thumbor, url: "{thumbor}", path: "public/{{id}}.png", '
        f'security_key: "{THUMBOR_KEY}"}}}}'
    ),
    "template": (
        '{{type: template, info: {{url: "{nginx}/public/dz/{{id}}.dzi", '
        'width: {{xml: "Size/@Width"}}, height: {{xml: "Size/@Height"}}}}, '
        'image: {{url: "{nginx}/public/{{id}}.png"}}}}'
    ),
}


@pytest.fixture(scope="module")
def site(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Site]:
    root = tmp_path_factory.mktemp("site")
    build_site(root)
    work = tmp_path_factory.mktemp("site-servers")
    port = free_port()
    redirects = (
        "        location = /public/away.png { return 302 http://127.0.0.1:9/secret.png; }\n"
        "        location = /public/up.png { return 302 /secret.png; }\n"
        "        location = /public/along.png { return 302 /public/quad.png; }\n"
    )
    conf = nginx_config(root, port, work, extra=redirects)
    nginx = Process(
        [need_tool("nginx", "/usr/sbin/nginx"), "-c", str(conf), "-p", str(work)],
        port,
        work / "nginx.out",
    )
    started: list[Process | IipServer] = [nginx]
    try:
        (work / "lighttpd").mkdir()
        lighttpd = IipServer(
            root / "public",
            work / "lighttpd",
            ready="quad.tif",
            docroot=root,
            lighttpd_extra='server.http-parseopts = ( "url-path-2f-decode" => "enable" )',
        )
        started.append(lighttpd)
        (work / "thumbor").mkdir()
        thumbor = start_thumbor(root, work / "thumbor")
        started.append(thumbor)
        backends = "".join(
            f"  {name}: "
            + spec.format(
                nginx=f"http://127.0.0.1:{port}",
                lighttpd=lighttpd.url,
                thumbor=f"http://127.0.0.1:{thumbor.port}",
                root=root,
            )
            + "\n"
            for name, spec in BACKENDS.items()
        )
        routes = "".join(
            f'  - {{match: "^{name}:(?P<rest>.*)$", backend: {name}, id: "{{rest}}"}}\n'
            for name in BACKENDS
        )
        shim_dir = work / "shim"
        shim_dir.mkdir()
        config = write_config(shim_dir / "shim.yaml", f"backends:\n{backends}routes:\n{routes}")
        shim = start_shim(config, shim_dir)
        started.append(shim)
        yield Site(root, nginx, work / "nginx-access.log", lighttpd, thumbor, shim)
    finally:
        for proc in reversed(started):
            proc.stop()


def colour(body: bytes) -> tuple[int, ...]:
    im = Image.open(io.BytesIO(body)).convert("RGB")
    return tuple(im.getpixel((im.width // 2, im.height // 2)))  # type: ignore[arg-type]


def near(a: tuple[int, ...], b: tuple[int, ...]) -> bool:
    return all(abs(x - y) <= 20 for x, y in zip(a, b, strict=True))


# What the shim encoded before it checked values: "../secret" as one segment, "..%2Fsecret".
DIRECT = (
    "/public/..%2Fsecret.png",
    "/public/%2e%2E%2fsecret.png",
    "/public/dz/..%2F..%2Fsecret.dzi",
    "/unsafe/public/..%2Fsecret.png",
)
DIRECT_FIF = "/fcgi-bin/iipsrv.fcgi?FIF=../secret.tif&OBJ=Max-size"


def test_the_attack_works_against_the_servers_themselves(site: Site) -> None:
    """What the shim has to stop: each server hands out the secret for ``..%2F``."""
    for port, path in (
        (site.nginx.port, DIRECT[0]),
        (site.nginx.port, DIRECT[1]),
        (site.lighttpd.port, DIRECT[0]),
        (site.nginx.port, DIRECT[2]),
        (site.thumbor.port, DIRECT[3]),
    ):
        resp = request(port, path)
        assert resp.status == 200, (port, path, resp.status)
        if path.endswith(".png"):
            assert near(colour(resp.body), SECRET)
    # iipsrv strips "../" from FIF on its own; the shim must not rely on it, but here it holds
    fif = request(site.lighttpd.port, DIRECT_FIF)
    assert fif.status == 404


def test_the_legitimate_image_is_served_by_every_backend(site: Site) -> None:
    for name in BACKENDS:
        resp = site.shim.get(f"/iiif/3/{quote(name + ':quad', safe='')}/full/64,/0/default.png")
        assert resp.status == 200, (name, resp.text)
        assert near(colour(resp.body), PUBLIC), name


CLIMBS = ("../secret", "../../secret", "../../../secret", "dz/../../secret")


def attack_values() -> list[str]:
    """Every encoding of climbing out of the template's folder, as the identifier the shim
    sees after its one decoding of the URL segment."""
    values: list[str] = []
    for climb in CLIMBS:
        values += [
            climb,
            climb.replace("/", "%2F"),  # double-encoded slash
            climb.replace("/", "%2f").replace(".", "%2e"),  # double-encoded, lower case
            climb.replace(".", "%2E"),
            climb.replace("/", "%252F"),  # triple
            climb.replace("/", "\\"),
            climb.replace("/", "%5C"),
            climb.replace("../", "..;/"),
            climb.replace("../", "%C0%AE%C0%AE/"),  # overlong UTF-8 dots
            climb.replace("../", "%C0%AE%C0%AE%C0%AF"),
            climb.replace("../", "\uff0e\uff0e/"),  # fullwidth
            climb.replace("../", "\uff0e\uff0e\uff0f"),
            climb.replace("../", ".. /"),
            climb.replace("../", "....//"),
            climb + "\x00",
            climb + "%00",
            climb + ".png\x00",
        ]
    values += ["http://127.0.0.1:9/x", "//127.0.0.1:9/x", ".", "..", "%2e%2e"]
    return values


def raw_segments() -> list[str]:
    """URL segments written by hand (mixed case, overlong, invalid UTF-8), per prefix."""
    return [
        "{p}%3A..%2Fsecret",
        "{p}%3A%2e%2E%2fsecret",
        "{p}%3A%2E%2E%2F%2E%2E%2Fsecret",
        "{p}%3A..%c0%afsecret",
        "{p}%3A%C0%AE%C0%AE%2Fsecret",
        "{p}%3A..%255csecret",
        "{p}%3A..%2F..%2F..%2Fsecret%00.png",
    ]


def _traffic(site: Site) -> dict[str, int]:
    health = json.loads(site.shim.get("/health").body)
    return {name: b.get("requests", 0) for name, b in health["backends"].items()}


def test_no_encoding_escapes_through_any_backend(site: Site) -> None:
    before = _traffic(site)
    answered: dict[int, int] = {}
    for name in BACKENDS:
        segments = [quote(f"{name}:{v}", safe="") for v in attack_values()]
        segments += [s.format(p=name) for s in raw_segments()]
        for segment in segments:
            for tail in ("info.json", "full/max/0/default.png"):
                resp = site.shim.get(f"/iiif/3/{segment}/{tail}")
                answered[resp.status] = answered.get(resp.status, 0) + 1
                assert resp.status in (400, 404), (name, segment, tail, resp.status, resp.text)
                assert resp.header("Access-Control-Allow-Origin") == "*"
    assert _traffic(site) == before, "an attack reached a backend"
    assert sum(answered.values()) > 700 and set(answered) <= {400, 404}


def test_the_servers_never_saw_a_request_outside_the_templates(site: Site) -> None:
    """Every request the legacy servers logged (beyond the first test's direct attacks) is
    inside a template's folder as they resolve it. The shim first makes requests known to land
    in each log, and the check counts them: an empty or unread log cannot pass."""
    for known in ("http-nginx:quad", "iip:quad"):
        assert site.shim.get(f"/iiif/3/{known}/full/64,/0/default.png").status == 200
    logs = {
        site.nginx_log: log_lines(site.nginx_log, "GET /public/quad.png"),
        site.lighttpd.access_log: log_lines(site.lighttpd.access_log, "FIF=quad.tif"),
    }
    allowed = ("/public/", "/fcgi-bin/", "/iiif/")
    request_re = re.compile(r'"?GET (\S+) HTTP')
    for log, known_lines in logs.items():
        checked = 0
        for line in log.read_text().splitlines():
            found = request_re.search(line)
            if found is None:
                continue
            path = found.group(1).split("?", 1)[0]
            if path in DIRECT or path == "/":  # the first test's attacks; health checks
                continue
            assert nginx_resolves(path).startswith(allowed), line
            fif = re.search(r"[?&]FIF=([^&\s]*)", found.group(1))
            # iipsrv's file, from the query: relative, no dot segments
            if fif is not None and found.group(1) != DIRECT_FIF:
                name = unquote(fif.group(1))
                assert not name.startswith("/") and ".." not in name.split("/"), line
            checked += 1
        assert checked >= len(known_lines) >= 1, (log, checked)


@pytest.mark.parametrize(
    ("name", "status"),
    [("along", 200), ("up", 502), ("away", 502)],
)
def test_redirects_stay_in_the_templates_folder(site: Site, name: str, status: int) -> None:
    resp = site.shim.get(f"/iiif/3/http-nginx%3A{name}/full/64,/0/default.png")
    assert resp.status == status, resp.text
    if status == 200:
        assert near(colour(resp.body), PUBLIC)
    else:
        assert "redirected outside" in resp.text and "127.0.0.1" not in resp.text


def test_check_config_explains_what_a_route_lets_through(tmp_path: Path) -> None:
    shim = [sys.executable, "-m", "iiif_shim"]
    config = write_config(
        tmp_path / "shim.yaml",
        """
        backends:
          masters: {type: http, url: "http://legacy.example.org/masters/{id}.tif"}
          signed: {type: thumbor, url: "http://t:8888", security_key: k}
          thumbs: {type: thumbor, url: "http://t:8888", path: "public/{id}"}
        routes:
          - {match: "ms/(?P<rest>.+)", backend: masters, id: "{rest}"}
          - {match: "^t:(?P<rest>[^/]+)$", backend: thumbs, id: "{rest}"}
          - {backend: signed}
        """,
    )
    done = subprocess.run([*shim, "check-config", str(config)], capture_output=True, text=True)
    assert done.returncode == 1, done.stdout
    assert "backends.signed.path: starts with a placeholder" in done.stderr
    config.write_text(config.read_text().replace("- {backend: signed}", ""))
    config.write_text(config.read_text().replace("signed:", "unused:"))
    done = subprocess.run([*shim, "check-config", str(config)], capture_output=True, text=True)
    assert done.returncode == 0, done.stderr
    out = done.stdout
    assert "routes[0].match: searched anywhere" in out
    assert "backends.masters.url: {id} may hold '/'" in out and "'/masters/'" in out
    assert "backends.thumbs.path" not in out  # [^/]+ keeps '/' out
