"""search/documents.py: the Search 2.0 and 1.0 answers, autocomplete, and the text of canvases,
from fabricated hits and pages: the shapes of the specifications' examples (their keys, types,
contexts and motivations), paging, a hit over two lines, plain text targeting the whole
canvas, stable ids, and the canvases of the manifest the service belongs to."""

from __future__ import annotations

from typing import Any

import pytest

from iiif_shim.base.errors import NotFound
from iiif_shim.model.text import Hit, Line, PageText, Span, TextFormat, Word
from iiif_shim.presentation.documents import Urls
from iiif_shim.search import documents
from iiif_shim.search.documents import Asked
from iiif_shim.search.index import StoredPage

URLS = Urls(site="https://example.org", iiif="https://example.org/iiif")
OBJ = "book 1"  # a name that needs percent-encoding
ENC = "book%201"
CANVAS_3 = f"https://example.org/iiif/presentation/3/{ENC}/canvas"
CANVAS_2 = f"https://example.org/iiif/presentation/2/{ENC}/canvas"
SEARCH_2 = f"https://example.org/iiif/search/2/{ENC}"
SEARCH_1 = f"https://example.org/iiif/search/1/{ENC}"


def hit(canvas: int, line: int, first: int, last: int, match: str, **kw: Any) -> Hit:
    box = kw.pop("box", (10 * first, 20 * line, 10 * (last - first + 1), 12))
    return Hit(canvas, (Span(line, first, last, box),), kw.get("before", "a "), match,
               kw.get("after", " z"))  # fmt: skip


def keys(doc: dict[str, Any]) -> set[str]:
    return set(doc)


# --- Search 2.0 ---------------------------------------------------------------------------------


def test_annotation_page_has_the_shape_of_the_spec_examples() -> None:
    hits = [hit(0, 2, 1, 1, "birds", before="There are two ", after=" in the bush")]
    doc = documents.annotation_page(URLS, OBJ, "3", Asked(q="bird"), hits, 50, {})
    # 4.2.2 paging example + 4.3.1 match context example
    assert keys(doc) == {
        "@context", "id", "type", "partOf", "startIndex", "items", "annotations",
    }  # fmt: skip
    assert doc["@context"] == "http://iiif.io/api/search/2/context.json"
    assert doc["type"] == "AnnotationPage"
    assert doc["id"] == f"{SEARCH_2}?q=bird&page=1"
    assert doc["partOf"] == {
        "id": f"{SEARCH_2}?q=bird",
        "type": "AnnotationCollection",
        "total": 1,
        "first": {"id": f"{SEARCH_2}?q=bird&page=1", "type": "AnnotationPage"},
        "last": {"id": f"{SEARCH_2}?q=bird&page=1", "type": "AnnotationPage"},
    }
    assert doc["startIndex"] == 0
    [item] = doc["items"]
    item_id = f"https://example.org/iiif/text/{ENC}/1/3/line/3/words/2-2"
    assert item == {
        "id": item_id,
        "type": "Annotation",
        "motivation": "painting",
        "body": {"type": "TextualBody", "value": "birds", "format": "text/plain"},
        "target": f"{CANVAS_3}/1#xywh=10,40,10,12",
    }
    [page] = doc["annotations"]
    assert keys(page) == {"type", "items"} and page["type"] == "AnnotationPage"
    [context] = page["items"]
    assert context == {
        "id": f"https://example.org/iiif/text/{ENC}/1/3/hit/3.2-2",
        "type": "Annotation",
        "motivation": "contextualizing",
        "target": {
            "type": "SpecificResource",
            "source": item_id,
            "selector": [
                {
                    "type": "TextQuoteSelector",
                    "prefix": "There are two ",
                    "exact": "birds",
                    "suffix": " in the bush",
                }
            ],
        },
    }


def test_pages_of_results_link_each_other_and_count_from_zero() -> None:
    hits = [hit(c, 0, 0, 0, f"w{c}") for c in range(7)]
    asked = Asked(q="w")
    pages = [
        documents.annotation_page(URLS, OBJ, "3", Asked(q="w", page=n), hits, 3, {})
        for n in (1, 2, 3)
    ]
    assert [len(p["items"]) for p in pages] == [3, 3, 1]
    assert [p["startIndex"] for p in pages] == [0, 3, 6]
    assert [p["id"] for p in pages] == [f"{SEARCH_2}?q=w&page={n}" for n in (1, 2, 3)]
    assert {p["partOf"]["total"] for p in pages} == {7}
    assert {p["partOf"]["last"]["id"] for p in pages} == {f"{SEARCH_2}?q=w&page=3"}
    assert "prev" not in pages[0] and pages[0]["next"]["id"] == pages[1]["id"]
    assert pages[1]["prev"]["id"] == pages[0]["id"] and pages[1]["next"]["id"] == pages[2]["id"]
    assert "next" not in pages[2] and pages[2]["prev"]["id"] == pages[1]["id"]
    with pytest.raises(NotFound, match="past the last page"):
        documents.annotation_page(URLS, OBJ, "3", Asked(q="w", page=4), hits, 3, {})
    assert asked.page == 1


def test_no_hits_is_one_empty_page_and_no_second() -> None:
    doc = documents.annotation_page(URLS, OBJ, "3", Asked(q="nothing"), [], 50, {})
    assert doc["items"] == [] and "annotations" not in doc
    assert doc["partOf"]["total"] == 0 and "next" not in doc
    for build in (documents.annotation_page, documents.annotation_list):
        with pytest.raises(NotFound):
            build(URLS, OBJ, "3", Asked(q="nothing", page=2), [], 50, {})


def _two_lines() -> tuple[Hit, dict[int, PageText]]:
    page = PageText(
        (
            Line((Word("A", (0, 0, 10, 10)), Word("bird", (12, 0, 30, 10)),
                  Word("in", (44, 0, 10, 10)), Word("the", (56, 0, 20, 10)),
                  Word("hand", (78, 0, 30, 10)))),
            Line((Word("is", (0, 20, 10, 10)), Word("worth", (12, 20, 40, 10)))),
        ),
        TextFormat.ALTO, 200, 100,
    )  # fmt: skip
    phrase = Hit(
        4,
        (Span(0, 4, 4, (78, 0, 30, 10)), Span(1, 0, 0, (0, 20, 10, 10))),
        "A bird in the ",
        "hand is",
        " worth",
    )
    return phrase, {4: page}


def test_a_hit_over_two_lines_is_two_items_and_one_contextualizing_annotation() -> None:
    phrase, pages = _two_lines()
    assert documents.spanning_canvases([phrase, hit(1, 0, 0, 0, "x")]) == [4]
    doc = documents.annotation_page(URLS, OBJ, "3", Asked(q='"hand is"'), [phrase], 50, pages)
    first, second = doc["items"]
    assert first["body"]["value"] == "hand" and second["body"]["value"] == "is"
    assert first["target"] == f"{CANVAS_3}/5#xywh=78,0,30,10"
    assert second["target"] == f"{CANVAS_3}/5#xywh=0,20,10,10"
    assert doc["partOf"]["total"] == 2  # annotations, not hits
    [context] = doc["annotations"][0]["items"]
    one, two = context["target"]  # 4.3.4: the targets of one match, in a list
    assert one["source"] == first["id"] and two["source"] == second["id"]
    assert one["selector"] == [
        {"type": "TextQuoteSelector", "prefix": "A bird in the ", "exact": "hand"}
    ]
    assert two["selector"] == [{"type": "TextQuoteSelector", "exact": "is", "suffix": " worth"}]
    # 1.0: two resources, one hit naming both (3.4.4)
    listed = documents.annotation_list(URLS, OBJ, "3", Asked(q='"hand is"'), [phrase], 50, pages)
    assert [r["resource"]["chars"] for r in listed["resources"]] == ["hand", "is"]
    [found] = listed["hits"]
    assert found["annotations"] == [first["id"], second["id"]]
    assert (found["before"], found["match"], found["after"]) == ("A bird in the ", "hand is",
                                                                  " worth")  # fmt: skip
    assert listed["within"]["total"] == 1  # hits


def test_the_second_part_of_a_hyphenated_word_is_named_by_the_whole_word() -> None:
    page = PageText(
        (
            Line((Word("in", (0, 0, 10, 10)), Word("Zürich", (12, 0, 20, 10)))),
            Line((Word("", (0, 20, 14, 10)), Word("lake", (16, 20, 20, 10)))),
        ),
        TextFormat.ALTO,
    )
    found = Hit(0, (Span(0, 1, 1, (12, 0, 20, 10)), Span(1, 0, 0, (0, 20, 14, 10))), "in ",
                "Zürich", " lake")  # fmt: skip
    doc = documents.annotation_page(URLS, OBJ, "3", Asked(q="zurich"), [found], 50, {0: page})
    assert [i["body"]["value"] for i in doc["items"]] == ["Zürich", "Zürich"]
    assert doc["items"][1]["target"] == f"{CANVAS_3}/1#xywh=0,20,14,10"
    lines = documents.canvas_page(URLS, OBJ, "3", 0, page)["items"]
    assert [i["body"]["value"] for i in lines] == ["in Zürich", "lake"]
    assert lines[1]["target"] == f"{CANVAS_3}/1#xywh=0,20,36,10"  # the part's box counts


def test_plain_text_hits_target_the_whole_canvas() -> None:
    found = Hit(0, (Span(3, 2, 2, None),), "the ", "Zürich", " lake")
    doc = documents.annotation_page(URLS, OBJ, "3", Asked(q="zurich"), [found], 50, {})
    assert doc["items"][0]["target"] == f"{CANVAS_3}/1"
    listed = documents.annotation_list(URLS, OBJ, "3", Asked(q="zurich"), [found], 50, {})
    assert listed["resources"][0]["on"] == f"{CANVAS_3}/1"


def test_the_same_words_have_the_same_ids_whatever_the_query() -> None:
    word = hit(2, 5, 3, 3, "Zürich")
    ids = set()
    for q in ("zurich", "zur*", "ZÜRICH lake"):
        doc = documents.annotation_page(URLS, OBJ, "3", Asked(q=q), [word], 50, {})
        ids.add(doc["items"][0]["id"])
        listed = documents.annotation_list(URLS, OBJ, "3", Asked(q=q), [word], 50, {})
        ids.add(listed["resources"][0]["@id"])
    assert ids == {f"https://example.org/iiif/text/{ENC}/3/3/line/6/words/4-4"}


def test_words_found_twice_on_a_page_are_one_item_with_two_contexts() -> None:
    twice = [hit(0, 0, 1, 1, "bird"), hit(0, 0, 1, 1, "bird")]
    doc = documents.annotation_page(URLS, OBJ, "3", Asked(q="bird bir*"), twice, 50, {})
    assert len(doc["items"]) == 1
    assert len(doc["annotations"][0]["items"]) == 2
    listed = documents.annotation_list(URLS, OBJ, "3", Asked(q="bird bir*"), twice, 50, {})
    assert len(listed["resources"]) == 1 and len(listed["hits"]) == 2


def test_ignored_parameters_are_named_and_left_out_of_the_ids() -> None:
    asked = Asked(q="bird", motivation="painting", ignored=("date", "user"))
    doc = documents.annotation_page(URLS, OBJ, "3", asked, [hit(0, 0, 0, 0, "bird")], 50, {})
    assert doc["ignored"] == ["date", "user"]
    assert doc["id"] == f"{SEARCH_2}?q=bird&motivation=painting&page=1"
    listed = documents.annotation_list(URLS, OBJ, "3", asked, [hit(0, 0, 0, 0, "bird")], 50, {})
    assert listed["within"]["ignored"] == ["date", "user"]
    assert "ignored" not in documents.annotation_page(URLS, OBJ, "3", Asked(q="b"), [], 50, {})


def test_query_values_are_percent_encoded_in_ids() -> None:
    asked = Asked(q='"hand is" zür* & x=1#')
    doc = documents.annotation_page(URLS, OBJ, "3", asked, [], 50, {})
    assert doc["partOf"]["id"] == (f"{SEARCH_2}?q=%22hand%20is%22%20z%C3%BCr%2A%20%26%20x%3D1%23")
    assert documents.annotation_page(URLS, OBJ, "3", Asked(), [], 50, {})["partOf"]["id"] == (
        SEARCH_2
    )


@pytest.mark.parametrize(
    ("motivation", "matches"),
    [
        (None, True),
        ("painting", True),
        ("sc:painting", True),
        ("commenting painting", True),
        ("commenting", False),
        ("supplementing", False),
        ("non-painting", False),
    ],
)
def test_the_text_has_the_painting_motivation(motivation: str | None, matches: bool) -> None:
    assert Asked(q="x", motivation=motivation).text_matches is matches


# --- Search 1.0 ---------------------------------------------------------------------------------


def test_annotation_list_has_the_shape_of_the_spec_examples() -> None:
    hits = [hit(c, 0, 0, 0, "bird", before="There are two ", after=" in the bush")
            for c in range(5)]  # fmt: skip
    doc = documents.annotation_list(URLS, OBJ, "3", Asked(q="bird"), hits, 2, {})
    # 3.3.2 paging + 3.4.2 snippets
    assert keys(doc) == {
        "@context", "@id", "@type", "within", "next", "startIndex", "resources", "hits",
    }  # fmt: skip
    assert doc["@context"] == [
        "http://iiif.io/api/presentation/2/context.json",
        "http://iiif.io/api/search/1/context.json",
    ]
    assert doc["@type"] == "sc:AnnotationList"
    assert doc["@id"] == f"{SEARCH_1}?q=bird"  # the first page: without page
    assert doc["within"] == {
        "@type": "sc:Layer",
        "total": 5,
        "first": f"{SEARCH_1}?q=bird",
        "last": f"{SEARCH_1}?q=bird&page=3",
    }
    assert doc["next"] == f"{SEARCH_1}?q=bird&page=2" and doc["startIndex"] == 0
    resource = doc["resources"][0]
    assert resource == {
        "@id": f"https://example.org/iiif/text/{ENC}/1/3/line/1/words/1-1",
        "@type": "oa:Annotation",
        "motivation": "sc:painting",
        "resource": {"@type": "cnt:ContentAsText", "chars": "bird"},
        "on": f"{CANVAS_3}/1#xywh=0,0,10,12",
    }
    assert doc["hits"][0] == {
        "@type": "search:Hit",
        "annotations": [resource["@id"]],
        "match": "bird",
        "before": "There are two ",
        "after": " in the bush",
    }
    second = documents.annotation_list(URLS, OBJ, "3", Asked(q="bird", page=2), hits, 2, {})
    assert second["@id"] == f"{SEARCH_1}?q=bird&page=2"
    assert second["prev"] == f"{SEARCH_1}?q=bird" and second["startIndex"] == 2
    last = documents.annotation_list(URLS, OBJ, "3", Asked(q="bird", page=3), hits, 2, {})
    assert "next" not in last and len(last["hits"]) == 1 and last["startIndex"] == 4


def test_a_service_of_the_2_1_manifest_targets_its_canvases() -> None:
    found = [hit(1, 0, 0, 0, "bird")]
    listed = documents.annotation_list(URLS, OBJ, "2", Asked(q="bird"), found, 50, {})
    assert listed["@id"] == f"{SEARCH_1}/manifest2?q=bird"
    assert listed["resources"][0]["on"].startswith(f"{CANVAS_2}/2#xywh=")
    assert listed["resources"][0]["@id"].startswith(f"https://example.org/iiif/text/{ENC}/2/2/")
    doc = documents.annotation_page(URLS, OBJ, "2", Asked(q="bird"), found, 50, {})
    assert doc["items"][0]["target"].startswith(f"{CANVAS_2}/2#xywh=")


# --- autocomplete -------------------------------------------------------------------------------


def test_term_page_and_term_list() -> None:
    terms = [("bird", 15), ("biro", 3)]
    asked = Asked(q="bir", min=2, ignored=("user",))
    page = documents.term_page(URLS, OBJ, "3", asked, terms)
    assert page == {
        "@context": "http://iiif.io/api/search/2/context.json",
        "id": f"{SEARCH_2}/autocomplete?q=bir&min=2",
        "type": "TermPage",
        "ignored": ["user"],
        "items": [{"value": "bird", "total": 15}, {"value": "biro", "total": 3}],
    }
    listed = documents.term_list(URLS, OBJ, "3", Asked(q="bir", motivation="painting"), terms)
    assert listed == {
        "@context": "http://iiif.io/api/search/1/context.json",
        "@id": f"{SEARCH_1}/autocomplete?q=bir&motivation=painting",
        "@type": "search:TermList",
        "terms": [
            {"match": "bird", "url": f"{SEARCH_1}?q=bird&motivation=painting", "count": 15},
            {"match": "biro", "url": f"{SEARCH_1}?q=biro&motivation=painting", "count": 3},
        ],
    }


# --- the text of canvases -------------------------------------------------------------------------


def test_canvas_lines_as_supplementing_annotations() -> None:
    page = PageText(
        (
            Line((Word("Hello", (10, 20, 50, 15)), Word("world", (70, 18, 40, 20)))),
            Line(()),  # an empty line: no annotation, the numbering goes on
            Line((Word("Zürich", (10, 60, 60, 15)),)),
        ),
        TextFormat.ALTO,
        500,
        800,
    )
    doc = documents.canvas_page(URLS, OBJ, "3", 1, page)
    assert doc["@context"] == "http://iiif.io/api/presentation/3/context.json"
    assert doc["id"] == f"https://example.org/iiif/text/{ENC}/2/3"
    assert doc["type"] == "AnnotationPage"
    first, second = doc["items"]
    assert first == {
        "id": f"https://example.org/iiif/text/{ENC}/2/3/line/1",
        "type": "Annotation",
        "motivation": "supplementing",
        "body": {"type": "TextualBody", "value": "Hello world", "format": "text/plain"},
        "target": f"{CANVAS_3}/2#xywh=10,18,100,20",
    }
    assert second["id"].endswith("/line/3") and second["body"]["value"] == "Zürich"
    listed = documents.canvas_page(URLS, OBJ, "2", 1, page)
    assert listed["@context"] == "http://iiif.io/api/presentation/2/context.json"
    assert listed["@type"] == "sc:AnnotationList"
    assert listed["@id"] == f"https://example.org/iiif/text/{ENC}/2/2"
    assert listed["resources"][0] == {
        "@id": f"https://example.org/iiif/text/{ENC}/2/2/line/1",
        "@type": "oa:Annotation",
        "motivation": "sc:painting",
        "resource": {"@type": "cnt:ContentAsText", "format": "text/plain", "chars": "Hello world"},
        "on": f"{CANVAS_2}/2#xywh=10,18,100,20",
    }
    plain = PageText((Line((Word("just"), Word("text"))),), TextFormat.PLAIN, 500, 800)
    assert documents.canvas_page(URLS, OBJ, "3", 0, plain)["items"][0]["target"] == (
        f"{CANVAS_3}/1"
    )
    assert documents.canvas_page(URLS, OBJ, "3", 0, None)["items"] == []


def test_plain_text_puts_a_form_feed_line_between_pages() -> None:
    def stored(canvas: int, *lines: str) -> StoredPage:
        page = PageText(
            tuple(Line(tuple(Word(w) for w in line.split())) for line in lines), TextFormat.PLAIN
        )
        return StoredPage(canvas, "s", page)

    text = documents.plain_text([stored(0, "one two", "three"), stored(2, "four")], 4)
    assert text == "one two\nthree\n\f\n\n\f\nfour\n\f\n\n"
    assert text.split("\n\f\n")[2] == "four"
