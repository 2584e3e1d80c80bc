"""Object sources by their config ``type:`` name. Each module owns one kind of metadata."""

from __future__ import annotations

from .base import ConfigView, ObjectSource, SourceContext
from .contentdm import ContentdmSource
from .csv import CsvSource
from .folder import FolderSource
from .json import JsonSource

SOURCE_TYPES: dict[str, type[ObjectSource]] = {
    cls.type_name: cls for cls in (FolderSource, CsvSource, JsonSource, ContentdmSource)
}

__all__ = ["SOURCE_TYPES", "ConfigView", "ObjectSource", "SourceContext"]
