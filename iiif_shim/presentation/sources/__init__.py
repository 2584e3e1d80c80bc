"""Object sources by their config ``type:`` name. Each module owns one kind of metadata."""

from __future__ import annotations

from iiif_shim.presentation.sources.base import ObjectSource, SourceContext
from iiif_shim.presentation.sources.contentdm import ContentdmSource
from iiif_shim.presentation.sources.csv import CsvSource
from iiif_shim.presentation.sources.folder import FolderSource
from iiif_shim.presentation.sources.json import JsonSource
from iiif_shim.presentation.sources.settings import ConfigView

SOURCE_TYPES: dict[str, type[ObjectSource]] = {
    cls.type_name: cls for cls in (FolderSource, CsvSource, JsonSource, ContentdmSource)
}

__all__ = ["SOURCE_TYPES", "ConfigView", "ObjectSource", "SourceContext"]
