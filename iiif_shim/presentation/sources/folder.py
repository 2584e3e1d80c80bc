"""``type: folder``: each sub-folder of a ``files`` backend is an object, its images the canvases
in natural order (``p2`` before ``p10``); an optional ``object.yaml`` inside gives the object's
fields (the same names as the CSV columns) and per-image canvas labels and ranges."""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from typing import Any

import yaml

from iiif_shim.backends.base import Listable
from iiif_shim.base.errors import BackendError, BadRecord, UnreadableSource
from iiif_shim.presentation.records import (
    OBJECT_FIELDS,
    ObjectRecord,
    RecordError,
    Skipped,
    build_record,
    check_name,
)
from iiif_shim.presentation.sources.base import ObjectSource
from iiif_shim.presentation.sources.settings import FolderSourceSettings

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
            raise self._bad(name, "its folder cannot be read") from None
        if inside is None or not inside.images:
            return None
        try:
            raw = await self._files.read(f"{name}/{OBJECT_FILE}", MAX_OBJECT_FILE)
        except OSError:
            raise self._bad(name, f"{OBJECT_FILE} cannot be read") from None
        found: ObjectRecord = await self.context.run_blocking(
            self._record, name, inside.images, raw
        )
        return self.noted(found)

    def place(self, record: ObjectRecord, skipped: Skipped) -> tuple[str, str | None]:
        """The object's file and the key of a value left out."""
        where = f"{record.name}/{OBJECT_FILE}"
        if skipped.canvas is not None:
            return where, f"canvases.{record.name}: canvas {skipped.canvas + 1} {skipped.field}"
        if skipped.entry is not None:
            return where, f"metadata[{skipped.entry}]"
        return where, skipped.field

    def _record(self, name: str, images: Sequence[str], raw: bytes | None) -> ObjectRecord:
        """The record of folder ``name`` (blocking: its object file is parsed here)."""
        spec = self._object_file(raw, name)
        canvases_spec = spec.get("canvases") or {}
        if not isinstance(canvases_spec, Mapping):
            raise self._bad(name, "canvases: must be a mapping of image name to its fields")
        canvases = []
        for stem in images:
            extra = canvases_spec.get(stem) or {}
            if not isinstance(extra, Mapping):
                raise self._bad(name, f"canvases.{stem}: must be a mapping (label, range)")
            canvases.append(
                {"image": f"{name}/{stem}", "canvas_label": extra.get("label"),
                 "range": extra.get("range")}
            )  # fmt: skip
        metadata = spec.get("metadata") or {}
        if not isinstance(metadata, Mapping):
            raise self._bad(name, "metadata: must be a mapping of label to value")
        fields = {key: spec.get(key) for key in OBJECT_FIELDS}
        try:
            return build_record(
                name, self.name, fields, canvases, list(metadata.items()), strict=self.strict
            )
        except RecordError as exc:
            raise self.unusable(name, exc) from None

    def _object_file(self, raw: bytes | None, name: str) -> Mapping[str, Any]:
        if raw is None:
            return {}
        if len(raw) > MAX_OBJECT_FILE:
            raise self._bad(name, f"{OBJECT_FILE} is larger than {MAX_OBJECT_FILE} bytes")
        try:
            data = yaml.safe_load(raw.decode("utf-8"))
        except (yaml.YAMLError, UnicodeDecodeError, RecursionError):
            raise self._bad(name, f"{OBJECT_FILE} is not valid UTF-8 YAML") from None
        if data is None:
            return {}
        if not isinstance(data, Mapping):
            raise self._bad(name, f"{OBJECT_FILE} must be a mapping")
        known = {*OBJECT_FIELDS, "metadata", "canvases"}
        unknown = sorted(str(k) for k in data if k not in known)
        if unknown:
            raise self._bad(name, f"{OBJECT_FILE}: unknown keys {', '.join(unknown)}")
        return data

    def _bad(self, name: str, message: str) -> BackendError:
        return BadRecord(f"{self.who}, object {name!r}: {message}")
