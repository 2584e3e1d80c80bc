"""``type: folder``: each sub-folder of a ``files`` backend is an object, its images the canvases
in natural order (``p2`` before ``p10``); an optional ``object.yaml`` inside gives the object's
fields (the same names as the CSV columns) and per-image canvas labels and ranges."""

from __future__ import annotations

import os
import re
from collections.abc import Mapping
from typing import Any

import yaml

from iiif_shim.backends.base import Finding
from iiif_shim.backends.files import FilesBackend
from iiif_shim.base.errors import BackendError
from iiif_shim.presentation.records import (
    OBJECT_FIELDS,
    ObjectRecord,
    RecordError,
    build_record,
    check_name,
)
from iiif_shim.presentation.sources.base import ObjectSource
from iiif_shim.presentation.sources.settings import ConfigView, FolderSourceSettings

OBJECT_FILE = "object.yaml"
MAX_OBJECT_FILE = 256 * 1024


def natural_key(name: str) -> tuple[tuple[int, int | str], ...]:
    """Sort key that puts ``p2`` before ``p10``."""
    return tuple(
        (0, int(part)) if part.isdigit() else (1, part.lower())
        for part in re.split(r"(\d+)", name)
        if part
    )


class FolderSource(ObjectSource):
    type_name = "folder"
    settings_class = FolderSourceSettings
    settings: FolderSourceSettings

    @classmethod
    def findings(cls, settings: Any, config: ConfigView) -> list[Finding]:
        backend = config.backends.get(settings.backend)
        if backend is None:
            return [Finding("backend", f"no backend named {settings.backend!r}", error=True)]
        if backend.type != "files":
            return [
                Finding(
                    "backend",
                    f"backend {settings.backend!r} is of type {backend.type!r}; a folder source "
                    "lists the sub-folders of a `files` backend",
                    error=True,
                )
            ]
        if settings.backend not in config.router.identity_backends():
            return [
                Finding(
                    "backend",
                    f"no catch-all route passes identifiers unchanged (id: '{{id}}') to backend "
                    f"{settings.backend!r}, so its files have no IIIF identifiers to show",
                    error=True,
                )
            ]
        return []

    @property
    def _files(self) -> FilesBackend:
        backend = self.context.backends[self.settings.backend]
        assert isinstance(backend, FilesBackend)
        return backend

    async def names(self, limit: int) -> list[str]:
        found: list[str] = await self.context.run_blocking(self._names, limit)
        return found

    async def record(self, name: str) -> ObjectRecord | None:
        if check_name(name) is not None or "/" in name or name in (".", ".."):
            return None
        found: ObjectRecord | None = await self.context.run_blocking(self._record, name)
        return found

    def _root(self) -> str:
        return os.path.realpath(self._files.settings.root)

    def _images(self, folder: str) -> list[str]:
        exts = tuple(e.lower() for e in self._files.settings.extensions)
        stems = {
            os.path.splitext(entry.name)[0]
            for entry in os.scandir(folder)
            if entry.is_file()
            and not entry.name.startswith(".")
            and os.path.splitext(entry.name)[1].lower() in exts
        }
        return sorted(stems, key=natural_key)

    def _names(self, limit: int) -> list[str]:
        root = self._root()
        names: list[str] = []
        try:
            entries = sorted(os.scandir(root), key=lambda e: natural_key(e.name))
        except OSError:
            raise BackendError(f"{self.who} cannot list its folder", kind="unreadable") from None
        for entry in entries:
            if len(names) >= limit:
                break
            if entry.name.startswith(".") or check_name(entry.name) is not None:
                continue
            if entry.is_dir() and self._images(entry.path):
                names.append(entry.name)
        return names

    def _record(self, name: str) -> ObjectRecord | None:
        root = self._root()
        folder = os.path.realpath(os.path.join(root, name))
        if os.path.dirname(folder) != root or not os.path.isdir(folder):
            return None
        images = self._images(folder)
        if not images:
            return None
        spec = self._object_file(folder, name)
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
            return build_record(name, self.name, fields, canvases, list(metadata.items()))
        except RecordError as exc:
            raise self._bad(name, str(exc)) from None

    def _object_file(self, folder: str, name: str) -> Mapping[str, Any]:
        path = os.path.join(folder, OBJECT_FILE)
        try:
            with open(path, "rb") as f:
                raw = f.read(MAX_OBJECT_FILE + 1)
        except FileNotFoundError:
            return {}
        except OSError:
            raise self._bad(name, f"{OBJECT_FILE} cannot be read") from None
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
        return BackendError(f"{self.who}, object {name!r}: {message}", kind="bad_record")
