"""The object record: what an object source says about one object, checked and frozen.

Every source type (CSV rows, a folder and its ``object.yaml``, a catalogue's JSON) ends in the
same place: :func:`build_record` turns the fields it read into an :class:`ObjectRecord`, or
raises :class:`RecordError` naming the field. The manifest builders read only records, never a
source. Records come from metadata the shim does not control (a catalogue API is an upstream
like any other), so every text is bounded in length and count, and every URI is checked.

Strict or lenient is decided here, once for every source type: strict (``presentation.strict``),
the first field that cannot be used raises; lenient (the default), an optional value that
cannot be used (a date that is not one, rights that are not a URI, a bad URL, behavior, text
that is too long; never ``access``, which fails the object instead) is left out and noted in
:attr:`ObjectRecord.skipped`, a canvas without its
image is left out the same way, and only an object with no usable canvas at all raises
(:class:`NoCanvas`). A rights text that is not a URI is shown as metadata ``Rights`` instead.
A date that is not a date (``19th century``) is not a bad value in either mode: it is shown as
the catalogue wrote it, as metadata ``Date``, with no ``navDate`` (a note, not a warning).
Values a source could not even read as text (a JSON object where text belongs, an unknown key
of a folder's ``object.yaml``, a text file it may not read: outside its folder, on another
server) come in as ``refused`` and take the same decision. A canvas's text (:class:`TextRef`:
where its OCR is, as its source resolved it) is copied as the source made it, once checked as
a value (:func:`text_ref`); an object with any is searchable (:attr:`ObjectRecord.has_text`).
"""

from __future__ import annotations

import re
import unicodedata
from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass, replace
from functools import partial
from typing import Any, TypeVar
from urllib.parse import urlsplit

from iiif_shim.iiif.profile import RIGHTS_RE
from iiif_shim.model.text import TextFormat
from iiif_shim.presentation.dates import CatalogueDate, NotADate, read_date
from iiif_shim.presentation.labels import Label, Texts, texts

MAX_TEXT = 10_000  # characters of one label, summary or metadata value
MAX_METADATA = 100  # label/value pairs of one object
MAX_CANVASES = 2_000  # canvases of one object
MAX_NAME = 256  # characters of an object name

# the fields every source type fills, by their name in the config (CSV columns, object.yaml
# keys, JSON paths)
OBJECT_FIELDS = (
    "label",
    "summary",
    "rights",
    "required_statement",
    "nav_date",
    "behavior",
    "viewing_direction",
    "see_also",
    "access",
)
CANVAS_FIELDS = ("image", "canvas_label", "range", "text")

MANIFEST_BEHAVIORS = frozenset(
    ("auto-advance", "no-auto-advance", "repeat", "no-repeat", "unordered", "individuals",
     "continuous", "paged")
)  # fmt: skip
_DISJOINT = (
    {"auto-advance", "no-auto-advance"},
    {"repeat", "no-repeat"},
    {"unordered", "individuals", "continuous", "paged"},
)
VIEWING_DIRECTIONS = frozenset(("left-to-right", "right-to-left", "top-to-bottom", "bottom-to-top"))
_NAME_BAD = re.compile(r"[\x00-\x1f\x7f]")
T = TypeVar("T")
_NONE: tuple[str, ...] = ()


class RecordError(ValueError):
    """A field of an object record that cannot be used; ``field`` names it."""

    def __init__(self, field: str, message: str) -> None:
        super().__init__(f"{field}: {message}")
        self.field = field
        self.message = message


class NoCanvas(RecordError):
    """(lenient) No canvas of the object has a usable image: the object cannot be shown."""


@dataclass(frozen=True)
class Skipped:
    """A value left out of an object's documents (lenient mode), and why: ``field`` is a key of
    OBJECT_FIELDS or CANVAS_FIELDS, or ``metadata``; ``canvas`` the 0-based canvas (row) it
    belongs to, ``entry`` the 0-based metadata pair. ``where`` and ``column`` say where it is
    in the source (a file's line and column), when the source knows (filled in by the source
    right after it builds the record, from the rows it built it from). A ``note`` is a value
    shown in another way (a date that is not a date), not left out: listed, never warned."""

    field: str
    message: str
    canvas: int | None = None
    entry: int | None = None
    where: str | None = None
    column: str | None = None
    note: bool = False


@dataclass(frozen=True)
class TextRef:
    """Where a canvas's text (OCR or plain) is, as its source understands it: a path or URL
    (``where``), or a page of a catalogue; only that source reads it
    (``ObjectSource.read_text``). ``format``: ``alto``, ``hocr`` or ``plain`` when known from
    the name (else told from the bytes)."""

    where: str
    format: str | None = None


@dataclass(frozen=True)
class CanvasRecord:
    image: str  # a IIIF identifier of this shim
    label: str | None = None
    text: TextRef | None = None  # the canvas's text, when its source gives one


@dataclass(frozen=True)
class RangeRecord:
    """A labelled run of consecutive canvases (``first`` to ``last``, 0-based, inclusive)."""

    label: str
    first: int
    last: int


@dataclass(frozen=True)
class ObjectRecord:
    name: str
    source: str
    label: str
    canvases: tuple[CanvasRecord, ...]
    summary: str | None = None
    metadata: tuple[tuple[Texts, Texts], ...] = ()  # (label, value), each in 1+ languages
    rights: str | None = None
    required_statement: str | None = None
    nav_date: CatalogueDate | None = None  # shown as given (1887), navDate 1887-01-01T00:00:00Z
    ranges: tuple[RangeRecord, ...] = ()
    behavior: tuple[str, ...] = ()
    viewing_direction: str | None = None
    see_also: tuple[str, ...] = ()
    skipped: tuple[Skipped, ...] = ()  # what lenient mode left out, for warnings and reports
    # the object's own access policy (``auth.policies``; else its source's: the presentation
    # service decides, ``PresentationService.object_policy``)
    access: str | None = None

    @property
    def has_text(self) -> bool:
        """Whether any canvas has text: then the object is searchable (``search/``)."""
        return any(canvas.text is not None for canvas in self.canvases)


@dataclass(frozen=True)
class ObjectEntry:
    """An object as a collection lists it: its name, label and the image of its thumbnail."""

    name: str
    label: str
    thumbnail: str | None


def check_name(name: str) -> str | None:
    """Why ``name`` cannot be an object name, or None."""
    if not name or len(name) > MAX_NAME:
        return f"object names have 1 to {MAX_NAME} characters"
    if _NAME_BAD.search(name) or name != name.strip():
        return "object names have no control characters and no surrounding spaces"
    return None


def text(value: Any, field: str, *, required: bool = False) -> str | None:
    """A field as one line or block of text: numbers become text, blanks become None."""
    if value is None or (isinstance(value, str) and not value.strip()):
        if required:
            raise RecordError(field, "required, and empty")
        return None
    if isinstance(value, bool) or not isinstance(value, (str, int, float)):
        raise RecordError(field, f"must be text, not {type(value).__name__}")
    out = unicodedata.normalize("NFC", str(value)).strip()
    if len(out) > MAX_TEXT:
        raise RecordError(field, f"longer than {MAX_TEXT} characters")
    if "\x00" in out:
        raise RecordError(field, "holds a NUL character")
    return out


def http_uri(value: str, field: str) -> str:
    split = urlsplit(value)
    if (
        split.scheme not in ("http", "https")
        or not split.hostname
        or any(c in value for c in ' <>"')
    ):
        raise RecordError(field, f"must be an http(s) URI, not {value[:80]!r}")
    return value


TEXT_FORMATS = frozenset(f.value for f in TextFormat)
_PLACE_BAD = re.compile(r"[\x00-\x1f\x7f]")


def text_ref(value: Any) -> TextRef | None:
    """A canvas's text reference as its source made it (where it is: a path or URL the
    source resolved, or a page of its catalogue): bounded, without control characters, its
    format one of TEXT_FORMATS or unknown (None). The source decides whether it may read it
    (``ObjectSource.read_text``); this only keeps a value no message or log can be hurt by."""
    if value is None:
        return None
    if not isinstance(value, TextRef) or not isinstance(value.where, str):
        raise RecordError("text", "must be the place of a text file")
    if not value.where.strip():
        return None
    if len(value.where) > MAX_TEXT or _PLACE_BAD.search(value.where):
        raise RecordError(
            "text",
            f"{value.where[:80]!r} is longer than {MAX_TEXT} characters or holds "
            "control characters",
        )
    if value.format is not None and value.format not in TEXT_FORMATS:
        raise RecordError(
            "text", f"format {value.format[:20]!r} is not one of {', '.join(sorted(TEXT_FORMATS))}"
        )
    return value


def rights(value: str | None) -> str | None:
    if value is None:
        return None
    if not RIGHTS_RE.fullmatch(value):
        raise RecordError(
            "rights",
            f"{value[:80]!r} is not a Creative Commons or RightsStatements.org URI in its "
            "http:// form (e.g. http://creativecommons.org/licenses/by/4.0/)",
        )
    return value


def nav_date(value: str | None) -> CatalogueDate | None:
    """A year, a date or a date-time, kept at its precision (see ``dates``)."""
    if value is None:
        return None
    try:
        return read_date(value)
    except NotADate as exc:
        raise RecordError("nav_date", str(exc)) from None


DATE_LABEL = Texts((("en", "Date"),))  # a date that is not one, shown as metadata
RIGHTS_LABEL = Texts((("en", "Rights"),))  # rights that are not a URI, shown as metadata


def metadata_entry(key: Label, given: Any) -> tuple[Texts, Texts] | None:
    """One (label, value) metadata pair, or None when the value is blank. ``key`` is the label
    the settings give (text, or language -> text); ``given`` is the value: text, a mapping of
    language to text, or ``{label: ..., value: ...}`` where an object's own file gives both."""
    name = str(next(iter(key.values()), "") if isinstance(key, Mapping) else key)
    field = f"metadata {name[:40]!r}"
    label: Any = key
    if isinstance(given, Mapping) and "value" in given:
        if unknown := set(given) - {"label", "value"}:
            raise RecordError(
                field, f"takes `label` and `value`, not {', '.join(map(str, unknown))}"
            )
        label, given = given.get("label", key), given["value"]
    try:
        value = texts(given, lambda v: text(v, field))
        shown = texts(label, lambda v: text(v, field, required=True))
    except RecordError:
        raise
    except ValueError as exc:  # not text, nor language -> text
        raise RecordError(field, str(exc)) from None
    if shown is None:
        raise RecordError(field, "the label is empty")
    return None if value is None else (shown, value)


def _words(value: Any, field: str) -> tuple[str, ...]:
    """A list, or text split at commas and spaces."""
    if value is None:
        return ()
    if isinstance(value, str):
        return tuple(w for w in re.split(r"[\s,]+", value.strip()) if w)
    if isinstance(value, Sequence) and all(isinstance(v, str) for v in value):
        return tuple(v.strip() for v in value if v.strip())
    raise RecordError(field, "must be text or a list of texts")


def behavior(value: Any) -> tuple[str, ...]:
    words = _words(value, "behavior")
    for word in words:
        if word not in MANIFEST_BEHAVIORS:
            raise RecordError(
                "behavior",
                f"{word[:40]!r} is not a manifest behavior "
                f"({', '.join(sorted(MANIFEST_BEHAVIORS))})",
            )
    for group in _DISJOINT:
        if len(group & set(words)) > 1:
            raise RecordError(
                "behavior", f"{' and '.join(sorted(group & set(words)))} exclude each other"
            )
    return tuple(dict.fromkeys(words))


def viewing_direction(value: str | None) -> str | None:
    if value is not None and value not in VIEWING_DIRECTIONS:
        raise RecordError(
            "viewing_direction", f"must be one of {', '.join(sorted(VIEWING_DIRECTIONS))}"
        )
    return value


def build_record(
    name: str,
    source: str,
    fields: Mapping[str, Any],
    canvases: Sequence[Mapping[str, Any]],
    metadata: Sequence[tuple[Label, Any]] = (),
    max_canvases: int = MAX_CANVASES,
    *,
    strict: bool = True,
    refused: Sequence[Skipped] = (),
) -> ObjectRecord:
    """The record of object ``name`` from its object-level ``fields`` (keys of OBJECT_FIELDS),
    its ``canvases`` in order (keys of CANVAS_FIELDS) and its metadata pairs (label, value).
    ``strict``: the first value that cannot be used raises; else it is left out and noted in
    ``skipped`` (only an object without a usable canvas raises). ``refused``: values the
    source could not read at all (left out of ``fields`` by it): strict, the first raises."""
    if (why := check_name(name)) is not None:
        raise RecordError("object", why)
    if strict and refused:
        raise RecordError(refused[0].field, refused[0].message)
    if not canvases:
        raise NoCanvas("image", "the object has no images")
    if len(canvases) > max_canvases:
        raise RecordError("image", f"the object has more than {max_canvases} images")
    skipped: list[Skipped] = list(refused)

    def kept(
        make: Callable[[], T], empty: T, canvas: int | None = None, entry: int | None = None
    ) -> T:
        """``make()``; lenient, ``empty`` with a note of why it cannot be used."""
        try:
            return make()
        except RecordError as exc:
            if strict:
                raise
            skipped.append(Skipped(exc.field.split(" (")[0], exc.message, canvas, entry))
            return empty

    items: list[CanvasRecord] = []
    ranges: list[RangeRecord] = []
    for i, canvas in enumerate(canvases):
        image = kept(
            partial(text, canvas.get("image"), f"image (canvas {i + 1})", required=True), None, i
        )
        if image is None:  # (lenient) the canvas is left out
            continue
        at = len(items)
        items.append(
            CanvasRecord(
                image,
                kept(partial(text, canvas.get("canvas_label"), "canvas_label"), None, i),
                kept(partial(text_ref, canvas.get("text")), None, i),
            )
        )
        part = kept(partial(text, canvas.get("range"), "range"), None, i)
        if part is None:
            continue
        if ranges and ranges[-1].label == part and ranges[-1].last == at - 1:
            ranges[-1] = RangeRecord(part, ranges[-1].first, at)
        else:
            ranges.append(RangeRecord(part, at, at))
    if not items:
        why = "; ".join(
            f"canvas {n.canvas + 1}: {n.message}" for n in skipped[:3] if n.canvas is not None
        )
        raise NoCanvas("image", f"no canvas has a usable image ({why})")
    pairs: list[tuple[Texts, Texts]] = []
    for j, (label, value) in enumerate(metadata):
        if (pair := kept(partial(metadata_entry, label, value), None, entry=j)) is not None:
            pairs.append(pair)
    rights_text = kept(partial(text, fields.get("rights"), "rights"), None)
    rights_uri = kept(partial(rights, rights_text), None)
    if rights_text is not None and rights_uri is None:  # (lenient) shown as text instead
        said = skipped[-1]
        skipped[-1] = replace(said, message=f"{said.message}; shown as metadata Rights")
        _shown_as(pairs, RIGHTS_LABEL, rights_text)
    date_text = kept(partial(text, fields.get("nav_date"), "nav_date"), None)
    date: CatalogueDate | None = None
    if date_text is not None:
        try:
            date = read_date(date_text)
        except NotADate as exc:  # shown as the catalogue wrote it, without navDate
            skipped.append(Skipped("nav_date", f"{exc}; shown as metadata Date", note=True))
            _shown_as(pairs, DATE_LABEL, date_text)
    if len(pairs) > MAX_METADATA:
        kept(partial(_too_many, "metadata", f"more than {MAX_METADATA} label/value pairs"), None)
        pairs = pairs[:MAX_METADATA]
    see_also: list[str] = []
    for uri in kept(partial(_words, fields.get("see_also"), "see_also"), _NONE):
        if (good := kept(partial(http_uri, uri, "see_also"), None)) is not None:
            see_also.append(good)
    return ObjectRecord(
        name=name,
        source=source,
        label=kept(partial(text, fields.get("label"), "label"), None) or name,
        canvases=tuple(items),
        summary=kept(partial(text, fields.get("summary"), "summary"), None),
        metadata=tuple(pairs),
        rights=rights_uri,
        required_statement=kept(
            partial(text, fields.get("required_statement"), "required_statement"), None
        ),
        nav_date=date,
        ranges=tuple(ranges),
        behavior=kept(partial(behavior, fields.get("behavior")), _NONE),
        viewing_direction=kept(
            lambda: viewing_direction(text(fields.get("viewing_direction"), "viewing_direction")),
            None,
        ),
        see_also=tuple(see_also),
        skipped=tuple(skipped),
        # never left out, even when lenient: an object whose policy cannot be read is not
        # shown, rather than shown to everyone
        access=text(fields.get("access"), "access"),
    )


def _shown_as(pairs: list[tuple[Texts, Texts]], label: Texts, value: str) -> None:
    """``value`` shown as metadata ``label``, unless the metadata shows it already."""
    if not any(value in (text for _, text in shown.items) for _, shown in pairs):
        pairs.append((label, Texts.of(value)))


def _too_many(field: str, message: str) -> None:
    raise RecordError(field, message)
