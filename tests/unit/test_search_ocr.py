"""search/ocr.py: ALTO (v2-v4, no namespace, any unit), hOCR and plain text read into a page
of words with their boxes; a file's format told from its bytes; hostile and broken files
(entity bombs, external entities, malformed, deep, without or with an absurd page size, too
many words, not text) refused with one line naming the file, and nothing else ever raised."""

from __future__ import annotations

from pathlib import Path

import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st
from lxml import etree

from iiif_shim.model.text import PageText, TextFormat
from iiif_shim.search.ocr import MAX_DEPTH, TextRefused, parse, sniff
from iiif_shim.search.words import terms
from tests import ocr_files
from tests.ocr_files import Hyp

LINES: list[list[ocr_files.WordSpec]] = [
    [("Zürich", (100, 200, 300, 50)), ("1848", (420, 200, 120, 50))],
    [("Straße", (100, 300, 250, 50)), ("&", (360, 300, 20, 50)), ("<Bern>", (390, 300, 200, 50))],
]


def words(page: PageText) -> list[list[tuple[str, tuple[float, float, float, float] | None]]]:
    return [[(word.text, word.box) for word in line.words] for line in page.lines]


def refused(data: bytes, format: TextFormat | None = None, max_words: int = 1000) -> str:
    with pytest.raises(TextRefused) as caught:
        parse(data, format, "books/p1.xml", max_words)
    message = str(caught.value)
    assert message.startswith("books/p1.xml: ")
    assert "\n" not in message
    return message


@pytest.mark.parametrize("namespace", [True, False])
@pytest.mark.parametrize("version", [2, 3, 4])
def test_alto_words_boxes_and_page_size(version: int, namespace: bool) -> None:
    data = ocr_files.alto(LINES, (2000, 3000), version=version, namespace=namespace)  # type: ignore[arg-type]
    page = parse(data, None, "p1.xml", 1000)
    assert page.format is TextFormat.ALTO
    assert (page.width, page.height) == (2000, 3000)
    assert words(page) == [
        [("Zürich", (100, 200, 300, 50)), ("1848", (420, 200, 120, 50))],
        [
            ("Straße", (100, 300, 250, 50)),
            ("&", (360, 300, 20, 50)),
            ("<Bern>", (390, 300, 200, 50)),
        ],
    ]
    assert page.text == "Zürich 1848\nStraße & <Bern>"


@pytest.mark.parametrize("unit", ["mm10", "inch1200"])
def test_alto_in_other_units_lands_on_the_canvas_by_the_page_size(unit: str) -> None:
    # an A4 page: 2100 x 2970 tenths of a millimetre, or 9921 x 14031 1200ths of an inch; a
    # word a tenth of the page's width from the left, a tenth of its height from the top
    size = (2100, 2970) if unit == "mm10" else (9921, 14031)
    box = (size[0] / 10, size[1] / 10, size[0] / 5, size[1] / 20)
    page = parse(ocr_files.alto([[("word", box)]], size, unit), None, "p.xml", 10)  # type: ignore[arg-type]
    assert (page.width, page.height) == (float(size[0]), float(size[1]))
    on_canvas = page.scaled(1000, 1414)
    assert on_canvas.lines[0].words[0].box == (100, 141, 200, 71)


def test_alto_page_size_from_the_print_space_when_page_has_none() -> None:
    page = parse(ocr_files.alto(LINES, (1200, 1600), size="printspace"), None, "p.xml", 10)
    assert (page.width, page.height) == (1200, 1600)


def test_alto_of_several_pages_is_read_as_its_first() -> None:
    data = ocr_files.alto(LINES, more_pages=[[[("elsewhere", (1, 1, 1, 1))]]])
    assert "elsewhere" not in parse(data, None, "p.xml", 10).text


def test_alto_hyphenated_word_is_searched_whole_and_keeps_both_boxes() -> None:
    lines: list[list[ocr_files.WordSpec]] = [
        [("a", (10, 10, 20, 30)), Hyp("self", (40, 10, 80, 30), 1, "selfmade")],
        [Hyp("made", (10, 50, 80, 30), 2, "selfmade"), ("man", (100, 50, 60, 30))],
    ]
    page = parse(ocr_files.alto(lines), None, "p.xml", 10)
    assert words(page) == [
        [("a", (10, 10, 20, 30)), ("selfmade", (40, 10, 80, 30))],
        [("", (10, 50, 80, 30)), ("man", (100, 50, 60, 30))],
    ]
    assert page.text == "a selfmade\nman"
    assert terms(page.text) == ["a", "selfmade", "man"]
    # a second part without a first is only a word
    alone = parse(ocr_files.alto([lines[1]]), None, "p.xml", 10)
    assert words(alone)[0][0] == ("made", (10, 50, 80, 30))


def test_alto_words_are_nfc_without_controls_and_bad_boxes_are_none() -> None:
    data = ocr_files.alto([[("Zu\u0308rich", (1, 2, 3, 4)), ("x", (1, 2, 3, 4))]])
    data = data.replace(b'CONTENT="x" HPOS="1"', b'CONTENT="a&#9;b" HPOS="nan"')
    page = parse(data, None, "p.xml", 10)
    assert words(page) == [[("Zürich", (1, 2, 3, 4)), ("a b", None)]]


@pytest.mark.parametrize(
    "line_class", ["ocr_line", "ocrx_line", "ocr_header", "ocr_caption", "ocr_textfloat"]
)
def test_hocr_words_boxes_and_page_size(line_class: str) -> None:
    page = parse(ocr_files.hocr(LINES, (2000, 3000), line_class=line_class), None, "p.hocr", 10)
    assert page.format is TextFormat.HOCR
    assert (page.width, page.height) == (2000, 3000)
    assert words(page) == [
        [("Zürich", (100, 200, 300, 50)), ("1848", (420, 200, 120, 50))],
        [
            ("Straße", (100, 300, 250, 50)),
            ("&", (360, 300, 20, 50)),
            ("<Bern>", (390, 300, 200, 50)),
        ],
    ]


def test_hocr_in_html5_with_markup_inside_words_and_lines_without_words() -> None:
    data = (
        b"<!DOCTYPE html><html><body><div class='ocr_page' title='image \"x\"; bbox 0 0 800 600'>"
        b"<span class='ocr_line' title='bbox 10 20 300 40'><span class='ocrx_word' "
        b"title='bbox 10 20 100 40; x_wconf 90'><strong>Bold</strong>er</span></span>"
        b"<span class='ocr_line' title='bbox 10 50 300 70'>Only <em>line</em> text</span>"
        b"</div><div class='ocr_page' title='bbox 0 0 1 1'><span class='ocrx_word' "
        b"title='bbox 0 0 1 1'>second</span></div></body></html>"
    )
    page = parse(data, None, "p.html", 10)
    assert (page.width, page.height) == (800, 600)
    assert words(page) == [
        [("Bolder", (10, 20, 90, 20))],
        [("Only", (10, 50, 290, 20)), ("line", (10, 50, 290, 20)), ("text", (10, 50, 290, 20))],
    ]


def test_hocr_hyphen_is_kept_as_printed() -> None:
    lines: list[list[ocr_files.WordSpec]] = [
        [Hyp("self", (40, 10, 80, 30), 1, "selfmade")],
        [Hyp("made", (10, 50, 80, 30), 2, "selfmade")],
    ]
    assert parse(ocr_files.hocr(lines), None, "p.hocr", 10).text == "self-\nmade"


@pytest.mark.parametrize("encoding", ["utf-8", "utf-8-sig", "utf-16"])
def test_plain_text(encoding: str) -> None:
    data = ocr_files.plain([["Zürich", "1848"], [], ["Straße", "Bern"]], encoding=encoding)  # type: ignore[arg-type]
    page = parse(data, TextFormat.PLAIN, "p.txt", 10)
    assert page.format is TextFormat.PLAIN
    assert (page.width, page.height) == (None, None)
    assert words(page) == [[("Zürich", None), ("1848", None)], [("Straße", None), ("Bern", None)]]


def test_sniff() -> None:
    assert sniff(ocr_files.alto(LINES)) is TextFormat.ALTO
    assert sniff(ocr_files.alto(LINES, namespace=False)) is TextFormat.ALTO
    assert sniff(ocr_files.alto(LINES).decode().encode("utf-16")) is TextFormat.ALTO
    assert sniff(b"\xef\xbb\xbf  " + ocr_files.alto(LINES)) is TextFormat.ALTO
    assert sniff(ocr_files.hocr(LINES)) is TextFormat.HOCR
    assert sniff(ocr_files.hocr(LINES, xhtml=False)) is TextFormat.HOCR
    assert sniff(ocr_files.plain([["Zürich"]])) is TextFormat.PLAIN
    assert sniff(b"") is TextFormat.PLAIN
    assert sniff(b'<?xml version="1.0"?><TEI><text/></TEI>') is None


def test_utf16_files() -> None:
    alto = ocr_files.alto(LINES).decode().replace('encoding="UTF-8"', 'encoding="UTF-16"')
    assert parse(alto.encode("utf-16"), None, "p.xml", 10).text == "Zürich 1848\nStraße & <Bern>"
    hocr = ocr_files.hocr(LINES).decode().encode("utf-16")
    assert parse(hocr, None, "p.hocr", 10).text == "Zürich 1848\nStraße & <Bern>"


def test_format_said_by_the_source_or_told_from_the_bytes() -> None:
    hocr = ocr_files.hocr(LINES)
    assert parse(hocr, TextFormat.ALTO, "p.xml", 10).format is TextFormat.HOCR  # an .xml hOCR
    assert parse(ocr_files.alto(LINES), TextFormat.HOCR, "p.html", 10).format is TextFormat.ALTO
    assert parse(hocr, TextFormat.PLAIN, "p.txt", 1000).format is TextFormat.PLAIN  # as said
    assert "not well-formed XML" in refused(b"plain words", TextFormat.ALTO)
    assert "neither ALTO nor hOCR" in refused(b'<?xml version="1.0"?><TEI><text/></TEI>')
    assert "root is <TEI>" in refused(b"<TEI><text/></TEI>", TextFormat.ALTO)


# --- hostile files ---------------------------------------------------------------------------


def test_external_entity_would_be_read_by_a_naive_parser_and_is_refused(tmp_path: Path) -> None:
    secret = tmp_path / "secret.txt"
    secret.write_text("TOPSECRET")
    naive = etree.XMLParser(resolve_entities=True)
    for kind in ("alto", "hocr"):
        data = ocr_files.external_entity(str(secret), kind)
        # the attack works on a parser that resolves entities: the file is read into the text
        assert b"TOPSECRET" in etree.tostring(etree.fromstring(data, naive))
        assert "declares XML entities" in refused(data)
    assert "declares XML entities" in refused(
        ocr_files.external_entity(str(secret), parameter=True)
    )
    utf16 = ocr_files.external_entity(str(secret)).decode().encode("utf-16")
    assert "declares XML entities" in refused(utf16)


def test_entity_bombs_would_expand_in_a_naive_parser_and_are_refused() -> None:
    small = ocr_files.billion_laughs(depth=4)  # under libxml2's own amplification limit
    naive = etree.fromstring(small, etree.XMLParser(resolve_entities=True))
    assert len(next(naive.iter("{*}String")).get("CONTENT") or "") == 3 * 10**4
    assert len(small) < 1500
    for data in (small, ocr_files.billion_laughs(), ocr_files.billion_laughs("hocr")):
        assert "declares XML entities" in refused(data)


@pytest.mark.parametrize("kind", ["alto", "hocr"])
def test_deep_nesting_is_refused(kind: str) -> None:
    assert parse(ocr_files.deep(MAX_DEPTH - 20, kind), None, "p", 10).text == "deep"  # type: ignore[arg-type]
    for depth in (MAX_DEPTH + 1, 300, 10_000):
        message = refused(ocr_files.deep(depth, kind))  # type: ignore[arg-type]
        assert "deep" in message or "depth" in message


def test_broken_files_are_refused() -> None:
    assert "not well-formed XML" in refused(ocr_files.malformed())
    assert "without an hOCR page" in refused(ocr_files.html_not_hocr())
    assert "no Page element" in refused(b'<alto xmlns="http://www.loc.gov/standards/alto/ns-v3#"/>')
    assert "is neither UTF-8" in refused(b"Z\xfcrich", TextFormat.PLAIN)
    assert "is neither UTF-8" in refused(b"Z\xfcrich")
    assert "NUL" in refused(b"Zurich\x00\x01")
    assert "Unsupported encoding" in refused(b'<?xml version="1.0" encoding="bogus"?><alto/>')


@pytest.mark.parametrize("kind", ["alto", "hocr"])
def test_page_size_missing_or_absurd_is_refused(kind: str) -> None:
    make = ocr_files.alto if kind == "alto" else ocr_files.hocr
    assert "no page size" in refused(make(LINES, None))
    for size in [(0, 100), (100, -5), (2e6, 100)]:
        assert "page size of" in refused(make(LINES, size))


def test_more_words_than_allowed_is_refused() -> None:
    grid = ocr_files.grid(10, 10)
    for data in (ocr_files.alto(grid), ocr_files.hocr(grid), ocr_files.plain(grid)):
        assert len(parse(data, None, "p", 100).lines) == 10
        assert "more than 99 words" in refused(data, max_words=99)


LONGEST = 200  # characters of one word as read (a longer one is cut: docs/search.md)


def texts(page: PageText) -> list[str]:
    return [word.text for line in page.lines for word in line.words]


@pytest.mark.parametrize("kind", ["alto", "hocr", "plain", "hocr line"])
def test_a_word_of_a_megabyte_is_cut_into_words_of_200_characters_and_nothing_is_lost(
    kind: str,
) -> None:
    """One hostile "word" (a blob of a megabyte) would be carried whole by every hit on it,
    and by every answer kept; it is read as words of at most 200 characters, each with its
    box, the words around it as they were."""
    blob = "x" * 1_000_000
    spec: list[list[ocr_files.WordSpec]] = [
        [("before", (10, 10, 50, 20)), (blob, (70, 10, 500, 20)), ("after", (580, 10, 50, 20))]
    ]
    if kind == "alto":
        data = ocr_files.alto(spec)
    elif kind == "hocr":
        data = ocr_files.hocr(spec)
    elif kind == "plain":
        data = ocr_files.plain(spec)
    else:  # an hOCR line without word elements: its text's words
        data = (
            "<html><body><div class='ocr_page' title='bbox 0 0 800 600'><span class='ocr_line' "
            f"title='bbox 10 10 630 30'>before {blob} after</span></div></body></html>"
        ).encode()
    page = parse(data, None, "p", 100_000)
    found = texts(page)
    assert max(len(text) for text in found) <= LONGEST, max(len(text) for text in found)
    assert found[0] == "before" and found[-1] == "after"
    assert "".join(found[1:-1]) == blob  # nothing lost
    assert len(found) == 2 + 1_000_000 // LONGEST
    if kind in ("alto", "hocr"):  # each piece has the box of the word it was cut from
        assert {word.box for word in page.lines[0].words[1:-1]} == {(70, 10, 500, 20)}


def test_a_line_given_as_one_word_is_cut_between_its_words() -> None:
    """Text written without spaces between words, or a producer that gives a whole line as
    one ALTO ``String``: pieces end after a space or punctuation mark when one is in reach, so
    that each term stays whole, and never begin with a mark (Devanagari vowel signs)."""
    sentence = "。".join(["日本語の文章" * 6] * 12)  # 36 letters, then a full stop
    found = texts(parse(ocr_files.plain([[sentence]]), None, "p.txt", 1000))
    assert max(len(text) for text in found) <= LONGEST
    assert "".join(found) == sentence
    assert all(text.endswith("。") for text in found[:-1]), found
    assert terms(" ".join(found)) == terms(sentence)
    line = " ".join(f"word{n}" for n in range(100))  # one String of 589 characters
    data = ocr_files.alto([[(line, (0, 0, 900, 20))]])
    found = texts(parse(data, None, "p.xml", 1000))
    assert max(len(text) for text in found) <= LONGEST
    assert " ".join(found) == line  # cut at spaces, so no term is cut
    devanagari = "कि" * 300  # a letter and its vowel sign, no space, no punctuation
    found = texts(parse(ocr_files.plain([[devanagari]]), None, "p.txt", 1000))
    assert "".join(found) == devanagari
    assert all(len(text) <= LONGEST and text.startswith("क") for text in found), found


def test_a_file_of_one_word_of_32_megabytes_is_refused_as_too_many_words() -> None:
    """Text without a space, as large as ``search.max_text_bytes``: its words of 200
    characters are more than ``max_words``, so it is refused, quickly."""
    blob = b"A" * (32 * 1024 * 1024)
    assert "more than 100000 words" in refused(blob, TextFormat.PLAIN, max_words=100_000)
    assert len(parse(blob[:10_000], TextFormat.PLAIN, "p", 100).lines[0].words) == 50


ALTO = ocr_files.alto(LINES)


@settings(max_examples=300, deadline=None, suppress_health_check=[HealthCheck.too_slow])
@given(
    st.one_of(
        st.binary(max_size=400),
        # an ALTO or hOCR file with bytes changed, cut or inserted anywhere
        st.tuples(
            st.sampled_from([ALTO, ocr_files.hocr(LINES)]),
            st.integers(0, len(ALTO)),
            st.integers(0, 40),
            st.binary(max_size=20),
        ).map(lambda t: t[0][: t[1]] + t[3] + t[0][t[1] + t[2] :]),
    ),
    st.sampled_from([None, *TextFormat]),
)
def test_any_bytes_are_read_or_refused(data: bytes, format: TextFormat | None) -> None:
    try:
        page = parse(data, format, "p", 1000)
    except TextRefused as error:
        assert "\n" not in str(error)
        return
    assert isinstance(page, PageText)
    for line in page.lines:
        assert line.words
