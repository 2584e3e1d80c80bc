"""The Presentation checks of tests/presentation_checks.py can pass and can fail.

3.0: trimmed IIIF Cookbook recipes (IIIF/cookbook-recipes, with ``{{ id.url }}`` resolved to
the published URLs) pass ``check_v3``, and a broken version of them for each rule group is
reported at the JSON path of the broken value. 2.1: a small manifest in the style of the
cookbook's 2.1 recipe passes ``check_v2``, and the mistakes iiif-prezi's reader refuses
(verified against iiif-prezi 0.3.0) are reported, as are its warnings.
"""

from __future__ import annotations

import copy
import re
from typing import Any

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from tests.presentation_checks import check_v2, check_v3

Node = dict[str, Any]

COOKBOOK = "https://iiif.io/api/cookbook/recipe"
IMAGES = "https://iiif.io/api/image/3.0/example/reference"
CONTEXT_3 = "http://iiif.io/api/presentation/3/context.json"


def _image_canvas(
    base: str, page: int, width: int, height: int, image: str, label: str | None = None
) -> Node:
    """One Canvas painted with one Image API 3 image, the cookbook's pattern."""
    canvas_id = f"{base}/canvas/p{page}"
    canvas: Node = {"id": canvas_id, "type": "Canvas"}
    if label is not None:
        canvas["label"] = {"en": [label]}
    canvas["height"] = height
    canvas["width"] = width
    canvas["items"] = [
        {
            "id": f"{base}/page/p{page}/1",
            "type": "AnnotationPage",
            "items": [
                {
                    "id": f"{base}/annotation/p{page:04d}-image",
                    "type": "Annotation",
                    "motivation": "painting",
                    "body": {
                        "id": f"{IMAGES}/{image}/full/max/0/default.jpg",
                        "type": "Image",
                        "format": "image/jpeg",
                        "height": height,
                        "width": width,
                        "service": [
                            {
                                "id": f"{IMAGES}/{image}",
                                "type": "ImageService3",
                                "profile": "level1",
                            }
                        ],
                    },
                    "target": canvas_id,
                }
            ],
        }
    ]
    return canvas


# recipe/0001-mvm-image/manifest.json
MVM = f"{COOKBOOK}/0001-mvm-image"
MVM_IMAGE: Node = {
    "@context": CONTEXT_3,
    "id": f"{MVM}/manifest.json",
    "type": "Manifest",
    "label": {"en": ["Single Image Example"]},
    "items": [
        {
            "id": f"{MVM}/canvas/p1",
            "type": "Canvas",
            "height": 1800,
            "width": 1200,
            "items": [
                {
                    "id": f"{MVM}/page/p1/1",
                    "type": "AnnotationPage",
                    "items": [
                        {
                            "id": f"{MVM}/annotation/p0001-image",
                            "type": "Annotation",
                            "motivation": "painting",
                            "body": {
                                "id": "https://iiif.io/api/presentation/2.1/example/fixtures"
                                "/resources/page1-full.png",
                                "type": "Image",
                                "format": "image/png",
                                "height": 1800,
                                "width": 1200,
                            },
                            "target": f"{MVM}/canvas/p1",
                        }
                    ],
                }
            ],
        }
    ],
}

# recipe/0009-book-1/manifest.json, first two canvases; the first image also gets the Image
# API 2 service of the Presentation 3.0 spec's service example (@id/@type, profile URI).
BOOK_BASE = f"{COOKBOOK}/0009-book-1"
GALLICA = "59d09e6773341f28ea166e9f3c1e674f-gallica_ark_12148_bpt6k1526005v"
BOOK: Node = {
    "@context": CONTEXT_3,
    "id": f"{BOOK_BASE}/manifest.json",
    "type": "Manifest",
    "label": {"en": ["Simple Manifest - Book"]},
    "behavior": ["paged"],
    "items": [
        _image_canvas(BOOK_BASE, 1, 3204, 4613, f"{GALLICA}_f18", "Blank page"),
        _image_canvas(BOOK_BASE, 2, 3186, 4612, f"{GALLICA}_f19", "Frontispiece"),
    ],
}
BOOK["items"][0]["items"][0]["items"][0]["body"]["service"].append(
    {
        "@id": "https://example.org/iiif2/image1/identifier",
        "@type": "ImageService2",
        "profile": "http://iiif.io/api/image/2/level2.json",
    }
)

# recipe/0024-book-4-toc/manifest.json, three canvases and the table of contents over them
TOC_BASE = f"{COOKBOOK}/0024-book-4-toc"
ETHIOPIC = "d3bbf5397c6df6b894c5991195c912ab"
TOC: Node = {
    "@context": CONTEXT_3,
    "id": f"{TOC_BASE}/manifest.json",
    "type": "Manifest",
    "label": {"en": ["Ethiopic Ms 10"]},
    "items": [
        _image_canvas(TOC_BASE, 1, 1768, 2504, f"{ETHIOPIC}-1-21198-zz001d8m41_774608_master"),
        _image_canvas(TOC_BASE, 2, 1792, 2512, f"{ETHIOPIC}-2-21198-zz001d8m5j_774612_master"),
        _image_canvas(TOC_BASE, 3, 1792, 2456, f"{ETHIOPIC}-3-21198-zz001d8tm5_775004_master"),
    ],
    "structures": [
        {
            "id": f"{TOC_BASE}/range/r0",
            "type": "Range",
            "label": {"en": ["Table of Contents"]},
            "items": [
                {
                    "id": f"{TOC_BASE}/range/r1",
                    "type": "Range",
                    "label": {"gez": ["Tabiba Tabiban [ጠቢበ ጠቢባን]"]},
                    "items": [
                        {"id": f"{TOC_BASE}/canvas/p1", "type": "Canvas"},
                        {"id": f"{TOC_BASE}/canvas/p2", "type": "Canvas"},
                    ],
                },
                {
                    "id": f"{TOC_BASE}/range/r2",
                    "type": "Range",
                    "label": {"gez": ["Arede'et [አርድዕት]"]},
                    "items": [
                        {
                            "id": f"{TOC_BASE}/range/r2/1",
                            "type": "Range",
                            "label": {"en": ["Monday"]},
                            "items": [{"id": f"{TOC_BASE}/canvas/p3", "type": "Canvas"}],
                        }
                    ],
                },
            ],
        }
    ],
}

# recipe/0032-collection/collection.json
COLLECTION_BASE = f"{COOKBOOK}/0032-collection"
COLLECTION: Node = {
    "@context": CONTEXT_3,
    "id": f"{COLLECTION_BASE}/collection.json",
    "type": "Collection",
    "label": {"en": ["Simple Collection Example"]},
    "items": [
        {
            "id": f"{COLLECTION_BASE}/manifest-01.json",
            "type": "Manifest",
            "label": {"en": ["The Gulf Stream"]},
        },
        {
            "id": f"{COLLECTION_BASE}/manifest-02.json",
            "type": "Manifest",
            "label": {"en": ["Northeaster"]},
        },
    ],
}

# recipe/0008-rights/manifest.json (the requiredStatement's HTML shortened)
RIGHTS_BASE = f"{COOKBOOK}/0008-rights"
RIGHTS: Node = {
    "@context": CONTEXT_3,
    "id": f"{RIGHTS_BASE}/manifest.json",
    "type": "Manifest",
    "label": {"en": ["Picture of Göttingen taken during the 2019 IIIF Conference"]},
    "summary": {
        "en": [
            '<p>Picture taken by the <a href="https://github.com/glenrobson">'
            "IIIF Technical Coordinator</a></p>"
        ]
    },
    "rights": "http://creativecommons.org/licenses/by-sa/3.0/",
    "requiredStatement": {
        "label": {"en": ["Attribution"]},
        "value": {
            "en": [
                "<span>Glen Robson, IIIF Technical Coordinator. "
                '<a href="https://creativecommons.org/licenses/by-sa/3.0">CC BY-SA 3.0</a> '
                '<img src="https://licensebuttons.net/l/by-sa/3.0/88x31.png"/></span>'
            ]
        },
    },
    "items": [
        _image_canvas(RIGHTS_BASE, 1, 4032, 3024, "918ecd18c2592080851777620de9bcb5-gottingen")
    ],
}

# recipe/0029-metadata-anywhere/manifest.json (two metadata entries, one canvas), with the
# linking properties of recipes 0230 (navDate), 0047 (homepage), 0046 (rendering),
# 0053 (seeAlso) and 0234 (provider, its logo service trimmed)
DESCRIBED_BASE = f"{COOKBOOK}/0029-metadata-anywhere"
DESCRIBED: Node = {
    "@context": CONTEXT_3,
    "id": f"{DESCRIBED_BASE}/manifest.json",
    "type": "Manifest",
    "label": {"en": ["John Dee performing an experiment before Queen Elizabeth I."]},
    "metadata": [
        {"label": {"en": ["Creator"]}, "value": {"en": ["Glindoni, Henry Gillard, 1852-1913"]}},
        {"label": {"en": ["Date"]}, "value": {"en": ["1800-1899"]}},
    ],
    "requiredStatement": {
        "label": {"en": ["Attribution"]},
        "value": {
            "en": [
                "Wellcome Collection. Attribution-NonCommercial 4.0 International (CC BY-NC 4.0)"
            ]
        },
    },
    "navDate": "1987-01-01T00:00:00Z",
    "homepage": [
        {
            "id": "https://www.getty.edu/art/collection/object/103RQQ",
            "type": "Text",
            "label": {"en": ["Home page at the Getty Museum Collection"]},
            "format": "text/html",
            "language": ["en"],
        }
    ],
    "rendering": [
        {
            "id": "https://fixtures.iiif.io/other/UCLA/kabuki_ezukushi_rtl.pdf",
            "type": "Text",
            "label": {"en": ["PDF version"]},
            "format": "application/pdf",
        }
    ],
    "seeAlso": [
        {
            "id": "https://fixtures.iiif.io/other/UCLA/ezukushi_mods.xml",
            "type": "Dataset",
            "label": {"en": ["MODS metadata"]},
            "format": "text/xml",
            "profile": "http://www.loc.gov/mods/v3",
        }
    ],
    "provider": [
        {
            "id": "https://id.loc.gov/authorities/n79055331",
            "type": "Agent",
            "label": {"en": ["UCLA Library"]},
            "homepage": [
                {
                    "id": "https://digital.library.ucla.edu/",
                    "type": "Text",
                    "label": {"en": ["UCLA Library Digital Collections"]},
                    "format": "text/html",
                    "language": ["en"],
                }
            ],
            "logo": [
                {
                    "id": "https://iiif.library.ucla.edu/iiif/2/UCLA-Library-Logo-double-line-2"
                    "/full/max/0/default.png",
                    "type": "Image",
                    "service": [
                        {
                            "id": "https://iiif.library.ucla.edu/iiif/2/"
                            "UCLA-Library-Logo-double-line-2",
                            "type": "ImageService3",
                            "profile": "level2",
                        }
                    ],
                }
            ],
        }
    ],
    "items": [
        _image_canvas(
            DESCRIBED_BASE,
            1,
            2000,
            1271,
            "421e65be2ce95439b3ad6ef1f2ab87a9-dee-natural",
            "Painting under natural light",
        )
    ],
}
DESCRIBED["items"][0]["metadata"] = [
    {"label": {"en": ["Description"]}, "value": {"en": ["The scene is the house at Mortlake."]}}
]

VALID_3 = {
    "0001-mvm-image": MVM_IMAGE,
    "0009-book-1": BOOK,
    "0024-book-4-toc": TOC,
    "0032-collection": COLLECTION,
    "0008-rights": RIGHTS,
    "0029-and-linking": DESCRIBED,
}

DROP = object()  # as a new value: remove the key
_STEP = re.compile(r"([^.\[\]]+)|\[(\d+)\]")


def _edit(doc: Node, path: str, value: Any) -> Node:
    """``doc`` with the value at ``path`` (the checks' path syntax) replaced; ``doc`` itself
    is left as it was."""
    doc = copy.deepcopy(doc)
    steps: list[str | int] = [key if key else int(index) for key, index in _STEP.findall(path)]
    parent: Any = doc
    for step in steps[:-1]:
        parent = parent[step]
    if value is DROP:
        del parent[steps[-1]]
    else:
        parent[steps[-1]] = value
    return doc


BODY = "items[0].items[0].items[0].body"
ANNO = "items[0].items[0].items[0]"

# (valid document, path to change, new value, the start of the problem it must cause)
BROKEN_3: list[tuple[str, str, Any, str]] = [
    # language maps
    ("0001-mvm-image", "label", "Single Image Example", "label: must be a language map"),
    ("0001-mvm-image", "label", {"en": "x"}, "label.en: must be an array of strings"),
    ("0001-mvm-image", "label", {}, "label: a language map needs at least one entry"),
    ("0001-mvm-image", "label", {"en_GB": ["x"]}, "label.en_GB: 'en_GB' is not a language"),
    ("0001-mvm-image", "label", {"en": ["<b>x</b>"]}, "label.en[0]: HTML is not allowed"),
    ("0001-mvm-image", "label", DROP, "label: required"),
    (
        "0008-rights",
        "summary.en[0]",
        "<p>unclosed <b>bold</p>",
        "summary.en[0]: HTML must be well-formed",
    ),
    (
        "0008-rights",
        "summary.en[0]",
        "<p>x<script>y</script></p>",
        "summary.en[0]: HTML must not contain <script>",
    ),
    ("0008-rights", "summary.en[0]", " <p>x</p>", "summary.en[0]: HTML must have no whitespace"),
    # metadata and requiredStatement
    ("0029-and-linking", "metadata[0].value", "Glindoni", "metadata[0].value: must be a language"),
    ("0029-and-linking", "metadata[1].value", DROP, "metadata[1].value: required"),
    ("0029-and-linking", "metadata", {"label": {}}, "metadata: must be an array"),
    ("0008-rights", "requiredStatement.label", DROP, "requiredStatement.label: required"),
    ("0029-and-linking", "items[0].metadata[0].label", "D", "items[0].metadata[0].label: must be"),
    # rights and navDate
    (
        "0008-rights",
        "rights",
        "https://creativecommons.org/licenses/by-sa/3.0/",
        "rights: must be an http:// Creative Commons",
    ),
    ("0008-rights", "rights", "http://example.org/licence", "rights: must be an http://"),
    ("0029-and-linking", "navDate", "1987-01-01T00:00:00", "navDate: must be an xsd:dateTime"),
    ("0029-and-linking", "navDate", "1987", "navDate: must be an xsd:dateTime"),
    ("0029-and-linking", "navDate", "1987-02-30T00:00:00Z", "navDate: is not a real date"),
    ("0029-and-linking", f"{ANNO}.navDate", "1987-01-01T00:00:00Z", f"{ANNO}.navDate: not allowed"),
    # @context
    ("0001-mvm-image", "@context", DROP, "@context: required"),
    (
        "0001-mvm-image",
        "@context",
        [CONTEXT_3, "http://example.org/ext.json"],
        f"@context: {CONTEXT_3} must be the last context",
    ),
    (
        "0001-mvm-image",
        "@context",
        "http://iiif.io/api/presentation/2/context.json",
        "@context: must be http://iiif.io/api/presentation/3/context.json",
    ),
    ("0001-mvm-image", "items[0].@context", CONTEXT_3, "items[0].@context: only the top-level"),
    (
        "0009-book-1",
        f"{BODY}.service[0].@context",
        "http://iiif.io/api/image/3/context.json",
        f"{BODY}.service[0].@context: only the top-level",
    ),
    # types and ids
    ("0001-mvm-image", "type", "Canvas", "type: the top-level resource must be a Manifest"),
    ("0001-mvm-image", "items[0].type", "canvas", "items[0].type: must be Canvas"),
    (
        "0001-mvm-image",
        "items[0].items[0].type",
        "Page",
        "items[0].items[0].type: must be AnnotationPage",
    ),
    ("0001-mvm-image", f"{ANNO}.type", DROP, f"{ANNO}.type: required"),
    ("0001-mvm-image", f"{BODY}.type", "Picture", f"{BODY}.type: must be one of Dataset"),
    ("0001-mvm-image", "id", "urn:example:1", "id: must be an http(s) URI"),
    ("0001-mvm-image", "id", DROP, "id: required"),
    ("0001-mvm-image", "items[0].items[0].id", "page 1", "items[0].items[0].id: must be an http"),
    ("0001-mvm-image", "items[0].id", f"{MVM}/canvas#p1", "items[0].id: a Canvas id must not"),
    ("0001-mvm-image", f"{BODY}.id", f"{MVM}/a b.png", f"{BODY}.id: has unencoded whitespace"),
    # Manifest and Canvas requirements
    ("0001-mvm-image", "items", [], "items: a Manifest needs at least one Canvas"),
    ("0001-mvm-image", "items", DROP, "items: required"),
    ("0001-mvm-image", "items[0].height", DROP, "items[0].height: required with width"),
    ("0001-mvm-image", "items[0].width", 0, "items[0].width: must be a positive integer"),
    ("0001-mvm-image", "items[0].width", "1200", "items[0].width: must be a positive integer"),
    ("0001-mvm-image", "items[0].items", DROP, "items[0].items: required"),
    ("0009-book-1", "items[1].id", f"{BOOK_BASE}/canvas/p1", "items[1].id: two Canvases"),
    ("0001-mvm-image", "format", "application/ld+json", "format: not a Manifest property"),
    ("0001-mvm-image", "foo", "bar", "foo: not a Manifest property"),
    ("0001-mvm-image", "items[0].format", "image/png", "items[0].format: not allowed on a Canvas"),
    (
        "0001-mvm-image",
        "items[0].items[0].summary",
        {"en": ["x"]},
        "items[0].items[0].summary: not an AnnotationPage property",
    ),
    # annotations
    ("0001-mvm-image", f"{ANNO}.target", DROP, f"{ANNO}.target: required"),
    ("0001-mvm-image", f"{ANNO}.target", f"{MVM}/canvas/p2", f"{ANNO}.target: must be the Canvas"),
    ("0001-mvm-image", f"{ANNO}.motivation", "commenting", f"{ANNO}.motivation: must be painting"),
    ("0001-mvm-image", f"{ANNO}.motivation", DROP, f"{ANNO}.motivation: required"),
    ("0001-mvm-image", f"{ANNO}.body", DROP, f"{ANNO}.body: required"),
    (
        "0001-mvm-image",
        f"{ANNO}.format",
        "image/png",
        f"{ANNO}.format: not allowed on an Annotation",
    ),
    ("0001-mvm-image", f"{BODY}.format", "png", f"{BODY}.format: must be a media type"),
    ("0001-mvm-image", f"{BODY}.height", -1, f"{BODY}.height: must be a positive integer"),
    # services
    ("0009-book-1", f"{BODY}.service", {"id": "x"}, f"{BODY}.service: must be an array"),
    (
        "0009-book-1",
        f"{BODY}.service[1]",
        {
            "id": "https://example.org/iiif2/image1/identifier",
            "@type": "ImageService2",
            "profile": "http://iiif.io/api/image/2/level2.json",
        },
        f"{BODY}.service[1].id: an ImageService2 uses @id, not id",
    ),
    ("0009-book-1", f"{BODY}.service[1].@type", DROP, f"{BODY}.service[1].@type: required"),
    (
        "0009-book-1",
        f"{BODY}.service[1].profile",
        "level2",
        f"{BODY}.service[1].profile: must be an Image API 2 compliance",
    ),
    (
        "0009-book-1",
        f"{BODY}.service[0]",
        {"@id": f"{IMAGES}/{GALLICA}_f18", "@type": "ImageService3", "profile": "level1"},
        f"{BODY}.service[0].@id: an ImageService3 uses id, not @id",
    ),
    (
        "0009-book-1",
        f"{BODY}.service[0].profile",
        "http://iiif.io/api/image/3/level1.json",
        f"{BODY}.service[0].profile: must be level0, level1 or level2",
    ),
    (
        "0009-book-1",
        f"{BODY}.service[0].profile",
        ["level1"],
        f"{BODY}.service[0].profile: must be a string",
    ),
    (
        "0009-book-1",
        f"{BODY}.id",
        f"{IMAGES}/{GALLICA}_f18",
        f"{BODY}.id: must be an image URL, not the bare image service URI",
    ),
    # behavior and viewingDirection
    (
        "0009-book-1",
        "behavior",
        ["paged", "continuous"],
        "behavior: continuous and paged are disjoint",
    ),
    ("0009-book-1", "behavior", "paged", "behavior: must be an array"),
    ("0009-book-1", "behavior", ["facing-pages"], "behavior[0]: 'facing-pages' is not a behavior"),
    (
        "0009-book-1",
        "items[0].behavior",
        ["paged"],
        "items[0].behavior[0]: 'paged' is not a behavior of a Canvas",
    ),
    (
        "0009-book-1",
        "items[0].behavior",
        ["facing-pages", "non-paged"],
        "items[0].behavior: facing-pages and non-paged are disjoint",
    ),
    ("0009-book-1", "viewingDirection", "rtl", "viewingDirection: unknown value 'rtl'"),
    (
        "0009-book-1",
        "items[0].viewingDirection",
        "left-to-right",
        "items[0].viewingDirection: not allowed on a Canvas",
    ),
    # linking properties, thumbnail, provider
    ("0029-and-linking", "homepage[0].label", DROP, "homepage[0].label: required"),
    (
        "0029-and-linking",
        "homepage",
        {"id": "https://x.org/", "type": "Text"},
        "homepage: must be an array",
    ),
    (
        "0029-and-linking",
        "homepage[0].language",
        ["en GB"],
        "homepage[0].language[0]: not a language",
    ),
    ("0029-and-linking", "rendering[0].label", DROP, "rendering[0].label: required"),
    ("0029-and-linking", "rendering[0].id", DROP, "rendering[0].id: required"),
    ("0029-and-linking", "seeAlso[0].type", DROP, "seeAlso[0].type: required"),
    ("0029-and-linking", "seeAlso[0].format", "xml", "seeAlso[0].format: must be a media type"),
    ("0029-and-linking", "partOf", [{"type": "Collection"}], "partOf[0].id: required"),
    (
        "0001-mvm-image",
        "thumbnail",
        {"id": f"{MVM}/t.png", "type": "Image"},
        "thumbnail: must be an array",
    ),
    ("0001-mvm-image", "thumbnail", [{"type": "Image"}], "thumbnail[0].id: required"),
    ("0029-and-linking", "provider[0].label", DROP, "provider[0].label: required"),
    ("0029-and-linking", "provider[0].type", "Organization", "provider[0].type: must be Agent"),
    (
        "0029-and-linking",
        "provider[0].logo[0].type",
        "Text",
        "provider[0].logo[0].type: must be Image",
    ),
    ("0029-and-linking", "provider", {"id": "https://x.org/"}, "provider: must be an array"),
    # Ranges and start
    ("0024-book-4-toc", "structures[0].items", [], "structures[0].items: a Range needs at least"),
    ("0024-book-4-toc", "structures[0].items", DROP, "structures[0].items: required"),
    (
        "0024-book-4-toc",
        "structures[0].items[0].items[1].id",
        f"{TOC_BASE}/canvas/p9",
        "structures[0].items[0].items[1].id: names no Canvas of this Manifest",
    ),
    (
        "0024-book-4-toc",
        "structures[0].items[1].items[0].items[0]",
        {"type": "Canvas"},
        "structures[0].items[1].items[0].items[0].id: required",
    ),
    (
        "0024-book-4-toc",
        "structures[0].items[0].items[0].type",
        "Annotation",
        "structures[0].items[0].items[0].type: must be Range, Canvas or SpecificResource",
    ),
    (
        "0024-book-4-toc",
        "structures[0].items[1].behavior",
        ["sequence"],
        "structures[0].items[1].behavior: a sequence Range belongs directly in structures",
    ),
    (
        "0024-book-4-toc",
        "structures[0].items[0].items[0]",
        {"type": "SpecificResource", "selector": {"type": "FragmentSelector", "value": "t=1"}},
        "structures[0].items[0].items[0].source: required",
    ),
    ("0024-book-4-toc", "structures[0].type", "Ranges", "structures[0].type: must be Range"),
    ("0024-book-4-toc", "structures", {"id": f"{TOC_BASE}/r"}, "structures: must be an array"),
    (
        "0024-book-4-toc",
        "start",
        {"id": f"{TOC_BASE}/canvas/p7", "type": "Canvas"},
        "start.id: names no Canvas of this Manifest",
    ),
    (
        "0024-book-4-toc",
        "start",
        {"id": f"{TOC_BASE}/range/r1", "type": "Range"},
        "start.type: must be Canvas or SpecificResource",
    ),
    (
        "0024-book-4-toc",
        "items[0].start",
        {"id": f"{TOC_BASE}/canvas/p1"},
        "items[0].start: not allowed on a Canvas",
    ),
    ("0024-book-4-toc", "items[0].structures", [], "items[0].structures: not allowed"),
    # Collections
    ("0032-collection", "label", DROP, "label: required"),
    ("0032-collection", "items", DROP, "items: required"),
    ("0032-collection", "items[0].label", DROP, "items[0].label: required"),
    ("0032-collection", "items[0].id", DROP, "items[0].id: required"),
    ("0032-collection", "items[1].items", [], "items[1].items: a Collection references Manifests"),
    ("0032-collection", "items[0].type", "Canvas", "items[0].type: must be Manifest or Collection"),
    (
        "0032-collection",
        "items[1]",
        {
            "id": f"{COLLECTION_BASE}/sub",
            "type": "Collection",
            "label": {"en": ["Sub"]},
            "items": [],
            "services": [],
        },
        "items[1].services: only on the top-most resource",
    ),
    (
        "0032-collection",
        "start",
        {"id": f"{COLLECTION_BASE}/c", "type": "Canvas"},
        "start: not allowed on a Collection",
    ),
]


@pytest.mark.parametrize("name", sorted(VALID_3))
def test_cookbook_recipes_are_valid(name: str) -> None:
    assert check_v3(VALID_3[name]) == []


@pytest.mark.parametrize(
    ("name", "path", "value", "expected"),
    BROKEN_3,
    ids=[f"{name}:{path}" for name, path, _, _ in BROKEN_3],
)
def test_each_broken_version_is_reported_at_its_path(
    name: str, path: str, value: Any, expected: str
) -> None:
    problems = check_v3(_edit(VALID_3[name], path, value))
    assert any(p.startswith(expected) for p in problems), problems


def test_every_problem_is_found_and_names_a_path() -> None:
    doc = _edit(MVM_IMAGE, "label", "plain")
    doc = _edit(doc, "items[0].height", DROP)
    doc = _edit(doc, f"{ANNO}.target", DROP)
    doc = _edit(doc, "rights", "https://creativecommons.org/licenses/by/4.0/")
    problems = check_v3(doc)
    assert [p.split(":", 1)[0] for p in problems] == [
        "label",
        "rights",
        "items[0].height",
        f"{ANNO}.target",
    ]


def _paths(value: Any, path: str = "") -> list[str]:
    """Every path in a document, in the checks' syntax."""
    found = [path] if path else []
    if isinstance(value, dict):
        for key, sub in value.items():
            found += _paths(sub, f"{path}.{key}" if path else key)
    elif isinstance(value, list):
        for i, sub in enumerate(value):
            found += _paths(sub, f"{path}[{i}]")
    return found


PLACES = [(name, path) for name, doc in sorted(VALID_3.items()) for path in _paths(doc)]
JSON = st.recursive(
    st.none()
    | st.booleans()
    | st.integers()
    | st.floats(allow_nan=False)
    | st.text(max_size=4)
    | st.sampled_from(["Canvas", "Image", "ImageService2", "Range", "painting", "https://x.org/"]),
    lambda inner: (
        st.lists(inner, max_size=3)
        | st.dictionaries(st.sampled_from(["id", "type", "@id", "items", "label", "en"]), inner)
    ),
    max_leaves=6,
)


@settings(max_examples=300, deadline=None, database=None)
@given(st.sampled_from(PLACES), JSON)
def test_any_value_anywhere_gives_problems_not_exceptions(
    place: tuple[str, str], value: Any
) -> None:
    name, path = place
    problems = check_v3(_edit(VALID_3[name], path, value))
    assert all(isinstance(p, str) and ": " in p for p in problems)


def test_a_document_that_is_not_an_object_is_refused() -> None:
    assert check_v3([MVM_IMAGE]) == ["(document): must be a JSON object, got list"]  # type: ignore[arg-type]


def test_the_spec_allows_what_the_checks_must_not_refuse() -> None:
    """Context arrays ending in the 3 context, offsets in navDate, fragments in targets,
    ranges over canvas parts, start on a SpecificResource, sub-collections embedded."""
    doc = _edit(MVM_IMAGE, "@context", ["http://iiif.io/api/extension/navplace/context.json"])
    doc["@context"].append(CONTEXT_3)
    doc["navDate"] = "1856-01-01T00:00:00+01:00"
    doc = _edit(doc, f"{ANNO}.target", f"{MVM}/canvas/p1#xywh=0,0,10,10")
    canvas = f"{MVM}/canvas/p1"
    part = {
        "type": "SpecificResource",
        "source": canvas,
        "selector": {"type": "PointSelector", "t": 14.5},
    }
    doc["start"] = part
    doc["structures"] = [
        {"id": f"{MVM}/range/1", "type": "Range", "behavior": ["sequence"], "items": [part]},
        {"id": f"{MVM}/range/2", "type": "Range", "items": [{"id": canvas, "type": "Canvas"}]},
    ]
    assert check_v3(doc) == []
    nested = copy.deepcopy(COLLECTION)
    nested["items"].append(
        {"id": f"{COLLECTION_BASE}/sub", "type": "Collection", "label": {"none": ["Sub"]}}
    )
    nested["items"].append({**copy.deepcopy(COLLECTION), "id": f"{COLLECTION_BASE}/embedded"})
    del nested["items"][-1]["@context"]
    assert check_v3(nested) == []


# --- Presentation 2.1 ----------------------------------------------------------------------

# In the style of recipe/0057-publishing-v2-and-v3/manifest-v2.json, with an Image API 2
# service, a thumbnail and the 2.1 properties a generator adds.
V2_BASE = f"{COOKBOOK}/0057-publishing-v2-and-v3"
V2_IMAGE = "https://example.org/iiif/2/page1"
VALID_21: Node = {
    "@context": "http://iiif.io/api/presentation/2/context.json",
    "@id": f"{V2_BASE}/manifest-v2.json",
    "@type": "sc:Manifest",
    "label": "IIIF Presentation Version 3 Minimum Viable Manifest",
    "description": "<p>A <b>short</b> description</p>",
    "license": "http://creativecommons.org/licenses/by/4.0/",
    "navDate": "1987-01-01T00:00:00Z",
    "rendering": {"@id": f"{V2_BASE}/book.pdf", "label": "PDF", "format": "application/pdf"},
    "thumbnail": {
        "@id": f"{V2_IMAGE}/full/100,/0/default.jpg",
        "@type": "dctypes:Image",
        "service": {
            "@context": "http://iiif.io/api/image/2/context.json",
            "@id": V2_IMAGE,
            "profile": "http://iiif.io/api/image/2/level1.json",
        },
    },
    "sequences": [
        {
            "@id": f"{V2_BASE}/sequences/s1",
            "@type": "sc:Sequence",
            "label": "Default",
            "canvases": [
                {
                    "@id": f"{V2_BASE}/canvas/p1",
                    "@type": "sc:Canvas",
                    "label": "p. 1",
                    "height": 1800,
                    "width": 1200,
                    "images": [
                        {
                            "@id": f"{V2_BASE}/annotation/p0001-image",
                            "@type": "oa:Annotation",
                            "motivation": "sc:painting",
                            "resource": {
                                "@id": f"{V2_IMAGE}/full/full/0/default.jpg",
                                "@type": "dctypes:Image",
                                "format": "image/jpeg",
                                "height": 1800,
                                "width": 1200,
                                "service": {
                                    "@context": "http://iiif.io/api/image/2/context.json",
                                    "@id": V2_IMAGE,
                                    "profile": "http://iiif.io/api/image/2/level1.json",
                                },
                            },
                            "on": f"{V2_BASE}/canvas/p1",
                        }
                    ],
                }
            ],
        }
    ],
}
CANVAS_21 = "sequences[0].canvases[0]"
IMAGE_21 = f"{CANVAS_21}.images[0]"

# (path, new value, the start of the problem); what iiif-prezi 0.3.0 raises or warns about
BROKEN_21: list[tuple[str, Any, str]] = [
    ("label", DROP, "RequirementError: sc:Manifest['label'] not present and required"),
    ("label", {"en": ["x"]}, "DataError: Missing @value for string"),
    (f"{CANVAS_21}.height", DROP, "RequirementError: sc:Canvas['height'] not present"),
    (f"{CANVAS_21}.width", "1200", "DataError: sc:Canvas['width'] does not accept a str"),
    (f"{CANVAS_21}.@type", "Canvas", "StructuralError: Unknown resource class Canvas"),
    (f"{CANVAS_21}.@type", "sc:Page", "StructuralError: Unknown resource class sc:Page"),
    (f"{CANVAS_21}.@id", DROP, "RequirementError: Canvases must have a real identity"),
    (f"{CANVAS_21}.images", {"@type": "oa:Annotation"}, "StructuralError: sc:Canvas['images']"),
    (f"{IMAGE_21}.on", DROP, "StructuralError: oa:Annotation['on'] not present"),
    (f"{IMAGE_21}.motivation", DROP, "RequirementError: oa:Annotation['motivation'] not"),
    (f"{IMAGE_21}.resource", DROP, "StructuralError: oa:Annotation['resource'] not present"),
    (f"{IMAGE_21}.resource.service.@id", DROP, "RequirementError: Services must have an http"),
    (
        f"{IMAGE_21}.resource.service.@context",
        "http://iiif.io/api/image/1/context.json",
        "JsonLdError: ",  # no local document for that context: refused, not fetched
    ),
    ("sequences", DROP, "StructuralError: sc:Manifest['sequences'] not present"),
    ("@id", "urn:x:1", "RequirementError: The identifier 'urn:x:1' is not an HTTP(S) URI"),
    ("@context", DROP, "SerializationError: Top level resource MUST have @context"),
    ("@context", CONTEXT_3, "SerializationError: Top level @context is not known"),
    ("viewingDirection", "rtl", "DataError: 'rtl' not a known viewing direction"),
    ("description", "<p>x<script>y</script></p>", "DataError: HTML vulnerability 'script'"),
    ("viewingHint", "sideways", "warning: 'sideways' not a known viewing hint"),
    ("foo", "bar", "warning: Setting non-standard field 'foo' on resource of type 'sc:Manifest'"),
    ("description", "<div>x</div>", "warning: Risky HTML tag 'div'"),
    # checked here, not by the reader
    ("@type", "sc:Canvas", "@type: must be sc:Manifest or sc:Collection"),
    ("navDate", "1987", "navDate: must be YYYY-MM-DDThh:mm:ssZ"),
]


def test_a_21_manifest_passes() -> None:
    assert check_v2(VALID_21) == []


def test_a_21_collection_passes() -> None:
    collection = {
        "@context": "http://iiif.io/api/presentation/2/context.json",
        "@id": f"{V2_BASE}/collection.json",
        "@type": "sc:Collection",
        "label": "Top",
        "manifests": [{"@id": VALID_21["@id"], "@type": "sc:Manifest", "label": "A book"}],
    }
    assert check_v2(collection) == []


@pytest.mark.parametrize(
    ("path", "value", "expected"), BROKEN_21, ids=[path for path, _, _ in BROKEN_21]
)
def test_what_the_21_reader_refuses_is_reported(path: str, value: Any, expected: str) -> None:
    problems = check_v2(_edit(VALID_21, path, value))
    assert any(p.startswith(expected) for p in problems), problems
