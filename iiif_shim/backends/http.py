"""``http``: master images on a web server, one URL per image from a template.

Facts come from the first bytes only: a ``Range`` request for ``probe_bytes``, and when the header
lies further in (a TIFF whose directory is at the end of the file, a large XMP packet or ICC
profile, a JPEG whose metadata segments run past the first bytes), a ``Range`` request from the
first byte the header reader misses (``imaging.fetched.Parts``, merged as they come: a read
across two parts is served from both), at least ``probe_bytes``, more when the same place is
missed again, never the same range twice, each at most ``max_metadata_bytes``, at most
``_PARTS`` of them: an info.json reads about the header's bytes. A server that ignores ``Range``
(or stops answering ranges, or whose file changes meanwhile), a header spread wider than that,
or one that needs the end of a file of unknown size, has the master read whole for its facts,
as an image is read: bounded by ``max_bytes``, to a temporary file when large (the memory it
holds reserved from the budget as it grows, ``BodyShare``), its facts those of what was read.
A JPEG 2000's facts carry its codestream's layout from the same header bytes
(``imaging/j2k.py``) and the file's size from ``Content-Range``, for the cost of decoding it.
Image requests fetch the whole file the same way (``UpstreamBackend.image``) and Pillow does
the rest; the service keeps the decoded master (``cache.decoded_bytes``) so the tiles of one
viewer session fetch it once.
"""

from __future__ import annotations

import re
from contextlib import AbstractAsyncContextManager

from yarl import URL

from iiif_shim.backends.base import BodyShare, UpstreamBackend
from iiif_shim.backends.settings import HttpSettings
from iiif_shim.imaging.fetched import Fetched, Missing, Parts, Ranges
from iiif_shim.imaging.pillow import Header, read_header
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
        version, modified = head.version, head.last_modified
        if header is None:
            # the whole master, read for its header (on the connections for facts, not those
            # kept for images), as an image is read: to a temporary file when it is large; its
            # facts are of what this read found
            budget = self.context.budget
            share = BodyShare(budget) if budget is not None else None
            try:
                got = await self.upstream.download(
                    url,
                    image_id=target.native_id,
                    facts=True,
                    what="a master read for its header",
                    hold=share.hold() if share is not None else None,
                )
                header = await self.context.run_blocking(read_header, self.delivery(got), got.size)
            finally:
                if share is not None:
                    share.release()  # what it held, once its header is read
            version, modified = got.version, got.last_modified
        return SourceInfo(
            width=header.width,
            height=header.height,
            colour=header.colour,
            format=header.format,
            mode=header.mode,
            version=version,
            last_modified=modified,
            codestream=header.codestream,  # a JPEG 2000's tiling and size: its decoding cost
        )

    async def _header(self, url: URL, target: Target, head: Answer) -> Header | None:
        """The header read from ``head`` (the first bytes) and the parts it reaches, each
        fetched by a ``Range`` request from the first byte missing, at least ``probe_bytes``
        (more when the same place is missed again; never the same range twice, at most
        ``max_metadata_bytes`` each, at most ``_PARTS`` of them); ``None`` when it needs the
        master read whole: a server that does not answer ranges (now or later: a 200, a 206
        without ``Content-Range``), a file that changed meanwhile (another ETag, another size),
        a header spread wider than that, or one that needs the end of a file of unknown size."""
        described = f"backend '{self.name}'"
        settings = self.settings
        ranged = _content_range(head) if head.status == 206 else None
        if ranged is None:  # not a range: the first bytes, whole when they are all of it
            parts = Parts(len(head.body) if head.complete and head.status == 200 else None)
        else:
            parts = Parts(ranged[1])
        parts.add(ranged[0] if ranged else 0, head.body)
        asked = {(0, settings.probe_bytes)}
        for attempt in range(_PARTS + 1):
            try:
                header: Header = await self.context.run_blocking(
                    read_header, Fetched(reader=Ranges(parts), described=described), parts.size
                )
                return header
            except Missing as missing:
                start, wanted = missing.start, missing.size
            if ranged is None or start is None or attempt == _PARTS:
                return None
            size = max(wanted, settings.probe_bytes)
            while (start, size) in asked:  # missed at the same place again: ask for more
                size *= 2
            if min(size, wanted) > settings.max_metadata_bytes:
                return None
            size = min(size, settings.max_metadata_bytes)
            if (start, size) in asked:
                return None
            asked.add((start, size))
            part = await self._part(url, target, start, size)
            if part.status == 416 and parts.size is None:  # past the end of a file of unknown size
                parts.size = start
                continue
            found = _content_range(part) if part.status == 206 else None
            if found is None or part.version != head.version or found[1] != parts.size:
                return None  # ranges stopped, or the file changed: read it whole
            parts.add(found[0], part.body)
        return None

    async def _part(self, url: URL, target: Target, start: int, size: int) -> Answer:
        """At most ``size`` bytes of the master from ``start`` (a ``Range`` request; a server
        that ignores it sends its first bytes, read no further)."""
        return await self.upstream.get(
            url,
            headers={"Range": f"bytes={start}-{start + size - 1}"},
            limit=size,
            encoded=False,  # the bytes of an image: never inflated
            metadata=True,  # small and idempotent: retried on transient faults
            image_id=target.native_id,
        )

    def stream(
        self, target: Target, op: NativeOp, info: SourceInfo
    ) -> AbstractAsyncContextManager[Body] | None:
        return self.upstream.stream(self.master(target), image_id=target.native_id)

    async def fetch(self, target: Target, op: NativeOp, info: SourceInfo) -> Fetched:
        return await self.image(self.master(target), target)


_PARTS = 8  # header reads of one master: the first bytes, then the parts it reaches
_CONTENT_RANGE = re.compile(r"bytes (\d{1,15})-(\d{1,15})/(\d{1,15}|\*)")


def _content_range(answer: Answer) -> tuple[int, int | None] | None:
    """Where the bytes of a 206 answer start and the size of the whole file (``None``: not
    given), as its ``Content-Range`` says; ``None`` when it has none that agrees with its body."""
    found = _CONTENT_RANGE.fullmatch(answer.headers.get("Content-Range", "").strip())
    if found is None:
        return None
    start, end = int(found[1]), int(found[2])
    total = None if found[3] == "*" else int(found[3])
    if end < start or (total is not None and end >= total):
        return None
    if answer.complete and end - start + 1 != len(answer.body):
        return None
    return start, total
