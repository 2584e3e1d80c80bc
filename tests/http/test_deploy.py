"""The deploy examples work as shipped: deploy/nginx-proxy.conf, run by real nginx in front of a
shim, passes the request URI through byte for byte (an identifier's %2F survives) and makes ids,
redirects and request ids public; deploy/setup.sh runs pip only when what it installs from
changed."""

from __future__ import annotations

import http.client
import json
import os
import re
import shutil
import subprocess
import time
import uuid
from collections.abc import Iterator
from pathlib import Path

import pytest

from tests.support import (
    ROOT,
    Process,
    Response,
    free_port,
    need_tool,
    start_shim,
    write_config,
)

SHIPPED = ROOT / "deploy" / "nginx-proxy.conf"
# the two lines the shipped file promises to keep, so a plain substitution can adapt it
LISTEN = "listen 443 ssl http2;"
UPSTREAM = "server 127.0.0.1:8182;"

ENCODED = "/images/3/sub%2Fpage%201"  # sub/page 1.png in the test images


def nginx_with(site: str, workdir: Path) -> Process:
    """nginx running ``site`` (http-level directives) on a free port, in plain HTTP."""
    binary = need_tool("nginx", "/usr/sbin/nginx")
    port = free_port()
    assert site.count(LISTEN) == 1
    site = site.replace(LISTEN, f"listen 127.0.0.1:{port};")
    user = "user root;\n" if os.geteuid() == 0 else ""
    conf = workdir / "nginx.conf"
    conf.write_text(
        f"""{user}worker_processes 1;
daemon off;
pid {workdir}/nginx.pid;
error_log {workdir}/error.log warn;
events {{ worker_connections 64; }}
http {{
    access_log {workdir}/access.log;
    client_body_temp_path {workdir}/tmp-body;
    proxy_temp_path {workdir}/tmp-proxy;
    fastcgi_temp_path {workdir}/tmp-fastcgi;
    uwsgi_temp_path {workdir}/tmp-uwsgi;
    scgi_temp_path {workdir}/tmp-scgi;
{site}
}}
"""
    )
    return Process([binary, "-c", str(conf), "-p", str(workdir)], port, workdir / "out.log")


def ask(
    port: int, path: str, host: str | None = None, headers: dict[str, str] | None = None
) -> Response:
    """GET ``path`` exactly as given, with ``host`` as the only Host header when given."""
    conn = http.client.HTTPConnection("127.0.0.1", port, timeout=30)
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
    tmp = tmp_path_factory.mktemp("deploy-shim")
    config = write_config(
        tmp / "shim.yaml",
        f"""
        server: {{trust_forwarded: true}}
        backends:
          local: {{type: files, root: "{images}"}}
        routes:
          - {{backend: local}}
        """,
    )
    proc = start_shim(config, tmp)
    yield proc
    proc.stop()


@pytest.fixture
def shipped(shim: Process, tmp_path: Path) -> Iterator[Process]:
    site = SHIPPED.read_text()
    assert site.count(UPSTREAM) == 1
    proc = nginx_with(site.replace(UPSTREAM, f"server 127.0.0.1:{shim.port};"), tmp_path)
    yield proc
    proc.stop()


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


def test_the_shipped_proxy_passes_the_request_uri_byte_for_byte(
    shim: Process, shipped: Process
) -> None:
    for public in (
        ENCODED + "/info.json",
        "/images/3/ark:%252F12025%252F654xz321/info.json",  # stays %252F: decoded by no one
        "/images/2/sub%2Fpage%201/full/%2160,60/0/default.png?x=%2F",
        "/images//3/quad/info.json",  # not merged: the shim says 404, on the URI as sent
    ):
        rid = new_id()
        ask(shipped.port, public, headers={"X-Request-ID": rid})
        assert seen_by_shim(shim, rid) == "/iiif" + public.removeprefix("/images")


def test_uris_outside_the_prefix_as_sent_never_reach_the_shim(
    shim: Process, shipped: Process
) -> None:
    """nginx matches locations on the decoded, normalised path; these match /images/ only so."""
    for path in ("/x/../images/3/quad/info.json", "/images%2F3/quad/info.json"):
        rid = new_id()
        resp = ask(shipped.port, path, headers={"X-Request-ID": rid})
        assert resp.status == 404 and resp.text.startswith("<html>"), resp.text  # nginx's
        assert seen_by_shim(shim, rid, wait=0.5) is None


def test_ids_redirects_and_pixels_carry_the_public_url(shipped: Process) -> None:
    public = f"http://127.0.0.1:{shipped.port}{ENCODED}"  # the Host http.client sends
    resp = ask(shipped.port, ENCODED + "/info.json")
    assert resp.status == 200, resp.text
    assert json.loads(resp.body)["id"] == public
    assert resp.headers.get_all("Access-Control-Allow-Origin") == ["*"]  # one, the shim's
    base = ask(shipped.port, ENCODED)
    assert base.status == 303 and base.header("Location") == public + "/info.json"
    image = ask(shipped.port, ENCODED.replace("/3/", "/2/") + "/full/60,/0/default.png")
    assert image.status == 200 and image.header("Content-Type") == "image/png"
    pixels = image.image().convert("RGB")
    assert pixels.size == (60, 40)
    assert pixels.getpixel((5, 5)) == (255, 0, 0) and pixels.getpixel((55, 35)) == (255,) * 3
    canonical = image.header("Link") or ""
    assert f"<http://127.0.0.1:{shipped.port}/images/2/sub%2Fpage%201/full/60," in canonical


def test_the_public_host_is_the_one_the_client_addressed(shipped: Process) -> None:
    def public_id(host: str, headers: dict[str, str] | None = None) -> str:
        resp = ask(shipped.port, "/images/3/quad/info.json", host=host, headers=headers)
        assert resp.status == 200, resp.text
        return str(json.loads(resp.body)["id"])

    # behind port forwarding: the port in Host, not the one nginx listens on
    assert public_id("images.example.org:8443") == "http://images.example.org:8443/images/3/quad"
    # no port in Host: the scheme's default one
    assert public_id("images.example.org") == "http://images.example.org/images/3/quad"
    # a client's own forwarding headers are replaced or dropped, never believed
    spoofed = {
        "Forwarded": "host=evil.example;proto=https",
        "X-Forwarded-Host": "evil.example",
        "X-Forwarded-Proto": "https",
        "X-Forwarded-Port": "444",
        "X-Forwarded-Prefix": "/elsewhere",
    }
    assert public_id("images.example.org", spoofed) == "http://images.example.org/images/3/quad"


def test_request_ids_round_trip(shim: Process, shipped: Process) -> None:
    given = ask(shipped.port, ENCODED + "/info.json", headers={"X-Request-ID": "from-the-client"})
    assert given.header("X-Request-ID") == "from-the-client"
    made = ask(shipped.port, ENCODED + "/info.json").header("X-Request-ID") or ""
    assert re.fullmatch(r"[0-9a-f]{32}", made)  # nginx's $request_id, used by the shim too
    assert seen_by_shim(shim, made) == "/iiif/3/sub%2Fpage%201/info.json"


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
