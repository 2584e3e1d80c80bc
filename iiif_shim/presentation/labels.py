"""Texts in one or more languages: what a metadata label or value may be, from the settings
(a display label, or a label per language) or from an object's own file, to the manifests
(3.0 language maps, 2.1 ``@value``/``@language`` lists) and the object page (one language).

A :class:`Texts` keeps its texts in the order given; a text without a language is in the
configured ``presentation.language``. Language tags are BCP 47 tags (``en``, ``de``,
``zh-Hant``) or ``none`` (a text in no language, e.g. a number).
"""

from __future__ import annotations

import re
from collections.abc import Mapping
from dataclasses import dataclass
from typing import Any

MAX_LANGUAGES = 20  # languages of one label or value
_TAG_RE = re.compile(r"[A-Za-z]{2,3}(-[A-Za-z0-9]{1,8})*|none")

Label = str | Mapping[str, str]  # a label as the settings give it: text, or language -> text


def language_check(tag: str) -> str | None:
    """Why ``tag`` cannot be a language tag, or None."""
    if _TAG_RE.fullmatch(tag):
        return None
    return f"{tag[:40]!r} is not a language tag (e.g. `en`, `fr`, `de-CH`, or `none`)"


def label_check(value: Label | None) -> str | None:
    """Why a label from the settings cannot be shown, or None (a settings ``check``)."""
    if value is None or isinstance(value, str):
        return None if value is None or value.strip() else "must not be empty"
    if not value:
        return "give at least one language, e.g. {en: Date, de: Datum}"
    if len(value) > MAX_LANGUAGES:
        return f"more than {MAX_LANGUAGES} languages"
    for tag, text in value.items():
        if why := language_check(tag):
            return why
        if not text.strip():
            return f"the {tag} label is empty"
    return None


@dataclass(frozen=True)
class Texts:
    """One text in one or more languages: (language or None for the configured one, text)."""

    items: tuple[tuple[str | None, str], ...]

    @classmethod
    def of(cls, text: str) -> Texts:
        """A text in the configured language."""
        return cls(((None, text),))

    def __str__(self) -> str:
        """The first text (the one a log line or a plain-text listing shows)."""
        return self.items[0][1]

    def pick(self, language: str) -> tuple[str | None, str]:
        """The (language, text) to show to someone reading ``language``: its own text if there
        is one, else the one in the configured language, else the first."""
        for tag, text in self.items:
            if tag == language:
                return tag, text
        for tag, text in self.items:
            if tag is None:
                return tag, text
        return self.items[0]

    def v3(self, language: str) -> dict[str, list[str]]:
        """A Presentation 3.0 language map (texts without a language in ``language``)."""
        out: dict[str, list[str]] = {}
        for tag, text in self.items:
            out.setdefault(tag or language, []).append(text)
        return out

    def v2(self, language: str) -> str | list[dict[str, str]]:
        """Presentation 2.1: a plain string for one text in the configured language, else a list
        of ``@value``/``@language`` objects (texts without a language in ``language``; no
        ``@language`` for ``none``)."""
        if len(self.items) == 1 and self.items[0][0] is None:
            return self.items[0][1]
        out: list[dict[str, str]] = []
        for tag, text in self.items:
            entry = {"@value": text}
            if tag != "none":
                entry["@language"] = tag or language
            out.append(entry)
        return out


def texts(value: Any, check: Any) -> Texts | None:
    """A label or value as :class:`Texts`: text (in the configured language) or a mapping of
    language tag to text; ``check`` turns each text into the shown text (or None: blank) and
    raises on a bad one. None when nothing is left; ValueError for a bad shape."""
    if isinstance(value, Mapping):
        if len(value) > MAX_LANGUAGES:
            raise ValueError(f"more than {MAX_LANGUAGES} languages")
        items: list[tuple[str | None, str]] = []
        for tag, text in value.items():
            if not isinstance(tag, str) or (why := language_check(tag)):
                raise ValueError(why or "language tags are text")
            if (shown := check(text)) is not None:
                items.append((tag, shown))
        return Texts(tuple(items)) if items else None
    shown = check(value)
    return None if shown is None else Texts.of(shown)
