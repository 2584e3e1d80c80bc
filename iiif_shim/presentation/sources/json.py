"""``type: json``: a catalogue that answers JSON per object, read with JSON paths.

``url`` is a URL template with ``{object}``: the object's name, percent-encoded as one path
segment (or query value), so ``a/b`` is ``a%2Fb`` and a name that would climb out of the
template's folder (``../x``, ``%2e%2e``) is refused before any request: to the source it is not
one of its objects. The object's fields are JSON paths into the answer (``upstream/jsonpath.py``):
``images`` selects the image identifiers (IIIF identifiers of this server), one canvas each,
in order; ``canvas_labels`` one label per image; ``metadata`` maps labels to paths, several
matches joined with ``"; "``; label, summary and the other object fields take their path's
matches (the first for rights, nav_date and viewing_direction; all for behavior and see_also);
``text`` one text (OCR) URL per image, absolute or relative to the object's own URL, fetched
only from the catalogue's own server or one of its ``text_origins`` (else left out as a value
it cannot use).

Which objects there are: ``objects`` (a fixed list) or ``list`` (a URL answering JSON, the names
found by ``list_path`` and, for entries that are objects, ``name_path``; fetched again after
``refresh`` seconds, the last good list kept when that fails). A name not listed is not this
source's, without a request. With neither, the source has no collection and tries ``url`` for
any name (a 404 there: not this source's).

Requests go through the shim's hardened upstream client (``backends/upstream.py``) with this
source's own limits, retries and circuit; its errors name the source: a 404 is "not this
source's object", other failures a 502, no answer within ``timeout`` a 504. Answers are parsed
and read in the thread pool; an answer that cannot be read is a 502 naming the source and the
object. Within a readable answer, an object without images is one it cannot show (lenient: a
404 naming why), and an optional field or metadata path matching something that is not text
(an object, a list of objects) goes to ``records.build_record`` as refused: left out with a
warning, or (``presentation.strict``) the object refused. Sources over HTTP are remote: checks
read their list and only some of their objects; a list kept after its refetch failed is
reported as stale.
"""

from __future__ import annotations

import asyncio
import logging
import math
import re
from abc import abstractmethod
from collections.abc import Mapping
from dataclasses import dataclass
from typing import Any, TypeVar
from urllib.parse import urljoin

from iiif_shim.backends.base import PARSE_ERRORS
from iiif_shim.base.errors import (
    NotFound,
    ShimError,
    UnreadableMetadata,
    UpstreamClientError,
)
from iiif_shim.cache.memory import SingleFlight
from iiif_shim.model.text import TextFile
from iiif_shim.presentation.records import (
    OBJECT_FIELDS,
    NoCanvas,
    ObjectRecord,
    RecordError,
    Skipped,
    TextRef,
    build_record,
    check_name,
)
from iiif_shim.presentation.sources.base import ObjectSource, SourceContext
from iiif_shim.presentation.sources.settings import HttpSourceSettings, JsonSourceSettings
from iiif_shim.presentation.sources.texts import TextUrls, format_of
from iiif_shim.upstream.client import Answer, Upstream
from iiif_shim.upstream.jsonpath import JsonPath, compile_path
from iiif_shim.upstream.parse import parse_json
from iiif_shim.upstream.urltemplate import UnsafeValue, UrlTemplate

log = logging.getLogger("iiif_shim")
H = TypeVar("H", bound=HttpSourceSettings)

STALE_RETRY = 30.0  # seconds before a failed refetch of the list is tried again
JOINED = "; "
FIRST_ONLY = frozenset({"rights", "nav_date", "viewing_direction"})
ALL_OF = frozenset({"behavior", "see_also"})
_TYPE_RE = re.compile(r"[a-z0-9.+-]{1,40}/[a-z0-9.+-]{1,40}")


def _kind(value: Any) -> str:
    return "an object" if isinstance(value, Mapping) else type(value).__name__


def scalars(values: list[Any], what: str) -> list[str]:
    """Matches as texts: lists flattened one level, nulls dropped; anything else RecordError."""
    out: list[str] = []
    for value in values:
        for item in value if isinstance(value, list) else (value,):
            if item is None:
                continue
            if isinstance(item, bool) or not isinstance(item, (str, int, float)):
                raise RecordError(what, f"matches {_kind(item)}, not text")
            out.append(item if isinstance(item, str) else _number_text(item))
    return out


def _number_text(value: int | float) -> str:
    if isinstance(value, float) and not math.isfinite(value):
        raise RecordError("value", "is not a finite number")
    return str(int(value)) if isinstance(value, float) and value.is_integer() else str(value)


def _per_image(
    path: JsonPath, doc: Any, images: int, field: str, refused: list[Skipped]
) -> list[str | None]:
    """One value (or None: ``null`` or ``""``) per image, in order: canvas labels, text URLs.
    None at all (with why in ``refused``) when the path's matches are not one per image (an
    image without the key would give every later image the value of the next) or one is not
    text (a label may be a number). A path matching nothing gives no labels, quietly (files
    without labels), but is said for text (a path that finds no text is a mistake)."""
    values: list[str | None] = []
    for value in path.select(doc):
        if value is None or value == "":
            values.append(None)
            continue
        numeric = isinstance(value, (int, float)) and not isinstance(value, bool)
        if not isinstance(value, str) and not (numeric and field != "text"):
            what = "a URL" if field == "text" else "text"
            refused.append(Skipped(field, f"matches {_kind(value)}, not {what}, at {path.text}"))
            return []
        try:
            values.append(value if isinstance(value, str) else _number_text(value))
        except RecordError as exc:
            refused.append(Skipped(field, f"{exc.message} at {path.text}"))
            return []
    if not values and field != "text":
        return []
    if len(values) != images:
        refused.append(Skipped(field, f"{len(values)} values at {path.text} for {images} "
                               'images: give each image one (null or "" for none)'))  # fmt: skip
        return []
    return values


class HttpJsonSource(ObjectSource[H]):
    """What the sources that read JSON over HTTP share: their upstream client, scoped to their
    URL templates, and fetching and parsing answers."""

    upstream: Upstream

    @abstractmethod
    def templates(self) -> list[UrlTemplate]:
        """Where this source sends requests (redirects may stay within them)."""

    async def start(self, context: SourceContext) -> None:
        await super().start(context)
        self.upstream = Upstream(
            self.name, self.settings, self.templates(), context.metrics, role="source"
        )
        await self.upstream.start()

    async def close(self) -> None:
        await self.upstream.close()

    async def fetch(self, url: str, *, what: str, name: str = "") -> Answer | None:
        """The answer at ``url`` (None for a 404 or 410)."""
        try:
            return await self.upstream.get(url, metadata=True, image_id=name, what=what)
        except NotFound:
            return None

    def parse(self, answer: Answer, what: str) -> Any:
        """The answer's JSON; a 502 naming the source when it is not JSON. Blocking."""
        try:
            return parse_json(answer.body)
        except PARSE_ERRORS as exc:
            declared = answer.content_type
            shown = f" ({declared})" if _TYPE_RE.fullmatch(declared) else ""
            raise UnreadableMetadata(
                f"{self.who} sent {what} that is not JSON{shown}",
                detail=f"{type(exc).__name__}: {exc}",
            ) from None

    @property
    def remote(self) -> bool:
        return True

    def expand(self, template: UrlTemplate, values: Mapping[str, str]) -> str | None:
        """``template`` expanded, or None when a value would leave its place."""
        try:
            return template.expand(values)
        except UnsafeValue as exc:
            log.info("%s: refused an object name (%s)", self.who, exc)
            return None


@dataclass(frozen=True)
class Listing:
    names: tuple[str, ...]
    known: frozenset[str]


class JsonSource(HttpJsonSource[JsonSourceSettings]):
    settings_class = JsonSourceSettings

    def __init__(self, name: str, settings: JsonSourceSettings) -> None:
        super().__init__(name, settings)
        s = self.settings
        self._url = UrlTemplate.parse(s.url)
        self._list_url = UrlTemplate.parse(s.list) if s.list is not None else None
        self._fixed = (
            Listing(tuple(dict.fromkeys(s.objects)), frozenset(s.objects))
            if s.objects is not None
            else None
        )
        self._paths = {
            key: compile_path(path)
            for key in ("images", "canvas_labels", "text", *OBJECT_FIELDS)
            if (path := getattr(s.fields, key)) is not None
        }
        self._texts: TextUrls | None = None  # its text URLs (made when it starts)
        self._metadata = [(label, compile_path(p)) for label, p in s.fields.labelled()]
        self._listing: Listing | None = None
        self._listed_at = -math.inf
        self._stale: str | None = None  # why the last refetch of the list failed
        self._flight: SingleFlight[str, Listing] = SingleFlight()

    def templates(self) -> list[UrlTemplate]:
        return [self._url] + ([self._list_url] if self._list_url is not None else [])

    async def start(self, context: SourceContext) -> None:
        await super().start(context)
        self._texts = TextUrls(
            self.who, self.name, self.settings, self.upstream, self.settings.text_origins
        )
        await self._texts.start(context.metrics)

    async def close(self) -> None:
        if self._texts is not None:
            await self._texts.close()
        await super().close()

    async def text_stamp(self, ref: TextRef) -> str | None:
        assert self._texts is not None
        return await self._texts.stamp(ref.where)

    async def read_text(self, ref: TextRef, limit: int) -> TextFile | None:
        assert self._texts is not None
        return await self._texts.read(ref.where, limit, ref.format)

    async def names(self, limit: int) -> list[str]:
        listing = await self._listed()
        return list(listing.names[:limit]) if listing is not None else []

    async def record(self, name: str) -> ObjectRecord | None:
        if check_name(name) is not None:
            return None
        listing = await self._listed()
        if listing is not None and name not in listing.known:
            return None
        url = self.expand(self._url, {"object": name})
        if url is None:
            return None
        answer = await self.fetch(url, what=f"object {name!r}", name=name)
        if answer is None:
            return None
        found: ObjectRecord = await self.context.run_blocking(self._read, name, answer, url)
        return self.noted(found)

    @property
    def stale(self) -> str | None:
        return self._stale

    def _read(self, name: str, answer: Answer, url: str) -> ObjectRecord:
        """The record from an object's answer (from ``url``). Blocking (parsing, paths)."""
        doc = self.parse(answer, f"object {name!r}")
        try:
            return self._build(name, doc, url)
        except RecordError as exc:
            raise self.unusable(name, exc) from None
        except ValueError as exc:  # a path matching too many values
            raise self.bad(name, str(exc)) from None

    def _build(self, name: str, doc: Any, url: str) -> ObjectRecord:
        """The record of ``doc`` (the answer at ``url``); an optional value that is not text,
        or a text URL it may not fetch, goes to ``build_record`` as refused (lenient: left out;
        strict: the object refused)."""
        images_path = self._paths["images"]
        try:
            images = scalars(images_path.select(doc), "images")
        except RecordError as exc:
            raise NoCanvas("images", f"{exc.message} at {images_path.text}") from None
        if not images:
            raise NoCanvas("images", f"no images at {images_path.text}")
        refused: list[Skipped] = []

        def read(path: JsonPath, field: str, entry: int | None = None) -> list[str] | None:
            try:
                return scalars(path.select(doc), field)
            except RecordError as exc:
                refused.append(Skipped(field, f"{exc.message} at {path.text}", entry=entry))
                return None

        labels_path = self._paths.get("canvas_labels")
        labels = (
            _per_image(labels_path, doc, len(images), "canvas_label", refused)
            if labels_path
            else []
        )
        text_path = self._paths.get("text")
        texts = _per_image(text_path, doc, len(images), "text", refused) if text_path else []
        canvases = [
            {"image": image, "canvas_label": labels[i] if i < len(labels) else None,
             "text": self._text_ref(texts[i], url, i, refused) if i < len(texts) else None}
            for i, image in enumerate(images)
        ]  # fmt: skip
        fields: dict[str, Any] = {}
        for key in OBJECT_FIELDS:
            path = self._paths.get(key)
            if path is None or (values := read(path, key)) is None:
                continue
            if key in ALL_OF:
                fields[key] = values
            elif key in FIRST_ONLY:
                fields[key] = values[0] if values else None
            else:
                fields[key] = JOINED.join(values) or None
        metadata = []
        for j, (label, path) in enumerate(self._metadata):
            values = read(path, "metadata", j)
            metadata.append((label, JOINED.join(values) if values is not None else None))
        return build_record(
            name, self.name, fields, canvases, metadata, strict=self.strict, refused=refused
        )

    def _text_ref(
        self, value: str | None, url: str, canvas: int, refused: list[Skipped]
    ) -> TextRef | None:
        """A text URL (absolute, or relative to the object's ``url``) as canvas ``canvas``'s
        text, or None (with why in ``refused``) when this source may not fetch it."""
        if value is None or not value.strip():
            return None
        place = urljoin(url, value.strip())
        assert self._texts is not None  # (made when it starts)
        if (why := self._texts.refusal(place)) is not None:
            refused.append(Skipped("text", why, canvas=canvas))
            return None
        return TextRef(place, format_of(place))

    # --- the list of objects -----------------------------------------------------------------

    async def _listed(self) -> Listing | None:
        if self._fixed is not None or self._list_url is None:
            return self._fixed
        if self._listing is not None:
            age = asyncio.get_running_loop().time() - self._listed_at
            if age < self.settings.refresh:
                return self._listing
        return await self._flight.do("list", self._fetch_list)

    async def _fetch_list(self) -> Listing:
        assert self._list_url is not None
        started = asyncio.get_running_loop().time()
        try:
            answer = await self.fetch(self._list_url.text, what="its list of objects")
            if answer is None:
                raise UpstreamClientError(f"{self.who}: its list of objects is not found (404)")
            listing: Listing = await self.context.run_blocking(self._read_list, answer)
        except ShimError as exc:
            if self._listing is None:
                raise
            log.warning("%s: refetching its list failed (%s); using the last copy", self.who,
                        exc.message)  # fmt: skip
            self._listed_at = started - max(0.0, self.settings.refresh - STALE_RETRY)
            self._stale = exc.public_text()
            return self._listing
        self._listing, self._listed_at, self._stale = listing, started, None
        return listing

    def _read_list(self, answer: Answer) -> Listing:
        """The names in the list's answer. Blocking."""
        doc = self.parse(answer, "its list of objects")
        s = self.settings
        name_path: JsonPath | None = compile_path(s.name_path) if s.name_path else None
        names: dict[str, None] = {}
        try:
            entries = compile_path(s.list_path).select(doc)
            for entry in entries:
                value = name_path.first(entry) if name_path is not None else entry
                if value is None:
                    continue
                if isinstance(value, bool) or not isinstance(value, (str, int)):
                    hint = "; set `name_path`" if name_path is None else ""
                    raise UnreadableMetadata(
                        f"{self.who}: its list has {_kind(value)} entries at "
                        f"{s.name_path or s.list_path}, not names{hint}",
                    )
                name = str(value)
                if check_name(name) is None:
                    names[name] = None
        except ValueError as exc:  # a path matching too many values
            raise UnreadableMetadata(f"{self.who}: its list: {exc}") from None
        return Listing(tuple(names), frozenset(names))
