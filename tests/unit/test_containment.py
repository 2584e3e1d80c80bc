"""No identifier leaves its URL template, however it is encoded (the value policy, unit level).

The same attacks against real nginx, lighttpd, iipsrv and Thumbor are in
tests/http/test_containment.py; here each encoding is checked against the policy itself, and
the policy against what a decoding, normalising server would resolve.
"""

from __future__ import annotations

import pytest

from iiif_shim.upstream.urltemplate import UnsafeValue, UrlTemplate, unsafe_reason
from tests.support import nginx_resolves

# What an attacker puts in the identifier after the shim's one decoding of the URL segment.
ESCAPES = [
    "../secret",
    "../../../../etc/passwd",
    "a/../../secret",
    "%2e%2e/secret",  # a double-encoded dot segment, for a server that decodes twice
    "%2E%2E%2Fsecret",
    "%252e%252e%252fsecret",  # triple
    ".%2e/secret",
    "..%5Csecret",
    "..\\secret",
    "..;/secret",  # servlet containers drop ";..." from a segment
    "..;jsessionid=x/secret",
    "secret.png\x00.jpg",
    "secret%00.jpg",
    "%C0%AE%C0%AE/secret",  # overlong UTF-8 dots, read as dots by old decoders
    "%C0%AF",
    "\uff0e\uff0e/secret",  # fullwidth dots, NFKC-normalised to ".."
    "\uff0e\uff0e\uff0fsecret",
    ".. /secret",  # Windows trims trailing dots and spaces
    "... /secret",
    ".",
    "..",
    "a/./b",
    "http://evil.example.org/x",
    "//evil.example.org/x",
    "http:%2F%2Fevil.example.org%2Fx",
    "a\r\nX-Injected: 1",
    "a\tb",
    "..?/secret",  # a server that reads the query from a decoded path
    "..%3F",
    "..#x",
    "/etc/passwd",  # absolute: a FIF prefix or loader root may be empty
    "%2Fetc%2Fpasswd",
    "%u002e%u002e/secret",  # IIS-style escapes
]

FINE = [
    "chart",
    "ark:/12025/654xz321",
    "sub/page 1.png",
    "a..b",
    "..a",
    "a.",
    "v1.2.3",
    "100%",
    "x?y=1&z=2#f",
    "é ü",
    "a;b",
    "urn:foo:a123,456",
    "67352ccc-d1b0-11e1-89ae-279075081939",
    "%zz",
]


@pytest.mark.parametrize("value", ESCAPES)
def test_escapes_are_refused(value: str) -> None:
    assert unsafe_reason(value) is not None
    for text in ("http://h/masters/{id}.png", "http://h/x?FIF={id}.tif", "{id}"):
        with pytest.raises(UnsafeValue):
            UrlTemplate.parse(text, require_http=text.startswith("http")).expand({"id": value})


@pytest.mark.parametrize("value", FINE)
def test_ordinary_identifiers_pass(value: str) -> None:
    assert unsafe_reason(value) is None
    url = UrlTemplate.parse("http://h/masters/{id}.png").expand({"id": value})
    assert UrlTemplate.parse("http://h/masters/{id}.png").within(url)


def test_values_that_only_escape_together_are_caught_after_expansion() -> None:
    """Each half is harmless; side by side they spell %2e%2e, a dot segment for a server that
    decodes twice. The second line, on the whole URL, catches it."""
    template = UrlTemplate.parse("http://h/img/{a}{b}/x.tif")
    assert unsafe_reason("%2") is None and unsafe_reason("e%2e") is None
    with pytest.raises(UnsafeValue):
        template.expand({"a": "%2", "b": "e%2e"})
    assert template.expand({"a": "p", "b": "1"}) == "http://h/img/p1/x.tif"


def test_fixed_path_and_origin() -> None:
    t = UrlTemplate.parse("http://Host:81/a/b/img-{id}.tif?x={id}")
    assert (t.origin, t.fixed_path) == ("http://host:81", "/a/b/")
    assert t.path_placeholders == {"id"}
    q = UrlTemplate.parse("http://h/fcgi-bin/iipsrv.fcgi?FIF={id}")
    assert (q.fixed_path, q.path_placeholders) == ("/fcgi-bin/", frozenset())
    assert t.within("http://host:81/a/b/c/d.tif") and not t.within("http://host:81/a/c.tif")
    assert not t.within("http://other:81/a/b/x") and not t.within("http://host:81/a/b/../x")
    assert not t.within("http://host:81/a/b/%2E%2E/x")


@pytest.mark.parametrize(
    ("path", "resolved"),
    [
        ("/a/b/../c", "/a/c"),
        ("/a/b/%2e%2E/c", "/a/c"),
        ("/a/b/..%2Fc", "/a/c"),
        ("/a/./b/", "/a/b/"),
        ("//a//b", "/a/b"),
        ("/../../x", "/x"),
    ],
)
def test_the_tests_model_of_nginx_and_the_templates_agree(path: str, resolved: str) -> None:
    """The oracle the containment tests read nginx's log with, and the shim's own check of a
    URL against a template's folder: a path is within ``/a/`` exactly when nginx serves it
    from there."""
    assert nginx_resolves(path) == resolved
    folder = UrlTemplate.parse("http://h/a/{id}")
    assert folder.within(f"http://h{path}") is resolved.startswith("/a/")


# Paths a URL may have (a catalogue's text URL, a server's redirect) that stay in /alto/ as
# posixpath resolves them, but leave it on servers that read other separators or dot forms:
# IIS and Windows hosts take "\" for "/" and trim trailing dots and spaces, servlet containers
# (Tomcat, Spring) drop ";params" from a segment, old IIS decodes overlong UTF-8 and %u escapes,
# C servers end a name at a NUL; NFKC-normalising ones make fullwidth dots dots.
OTHER_SERVERS_LEAVE = [
    "/alto/..\\private/x.xml",
    "/alto/..%5Cprivate/x.xml",
    "/alto/%2e%2e%5cprivate/x.xml",
    "/alto/..%255Cprivate/x.xml",
    "/alto/..;/private/x.xml",
    "/alto/..;jsessionid=1/private/x.xml",
    "/alto/.;/../private/x.xml",
    "/alto/%c0%ae%c0%ae/private/x.xml",
    "/alto/%e0%80%ae%e0%80%ae/private/x.xml",
    "/alto/..%c0%afprivate/x.xml",
    "/alto/..%20/private/x.xml",
    "/alto/.../private/x.xml",
    "/alto/%u002e%u002e/private/x.xml",
    "/alto/%EF%BC%8E%EF%BC%8E/private/x.xml",
    "/alto/..%00/private/x.xml",
]
# and what they must not catch
STAYS_IN = [
    "/alto/x.xml",
    "/alto/a;b/x.xml",
    "/alto/v1.2/a..b/x.xml",
    "/alto/caf%C3%A9.xml",
    "/alto/x/../y.xml",
    "/alto/./y.xml",
    "/alto/100%25.xml",
    "/alto/%zz.xml",
    "/alto/.hidden/x.xml",
]


@pytest.mark.parametrize("path", OTHER_SERVERS_LEAVE)
def test_within_refuses_what_other_servers_read_as_leaving_the_folder(path: str) -> None:
    """What guards text URLs (``text_origins``) and every redirect: a path that only posixpath
    keeps in the folder is not in it."""
    folder = UrlTemplate.parse("https://ocr.example.org/alto/")
    assert not folder.within(f"https://ocr.example.org{path}")
    assert not UrlTemplate.parse("http://h/alto/{id}").within(f"http://h{path}")


@pytest.mark.parametrize("path", STAYS_IN)
def test_within_keeps_paths_that_stay_in_the_folder(path: str) -> None:
    folder = UrlTemplate.parse("https://ocr.example.org/alto/")
    assert folder.within(f"https://ocr.example.org{path}")


def test_a_template_whose_folder_is_percent_encoded_stays_in_it() -> None:
    """Its folder is compared as each round of decoding leaves it, as the URL is."""
    template = UrlTemplate.parse("http://h/my%20ocr/caf%C3%A9/{id}")
    assert template.expand({"id": "x"}) == "http://h/my%20ocr/caf%C3%A9/x"
    assert template.within("http://h/my%20ocr/caf%C3%A9/y/z")
    assert not template.within("http://h/my%20ocr/caf%C3%A9/../y")
    assert not template.within("http://h/my%20ocr/y")


def test_a_template_that_is_not_utf8_once_decoded_is_refused_naming_why() -> None:
    """Every URL it made would be refused (a path must be UTF-8 once decoded): said at once."""
    with pytest.raises(ValueError, match="not UTF-8"):
        UrlTemplate.parse("http://h/caf%E9/{id}")
