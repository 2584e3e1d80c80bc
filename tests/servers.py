"""The real legacy servers the tests run the shim against, started on free 127.0.0.1 ports.

- nginx: the test images as static files, plus DeepZoom and Zoomify pyramids made by
  ``vips dzsave`` (under ``/dz/`` and ``/zoomify/``);
- IIPImage: iipsrv (FastCGI) behind lighttpd, over pyramidal TIFFs made by ``vips tiffsave``;
  its native IIP protocol at ``/fcgi-bin/iipsrv.fcgi`` and its IIIF 2 endpoint at ``/iiif/``;
- Thumbor, from its own venv (``.venv-thumbor``), over the test images, with a security key;
- the Djatoka and CONTENTdm stand-ins (``tests/standins.py``).

Every one of them is required: a missing one fails the test that needs it.
"""

from __future__ import annotations

import os
import shutil
import subprocess
import sys
import time
import urllib.request
from pathlib import Path

from tests.support import ROOT, VALIDATOR_ID, Process, free_port, need_tool

PYRAMIDS = (VALIDATOR_ID, "chart", "quad")
THUMBOR_KEY = "test-key-for-signed-urls"
THUMBOR_VENV = Path(os.environ.get("THUMBOR_VENV", ROOT / ".venv-thumbor"))
IIPSRV = "/usr/lib/iipimage-server/iipsrv.fcgi"


def _run(args: list[str]) -> None:
    subprocess.run(args, check=True, capture_output=True, timeout=300)


def build_pyramids(images: Path, out: Path) -> Path:
    """DeepZoom (``dz/{name}.dzi``) and Zoomify (``zoomify/{name}/``) pyramids, as legacy sites
    publish them, and pyramidal TIFFs (``tiff/{name}.tif``) for iipsrv."""
    vips = need_tool("vips")
    for folder in ("dz", "zoomify", "tiff"):
        (out / folder).mkdir(parents=True, exist_ok=True)
    # JPEG tiles at quality 90, like the TIFFs: vips' default 75 alone strays from the test
    # image by more than iiif-validator-ng's pixel tolerance, whatever the server then does
    for name in PYRAMIDS:
        source = next(images.glob(f"{name}.*"))
        dz, zoomify = str(out / "dz" / name), str(out / "zoomify" / name)
        _run([vips, "dzsave", str(source), dz, "--layout", "dz", "--suffix", ".jpeg[Q=90]"])
        _run(
            [vips, "dzsave", str(source), zoomify, "--layout", "zoomify", "--suffix", ".jpg[Q=90]"]
        )
        make_tiff(source, out / "tiff" / f"{name}.tif")
    return out


def make_tiff(source: Path, out: Path) -> None:
    """A tiled pyramidal TIFF (256-px JPEG tiles), as IIPImage sites keep their masters."""
    _run(
        [
            need_tool("vips"),
            "tiffsave",
            str(source),
            str(out),
            "--tile",
            "--pyramid",
            "--compression",
            "jpeg",
            "--Q",
            "90",
            "--tile-width",
            "256",
            "--tile-height",
            "256",
        ]
    )


def _wait_http(url: str, proc: subprocess.Popen[bytes], log: Path, timeout: float = 20) -> None:
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        if proc.poll() is not None:
            raise RuntimeError(f"exited with {proc.returncode}: {log.read_text()}")
        try:
            with urllib.request.urlopen(url, timeout=2) as resp:
                if resp.status == 200:
                    return
        except OSError:
            pass
        time.sleep(0.05)
    raise RuntimeError(f"{url} not ready after {timeout}s: {log.read_text()}")


class IipServer:
    """iipsrv on a FastCGI port, lighttpd in front of it (serving ``docroot`` as static files,
    with ``lighttpd_extra`` config lines, when given)."""

    def __init__(
        self,
        tiffs: Path,
        workdir: Path,
        ready: str = f"{VALIDATOR_ID}.tif",
        docroot: Path | None = None,
        lighttpd_extra: str = "",
    ) -> None:
        if not os.access(IIPSRV, os.X_OK):
            need_tool("iipsrv.fcgi", IIPSRV)
        lighttpd = need_tool("lighttpd", "/usr/sbin/lighttpd")
        fcgi_port, self.port = free_port(), free_port()
        env = {
            "PATH": "/usr/bin:/bin",
            "FILESYSTEM_PREFIX": f"{tiffs}/",
            "URI_MAP": "iiif=>IIIF",
            "MAX_CVT": "5000",
            "VERBOSITY": "0",
            "LOGFILE": str(workdir / "iipsrv.log"),
            "MEMCACHED_SERVERS": "",
        }
        self._iipsrv_args = ([IIPSRV, "--bind", f"127.0.0.1:{fcgi_port}"], fcgi_port, env)
        self._workdir = workdir
        self.iipsrv = self._start_iipsrv()
        if docroot is None:
            docroot = workdir / "docroot"
            docroot.mkdir(exist_ok=True)
        conf = workdir / "lighttpd.conf"
        fastcgi = f'(( "host" => "127.0.0.1", "port" => {fcgi_port}, "check-local" => "disable" ))'
        conf.write_text(
            'server.modules = ( "mod_fastcgi", "mod_accesslog" )\n'
            'server.bind = "127.0.0.1"\n'
            f"server.port = {self.port}\n"
            f'server.document-root = "{docroot}"\n'
            'mimetype.assign = ( ".png" => "image/png", ".dzi" => "application/xml" )\n'
            f"{lighttpd_extra}\n"
            f'accesslog.filename = "{workdir / "access.log"}"\n'
            'accesslog.format = "%r %s %b"\n'
            f'fastcgi.server = ( "/fcgi-bin/iipsrv.fcgi" => {fastcgi}, "/iiif/" => {fastcgi} )\n'
        )
        self.access_log = workdir / "access.log"
        try:
            self.lighttpd = Process(
                [lighttpd, "-D", "-f", str(conf)], self.port, workdir / "lighttpd.out"
            )
        except BaseException:
            self.iipsrv.stop()
            raise
        try:
            _wait_http(
                f"{self.url}/fcgi-bin/iipsrv.fcgi?FIF={ready}&OBJ=IIP,1.0",
                self.lighttpd.proc,
                workdir / "lighttpd.out",
            )
        except BaseException:
            self.stop()  # never leave a half-started server behind
            raise

    def _start_iipsrv(self) -> Process:
        args, port, env = self._iipsrv_args
        return Process(args, port, self._workdir / "iipsrv.out", env=env, clean_env=True)

    def kill_iipsrv(self) -> None:
        """SIGKILL iipsrv (lighttpd stays up), as a crash would."""
        self.iipsrv.proc.kill()
        self.iipsrv.proc.wait(10)
        self.iipsrv.stop()

    def restart_iipsrv(self) -> None:
        self.iipsrv = self._start_iipsrv()

    @property
    def url(self) -> str:
        return f"http://127.0.0.1:{self.port}"

    def stop(self) -> None:
        self.lighttpd.stop()
        self.iipsrv.stop()


def start_thumbor(images: Path, workdir: Path) -> Process:
    binary = THUMBOR_VENV / "bin" / "thumbor"
    if not binary.exists():
        need_tool("thumbor", str(binary))
    port = free_port()
    conf = workdir / "thumbor.conf"
    conf.write_text(
        "LOADER = 'thumbor.loaders.file_loader'\n"
        f"FILE_LOADER_ROOT_PATH = '{images}'\n"
        "ALLOW_UNSAFE_URL = True\n"
        "STORAGE = 'thumbor.storages.no_storage'\n"
        "RESULT_STORAGE = None\n"
        "MAX_WIDTH = 0\n"
        "MAX_HEIGHT = 0\n"
        f"SECURITY_KEY = '{THUMBOR_KEY}'\n"
    )
    proc = Process(
        [str(binary), "-i", "127.0.0.1", "-p", str(port), "-c", str(conf)],
        port,
        workdir / "thumbor.log",
    )
    try:
        _wait_http(f"http://127.0.0.1:{port}/healthcheck", proc.proc, workdir / "thumbor.log")
    except BaseException:
        proc.stop()
        raise
    return proc


def standin_images(images: Path, out: Path) -> Path:
    """The validator image as Djatoka ``rft_id`` and as CONTENTdm ``samples:1``."""
    (out / "samples").mkdir(parents=True, exist_ok=True)
    source = images / f"{VALIDATOR_ID}.png"
    shutil.copy(source, out / f"{VALIDATOR_ID}.png")
    shutil.copy(source, out / "samples" / "1.png")
    shutil.copy(images / "chart.jpg", out / "samples" / "2.jpg")
    return out


def start_standin(kind: str, root: Path, workdir: Path) -> Process:
    port = free_port()
    return Process(
        [sys.executable, "-m", "tests.standins", kind, "--port", str(port), "--root", str(root)],
        port,
        workdir / f"{kind}.log",
        cwd=ROOT,
    )
