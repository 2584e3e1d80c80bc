"""URL templates (no identifier can leave the template) and public base URLs / ids."""

from __future__ import annotations

from urllib.parse import urlsplit

import pytest

from iiif_shim.base.errors import BadRequest
from iiif_shim.config.settings import parse_settings
from iiif_shim.core.routing import Router
from iiif_shim.iiif.identifier import encode_identifier
from iiif_shim.web.baseurl import PublicBase


@pytest.mark.parametrize(
    ("value", "expected"),
    [
        ("plain", "http://legacy.example.org/masters/plain.tif?v=plain"),
        ("a/b", "http://legacy.example.org/masters/a%2Fb.tif?v=a%2Fb"),
        (
            "x?y=1&z=2#f",
            "http://legacy.example.org/masters/x%3Fy%3D1%26z%3D2%23f.tif?v=x%3Fy%3D1%26z%3D2%23f",
        ),
        ("@evil.com", "http://legacy.example.org/masters/@evil.com.tif?v=@evil.com"),
        ("é ü", "http://legacy.example.org/masters/%C3%A9%20%C3%BC.tif?v=%C3%A9%20%C3%BC"),
        ("a+b;c", "http://legacy.example.org/masters/a%2Bb;c.tif?v=a%2Bb%3Bc"),
    ],
)
def test_template_encodes_for_its_place(value: str, expected: str) -> None:
    from iiif_shim.upstream.urltemplate import UrlTemplate

    t = UrlTemplate.parse("http://legacy.example.org/masters/{id}.tif?v={id}")
    url = t.expand({"id": value})
    assert url == expected
    split = urlsplit(url)
    assert split.hostname == "legacy.example.org"
    assert split.path.startswith("/masters/") and split.path.count("/") == 2
    assert split.query.count("=") == 1 and "&" not in split.query


@pytest.mark.parametrize(
    ("text", "fragment"),
    [
        ("http://{id}.example.org/x", "host"),
        ("http://example.org:{port}/x", "host"),
        ("{scheme}://example.org/{id}", "scheme"),
        ("http://example.org/{id}#frag", "fragment"),
        ("http://example.org/{id!r}", "format spec"),
        ("http://example.org/{0}", "plain name"),
        ("http://example.org/{id", "placeholder"),
        ("example.org/{id}", "http://"),
    ],
)
def test_template_errors(text: str, fragment: str) -> None:
    from iiif_shim.upstream.urltemplate import UrlTemplate

    with pytest.raises(ValueError) as err:
        UrlTemplate.parse(text)
    assert fragment in str(err.value)


def test_identifier_encoding_round_trip() -> None:
    assert encode_identifier("ark:/12025/654xz321") == "ark:%2F12025%2F654xz321"
    assert encode_identifier("urn:foo:a123,456") == "urn:foo:a123,456"
    assert encode_identifier("1%3C69") == "1%253C69"
    assert encode_identifier("a b[c]@d?e#f") == "a%20b%5Bc%5D%40d%3Fe%23f"
    assert encode_identifier("é") == "%C3%A9"


HEADERS = {
    "X-Forwarded-Proto": "https",
    "X-Forwarded-Host": "images.example.org, internal:8080",
    "X-Forwarded-Port": "443",
    "X-Forwarded-Prefix": "/pub/iiif",
}


def test_public_base() -> None:
    plain = PublicBase(None, "/iiif", trust_forwarded=False)
    assert plain.base("http", "127.0.0.1:8182", HEADERS) == "http://127.0.0.1:8182/iiif"
    trusting = PublicBase(None, "/iiif", trust_forwarded=True)
    assert trusting.base("http", "127.0.0.1:8182", HEADERS) == "https://images.example.org/pub/iiif"
    assert (
        trusting.base(
            "http",
            "h:1",
            {
                "X-Forwarded-Host": "pub.org",
                "X-Forwarded-Port": "8443",
                "X-Forwarded-Proto": "https",
            },
        )
        == "https://pub.org:8443/iiif"
    )
    forwarded = {"Forwarded": 'for=1.2.3.4;proto=https;host="ex.org:444", for=5.6.7.8'}
    assert trusting.base("http", "h:1", forwarded) == "https://ex.org:444/iiif"
    fixed = PublicBase("https://ex.org/base/", "/iiif", trust_forwarded=True)
    assert fixed.base("http", "h:1", HEADERS) == "https://ex.org/base/iiif"


def test_hostile_headers_are_ignored() -> None:
    trusting = PublicBase(None, "/iiif", trust_forwarded=True)
    bad = {
        "X-Forwarded-Host": 'evil"><script>',
        "X-Forwarded-Proto": "javascript",
        "X-Forwarded-Prefix": "no-slash",
        "X-Forwarded-Port": "99999",
    }
    assert trusting.base("http", "h:1", bad) == "http://h:1/iiif"
    assert trusting.base("http", "h:1", {"X-Forwarded-Host": "ex.org:99999"}) == "http://h:1/iiif"
    for host in ("<x>", "h:99999", "h:0", "h:1:2"):  # an invalid Host header is a 400
        with pytest.raises(BadRequest):
            PublicBase(None, "/iiif", False).base("http", host, {})


def test_router(tmp_path: object) -> None:
    from pathlib import Path

    root = Path(str(tmp_path))
    settings = parse_settings(
        {
            "backends": {
                "files": {"type": "files", "root": str(root)},
                "masters": {"type": "http", "url": "http://h/{coll}/{id}.tif"},
            },
            "routes": [
                {"match": r"^ms/(?P<coll>\w+)/(?P<rest>.+)$", "backend": "masters", "id": "{rest}"},
                {"backend": "files", "rights": "http://creativecommons.org/licenses/by/4.0/"},
            ],
        },
        root,
    )
    router = Router(settings.routes)
    t = router.route("ms/bodley/f 1r")
    assert (t.backend, t.native_id) == ("masters", "f 1r")
    assert t.template_values() == {"coll": "bodley", "rest": "f 1r", "id": "f 1r"}
    other = router.route("anything/else")
    assert (other.backend, other.native_id) == ("files", "anything/else")
    assert other.rights == "http://creativecommons.org/licenses/by/4.0/"
    assert router.identity_backends() == ["files"]
