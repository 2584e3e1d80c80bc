"""A canvas's text file as the sources find and read it (``ObjectSource.text_stamp`` and
``read_text``), in one place for every source type:

- what a file's name says of its format (:func:`format_of`): ``.xml`` and ``.alto`` are ALTO,
  ``.hocr`` and ``.html`` hOCR, ``.txt`` plain text; any other name: told from its bytes
  later (``search/ocr.py``). :data:`SIDECARS` is the order in which a folder's sidecar files
  of one image are taken (the first found).
- a value with another scheme (``file:``, ``ftp:``) is neither a path nor a URL
  (:func:`foreign`): refused, never read as a file.
- a file named relative to a folder (a CSV file's own folder): :func:`inside` says whether a
  place stays in it as written (a ``..`` or an absolute path elsewhere does not), and
  :func:`read_file` and :func:`stamp_file` (blocking) follow it, links included, and refuse
  it when it leads out (:class:`~iiif_shim.base.errors.BadRecord` naming it; :func:`real_path`,
  also for a folder source's sidecars); :func:`file_problem` says why one cannot be read
  now, for ``check-config --sources``; the file is read
  with ``base/files.read_head`` like every file the shim reads (at most ``limit + 1`` bytes,
  never a pipe or a device), and stamped with its size and modification time.
- a URL (:class:`TextUrls`): only on the source's own origins (those of the URLs it is
  configured with: its CSV's, its JSON templates', its CONTENTdm server's) or under one of its
  ``text_origins``; anything else is refused before a request. It is fetched with the
  source's own upstream client (its timeouts, retries, circuit and bounds); those on
  ``text_origins`` with a client of the same settings but without its credentials (never sent
  to another server). A URL holding credentials (``user:password@``) is refused. Its stamp is
  its ETag, else its Last-Modified (with its length); a server that sends neither cannot say
  whether it changed without sending it: its stamp is :data:`UNVALIDATED` (so it is read
  again whenever it is looked at), and a file read from it is stamped with its bytes' hash.

Larger than the caller's ``limit``: BadRecord naming the file and the limit. A file that is
gone (no such file, a 404 or 410): None. Messages name a file by its place relative to its
folder, and a URL without its query (where a signature or a key may be).
"""

from __future__ import annotations

import dataclasses
import hashlib
import os
import posixpath
from collections.abc import Mapping, Sequence
from pathlib import Path
from stat import S_ISREG
from urllib.parse import urlsplit, urlunsplit

from iiif_shim.base.errors import BadRecord, NotFound, OversizeAnswer
from iiif_shim.base.files import NotARegularFile, read_head
from iiif_shim.model.text import TextFile, TextFormat
from iiif_shim.presentation.records import TextRef
from iiif_shim.telemetry.metrics import Metrics
from iiif_shim.upstream.client import Upstream
from iiif_shim.upstream.settings import UpstreamSettings
from iiif_shim.upstream.urltemplate import UrlTemplate, origin_of

# a file's extension -> its format
EXTENSIONS: Mapping[str, TextFormat] = {
    ".xml": TextFormat.ALTO,
    ".alto": TextFormat.ALTO,
    ".hocr": TextFormat.HOCR,
    ".html": TextFormat.HOCR,
    ".txt": TextFormat.PLAIN,
}
SIDECARS = (".xml", ".alto", ".hocr", ".html", ".txt")  # a folder's, the first found
UNVALIDATED = "unvalidated"  # the stamp of a URL whose server sends no ETag or Last-Modified
_SHOWN = 200  # characters of a place shown in a message


def format_of(place: str) -> str | None:
    """The format the name of ``place`` (a path, or a URL's path) tells, else None."""
    path = urlsplit(place).path if is_url(place) else place
    found = EXTENSIONS.get(posixpath.splitext(path)[1].lower())
    return None if found is None else found.value


def is_url(value: str) -> bool:
    return urlsplit(value.strip()).scheme.lower() in ("http", "https")


def foreign(place: str) -> str | None:
    """Why ``place`` is neither a path nor an http(s) URL (it names another scheme: ``file:``,
    ``ftp:``), or None."""
    scheme = urlsplit(place).scheme
    if scheme and scheme.lower() not in ("http", "https"):
        return f"text {shown(place)} is not an http(s) URL or a path"
    return None


def place_name(place: str) -> str:
    """``place`` as messages name it: a URL without its query or credentials, cut short."""
    if is_url(place):
        split = urlsplit(place)
        place = urlunsplit((split.scheme, split.netloc.rpartition("@")[2], split.path, "", ""))
    return place[:_SHOWN]


def shown(place: str) -> str:
    return repr(place_name(place))


def text_format(ref: TextRef) -> TextFormat | None:
    return None if ref.format is None else TextFormat(ref.format)


# --- files under a folder -----------------------------------------------------------------


def inside(folder: Path, place: str) -> bool:
    """Whether ``place`` (as a catalogue wrote it: relative to ``folder``, or absolute) stays
    in ``folder`` as written: no ``..`` leading out, no absolute path elsewhere. (Links are
    followed, and checked, when it is read.)"""
    if not place or "\x00" in place:
        return False
    root = os.path.abspath(folder)
    resolved = os.path.normpath(os.path.join(root, place))
    return os.path.commonpath((root, resolved)) == root


def real_path(folder: Path, place: str, who: str) -> str:
    """The real path of ``place`` under ``folder``; BadRecord when it leads out of it (a
    ``..``, an absolute path elsewhere, a link). Blocking."""
    real = _inside_real(folder, place)
    if real is None:
        raise BadRecord(f"{who}: {_outside(place)}")
    return real


def _inside_real(folder: Path, place: str) -> str | None:
    root = os.path.realpath(folder)
    real = os.path.realpath(os.path.join(root, place)) if "\x00" not in place else ""
    return real if real and os.path.commonpath((root, real)) == root else None


def _outside(place: str) -> str:
    return f"text file {shown(place)} is outside its folder"


def file_problem(folder: Path, place: str) -> str | None:
    """Why the file ``place`` under ``folder`` cannot be read now (it leads out of the folder,
    is not there, is not a regular file), or None: what ``check-config --sources`` says of a
    CSV's text paths. Blocking (a stat)."""
    real = _inside_real(folder, place)
    if real is None:
        return _outside(place)
    try:
        mode = os.stat(real).st_mode
    except (FileNotFoundError, NotADirectoryError):
        return f"text file {shown(place)} is not there"
    except OSError as exc:
        return f"text file {shown(place)} cannot be read ({exc.strerror})"
    return None if S_ISREG(mode) else f"text file {shown(place)} is not a regular file"


def _stamp(stat: os.stat_result) -> str:
    return f"{stat.st_size}-{stat.st_mtime_ns}"


def stamp_file(folder: Path, place: str, who: str) -> str | None:
    """The stamp (size and modification time) of the file ``place`` under ``folder``; None
    when there is no such file. Blocking."""
    real = real_path(folder, place, who)
    try:
        return _stamp(os.stat(real))
    except (FileNotFoundError, NotADirectoryError):
        return None
    except OSError as exc:
        raise BadRecord(
            f"{who}: text file {shown(place)} cannot be read", detail=exc.strerror
        ) from None


def read_file(folder: Path, place: str, limit: int, who: str, fmt: str | None) -> TextFile | None:
    """The file ``place`` under ``folder`` (at most ``limit`` bytes), None when there is no
    such file. Blocking."""
    real = real_path(folder, place, who)
    try:
        stamp = _stamp(os.stat(real))  # before reading: a change while read is seen next time
        data = read_head(real, limit + 1)
    except (FileNotFoundError, NotADirectoryError):
        return None
    except NotARegularFile:
        raise BadRecord(f"{who}: text file {shown(place)} is not a regular file") from None
    except OSError as exc:
        raise BadRecord(
            f"{who}: text file {shown(place)} cannot be read", detail=exc.strerror
        ) from None
    if len(data) > limit:
        raise _too_large(who, place, limit)
    return TextFile(data, stamp, place, None if fmt is None else TextFormat(fmt))


def _too_large(who: str, place: str, limit: int) -> BadRecord:
    return BadRecord(f"{who}: text file {shown(place)} is larger than {limit} bytes")


# --- URLs ---------------------------------------------------------------------------------


class TextUrls:
    """The text files a source fetches over HTTP: ``own`` is its upstream client (None: it
    has none, a CSV read from a file), whose origins it may read from; ``origins`` its
    ``text_origins``, read with a client of ``settings`` without credentials, made by
    :meth:`start`."""

    def __init__(
        self,
        who: str,
        name: str,
        settings: UpstreamSettings,
        own: Upstream | None,
        origins: Sequence[str] = (),
    ) -> None:
        self.who = who
        self._name = name
        self._settings = settings
        self._own = own
        self._own_origins = frozenset(
            o for t in (own.scopes if own is not None else ()) if (o := t.origin_key) is not None
        )
        self._extra = tuple(UrlTemplate.parse(_folder(origin)) for origin in origins)
        self._other: Upstream | None = None

    async def start(self, metrics: Metrics | None) -> None:
        if self._extra:
            bare = dataclasses.replace(self._settings, username=None, password=None)
            self._other = Upstream(self._name, bare, self._extra, metrics, role="source")
            await self._other.start()

    async def close(self) -> None:
        if self._other is not None:
            await self._other.close()

    def refusal(self, url: str) -> str | None:
        """Why this source may not fetch the text URL ``url``, or None when it may."""
        try:
            split = urlsplit(url)
            split.port  # noqa: B018 (a port that is not a number raises here)
        except ValueError:
            return f"text URL {shown(url)} is not a valid URL"
        if split.scheme.lower() not in ("http", "https") or not split.hostname:
            return f"text URL {shown(url)} is not an http(s) URL"
        if "@" in split.netloc:
            return f"text URL {shown(url)} holds credentials"
        if origin_of(url) in self._own_origins or any(t.within(url) for t in self._extra):
            return None
        if self._own is None:
            return (
                f"text URL {shown(url)} is not under the source's `text_origins` (a CSV read "
                "from a file fetches text only from those)"
            )
        return (
            f"text URL {shown(url)} is on another server than the source's own: list it in "
            "`text_origins` to allow it"
        )

    def _client(self, url: str) -> Upstream:
        if (why := self.refusal(url)) is not None:
            raise BadRecord(f"{self.who}: {why}")
        if self._own is not None and origin_of(url) in self._own_origins:
            return self._own
        assert self._other is not None  # (allowed, and not on its own origins)
        return self._other

    async def stamp(self, url: str) -> str | None:
        """The stamp of the text file at ``url`` (its first byte asked for, for its headers);
        None when it is gone."""
        client = self._client(url)
        try:
            answer = await client.get(url, limit=1, metadata=True, what=f"text file {shown(url)}")
        except NotFound:
            return None
        return _validator(answer.headers) or UNVALIDATED

    async def read(self, url: str, limit: int, fmt: str | None) -> TextFile | None:
        """The text file at ``url`` (at most ``limit`` bytes), None when it is gone."""
        client = self._client(url)
        try:
            answer = await client.get(url, cap=limit, metadata=True, what=f"text file {shown(url)}")
        except NotFound:
            return None
        except OversizeAnswer:
            raise _too_large(self.who, url, limit) from None
        stamp = _validator(answer.headers) or "sha256 " + hashlib.sha256(answer.body).hexdigest()
        return TextFile(
            answer.body, stamp, place_name(url), None if fmt is None else TextFormat(fmt)
        )


def _folder(origin: str) -> str:
    """A ``text_origins`` entry as a folder: ``https://h/alto`` allows ``/alto/...``, never
    ``/alto-private``."""
    return origin if origin.endswith("/") else origin + "/"


def _validator(headers: Mapping[str, str]) -> str | None:
    """What changes with the file, as its server says: its ETag, else its Last-Modified and
    length."""
    if etag := headers.get("ETag"):
        return f"etag {etag}"
    if modified := headers.get("Last-Modified"):
        return f"modified {modified} {headers.get('Content-Length', '')}".rstrip()
    return None
