"""``type: contentdm``: the objects of one CONTENTdm collection, read from its web services API
(``dmwebservices``), with images served by this shim (the ``template`` backend preset
``config/contentdm.yaml`` routes the identifiers ``alias:pointer`` to the same server).

UNTESTED AGAINST THE REAL PRODUCT: CONTENTdm cannot be installed here. This source follows the
documented functions and the answer shapes published for them, and is tested against a small
stand-in that implements exactly those (``tests/standins.py``):

- ``dmGetItemInfo/{alias}/{pointer}/json``: an object of field nickname -> value (an empty
  field is ``{}``), plus ``find`` (the file: ``12.jp2``, ``12.cpd`` for a compound object);
  an unknown pointer answers ``{"code": "-2", "message": "Requested item not found"}``.
- ``dmGetCompoundObjectInfo/{alias}/{pointer}/json``: ``{"type": "Document", "page": [{pagetitle,
  pagefile, pageptr}]}``, or for a ``Monograph`` a tree of ``node`` (each with ``nodetitle``,
  ``page`` and ``node``; one page or node may come as an object rather than a list); a single
  item answers ``{"code": "-2", "message": "Requested item is not compound"}``.
- ``dmQuery/{alias}/0/{field}/{field}/{maxrecs}/{start}/1/0/0/0/0/0/json`` (browse the
  collection, compound objects not their pages): ``{"pager": {...}, "records": [{pointer,
  parentobject, ...}]}``, at most 1024 records a page.
- An unknown collection alias answers HTTP 200 with the HTML text ``Error looking up
  collection /alias<br>``.

An object's name is its pointer (digits; any other name is not this source's). Its canvases
are its pages (or the item itself), each image's identifier built from ``image_id``; pages
whose file is not an image (a PDF, audio) are left out, and an object with no image at all
cannot be shown (lenient: a 404 naming why). A Monograph's sections become ranges. The
descriptive fields come from ``dmGetItemInfo`` by field nickname (``fields``). CONTENTdm holds
free text where IIIF wants URIs and dates; ``records.build_record`` decides for them as for
every source: a ``rights`` value that is not a Creative Commons or RightsStatements.org URI is
shown as metadata ("Rights") instead (strict: refused), a date that is not one is shown as
written, as metadata "Date", without ``navDate``. A CONTENTdm source is remote: checks read its
list and only its first (``check-config``) or a few (``/health/ready``) objects.

With ``fields.text`` (a full-text field, e.g. ``full``), every page has text: that field of the
page's own item (``dmGetItemInfo/{alias}/{pageptr}/json``; the item itself for a single item),
plain text, entities decoded; an empty field is a page without words. Its stamp is the text's
hash (the catalogue gives no other), so the search index asks for it whenever it looks again.
"""

from __future__ import annotations

import hashlib
import html
import re
from collections.abc import Mapping
from typing import Any

from iiif_shim.base.errors import BadRecord, OversizeAnswer, UnreadableMetadata
from iiif_shim.model.text import TextFile, TextFormat
from iiif_shim.presentation.records import (
    MAX_CANVASES,
    OBJECT_FIELDS,
    NoCanvas,
    ObjectRecord,
    RecordError,
    TextRef,
    build_record,
    text,
)
from iiif_shim.presentation.sources.json import HttpJsonSource
from iiif_shim.presentation.sources.settings import ContentdmSourceSettings
from iiif_shim.upstream.urltemplate import UrlTemplate

PAGE_SIZE = 1024  # records of one dmQuery answer (the documented maximum)
_POINTER_RE = re.compile(r"[0-9]{1,12}")
IMAGE_FILES = frozenset(("jp2", "jpx", "jpg", "jpeg", "jpe", "tif", "tiff", "png", "gif", "bmp"))


def _texts(value: Any) -> Any:
    """A field's value as CONTENTdm sends it: ``{}`` is empty, entities are decoded."""
    if isinstance(value, Mapping) and not value:
        return None
    if isinstance(value, str):
        return html.unescape(value)
    return value


def _as_list(value: Any) -> list[Any]:
    """One page or node comes as an object, several as a list."""
    if isinstance(value, list):
        return [item for item in value if isinstance(item, Mapping)]
    return [value] if isinstance(value, Mapping) else []


def _hashed(data: bytes) -> str:
    return "sha256 " + hashlib.sha256(data).hexdigest()


def _refusal(doc: Any) -> str | None:
    """CONTENTdm's in-band error message (``code`` -2), or None."""
    if isinstance(doc, Mapping) and str(doc.get("code", "")) == "-2":
        return str(doc.get("message", ""))
    return None


class ContentdmSource(HttpJsonSource[ContentdmSourceSettings]):
    settings_class = ContentdmSourceSettings

    def __init__(self, name: str, settings: ContentdmSourceSettings) -> None:
        super().__init__(name, settings)
        api = self.settings.url.rstrip("/") + self.settings.api_path + "?q="
        self._item = UrlTemplate.parse(api + "dmGetItemInfo/{alias}/{pointer}/json")
        self._compound = UrlTemplate.parse(api + "dmGetCompoundObjectInfo/{alias}/{pointer}/json")
        self._query = UrlTemplate.parse(
            api + "dmQuery/{alias}/0/{field}/{field}/{maxrecs}/{start}/1/0/0/0/0/0/json"
        )

    def templates(self) -> list[UrlTemplate]:
        return [self._item, self._compound, self._query]

    def _ask(self, template: UrlTemplate, **values: str) -> str:
        url = self.expand(template, {"alias": self.settings.alias, **values})
        assert url is not None  # alias and pointer are checked: nothing to refuse
        return url

    async def _json(self, url: str, what: str, name: str = "") -> Any:
        """The answer's JSON (None for a 404); an unknown collection is a 502 saying so."""
        answer = await self.fetch(url, what=what, name=name)
        if answer is None:
            return None
        if answer.body.lstrip()[:27].lower() == b"error looking up collection":
            raise UnreadableMetadata(
                f"{self.who}: CONTENTdm has no collection {self.settings.alias!r}",
            )
        return await self.context.run_blocking(self.parse, answer, what)

    async def names(self, limit: int) -> list[str]:
        field = self.settings.fields.label or "title"
        names: dict[str, None] = {}
        start = 1
        # a bounded number of pages: a server that keeps answering pages, duplicates or
        # nothing new cannot keep this loop (and its request) going
        for _ in range(limit // PAGE_SIZE + 3):
            if len(names) >= limit:
                break
            before = len(names)
            want = min(PAGE_SIZE, limit - len(names))
            url = self._ask(self._query, field=field, maxrecs=str(want), start=str(start))
            doc = await self._json(url, "its list of objects")
            records = doc.get("records") if isinstance(doc, Mapping) else None
            if not isinstance(records, list):
                raise UnreadableMetadata(f"{self.who}: dmQuery answered without `records`")
            for record in records:
                if not isinstance(record, Mapping):
                    continue
                if str(record.get("parentobject", -1)) not in ("-1", ""):
                    continue  # a page of a compound object
                pointer = str(record.get("pointer", ""))
                if _POINTER_RE.fullmatch(pointer):
                    names.setdefault(pointer, None)
            if len(records) < want or len(names) == before:
                break
            start += len(records)
        return list(names)[:limit]

    async def record(self, name: str) -> ObjectRecord | None:
        if not _POINTER_RE.fullmatch(name):
            return None
        what = f"object {name!r}"
        info = await self._json(self._ask(self._item, pointer=name), what, name)
        if info is None or _refusal(info) is not None:
            return None  # "Requested item not found"
        if not isinstance(info, Mapping):
            raise self.bad(name, "dmGetItemInfo answered something other than an object")
        cpd = await self._json(self._ask(self._compound, pointer=name), what, name)
        try:
            canvases = self._canvases(name, info, cpd)
            return self.noted(self._build(name, info, canvases))
        except RecordError as exc:
            raise self.unusable(name, exc) from None

    def _canvases(self, name: str, info: Mapping[str, Any], cpd: Any) -> list[dict[str, Any]]:
        refusal = _refusal(cpd)
        if cpd is None or (refusal is not None and "not compound" in refusal):
            find = str(_texts(info.get("find")) or "")
            if find and find.rsplit(".", 1)[-1].lower() not in IMAGE_FILES:
                raise NoCanvas("image", f"its file ({find[:40]!r}) is not an image")
            return [{"image": self._image(name), "text": self._text_ref(name)}]
        if refusal is not None or not isinstance(cpd, Mapping):
            raise self.bad(name, "dmGetCompoundObjectInfo answered neither pages nor a refusal")
        pages: list[tuple[Mapping[str, Any], str | None]] = []
        self._walk(cpd, None, pages, depth=0)
        canvases = []
        for page, section in pages:
            pointer = str(page.get("pageptr", ""))
            if not _POINTER_RE.fullmatch(pointer):
                raise self.bad(name, f"a page without a valid pageptr ({pointer[:20]!r})")
            file = str(_texts(page.get("pagefile")) or "")
            if file and file.rsplit(".", 1)[-1].lower() not in IMAGE_FILES:
                continue
            canvases.append(
                {"image": self._image(pointer), "canvas_label": _texts(page.get("pagetitle")),
                 "range": section, "text": self._text_ref(pointer)}
            )  # fmt: skip
            if len(canvases) > MAX_CANVASES:
                break  # build_record says so
        if not canvases:
            raise NoCanvas("image", "none of its pages is an image")
        return canvases

    def _walk(
        self,
        node: Mapping[str, Any],
        section: str | None,
        out: list[tuple[Mapping[str, Any], str | None]],
        depth: int,
    ) -> None:
        """Pages in order, each with the title of the section (node) holding it; the root
        node's title is the object's own, not a section."""
        if depth > 20 or len(out) > MAX_CANVASES:
            return
        for page in _as_list(node.get("page")):
            out.append((page, section))
        for child in _as_list(node.get("node")):
            title = text(_texts(child.get("nodetitle")), "nodetitle") if depth > 0 else None
            self._walk(child, title or section, out, depth + 1)

    def _text_ref(self, pointer: str) -> TextRef | None:
        """Page ``pointer``'s text, when a full-text field is configured: that field of the
        page's own item (plain text)."""
        if self.settings.fields.text is None:
            return None
        return TextRef(pointer, TextFormat.PLAIN.value)

    async def _page_text(self, ref: TextRef) -> str | None:
        """The full text of page ``ref.where`` (its field ``fields.text``), "" when empty,
        None when the page is gone."""
        nick, pointer = self.settings.fields.text, ref.where
        if nick is None or not _POINTER_RE.fullmatch(pointer):
            raise BadRecord(f"{self.who}: {pointer[:40]!r} is not a page with text")
        what = f"the text of page {pointer!r}"
        try:
            info = await self._json(self._ask(self._item, pointer=pointer), what, pointer)
        except OversizeAnswer:
            raise BadRecord(
                f"{self.who}: {what} is larger than max_metadata_bytes "
                f"({self.settings.max_metadata_bytes})"
            ) from None
        if info is None or _refusal(info) is not None:
            return None
        value = _texts(info.get(nick)) if isinstance(info, Mapping) else None
        if value is None:
            return ""
        if isinstance(value, bool) or not isinstance(value, (str, int, float)):
            raise BadRecord(f"{self.who}: {what}: field {nick!r} is not text")
        return str(value)

    async def text_stamp(self, ref: TextRef) -> str | None:
        """The hash of the page's text: it is in the catalogue, which has no other stamp."""
        found = await self._page_text(ref)
        return None if found is None else _hashed(found.encode("utf-8"))

    async def read_text(self, ref: TextRef, limit: int) -> TextFile | None:
        found = await self._page_text(ref)
        if found is None:
            return None
        data = found.encode("utf-8")
        name = f"page {ref.where} ({self.settings.fields.text})"
        if len(data) > limit:
            raise BadRecord(f"{self.who}: the text of {name} is larger than {limit} bytes")
        return TextFile(data, _hashed(data), name, TextFormat.PLAIN)

    def _image(self, pointer: str) -> str:
        return self.settings.image_id.format_map({"alias": self.settings.alias, "pointer": pointer})

    def _build(
        self, name: str, info: Mapping[str, Any], canvases: list[dict[str, Any]]
    ) -> ObjectRecord:
        nicks = self.settings.fields
        fields = {
            key: _texts(info.get(nick)) if (nick := getattr(nicks, key)) else None
            for key in OBJECT_FIELDS
        }
        metadata = [(label, _texts(info.get(nick))) for label, nick in nicks.labelled()]
        return build_record(name, self.name, fields, canvases, metadata, strict=self.strict)
