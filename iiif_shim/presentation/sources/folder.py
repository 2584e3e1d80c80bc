"""``type: folder``: each sub-folder of a ``files`` backend is an object, its images the canvases
in natural order (``p2`` before ``p10``); an optional ``object.yaml`` inside gives the object's
fields (the same names as the CSV columns) and per-image canvas labels and ranges. An image's
text (its OCR) is a sidecar file next to it: the same name with ``.xml`` or ``.alto`` (ALTO),
``.hocr`` or ``.html`` (hOCR) or ``.txt`` (plain text), the first of these found; a folder
without them has no text. Sidecars are read and stamped (size and modification time) through
the backend, inside its root like its images; one that leads out of it (a link to a file
elsewhere) is refused as outside its folder, not taken for a file that is not there.

An ``object.yaml`` that cannot be read (not UTF-8 YAML, not a mapping, too large) is a 502 for
that object; a key it does not know, or one of the wrong shape (``metadata`` or ``canvases``
not a mapping), is left out with a warning (``presentation.strict``: the object is refused),
like every value ``records.build_record`` cannot use."""

from __future__ import annotations

import posixpath
from collections.abc import Mapping, Sequence
from typing import Any

import yaml

from iiif_shim.backends.base import Listable
from iiif_shim.backends.files import FilesBackend
from iiif_shim.base.errors import BadRecord, UnreadableSource
from iiif_shim.model.text import TextFile, TextFormat
from iiif_shim.presentation.records import (
    OBJECT_FIELDS,
    ObjectRecord,
    RecordError,
    Skipped,
    TextRef,
    build_record,
    check_name,
)
from iiif_shim.presentation.sources.base import ObjectSource
from iiif_shim.presentation.sources.settings import FolderSourceSettings
from iiif_shim.presentation.sources.texts import SIDECARS, format_of, real_path

OBJECT_FILE = "object.yaml"
MAX_OBJECT_FILE = 256 * 1024


class FolderSource(ObjectSource[FolderSourceSettings]):
    settings_class = FolderSourceSettings

    @property
    def _files(self) -> Listable:
        backend = self.context.backends[self.settings.backend]
        if not isinstance(backend, Listable):  # check-config refuses any but a files backend
            raise UnreadableSource(f"{self.who}: its backend cannot list folders")
        return backend

    async def names(self, limit: int) -> list[str]:
        try:
            root = await self._files.listing("")
        except OSError:
            root = None
        if root is None:
            raise UnreadableSource(f"{self.who} cannot list its folder")
        names: list[str] = []
        for folder in root.folders:
            if len(names) >= limit:
                break
            if check_name(folder) is not None:
                continue
            try:
                inside = await self._files.listing(folder)
            except OSError:
                continue
            if inside is not None and inside.images:
                names.append(folder)
        return names

    async def record(self, name: str) -> ObjectRecord | None:
        if check_name(name) is not None or "/" in name or name in (".", ".."):
            return None
        try:
            inside = await self._files.listing(name)
        except OSError:
            raise self.bad(name, "its folder cannot be read") from None
        if inside is None or not inside.images:
            return None
        try:
            raw = await self._files.read(f"{name}/{OBJECT_FILE}", MAX_OBJECT_FILE)
        except OSError:
            raise self.bad(name, f"{OBJECT_FILE} cannot be read") from None
        texts = {stem: _sidecar(inside.sidecars.get(stem, ())) for stem in inside.images}
        found: ObjectRecord = await self.context.run_blocking(
            self._record, name, inside.images, raw, texts
        )
        return self.noted(found)

    async def text_stamp(self, ref: TextRef) -> str | None:
        try:
            stamp = await self._files.stamp(ref.where)
        except OSError as exc:
            raise self._unreadable(ref, exc) from None
        if stamp is None:
            await self._not_there(ref)
        return stamp

    async def read_text(self, ref: TextRef, limit: int) -> TextFile | None:
        files = self._files
        try:
            stamp = await files.stamp(ref.where)  # before reading: a change is seen next time
            data = await files.read(ref.where, limit) if stamp is not None else None
        except OSError as exc:
            raise self._unreadable(ref, exc) from None
        if stamp is None or data is None:
            await self._not_there(ref)
            return None
        if len(data) > limit:
            raise BadRecord(
                f"{self.who}: text file {ref.where[:200]!r} is larger than {limit} bytes"
            )
        fmt = None if ref.format is None else TextFormat(ref.format)
        return TextFile(data, stamp, ref.where, fmt)

    async def _not_there(self, ref: TextRef) -> None:
        """A file the backend does not give: BadRecord when it is because it leads out of the
        backend's root (a link leading out, a ``..``), so that it is said as such; else it is
        simply not there."""
        backend = self.context.backends[self.settings.backend]
        if isinstance(backend, FilesBackend):
            root = backend.settings.root
            await self.context.run_blocking(real_path, root, ref.where, self.who)

    def _unreadable(self, ref: TextRef, exc: OSError) -> BadRecord:
        return BadRecord(
            f"{self.who}: text file {ref.where[:200]!r} cannot be read", detail=exc.strerror
        )

    def place(self, record: ObjectRecord, skipped: Skipped) -> tuple[str, str | None]:
        """The object's file and the key of a value left out."""
        where = f"{record.name}/{OBJECT_FILE}"
        if skipped.canvas is not None:
            return where, f"canvases.{record.name}: canvas {skipped.canvas + 1} {skipped.field}"
        if skipped.entry is not None:
            return where, f"metadata[{skipped.entry}]"
        return where, skipped.field

    def _record(
        self,
        name: str,
        images: Sequence[str],
        raw: bytes | None,
        texts: Mapping[str, str | None],
    ) -> ObjectRecord:
        """The record of folder ``name`` (blocking: its object file is parsed here); ``texts``:
        each image's text sidecar, if it has one."""
        spec = self._object_file(raw, name)
        refused = [
            Skipped(str(key)[:40], "not a key of object.yaml", where=self._file(name))
            for key in spec
            if key not in _KNOWN
        ]

        def shaped(value: Any, key: str, what: str) -> Mapping[Any, Any]:
            if isinstance(value, Mapping):
                return value
            if value is not None:
                refused.append(Skipped(key, f"must be {what}", where=self._file(name)))
            return {}

        canvases_spec = shaped(
            spec.get("canvases"), "canvases", "a mapping of image name to its fields"
        )
        canvases = []
        for stem in images:
            extra = shaped(canvases_spec.get(stem), f"canvases.{stem}", "a mapping (label, range)")
            sidecar = texts.get(stem)
            text = None if sidecar is None else TextRef(f"{name}/{sidecar}", format_of(sidecar))
            canvases.append(
                {"image": f"{name}/{stem}", "canvas_label": extra.get("label"),
                 "range": extra.get("range"), "text": text}
            )  # fmt: skip
        metadata = shaped(spec.get("metadata"), "metadata", "a mapping of label to value")
        fields = {key: spec.get(key) for key in OBJECT_FIELDS}
        try:
            return build_record(
                name, self.name, fields, canvases, list(metadata.items()), strict=self.strict,
                refused=refused,
            )  # fmt: skip
        except RecordError as exc:
            raise self.unusable(name, exc) from None

    @staticmethod
    def _file(name: str) -> str:
        return f"{name}/{OBJECT_FILE}"

    def _object_file(self, raw: bytes | None, name: str) -> Mapping[str, Any]:
        if raw is None:
            return {}
        if len(raw) > MAX_OBJECT_FILE:
            raise self.bad(name, f"{OBJECT_FILE} is larger than {MAX_OBJECT_FILE} bytes")
        try:
            data = yaml.safe_load(raw.decode("utf-8"))
        except (yaml.YAMLError, UnicodeDecodeError, RecursionError):
            raise self.bad(name, f"{OBJECT_FILE} is not valid UTF-8 YAML") from None
        if data is None:
            return {}
        if not isinstance(data, Mapping):
            raise self.bad(name, f"{OBJECT_FILE} must be a mapping")
        return data


_KNOWN = frozenset({*OBJECT_FIELDS, "metadata", "canvases"})


def _sidecar(names: Sequence[str]) -> str | None:
    """An image's text sidecar among its sidecar files: the first of SIDECARS (by extension,
    in any case) it has."""
    by_extension = {posixpath.splitext(n)[1].lower(): n for n in sorted(names, reverse=True)}
    return next((by_extension[ext] for ext in SIDECARS if ext in by_extension), None)
