"""The values that pass between the stages of Content Search, frozen: a text file as a source
read it (:class:`TextFile`), the page of words parsed from it (:class:`PageText`), a query as
the user's ``q`` is understood (:class:`Query`), and a hit found on a page (:class:`Hit`).

Stages: a source reads a canvas's text file (``presentation/sources``), ``search/ocr.py``
parses it into a :class:`PageText` in the OCR page's own units, which is scaled to the canvas's
pixels (:meth:`PageText.scaled`) and kept in the index (``search/index.py``); a search's ``q``
is parsed by ``search/words.py`` into a :class:`Query`, the index names the pages that may
match, and ``search/match.py`` finds the :class:`Hit` s on them; ``search/documents.py``
writes them out in 2.0 and 1.0 shapes. Plain values here, so that the sources (below the
search package) and the search package share them."""

from __future__ import annotations

from dataclasses import dataclass
from enum import StrEnum


class TextFormat(StrEnum):
    """What an OCR file is: ALTO (any version 2 to 4), hOCR, or plain text (no boxes)."""

    ALTO = "alto"
    HOCR = "hocr"
    PLAIN = "plain"

    @property
    def media_type(self) -> str:
        """The type it is served with as a canvas's ``seeAlso`` (hOCR never as text/html)."""
        return _MEDIA[self]

    @property
    def profile(self) -> str | None:
        """The ``profile`` of its ``seeAlso`` (a URI naming the format), if there is one."""
        return _PROFILE[self]


_MEDIA = {
    TextFormat.ALTO: "application/xml",
    TextFormat.HOCR: "text/vnd.hocr+html",
    TextFormat.PLAIN: "text/plain; charset=utf-8",
}
_PROFILE = {
    TextFormat.ALTO: "http://www.loc.gov/standards/alto/",
    TextFormat.HOCR: "http://kba.github.io/hocr-spec/1.2/",
    TextFormat.PLAIN: None,
}


@dataclass(frozen=True)
class TextFile:
    """One canvas's text file as its source read it. ``stamp`` changes whenever the file does
    (size and modification time, or an ETag): an index keeps it to skip unchanged files.
    ``format`` is what the source was told or could tell from the name (else None: ``ocr.py``
    tells from the bytes). ``name`` says where it is, for messages (a path or a URL)."""

    data: bytes
    stamp: str
    name: str
    format: TextFormat | None = None


Box = tuple[int, int, int, int]  # x, y, w, h


@dataclass(frozen=True)
class Word:
    """A word as the OCR gives it (its text as written, NFC) and its box; ``box`` None for
    plain text. The empty ``text``: the second part of a word hyphenated over a line break
    (ALTO ``HypPart2``), whose whole text is the word before it (the last of the line
    before): it has no terms of its own, only its box."""

    text: str
    box: tuple[float, float, float, float] | None = None  # x, y, w, h in the page's units


@dataclass(frozen=True)
class Line:
    words: tuple[Word, ...]

    @property
    def text(self) -> str:
        return " ".join(word.text for word in self.words if word.text)


@dataclass(frozen=True)
class PageText:
    """The words of one page, line by line, in reading order. ``width`` and ``height``: the
    page's size in the units of the boxes (None for plain text). After :meth:`scaled`, the
    units are the canvas's pixels and every box is whole numbers inside the canvas."""

    lines: tuple[Line, ...]
    format: TextFormat
    width: float | None = None
    height: float | None = None

    @property
    def text(self) -> str:
        return "\n".join(line.text for line in self.lines)

    def scaled(self, width: int, height: int) -> PageText:
        """This page with its boxes in a ``width`` x ``height`` canvas's pixels: scaled from
        the page's own size (OCR is often of the master, the canvas of what the image service
        offers), rounded outwards, clipped to the canvas."""
        if self.width is None or self.height is None or not self.width or not self.height:
            return PageText(
                tuple(Line(tuple(Word(w.text) for w in line.words)) for line in self.lines),
                self.format,
                width,
                height,
            )
        sx, sy = width / self.width, height / self.height

        def box(
            b: tuple[float, float, float, float] | None,
        ) -> tuple[float, float, float, float] | None:
            if b is None:
                return None
            x0 = min(max(int(b[0] * sx), 0), width)
            y0 = min(max(int(b[1] * sy), 0), height)
            x1 = min(max(-int(-(b[0] + b[2]) * sx), x0), width)
            y1 = min(max(-int(-(b[1] + b[3]) * sy), y0), height)
            return (x0, y0, x1 - x0, y1 - y0)

        return PageText(
            tuple(Line(tuple(Word(w.text, box(w.box)) for w in line.words)) for line in self.lines),
            self.format,
            width,
            height,
        )


@dataclass(frozen=True)
class Query:
    """``q`` as understood: every one of ``words`` (folded terms, ``words.fold``), every one of
    ``phrases`` (runs of folded terms, in order), and every one of ``prefixes`` (folded term
    beginnings, ``word*``). All empty: no restriction on the text (every line is a hit)."""

    words: tuple[str, ...] = ()
    phrases: tuple[tuple[str, ...], ...] = ()
    prefixes: tuple[str, ...] = ()

    @property
    def empty(self) -> bool:
        return not (self.words or self.phrases or self.prefixes)


@dataclass(frozen=True)
class Span:
    """The part of one hit on one line: words ``first`` to ``last`` (indexes into the line,
    inclusive) and their box on the canvas (None for plain text: the whole canvas)."""

    line: int
    first: int
    last: int
    box: Box | None


@dataclass(frozen=True)
class Hit:
    """One match of a query on one canvas (0-based ``canvas``): one span per line it covers (a
    phrase over a line break has two), and its context as text: what comes ``before`` it, the
    words it matched (``match``, as written) and what comes ``after``."""

    canvas: int
    spans: tuple[Span, ...]
    before: str
    match: str
    after: str
