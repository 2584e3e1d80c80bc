"""``http``: master images on a web server, one URL per image from a template.

Facts come from the first bytes only (a ``Range`` request; a server that ignores ``Range`` is read
only as far as ``probe_bytes``), so an info.json never downloads a master. Image requests fetch
the whole file, bounded by ``max_bytes``, and Pillow does the rest; the service keeps the
decoded master (``cache.decoded_bytes``) so the tiles of one viewer session fetch it once.
"""

from __future__ import annotations

from contextlib import AbstractAsyncContextManager

from yarl import URL

from iiif_shim.backends.base import UpstreamBackend
from iiif_shim.backends.settings import HttpSettings
from iiif_shim.base.errors import BackendError
from iiif_shim.imaging.fetched import Fetched
from iiif_shim.imaging.pillow import read_header
from iiif_shim.model.facts import SourceInfo
from iiif_shim.model.plan import NativeOp, Target
from iiif_shim.upstream.client import Body


class HttpBackend(UpstreamBackend[HttpSettings]):
    settings_class = HttpSettings

    def master(self, target: Target) -> URL:
        return URL(self.url("url", target.template_values()), encoded=True)

    async def facts(self, target: Target) -> SourceInfo:
        url = self.master(target)
        described = f"backend '{self.name}'"
        limit = self.settings.probe_bytes
        source = target.native_id
        head = await self.upstream.get(
            url,
            headers={"Range": f"bytes=0-{limit - 1}"},
            limit=limit,
            metadata=True,  # small and idempotent: retried on transient faults
            image_id=source,
        )
        try:
            width, height, colour, fmt, mode = await self.context.run_blocking(
                read_header, Fetched(data=head.body, described=described)
            )
        except BackendError:
            if head.status == 200 and head.complete:
                raise
            # The header lies further in (a TIFF with its directory at the end, say): the whole
            # master, read for facts (their connections, not those kept for images)
            whole = await self.upstream.get(url, image_id=source, facts=True)
            width, height, colour, fmt, mode = await self.context.run_blocking(
                read_header, Fetched(data=whole.body, described=described)
            )
        return SourceInfo(
            width=width,
            height=height,
            colour=colour,
            format=fmt,
            mode=mode,
            version=head.version,
            last_modified=head.last_modified,
        )

    def stream(
        self, target: Target, op: NativeOp, info: SourceInfo
    ) -> AbstractAsyncContextManager[Body] | None:
        return self.upstream.stream(self.master(target), image_id=target.native_id)

    async def fetch(self, target: Target, op: NativeOp, info: SourceInfo) -> Fetched:
        answer = await self.upstream.get(self.master(target), image_id=target.native_id)
        return Fetched(data=answer.body, described=f"backend '{self.name}'")
