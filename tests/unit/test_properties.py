"""Property-based tests (hypothesis) of the pure stages: whatever text arrives, the parser and
the resolver either give a valid value or raise the spec's 4xx/501; a URL template never lets a
value out; canonical forms are fixed points."""

from __future__ import annotations

import posixpath
import string
from urllib.parse import unquote

from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from iiif_shim.base.errors import BadRequest, NotImplementedFeature
from iiif_shim.iiif.profile import Version
from iiif_shim.iiif.request import parse_image_request
from iiif_shim.iiif.resolve import Limits, resolve, rotated_size
from iiif_shim.upstream.urltemplate import UnsafeValue, UrlTemplate

QUICK = settings(max_examples=400, deadline=None, suppress_health_check=[HealthCheck.too_slow])

number = st.one_of(
    st.integers(0, 20000).map(str),
    st.floats(0, 400, allow_nan=False).map(lambda f: f"{f:.3f}".rstrip("0").rstrip(".")),
    st.sampled_from(["", "-1", "1e3", "+5", ".5", "5.", "00", "99999999999999", "nan", "inf"]),
)
region = st.one_of(
    st.sampled_from(["full", "square", "", "max", "pct:", "FULL"]),
    st.tuples(number, number, number, number).map(",".join),
    st.tuples(number, number, number, number).map(lambda t: "pct:" + ",".join(t)),
    st.text(max_size=30),
)
size = st.one_of(
    st.sampled_from(["max", "^max", "full", "", "^", "!", ",", "pct:"]),
    st.tuples(st.sampled_from(["", "^", "!", "^!", "pct:", "^pct:"]), number, number).map(
        lambda t: f"{t[0]}{t[1]},{t[2]}" if "pct" not in t[0] else f"{t[0]}{t[1]}"
    ),
    st.tuples(st.sampled_from(["", "^"]), number).map(lambda t: f"{t[0]}{t[1]},"),
    st.tuples(st.sampled_from(["", "^"]), number).map(lambda t: f"{t[0]},{t[1]}"),
    st.text(max_size=20),
)
rotation = st.one_of(
    number, number.map(lambda n: "!" + n), st.sampled_from(["360", "!360", "361", "-0"])
)
quality = st.tuples(
    st.sampled_from(["default", "color", "gray", "bitonal", "grey", "", "native"]),
    st.sampled_from(["jpg", "png", "webp", "gif", "tif", "jp2", "pdf", "jpeg", "", "bmp"]),
).map(".".join) | st.text(max_size=15)
version = st.sampled_from(list(Version))
limits = st.sampled_from(
    [Limits(), Limits(12000, 12000, 100_000_000), Limits(400, None, None), Limits(None, None, 5000)]
)


@QUICK
@given(version, region, size, rotation, quality)
def test_the_parser_accepts_or_says_400(v: Version, r: str, s: str, rot: str, q: str) -> None:
    try:
        req = parse_image_request(v, "id", r, s, rot, q)
    except BadRequest as exc:
        assert exc.status == 400 and exc.public_text()
        return
    assert req.version is v


@QUICK
@given(
    version, region, size, rotation, quality, st.integers(1, 20000), st.integers(1, 20000), limits
)
def test_the_resolver_gives_pixels_within_the_limits_or_a_4xx(
    v: Version, r: str, s: str, rot: str, q: str, width: int, height: int, lim: Limits
) -> None:
    try:
        req = parse_image_request(v, "id", r, s, rot, q)
        resolved = resolve(req, width, height, lim)
    except (BadRequest, NotImplementedFeature) as exc:
        assert exc.status in (400, 501)
        return
    box = resolved.region
    assert 0 <= box.x < width and 0 <= box.y < height and box.w >= 1 and box.h >= 1
    assert box.x + box.w <= width and box.y + box.h <= height
    assert resolved.width >= 1 and resolved.height >= 1
    assert lim.fits(resolved.width, resolved.height)
    turned = rotated_size(resolved.width, resolved.height, resolved.degrees)
    assert lim.max_area is None or turned[0] * turned[1] <= lim.max_area
    # the canonical form is a fixed point: it names the same output
    canon = resolved.canonical.split("/")
    again = resolve(parse_image_request(v, "id", *canon[:3], canon[3]), width, height, lim)
    assert (again.region, again.width, again.height, again.canonical) == (
        box,
        resolved.width,
        resolved.height,
        resolved.canonical,
    )


templates = st.sampled_from(
    [
        "http://h/masters/{id}.tif",
        "http://h/a/b/img-{id}",
        "http://h/fcgi-bin/iipsrv.fcgi?FIF={id}.tif",
        "http://h/dz/{id}/",
    ]
)
hostile_text = st.lists(
    st.sampled_from([*"./\\%;:@?#&=+ab2eEfFcC05\x00\n\uff0e\uff0f~", "%2e", "%2F", "%25"]),
    max_size=16,
).map("".join)


@QUICK
@given(templates, st.one_of(hostile_text, st.text(max_size=24)))
def test_no_value_leaves_its_template(text: str, value: str) -> None:
    template = UrlTemplate.parse(text)
    try:
        url = template.expand({"id": value})
    except UnsafeValue:
        return
    # an oracle of its own: decode the path as often as a server might, resolve dot segments;
    # it must stay below the folder written in the template
    folder = text.split("{", 1)[0].split("?", 1)[0].rsplit("/", 1)[0] + "/"
    path = url.split("?", 1)[0]
    for _ in range(4):
        resolved = posixpath.normpath(path.replace("http://h", "", 1))
        assert ("http://h" + resolved + "/").startswith(folder), (value, url)
        path = unquote(path)
    assert url.startswith("http://h/") and "#" not in url
    assert not set(url) - set(string.ascii_letters + string.digits + "-._~!$'()*,;:@/?=&%")
