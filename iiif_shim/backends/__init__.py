"""Backends by their config ``type:`` name. Each module owns one legacy protocol."""

from __future__ import annotations

from iiif_shim.backends.base import Backend
from iiif_shim.backends.deepzoom import DeepZoomBackend
from iiif_shim.backends.files import FilesBackend
from iiif_shim.backends.http import HttpBackend
from iiif_shim.backends.iiif import IiifBackend
from iiif_shim.backends.iip import IipBackend
from iiif_shim.backends.template import TemplateBackend
from iiif_shim.backends.thumbor import ThumborBackend
from iiif_shim.backends.zoomify import ZoomifyBackend

BACKEND_TYPES: dict[str, type[Backend]] = {
    cls.type_name: cls
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

__all__ = ["BACKEND_TYPES", "Backend"]
