"""search/match.py: the hits of a query on pages read from OCR files made with known words at
known positions and put on canvases of another size: words, phrases (across a line break: two
spans), prefixes, diacritics and ß, AND over the page, the empty query (every line), plain
text (no boxes), hyphenated words, and snippets cut at whole words."""

from __future__ import annotations

import functools
import zlib

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from iiif_shim.model.text import Hit, Line, PageText, Query, Span, TextFormat, Word
from iiif_shim.search import engine, match
from iiif_shim.search.index import IndexUnavailable, PackedPage, StoredPage
from iiif_shim.search.match import (
    CONTEXT,
    HitPage,
    ObjectText,
    TooLarge,
    WordsCache,
    find,
    find_hits,
    line_box,
    show,
    union,
)
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


# --- the finder as the service uses it: counted on an object's text, shown a page at a time ----


def reference_hits(pages: list[StoredPage], query: Query, context: int = CONTEXT) -> list[Hit]:
    """The rules of the module's docstring, written plainly (each page's words folded, every
    occurrence listed, every hit made): what the finder must give."""
    found: list[Hit] = []
    for stored in sorted(pages, key=lambda stored: stored.canvas):
        page = stored.page
        places = [(li, wi) for li, line in enumerate(page.lines) for wi in range(len(line.words))]
        texts = [page.lines[li].words[wi].text for li, wi in places]
        covered: set[tuple[int, int]] = set()
        if query.empty:
            first = 0
            for line in page.lines:
                if line.text:
                    covered.add((first, first + len(line.words) - 1))
                first += len(line.words)
        else:
            pairs = [(n, term) for n, text in enumerate(texts) for term in terms(text)]
            seen = [term for _, term in pairs]
            present = set(seen)
            if not all(word in present for word in query.words):
                continue
            if not all(any(t.startswith(p) for t in present) for p in query.prefixes):
                continue
            holds = True
            for phrase in query.phrases:
                starts = [i for i in range(len(seen)) if tuple(seen[i : i + len(phrase)]) == phrase]
                holds = holds and bool(starts)
                covered.update((pairs[i][0], pairs[i + len(phrase) - 1][0]) for i in starts)
            if not holds:
                continue
            for n, term in pairs:
                if term in query.words or term.startswith(query.prefixes):
                    covered.add((n, n))
        for start, end in sorted(covered):
            if end + 1 < len(places) and places[end + 1][1] == 0 and not texts[end + 1]:
                end += 1
            lines: dict[int, list[int]] = {}
            for li, wi in places[start : end + 1]:
                lines.setdefault(li, []).append(wi)
            spans = tuple(
                Span(li, ws[0], ws[-1], union(page.lines[li].words[w].box for w in ws))
                for li, ws in lines.items()
            )
            before: list[str] = []
            for text in reversed([t for t in texts[:start] if t]):
                if sum(len(t) + 1 for t in [*before, text]) > context:
                    break
                before.append(text)
            after: list[str] = []
            for text in [t for t in texts[end + 1 :] if t]:
                if sum(len(t) + 1 for t in [*after, text]) > context:
                    break
                after.append(text)
            found.append(
                Hit(
                    stored.canvas,
                    spans,
                    " ".join(reversed(before)) + " " if before else "",
                    " ".join(t for t in texts[start : end + 1] if t),
                    " " + " ".join(after) if after else "",
                )
            )
    return found


# words as OCR gives them: punctuation, words of several terms (one twice), words of no term,
# diacritics; None: a line break, "(" and ")" the two parts of a word hyphenated over one
WORDS = ["the", "The", "zürich", "Zurich", "town", "tower", "self-made", "the-the", "l'eau",
         "eau", "made", "—", "&", "1,000", "old", "Straße", "strasse", "to"]  # fmt: skip
QUERIES = ["the", "zurich", "to*", "t*", "tow*", "made", "self made", '"the town"',
           '"made the"', "the zurich", '"old the" to*', "eau", "1", "strasse", "", "missing",
           '"the the"', "s*", "tower town*"]  # fmt: skip


@st.composite
def ocr_pages(draw: st.DrawFn) -> list[StoredPage]:
    """Pages of words as OCR gives them, some with boxes, some of plain text, lines without
    words, words hyphenated over a line break."""
    pages = []
    for canvas in draw(st.lists(st.integers(0, 30), min_size=1, max_size=4, unique=True)):
        boxed = draw(st.booleans())
        lines: list[list[Word]] = [[]]
        items = draw(st.lists(st.sampled_from([*WORDS, None, "hyphen"]), max_size=40))
        for n, item in enumerate(items):
            box = (float(n % 9 * 10), float(len(lines) * 12), 9.0, 10.0) if boxed else None
            if item is None:
                lines.append([])
            elif item == "hyphen":  # "tow-" at a line's end, "er" (empty text) on the next
                lines[-1].append(Word("tower", box))
                lines.append([Word("", box)])
            else:
                lines[-1].append(Word(item, box))
        fmt = TextFormat.ALTO if boxed else TextFormat.PLAIN
        page = PageText(tuple(Line(tuple(line)) for line in lines), fmt, 100, 100)
        pages.append(StoredPage(canvas, f"stamp {canvas}", page))
    return pages


def packed_of(pages: list[StoredPage]) -> list[PackedPage]:
    return sorted(
        (PackedPage(p.canvas, p.stamp, engine.pack(p.page)[0]) for p in pages),
        key=lambda p: p.canvas,
    )


def shown(
    text: ObjectText, pages: list[PackedPage], query: Query, start: int, stop: int
) -> HitPage:
    found = find(text, query)
    by_canvas = {page.canvas: page for page in pages}
    return show(
        "o", text, query, found, start, stop, lambda wanted: (7, [by_canvas[c] for c in wanted])
    )


@settings(max_examples=300, deadline=None)
@given(ocr_pages(), st.sampled_from(QUERIES), st.integers(0, 12), st.integers(1, 12))
def test_the_finder_follows_the_rules(
    pages: list[StoredPage], q: str, start: int, size: int
) -> None:
    query = parse_query(q)
    expected = reference_hits(pages, query)
    assert find_hits(pages, query) == expected
    packed = packed_of(pages)
    text = ObjectText.build(7, packed)
    found = find(text, query)
    assert (found.total, found.annotations) == (
        len(expected),
        sum(len(hit.spans) for hit in expected),
    )
    per_page = [h.canvas for h in expected]
    assert list(found.canvases) == sorted(set(per_page))
    assert list(found.hits) == [per_page.count(c) for c in sorted(set(per_page))]
    page = shown(text, packed, query, start, start + size)
    assert page.hits == tuple(expected[start : start + size])
    assert (page.start, page.total, page.annotations) == (start, found.total, found.annotations)
    assert page.annotations_before == sum(len(hit.spans) for hit in expected[:start])


def test_a_word_of_a_page_is_counted_the_quick_way_and_the_slow_way_alike() -> None:
    lines = [["the", "the-the", "town"], ["—", "the", "l'the"], ["the"]]
    page = PageText(tuple(Line(tuple(Word(w) for w in ws)) for ws in lines), TextFormat.PLAIN)
    pages = [StoredPage(0, "s", page)]
    text = ObjectText.build(1, packed_of(pages))
    found = find(text, parse_query("the"))
    assert (found.total, found.annotations) == (5, 5)  # the-the once, l'the once
    assert [h.match for h in find_hits(pages, parse_query("the"))] == [
        "the", "the-the", "the", "l'the", "the",
    ]  # fmt: skip


def test_the_pages_shown_are_read_as_they_are_now() -> None:
    before = [StoredPage(0, "a", PageText((Line((Word("old"), Word("town"))),), TextFormat.PLAIN))]
    now = [StoredPage(0, "b", PageText((Line((Word("town"),)),), TextFormat.PLAIN))]
    text = ObjectText.build(1, packed_of(before))
    query = parse_query("town")
    found = find(text, query)
    # the page changed since its terms were read: its hits are those it has now
    for generation in (1, 2):  # (its stamp says; another generation says so of every page)
        read = functools.partial(lambda g, _: (g, packed_of(now)), generation)
        page = show("o", text, query, found, 0, 10, read)
        assert [(h.match, h.spans[0].first) for h in page.hits] == [("town", 0)]
        assert page.total == 1
    # the same stamp, but another generation: the page as it is now
    same = [StoredPage(0, "a", now[0].page)]
    page = show("o", text, query, found, 0, 10, lambda wanted: (2, packed_of(same)))
    assert [(h.match, h.spans[0].first) for h in page.hits] == [("town", 0)]
    # gone since: no hit, no failure
    assert show("o", text, query, found, 0, 10, lambda wanted: (2, [])).hits == ()


def test_pages_shown_again_are_not_read_again() -> None:
    pages = [StoredPage(c, f"s{c}", PageText((Line((Word("town"),)),), TextFormat.PLAIN))
             for c in range(3)]  # fmt: skip
    packed = packed_of(pages)
    text = ObjectText.build(1, packed)
    cache = WordsCache(1 << 20)
    asked: list[list[int]] = []

    def read(wanted: list[int]) -> tuple[int, list[PackedPage]]:
        asked.append(wanted)
        return 1, [p for p in packed if p.canvas in wanted]

    query = parse_query("town")
    found = find(text, query)
    first = show("o", text, query, found, 0, 2, read, cache)
    again = show("o", text, query, found, 0, 3, read, cache)
    assert first.hits == again.hits[:2] and len(again.hits) == 3
    assert asked == [[0, 1], [2]]
    assert show("o", text, query, found, 0, 3, read, WordsCache(0)).hits == again.hits
    assert asked[-1] == [0, 1, 2]  # (none kept)
    newer = ObjectText.build(2, packed)  # the object changed since: its pages are read again
    show("o", newer, query, find(newer, query), 0, 1, read, cache)
    assert asked[-1] == [0]


def test_an_object_of_more_terms_than_a_segment_holds(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setattr(match, "SEGMENT_TERMS", 4)
    lines = [["a", "b", "c"], ["d", "a"], ["e", "f", "g", "h", "i"], ["a", "h"]]
    pages = [
        StoredPage(n, "s", PageText((Line(tuple(Word(w) for w in ws)),), TextFormat.PLAIN))
        for n, ws in enumerate(lines)
    ]
    text = ObjectText.build(1, packed_of(pages))
    # a b c | d a | e f g h (i) | a h: a page's terms go in one segment, made anew when they
    # might not fit in the one before
    assert len(text.segments) == 4
    for q in ("a", "h", "d", '"d a"', "a*", "b c", "g", "i"):
        query = parse_query(q)
        expected = reference_hits(pages, query)
        if q == "i":  # the page's distinct terms past the segment's 4: not found
            expected = []
        assert shown(text, packed_of(pages), query, 0, 50).hits == tuple(expected), q


def test_an_object_text_larger_than_allowed_is_refused() -> None:
    pages = [StoredPage(n, "s", PageText((Line((Word(f"w{n}"),)),), TextFormat.PLAIN))
             for n in range(50)]  # fmt: skip
    assert ObjectText.build(1, packed_of(pages)).pages == 50
    with pytest.raises(TooLarge):
        ObjectText.build(1, packed_of(pages), limit=5000)


def test_a_damaged_page_is_an_unavailable_index() -> None:
    with pytest.raises(IndexUnavailable):
        ObjectText.build(1, [PackedPage(0, "s", b"not a page")])
    with pytest.raises(IndexUnavailable):
        ObjectText.build(1, [PackedPage(0, "s", zlib.compress(b"the town\x00[]\x00"))])
    with pytest.raises(IndexUnavailable):
        engine.page_words(zlib.compress(b"t\x00[1,2,3,[[4]]]\x00"))


@settings(max_examples=200, deadline=None)
@given(ocr_pages())
def test_a_packed_page_gives_back_the_page_its_terms_and_words(pages: list[StoredPage]) -> None:
    for stored in pages:
        body, indexed = engine.pack(stored.page)
        assert engine.unpack(body) == stored.page
        assert indexed == engine.page_terms(stored.page) == engine.packed_terms(body)
        assert engine.page_words(body) == engine.words_of(stored.page)
        assert engine.terms_part(body) == engine.terms_of(stored.page)


def test_a_hit_of_a_whole_long_line_is_cut() -> None:
    """The empty query's hit of a line is its whole text: a line of 900 words (6,300
    characters; a page's 100,000 words may be one line) is cut at MAX_MATCH characters."""
    line = [(f"w{n:05d}", (n * 2, 10, 2, 10)) for n in range(900)]
    [hit] = find_hits([stored(0, [line])], parse_query(""))
    assert len(hit.match) == match.MAX_MATCH
    assert hit.match.startswith("w00000 w00001 ") and hit.match.endswith("\u2026")
    assert [h.match for h in find_hits([stored(0, [line])], parse_query("w00899"))] == ["w00899"]
