"""Backends by their config ``type:`` name. Each module owns one legacy protocol."""

from __future__ import annotations

from .base import Backend
from .files import FilesBackend
from .http import HttpBackend

BACKEND_TYPES: dict[str, type[Backend]] = {
    cls.type_name: cls for cls in (FilesBackend, HttpBackend)
}

__all__ = ["BACKEND_TYPES", "Backend"]
