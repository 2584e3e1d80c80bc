"""The one normalisation of text for search, and how a user's ``q`` is understood.

:func:`fold` is applied to every word indexed and to every word of a query, by both index
engines and by the hit finder (``match.py``), so that ``Zürich``, ``ZURICH`` and ``zurich``
are one term, ``Straße`` is ``strasse`` and ``ﬁnd`` is ``find``. :func:`terms` cuts folded text
into terms: runs of letters and digits (``[^\\W_]``), with the marks of scripts whose marks are
part of the letters (Devanagari vowel signs and the like, which ``fold`` keeps) inside the term
rather than cutting it. A word as the OCR gives it (``self-made``, ``l'eau``) may hold several
terms; each belongs to that word (:func:`word_terms`: the terms of a page's words in one pass).

:func:`parse_query` turns ``q`` into a :class:`~iiif_shim.model.text.Query` of folded terms:
``"quoted words"`` are a phrase (an unbalanced quote: the rest of ``q`` is the phrase),
``word*`` a prefix, every other word must be there (AND); a word that folds into several terms
(``self-made``) is the phrase of them, and ``self-ma*`` the word ``self`` and the prefix
``ma``. The user's syntax never reaches an engine: each builds its own expressions from the
folded terms. A ``q`` of spaces only is no restriction (the empty :class:`Query`); a ``q`` with
no letter or digit at all, longer than :data:`MAX_QUERY` characters or of more than
:data:`MAX_TERMS` distinct terms is refused (:class:`BadQuery`, 400)."""

from __future__ import annotations

import functools
import re
import sys
import unicodedata
from collections.abc import Sequence

from iiif_shim.base.errors import BadRequest
from iiif_shim.model.text import Query

MAX_QUERY = 1000  # characters of q
MAX_TERMS = 32  # distinct terms in a query (words, the terms of phrases, prefixes)

# Latin letters NFKD leaves whole (they are letters of their own, not letters with a mark),
# as a reader without them on the keyboard types them; applied after casefold
_LETTERS = str.maketrans(
    {
        "ø": "o",
        "ł": "l",
        "đ": "d",
        "ħ": "h",
        "\u0131": "i",  # dotless i
        "ŧ": "t",
        "æ": "ae",
        "œ": "oe",
        "þ": "th",
        "ð": "d",
    }
)


class BadQuery(BadRequest):
    """A ``q`` that cannot be searched (400): the message names the limit it passes."""

    kind = "bad_query"

    def __init__(self, message: str) -> None:
        super().__init__(message, parameter="q")


def _ranges(codes: list[int]) -> str:
    """A regular expression character class's inside for the code points ``codes`` (sorted)."""
    spans: list[tuple[int, int]] = []
    for code in codes:
        if spans and spans[-1][1] == code - 1:
            spans[-1] = (spans[-1][0], code)
        else:
            spans.append((code, code))
    return "".join(
        re.escape(chr(a)) + ("" if a == b else "-" + re.escape(chr(b))) for a, b in spans
    )


@functools.cache
def _patterns() -> tuple[dict[int, None], re.Pattern[str]]:
    """The combining marks (what ``fold`` drops, as a table for ``str.translate``), and a
    term (what ``terms`` finds): letters
    and digits, with the marks fold keeps (combining class 0: the vowel signs of Brahmic
    scripts, ...), which Python's ``\\w`` does not count as word characters. Made once, from
    the Unicode data of this Python (0.1 s)."""
    combining: list[int] = []
    kept: list[int] = []
    for code in range(sys.maxunicode + 1):
        char = chr(code)
        if unicodedata.combining(char):
            combining.append(code)
        elif unicodedata.category(char)[0] == "M":
            kept.append(code)
    return (
        dict.fromkeys(combining),
        re.compile(f"(?:[^\\W_]|[{_ranges(kept)}])+"),
    )


def fold(text: str) -> str:
    """``text`` as search compares it: compatibility forms decomposed (NFKD: ligatures, wide
    and superscript forms), combining marks (accents, cedillas, ogoneks...) dropped, case
    folded (``ß`` is ``ss``), the Latin letters NFKD leaves whole replaced (``ø`` o, ``ł`` l,
    ``đ`` d, ``ħ`` h, dotless ``i`` i, ``ŧ`` t, ``æ`` ae, ``œ`` oe, ``þ`` th, ``ð`` d), then NFC.
    ``fold(fold(x)) == fold(x)``."""
    if text.isascii():
        return text.lower()  # all of the above, for ASCII
    marks = _patterns()[0]
    folded = unicodedata.normalize("NFKD", text).translate(marks).casefold().translate(_LETTERS)
    # casefold may give a letter with a mark again (Greek ΐ): decomposed and dropped once more
    return unicodedata.normalize("NFC", unicodedata.normalize("NFKD", folded).translate(marks))


def terms(text: str) -> list[str]:
    """The folded terms of ``text`` in order (repeated ones repeated): ``terms("Zürich, 1848")``
    is ``["zurich", "1848"]``, ``terms("self-made")`` ``["self", "made"]``."""
    return _patterns()[1].findall(fold(text))


def word_terms(texts: Sequence[str]) -> list[tuple[int, str]]:
    """``(n, term)`` for every term of every one of ``texts`` in order, ``n`` the index of the
    text it is in: the terms of each text as :func:`terms` gives them, in one folding of all
    (a page's words folded word by word take twice as long)."""
    parts: list[str] = []
    if not any("\x00" in text for text in texts):
        # fold keeps NUL and composes nothing across it: the parts are the texts folded
        parts = fold("\x00".join(texts)).split("\x00")
    if len(parts) != len(texts):
        parts = [fold(text) for text in texts]
    pattern = _patterns()[1]
    return [(n, term) for n, part in enumerate(parts) for term in pattern.findall(part)]


def _ends_in_term(text: str) -> bool:
    folded = fold(text)
    return bool(folded) and _patterns()[1].fullmatch(folded[-1]) is not None


def parse_query(q: str) -> Query:
    """``q`` as a :class:`Query` of folded terms (see the module's docstring); the same term,
    phrase or prefix given twice counts once. Raises :class:`BadQuery`."""
    if len(q) > MAX_QUERY:
        raise BadQuery(f"is longer than {MAX_QUERY} characters")
    words: dict[str, None] = {}
    phrases: dict[tuple[str, ...], None] = {}
    prefixes: dict[str, None] = {}

    def add(found: list[str]) -> None:
        if len(found) == 1:
            words[found[0]] = None
        elif found:
            phrases[tuple(found)] = None

    for number, part in enumerate(q.split('"')):
        if number % 2:  # inside quotes (an unbalanced quote runs to the end)
            add(terms(part))
            continue
        for chunk in part.split():
            stem = chunk.rstrip("*")
            found = terms(stem)
            if stem != chunk and found and _ends_in_term(stem):
                prefixes[found[-1]] = None
                found = found[:-1]
            add(found)
    count = len(words) + len(prefixes) + sum(len(phrase) for phrase in phrases)
    if count > MAX_TERMS:
        raise BadQuery(f"has more than {MAX_TERMS} search terms (it has {count})")
    if not count and q.strip():
        raise BadQuery("has no letter or digit to search for")
    return Query(tuple(words), tuple(phrases), tuple(prefixes))
