"""search/match.py: the hits of a query on pages read from OCR files made with known words at
known positions and put on canvases of another size: words, phrases (across a line break: two
spans), prefixes, diacritics and ß, AND over the page, the empty query (every line), plain
text (no boxes), hyphenated words, and snippets cut at whole words."""

from __future__ import annotations

from hypothesis import given, settings
from hypothesis import strategies as st

from iiif_shim.model.text import Hit, Line, PageText, Span, TextFormat, Word
from iiif_shim.search.index import StoredPage
from iiif_shim.search.match import find_hits, line_box, union
from iiif_shim.search.ocr import parse
from iiif_shim.search.words import parse_query, terms
from tests import ocr_files
from tests.ocr_files import Hyp

# an OCR page of 2000 x 3000 pixels, shown on a canvas of 1000 x 1500: boxes are halved
PAGE_1: list[list[ocr_files.WordSpec]] = [
    [("In", (100, 100, 100, 60)), ("Zürich", (220, 100, 300, 60)), ("the", (540, 100, 140, 60))],
    [("old", (100, 200, 140, 60)), ("town", (260, 200, 200, 60)), ("lies", (480, 200, 160, 60))],
    [("by", (100, 300, 100, 60)), ("the", (220, 300, 140, 60)), ("Straße", (380, 300, 300, 60))],
]
PAGE_2: list[list[ocr_files.WordSpec]] = [
    [("ZURICH", (100, 100, 300, 60)), ("Strasse", (420, 100, 340, 60))],
    [("old", (100, 200, 140, 60)), ("walls", (260, 200, 220, 60))],
]


def stored(canvas: int, lines: list[list[ocr_files.WordSpec]], kind: str = "alto") -> StoredPage:
    data = (ocr_files.alto if kind == "alto" else ocr_files.hocr)(lines, (2000, 3000))
    return StoredPage(canvas, "stamp", parse(data, None, f"p{canvas}", 1000).scaled(1000, 1500))


PAGES = [stored(1, PAGE_2), stored(0, PAGE_1, "hocr")]


def hits(q: str, pages: list[StoredPage] = PAGES) -> list[Hit]:
    return find_hits(pages, parse_query(q))


def test_a_word_on_each_page_in_canvas_order_with_its_box_on_the_canvas() -> None:
    found = hits("zurich")
    assert found == [
        Hit(
            0,
            (Span(0, 1, 1, (110, 50, 150, 30)),),
            "In ",
            "Zürich",
            " the old town lies by the Straße",
        ),
        Hit(1, (Span(0, 0, 0, (50, 50, 150, 30)),), "", "ZURICH", " Strasse old walls"),
    ]


def test_sharp_s_and_ss_are_one() -> None:
    assert [(h.canvas, h.match) for h in hits("strasse")] == [(0, "Straße"), (1, "Strasse")]
    assert [(h.canvas, h.match) for h in hits("STRASSE")] == [(0, "Straße"), (1, "Strasse")]
    assert [(h.canvas, h.match) for h in hits("Straße")] == [(0, "Straße"), (1, "Strasse")]


def test_diacritics_folded_both_ways() -> None:
    assert [h.match for h in hits("Zurich")] == ["Zürich", "ZURICH"]
    assert [h.match for h in hits("ZÜRICH")] == ["Zürich", "ZURICH"]


def test_a_phrase_over_a_line_break_has_a_span_on_each_line() -> None:
    (hit,) = hits('"the old town"')
    assert hit.canvas == 0
    assert hit.spans == (Span(0, 2, 2, (270, 50, 70, 30)), Span(1, 0, 1, (50, 100, 180, 30)))
    assert (hit.before, hit.match, hit.after) == (
        "In Zürich ",
        "the old town",
        " lies by the Straße",
    )


def test_every_occurrence_is_a_hit_in_reading_order() -> None:
    found = hits("the")
    assert [(h.canvas, h.spans[0].line, h.spans[0].first) for h in found] == [(0, 0, 2), (0, 2, 1)]


def test_a_prefix() -> None:
    assert [h.match for h in hits("wal*")] == ["walls"]
    assert [(h.canvas, h.match) for h in hits("t*")] == [(0, "the"), (0, "town"), (0, "the")]
    # the same word found by a word and by a prefix is one hit
    assert [h.match for h in hits("town to*")] == ["town"]


def test_every_word_must_be_on_the_page() -> None:
    assert [(h.canvas, h.match) for h in hits("old zurich")] == [
        (0, "Zürich"),
        (0, "old"),
        (1, "ZURICH"),
        (1, "old"),
    ]
    assert [(h.canvas, h.match) for h in hits("old walls")] == [(1, "old"), (1, "walls")]
    assert hits("zurich missing") == []
    assert hits('zurich "town old"') == []  # both words are there, not the phrase
    assert [h.match for h in hits("walls zur*")] == ["ZURICH", "walls"]
    assert hits("walls q*") == []


def test_the_empty_query_makes_every_line_a_hit() -> None:
    found = find_hits(PAGES, parse_query(""))
    assert [(h.canvas, h.match) for h in found] == [
        (0, "In Zürich the"),
        (0, "old town lies"),
        (0, "by the Straße"),
        (1, "ZURICH Strasse"),
        (1, "old walls"),
    ]
    assert found[1].spans == (Span(1, 0, 2, (50, 100, 270, 30)),)
    assert (found[1].before, found[1].after) == ("In Zürich the ", " by the Straße")


def test_plain_text_has_no_boxes() -> None:
    page = parse(ocr_files.plain([["In", "Zürich"], ["the", "old", "town"]]), None, "p.txt", 10)
    found = find_hits([StoredPage(3, "s", page.scaled(1000, 1500))], parse_query('"zurich the"'))
    assert found == [
        Hit(3, (Span(0, 1, 1, None), Span(1, 0, 0, None)), "In ", "Zürich the", " old town")
    ]


def test_a_hyphenated_word_is_found_whole_and_drawn_on_both_lines() -> None:
    lines: list[list[ocr_files.WordSpec]] = [
        [("a", (100, 100, 100, 60)), Hyp("self", (220, 100, 200, 60), 1, "selfmade")],
        [Hyp("made", (100, 200, 200, 60), 2, "selfmade"), ("man", (320, 200, 160, 60))],
    ]
    page = [stored(0, lines)]
    (hit,) = hits("selfmade", page)
    assert hit.spans == (Span(0, 1, 1, (110, 50, 100, 30)), Span(1, 0, 0, (50, 100, 100, 30)))
    assert (hit.before, hit.match, hit.after) == ("a ", "selfmade", " man")
    (phrase,) = hits('"selfmade man"', page)
    assert phrase.spans == (Span(0, 1, 1, (110, 50, 100, 30)), Span(1, 0, 1, (50, 100, 190, 30)))
    assert hits("made", page) == []
    assert [h.match for h in find_hits(page, parse_query(""))] == ["a selfmade", "man"]


def test_a_word_of_several_terms() -> None:
    page = [
        stored(
            0, [[("a", (0, 0, 10, 10)), ("self-made", (20, 0, 90, 10)), ("man", (120, 0, 30, 10))]]
        )
    ]
    assert [(h.match, h.spans[0].first) for h in hits("self-made", page)] == [("self-made", 1)]
    assert [h.match for h in hits("made", page)] == ["self-made"]
    assert [h.match for h in hits("self made", page)] == ["self-made"]  # one word, one hit


def test_snippets_are_cut_at_whole_words() -> None:
    before = [f"word{n:03d}" for n in range(40)]
    text = [[*before, "needle", *reversed(before)]]
    page = PageText(tuple(Line(tuple(Word(w) for w in line)) for line in text), TextFormat.PLAIN)
    (hit,) = find_hits([StoredPage(0, "s", page)], parse_query("needle"))
    assert hit.before == "word033 word034 word035 word036 word037 word038 word039 "  # 56
    assert hit.after == " word039 word038 word037 word036 word035 word034 word033"
    (short,) = find_hits([StoredPage(0, "s", page)], parse_query("needle"), context=20)
    assert (short.before, short.after) == ("word038 word039 ", " word039 word038")
    (none,) = find_hits([StoredPage(0, "s", page)], parse_query("needle"), context=5)
    assert (none.before, none.after) == ("", "")


def test_boxes() -> None:
    assert union([(1.5, 2.2, 3.0, 4.0), None, (10, 1, 1, 1)]) == (1, 1, 10, 6)
    assert union([None]) is None
    assert line_box(Line((Word("a", (0, 0, 5, 5)), Word("b", (10, 2, 5, 5))))) == (0, 0, 15, 7)
    assert line_box(Line((Word("a"),))) is None


VOCABULARY = ["Zürich", "zurich", "Bern", "the", "Straße", "strasse", "self-made", "made"]


@settings(max_examples=200, deadline=None)
@given(
    st.lists(st.lists(st.sampled_from(VOCABULARY), min_size=1, max_size=6), max_size=6),
    st.sampled_from(["zurich", "bern", "the", "strasse", "made", "self"]),
)
def test_a_word_is_found_once_per_word_that_holds_it(lines: list[list[str]], q: str) -> None:
    page = PageText(
        tuple(
            Line(tuple(Word(w, (i * 10.0, n * 10.0, 9.0, 9.0)) for i, w in enumerate(line)))
            for n, line in enumerate(lines)
        ),
        TextFormat.ALTO,
        100,
        100,
    )
    found = find_hits([StoredPage(0, "s", page)], parse_query(q))
    holding = [(n, i) for n, line in enumerate(lines) for i, w in enumerate(line) if q in terms(w)]
    assert [(h.spans[0].line, h.spans[0].first) for h in found] == holding
    flat = " ".join(" ".join(line) for line in lines)
    for hit in found:
        assert hit.before + hit.match + hit.after in flat
        assert len(hit.before) <= 60 and len(hit.after) <= 60
        assert hit.spans[0].box == (hit.spans[0].first * 10, hit.spans[0].line * 10, 9, 9)
