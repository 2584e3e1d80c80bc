"""Hostile input against the live server (hypothesis): generated and mutated IIIF paths, methods
and headers, sent raw over a socket. Never a 5xx, always the spec's 4xx for what is wrong, CORS on
every answer, and no error body carrying a traceback, a path of this machine or a library's
words."""

from __future__ import annotations

import socket
from pathlib import Path
from urllib.parse import quote

import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from tests.support import Process

LIVE = settings(
    max_examples=600,
    deadline=None,
    suppress_health_check=[HealthCheck.too_slow, HealthCheck.function_scoped_fixture],
)

KNOWN = ["quad", "gray", "sub%2Fpage%201", "alpha", "cmyk", "deep"]
identifier = st.one_of(
    st.sampled_from(KNOWN),
    st.text(min_size=1, max_size=40).map(lambda t: quote(t, safe="")),
    st.sampled_from(["..", "%2E%2E", "..%2F..%2Fetc%2Fpasswd", "%00", "%C0%AE", "%ZZ", "a" * 2000]),
)
param = st.one_of(
    st.sampled_from(
        ["full", "square", "max", "^max", "0", "!90", "22.5", "default.jpg", "gray.png", "pct:50"]
    ),
    st.from_regex(r"[0-9!^,.a-z:%]{0,14}", fullmatch=True),
    st.text(alphabet=st.characters(min_codepoint=33, max_codepoint=126), max_size=12),
)
path = st.one_of(
    st.tuples(
        st.sampled_from(["/iiif/3/", "/iiif/2/", "/iiif/1/", "/iiif/", "/", "/iiif/3//"]),
        identifier,
        st.lists(param, max_size=5).map(
            lambda ps: "".join("/" + quote(p, safe="!^,:.%") for p in ps)
        ),
    ).map("".join),
    st.sampled_from(["/", "/health", "/health/ready", "/metrics", "/iiif", "/favicon.ico"]),
    st.text(alphabet=st.characters(min_codepoint=33, max_codepoint=126), max_size=60).map(
        lambda t: "/" + t
    ),
)
method = st.sampled_from(
    ["GET", "HEAD", "OPTIONS", "POST", "PUT", "DELETE", "PATCH", "TRACE", "BREW"]
)
header_value = st.text(alphabet=st.characters(min_codepoint=32, max_codepoint=126), max_size=80)
headers = st.dictionaries(
    st.sampled_from(
        [
            "Accept",
            "If-None-Match",
            "If-Modified-Since",
            "Range",
            "Origin",
            "X-Forwarded-Host",
            "X-Forwarded-Proto",
            "X-Forwarded-Prefix",
            "X-Forwarded-Port",
            "Forwarded",
            "X-Request-ID",
            "Access-Control-Request-Method",
            "Authorization",
            "Cookie",
            "X-Custom",
        ]
    ),
    header_value,
    max_size=5,
)
host = st.one_of(
    st.just("127.0.0.1"), st.sampled_from(["h:99999", "<x>", "", "a b", "[::1]:80", "x:0"])
)


def send(port: int, head: str) -> tuple[int, dict[str, str], bytes]:
    with socket.create_connection(("127.0.0.1", port), timeout=30) as s:
        s.sendall(head.encode("latin-1"))
        data = b""
        while chunk := s.recv(65536):
            data += chunk
    top, _, body = data.partition(b"\r\n\r\n")
    lines = top.decode("latin-1").split("\r\n")
    status = int(lines[0].split()[1])
    found = {}
    for line in lines[1:]:
        name, _, value = line.partition(":")
        found[name.strip().lower()] = value.strip()
    return status, found, body


@pytest.fixture(scope="module")
def secrets(images: Path) -> list[bytes]:
    """What no error body may show: this machine's paths and the library's own words."""
    return [str(images).encode(), b"Traceback", b'File "', b"aiohttp", b"PIL", b"Errno"]


@LIVE
@given(method=method, target=path, extra=headers, host_value=host)
def test_never_a_5xx_always_cors(
    shim_process: Process,
    secrets: list[bytes],
    method: str,
    target: str,
    extra: dict[str, str],
    host_value: str,
) -> None:
    lines = [f"{method} {target} HTTP/1.1", f"Host: {host_value}", "Connection: close"]
    lines += [f"{k}: {v}" for k, v in extra.items()]
    status, got, body = send(shim_process.port, "\r\n".join(lines) + "\r\n\r\n")
    assert status < 500, (status, lines, body[:300])
    assert got.get("access-control-allow-origin") == "*", (status, lines)
    if status >= 400:
        for secret in secrets:
            assert secret not in body, (secret, lines, body[:300])


@LIVE
@given(ident=st.text(min_size=1, max_size=30), good=st.booleans())
def test_the_spec_s_status_for_unknown_ids_and_bad_parameters(
    shim_process: Process, ident: str, good: bool
) -> None:
    """A valid request for an unknown identifier is a 404; a malformed one is a 400."""
    name = "zz-" + quote(ident, safe="")
    params = "full/max/0/default.jpg" if good else "full/nope/0/default.jpg"
    status, got, _ = send(
        shim_process.port,
        f"GET /iiif/3/{name}/{params} HTTP/1.1\r\nHost: 127.0.0.1\r\nConnection: close\r\n\r\n",
    )
    assert status == (404 if good else 400)
    assert got.get("access-control-allow-origin") == "*"
