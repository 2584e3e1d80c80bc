"""Object sources by their config ``type:`` name (their settings classes:
``settings.SOURCE_SETTINGS``). Each module owns one kind of metadata."""

from __future__ import annotations

from collections.abc import Mapping
from types import MappingProxyType
from typing import Any

from iiif_shim.presentation.sources.base import ObjectSource
from iiif_shim.presentation.sources.contentdm import ContentdmSource
from iiif_shim.presentation.sources.csv import CsvSource
from iiif_shim.presentation.sources.folder import FolderSource
from iiif_shim.presentation.sources.json import JsonSource
from iiif_shim.presentation.sources.settings import SourceSettings

SOURCE_TYPES: Mapping[str, type[ObjectSource[Any]]] = MappingProxyType(
    {
        cls.settings_class.type_name: cls
        for cls in (FolderSource, CsvSource, JsonSource, ContentdmSource)
    }
)


def source_for(name: str, settings: SourceSettings) -> ObjectSource[Any]:
    """The object source ``settings`` (of any type in :data:`SOURCE_TYPES`) describe, not
    started."""
    return SOURCE_TYPES[settings.type_name](name, settings)
