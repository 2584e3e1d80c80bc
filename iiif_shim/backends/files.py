"""``files``: master images in a local folder, read by Pillow.

Identifier ``name`` maps to ``root/name``, then ``root/name.tif`` and so on through the configured
extensions. A ``/`` inside the identifier is a subfolder. Nothing outside ``root`` is ever opened:
``..`` segments are refused and symlinks are resolved and checked. A folder's listing (for the
``folder`` object source) names its sub-folders, its images and each image's sidecar files
(the same name with another extension: OCR), which are read and stamped (size and
modification time) under the same rules.

A tiled TIFF is read by window: its pages that form a halving pyramid (as ``vips tiffsave
--tile --pyramid`` writes them, or with ``--subifd`` as SubIFDs of the first page) are its native
facts, so the planner asks for a region at a pyramid level and only the tiles of that page that
meet the region are decoded (a single-page tiled TIFF gets region reads at full size). Anything
else (stripped TIFFs, JPEG, JPEG 2000, PNG) is delivered whole and Pillow does all the work,
decoding JPEG and JPEG 2000 at reduced resolution when the output is small (a JPEG 2000's facts
carry its codestream's layout and size, ``imaging/j2k.py``: what decoding it costs).

A master asked for as it is (``core/passthrough.py``) is opened once (:meth:`FilesBackend.
open_master`): its version and header are read from the open file (the service checks that
version against the facts), and it is that very file whose bytes are sent. A process out of
file descriptors answers 503 then, rather than decode the whole master instead.
"""

from __future__ import annotations

import errno
import os
import struct
from pathlib import Path
from stat import S_ISREG
from types import MappingProxyType

from iiif_shim.backends.base import Backend, Health, Listing, OpenFile
from iiif_shim.backends.settings import FilesSettings
from iiif_shim.base.errors import BackendError, NotFound, Overloaded
from iiif_shim.base.files import NotARegularFile, read_head
from iiif_shim.base.text import natural_key
from iiif_shim.iiif.resolve import Box
from iiif_shim.imaging.fetched import Fetched
from iiif_shim.imaging.pillow import read_header, read_traits
from iiif_shim.imaging.tiff import tiff_pyramid
from iiif_shim.model.facts import NativeFacts, PyramidFacts, SourceInfo
from iiif_shim.model.plan import Capabilities, NativeOp, Target


def _version(stat: os.stat_result) -> str:
    """A file's version: changes whenever it is written (its facts and ETags carry it)."""
    return f"{stat.st_mtime_ns:x}-{stat.st_size:x}"


class FilesBackend(Backend[FilesSettings]):
    settings_class = FilesSettings
    native_note = "tiled TIFFs: region and pyramid levels"
    natives = (type(None), PyramidFacts)  # a pyramid for a tiled TIFF, nothing for the rest

    def capabilities(self, native: NativeFacts | None = None) -> Capabilities:
        """Regions of a tiled TIFF, at any of its pyramid levels; otherwise the whole file."""
        if isinstance(native, PyramidFacts):
            return Capabilities(region=True, reductions=len(native.pyramid.levels) > 1)
        return Capabilities()

    @property
    def _root(self) -> str:
        return os.path.realpath(self.settings.root)

    def locate(self, native_id: str) -> Path:
        """The file for ``native_id`` inside root, or NotFound. Blocking (stat calls)."""
        segments = native_id.split("/")
        if "\x00" in native_id or any(s in ("", ".", "..") for s in segments):
            raise NotFound("no such image")
        root = self._root
        for name in (native_id, *(native_id + ext for ext in self.settings.extensions)):
            real = os.path.realpath(os.path.join(root, name))
            if os.path.commonpath((root, real)) == root and os.path.isfile(real):
                return Path(real)
        raise NotFound("no such image")

    def _readable(self) -> bool:
        """Whether the root folder can be listed (blocking)."""
        return os.path.isdir(self._root) and os.access(self._root, os.R_OK | os.X_OK)

    async def health(self, probe: Target | None) -> tuple[Health, str | None]:
        """Down when its folder cannot be read."""
        readable: bool = await self.context.run_blocking(self._readable)
        return (Health.OK, None) if readable else (Health.DOWN, "its folder cannot be read")

    def _inside(self, relative: str) -> str | None:
        """The real path ``relative`` names under root (``""``: root), or None when it names
        nothing inside it (``..``, NUL, a link that leads out). Blocking."""
        root = self._root
        segments = relative.split("/") if relative else []
        if "\x00" in relative or any(s in ("", ".", "..") for s in segments):
            return None
        real = os.path.realpath(os.path.join(root, *segments))
        return real if os.path.commonpath((root, real)) == root else None

    def _listing(self, folder: str) -> Listing | None:
        real = self._inside(folder)
        if real is None or not os.path.isdir(real):
            return None
        exts = tuple(e.lower() for e in self.settings.extensions)
        folders, images = set(), set()
        others: dict[str, list[str]] = {}  # stem -> files that are not images
        for entry in os.scandir(real):
            if entry.name.startswith("."):
                continue
            if entry.is_dir():
                folders.add(entry.name)
            elif entry.is_file():
                stem, ext = os.path.splitext(entry.name)
                if ext.lower() in exts:
                    images.add(stem)
                elif ext:
                    others.setdefault(stem, []).append(entry.name)
        sidecars = {stem: tuple(sorted(others[stem])) for stem in images if stem in others}
        return Listing(
            tuple(sorted(folders, key=natural_key)),
            tuple(sorted(images, key=natural_key)),
            MappingProxyType(sidecars),
        )

    async def listing(self, folder: str) -> Listing | None:
        """Sub-folders and images of ``folder`` (under root); OSError when it cannot be read."""
        found: Listing | None = await self.context.run_blocking(self._listing, folder)
        return found

    def _read(self, path: str, limit: int) -> bytes | None:
        real = self._inside(path)
        if real is None:
            return None
        try:
            return read_head(real, limit + 1)
        except (FileNotFoundError, IsADirectoryError, NotARegularFile):
            return None

    async def read(self, path: str, limit: int) -> bytes | None:
        """The first ``limit + 1`` bytes of file ``path`` (under root), None when there is no
        such regular file (a pipe or a device is none); OSError when it cannot be read."""
        found: bytes | None = await self.context.run_blocking(self._read, path, limit)
        return found

    def _stamp(self, path: str) -> str | None:
        real = self._inside(path)
        if real is None:
            return None
        try:
            stat = os.stat(real)
        except (FileNotFoundError, NotADirectoryError):
            return None
        return _version(stat) if S_ISREG(stat.st_mode) else None

    async def stamp(self, path: str) -> str | None:
        """The version of file ``path`` (under root: its size and modification time), None
        when there is no such regular file; OSError when it cannot be looked at."""
        found: str | None = await self.context.run_blocking(self._stamp, path)
        return found

    def _facts(self, native_id: str) -> SourceInfo:
        path = self.locate(native_id)
        try:
            stat = path.stat()
        except OSError:  # gone since it was found
            raise NotFound("no such image") from None
        header = read_header(Fetched(path=path, described=self._described(native_id)), stat.st_size)
        native = self._pyramid(path) if header.format == "TIFF" else None
        levels = native.pyramid.levels if native else ()
        return SourceInfo(
            width=header.width,
            height=header.height,
            colour=header.colour,
            format=header.format,
            mode=header.mode,
            version=_version(stat),
            last_modified=stat.st_mtime,
            # a pyramid's tiles are offered as they are; one level alone offers none
            tiles=native.pyramid.grid if native and len(levels) > 1 else None,
            native=native,
            codestream=header.codestream,  # a JPEG 2000's tiling and size: its decoding cost
        )

    @staticmethod
    def _pyramid(path: Path) -> PyramidFacts | None:
        """The file's tiled pages as a pyramid; ``None`` (read whole) when its directories
        cannot be made sense of."""
        try:
            return tiff_pyramid(path)
        except (OSError, ValueError, TypeError, SyntaxError, EOFError, struct.error):
            return None

    def _described(self, native_id: str) -> str:
        """For error messages: the identifier asked for, never where a link leads on disk."""
        return f"backend '{self.name}' file {native_id.rsplit('/', 1)[-1]!r}"

    async def facts(self, target: Target) -> SourceInfo:
        info: SourceInfo = await self.context.run_blocking(self._facts, target.native_id)
        return info

    async def fetch(self, target: Target, op: NativeOp, info: SourceInfo) -> Fetched:
        path: Path = await self.context.run_blocking(self.locate, target.native_id)
        described = self._described(target.native_id)
        if not isinstance(info.native, PyramidFacts) or op.whole_source(info.width, info.height):
            return Fetched(path=path, described=described)
        # the region at the level asked for: that page of the file, the region's pixels in it
        pyramid = info.native.pyramid
        level = pyramid.level(op.reduction)
        x0, y0, x1, y1 = pyramid.window(op.region, level)
        page = pyramid.levels.index(level)
        return Fetched(
            path=path, described=described, page=page, window=Box(x0, y0, x1 - x0, y1 - y0)
        )

    def _open_master(self, native_id: str) -> OpenFile | None:
        """The master opened, with its version, when it is a regular file whose header can
        be read; ``None`` otherwise (the usual way then finds out what is wrong); 503 when
        this process (or the system) has no file descriptor left. Blocking."""
        try:  # never waits on a pipe put where the file was (a regular file is checked)
            path = str(self.locate(native_id))
            fd = os.open(path, os.O_RDONLY | os.O_NONBLOCK | os.O_CLOEXEC)
        except NotFound:
            return None
        except OSError as exc:
            if exc.errno in (errno.EMFILE, errno.ENFILE):
                raise Overloaded("this server has no file descriptor left; try again") from None
            return None
        file = os.fdopen(fd, "rb")
        try:
            stat = os.fstat(fd)
            if S_ISREG(stat.st_mode):
                traits = read_traits(file, self._described(native_id))
                return OpenFile(file, path, _version(stat), stat, traits)
        except (BackendError, OSError):
            pass
        file.close()
        return None

    async def open_master(self, target: Target) -> OpenFile | None:
        """The master of ``target`` opened to be sent as it is, with the version it has now
        (the caller checks it against the facts, and closes it)."""
        opened: OpenFile | None = await self.context.run_blocking(
            self._open_master, target.native_id
        )
        return opened

    def _list(self, limit: int) -> list[str]:
        root = Path(self._root)
        exts = tuple(e.lower() for e in self.settings.extensions)
        found: list[str] = []
        for folder, dirs, files in os.walk(root):
            dirs.sort()
            for name in sorted(files):
                stem, ext = os.path.splitext(name)
                if ext.lower() in exts and not name.startswith("."):
                    rel = Path(folder, stem).relative_to(root).as_posix()
                    if rel not in found:
                        found.append(rel)
                if len(found) >= limit:
                    return found
        return found

    async def identifiers(self, limit: int) -> list[str]:
        names: list[str] = await self.context.run_blocking(self._list, limit)
        return names
