"""The deploy examples work: deploy/nginx-proxy.conf with real nginx in front of a shim (an
identifier holding %2F survives, ids carry the public URL), and deploy/setup.sh does not
reinstall what has not changed."""

from __future__ import annotations

import json
import os
import subprocess
import time
from collections.abc import Iterator
from pathlib import Path

import pytest

from tests.support import ROOT, Process, free_port, need_tool, start_shim, write_config

SHIPPED = ROOT / "deploy" / "nginx-proxy.conf"


def nginx_with(site: str, workdir: Path) -> Process:
    """nginx running ``site`` (a config's http-level part) on a free port."""
    port = free_port()
    user = "user root;\n" if os.geteuid() == 0 else ""
    site = site.replace("listen 443 ssl http2;", f"listen 127.0.0.1:{port};")
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
    nginx = need_tool("nginx", "/usr/sbin/nginx")
    return Process([nginx, "-c", str(conf), "-p", str(workdir)], port, workdir / "out.log")


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
    site = SHIPPED.read_text().replace("server 127.0.0.1:8182;", f"server 127.0.0.1:{shim.port};")
    assert str(shim.port) in site and "listen 443 ssl http2;" in site
    proc = nginx_with(site, tmp_path)
    yield proc
    proc.stop()


ENCODED = "/images/3/sub%2Fpage%201/info.json"


def test_a_proxy_pass_with_a_uri_breaks_encoded_slashes(shim: Process, tmp_path: Path) -> None:
    """What the shipped file avoids: nginx decodes and re-encodes the path for this one."""
    naive = (
        "server {\n    listen 443 ssl http2;\n    location /images/ {\n"
        f"        proxy_pass http://127.0.0.1:{shim.port}/iiif/;\n"
        "        proxy_set_header X-Forwarded-Prefix /images;\n    }\n}\n"
    )
    proc = nginx_with(naive, tmp_path)
    try:
        assert proc.get(ENCODED).status == 404  # /iiif/3/sub/page 1/info.json: not an identifier
    finally:
        proc.stop()


def test_the_shipped_proxy_passes_identifiers_and_public_ids(shipped: Process) -> None:
    public = f"http://127.0.0.1:{shipped.port}/images/3/sub%2Fpage%201"
    resp = shipped.get(ENCODED)  # Host: 127.0.0.1:port, as http.client sends it
    assert resp.status == 200, resp.text
    assert json.loads(resp.body)["id"] == public
    assert resp.header("Access-Control-Allow-Origin") == "*"
    assert len(resp.headers.get_all("Access-Control-Allow-Origin") or []) == 1
    base = shipped.get("/images/3/sub%2Fpage%201")
    assert base.status == 303 and base.header("Location") == public + "/info.json"
    image = shipped.get("/images/2/sub%2Fpage%201/full/60,/0/default.png")
    assert image.status == 200 and image.image().size == (60, 40)
    # a doubly encoded slash stays one level encoded: an unknown identifier, not a folder
    assert shipped.get("/images/3/sub%252Fpage%25201/info.json").status == 404
    traced = shipped.get(ENCODED, headers={"X-Request-ID": "from-the-client"})
    assert traced.header("X-Request-ID") == "from-the-client"
    made = shipped.get(ENCODED)
    assert len(made.header("X-Request-ID") or "") == 32  # nginx's own $request_id


def test_setup_does_not_reinstall_what_has_not_changed() -> None:
    """deploy/serve.sh runs setup.sh at every start: with nothing changed, no pip runs."""
    venv = ROOT / ".venv"
    stamp = venv / ".iiif-shim-setup-serve"
    first = subprocess.run(
        ["bash", "deploy/setup.sh", "serve"], cwd=ROOT, capture_output=True, text=True, timeout=600
    )
    assert first.returncode == 0, first.stderr
    assert stamp.exists()
    fake = ROOT / ".venv" / "bin" / "pip"
    original = fake.read_bytes()
    fake.write_text("#!/bin/sh\necho pip was run >&2\nexit 1\n")
    try:
        started = time.monotonic()
        again = subprocess.run(
            ["bash", "deploy/setup.sh", "serve"],
            cwd=ROOT,
            capture_output=True,
            text=True,
            timeout=60,
        )
        seconds = time.monotonic() - started
    finally:
        fake.write_bytes(original)
    assert again.returncode == 0 and "pip was run" not in again.stderr, again.stderr
    assert seconds < 5
