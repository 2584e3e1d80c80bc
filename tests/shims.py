"""A shim per backend type, configured over the real servers of ``tests/servers.py``."""

from __future__ import annotations

from collections.abc import Iterator
from contextlib import contextmanager
from dataclasses import dataclass
from pathlib import Path

import pytest

from iiif_shim.backends.registry import BACKEND_TYPES
from tests.servers import THUMBOR_KEY, IipServer
from tests.support import ROOT, VALIDATOR_ID, Process, start_shim

# The shims that run each backend type of the registry over a real server: every type must be
# here. A type the registry has and this table lacks is still in BACKEND_NAMES, as a shim that
# fails to start: a new backend fails the contract suite until it has its server.
CONTRACT_SHIMS: dict[str, tuple[str, ...]] = {
    "files": ("files",),
    "http": ("http",),
    "iip": ("iip",),
    "deepzoom": ("deepzoom",),
    "zoomify": ("zoomify",),
    "thumbor": ("thumbor",),
    "iiif": ("iiif",),
    "template": ("djatoka", "contentdm"),  # the shipped presets, over their stand-ins
}
BACKEND_NAMES = tuple(
    name
    for type_name in BACKEND_TYPES
    for name in CONTRACT_SHIMS.get(type_name, (f"untested-{type_name}",))
)


@dataclass(frozen=True)
class Servers:
    images: Path
    nginx: int
    iip_url: str
    thumbor: int
    djatoka: int
    contentdm: int


@dataclass
class BackendShim:
    name: str
    process: Process

    @property
    def validator_id(self) -> str:
        """The validator's test image, as this backend's identifier."""
        return "samples:1" if self.name == "contentdm" else VALIDATOR_ID


def backend_config(name: str, s: Servers) -> str:
    if name.startswith("untested-"):
        pytest.fail(
            f"backend type {name.removeprefix('untested-')!r} has no real server in the contract "
            "suite: give it one in tests/shims.py (CONTRACT_SHIMS, backend_config)"
        )
    web = f"http://127.0.0.1:{s.nginx}"
    backend = {
        "files": f'{{type: files, root: "{s.images}"}}',
        "http": f'{{type: http, url: "{web}/{{id}}.png"}}',
        "iip": f'{{type: iip, url: "{s.iip_url}/fcgi-bin/iipsrv.fcgi", path: "{{id}}.tif"}}',
        "thumbor": (  # Thumbor's loader root is the images' parent: a fixed beginning to sign
            f'{{type: thumbor, url: "http://127.0.0.1:{s.thumbor}", '
            f'path: "{s.images.name}/{{id}}.png", security_key: "{THUMBOR_KEY}"}}'
        ),
        "deepzoom": f'{{type: deepzoom, url: "{web}/dz/{{id}}.dzi"}}',
        "zoomify": f'{{type: zoomify, url: "{web}/zoomify/{{id}}/"}}',
        "iiif": f'{{type: iiif, url: "{s.iip_url}/iiif/{{id}}.tif"}}',
    }.get(name)
    if backend is not None:
        # a route that admits only plain names, as a signing backend's routes should
        match = ' match: "^[^/]+$",' if name == "thumbor" else ""
        return f"backends:\n  {name}: {backend}\nroutes:\n  - {{{match} backend: {name}}}\n"
    # the shipped presets, pointed at the stand-ins
    preset = (ROOT / "config" / f"{name}.yaml").read_text()
    host = {"djatoka": "djatoka.example.org", "contentdm": "cdm.example.org"}[name]
    port = s.djatoka if name == "djatoka" else s.contentdm
    return preset.replace(f"http://{host}", f"http://127.0.0.1:{port}")


def servers_of(
    images: Path, nginx: Process, iip: IipServer, thumbor: Process, standins: dict[str, Process]
) -> Servers:
    return Servers(
        images,
        nginx.port,
        iip.url,
        thumbor.port,
        standins["djatoka"].port,
        standins["contentdm"].port,
    )


_QUIET = "server: {health_interval: 3600}\n"


@contextmanager
def running_shims(
    servers: Servers, tmp_path_factory: pytest.TempPathFactory, label: str, more: str = ""
) -> Iterator[dict[str, BackendShim]]:
    """One shim per backend type over ``servers`` (``more``: YAML added to each config),
    stopped at the end. Their background health checks are rare, so the traffic counters of
    ``/health`` show only the requests a test makes."""
    started: dict[str, BackendShim] = {}
    try:
        for name in BACKEND_NAMES:
            tmp = tmp_path_factory.mktemp(f"{label}-{name}")
            config = tmp / "shim.yaml"
            config.write_text(_QUIET + backend_config(name, servers) + more)
            started[name] = BackendShim(name, start_shim(config, tmp))
        yield started
    finally:
        for shim in started.values():
            shim.process.stop()
