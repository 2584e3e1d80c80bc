"""Content State API 1.0: encoding and reading ``iiif-content``, from the spec's own examples
(IIIF/api ``source/content-state/1.0/index.md``)."""

from __future__ import annotations

import base64
import json
from urllib.parse import unquote

import pytest

from iiif_shim.iiif import contentstate
from iiif_shim.iiif.contentstate import Target

# section 6.3: the condensed target body and its encoding (the spec's Python sample output)
SPEC_BODY = (
    '{"id":"https://example.org/object1/canvas7#xywh=1000,2000,1000,2000","type":"Canvas",'
    '"partOf":[{"id":"https://example.org/object1/manifest","type":"Manifest"}]}'
)
SPEC_ENCODED = (
    "JTdCJTIyaWQlMjIlM0ElMjJodHRwcyUzQSUyRiUyRmV4YW1wbGUub3JnJTJGb2JqZWN0MSUyRmNhbnZhczclMjN4eXdo"
    "JTNEMTAwMCUyQzIwMDAlMkMxMDAwJTJDMjAwMCUyMiUyQyUyMnR5cGUlMjIlM0ElMjJDYW52YXMlMjIlMkMlMjJwYXJ0"
    "T2YlMjIlM0ElNUIlN0IlMjJpZCUyMiUzQSUyMmh0dHBzJTNBJTJGJTJGZXhhbXBsZS5vcmclMkZvYmplY3QxJTJGbWFu"
    "aWZlc3QlMjIlMkMlMjJ0eXBlJTIyJTNBJTIyTWFuaWZlc3QlMjIlN0QlNUQlN0Q"
)
# section 5.4: a search result link
ALICE = (
    "JTdCJTIyaWQlMjIlM0ElMjJodHRwcyUzQSUyRiUyRmV4YW1wbGUub3JnJTJGYWxpY2UlMkZjYW52YXM3NyUyM3h5d2gl"
    "M0QxMDAwJTJDMjAwMCUyQzEwMDAlMkMyMDAwJTIyJTJDJTIydHlwZSUyMiUzQSUyMkNhbnZhcyUyMiUyQyUyMnBhcnRP"
    "ZiUyMiUzQSU1QiU3QiUyMmlkJTIyJTNBJTIyaHR0cHMlM0ElMkYlMkZleGFtcGxlLm9yZyUyRmFsaWNlJTJGbWFuaWZl"
    "c3QlMjIlMkMlMjJ0eXBlJTIyJTNBJTIyTWFuaWZlc3QlMjIlN0QlNUQlN0Q"
)
# section 3.1: its encoded examples wrap the whole viewer link, not just the JSON (an erratum)
SECTION_3_1 = (
    "aHR0cHMlM0ElMkYlMkZleGFtcGxlLm9yZyUyRnZpZXdlciUzRmlpaWYtY29udGVudCUzRCU3QiUyMmlkJTIyJTNBJTIy"
    "aHR0cHMlM0ElMkYlMkZkYW1zc3NsLmxsZ2Mub3JnLnVrJTJGaWlpZiUyRjIuMCUyRjQzODk3NjclMkZjYW52YXMlMkY0"
    "Mzg5NzcyLmpzb24lMjIlMkMlMjJ0eXBlJTIyJTNBJTIyQ2FudmFzJTIyJTJDJTIycGFydE9mJTIyJTNBJTVCJTdCJTIy"
    "aWQlMjIlM0ElMjJodHRwcyUzQSUyRiUyRmRhbXNzc2wubGxnYy5vcmcudWslMkZpaWlmJTJGMi4wJTJGNDM4OTc2NyUy"
    "Rm1hbmlmZXN0Lmpzb24lMjIlMkMlMjJ0eXBlJTIyJTNBJTIyTWFuaWZlc3QlMjIlN0QlNUQlN0Q"
)
MANIFEST = "https://example.org/object1/manifest"
CANVAS = "https://example.org/object1/canvas7"
CTX = "http://iiif.io/api/presentation/3/context.json"


def test_encode_matches_the_spec_example() -> None:
    assert contentstate.encode(SPEC_BODY) == SPEC_ENCODED
    assert contentstate.encode(json.loads(SPEC_BODY)) == SPEC_ENCODED


def test_decode_text_undoes_the_spec_example() -> None:
    assert contentstate.decode_text(SPEC_ENCODED) == SPEC_BODY


def test_encode_keeps_what_encode_uri_component_keeps() -> None:
    # encodeURIComponent leaves A-Z a-z 0-9 - _ . ! ~ * ' ( ) alone and escapes everything else
    text = "a b/'!~*()_.-\u00e9?&=#+"
    inner = base64.urlsafe_b64decode(contentstate.encode(text) + "==").decode()
    assert inner == "a%20b%2F'!~*()_.-%C3%A9%3F%26%3D%23%2B"
    assert "=" not in contentstate.encode(text)


@pytest.mark.parametrize(
    "state",
    [
        {"id": MANIFEST, "type": "Manifest"},
        {
            "id": f"{CANVAS}#xywh=1,2,3,4",
            "type": "Canvas",
            "partOf": [{"id": MANIFEST, "type": "Manifest"}],
        },
        {
            "label": {"none": ["\u00e9\u00e8 \u65e5\u672c \U0001f4d6 </script>"]},
            "id": MANIFEST,
            "type": "Manifest",
        },
    ],
)
def test_round_trip(state: dict[str, object]) -> None:
    encoded = contentstate.encode(state)
    assert set(encoded) <= set("ABCDEFGHIJKLMNOPQRSTUVWXYZabcdefghijklmnopqrstuvwxyz0123456789-_")
    assert json.loads(contentstate.decode_text(encoded)) == state
    assert contentstate.decode(encoded).manifest == MANIFEST


def test_search_result_link_opens_canvas_and_region() -> None:
    assert contentstate.decode(ALICE) == Target(
        manifest="https://example.org/alice/manifest",
        canvas="https://example.org/alice/canvas77",
        region=(1000, 2000, 1000, 2000),
    )


def test_spec_example_decodes_with_or_without_padding() -> None:
    want = Target(manifest=MANIFEST, canvas=CANVAS, region=(1000, 2000, 1000, 2000))
    assert contentstate.decode(SPEC_ENCODED) == want
    padded = SPEC_ENCODED + "=" * (-len(SPEC_ENCODED) % 4)
    assert contentstate.decode(padded) == want


def test_plain_manifest_uri() -> None:
    assert contentstate.decode(MANIFEST) == Target(manifest=MANIFEST)
    # 2.2.4: never encoded, query strings kept
    assert contentstate.decode("http://h:8080/m?x=1").manifest == "http://h:8080/m?x=1"


def test_plain_info_json_is_an_image_service() -> None:
    assert contentstate.decode("https://img.example/iiif/3/abc/info.json") == Target(
        image_service="https://img.example/iiif/3/abc"
    )
    assert contentstate.decode("https://img.example/iiif/3/abc", kind="image") == Target(
        image_service="https://img.example/iiif/3/abc"
    )
    assert contentstate.decode("https://img.example/iiif/3/abc/", kind="image") == Target(
        image_service="https://img.example/iiif/3/abc"
    )


def test_full_annotation_of_a_manifest() -> None:  # 2.2.1
    annotation = {
        "@context": CTX,
        "id": "https://example.org/Annotation-server/bookmarks/b1",
        "type": "Annotation",
        "motivation": ["contentState"],
        "target": {"id": "https://example.org/iiif/item1/manifest", "type": "Manifest"},
    }
    assert contentstate.decode(contentstate.encode(annotation)) == Target(
        manifest="https://example.org/iiif/item1/manifest"
    )


def test_full_annotation_with_canvas_region() -> None:  # 2.2.5 / 5.1, motivation as a string
    annotation = {
        "@context": CTX,
        "id": "https://example.org/import/1",
        "type": "Annotation",
        "motivation": "contentState",
        "target": json.loads(SPEC_BODY),
    }
    assert contentstate.decode(contentstate.encode(annotation)) == Target(
        manifest=MANIFEST, canvas=CANVAS, region=(1000, 2000, 1000, 2000)
    )


def test_specific_resource_with_fragment_selector() -> None:
    target = {
        "type": "SpecificResource",
        "source": {
            "id": CANVAS,
            "type": "Canvas",
            "partOf": [{"id": MANIFEST, "type": "Manifest"}],
        },
        "selector": {"type": "FragmentSelector", "value": "xywh=10,20,30,40"},
    }
    assert contentstate.decode(contentstate.encode(target)) == Target(
        manifest=MANIFEST, canvas=CANVAS, region=(10, 20, 30, 40)
    )
    annotation = {"type": "Annotation", "motivation": ["contentState"], "target": target}
    assert contentstate.decode(contentstate.encode(annotation)).region == (10, 20, 30, 40)


def test_point_selector_opens_the_canvas() -> None:  # 5.2: a time point, no region
    annotation = {
        "type": "Annotation",
        "motivation": ["contentState"],
        "target": {
            "type": "SpecificResource",
            "source": {
                "id": CANVAS,
                "type": "Canvas",
                "partOf": [{"id": MANIFEST, "type": "Manifest"}],
            },
            "selector": {"type": "PointSelector", "t": 14.5},
        },
    }
    assert contentstate.decode(contentstate.encode(annotation)) == Target(
        manifest=MANIFEST, canvas=CANVAS
    )


def test_several_targets_open_the_first() -> None:  # 5.3
    annotation = {
        "type": "Annotation",
        "motivation": "contentState",
        "target": [
            {"id": CANVAS, "type": "Canvas", "partOf": [{"id": MANIFEST, "type": "Manifest"}]},
            {
                "id": "https://example.org/c2",
                "type": "Canvas",
                "partOf": [{"id": "https://example.org/m2", "type": "Manifest"}],
            },
        ],
    }
    assert contentstate.decode(contentstate.encode(annotation)) == Target(
        manifest=MANIFEST, canvas=CANVAS
    )


def test_collection_and_range_targets() -> None:
    collection = {"id": "https://example.org/collection", "type": "Collection"}
    assert contentstate.decode(contentstate.encode(collection)).manifest == collection["id"]
    rng = {
        "id": "https://example.org/range/1",
        "type": "Range",
        "partOf": [{"id": MANIFEST, "type": "Manifest"}],
    }
    assert contentstate.decode(contentstate.encode(rng)) == Target(manifest=MANIFEST)


def test_annotation_whose_target_is_a_uri() -> None:
    annotation = {"type": "Annotation", "motivation": ["contentState"], "target": MANIFEST}
    assert contentstate.decode(contentstate.encode(annotation)) == Target(manifest=MANIFEST)


def test_unencoded_json_is_read_too() -> None:  # the data-iiif-content form, as viewers accept
    assert contentstate.decode(SPEC_BODY) == Target(
        manifest=MANIFEST, canvas=CANVAS, region=(1000, 2000, 1000, 2000)
    )


@pytest.mark.parametrize(
    ("param", "message"),
    [
        ("", "empty"),
        ("javascript:alert(1)", "only http"),
        ("JavaScript:alert(1)//https://x", "only http"),
        ("data:text/html,<b>x</b>", "only http"),
        ("ftp://example.org/manifest", "only http"),
        ("https:///nohost", "only http"),
        ("https://example.org/a b", "spaces"),
        ("not*base64!", "neither an http"),
        ("abcde", "impossible length"),
        (contentstate.encode("not json at all {"), "decodes to text"),
        (contentstate.encode('{"id": '), "does not parse"),
        (base64.urlsafe_b64encode(b"%7B%ZZ").decode().rstrip("="), "starts no percent-escape"),
        (base64.urlsafe_b64encode(b"%7B%FF%7D").decode().rstrip("="), "not UTF-8"),
        (base64.urlsafe_b64encode("\u00e9".encode()).decode().rstrip("="), "does not decode"),
        (SECTION_3_1, "decodes to text"),
        (contentstate.encode(MANIFEST), "decodes to text"),
        ("x" * 9000, "longer than 8192"),
        (contentstate.encode({"id": CANVAS, "type": "Canvas"}), "needs partOf"),
        (contentstate.encode({"id": MANIFEST}), "no type"),
        (contentstate.encode({"id": "javascript:alert(1)", "type": "Manifest"}), "only http"),
        (
            contentstate.encode(
                {
                    "type": "Annotation",
                    "motivation": "bookmarking",
                    "target": {"id": MANIFEST, "type": "Manifest"},
                }
            ),
            "motivation contentState",
        ),
        (contentstate.encode({"type": "Annotation", "motivation": "contentState"}), "no target"),
        (
            contentstate.encode({"type": "Annotation", "motivation": "contentState", "target": []}),
            "empty list",
        ),
        (
            contentstate.encode({"id": "https://example.org/img.jpg", "type": "Image"}),
            "not supported",
        ),
        (
            contentstate.encode(
                {"id": f"{CANVAS}#xywh=percent:1,2,3,4", "type": "Canvas", "partOf": [MANIFEST]}
            ),
            "whole pixels",
        ),
        (
            contentstate.encode(
                {"id": f"{CANVAS}#xywh=1,2,0,4", "type": "Canvas", "partOf": [MANIFEST]}
            ),
            "zero width",
        ),
        (
            contentstate.encode(
                {
                    "type": "SpecificResource",
                    "source": {"id": CANVAS, "type": "Canvas", "partOf": [MANIFEST]},
                    "selector": {"type": "SvgSelector", "value": "<svg/>"},
                }
            ),
            "selector is not supported",
        ),
        (
            contentstate.encode(
                {"type": "SpecificResource", "source": {"id": MANIFEST, "type": "Manifest"}}
            ),
            "Canvas as source",
        ),
        (contentstate.encode("[]"), "empty list"),
        (contentstate.encode("[1]"), "neither an Annotation"),
        (contentstate.encode("[" * 5000 + "]" * 5000), "longer than"),
    ],
)
def test_refusals(param: str, message: str) -> None:
    with pytest.raises(ValueError, match=message):
        contentstate.decode(param)


def test_json_given_for_an_image_is_refused() -> None:
    with pytest.raises(ValueError, match="image service"):
        contentstate.decode(SPEC_ENCODED, kind="image")


def test_deep_json_is_refused_not_crashed() -> None:
    deep = "[" * 3000 + "]" * 3000
    with pytest.raises(ValueError):
        contentstate.decode(deep)


def test_percent_in_a_decoded_uri_is_decoded_once() -> None:
    body = json.dumps({"id": "https://example.org/a%2Fb/manifest", "type": "Manifest"})
    assert (
        contentstate.decode(contentstate.encode(body)).manifest
        == "https://example.org/a%2Fb/manifest"
    )
    assert unquote(contentstate.decode_text(contentstate.encode("%41"))) == "A"
