"""The deploy examples work as shipped: deploy/nginx-proxy.conf, run by real nginx with TLS and
HTTP/2 (a test CA's certificate) in front of a shim, passes the request URI through byte for byte
(an identifier's %2F survives), makes ids, redirects and request ids public with https://, sends
port 80 to https:// (certbot's challenges aside), and its optional proxy_cache and HSTS work;
deploy/setup.sh runs pip only when what it installs from changed."""

from __future__ import annotations

import http.client
import json
import os
import re
import shutil
import ssl
import subprocess
import time
import uuid
from collections.abc import Iterator
from pathlib import Path
from typing import Any
from urllib.parse import urlencode

import pytest

from tests.support import (
    ROOT,
    Process,
    Response,
    free_port,
    need_tool,
    nginx_config,
    nginx_main,
    start_shim,
    write_config,
)
from tests.tls import CA, make_ca

SHIPPED = ROOT / "deploy" / "nginx-proxy.conf"
# the lines the shipped file promises to keep, so plain substitutions can adapt it
LISTEN = "listen 443 ssl http2;"
LISTEN_HTTP = "listen 80;"
CERTS = "/etc/letsencrypt/live/images.example.org/"
WEBROOT = "/var/www/letsencrypt"
UPSTREAM = "server 127.0.0.1:8182;"
CACHE_PATH = "/var/cache/nginx/iiif"

PUBLIC_HOST = "images.example.org"  # the test certificate's name, resolved to 127.0.0.1
ENCODED = "/images/3/sub%2Fpage%201"  # sub/page 1.png in the test images

# what each request nginx logs: its connection (a number per TCP connection), the protocol
ACCESS_FORMAT = (
    "log_format iiif_test '$connection $connection_requests $server_protocol \"$http2\" '\n"
    "    '\"$request\" $status $upstream_cache_status';"
)


class Nginx(Process):
    """nginx running a site. ``port``: the site's main server (``tls``: with TLS and HTTP/2,
    else plain HTTP); ``redirect_port``: its port-80 server, if it has one; ``context``: trusting
    the test CA (``cafile``) that signed its certificate; ``access_log``: one line a request,
    ``$connection $connection_requests $server_protocol "$http2" "$request" $status
    $upstream_cache_status``."""

    def __init__(
        self,
        args: list[str],
        port: int,
        workdir: Path,
        tls: bool,
        redirect_port: int | None,
        cafile: Path,
        webroot: Path,
    ) -> None:
        self.tls = tls
        self.redirect_port = redirect_port
        self.cafile = cafile
        self.webroot = webroot
        self.access_log = workdir / "access.log"
        self.context = ssl.create_default_context(cafile=str(cafile))
        super().__init__(args, port, workdir / "out.log")

    def ask(
        self, path: str, host: str | None = None, headers: dict[str, str] | None = None
    ) -> Response:
        """GET ``path`` exactly as given from the main server (over TLS if it has TLS)."""
        return ask(self.port, path, host, headers, self.context if self.tls else None)

    @property
    def origin(self) -> str:
        """The main server's origin as a client addressing 127.0.0.1 names it."""
        return f"{'https' if self.tls else 'http'}://127.0.0.1:{self.port}"


def nginx_with(site: str, workdir: Path, tls: bool = False, ca: CA | None = None) -> Nginx:
    """nginx running ``site`` (http-level directives) on free ports: with TLS and HTTP/2 when
    ``tls`` (a certificate for images.example.org, localhost and 127.0.0.1 from ``ca``, else
    from a test CA made here), else in plain HTTP. The shipped file's certificate paths and
    webroot are moved into ``workdir``; its upstream is the caller's to substitute."""
    binary = need_tool("nginx", "/usr/sbin/nginx")
    workdir.mkdir(parents=True, exist_ok=True)
    port = free_port()
    assert site.count(LISTEN) == 1
    listen = f"listen 127.0.0.1:{port} ssl http2;" if tls else f"listen 127.0.0.1:{port};"
    site = site.replace(LISTEN, listen)
    redirect_port = None
    if LISTEN_HTTP in site:
        assert site.count(LISTEN_HTTP) == 1
        redirect_port = free_port()
        site = site.replace(LISTEN_HTTP, f"listen 127.0.0.1:{redirect_port};")
    ca = ca or make_ca(workdir / "ca")
    issued = ca.issue(f"nginx-{port}", names=(PUBLIC_HOST, "localhost", "127.0.0.1"))
    live = workdir / "live"
    live.mkdir(exist_ok=True)
    shutil.copy(issued.cert, live / "fullchain.pem")
    shutil.copy(issued.key, live / "privkey.pem")
    site = site.replace(CERTS, f"{live}/")
    webroot = workdir / "webroot"
    webroot.mkdir(exist_ok=True)
    site = site.replace(WEBROOT, str(webroot))
    conf = nginx_main(
        workdir,
        f"""    {ACCESS_FORMAT}
    access_log {workdir}/access.log iiif_test;
{site}
""",
        error_log="error.log",
    )
    return Nginx(
        [binary, "-c", str(conf), "-p", str(workdir)],
        port,
        workdir,
        tls,
        redirect_port,
        ca.root,
        webroot,
    )


def ask(
    port: int,
    path: str,
    host: str | None = None,
    headers: dict[str, str] | None = None,
    context: ssl.SSLContext | None = None,
) -> Response:
    """GET ``path`` exactly as given, with ``host`` as the only Host header when given; over
    TLS (HTTP/1.1) when a ``context`` is given."""
    conn = (
        http.client.HTTPSConnection("127.0.0.1", port, timeout=30, context=context)
        if context is not None
        else http.client.HTTPConnection("127.0.0.1", port, timeout=30)
    )
    try:
        conn.putrequest("GET", path, skip_host=host is not None, skip_accept_encoding=True)
        if host is not None:
            conn.putheader("Host", host)
        for name, value in (headers or {}).items():
            conn.putheader(name, value)
        conn.endheaders()
        resp = conn.getresponse()
        return Response(resp.status, resp.headers, resp.read())
    finally:
        conn.close()


def new_id() -> str:
    return f"deploy-{uuid.uuid4().hex}"


def seen_by_shim(shim: Process, request_id: str, wait: float = 5) -> str | None:
    """The request target the shim received for the request carrying ``request_id`` (the last
    field of its access log line), or None if none arrived within ``wait`` seconds."""
    deadline = time.monotonic() + wait
    while True:
        for line in shim.log.read_text().splitlines():
            if line.endswith(f" {request_id}"):
                found = re.search(r'"GET (\S+) HTTP/1\.[01]"', line)
                assert found, line
                return found.group(1)
        if time.monotonic() > deadline:
            return None
        time.sleep(0.05)


@pytest.fixture(scope="module")
def shim(images: Path, tmp_path_factory: pytest.TempPathFactory) -> Iterator[Process]:
    """The shim over the test images; the folder ``sub`` is an object (one page)."""
    tmp = tmp_path_factory.mktemp("deploy-shim")
    config = write_config(
        tmp / "shim.yaml",
        f"""
        server: {{trust_forwarded: true}}
        backends:
          local: {{type: files, root: "{images}"}}
        routes:
          - {{backend: local}}
        presentation:
          sources:
            scans: {{type: folder, backend: local}}
        """,
    )
    proc = start_shim(config, tmp)
    yield proc
    proc.stop()


def shipped_site(upstream_port: int, cache: Path | None = None, hsts: bool = False) -> str:
    """The shipped site over the shim at ``upstream_port``; with its optional proxy_cache lines
    uncommented (its files in ``cache``) and HSTS on when asked."""
    site = SHIPPED.read_text()
    assert site.count(UPSTREAM) == 1
    site = site.replace(UPSTREAM, f"server 127.0.0.1:{upstream_port};")
    if cache is not None:
        site = re.sub(
            r"^(\s*)# ((proxy_cache\w*|proxy_no_cache|proxy_hide_header|add_header) .*)$",
            r"\1\2",
            site,
            flags=re.M,
        )
        assert "\n# proxy_cache_path" not in site and site.count(CACHE_PATH) == 1
        site = site.replace(CACHE_PATH, str(cache))
    if hsts:
        hsts_line = re.compile(r'^(\s*)# (https\s+"max-age=\d+";)', flags=re.M)
        assert len(hsts_line.findall(site)) == 1
        site = hsts_line.sub(r"\1\2", site)
    return site


@pytest.fixture
def shipped(shim: Process, tmp_path: Path) -> Iterator[Nginx]:
    """The shipped site as it is, TLS and HTTP/2, in front of the shim."""
    proc = nginx_with(shipped_site(shim.port), tmp_path, tls=True)
    yield proc
    proc.stop()


def curl(front: Nginx, path: str, *extra: str) -> tuple[str, dict[str, Any]]:
    """``curl --http2 --cacert`` (the test CA) of ``path`` at https://images.example.org:PORT
    (resolved to 127.0.0.1): the HTTP version curl used and the JSON answer."""
    binary = need_tool("curl", "/usr/bin/curl")
    done = subprocess.run(
        [
            binary,
            "--http2",
            "--cacert",
            str(front.cafile),
            "--resolve",
            f"{PUBLIC_HOST}:{front.port}:127.0.0.1",
            "--silent",
            "--show-error",
            "--fail",
            "--write-out",
            "\n%{http_version}",
            *extra,
            f"https://{PUBLIC_HOST}:{front.port}{path}",
        ],
        capture_output=True,
        text=True,
        timeout=30,
    )
    assert done.returncode == 0, done.stderr
    body, _, version = done.stdout.rpartition("\n")
    return version, json.loads(body)


def ids_in(document: Any) -> list[str]:
    """Every ``id`` and ``@id`` in a JSON document, at any depth."""
    if isinstance(document, list):
        return [i for item in document for i in ids_in(item)]
    if not isinstance(document, dict):
        return []
    own = [str(v) for k, v in document.items() if k in ("id", "@id")]
    return own + [i for v in document.values() for i in ids_in(v)]


def test_a_proxy_pass_with_a_uri_breaks_encoded_slashes(shim: Process, tmp_path: Path) -> None:
    """The style the shipped file replaces: nginx sends the decoded path, encoded again."""
    old_style = f"""
    server {{
        {LISTEN}
        location /images/ {{
            proxy_pass http://127.0.0.1:{shim.port}/iiif/;
            proxy_set_header X-Forwarded-Prefix /images;
        }}
    }}
    """
    proc = nginx_with(old_style, tmp_path)
    try:
        rid = new_id()
        resp = ask(proc.port, ENCODED + "/info.json", headers={"X-Request-ID": rid})
        assert resp.status == 404 and "not a IIIF URL" in resp.text
        assert seen_by_shim(shim, rid) == "/iiif/3/sub/page%201/info.json"  # %2F decoded
    finally:
        proc.stop()


def test_curl_gets_http2_and_https_ids_with_the_proxys_host(shipped: Nginx) -> None:
    public = f"https://{PUBLIC_HOST}:{shipped.port}/images"
    version, info = curl(shipped, ENCODED + "/info.json")
    assert version == "2"
    assert info["id"] == f"{public}/3/sub%2Fpage%201"  # the %2F as sent
    version, manifest = curl(shipped, "/images/presentation/3/sub/manifest")
    assert version == "2"
    assert manifest["id"] == f"{public}/presentation/3/sub/manifest"
    ids = ids_in(manifest)
    assert len(ids) >= 5 and all(i.startswith(public + "/") for i in ids), ids
    services = [i for i in ids if i.startswith(f"{public}/3/")]
    assert f"{public}/3/sub%2Fpage%201" in services, ids
    # the trust is the test CA's: curl without it refuses the certificate
    done = subprocess.run(
        [
            need_tool("curl", "/usr/bin/curl"),
            "--http2",
            "--silent",
            *("--resolve", f"{PUBLIC_HOST}:{shipped.port}:127.0.0.1"),
            f"https://{PUBLIC_HOST}:{shipped.port}{ENCODED}/info.json",
        ],
        capture_output=True,
        timeout=30,
    )
    assert done.returncode == 60  # CURLE_PEER_FAILED_VERIFICATION


def test_tls_1_2_and_1_3_are_both_served(shipped: Nginx) -> None:
    for version in (ssl.TLSVersion.TLSv1_2, ssl.TLSVersion.TLSv1_3):
        context = ssl.create_default_context(cafile=str(shipped.cafile))
        context.minimum_version = context.maximum_version = version
        conn = http.client.HTTPSConnection("127.0.0.1", shipped.port, timeout=30, context=context)
        try:
            conn.request("GET", ENCODED + "/info.json")
            assert conn.getresponse().status == 200
            assert conn.sock is not None and conn.sock.version() == version.name.replace("_", ".")
        finally:
            conn.close()


def test_the_shipped_proxy_passes_the_request_uri_byte_for_byte(
    shim: Process, shipped: Nginx
) -> None:
    for public in (
        ENCODED + "/info.json",
        "/images/3/ark:%252F12025%252F654xz321/info.json",  # stays %252F: decoded by no one
        "/images/2/sub%2Fpage%201/full/%2160,60/0/default.png?x=%2F",
        "/images//3/quad/info.json",  # not merged: the shim says 404, on the URI as sent
    ):
        rid = new_id()
        shipped.ask(public, headers={"X-Request-ID": rid})
        assert seen_by_shim(shim, rid) == "/iiif" + public.removeprefix("/images")
    # the shim's object and viewer pages, and its landing page, under the same public prefix
    for public, sent in (
        ("/images/objects/sub", "/objects/sub"),
        ("/images/view/mirador?iiif-content=x%2Fy", "/view/mirador?iiif-content=x%2Fy"),
        ("/images/viewers/a%2Fb.js", "/viewers/a%2Fb.js"),
        ("/images/", "/"),
        ("/images/?x=1", "/?x=1"),
    ):
        rid = new_id()
        shipped.ask(public, headers={"X-Request-ID": rid})
        assert seen_by_shim(shim, rid) == sent


def test_uris_outside_the_prefix_as_sent_never_reach_the_shim(
    shim: Process, shipped: Nginx
) -> None:
    """nginx matches locations on the decoded, normalised path; these match /images/ only so.
    The shim's operations (/admin/, /health, /metrics) are not public."""
    for path in (
        "/x/../images/3/quad/info.json",
        "/images%2F3/quad/info.json",
        "/admin/cache/quad",
        "/health",
        "/metrics",
    ):
        rid = new_id()
        resp = shipped.ask(path, headers={"X-Request-ID": rid})
        assert resp.status == 404 and resp.text.startswith("<html>"), resp.text  # nginx's
        assert seen_by_shim(shim, rid, wait=0.5) is None


def test_ids_redirects_and_pixels_carry_the_public_url(shipped: Nginx) -> None:
    public = f"https://127.0.0.1:{shipped.port}{ENCODED}"  # the Host http.client sends
    resp = shipped.ask(ENCODED + "/info.json")
    assert resp.status == 200, resp.text
    assert json.loads(resp.body)["id"] == public
    assert resp.headers.get_all("Access-Control-Allow-Origin") == ["*"]  # one, the shim's
    base = shipped.ask(ENCODED)
    assert base.status == 303 and base.header("Location") == public + "/info.json"
    image = shipped.ask(ENCODED.replace("/3/", "/2/") + "/full/60,/0/default.png")
    assert image.status == 200 and image.header("Content-Type") == "image/png"
    pixels = image.image().convert("RGB")
    assert pixels.size == (60, 40)
    assert pixels.getpixel((5, 5)) == (255, 0, 0) and pixels.getpixel((55, 35)) == (255,) * 3
    canonical = image.header("Link") or ""
    assert f"<https://127.0.0.1:{shipped.port}/images/2/sub%2Fpage%201/full/60," in canonical
    page = shipped.ask("/images/objects/sub")
    assert page.status == 200, page.text
    assert f'src="https://127.0.0.1:{shipped.port}/images/view/' in page.text
    assert "http://" not in page.text.replace("http://iiif.io/", "")


def test_the_public_host_is_the_one_the_client_addressed(shipped: Nginx) -> None:
    def public_id(host: str, headers: dict[str, str] | None = None) -> str:
        resp = shipped.ask("/images/3/quad/info.json", host=host, headers=headers)
        assert resp.status == 200, resp.text
        return str(json.loads(resp.body)["id"])

    # behind port forwarding: the port in Host, not the one nginx listens on
    assert public_id("images.example.org:8443") == "https://images.example.org:8443/images/3/quad"
    # no port in Host: the scheme's default one
    assert public_id("images.example.org") == "https://images.example.org/images/3/quad"
    # a client's own forwarding headers are replaced or dropped, never believed
    spoofed = {
        "Forwarded": "host=evil.example;proto=http",
        "X-Forwarded-Host": "evil.example",
        "X-Forwarded-Proto": "http",
        "X-Forwarded-Port": "444",
        "X-Forwarded-Prefix": "/elsewhere",
    }
    assert public_id("images.example.org", spoofed) == "https://images.example.org/images/3/quad"


def test_request_ids_round_trip(shim: Process, shipped: Nginx) -> None:
    given = shipped.ask(ENCODED + "/info.json", headers={"X-Request-ID": "from-the-client"})
    assert given.header("X-Request-ID") == "from-the-client"
    made = shipped.ask(ENCODED + "/info.json").header("X-Request-ID") or ""
    assert re.fullmatch(r"[0-9a-f]{32}", made)  # nginx's $request_id, used by the shim too
    assert seen_by_shim(shim, made) == "/iiif/3/sub%2Fpage%201/info.json"


def test_port_80_redirects_to_https_but_for_certbots_challenges(
    shim: Process, shipped: Nginx
) -> None:
    assert shipped.redirect_port is not None
    for path in (ENCODED + "/info.json", "/images/2/sub%2Fpage%201/full/max/0/default.jpg?x=%2F"):
        rid = new_id()
        resp = ask(
            shipped.redirect_port, path, host=f"{PUBLIC_HOST}:8080", headers={"X-Request-ID": rid}
        )
        assert resp.status == 301, resp.text
        assert resp.header("Location") == f"https://{PUBLIC_HOST}{path}"  # byte for byte
        assert seen_by_shim(shim, rid, wait=0.5) is None  # nginx answers it alone
    # certbot --webroot writes its token there and the CA fetches it over plain HTTP
    challenge = shipped.webroot / ".well-known" / "acme-challenge"
    challenge.mkdir(parents=True)
    (challenge / "token-123").write_text("token-123.thumbprint")
    resp = ask(shipped.redirect_port, "/.well-known/acme-challenge/token-123", host=PUBLIC_HOST)
    assert resp.status == 200 and resp.text == "token-123.thumbprint"


def test_hsts_is_sent_only_when_switched_on(shim: Process, tmp_path: Path) -> None:
    for hsts in (False, True):
        proc = nginx_with(shipped_site(shim.port, hsts=hsts), tmp_path / str(hsts), tls=True)
        try:
            found = proc.ask(ENCODED + "/info.json")
            missing = proc.ask("/images/3/no-such-image/info.json")
            assert found.status == 200 and missing.status == 404
            expected = ["max-age=31536000"] if hsts else None
            for resp in (found, missing):
                assert resp.headers.get_all("Strict-Transport-Security") == expected
            assert proc.redirect_port is not None  # never on plain HTTP
            redirect = ask(proc.redirect_port, ENCODED, host=PUBLIC_HOST)
            assert redirect.status == 301 and redirect.header("Strict-Transport-Security") is None
        finally:
            proc.stop()


def test_the_optional_proxy_cache_keeps_tiles_and_info_never_errors(
    shim: Process, tmp_path: Path
) -> None:
    proc = nginx_with(shipped_site(shim.port, cache=tmp_path / "cache"), tmp_path, tls=True)
    try:
        for path in (
            ENCODED + "/info.json",
            "/images/3/quad/0,0,150,100/150,/0/default.jpg",
            "/images/presentation/3/sub/manifest",
        ):
            statuses = []
            for _ in range(2):
                resp = proc.ask(path)
                assert resp.status == 200, resp.text
                statuses.append(resp.header("X-Cache-Status"))
            assert statuses == ["MISS", "HIT"], (path, statuses)
        for path in (
            "/images/3/no-such-image/info.json",
            "/images/3/quad/0,0,0,0/max/0/default.jpg",
        ):
            for _ in range(3):
                rid = new_id()
                resp = proc.ask(path, headers={"X-Request-ID": rid})
                assert resp.status in (400, 404) and resp.header("X-Cache-Status") == "MISS"
                assert seen_by_shim(shim, rid) is not None  # each one reached the shim
        for _ in range(2):  # the landing page: a 200 without Cache-Control, never kept
            page = proc.ask("/images/")
            assert page.status == 200 and page.header("Cache-Control") is None, page.headers
            assert page.header("X-Cache-Status") == "MISS"
    finally:
        proc.stop()


def _upstream(root: Path, workdir: Path, extra: str) -> Process:
    """A plain nginx serving ``root`` with ``extra`` lines in its server block (an upstream
    for the shipped site to front)."""
    workdir.mkdir()
    port = free_port()
    conf = nginx_config(root, port, workdir, extra=extra)
    return Process(
        [need_tool("nginx", "/usr/sbin/nginx"), "-c", str(conf), "-p", str(workdir)],
        port,
        workdir / "out.log",
    )


def test_the_optional_proxy_cache_never_keeps_errors_whatever_their_headers(
    tmp_path: Path,
) -> None:
    """An upstream that marks its errors cacheable (a shim or a fault could): the cache keeps
    its 200s and none of its 404s and 500s."""
    root = tmp_path / "upstream-root"
    (root / "iiif" / "3").mkdir(parents=True)
    (root / "iiif" / "3" / "here").write_text("kept\n")
    lying = 'add_header Cache-Control "public, max-age=600" always;\n'
    extra = f"        {lying}        location = /iiif/3/broken {{ return 500; }}\n"
    upstream = _upstream(root, tmp_path / "upstream", extra)
    port = upstream.port
    try:
        site = shipped_site(port, cache=tmp_path / "cache")
        proc = nginx_with(site, tmp_path / "front", tls=True)
        try:
            for path, status, second in (
                ("/images/3/here", 200, "HIT"),
                ("/images/3/missing", 404, "MISS"),
                ("/images/3/broken", 500, "MISS"),
            ):
                seen = [proc.ask(path) for _ in range(2)]
                assert [r.status for r in seen] == [status] * 2, (path, seen[0].text)
                assert seen[0].header("Cache-Control") == "public, max-age=600"
                assert [r.header("X-Cache-Status") for r in seen] == ["MISS", second], path
        finally:
            proc.stop()
    finally:
        upstream.stop()


FAKE_PIP = """#!/bin/sh
echo "$*" >> "$(dirname "$0")/../../pip-calls"
exit "${FAKE_PIP_STATUS:-0}"
"""


def test_setup_runs_pip_only_when_what_it_installs_from_changed(tmp_path: Path) -> None:
    """deploy/setup.sh (a copy, over a venv whose pip only records its calls), as serve.sh runs
    it at every start."""
    (tmp_path / "deploy").mkdir()
    for name in ("deploy/setup.sh", "deploy/floors.py", "pyproject.toml"):
        shutil.copy(ROOT / name, tmp_path / name)
    # the viewers' own installer is tested by running it for real (tests/browser); here it
    # only records that setup called it
    (tmp_path / "deploy" / "viewers.sh").write_text(
        'echo called >> "$(dirname "$0")/../viewer-calls"\n'
    )
    bin_dir = tmp_path / ".venv" / "bin"
    bin_dir.mkdir(parents=True)
    for name, text in (("python", "#!/bin/sh\nexit 1\n"), ("pip", FAKE_PIP)):
        (bin_dir / name).write_text(text)
        (bin_dir / name).chmod(0o755)
    calls = tmp_path / "pip-calls"
    stamp = tmp_path / ".venv" / ".iiif-shim-setup-serve"

    def setup(pip_status: int = 0) -> tuple[subprocess.CompletedProcess[str], list[str]]:
        done = subprocess.run(
            ["bash", "deploy/setup.sh", "serve"],
            cwd=tmp_path,
            capture_output=True,
            text=True,
            timeout=60,
            env={**os.environ, "FAKE_PIP_STATUS": str(pip_status)},
        )
        return done, calls.read_text().splitlines() if calls.exists() else []

    done, pip = setup()
    assert done.returncode == 0, done.stderr
    assert pip == ["install -q --disable-pip-version-check -e .[fast]"] and stamp.exists()

    started = time.monotonic()
    done, pip = setup()
    assert time.monotonic() - started < 5
    assert done.returncode == 0 and done.stdout == done.stderr == "", done.stderr
    assert len(pip) == 1  # not run again

    installed = stamp.read_text()
    with (tmp_path / "pyproject.toml").open("a") as f:
        f.write("# a change\n")
    done, pip = setup(pip_status=1)
    assert done.returncode != 0 and len(pip) == 2
    assert stamp.read_text() == installed  # a failed install leaves the stamp as it was
    done, pip = setup()
    assert done.returncode == 0 and len(pip) == 3  # so the next start tries again
    done, pip = setup()
    assert done.returncode == 0 and len(pip) == 3
    assert (tmp_path / "viewer-calls").read_text().count("called") == 4  # runs past pip


def _https(
    front: Nginx, method: str, path: str, headers: dict[str, str], body: bytes | None = None
) -> Response:
    conn = http.client.HTTPSConnection("127.0.0.1", front.port, timeout=30, context=front.context)
    try:
        conn.putrequest(method, path, skip_host=True, skip_accept_encoding=True)
        conn.putheader("Host", f"{PUBLIC_HOST}:{front.port}")
        for name, value in headers.items():
            conn.putheader(name, value)
        conn.endheaders(body)
        resp = conn.getresponse()
        return Response(resp.status, resp.headers, resp.read())
    finally:
        conn.close()


def test_a_cache_in_front_keeps_a_cookie_gated_answer_marked_public(tmp_path: Path) -> None:
    """Why restricted answers must say so: an upstream that lets only a cookie holder in but
    marks its 200 public has the shipped proxy_cache hand it to the next client, cookie or
    not (the shim marks every restricted answer private: the test below)."""
    root = tmp_path / "upstream-root"
    (root / "iiif" / "3").mkdir(parents=True)
    (root / "iiif" / "3" / "secret").write_text("restricted pixels\n")
    gate = (
        '        add_header Cache-Control "public, max-age=600" always;\n'
        '        location /iiif/3/ { if ($cookie_pass = "") { return 401; } }\n'
    )
    upstream = _upstream(root, tmp_path / "upstream", gate)
    port = upstream.port
    try:
        front = nginx_with(shipped_site(port, cache=tmp_path / "cache"), tmp_path / "f", tls=True)
        try:
            assert front.ask("/images/3/secret").status == 401
            holder = front.ask("/images/3/secret", headers={"Cookie": "pass=1"})
            assert holder.status == 200 and holder.header("X-Cache-Status") == "MISS"
            stranger = front.ask("/images/3/secret")
            assert stranger.status == 200 and stranger.header("X-Cache-Status") == "HIT"
        finally:
            front.stop()
    finally:
        upstream.stop()


def test_logins_work_through_the_shipped_proxy_and_its_cache_keeps_nothing_restricted(
    images: Path, tmp_path: Path
) -> None:
    """The shipped nginx (TLS, HTTP/2, proxy_cache on) in front of a shim with a login policy:
    the access page and its form are reached at the public URLs the services name
    (/images/auth/...), the login's cookie is Secure and SameSite=None over HTTPS, it opens the
    restricted tile, and nginx's cache hands that tile to no one else: a client without the
    cookie gets 401 (and the degraded tier, public, is cached as any tile)."""
    from tests.http.auth_support import PASSWORD, USER, auth_config, form_fields

    config = auth_config(tmp_path / "shim", images, server={"trust_forwarded": True})
    shim = start_shim(config, tmp_path / "shim")
    try:
        front = nginx_with(shipped_site(shim.port, cache=tmp_path / "cache"), tmp_path, tls=True)
        try:
            host = f"{PUBLIC_HOST}:{front.port}"
            site = f"https://{host}"
            info = front.ask("/images/3/staff%2Fquad/info.json", host)
            assert info.status == 302, info.text
            assert front.ask("/images/2/staff%2Fquad/info.json", host).status == 302
            location = info.header("Location") or ""
            assert location.startswith(site + "/images/degraded/3/"), location
            degraded = front.ask(location[len(site) :], host)
            assert degraded.status == 200, degraded.text
            services = json.dumps(json.loads(degraded.body))
            access = f"{site}/images/auth/staff/access"
            assert access in services, services
            form = _https(front, "GET", "/images/auth/staff/access", {})
            assert form.status == 200, form.text
            binding = form.header("Set-Cookie") or ""
            csrf_cookie = binding.split(";", 1)[0]
            body = urlencode({**form_fields(form.text), "username": USER, "password": PASSWORD})
            done = _https(
                front,
                "POST",
                "/images/auth/staff/access",
                {
                    "Cookie": csrf_cookie,
                    "Content-Type": "application/x-www-form-urlencoded",
                    "Content-Length": str(len(body)),
                },
                body.encode(),
            )
            assert done.status == 200, done.text
            [login] = [c for c in done.headers.get_all("Set-Cookie") or [] if "auth-staff=" in c]
            assert "Secure" in login and "SameSite=None" in login and "HttpOnly" in login, login
            cookie = {"Cookie": login.split(";", 1)[0]}
            tile = "/images/3/staff%2Fquad/0,0,150,100/150,/0/default.jpg"
            for _ in range(2):
                seen = front.ask(tile, host, cookie)
                assert seen.status == 200 and seen.body[:2] == b"\xff\xd8", seen.text
                assert seen.header("X-Cache-Status") == "MISS", seen.headers
                assert "private" in (seen.header("Cache-Control") or "")
            stranger = front.ask(tile, host)
            assert stranger.status == 401 and stranger.header("X-Cache-Status") == "MISS"
            small = "/images/degraded/3/staff%2Fquad/full/max/0/default.jpg"
            assert [front.ask(small, host).header("X-Cache-Status") for _ in range(2)] == [
                "MISS",
                "HIT",
            ]
        finally:
            front.stop()
    finally:
        shim.stop()


def test_a_client_cannot_claim_a_reading_room_address_through_the_shipped_proxy(
    images: Path, tmp_path: Path
) -> None:
    """The shim believes X-Forwarded-For from `auth.forwarded_by` (nginx's address): sent
    straight from such a peer, a forged one opens a reading-room image (the header is all that
    decides), so the shipped nginx must replace whatever the client sent with the address it
    saw (here 127.0.0.1, outside the room's 10.20.0.0/16)."""
    from tests.http.auth_support import auth_config

    config = auth_config(tmp_path / "shim", images, server={"trust_forwarded": True})
    shim = start_shim(config, tmp_path / "shim")
    try:
        tile = "/iiif/3/room%2Fquad/full/max/0/default.jpg"
        forged = {"X-Forwarded-For": "10.20.1.1"}
        assert ask(shim.port, tile).status == 401
        assert ask(shim.port, tile, headers=forged).status == 200  # believed from a trusted peer
        front = nginx_with(shipped_site(shim.port), tmp_path, tls=True)
        try:
            public = "/images/3/room%2Fquad/full/max/0/default.jpg"
            assert front.ask(public).status == 401
            assert front.ask(public, headers=forged).status == 401
            many = {"X-Forwarded-For": "10.20.1.1, 10.20.1.2"}
            assert front.ask(public, headers=many).status == 401
        finally:
            front.stop()
    finally:
        shim.stop()


def test_a_client_cannot_send_its_own_sign_on_header_through_the_shipped_proxy(
    images: Path, tmp_path: Path
) -> None:
    """A header-user policy that trusts the proxy's address: sent straight from that address,
    `X-Remote-User` logs anyone in as anyone (the header is all that decides); the shipped
    nginx clears a client's own, so through it the access page refuses."""
    from tests.http.auth_support import auth_config

    sso = {
        "kind": "login",
        "label": "Single sign-on",
        "users": {"header": "X-Remote-User", "trusted_proxies": ["127.0.0.1/32"]},
    }
    config = auth_config(
        tmp_path / "shim", images, server={"trust_forwarded": True}, auth={"policies": {"sso": sso}}
    )
    shim = start_shim(config, tmp_path / "shim")
    try:
        forged = {"X-Remote-User": "director"}
        straight = ask(shim.port, "/auth/sso/access", headers=forged)
        assert straight.status == 200 and "iiif-shim-auth-sso=" in (
            straight.header("Set-Cookie") or ""
        ), straight.text
        front = nginx_with(shipped_site(shim.port), tmp_path, tls=True)
        try:
            through = front.ask("/images/auth/sso/access", headers=forged)
            assert through.status == 403, through.text
            assert "iiif-shim-auth-sso=" not in (through.header("Set-Cookie") or "")
        finally:
            front.stop()
    finally:
        shim.stop()
