"""A level-0 export served by plain nginx passes the official validators and the presentation
checks.

The validator's test image and the sample object ``book`` of the embedded default config are
exported with the real command, as a user runs it (``iiif-shim export``, two runs into one
folder: ``--identifier`` and ``--object`` are one or the other), once for the module. nginx
runs the whole ``server`` block that ``docs/export.md`` gives for it (read from that page, so
the documented text is the one tested), only its port, its certificate's two paths (a test CA's
certificate, ``tests/tls.py``) and its root changed, over HTTPS and HTTP/2, at the base URL the
export was made for; the clients trust the test CA. Then:

- iiif-validator 1.0.5 at ``--level 0``, Image API 3.0 and 2.1 (``--version=2.0``): every test
  it runs passes, and the number it runs is the one its level 0 has (5 for 3.0, 4 for 2.x);
- iiif-validator-ng, which reads the level from info.json: it detects level 0, 0 failures;
- every manifest and collection reached from the top collections, as nginx serves them:
  ``check_v3`` / ``check_v2`` (tests/presentation_checks.py), and their image services are
  level-0 info.json documents nginx serves.
"""

from __future__ import annotations

import http.client
import json
import os
import re
import shutil
import socket
import ssl
import subprocess
import sys
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any
from urllib.parse import urlsplit

import pytest

from tests.presentation_checks import check_v2, check_v3
from tests.support import (
    ROOT,
    VALIDATOR_ID,
    Process,
    free_port,
    need_tool,
    nginx_config,
    nginx_main,
    request,
)
from tests.tls import make_ca
from tests.validator.test_validator import RESULT_RE, validator
from tests.validator.test_validator_ng import SUMMARY_RE, VENV

EXPORT_DOC = ROOT / "docs" / "export.md"
# directives of the documented server block that belong to the public site, not the locations
SITE_ONLY = re.compile(r"\s*(listen|http2|server_name|root|ssl_certificate|ssl_certificate_key)\b")
# the lines of the documented block a test changes (each there once), and nothing else
DOC_LISTEN = "listen 443 ssl http2;"
DOC_CERTS = "/etc/letsencrypt/live/static.example.org/"
DOC_ROOT = "root /srv/static;"
LEVEL0_2 = "http://iiif.io/api/image/2/level0.json"


def documented_server() -> str:
    """The nginx server block that docs/export.md gives for an export, as written."""
    text = EXPORT_DOC.read_text(encoding="utf-8")
    _, found, after = text.partition("## Serving it with nginx")
    assert found, f"{EXPORT_DOC} has no 'Serving it with nginx' section"
    block = after.split("```nginx", 1)[1].split("```", 1)[0].strip()
    assert block.startswith("server {") and block.endswith("}"), block
    return block + "\n"


def documented_locations() -> str:
    """The location blocks of that server (its site's own lines left out)."""
    block = documented_server().strip()
    body = block.removeprefix("server {").removesuffix("}")
    lines = [line for line in body.splitlines() if not SITE_ONLY.match(line)]
    assert any("location" in line for line in lines), block
    return "\n".join(lines) + "\n"


def export(folder: Path, base_url: str, *selection: str) -> str:
    """``iiif-shim export`` with the embedded default config, as a user runs it; its stdout."""
    command = [
        sys.executable, "-m", "iiif_shim", "export", *selection,
        "--to", str(folder), "--base-url", base_url,
    ]  # fmt: skip
    done = subprocess.run(
        command,
        capture_output=True,
        text=True,
        timeout=300,
        cwd=ROOT,
        env={**os.environ, "IIIF_SHIM_CONFIG": ""},
        check=False,
    )
    assert done.returncode == 0, f"{command}: {done.returncode}\n{done.stdout}\n{done.stderr}"
    assert " 0 failed" in done.stdout, done.stdout
    return done.stdout


def serve_with_nginx(folder: Path, port: int, workdir: Path) -> Process:
    """Plain nginx serving ``folder`` with the documented locations, in plain HTTP."""
    binary = need_tool("nginx", "/usr/sbin/nginx")
    workdir.mkdir(parents=True, exist_ok=True)
    conf = nginx_config(folder, port, workdir, extra=documented_locations())
    return Process([binary, "-c", str(conf), "-p", str(workdir)], port, workdir / "out.log")


def serve_documented_server(folder: Path, port: int, workdir: Path) -> tuple[Process, Path]:
    """nginx running the documented server block whole: its port, its certificate's paths (a
    test CA's certificate for 127.0.0.1) and its root changed, nothing else; with the CA's
    certificate, which a client must trust."""
    binary = need_tool("nginx", "/usr/sbin/nginx")
    workdir.mkdir(parents=True, exist_ok=True)
    ca = make_ca(workdir / "ca")
    issued = ca.issue("export-site", names=("127.0.0.1", "localhost"))
    live = workdir / "live"
    live.mkdir(exist_ok=True)
    shutil.copy(issued.cert, live / "fullchain.pem")
    shutil.copy(issued.key, live / "privkey.pem")
    site = documented_server()
    for line in (DOC_LISTEN, DOC_ROOT):
        assert site.count(line) == 1, (line, site)
    assert site.count(DOC_CERTS) == 2, site
    site = site.replace(DOC_LISTEN, f"listen 127.0.0.1:{port} ssl http2;")
    site = site.replace(DOC_CERTS, f"{live}/").replace(DOC_ROOT, f"root {folder};")
    conf = nginx_main(
        workdir,
        f"""    access_log {workdir}/nginx-access.log;
    include /etc/nginx/mime.types;
    default_type application/octet-stream;
{site}""",
    )
    args = [binary, "-c", str(conf), "-p", str(workdir)]
    checked = subprocess.run([*args, "-t"], capture_output=True, text=True, timeout=60)
    assert checked.returncode == 0, checked.stderr
    return Process(args, port, workdir / "out.log"), ca.root


def get_https(port: int, path: str, cafile: Path) -> tuple[int, dict[str, str], bytes]:
    """GET ``path`` as given over HTTPS from 127.0.0.1, trusting ``cafile``."""
    context = ssl.create_default_context(cafile=str(cafile))
    conn = http.client.HTTPSConnection("127.0.0.1", port, timeout=30, context=context)
    try:
        conn.putrequest("GET", path, skip_accept_encoding=True)
        conn.endheaders()
        answer = conn.getresponse()
        return answer.status, dict(answer.headers), answer.read()
    finally:
        conn.close()


@dataclass(frozen=True)
class Exported:
    folder: Path
    nginx: Process
    base: str
    cafile: Path | None = None  # over HTTPS, trusting this CA; else plain HTTP

    def get(self, path: str) -> tuple[int, dict[str, str], bytes]:
        if self.cafile is not None:
            return get_https(self.nginx.port, path, self.cafile)
        answer = request(self.nginx.port, path)
        return answer.status, dict(answer.headers), answer.body

    def json(self, url: str) -> Any:
        assert url.startswith(self.base + "/"), url
        status, headers, body = self.get(url.removeprefix(self.base))
        assert status == 200, (url, status)
        assert headers.get("Access-Control-Allow-Origin") == "*", url
        assert "json" in (headers.get("Content-Type") or ""), url
        return json.loads(body)

    def env(self) -> dict[str, str]:
        """The environment of a client that trusts the CA (Python's ssl and urllib)."""
        return {**os.environ, **({"SSL_CERT_FILE": str(self.cafile)} if self.cafile else {})}


def export_sample(tmp: Path, whole_server: bool = False) -> Iterator[Exported]:
    """The validator's image and the object ``book`` exported and served by nginx: with the
    documented locations in plain HTTP, or (``whole_server``) the documented server block
    whole, over HTTPS."""
    port = free_port()
    base = f"{'https' if whole_server else 'http'}://127.0.0.1:{port}"
    folder = tmp / "export"
    export(folder, base, "--identifier", VALIDATOR_ID)
    export(folder, base, "--object", "book")
    cafile = None
    if whole_server:
        nginx, cafile = serve_documented_server(folder, port, tmp / "nginx")
    else:
        nginx = serve_with_nginx(folder, port, tmp / "nginx")
    try:
        yield Exported(folder, nginx, base, cafile)
    finally:
        nginx.stop()


@pytest.fixture(scope="module")
def exported(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Exported]:
    yield from export_sample(tmp_path_factory.mktemp("export-level0"), whole_server=True)


def test_the_documented_server_answers_over_https_and_http2(exported: Exported) -> None:
    """The documented block as nginx 1.22 runs it: TLS with the certificate it names, HTTP/2
    chosen by ALPN, the export's own records kept private."""
    assert exported.cafile is not None
    context = ssl.create_default_context(cafile=str(exported.cafile))
    context.set_alpn_protocols(["h2", "http/1.1"])
    with (
        socket.create_connection(("127.0.0.1", exported.nginx.port), timeout=30) as raw,
        context.wrap_socket(raw, server_hostname="127.0.0.1") as tls,
    ):
        assert tls.selected_alpn_protocol() == "h2"
    assert exported.get(f"/iiif/3/{VALIDATOR_ID}/info.json")[0] == 200
    for private in ("/.iiif-export.json", "/.iiif-export/record.json", "/.iiif-export/lock"):
        assert exported.get(private)[0] == 404, private


@pytest.mark.parametrize(
    ("version", "expected"),
    [
        ("3.0", ["format_jpg", "id_basic", "id_squares", "info_json", "size_nofull"]),
        ("2.0", ["format_jpg", "id_basic", "id_squares", "info_json"]),
    ],
)
def test_official_validator_level0(exported: Exported, version: str, expected: list[str]) -> None:
    args = [
        *validator(),
        "-s", f"127.0.0.1:{exported.nginx.port}",
        "--scheme", exported.base.split(":", 1)[0],
        "-p", f"iiif/{version[0]}",
        "-i", VALIDATOR_ID,
        f"--version={version}",
        "--level", "0",
    ]  # fmt: skip
    done = subprocess.run(
        args, capture_output=True, text=True, timeout=300, env=exported.env(), check=False
    )
    results = {name: verdict for _, name, verdict in RESULT_RE.findall(done.stderr)}
    failed = [name for name, verdict in results.items() if verdict == "FAIL"]
    assert not failed, f"validator failures {failed}:\n{done.stderr}"
    assert done.returncode == 0, done.stderr
    assert sorted(results) == expected, done.stderr


@pytest.mark.parametrize(("version", "expected"), [("3", 33), ("2", 31)])
def test_validator_ng_detects_level0_and_passes(
    exported: Exported, version: str, expected: int
) -> None:
    binary = VENV / "bin" / "iiif-validator"
    if not binary.exists():
        pytest.fail(f"{binary} is missing: run `bash deploy/test.sh`, which installs it")
    args = [str(binary), f"{exported.base}/iiif/{version}", "--validation-id", VALIDATOR_ID]
    if version == "2":
        args.append("--v2")
    env = {**exported.env(), "COLUMNS": "200", "TERM": "dumb"}
    done = subprocess.run(args, capture_output=True, text=True, timeout=300, env=env, check=False)
    out = done.stdout + done.stderr
    assert "Detected compliance level: LEVEL_0" in out, out
    found = SUMMARY_RE.findall(out)
    assert found, out
    passed, failed = (int(n) for n in found[-1])
    assert failed == 0, out
    assert passed == expected, out


def _members(doc: dict[str, Any], v3: bool) -> list[str]:
    if v3:
        return [m["id"] for m in doc.get("items", []) if m["type"] in ("Collection", "Manifest")]
    return [m["@id"] for m in [*doc.get("collections", []), *doc.get("manifests", [])]]


def _image_services(manifest: dict[str, Any], v3: bool) -> list[dict[str, Any]]:
    if v3:
        bodies = [a["body"] for c in manifest["items"] for p in c["items"] for a in p["items"]]
        return [s for b in bodies for s in b["service"]]
    images = [i for c in manifest["sequences"][0]["canvases"] for i in c["images"]]
    return [i["resource"]["service"] for i in images]


@pytest.mark.parametrize("version", ["3", "2"])
def test_every_document_passes_the_presentation_checks(exported: Exported, version: str) -> None:
    """From the top collection down, every collection and manifest as nginx serves it."""
    v3 = version == "3"
    check = check_v3 if v3 else check_v2
    top = f"{exported.base}/iiif/presentation/{version}/collection"
    todo, seen, manifests = [top], set[str](), []
    while todo:
        url = todo.pop()
        if url in seen:
            continue
        seen.add(url)
        doc = exported.json(url)
        assert check(doc) == [], url
        kind = doc["type"] if v3 else doc["@type"]
        if kind in ("Manifest", "sc:Manifest"):
            manifests.append(doc)
        todo += _members(doc, v3)
    # the object exported: the top collection, the folder source's, the book's manifest
    assert len(seen) == 3 and len(manifests) == 1, sorted(seen)
    assert urlsplit(manifests[0]["id" if v3 else "@id"]).path == (
        f"/iiif/presentation/{version}/book/manifest"
    )
    services = _image_services(manifests[0], v3)
    # the book's three pages; a 3.0 manifest names each page's 2.1 service too
    assert len(services) == (6 if v3 else 3), services
    for service in services:
        service_id = service.get("id") or service["@id"]
        info = exported.json(service_id + "/info.json")
        if service_id.startswith(f"{exported.base}/iiif/3/"):
            assert info["profile"] == "level0", service_id
        else:
            assert service_id.startswith(f"{exported.base}/iiif/2/"), service_id
            assert info["profile"][0] == LEVEL0_2, service_id
