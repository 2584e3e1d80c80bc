"""Backends by their config ``type:`` name. Each module owns one legacy protocol."""

from __future__ import annotations

from .base import Backend
from .files import FilesBackend
from .http import HttpBackend
from .iiif import IiifBackend
from .template import TemplateBackend

BACKEND_TYPES: dict[str, type[Backend]] = {
    cls.type_name: cls for cls in (FilesBackend, HttpBackend, IiifBackend, TemplateBackend)
}

__all__ = ["BACKEND_TYPES", "Backend"]
