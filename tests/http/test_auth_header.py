"""Header login (``users: {header: X-Remote-User, trusted_proxies: [...]}``) behind a real
nginx that does the sign-on: HTTP Basic (``auth_basic`` with an htpasswd made here) and
``proxy_set_header X-Remote-User $remote_user`` to the shim. nginx connects to the shim from
127.0.0.2 (``proxy_bind``), the test client from 127.0.0.1, so "the proxy" and "anyone else"
are different addresses on one machine.

Each attack is first shown to work where the header is believed from anyone; then, with only
nginx's address trusted, the same request sent straight to the shim is refused while the
sign-on through nginx opens the restricted image.
"""

from __future__ import annotations

import base64
import hashlib
import json
import os
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
    request,
    start_shim,
    wait_until,
    write_config,
)

SECRET = "h" * 48
PROXY_ADDRESS = "127.0.0.2"  # nginx's address towards the shim (proxy_bind)
TILE = "/iiif/3/locked-quad.png/full/max/0/default.png"


def _config(tmp: Path, images: Path, trusted: str) -> Path:
    return write_config(
        tmp / "shim.yaml",
        f"""
        iiif: {{prefix: /iiif}}
        backends:
          local: {{type: files, root: "{images}"}}
        auth:
          secret: "{SECRET}"
          audit_log: "{tmp / "audit.log"}"
          policies:
            staff:
              kind: login
              label: Example Library staff
              users: {{header: X-Remote-User, trusted_proxies: ["{trusted}"]}}
        routes:
          - {{match: "^locked-(?P<rest>.+)$", backend: local, id: "{{rest}}", access: staff}}
          - {{backend: local}}
        """,
    )


def _nginx(tmp: Path, shim_port: int) -> Process:
    """nginx asking for HTTP Basic (alice / wonderland) and passing the user to the shim."""
    binary = need_tool("nginx", "/usr/sbin/nginx")
    salt = os.urandom(8)  # nginx's {SSHA}: base64(SHA-1(password + salt) + salt)
    hashed = base64.b64encode(hashlib.sha1(b"wonderland" + salt).digest() + salt).decode()
    (tmp / "htpasswd").write_text(f"alice:{{SSHA}}{hashed}\n")
    port = free_port()
    conf = nginx_main(
        tmp,
        f"""    access_log {tmp}/nginx-access.log;
    server {{
        listen 127.0.0.1:{port};
        location / {{
            auth_basic "Example Library staff";
            auth_basic_user_file {tmp}/htpasswd;
            proxy_pass http://127.0.0.1:{shim_port};
            proxy_bind {PROXY_ADDRESS};
            proxy_set_header Host $http_host;
            proxy_set_header X-Remote-User $remote_user;
        }}
    }}
""",
    )
    return Process([binary, "-c", str(conf), "-p", str(tmp)], port, tmp / "nginx-out.log")


class Stack:
    def __init__(self, tmp: Path, images: Path, trusted: str) -> None:
        self.tmp = tmp
        self.shim = start_shim(_config(tmp, images, trusted), tmp)
        try:
            self.nginx = _nginx(tmp, self.shim.port)
        except BaseException:
            self.shim.stop()
            raise

    def stop(self) -> None:
        self.nginx.stop()
        self.shim.stop()

    def audit(self) -> list[dict[str, object]]:
        path = self.tmp / "audit.log"
        text = path.read_text() if path.exists() else ""
        return [json.loads(line) for line in text.splitlines() if line.strip()]

    def audited(self, **fields: object) -> dict[str, object]:
        found: list[dict[str, object]] = []

        def there() -> bool:
            found[:] = [e for e in self.audit() if all(e.get(k) == v for k, v in fields.items())]
            return bool(found)

        wait_until(there, f"an audit line with {fields}", 10)
        return found[0]


@pytest.fixture
def stack(images: Path, tmp_path: Path, request: pytest.FixtureRequest) -> Iterator[Stack]:
    made = Stack(tmp_path, images, request.param)
    yield made
    made.stop()


def _basic(user: str, password: str) -> dict[str, str]:
    return {"Authorization": "Basic " + base64.b64encode(f"{user}:{password}".encode()).decode()}


def _cookie(got: Response) -> str | None:
    for line in got.headers.get_all("Set-Cookie") or []:
        found = re.match(r"iiif-shim-auth-staff=([^;]+)", line)
        if found and found.group(1):
            return found.group(1)
    return None


def _opens_tile(stack: Stack, cookie: str) -> int:
    return request(
        stack.shim.port, TILE, headers={"Cookie": f"iiif-shim-auth-staff={cookie}"}
    ).status


FORGED = {"X-Remote-User": "director"}


@pytest.mark.parametrize("stack", ["0.0.0.0/0"], indirect=True)
def test_a_header_believed_from_anyone_is_a_way_in(stack: Stack) -> None:
    """The attack, where the configuration lets it through: anyone who reaches the shim
    names any user."""
    got = request(stack.shim.port, "/auth/staff/access", headers=FORGED)
    assert got.status == 200, got.text
    cookie = _cookie(got)
    assert cookie is not None
    assert _opens_tile(stack, cookie) == 200
    assert stack.audited(event="login")["user"] == "director"


@pytest.mark.parametrize("stack", [f"{PROXY_ADDRESS}/32"], indirect=True)
def test_the_header_counts_only_from_the_proxy(stack: Stack) -> None:
    assert request(stack.shim.port, TILE).status == 401
    # straight to the shim, from 127.0.0.1: the header is ignored
    got = request(stack.shim.port, "/auth/staff/access", headers=FORGED)
    assert got.status == 403, got.text
    assert _cookie(got) is None
    assert stack.audited(event="refused", policy="staff")["address"] == "127.0.0.1"
    assert not any(e.get("event") == "login" for e in stack.audit())

    # through nginx: no password, a wrong one, or a forged header alone never reach the shim
    nginx = stack.nginx.port
    assert request(nginx, "/auth/staff/access", headers=FORGED).status == 401
    assert request(nginx, "/auth/staff/access", headers=_basic("alice", "nope")).status == 401

    # the sign-on: nginx checks the password and names the user; a forged header is replaced
    got = request(nginx, "/auth/staff/access", headers={**_basic("alice", "wonderland"), **FORGED})
    assert got.status == 200, got.text
    assert "window.close()" in got.text
    cookie = _cookie(got)
    assert cookie is not None
    assert _opens_tile(stack, cookie) == 200
    assert stack.audited(event="login")["user"] == "alice"
    assert not any(e.get("user") == "director" for e in stack.audit())
    assert "wonderland" not in (stack.tmp / "audit.log").read_text()


@pytest.mark.parametrize("stack", ["10.9.0.0/16"], indirect=True)
def test_a_proxy_not_trusted_is_not_believed(stack: Stack) -> None:
    """trusted_proxies naming a network neither the client nor nginx is in: the header is
    ignored from both."""
    assert request(stack.shim.port, "/auth/staff/access", headers=FORGED).status == 403
    got = request(stack.nginx.port, "/auth/staff/access", headers=_basic("alice", "wonderland"))
    assert got.status == 403, got.text
    assert _cookie(got) is None
    assert not any(e.get("event") == "login" for e in stack.audit())
