"""OCR files for tests, made with known words at known positions: ALTO (v2 to v4, with or
without a namespace, in pixel, mm10 or inch1200 units), hOCR and plain text, and the hostile
or broken variants the parser must refuse (entities, billion laughs, deep nesting, no page size).

``lines`` is a list of lines, each a list of words ``(text, (x, y, w, h))`` in the page's units
(plain text: the words alone, or the same pairs, whose boxes are ignored). A word may also be a
:class:`Hyp`, one part of a word hyphenated over a line break (ALTO ``HypPart1``/``HypPart2``,
hOCR a word ending in a hyphen). Every function returns the file's bytes."""

from __future__ import annotations

import textwrap
from collections.abc import Sequence
from dataclasses import dataclass
from html import escape as html_escape
from pathlib import Path
from typing import Literal
from xml.sax.saxutils import quoteattr

Box = tuple[float, float, float, float]


@dataclass(frozen=True)
class Hyp:
    """One part of a hyphenated word: ``text`` as printed on its line (without the hyphen),
    ``part`` 1 (end of a line) or 2 (start of the next), ``whole`` the word it is part of."""

    text: str
    box: Box
    part: Literal[1, 2]
    whole: str


WordSpec = tuple[str, Box] | Hyp
Lines = Sequence[Sequence[WordSpec]]

ALTO_NAMESPACES = {
    2: "http://www.loc.gov/standards/alto/ns-v2#",
    3: "http://www.loc.gov/standards/alto/ns-v3#",
    4: "http://www.loc.gov/standards/alto/ns-v4#",
}


def _n(value: float) -> str:
    return str(int(value)) if float(value).is_integer() else repr(float(value))


def _union(boxes: Sequence[Box]) -> Box:
    x0 = min(b[0] for b in boxes)
    y0 = min(b[1] for b in boxes)
    x1 = max(b[0] + b[2] for b in boxes)
    y1 = max(b[1] + b[3] for b in boxes)
    return (x0, y0, x1 - x0, y1 - y0)


def _box(word: WordSpec) -> Box:
    return word.box if isinstance(word, Hyp) else word[1]


def _alto_page(
    lines: Lines, page: tuple[float, float] | None, size: Literal["page", "printspace"], nr: int
) -> str:
    out: list[str] = []
    attrs = f' ID="P{nr}" PHYSICAL_IMG_NR="{nr}"'
    space = ""
    if page is not None:
        dims = f'WIDTH="{_n(page[0])}" HEIGHT="{_n(page[1])}"'
        if size == "page":
            attrs += " " + dims
            space = f' HPOS="0" VPOS="0" {dims}'
        else:
            space = f' HPOS="0" VPOS="0" {dims}'
    out.append(f"<Page{attrs}><PrintSpace{space}>")
    out.append(f'<TextBlock ID="B{nr}_1">')
    for i, line in enumerate(lines, 1):
        lb = _union([_box(w) for w in line]) if line else (0, 0, 0, 0)
        out.append(
            f'<TextLine ID="L{nr}_{i}" HPOS="{_n(lb[0])}" VPOS="{_n(lb[1])}" '
            f'WIDTH="{_n(lb[2])}" HEIGHT="{_n(lb[3])}">'
        )
        for j, word in enumerate(line, 1):
            if j > 1:
                out.append("<SP/>")
            b = _box(word)
            where = f'HPOS="{_n(b[0])}" VPOS="{_n(b[1])}" WIDTH="{_n(b[2])}" HEIGHT="{_n(b[3])}"'
            if isinstance(word, Hyp):
                out.append(
                    f'<String ID="S{nr}_{i}_{j}" CONTENT={quoteattr(word.text)} {where} '
                    f'SUBS_TYPE="HypPart{word.part}" SUBS_CONTENT={quoteattr(word.whole)}/>'
                )
                if word.part == 1:
                    out.append('<HYP CONTENT="-"/>')
            else:
                out.append(f'<String ID="S{nr}_{i}_{j}" CONTENT={quoteattr(word[0])} {where}/>')
        out.append("</TextLine>")
    out.append("</TextBlock></PrintSpace></Page>")
    return "\n".join(out)


def alto(
    lines: Lines,
    page: tuple[float, float] | None = (1000, 1500),
    unit: Literal["pixel", "mm10", "inch1200"] = "pixel",
    version: Literal[2, 3, 4] = 3,
    namespace: bool = True,
    *,
    size: Literal["page", "printspace"] = "page",
    more_pages: Sequence[Lines] = (),
    doctype: str = "",
) -> bytes:
    """An ALTO file of one page (``page`` = its width and height in ``unit``; None: no size at
    all). ``size="printspace"``: the size only on PrintSpace (Page has none). ``more_pages``:
    further Page elements after the first. ``doctype``: text put before the root element."""
    ns = f' xmlns="{ALTO_NAMESPACES[version]}"' if namespace else ""
    pages = [_alto_page(lines, page, size, 1)]
    pages += [_alto_page(more, page, size, n) for n, more in enumerate(more_pages, 2)]
    text = (
        '<?xml version="1.0" encoding="UTF-8"?>\n'
        f"{doctype}"
        f"<alto{ns}>\n"
        f"<Description><MeasurementUnit>{unit}</MeasurementUnit></Description>\n"
        "<Layout>\n" + "\n".join(pages) + "\n</Layout>\n</alto>\n"
    )
    return text.encode("utf-8")


def _bbox(b: Box) -> str:
    return f"bbox {_n(b[0])} {_n(b[1])} {_n(b[0] + b[2])} {_n(b[1] + b[3])}"


def hocr(
    lines: Lines,
    page: tuple[float, float] | None = (1000, 1500),
    *,
    line_class: str = "ocr_line",
    xhtml: bool = True,
) -> bytes:
    """An hOCR file of one page (``page`` None: the ocr_page has no bbox). A :class:`Hyp` of
    part 1 is written with its hyphen, as Tesseract does. ``line_class``: ocr_line, ocrx_line,
    ocr_header, ocr_caption or ocr_textfloat. ``xhtml`` False: an HTML5 file without the XML
    declaration and namespace."""
    head = (
        '<?xml version="1.0" encoding="UTF-8"?>\n'
        '<!DOCTYPE html PUBLIC "-//W3C//DTD XHTML 1.0 Transitional//EN" '
        '"http://www.w3.org/TR/xhtml1/DTD/xhtml1-transitional.dtd">\n'
        '<html xmlns="http://www.w3.org/1999/xhtml" xml:lang="en" lang="en">\n'
        if xhtml
        else "<!DOCTYPE html>\n<html lang='en'>\n"
    )
    out = [
        head,
        "<head><title></title>",
        '<meta http-equiv="Content-Type" content="text/html;charset=utf-8"/>',
        "<meta name='ocr-system' content='tesseract 5.3.0'/>",
        "<meta name='ocr-capabilities' content='ocr_page ocr_carea ocr_par ocr_line ocrx_word'/>",
        "</head><body>",
    ]
    size = f"; bbox 0 0 {_n(page[0])} {_n(page[1])}" if page is not None else ""
    out.append(f"<div class='ocr_page' id='page_1' title='image \"page.tif\"{size}; ppageno 0'>")
    out.append("<div class='ocr_carea' id='block_1_1'><p class='ocr_par' id='par_1_1'>")
    for i, line in enumerate(lines, 1):
        lb = _union([_box(w) for w in line]) if line else (0, 0, 0, 0)
        out.append(f"<span class='{line_class}' id='line_1_{i}' title='{_bbox(lb)}; baseline 0 0'>")
        for j, word in enumerate(line, 1):
            text = word.text + ("-" if word.part == 1 else "") if isinstance(word, Hyp) else word[0]
            out.append(
                f"<span class='ocrx_word' id='word_1_{i}_{j}' "
                f"title='{_bbox(_box(word))}; x_wconf 95'>{html_escape(text)}</span>"
            )
        out.append("</span>")
    out.append("</p></div></div></body></html>\n")
    return "\n".join(out).encode("utf-8")


def plain(
    lines: Sequence[Sequence[str | WordSpec]],
    *,
    encoding: Literal["utf-8", "utf-8-sig", "utf-16"] = "utf-8",
) -> bytes:
    """A plain-text file: the words of each line separated by spaces, one line per line
    (``utf-8-sig``: with a BOM; ``utf-16``: Python's, with a BOM)."""

    def text(word: str | WordSpec) -> str:
        if isinstance(word, str):
            return word
        if isinstance(word, Hyp):
            return word.text + ("-" if word.part == 1 else "")
        return word[0]

    return ("\n".join(" ".join(text(w) for w in line) for line in lines) + "\n").encode(encoding)


def grid(rows: int, columns: int, *, word: str = "word", size: float = 10) -> list[list[WordSpec]]:
    """``rows`` lines of ``columns`` words (``word`` + its number), each ``size`` square, one
    apart: a page with many words (for limits and measurements)."""
    return [
        [
            (f"{word}{r * columns + c}", (c * (size + 1), r * (size + 1), size, size))
            for c in range(columns)
        ]
        for r in range(rows)
    ]


# Hostile and broken files -------------------------------------------------------------------


def billion_laughs(kind: Literal["alto", "hocr"] = "alto", depth: int = 10) -> bytes:
    """The classic entity expansion bomb: ``depth`` levels of ten references each, used in a
    word (a parser expanding it builds 10**depth copies of "lol")."""
    ents = ['<!ENTITY lol0 "lol">']
    ents += [f'<!ENTITY lol{i} "{f"&lol{i - 1};" * 10}">' for i in range(1, depth + 1)]
    root = "alto" if kind == "alto" else "html"
    doctype = f"<!DOCTYPE {root} [\n" + "\n".join(ents) + "\n]>\n"
    word = f"&lol{depth};"
    if kind == "alto":
        body = alto([[("PLACEHOLDER", (10, 10, 50, 20))]], doctype=doctype)
    else:
        body = _with_doctype(hocr([[("PLACEHOLDER", (10, 10, 50, 20))]]), doctype)
    return body.replace(b"PLACEHOLDER", word.encode())


def external_entity(
    target: str, kind: Literal["alto", "hocr"] = "alto", *, parameter: bool = False
) -> bytes:
    """A file referring to an external entity naming ``target`` (a file path or URL): a parser
    resolving entities would read that file into the document (hOCR: as the word; ALTO: as
    the source image's file name, XML allowing no external entity in an attribute). ``parameter``:
    a parameter entity in the internal subset instead (``%ext;``)."""
    root = "alto" if kind == "alto" else "html"
    if parameter:
        doctype = f'<!DOCTYPE {root} [<!ENTITY % ext SYSTEM "{target}"> %ext;]>\n'
        word = "secret"
    else:
        doctype = f'<!DOCTYPE {root} [<!ENTITY ext SYSTEM "{target}">]>\n'
        word = "&ext;"
    if kind == "alto":
        # XML forbids external entities in attributes (where ALTO keeps its words): the
        # reference goes into an element's text, the source image's file name
        body = alto([[("secret", (10, 10, 50, 20))]], doctype=doctype)
        return body.replace(
            b"<Description>",
            b"<Description><sourceImageInformation><fileName>"
            + word.encode()
            + b"</fileName></sourceImageInformation>",
        )
    body = _with_doctype(hocr([[("PLACEHOLDER", (10, 10, 50, 20))]]), doctype)
    return body.replace(b"PLACEHOLDER", word.encode())


def _with_doctype(xhtml: bytes, doctype: str) -> bytes:
    head, _, rest = xhtml.partition(b"<!DOCTYPE")
    _, _, rest = rest.partition(b">\n")
    return head + doctype.encode() + rest


def deep(depth: int, kind: Literal["alto", "hocr"] = "alto") -> bytes:
    """A file whose one word is wrapped in ``depth`` nested elements (inside a TextLine for
    ALTO, inside an ocrx_word for hOCR)."""
    if kind == "alto":
        body = alto([[("deep", (10, 10, 50, 20))]])
        return body.replace(
            b'<String ID="S1_1_1"',
            b"<Nest>" * depth + b'<String ID="S1_1_1"',
        ).replace(b"</TextLine>", b"</Nest>" * depth + b"</TextLine>")
    body = hocr([[("PLACEHOLDER", (10, 10, 50, 20))]])
    return body.replace(
        b"PLACEHOLDER", b"<span>" * depth + b"PLACEHOLDER" + b"</span>" * depth
    ).replace(b"PLACEHOLDER", b"deep")


def malformed(kind: Literal["alto", "hocr"] = "alto") -> bytes:
    """A file cut in the middle of an element (a truncated download)."""
    body = (
        alto([[("word", (10, 10, 50, 20))]])
        if kind == "alto"
        else hocr([[("word", (10, 10, 50, 20))]])
    )
    return body[: body.index(b"<String" if kind == "alto" else b"<span class='ocrx_word'") + 12]


def html_not_hocr() -> bytes:
    """An ordinary web page (an error page where an OCR file was expected)."""
    return (
        b"<!DOCTYPE html>\n<html><head><title>404 Not Found</title></head>"
        b"<body><h1>Not Found</h1><p>The requested URL was not found.</p></body></html>\n"
    )


def catalogue_config(folder: Path, search: str, *, text_origins: str | None = None) -> Path:
    """``folder/shim.yaml``: the images of ``folder/images`` and the CSV source
    ``folder/objects.csv`` (columns ``object``, ``image``, ``text``; text URLs allowed from
    ``text_origins``), and ``search:`` as given (a flow mapping, or lines of a block)."""
    origins = f'\n      text_origins: ["{text_origins}"]' if text_origins else ""
    value = f" {search}" if search.startswith("{") else "\n" + textwrap.indent(search, "  ")
    config = folder / "shim.yaml"
    config.write_text(
        "backends:\n  local: {type: files, root: images}\nroutes:\n  - {backend: local}\n"
        "presentation:\n  sources:\n    catalogue:\n      type: csv\n      path: objects.csv\n"
        f"      columns: {{object: object, image: image, text: text}}{origins}\n"
        f"search:{value.rstrip()}\n"
    )
    return config
