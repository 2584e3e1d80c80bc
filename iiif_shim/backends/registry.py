"""Backends by their config ``type:`` name (their settings classes: ``settings.BACKEND_SETTINGS``).
Each module owns one legacy protocol."""

from __future__ import annotations

from collections.abc import Mapping
from types import MappingProxyType
from typing import Any

from iiif_shim.backends.base import Backend
from iiif_shim.backends.deepzoom import DeepZoomBackend
from iiif_shim.backends.files import FilesBackend
from iiif_shim.backends.http import HttpBackend
from iiif_shim.backends.iiif import IiifBackend
from iiif_shim.backends.iip import IipBackend
from iiif_shim.backends.settings import BackendSettings
from iiif_shim.backends.template import TemplateBackend
from iiif_shim.backends.thumbor import ThumborBackend
from iiif_shim.backends.zoomify import ZoomifyBackend

BACKEND_TYPES: Mapping[str, type[Backend[Any]]] = MappingProxyType(
    {
        cls.settings_class.type_name: cls
        for cls in (
            FilesBackend,
            HttpBackend,
            IipBackend,
            DeepZoomBackend,
            ZoomifyBackend,
            ThumborBackend,
            IiifBackend,
            TemplateBackend,
        )
    }
)


def backend_for(name: str, settings: BackendSettings) -> Backend[Any]:
    """The backend ``settings`` (of any type in :data:`BACKEND_TYPES`) describe, not started."""
    return BACKEND_TYPES[settings.type_name](name, settings)
