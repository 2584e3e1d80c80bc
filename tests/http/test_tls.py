"""HTTPS served by the shim itself (``server.tls``), over real sockets with clients that trust
the test CA (``tests/tls.py``): info.json with ``https://`` ids, ALPN ``http/1.1``, TLS 1.2
and 1.3 served (the floor itself is a unit test of the context), HSTS on HTTPS answers only
(the guard's own refusals included), the redirect port's 308 (path and query kept) and its
ACME challenges from ``acme_dir``, a bad certificate refused by ``check-config`` and ``serve``
with its line; a renewal picked up without a restart (files replaced by rename or by a
symlink swap, or SIGHUP), by every worker of ``--processes 2``, while a connection already open
keeps answering; a bad or half-written renewal keeps the certificate in use; a worker started
after the files went bad serves the last good pair; the certificate's end in /health/ready, the
metrics and the log; clients that connect and never handshake hold at most the connection cap
(descriptors bounded), each is closed after ``server.header_timeout`` and counted as a failed
handshake, and bad clients cost no traceback."""

from __future__ import annotations

import contextlib
import http.client
import json
import os
import re
import signal
import socket
import ssl
import subprocess
import sys
from collections.abc import Iterator
from pathlib import Path

import pytest

from tests.support import (
    ROOT,
    Process,
    Response,
    free_port,
    log_lines,
    request,
    start_shim,
    wait_until,
    write_config,
)
from tests.tls import CA, DAY, Issued, make_ca

TWO = ("--processes", "2")


@pytest.fixture(scope="module")
def ca(tmp_path_factory: pytest.TempPathFactory) -> CA:
    return make_ca(tmp_path_factory.mktemp("ca"))


def _client(ca: CA) -> ssl.SSLContext:
    context = ssl.create_default_context(cafile=str(ca.root))
    context.set_alpn_protocols(["h2", "http/1.1"])
    return context


def _install(issued: Issued, folder: Path) -> tuple[Path, Path]:
    """``issued``'s files put where the shim reads them, each replaced by a rename (as certbot
    and most tools do): ``cert.pem`` first, then ``key.pem``."""
    folder.mkdir(parents=True, exist_ok=True)
    served = folder / "cert.pem", folder / "key.pem"
    for source, target in zip((issued.cert, issued.key), served, strict=True):
        scratch = target.with_suffix(".new")
        scratch.write_bytes(source.read_bytes())
        scratch.chmod(0o600)
        os.replace(scratch, target)
    return served


def _config(
    tmp: Path, images: Path, cert: Path, key: Path, tls: str = "", server: str = ""
) -> Path:
    return write_config(
        tmp / "shim.yaml",
        f"""\
server:
  header_timeout: 2
  shutdown_timeout: 5
  tls: {{cert: "{cert}", key: "{key}"{tls}}}
{server}
iiif: {{prefix: /iiif}}
backends:
  local: {{type: files, root: "{images}"}}
routes:
  - {{backend: local}}
""",
    )


class Answer:
    def __init__(self, conn: http.client.HTTPSConnection, response: http.client.HTTPResponse):
        self.status = response.status
        self.headers = response.headers
        self.body = response.read()
        assert conn.sock is not None
        self.serial = int(conn.sock.getpeercert()["serialNumber"], 16)  # type: ignore[index,arg-type]
        self.alpn = conn.sock.selected_alpn_protocol()  # type: ignore[attr-defined]

    def json(self) -> dict[str, object]:
        found: dict[str, object] = json.loads(self.body)
        return found


def _ask(
    port: int,
    ca: CA,
    path: str = "/health",
    host: str = "127.0.0.1",
    conn: http.client.HTTPSConnection | None = None,
) -> Answer:
    """``path`` over HTTPS, on a new connection unless ``conn`` is given. ``host`` 127.0.0.1:
    no server name is sent; localhost: it is (SNI)."""
    own = conn is None
    conn = conn or http.client.HTTPSConnection(host, port, context=_client(ca), timeout=20)
    try:
        conn.request("GET", path)
        return Answer(conn, conn.getresponse())
    finally:
        if own:
            conn.close()


def _plain(port: int, path: str, host: str | None, method: str = "GET") -> Response:
    """``path`` over plain HTTP with exactly this ``Host`` header (None: none)."""
    head = f"{method} {path} HTTP/1.1\r\n" + (f"Host: {host}\r\n" if host is not None else "")
    with socket.create_connection(("127.0.0.1", port), timeout=20) as sock:
        sock.sendall(f"{head}Connection: close\r\n\r\n".encode())
        answer = http.client.HTTPResponse(sock, method=method)
        answer.begin()
        return Response(answer.status, answer.headers, answer.read())


def _https(
    ca: CA,
    tmp: Path,
    images: Path,
    *extra: str,
    tls: str = "",
    server: str = "",
    env: dict[str, str] | None = None,
) -> Process:
    cert, key = _install(ca.issue("first"), tmp / "served")
    return start_shim(_config(tmp, images, cert, key, tls, server), tmp, *extra, env=env)


@pytest.fixture(scope="module")
def shim(ca: CA, images: Path, tmp_path_factory: pytest.TempPathFactory) -> Iterator[Process]:
    tmp = tmp_path_factory.mktemp("https")
    redirect = free_port()
    proc = _https(ca, tmp, images, tls=", hsts: 600", server=f"  http_redirect_port: {redirect}")
    proc.redirect = redirect  # type: ignore[attr-defined]
    yield proc
    proc.stop()


def test_https_serves_info_json_with_https_ids(shim: Process, ca: CA) -> None:
    for host in ("127.0.0.1", "localhost"):  # without and with a server name (SNI)
        answer = _ask(shim.port, ca, "/iiif/3/quad/info.json", host)
        assert answer.status == 200 and answer.alpn == "http/1.1"
        assert answer.json()["id"] == f"https://{host}:{shim.port}/iiif/3/quad"
    v2 = _ask(shim.port, ca, "/iiif/2/quad/info.json").json()
    assert v2["@id"] == f"https://127.0.0.1:{shim.port}/iiif/2/quad"
    tile = _ask(shim.port, ca, "/iiif/3/quad/full/64,/0/default.png")
    assert tile.status == 200 and tile.body.startswith(b"\x89PNG")


def test_tls_1_2_and_1_3_are_served(shim: Process, ca: CA) -> None:
    """A smoke test: what is refused below TLS 1.2 is the context's unit test."""
    for version in (ssl.TLSVersion.TLSv1_2, ssl.TLSVersion.TLSv1_3):
        client = _client(ca)
        client.minimum_version = client.maximum_version = version
        with (
            socket.create_connection(("127.0.0.1", shim.port), timeout=10) as raw,
            client.wrap_socket(raw, server_hostname="localhost") as tls,
        ):
            assert tls.version() == version.name.replace("_", ".")


def test_hsts_on_https_answers_only(shim: Process, ca: CA) -> None:
    for path in ("/iiif/3/quad/info.json", "/iiif/3/nothing-here/info.json", "/health"):
        answer = _ask(shim.port, ca, path)
        assert answer.headers["Strict-Transport-Security"] == "max-age=600", path
    plain = request(shim.redirect, "/iiif/3/quad/info.json")  # type: ignore[attr-defined]
    assert plain.status == 308 and plain.header("Strict-Transport-Security") is None


def test_hsts_on_the_guards_own_refusals_over_https(shim: Process, ca: CA) -> None:
    """The connection guard's 414 (and 408, 431, 503) carry HSTS over TLS, as aiohttp's do."""
    with (
        socket.create_connection(("127.0.0.1", shim.port), timeout=20) as raw,
        _client(ca).wrap_socket(raw, server_hostname="localhost") as tls,
    ):
        tls.sendall(b"GET /" + b"a" * 20000 + b" HTTP/1.1\r\nHost: localhost\r\n\r\n")
        answer = http.client.HTTPResponse(tls)  # type: ignore[arg-type]
        answer.begin()
        assert answer.status == 414
        assert answer.headers["Strict-Transport-Security"] == "max-age=600"


def test_the_redirect_port_answers_308_to_https_keeping_path_and_query(
    shim: Process, ca: CA
) -> None:
    port = shim.redirect  # type: ignore[attr-defined]
    path = "/iiif/3/a%2Fb%20c/full/max/0/default.jpg?x=1&y=%C3%A9"
    answer = _plain(port, path, f"localhost:{port}")
    assert answer.status == 308
    location = answer.header("Location")
    assert location == f"https://localhost:{shim.port}{path}"
    assert answer.header("Access-Control-Allow-Origin") == "*"
    for method in ("HEAD", "POST", "DELETE"):  # whatever the method: nothing else is done
        assert _plain(port, "/admin/cache", "x", method).status == 308
    v6 = _plain(port, "/x", "[::1]:80")
    assert v6.header("Location") == f"https://[::1]:{shim.port}/x"
    bare = _plain(port, "/", "images.example.org")
    assert bare.header("Location") == f"https://images.example.org:{shim.port}/"
    for host in ("evil.example.org/x", "a@b", "x:99999", "", None):
        refused = _plain(port, "/", host)
        assert refused.status == 400 and refused.header("Location") is None, host
    followed = _ask(shim.port, ca, path.split("?")[0].replace("a%2Fb%20c", "quad"))
    assert followed.status == 200


def test_bad_clients_cost_no_traceback(shim: Process, ca: CA) -> None:
    for garbage in (b"GET / HTTP/1.1\r\nHost: x\r\n\r\n", b"\x16\x03\x01\x00\x05hello", b""):
        with socket.create_connection(("127.0.0.1", shim.port), timeout=10) as raw:
            raw.sendall(garbage)
            raw.shutdown(socket.SHUT_WR)
            with contextlib.suppress(ConnectionResetError):
                raw.recv(100)  # an alert, or the end: the server is done with it
    distrusting = ssl.create_default_context()  # the system's CAs: ours is not one of them
    with (
        socket.create_connection(("127.0.0.1", shim.port), timeout=10) as raw,
        pytest.raises(ssl.SSLCertVerificationError),
    ):
        distrusting.wrap_socket(raw, server_hostname="localhost")
    assert _ask(shim.port, ca).status == 200
    log_lines(shim.log, "GET /health")  # the log is written up to here
    text = shim.log.read_text()
    assert "Traceback" not in text and "ERROR" not in text, text[-3000:]
    assert _handshake_failures(shim.port, ca) >= 3  # the plain request, the record, the distrust


def _handshake_failures(port: int, ca: CA) -> float:
    metrics = _ask(port, ca, "/metrics").body.decode()
    found = re.search(r"^iiif_shim_tls_handshake_failures_total (\S+)$", metrics, re.M)
    assert found, metrics[-2000:]
    return float(found[1])


def _fds(pid: int) -> int:
    """Open descriptors of ``pid`` and of its children (a supervisor's workers)."""
    pids = [pid]
    for entry in Path("/proc").iterdir():
        if entry.name.isdigit():
            with contextlib.suppress(OSError):
                if int((entry / "stat").read_text().rsplit(")", 1)[1].split()[1]) == pid:
                    pids.append(int(entry.name))
    return sum(len(os.listdir(f"/proc/{p}/fd")) for p in pids)


def _closed(sock: socket.socket) -> bool:
    """Whether the server closed ``sock``, a non-blocking one (it sends nothing before a
    ClientHello)."""
    try:
        return sock.recv(1) == b""
    except BlockingIOError:
        return False
    except ConnectionResetError:
        return True


@pytest.mark.parametrize("processes", [1, 2])
def test_clients_that_never_handshake_hold_at_most_the_connection_cap(
    ca: CA, images: Path, tmp_path: Path, processes: int
) -> None:
    """A connection counts against server.max_client_connections from accept, handshake
    included: a flood of idle TCP connects holds the cap (per process) and no more descriptors,
    the rest closed at once; once they go, a real HTTPS request is answered and their failed
    handshakes are counted."""
    proc = _https(
        ca,
        tmp_path,
        images,
        "--processes",
        str(processes),
        server="  max_client_connections: 8\n  header_timeout: 30",
    )
    flood: list[socket.socket] = []
    try:
        wait_until(lambda: len(_serials(proc.port, ca, 4 * processes)) == processes, "all up")
        before = _fds(proc.proc.pid)
        for _ in range(200):
            flood.append(socket.create_connection(("127.0.0.1", proc.port), timeout=10))
            flood[-1].setblocking(False)  # (so that _closed never waits)
        held = 8 * processes
        wait_until(
            lambda: sum(_closed(s) for s in flood) >= len(flood) - held,
            "connections past the cap closed at once",
            limit=20,  # (header_timeout is 30: none is closed for its slowness meanwhile)
        )
        assert _fds(proc.proc.pid) <= before + held + 4
        for sock in flood:
            sock.close()
        wait_until(lambda: _answered(proc.port, ca), "a real request answered after the flood")
        wait_until(lambda: _handshake_failures(proc.port, ca) >= held, "failures counted")
    finally:
        for sock in flood:
            sock.close()
        proc.stop()


def _answered(port: int, ca: CA) -> bool:
    try:
        return _ask(port, ca, "/iiif/3/quad/full/64,/0/default.png").status == 200
    except OSError:
        return False


@pytest.mark.parametrize("processes", [1, 2])
def test_a_client_that_never_handshakes_is_closed_after_the_header_timeout(
    ca: CA, images: Path, tmp_path: Path, processes: int
) -> None:
    """header_timeout: 2 bounds the handshake (asyncio's own default is 60 s)."""
    proc = _https(ca, tmp_path, images, "--processes", str(processes))
    try:
        with (
            socket.create_connection(("127.0.0.1", proc.port), timeout=30) as idle,
            contextlib.suppress(ConnectionResetError),  # (a timeout fails the test)
        ):
            assert idle.recv(100) == b""  # closed by the server, nothing said
        assert _ask(proc.port, ca).status == 200
    finally:
        proc.stop()


def _check_config(config: Path) -> subprocess.CompletedProcess[str]:
    args = [sys.executable, "-m", "iiif_shim", "check-config", str(config)]
    return subprocess.run(args, capture_output=True, text=True, timeout=60, cwd=ROOT)


@pytest.mark.parametrize(
    ("kind", "line"),
    [
        ("expired", "server.tls.cert: {cert} expired on "),
        ("mismatch", "server.tls.key: {key} is not the key of the certificate in {cert}"),
        ("swapped", "server.tls.cert: {key} holds a private key, not a certificate"),
    ],
)
def test_check_config_and_serve_refuse_a_bad_certificate(
    ca: CA, images: Path, tmp_path: Path, kind: str, line: str
) -> None:
    issued = {
        "expired": lambda: ca.issue("expired", valid_from=-20 * DAY, valid_for=10 * DAY),
        "mismatch": lambda: ca.issue("mismatch", wrong_key=True),
        "swapped": lambda: ca.issue("swapped"),
    }[kind]()
    cert, key = (issued.key, issued.cert) if kind == "swapped" else (issued.cert, issued.key)
    config = _config(tmp_path, images, cert, key)
    expected = line.format(cert=issued.cert, key=issued.key)
    checked = _check_config(config)
    assert checked.returncode == 1 and expected in checked.stderr, checked.stderr
    port = free_port()
    served = subprocess.run(
        [*_serve(config), "--port", str(port)], capture_output=True, text=True, timeout=60
    )
    assert served.returncode == 2 and expected in served.stderr, served.stderr


def _serve(config: Path) -> list[str]:
    return [sys.executable, "-m", "iiif_shim", "serve", "--config", str(config), "--processes", "1"]


def _serials(port: int, ca: CA, count: int) -> dict[int, int]:
    """Worker pid -> the serial it served, over ``count`` new connections."""
    seen = {}
    for _ in range(count):
        answer = _ask(port, ca)
        seen[answer.json()["process"]["pid"]] = answer.serial  # type: ignore[index]
    return seen


def _renewed(port: int, ca: CA, serial: int, workers: int) -> bool:
    seen = _serials(port, ca, 4 * workers)
    return len(seen) == workers and set(seen.values()) == {serial}


def _swap(link: Path, target: Path) -> None:
    """Point the symlink ``link`` at ``target`` by a rename (as Kubernetes updates a Secret)."""
    scratch = link.with_name(link.name + ".swap")
    scratch.symlink_to(target)
    os.replace(scratch, link)


@pytest.mark.parametrize("processes", [1, 2])
def test_a_renewal_is_served_to_new_connections_and_open_ones_keep_working(
    ca: CA, images: Path, tmp_path: Path, processes: int
) -> None:
    """Files replaced by rename (one process) or by a symlink swap (two): every process serves
    the new certificate on new connections; a keep-alive connection opened before still
    answers, with the certificate it was made with."""
    first = ca.issue("v1")
    second = ca.issue("v2")
    if processes == 1:
        cert, key = _install(first, tmp_path / "served")
    else:  # cert-manager's shape: the files are symlinks into a folder swapped whole
        data = tmp_path / "secret"
        for version, issued in (("v1", first), ("v2", second)):
            _install(issued, data / version)
        (data / "current").symlink_to(data / "v1")
        cert, key = data / "tls.crt", data / "tls.key"
        cert.symlink_to(data / "current" / "cert.pem")
        key.symlink_to(data / "current" / "key.pem")
    config = _config(tmp_path, images, cert, key, ", watch: 1")
    proc = start_shim(config, tmp_path, "--processes", str(processes))
    try:
        wait_until(lambda: _renewed(proc.port, ca, first.serial, processes), "every worker up")
        kept = http.client.HTTPSConnection("127.0.0.1", proc.port, context=_client(ca), timeout=20)
        assert _ask(proc.port, ca, conn=kept).serial == first.serial
        if processes == 1:
            _install(second, tmp_path / "served")
        else:
            _swap(data / "current", data / "v2")
        wait_until(lambda: _renewed(proc.port, ca, second.serial, processes), "renewal served")
        again = _ask(proc.port, ca, "/iiif/3/quad/info.json", conn=kept)
        assert again.status == 200 and again.serial == first.serial
        kept.close()
        assert "Traceback" not in proc.log.read_text()
    finally:
        proc.stop()


@pytest.mark.parametrize("processes", [1, 2])
def test_sighup_serves_the_renewed_certificate(
    ca: CA, images: Path, tmp_path: Path, processes: int
) -> None:
    """With ``watch: 0`` only SIGHUP looks at the files again: one process reloads its
    configuration and the files; a supervisor replaces its workers, which read them."""
    first, second = ca.issue("hup1"), ca.issue("hup2")
    cert, key = _install(first, tmp_path / "served")
    proc = start_shim(
        _config(tmp_path, images, cert, key, ", watch: 0"), tmp_path, "--processes", str(processes)
    )
    try:
        wait_until(lambda: _renewed(proc.port, ca, first.serial, processes), "every worker up")
        _install(second, tmp_path / "served")
        assert set(_serials(proc.port, ca, 4).values()) == {first.serial}  # nobody looked
        proc.proc.send_signal(signal.SIGHUP)
        wait_until(lambda: _renewed(proc.port, ca, second.serial, processes), "renewal served")
    finally:
        proc.stop()


def test_a_bad_renewal_keeps_the_certificate_in_use(ca: CA, images: Path, tmp_path: Path) -> None:
    """Half-written (the certificate replaced, its key not yet), expired, or not PEM: the
    certificate in use stays, one line says why, and the next check takes a good one."""
    first = ca.issue("good1")
    cert, key = _install(first, tmp_path / "served")
    proc = start_shim(_config(tmp_path, images, cert, key, ", watch: 1"), tmp_path)
    try:
        assert _ask(proc.port, ca).serial == first.serial
        half = ca.issue("half")
        scratch = cert.with_suffix(".new")
        scratch.write_bytes(half.cert.read_bytes())
        os.replace(scratch, cert)  # the key is not there yet
        log_lines(proc.log, "is not the key of the certificate")
        assert _ask(proc.port, ca).serial == first.serial
        expired = ca.issue("old", valid_from=-20 * DAY, valid_for=10 * DAY)
        _install(expired, tmp_path / "served")
        log_lines(proc.log, "expired on")
        assert _ask(proc.port, ca).serial == first.serial
        scratch.write_bytes(b"not a certificate\n")
        os.replace(scratch, cert)
        log_lines(proc.log, "is not PEM")
        assert _ask(proc.port, ca).serial == first.serial
        # once for each state of the files: a tick between the two renames of _install may see
        # one more (the expired certificate with the old key), never one state twice
        text = proc.log.read_text()
        kept = [line for line in text.splitlines() if "still serving the certificate" in line]
        assert sum("expired on" in line for line in kept) == 1, kept
        assert sum("is not PEM" in line for line in kept) == 1, kept
        assert 1 <= sum("is not the key of the certificate" in line for line in kept) <= 2, kept
        fixed = ca.issue("good2")
        _install(fixed, tmp_path / "served")
        wait_until(lambda: _ask(proc.port, ca).serial == fixed.serial, "the good renewal served")
    finally:
        proc.stop()


def test_the_redirect_port_of_every_worker_goes_to_public_url(
    ca: CA, images: Path, tmp_path: Path
) -> None:
    redirect = free_port()
    server = f"  public_url: https://images.example.org\n  http_redirect_port: {redirect}"
    proc = _https(ca, tmp_path, images, *TWO, server=server)
    try:
        wait_until(lambda: len(_serials(proc.port, ca, 8)) == 2, "both workers answering")
        for _ in range(8):
            answer = _plain(redirect, "/iiif/3/quad/info.json?a=b", "x:1")
            assert answer.status == 308
            assert (
                answer.header("Location") == "https://images.example.org/iiif/3/quad/info.json?a=b"
            )
        info = _ask(proc.port, ca, "/iiif/3/quad/info.json").json()
        assert info["id"] == "https://images.example.org/iiif/3/quad"
    finally:
        proc.stop()


def test_the_redirect_port_answers_acme_challenges_from_acme_dir(
    ca: CA, images: Path, tmp_path: Path
) -> None:
    """certbot certonly --webroot -w ACME_DIR with the shim on 443 and 80: the challenge file is
    answered, nothing else under the folder, and every other request is still a 308."""
    webroot = tmp_path / "acme"
    challenges = webroot / ".well-known" / "acme-challenge"
    challenges.mkdir(parents=True)
    (challenges / "tok_EN-1").write_text("tok_EN-1.thumbprint")
    (challenges / "big").write_bytes(b"x" * 5000)
    (challenges / "linked").symlink_to(tmp_path / "shim.yaml")
    (challenges / "folder").mkdir()
    (tmp_path / "secret").write_text("not for the web")
    redirect = free_port()
    proc = _https(
        ca,
        tmp_path,
        images,
        tls=f', acme_dir: "{webroot}"',
        server=f"  http_redirect_port: {redirect}",
    )
    try:
        wait_until(lambda: _answered(proc.port, ca), "serving")
        found = _plain(redirect, "/.well-known/acme-challenge/tok_EN-1", "example.org")
        assert found.status == 200 and found.body == b"tok_EN-1.thumbprint"
        head = _plain(redirect, "/.well-known/acme-challenge/tok_EN-1", "example.org", "HEAD")
        assert head.status == 200
        for token in ("missing", "big", "linked", "folder"):
            answer = _plain(redirect, f"/.well-known/acme-challenge/{token}", "example.org")
            assert answer.status == 404 and b"thumbprint" not in answer.body, token
        for path in (
            "/.well-known/acme-challenge/..%2F..%2F..%2Fsecret",
            "/.well-known/acme-challenge/../../../secret",
            "/.well-known/acme-challenge/tok_EN-1?x=1",
            "/.well-known/acme-challenge/",
            "/.well-known/other",
        ):
            answer = _plain(redirect, path, "example.org")
            assert answer.status == 308 and b"not for the web" not in answer.body, path
        post = _plain(redirect, "/.well-known/acme-challenge/tok_EN-1", "example.org", "POST")
        assert post.status == 308
    finally:
        proc.stop()


def test_a_link_on_the_way_to_an_acme_challenge_is_a_404(
    ca: CA, images: Path, tmp_path: Path
) -> None:
    """Whoever may write into the webroot must not read the shim's environment or any file its
    user can: a link at any folder between ``acme_dir`` and the token (``acme-challenge`` a link
    to /proc/self, to /etc, to a folder of tokens; ``.well-known`` a link) is a 404; the real
    layout is still answered."""
    marker = "AcmeLeakMarker4711"
    webroot = tmp_path / "acme"
    known = webroot / ".well-known"
    real = tmp_path / "real" / ".well-known"
    (real / "acme-challenge").mkdir(parents=True)
    (real / "acme-challenge" / "tok").write_text("tok.thumbprint")
    webroot.mkdir()
    redirect = free_port()
    proc = _https(
        ca,
        tmp_path,
        images,
        tls=f', acme_dir: "{webroot}"',
        server=f"  http_redirect_port: {redirect}",
        env={"ACME_LEAK": marker},
    )
    try:
        wait_until(lambda: _answered(proc.port, ca), "serving")
        hostname = Path("/etc/hostname").read_bytes()
        for link, target, token, leak in (
            (known, real, "tok", b"thumbprint"),
            (known / "acme-challenge", Path("/proc/self"), "environ", marker.encode()),
            (known / "acme-challenge", Path("/etc"), "hostname", hostname),
            (known / "acme-challenge", real / "acme-challenge", "tok", b"thumbprint"),
        ):
            link.parent.mkdir(parents=True, exist_ok=True)
            link.symlink_to(target)
            answer = _plain(redirect, f"/.well-known/acme-challenge/{token}", "example.org")
            assert answer.status == 404 and leak not in answer.body, (link, target)
            link.unlink()
        real.rename(known)  # (over the folder now empty)
        found = _plain(redirect, "/.well-known/acme-challenge/tok", "example.org")
        assert found.status == 200 and found.body == b"tok.thumbprint"
    finally:
        proc.stop()


def test_the_certificates_end_in_health_metrics_and_log(
    ca: CA, images: Path, tmp_path: Path
) -> None:
    """A certificate with 5 days left: /health/ready's tls field (the status unchanged), the
    expiry gauge, and a warning from the watch while it runs (not only at start)."""
    issued = ca.issue("ending", valid_for=6 * DAY)
    cert, key = _install(issued, tmp_path / "served")
    proc = start_shim(_config(tmp_path, images, cert, key, ", watch: 1"), tmp_path)
    try:
        ready = _ask(proc.port, ca, "/health/ready")
        assert ready.status == 200
        tls = ready.json()["tls"]
        assert tls["not_after"] == issued.not_after.strftime("%Y-%m-%dT%H:%M:%SZ")  # type: ignore[index]
        assert 4.9 < tls["days_left"] <= 5.0  # type: ignore[index,operator]
        metrics = _ask(proc.port, ca, "/metrics").body.decode()
        gauge = re.search(
            r"^iiif_shim_tls_certificate_expiry_timestamp_seconds (\S+)$", metrics, re.M
        )
        assert gauge and float(gauge[1]) == int(issued.not_after.timestamp()), metrics[-2000:]
        log_lines(proc.log, "expires in 5.0 days: renew it")
    finally:
        proc.stop()


def _replaced(port: int, ca: CA, victim: int, serial: int) -> bool:
    """Two workers answer, neither of them ``victim``, both with ``serial``."""
    try:
        seen = _serials(port, ca, 8)
    except OSError:  # (the killed worker's connection)
        return False
    return victim not in seen and len(seen) == 2 and set(seen.values()) == {serial}


def test_a_worker_started_after_the_files_went_bad_serves_the_last_good_pair(
    ca: CA, images: Path, tmp_path: Path
) -> None:
    """Two processes, watch: 0; the files replaced by an expired pair, then by garbage, a worker
    killed each time: its replacement serves the pair the supervisor kept (capacity comes
    back), and says so."""
    first = ca.issue("lastgood")
    cert, key = _install(first, tmp_path / "served")
    proc = start_shim(_config(tmp_path, images, cert, key, ", watch: 0"), tmp_path, *TWO)
    try:
        wait_until(lambda: _renewed(proc.port, ca, first.serial, 2), "both workers up")
        expired = ca.issue("expired", valid_from=-20 * DAY, valid_for=10 * DAY)
        for bad in (expired, None):
            if bad is not None:
                _install(bad, tmp_path / "served")
            else:
                cert.write_bytes(b"not a certificate\n")
            victim = next(iter(_serials(proc.port, ca, 4)))
            os.kill(victim, signal.SIGKILL)
            wait_until(lambda v=victim: _replaced(proc.port, ca, v, first.serial), "replaced")
        log_lines(proc.log, "serving the last good certificate the supervisor kept", count=2)
        assert "could not start" not in proc.log.read_text()
    finally:
        proc.stop()
