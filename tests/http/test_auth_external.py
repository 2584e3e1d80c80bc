"""External and kiosk policies: the client's address decides (``networks``), on every request,
with no cookie, and their token services answer a token at once; behind nginx
(``auth.forwarded_by``) the address is the one nginx puts in ``X-Forwarded-For``, and that
header from any other peer is ignored.

Loopback addresses stand in for the networks: the test client connects from 127.0.0.1 or
127.0.0.3 (its socket bound to that address), nginx connects to the shim from 127.0.0.2
(``proxy_bind``).
"""

from __future__ import annotations

import http.client
import json
import re
from collections.abc import Iterator
from pathlib import Path

import pytest

from tests.support import (
    Process,
    Response,
    free_port,
    need_tool,
    nginx_main,
    start_shim,
    write_config,
)

SECRET = "x" * 48
PROXY = "127.0.0.2"  # nginx towards the shim
ROOM = "127.0.0.3"  # a client in the reading room


def _tile(prefix: str) -> str:
    return f"/iiif/3/{prefix}-quad.png/full/max/0/default.png"


def _info(prefix: str) -> str:
    return f"/iiif/3/{prefix}-quad.png/info.json"


def get(
    port: int, path: str, *, source: str = "127.0.0.1", headers: dict[str, str] | None = None
) -> Response:
    """A GET from ``source`` (the client socket bound to that loopback address)."""
    conn = http.client.HTTPConnection("127.0.0.1", port, timeout=30, source_address=(source, 0))
    try:
        conn.request("GET", path, headers=headers or {})
        answer = conn.getresponse()
        return Response(answer.status, answer.headers, answer.read())
    finally:
        conn.close()


def _config(tmp: Path, images: Path, here: str, forwarded_by: str | None = None) -> Path:
    forwarded = f'forwarded_by: ["{forwarded_by}"]' if forwarded_by else ""
    return write_config(
        tmp / "shim.yaml",
        f"""
        iiif: {{prefix: /iiif}}
        backends:
          local: {{type: files, root: "{images}"}}
        auth:
          secret: "{SECRET}"
          audit_log: "{tmp / "audit.log"}"
          {forwarded}
          policies:
            room: {{kind: external, label: Reading room, networks: ["{here}"]}}
            far: {{kind: kiosk, label: Another building, networks: ["10.9.0.0/16"]}}
        routes:
          - {{match: "^room-(?P<rest>.+)$", backend: local, id: "{{rest}}", access: room}}
          - {{match: "^far-(?P<rest>.+)$", backend: local, id: "{{rest}}", access: far}}
          - {{backend: local}}
        """,
    )


@pytest.fixture
def shim(images: Path, tmp_path: Path) -> Iterator[Process]:
    served = start_shim(_config(tmp_path, images, "127.0.0.1/32"), tmp_path)
    yield served
    served.stop()


def test_inside_the_network_everything_opens_without_a_login(shim: Process) -> None:
    tile = get(shim.port, _tile("room"))
    assert tile.status == 200
    assert tile.image().size == (300, 200)
    assert get(shim.port, _info("room")).status == 200
    # Auth 1.0 token service: JSON with a token at once, no cookie asked for
    token = get(shim.port, "/auth/room/token")
    assert token.status == 200, token.text
    assert json.loads(token.body)["accessToken"]
    # Auth 2.0 access token service: the postMessage page carries a token
    page = get(shim.port, "/auth/room/token2?messageId=1&origin=http://127.0.0.1:9")
    assert page.status == 200
    assert '"accessToken"' in page.text and "AuthAccessToken2" in page.text
    # the access page (which viewers open for `external` only if they must) grants and closes
    access = get(shim.port, "/auth/room/access")
    assert access.status == 200 and "window.close()" in access.text


def test_outside_the_network_nothing_opens(shim: Process) -> None:
    assert get(shim.port, _tile("far")).status == 401
    assert get(shim.port, _info("far")).status == 401
    token = get(shim.port, "/auth/far/token")
    assert "accessToken" not in json.loads(token.body), token.text
    page = get(shim.port, "/auth/far/token2?messageId=1&origin=http://127.0.0.1:9")
    assert page.status == 200 and "AuthAccessTokenError2" in page.text
    assert '"accessToken"' not in page.text
    access = get(shim.port, "/auth/far/access")
    assert access.status == 403
    assert "iiif-shim-auth-far" not in (access.header("Set-Cookie") or "")
    # a token or cookie of the open policy opens nothing of this one
    room = json.loads(get(shim.port, "/auth/room/token").body)["accessToken"]
    bearer = {"Authorization": f"Bearer {room}"}
    assert get(shim.port, _info("far"), headers=bearer).status == 401


def _nginx(tmp: Path, shim_port: int) -> Process:
    """nginx in front: appends the address it saw to ``X-Forwarded-For``."""
    binary = need_tool("nginx", "/usr/sbin/nginx")
    port = free_port()
    conf = nginx_main(
        tmp,
        f"""    access_log {tmp}/nginx-access.log;
    server {{
        listen 127.0.0.1:{port};
        location / {{
            proxy_pass http://127.0.0.1:{shim_port};
            proxy_bind {PROXY};
            proxy_set_header Host $http_host;
            proxy_set_header X-Forwarded-For $proxy_add_x_forwarded_for;
        }}
    }}
""",
    )
    return Process([binary, "-c", str(conf), "-p", str(tmp)], port, tmp / "nginx-out.log")


@pytest.mark.parametrize(
    ("forwarded_by", "spoof_opens"),
    [("127.0.0.0/8", True), (f"{PROXY}/32", False)],
    ids=["forwarded-by-anyone", "forwarded-by-nginx"],
)
def test_behind_nginx_its_forwarded_address_decides(
    images: Path, tmp_path: Path, forwarded_by: str, spoof_opens: bool
) -> None:
    """The reading room is 127.0.0.3. With ``forwarded_by`` naming every local address
    (the client's too), a spoofed ``X-Forwarded-For`` sent straight to the shim opens the
    image: the attack. Naming nginx's address alone, only what nginx saw counts."""
    served = start_shim(_config(tmp_path, images, f"{ROOM}/32", forwarded_by), tmp_path)
    try:
        nginx = _nginx(tmp_path, served.port)
        try:
            spoof = {"X-Forwarded-For": ROOM}
            # straight to the shim from outside the room, claiming to be inside
            direct = get(served.port, _tile("room"), headers=spoof)
            assert direct.status == (200 if spoof_opens else 401)
            if spoof_opens:
                return
            assert get(served.port, _tile("room")).status == 401
            # through nginx: a client in the room is in, one outside is not, whatever it claims
            assert get(nginx.port, _tile("room"), source=ROOM).status == 200
            assert get(nginx.port, _tile("room")).status == 401
            assert get(nginx.port, _tile("room"), headers=spoof).status == 401
            token = get(nginx.port, "/auth/room/token", source=ROOM)
            assert json.loads(token.body)["accessToken"]
            outside = get(nginx.port, "/auth/room/token", headers=spoof)
            assert "accessToken" not in json.loads(outside.body)
            # the audit log names the address nginx saw
            access = get(nginx.port, "/auth/room/access", source=ROOM)
            assert access.status == 200
            lines = (tmp_path / "audit.log").read_text().splitlines()
            assert any(
                json.loads(line).get("address") == ROOM and re.search("login", line)
                for line in lines
            )
        finally:
            nginx.stop()
    finally:
        served.stop()
