"""The README's configuration reference lists every setting the code reads."""

from __future__ import annotations

import dataclasses

import pytest

from iiif_shim.backends.settings import BACKEND_SETTINGS, NetworkSettings
from iiif_shim.cache.settings import CacheSettings
from iiif_shim.config.settings import LandingSettings, ServerSettings
from iiif_shim.core.routing import RouteSettings
from iiif_shim.core.settings import IIIFSettings
from iiif_shim.imaging.settings import ImagingSettings
from iiif_shim.presentation.settings import PresentationSettings, ProviderSettings
from iiif_shim.presentation.sources.settings import SOURCE_SETTINGS
from iiif_shim.presentation.viewers import ViewerSettings
from iiif_shim.upstream.settings import UpstreamSettings
from tests.support import ROOT

README = (ROOT / "README.md").read_text()

SECTIONS = [
    ServerSettings,
    IIIFSettings,
    CacheSettings,
    ImagingSettings,
    RouteSettings,
    LandingSettings,
    PresentationSettings,
    ProviderSettings,
    ViewerSettings,
    NetworkSettings,
    *BACKEND_SETTINGS.values(),
]
SOURCE_SECTIONS = list(SOURCE_SETTINGS.values())


@pytest.mark.parametrize("cls", SECTIONS, ids=lambda c: c.__name__)
def test_every_setting_is_documented(cls: type) -> None:
    for field in dataclasses.fields(cls):
        assert f"| `{field.name}` |" in README, f"{cls.__name__}.{field.name} not in README"


@pytest.mark.parametrize("cls", SOURCE_SECTIONS, ids=lambda c: c.__name__)
def test_every_source_setting_is_documented(cls: type) -> None:
    upstream = {f.name for f in dataclasses.fields(UpstreamSettings)}
    for field in dataclasses.fields(cls):
        if field.name in upstream:  # documented once, for every source that speaks HTTP
            assert f"`{field.name}`" in README, field.name
        elif field.name not in ("type", "fields", "url"):
            assert f"| `{field.name}` |" in README, f"{cls.__name__}.{field.name} not in README"


def test_quick_start_commands_exist() -> None:
    assert "## Quick start" in README
    for script in ("deploy/serve.sh", "deploy/test.sh"):
        assert f"bash {script}" in README and (ROOT / script).exists()
    assert "deploy/test.sh" in (ROOT / ".ci" / "run").read_text()
