"""The servers ``bench/perf.py`` compares, each started on a free 127.0.0.1 port and stopped
by it: iiif-shim (with the optional features this build has, found by asking ``check-config``),
the IIIF reference implementation, Thumbor, iiif-processor in Node, nginx, and Redis. IIPImage
and Thumbor start as in the tests (``tests/servers.py``)."""

from __future__ import annotations

import subprocess
import sys
import tempfile
from dataclasses import dataclass
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent.parent))

from bench import tiles
from tests.support import Process, free_port, need_tool, nginx_config, start_shim, write_config

ROOT = Path(__file__).resolve().parent.parent
NODE_MODULES = ROOT / "bench" / ".node" / "node_modules"
SHIM = [sys.executable, "-m", "iiif_shim"]


def accepts(yaml: str) -> bool:
    """Whether this build's ``check-config`` accepts a config with these extra keys."""
    with tempfile.TemporaryDirectory() as tmp:
        body = (
            yaml + f'\nbackends: {{b: {{type: files, root: "{tmp}"}}}}\nroutes: [{{backend: b}}]\n'
        )
        path = write_config(Path(tmp) / "probe.yaml", body)
        done = subprocess.run(
            [*SHIM, "check-config", str(path)], capture_output=True, timeout=60, cwd=ROOT
        )
        return done.returncode == 0


@dataclass(frozen=True)
class Features:
    """What this build of the shim has; each figure uses what is there."""

    processes: bool
    disk: bool
    redis: bool
    vips: bool

    @classmethod
    def detect(cls) -> Features:
        return cls(
            processes=accepts("server: {processes: 2}"),
            disk=accepts("cache: {disk: /tmp/iiif-shim-probe, disk_bytes: 1048576}"),
            redis=accepts('cache: {redis: "redis://127.0.0.1:6379/0"}'),
            vips=accepts("imaging: {engine: vips}"),
        )

    def describe(self) -> str:
        names = {
            "processes": "`server.processes`",
            "disk": "`cache.disk`",
            "redis": "`cache.redis`",
            "vips": "`imaging.engine: vips`",
        }
        have = [n for k, n in names.items() if getattr(self, k)]
        lack = [n for k, n in names.items() if not getattr(self, k)]
        return (
            f"present: {', '.join(have) or 'none'}; absent: {', '.join(lack) or 'none'}"
            " (asked of `iiif-shim check-config`)"
        )


class Shim:
    """One iiif-shim from a config assembled here: ``server``/``cache``/``imaging`` keys are
    given only when this build knows them (unknown keys are config errors)."""

    def __init__(
        self,
        name: str,
        workdir: Path,
        backends: str,
        features: Features,
        *,
        processes: int | None = 1,
        image_bytes: int | None = None,
        engine: str | None = None,
        redis: str | None = None,
        extra_cache: str = "",
    ) -> None:
        self.name = name
        server = []
        if processes is not None and features.processes:
            server.append(f"processes: {processes}")
        cache = [] if image_bytes is None else [f"image_bytes: {image_bytes}"]
        if redis:
            cache.append(f'redis: "{redis}"')
        if extra_cache:
            cache.append(extra_cache)
        lines = []
        if server:
            lines.append(f"server: {{{', '.join(server)}}}")
        if cache:
            lines.append(f"cache: {{{', '.join(cache)}}}")
        if engine and features.vips:
            lines.append(f"imaging: {{engine: {engine}}}")
        lines.append(backends)
        workdir.mkdir(parents=True, exist_ok=True)
        self.config = write_config(workdir / f"{name}.yaml", "\n".join(lines) + "\n")
        self.proc = start_shim(self.config, workdir, "--log-level", "warning")
        self.port = self.proc.port
        self.pid = self.proc.proc.pid

    @property
    def url(self) -> str:
        return f"http://127.0.0.1:{self.port}"

    def stop(self) -> None:
        self.proc.stop()


def start_reference(images: Path, workdir: Path) -> tuple[Process, str]:
    """The IIIF reference implementation (``iiif_testserver.py``, PIL), IIIF 3.0: its base
    path for ``chart``."""
    workdir.mkdir(parents=True, exist_ok=True)
    peer = ROOT / ".venv-bench" / "bin" / "iiif_testserver.py"
    proc, base = tiles.start_peer(str(need_tool("iiif_testserver.py", str(peer))), images, workdir)
    return proc, base.split(f":{proc.port}", 1)[1]


def start_iiif_processor(images: Path, workdir: Path) -> Process:
    """iiif-processor 7.x (sharp/libvips) in ``bench/iiif-processor-server.js``: files of
    ``images`` at ``/iiif/3/{file name}``."""
    if not (NODE_MODULES / "iiif-processor").is_dir():
        raise SystemExit("iiif-processor is missing: run `bash bench/perf.sh`, which installs it")
    workdir.mkdir(parents=True, exist_ok=True)
    port = free_port()
    return Process(
        [
            need_tool("node"),
            str(ROOT / "bench" / "iiif-processor-server.js"),
            str(port),
            str(images),
        ],
        port,
        workdir / "iiif-processor.log",
        env={"NODE_PATH": str(NODE_MODULES)},
    )


def start_nginx(root: Path, workdir: Path) -> Process:
    workdir.mkdir(parents=True, exist_ok=True)
    port = free_port()
    conf = nginx_config(root, port, workdir)
    return Process(
        [need_tool("nginx", "/usr/sbin/nginx"), "-c", str(conf), "-p", str(workdir)],
        port,
        workdir / "nginx.out",
    )


def start_redis(workdir: Path) -> Process:
    workdir.mkdir(parents=True, exist_ok=True)
    port = free_port()
    args = [need_tool("redis-server"), "--bind", "127.0.0.1", "--port", str(port)]
    args += ["--save", "", "--appendonly", "no", "--dir", str(workdir)]
    return Process(args, port, workdir / "redis.log")
