"""Reading one canvas's OCR file into a :class:`~iiif_shim.model.text.PageText`: ALTO (v1 to
v4 namespaces, or none), hOCR and plain text, in the file's own units (``PageText.scaled`` puts
the boxes on the canvas). What a file is, when its source could not say, is told from its bytes
(:func:`sniff`). Blocking and CPU-bound: the search service calls :func:`parse` in its threads.

Hostile and broken files are refused with :class:`TextRefused`, one line naming the file and
why, never parsed half-way into an index: a file declaring XML entities (entity expansion
bombs, external entities reading local files or URLs: nothing of a DTD is ever loaded or
expanded, and a file that declares an entity is refused outright), XML that is not well-formed,
XML that is neither ALTO nor hOCR, HTML without an hOCR page, elements nested more than
:data:`MAX_DEPTH` deep, a boxed format without a page size or with one that is not positive or
larger than :data:`MAX_PAGE_SIDE`, more than ``max_words`` words, text that is neither UTF-8 nor
UTF-16 with a byte order mark, or holds NUL characters. Parsing streams (``lxml.etree.iterparse``,
elements cleared as they are read) and stops at the end of the first page.

ALTO: the first ``Page`` only (a file of several pages is read as its first); its ``WIDTH`` and
``HEIGHT`` (else the far edges of its ``PrintSpace``) in the file's ``MeasurementUnit`` (pixel,
mm10, inch1200: boxes are in the same unit, so scaling by the page size needs no conversion);
each ``TextLine`` a line, each ``String`` a word (``CONTENT``, box ``HPOS VPOS WIDTH HEIGHT``).
A word hyphenated over a line break (``SUBS_TYPE`` ``HypPart1`` then ``HypPart2``) is searched
whole: its first part's text is the whole word (``SUBS_CONTENT``) and its second part, the next
word, has the empty text (no terms of its own: see ``model/text.Word``) and its own box, so a
hit on the word is drawn on both lines (``match.py``).

hOCR: the first ``ocr_page`` (its ``bbox`` right and bottom edges are the page size); lines are
the elements of class ``ocr_line``, ``ocrx_line``, ``ocr_header``, ``ocr_caption`` and
``ocr_textfloat``, words those of class ``ocrx_word`` with a ``bbox`` in their ``title``; a line
without words gives words of its text, each with the line's box. A word ending in a hyphen is
kept as printed (hOCR does not say whether the hyphen is the word's own).

Plain text: one line per line, words between spaces, no boxes (hits target the whole canvas).
Word texts are NFC, without control characters, and at most :data:`MAX_WORD` characters: a
longer one (a hostile "word" of megabytes, a base64 blob, text without spaces: Chinese or Thai
written a paragraph to a line) is cut into words of at most that many, each with the box of
the word it was cut from (:func:`_pieces`: after a space, punctuation mark or symbol when
there is one in the second half of a piece, not before a mark), and each counts towards
``max_words``. So a hit, which carries the words it matched, holds at most MAX_WORD characters
a word, and nothing of the text is lost: a file of one word of 32 MB is refused as more than
``max_words`` words."""

from __future__ import annotations

import codecs
import io
import math
import re
import unicodedata
from collections.abc import Callable, Iterator

from lxml import etree

from iiif_shim.model.text import Line, PageText, TextFormat, Word

MAX_DEPTH = 100  # elements nested in an OCR file (ALTO and hOCR need about a dozen)
MAX_PAGE_SIDE = 1e6  # a page's width or height in its units (inch1200: 833 inches)
# characters of one word: English and German words, DOIs and most URLs are below 100; in 2.9
# million whitespace-separated tokens of the technical text on the test machine (/usr/share/doc,
# URL-heavy) 7 were longer than 200 (URLs, hex keys, table rules), none of them prose
MAX_WORD = 200
_SNIFF = 4096  # bytes looked at to tell a file's format

LINE_CLASSES = frozenset({"ocr_line", "ocrx_line", "ocr_header", "ocr_caption", "ocr_textfloat"})

Box4 = tuple[float, float, float, float]


class TextRefused(ValueError):
    """An OCR file that is not read: ``str()`` is one line naming the file and why."""

    def __init__(self, name: str, why: str) -> None:
        self.name = name
        self.why = " ".join(why.split())
        super().__init__(f"{name}: {self.why}")


_ENTITY = [
    b"<!ENTITY",
    "<!ENTITY".encode("utf-16-le"),
    "<!ENTITY".encode("utf-16-be"),
]
_CONTROLS = dict.fromkeys([*range(0x20), *range(0x7F, 0xA0)], " ")
_LAST_NON_WORD = re.compile(r"(?s:.*)[\W_]")  # up to the last character not of a term
_LOOKS = 16  # marks looked past for a place to cut a long word (more: garbage, cut anywhere)
_BBOX = re.compile(r"(?:^|;)\s*bbox\s+(-?[\d.]+)\s+(-?[\d.]+)\s+(-?[\d.]+)\s+(-?[\d.]+)")


def _head(data: bytes) -> str:
    """The beginning of ``data`` as text, whatever its encoding among UTF-8 and UTF-16."""
    head = data[:_SNIFF]
    if head.startswith((codecs.BOM_UTF16_LE, codecs.BOM_UTF16_BE)):
        return head.decode("utf-16", errors="ignore").lstrip()
    if head[:4] in (b"<\x00?\x00", b"<\x00a\x00"):
        return head.decode("utf-16-le", errors="ignore").lstrip()
    if head[:4] in (b"\x00<\x00?", b"\x00<\x00a"):
        return head.decode("utf-16-be", errors="ignore").lstrip()
    return head.decode("utf-8", errors="ignore").lstrip("\ufeff \t\r\n")


_ALTO_ROOT = re.compile(r"<(?:[\w.-]+:)?alto[\s>/]")
_HTML = re.compile(r"<!doctype\s+html|<html[\s>]|<(?:body|div|span|p)[\s>]", re.IGNORECASE)


def sniff(data: bytes) -> TextFormat | None:
    """What ``data`` is: ALTO (an XML file whose root is ``alto``), hOCR (HTML or XHTML: whether
    it really is hOCR is found when it is read), plain text (anything not beginning with
    ``<``), or None: XML of another kind (TEI, PAGE, ...), which is not read."""
    head = _head(data)
    if not head.startswith("<"):
        return TextFormat.PLAIN
    if _ALTO_ROOT.search(head):
        return TextFormat.ALTO
    if _HTML.search(head):
        return TextFormat.HOCR
    return None


def parse(data: bytes, format: TextFormat | None, name: str, max_words: int) -> PageText:
    """The words of the OCR file ``data`` (called ``name`` in messages), in its own units.
    ``format``: what the source says the file is (None: told from the bytes; a file said to be
    ALTO that is hOCR, or the other way round, is read as what it is). Raises
    :class:`TextRefused`."""
    kind = format
    if kind is not TextFormat.PLAIN:
        sniffed = sniff(data)
        if sniffed is None and kind is None:
            raise TextRefused(name, "is XML, but neither ALTO nor hOCR")
        if kind is None or sniffed in (TextFormat.ALTO, TextFormat.HOCR):
            kind = sniffed
    if kind is TextFormat.PLAIN:
        return _plain(data, name, max_words)
    if any(marker in data for marker in _ENTITY):
        raise TextRefused(name, "declares XML entities (refused: they can expand or read files)")
    try:
        if kind is TextFormat.ALTO:
            return _alto(data, name, max_words)
        return _hocr(data, name, max_words)
    except TextRefused:
        raise
    except (etree.LxmlError, ValueError, LookupError) as error:
        message = str(error) or type(error).__name__
        what = "XML" if kind is TextFormat.ALTO else "HTML"
        raise TextRefused(name, f"is not well-formed {what} ({message})") from None


def _word(text: str | None) -> str:
    if not text:
        return ""
    return unicodedata.normalize("NFC", text.translate(_CONTROLS)).strip()


def _pieces(text: str, most: int) -> list[str]:
    """``text`` (a word as :func:`_word` gives it) as words of at most :data:`MAX_WORD`
    characters, in order: itself when it is that short; else cut after the last space,
    punctuation mark or symbol in the second half of each piece (so that a line given as one
    word, or a long name, keeps its terms whole), else after MAX_WORD characters, moved back
    so that no piece begins with a mark (a Devanagari vowel sign stays with its letter; past
    _LOOKS marks, in a row or before the last break, the text is garbage and cut anywhere).
    Past ``most`` pieces it stops, with more than ``most`` (the file is refused). About 1 µs
    a piece (32 MB of one letter: 0.2 s)."""
    if len(text) <= MAX_WORD:
        return [text]
    pieces: list[str] = []
    start = 0
    while len(text) - start > MAX_WORD:
        if len(pieces) > most:
            return pieces
        half, end = start + MAX_WORD // 2, start + MAX_WORD
        cut = end
        for _ in range(_LOOKS):
            found = _LAST_NON_WORD.match(text, half, cut)
            if found is None:
                break
            cut = found.end()
            if unicodedata.category(text[cut - 1])[0] in "ZPS":
                break  # a space, punctuation or symbol: the piece ends with it
            cut -= 1  # a mark, a joiner...: part of the word; look before it
        else:
            found = None
        if found is None:
            cut = end
            while cut > end - _LOOKS and unicodedata.category(text[cut])[0] == "M":
                cut -= 1
        if piece := text[start:cut].strip():
            pieces.append(piece)
        start = cut
    if piece := text[start:].strip():
        pieces.append(piece)
    return pieces


def _number(value: str | None) -> float | None:
    if value is None:
        return None
    try:
        number = float(value)
    except ValueError:
        return None
    return number if math.isfinite(number) else None


def _alto_box(element: etree._Element) -> Box4 | None:
    x, y = _number(element.get("HPOS")), _number(element.get("VPOS"))
    w, h = _number(element.get("WIDTH")), _number(element.get("HEIGHT"))
    if x is None or y is None or w is None or h is None or w < 0 or h < 0:
        return None
    return (x, y, w, h)


def _page_size(name: str, width: float | None, height: float | None) -> tuple[float, float]:
    if width is None or height is None:
        raise TextRefused(name, "gives no page size (needed to place its words on the canvas)")
    if not (0 < width <= MAX_PAGE_SIDE and 0 < height <= MAX_PAGE_SIDE):
        raise TextRefused(
            name,
            f"gives a page size of {width:g} x {height:g} (each side must be above 0 "
            f"and at most {MAX_PAGE_SIDE:.0f})",
        )
    return width, height


def _events(
    data: bytes, name: str, *, html: bool, hold: Callable[[], bool] = lambda: False
) -> Iterator[tuple[str, etree._Element]]:
    """Start and end events of ``data``, each element cleared (with its earlier siblings)
    once its end event is handled, unless ``hold()`` says its text is still to be read (it is
    inside a word or line not yet ended); deeper than :data:`MAX_DEPTH`: refused."""
    context = etree.iterparse(
        io.BytesIO(data),
        events=("start", "end"),
        html=html,
        resolve_entities=False,
        no_network=True,
        load_dtd=False,
        huge_tree=False,
        remove_comments=True,
        remove_pis=True,
    )
    depth = 0
    for event, element in context:
        if event == "start":
            depth += 1
            if depth > MAX_DEPTH:
                raise TextRefused(name, f"nests elements more than {MAX_DEPTH} deep")
            if depth == 1 and not html:
                dtd = element.getroottree().docinfo.internalDTD
                if dtd is not None and any(True for _ in dtd.iterentities()):
                    raise TextRefused(name, "declares XML entities")
            yield event, element
            continue
        depth -= 1
        yield event, element
        if hold():
            continue
        element.clear(keep_tail=False)
        parent = element.getparent()
        if parent is not None:
            while element.getprevious() is not None:
                del parent[0]


def _local(tag: object) -> str:
    return tag.rpartition("}")[2] if isinstance(tag, str) else ""


def _alto(data: bytes, name: str, max_words: int) -> PageText:
    lines: list[Line] = []
    line: list[Word] | None = None
    count = 0
    width = height = None
    in_page = False
    hyphen_open = False  # the last word read was the first part of a hyphenated word
    root = True
    for event, element in _events(data, name, html=False):
        local = _local(element.tag)
        if root:
            root = False
            if local != "alto":
                raise TextRefused(name, f"is XML whose root is <{local}>, not ALTO")
        if event == "end":
            if local == "TextLine" and line is not None:
                if line:
                    lines.append(Line(tuple(line)))
                line = None
            elif local == "Page" and in_page:
                break
            continue
        if local == "Page" and not in_page:
            in_page = True
            width, height = _number(element.get("WIDTH")), _number(element.get("HEIGHT"))
        elif not in_page:
            continue
        elif local == "PrintSpace" and (width is None or height is None):
            box = _alto_box(element)
            if box is not None:
                width, height = box[0] + box[2], box[1] + box[3]
        elif local == "TextLine":
            line = []
        elif local == "String" and line is not None:
            subs = element.get("SUBS_TYPE")
            if subs == "HypPart2" and hyphen_open:
                text = ""
            else:
                text = _word(element.get("CONTENT"))
                if subs == "HypPart1":
                    text = _word(element.get("SUBS_CONTENT")) or text
            hyphen_open = subs == "HypPart1" and bool(text)
            if text or subs == "HypPart2":
                pieces = _pieces(text, max_words - count)
                count += len(pieces)
                if count > max_words:
                    raise TextRefused(name, f"has more than {max_words} words on its page")
                box = _alto_box(element)
                line.extend(Word(piece, box) for piece in pieces)
    if not in_page:
        raise TextRefused(name, "has no Page element")
    width, height = _page_size(name, width, height)
    return PageText(tuple(lines), TextFormat.ALTO, width, height)


def _corners(title: str | None) -> tuple[float, float, float, float] | None:
    """``x0 y0 x1 y1`` of the ``bbox`` in an hOCR ``title``, if it has one."""
    found = _BBOX.search(title) if title else None
    if found is None:
        return None
    x0, y0, x1, y1 = (_number(value) for value in found.groups())
    if x0 is None or y0 is None or x1 is None or y1 is None:
        return None
    return (x0, y0, x1, y1)


def _bbox(title: str | None) -> Box4 | None:
    corners = _corners(title)
    if corners is None or corners[2] < corners[0] or corners[3] < corners[1]:
        return None
    x0, y0, x1, y1 = corners
    return (x0, y0, x1 - x0, y1 - y0)


def _classes(element: etree._Element) -> list[str]:
    value = element.get("class")
    return value.split() if value else []


def _hocr(data: bytes, name: str, max_words: int) -> PageText:
    lines: list[Line] = []
    words: list[Word] = []  # of the line being read (or of words outside any line)
    line_box: Box4 | None = None
    line_depth = 0  # > 0 while inside a line element (its nesting)
    word_depth = 0  # > 0 while inside a word element
    count = 0
    page: tuple[float, float, float, float] | None = None
    in_page = False
    page_seen = False

    def add(text: str, box: Box4 | None) -> None:
        nonlocal count
        pieces = _pieces(text, max_words - count)
        count += len(pieces)
        if count > max_words:
            raise TextRefused(name, f"has more than {max_words} words on its page")
        words.extend(Word(piece, box) for piece in pieces)

    def flush() -> None:
        if words:
            lines.append(Line(tuple(words)))
            words.clear()

    def hold() -> bool:  # the text of a word or line is read at its end
        return line_depth > 0 or word_depth > 0

    for event, element in _events(data, name, html=True, hold=hold):
        classes = _classes(element)
        if event == "start":
            if "ocrx_word" in classes:
                word_depth += 1
            if "ocr_page" in classes and not page_seen:
                page_seen = in_page = True
                page = _corners(element.get("title"))
            elif in_page and LINE_CLASSES.intersection(classes):
                if line_depth == 0:
                    flush()
                    line_box = _bbox(element.get("title"))
                line_depth += 1
            continue
        if not in_page:
            continue
        if "ocrx_word" in classes:
            word_depth -= 1
            text = _word("".join(element.itertext()))
            if text and word_depth == 0:
                add(text, _bbox(element.get("title")) or line_box)
        elif LINE_CLASSES.intersection(classes):
            line_depth -= 1
            if line_depth == 0:
                if not words:  # a line without words: the words of its text, with its box
                    for text in _word("".join(element.itertext())).split():
                        add(text, line_box)
                flush()
        elif "ocr_page" in classes:
            flush()
            break
    if not page_seen:
        raise TextRefused(name, "is HTML without an hOCR page (no element of class ocr_page)")
    if page is None:
        raise TextRefused(name, "gives no page size (no bbox in its ocr_page's title)")
    width, height = _page_size(name, page[2], page[3])
    return PageText(tuple(lines), TextFormat.HOCR, width, height)


def _plain(data: bytes, name: str, max_words: int) -> PageText:
    try:
        if data.startswith((codecs.BOM_UTF16_LE, codecs.BOM_UTF16_BE)):
            text = data.decode("utf-16")
        else:
            text = data.decode("utf-8-sig")
    except UnicodeDecodeError:
        raise TextRefused(name, "is neither UTF-8 text nor UTF-16 with a byte order mark") from None
    if "\x00" in text:
        raise TextRefused(name, "holds NUL characters (not a text file)")
    lines: list[Line] = []
    count = 0
    for row in text.splitlines():
        found: list[str] = []
        for part in row.split():
            if word := _word(part):
                pieces = _pieces(word, max_words - count)
                count += len(pieces)
                if count > max_words:
                    raise TextRefused(name, f"has more than {max_words} words on its page")
                found.extend(pieces)
        if found:
            lines.append(Line(tuple(Word(word) for word in found)))
    return PageText(tuple(lines), TextFormat.PLAIN)
