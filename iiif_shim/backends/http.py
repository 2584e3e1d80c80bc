"""``http``: master images on a web server, one URL per image from a template.

Facts come from the first bytes only: a ``Range`` request for ``probe_bytes``, and when the header
lies further in (a TIFF whose directory is at the end of the file), a ``Range`` request for each
part the header reader reaches that is not fetched yet (``imaging.fetched.Ranges``: a few, each
at most ``max_metadata_bytes``), so an info.json never downloads a master. Only a server that
ignores ``Range`` (or a header spread wider than that) has the master read whole for its facts,
as an image is read: bounded by ``max_bytes``, to a temporary file when large, never held in
memory. Image requests fetch the whole file the same way (``UpstreamBackend.image``) and Pillow
does the rest; the service keeps the decoded master (``cache.decoded_bytes``) so the tiles of one
viewer session fetch it once.
"""

from __future__ import annotations

import re
from contextlib import AbstractAsyncContextManager

from yarl import URL

from iiif_shim.backends.base import UpstreamBackend
from iiif_shim.backends.settings import HttpSettings
from iiif_shim.base.errors import MalformedAnswer
from iiif_shim.iiif.profile import Colour
from iiif_shim.imaging.fetched import Fetched, Missing, Ranges
from iiif_shim.imaging.pillow import read_header
from iiif_shim.model.facts import SourceInfo
from iiif_shim.model.plan import NativeOp, Target
from iiif_shim.upstream.client import Answer, Body


class HttpBackend(UpstreamBackend[HttpSettings]):
    settings_class = HttpSettings

    def master(self, target: Target) -> URL:
        return URL(self.url("url", target.template_values()), encoded=True)

    async def facts(self, target: Target) -> SourceInfo:
        url = self.master(target)
        head = await self._part(url, target, 0, self.settings.probe_bytes)
        header = await self._header(url, target, head)
        if header is None:
            # the whole master, read for its header (on the connections for facts, not those
            # kept for images), as an image is read: to a temporary file when it is large
            whole = await self.image(url, target, facts=True)
            header = await self.context.run_blocking(read_header, whole)
        width, height, colour, fmt, mode = header
        return SourceInfo(
            width=width,
            height=height,
            colour=colour,
            format=fmt,
            mode=mode,
            version=head.version,
            last_modified=head.last_modified,
        )

    async def _header(self, url: URL, target: Target, head: Answer) -> Header | None:
        """The header read from ``head`` (the first bytes) and the parts it reaches, each
        fetched by a ``Range`` request; ``None`` when it needs the master read whole (a server
        that ignores ``Range``, a header spread too wide)."""
        described = f"backend '{self.name}'"
        ranged = head.status == 206
        parts = {0: head.body}
        size = _total(head) if ranged else (len(head.body) if head.complete else None)
        for _ in range(_PARTS):
            try:
                header: Header = await self.context.run_blocking(
                    read_header, Fetched(reader=Ranges(parts, size), described=described)
                )
                return header
            except Missing as missing:
                start, wanted = missing.start, missing.size
            if not ranged or wanted > self.settings.max_metadata_bytes:
                return None
            part = await self._part(url, target, start, max(wanted, self.settings.probe_bytes))
            if part.status == 416:  # past the end, of a file whose size was not given
                size = start
            elif part.status == 206 and part.version == head.version:
                parts[_start(part, start)] = part.body
            else:
                raise MalformedAnswer(
                    f"{described} changed, or stopped answering ranges, while its header was read"
                )
        return None

    async def _part(self, url: URL, target: Target, start: int, size: int) -> Answer:
        """At most ``size`` bytes of the master from ``start`` (a ``Range`` request; a server
        that ignores it sends its first bytes, read no further)."""
        return await self.upstream.get(
            url,
            headers={"Range": f"bytes={start}-{start + size - 1}"},
            limit=size,
            metadata=True,  # small and idempotent: retried on transient faults
            image_id=target.native_id,
        )

    def stream(
        self, target: Target, op: NativeOp, info: SourceInfo
    ) -> AbstractAsyncContextManager[Body] | None:
        return self.upstream.stream(self.master(target), image_id=target.native_id)

    async def fetch(self, target: Target, op: NativeOp, info: SourceInfo) -> Fetched:
        return await self.image(self.master(target), target)


Header = tuple[int, int, Colour, str | None, str]  # what pillow.read_header finds
_PARTS = 8  # header reads of one master: the first bytes, then the parts it reaches
_CONTENT_RANGE = re.compile(r"bytes (\d+)-(\d+)/(\d+|\*)")


def _total(answer: Answer) -> int | None:
    """The size of the whole file, as a 206 answer's ``Content-Range`` gives it."""
    found = _CONTENT_RANGE.fullmatch(answer.headers.get("Content-Range", "").strip())
    return int(found[3]) if found and found[3] != "*" else None


def _start(answer: Answer, asked: int) -> int:
    """Where the bytes of a 206 answer start (as asked, unless ``Content-Range`` says else)."""
    found = _CONTENT_RANGE.fullmatch(answer.headers.get("Content-Range", "").strip())
    return int(found[1]) if found else asked
