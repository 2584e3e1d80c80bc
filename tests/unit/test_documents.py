"""Manifests and collections as plain data: valid against the rules the official validator
applies (3.0: its JSON Schema's rules, rewritten in tests/presentation_checks.py; 2.1:
iiif-prezi's reader), with ids under the public URLs and sizes from the image facts."""

from __future__ import annotations

from typing import Any

from iiif_shim.auth.settings import DegradedSettings, PolicySettings
from iiif_shim.iiif.profile import Format
from iiif_shim.presentation.documents import Builder, Picture, Urls, thumb_size
from iiif_shim.presentation.records import build_record
from iiif_shim.presentation.settings import PresentationSettings, ProviderSettings
from tests.presentation_checks import check_v2, check_v3

URLS = Urls(site="https://example.org", iiif="https://example.org/iiif")
SETTINGS = PresentationSettings(
    language="en",
    provider=ProviderSettings(
        label="Example Library",
        homepage="https://library.example.org",
        logo="https://library.example.org/logo.png",
    ),
)


def _pictures(*sizes: tuple[int, int]) -> list[Picture]:
    return [
        Picture(f"folder/p{i + 1}", w, h, (w, h), thumb_size(w, h, 256))
        for i, (w, h) in enumerate(sizes)
    ]


RECORD = build_record(
    "ark:/1/book",
    "scans",
    {
        "label": "A book",
        "summary": "<b>not markup</b>",
        "rights": "http://creativecommons.org/licenses/by/4.0/",
        "required_statement": "Example Library",
        "nav_date": "1887",
        "behavior": "paged",
        "viewing_direction": "left-to-right",
        "see_also": "https://example.org/record.json",
    },
    [
        {"image": "folder/p1", "canvas_label": "Cover", "range": "Cover"},
        {"image": "folder/p2", "range": "Text"},
        {"image": "folder/p3", "range": "Text"},
    ],
    [("Creator", "Someone"), ("Date", "1887")],
)
PICTURES = _pictures((1200, 1600), (1000, 1400), (3000, 2000))


def test_a_manifest_is_valid_and_names_what_the_shim_serves() -> None:
    doc = Builder(SETTINGS, URLS, "Samples").manifest(RECORD, PICTURES)
    assert check_v3(doc) == []
    assert doc["id"] == "https://example.org/iiif/presentation/3/ark:%2F1%2Fbook/manifest"
    canvas = doc["items"][2]
    assert (canvas["width"], canvas["height"]) == (3000, 2000)
    annotation = canvas["items"][0]["items"][0]
    assert annotation["target"] == canvas["id"]
    body = annotation["body"]
    assert body["id"] == "https://example.org/iiif/3/folder%2Fp3/full/max/0/default.jpg"
    services = {s.get("type") or s.get("@type"): s for s in body["service"]}
    assert services["ImageService3"]["id"] == "https://example.org/iiif/3/folder%2Fp3"
    assert services["ImageService2"]["@id"] == "https://example.org/iiif/2/folder%2Fp3"
    thumb = canvas["thumbnail"][0]
    assert (thumb["width"], thumb["height"]) == (256, 171)
    assert thumb["id"].endswith("/full/256,171/0/default.jpg")
    assert doc["summary"] == {"en": ["<span>&lt;b&gt;not markup&lt;/b&gt;</span>"]}
    assert [r["label"] for r in doc["structures"]] == [{"en": ["Cover"]}, {"en": ["Text"]}]
    assert doc["homepage"][0]["id"] == "https://example.org/objects/ark:%2F1%2Fbook"
    assert doc["rendering"][0]["format"] == "application/pdf"
    assert doc["provider"][0]["logo"] == [
        {"id": "https://library.example.org/logo.png", "type": "Image", "format": "image/png"}
    ]
    assert doc["partOf"][0]["id"] == "https://example.org/iiif/presentation/3/collection/scans"
    ids = [c["id"] for c in doc["items"]]
    assert len(set(ids)) == 3 and all("#" not in i for i in ids)


def test_the_checks_catch_what_the_builder_must_never_make() -> None:
    doc: dict[str, Any] = Builder(SETTINGS, URLS, "Samples").manifest(RECORD, PICTURES)
    doc["label"] = "plain string"
    assert check_v3(doc)


def test_a_manifest_2_is_read_by_iiif_prezi() -> None:
    doc = Builder(SETTINGS, URLS, "Samples").manifest_2(RECORD, PICTURES)
    assert check_v2(doc) == []
    canvases = doc["sequences"][0]["canvases"]
    assert [c["width"] for c in canvases] == [1200, 1000, 3000]
    assert canvases[0]["images"][0]["resource"]["service"]["@id"].endswith("/2/folder%2Fp1")


def test_collections_are_valid() -> None:
    builder = Builder(SETTINGS, URLS, "Samples")
    top = builder.top_collection(["scans", "catalogue"])
    assert check_v3(top) == []
    one = builder.collection("scans", [("book", "A book", PICTURES[0]), ("x", "x", None)])
    assert check_v3(one) == []
    assert one["items"][0]["thumbnail"][0]["width"] == 192
    assert check_v2(builder.top_collection_2(["scans"])) == []
    assert check_v2(builder.collection_2("scans", [("book", "A book", PICTURES[0])])) == []


def test_a_language_of_none_and_no_provider_are_valid() -> None:
    doc = Builder(PresentationSettings(), URLS, "Samples").manifest(RECORD, PICTURES)
    assert doc["label"] == {"none": ["A book"]} and "provider" not in doc
    assert check_v3(doc) == []


def test_a_manifest_of_restricted_images_stays_valid_and_declares_their_services() -> None:
    """Restricted pictures (their route's policy): their image services carry the probe and
    the Auth 1.0 service, thumbnails come from the degraded tier or are left out, no original
    is offered, and the documents still pass the validators' rules."""
    policies = {
        "staff": PolicySettings(kind="clickthrough", label="Staff", degraded=DegradedSettings(200)),
        "vault": PolicySettings(kind="clickthrough", label="Vault"),
    }
    first, second, third = PICTURES
    pictures = [
        Picture(first.identifier, 1200, 1600, (1200, 1600), first.thumb_size, Format.JPG, "staff"),
        Picture(second.identifier, 1000, 1400, (1000, 1400), second.thumb_size, None, "vault"),
        third,
    ]
    builder = Builder(SETTINGS, URLS, "Samples", policies)
    doc = builder.manifest(RECORD, pictures, ("staff", "vault"))
    assert check_v3(doc) == []
    assert doc["@context"][0] == "http://iiif.io/api/auth/2/context.json"
    staff, vault, public = doc["items"]
    service = staff["items"][0]["items"][0]["body"]["service"][0]
    assert [s.get("type") or s.get("@type") for s in service["service"]] == [
        "AuthProbeService2",
        "AuthCookieService1",
    ]
    assert service["service"][0]["id"] == "https://example.org/auth/probe/image/folder%2Fp1"
    assert staff["thumbnail"][0]["id"] == (
        "https://example.org/iiif/degraded/3/folder%2Fp1/full/150,200/0/default.jpg"
    )
    assert "rendering" not in staff and "thumbnail" not in vault and "thumbnail" in public
    assert doc["thumbnail"] == staff["thumbnail"]
    assert "rendering" not in doc  # a PDF needing two policies: no Auth 2.0 client gets it
    one = builder.manifest(RECORD, pictures, ("staff",))
    assert (
        one["rendering"][0]["service"][0]["id"]
        == "https://example.org/auth/probe/pdf/ark:%2F1%2Fbook"
    )
    two = builder.manifest_2(RECORD, pictures, ("staff",))
    canvas = two["sequences"][0]["canvases"][0]
    probe, cookie = canvas["images"][0]["resource"]["service"]["service"]
    assert probe["@context"] == "http://iiif.io/api/auth/2/context.json"
    assert cookie["@context"] == "http://iiif.io/api/auth/1/context.json"
    assert two["rendering"]["service"]["type"] == "AuthProbeService2"
    # iiif-prezi's 2.1 reader wants `@id` in every service; the Auth 2.0 probe has `id` (its
    # own @context maps it), as the spec writes it: that one complaint is the reader's
    assert check_v2(two) in ([], ["RequirementError: Services must have an http[s] URI"])
    plain = {**two, "rendering": {k: v for k, v in two["rendering"].items() if k != "service"}}
    for item in plain["sequences"][0]["canvases"]:
        item["images"][0]["resource"]["service"].pop("service", None)
    assert check_v2(plain) == []
