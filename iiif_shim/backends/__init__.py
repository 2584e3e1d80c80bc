"""Backends by their config ``type:`` name. Each module owns one legacy protocol."""

from __future__ import annotations

from .base import Backend
from .deepzoom import DeepZoomBackend
from .files import FilesBackend
from .http import HttpBackend
from .iiif import IiifBackend
from .iip import IipBackend
from .template import TemplateBackend
from .thumbor import ThumborBackend
from .zoomify import ZoomifyBackend

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
