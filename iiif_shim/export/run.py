"""One export: the services opened as serving opens them, what is exported, the estimate, and
the files made ``jobs`` at a time.

The image service and the presentation service are opened from the configuration exactly as a
server opens them (``core/service.py``, ``presentation/service.py``): the same backends, cache
tiers, memory budget and thread pool, in one process that holds the whole server's threads
(``server.processes`` x ``server.workers``, from the machine when 0) and its whole memory
budget. Each image file is asked of the image service as a request of the Image API is
(prepare, then the answer as it is when it passes through, else produced): never pixels of its
own.

The selection (identifiers; objects by name, by source, or every source's) is read first:
each object's record and its images' facts, its documents built, the identifiers checked
(``names.py``); what is refused gets one line on stderr and the rest goes on (exit 1 at the
end). Then the estimate: each image planned (``plan.py``) one at a time and counted, files and
bytes (images at :data:`~iiif_shim.export.plan.BYTES_PER_PIXEL`, documents exactly, links at no
bytes); ``--dry-run`` stops there. Then the same plans, again one image at a time, feed a
queue of at most 2 x ``jobs`` files that ``jobs`` tasks take from: a file that is there is
skipped, the first path of a file's pixels made, the others linked to it (``files.py``).

The folder keeps the public base and tile size it was made with (``.iiif-export.json``): a run
with others is refused, since the files there would not match the documents written now.
"""

from __future__ import annotations

import asyncio
import json
import logging
from collections.abc import AsyncIterator, Sequence
from contextlib import AsyncExitStack
from dataclasses import dataclass, field, replace
from pathlib import Path
from typing import Any, TextIO

from iiif_shim.backends.base import OpenFile
from iiif_shim.base.errors import ShimError
from iiif_shim.base.machine import cpus
from iiif_shim.config.settings import Settings
from iiif_shim.core.service import ImageService, open_service
from iiif_shim.export import files, names
from iiif_shim.export.documents import Level0Builder, image_urls, index_page
from iiif_shim.export.plan import Extra, ImageFile, ImagePlan, plan_image
from iiif_shim.export.progress import Progress, human_bytes
from iiif_shim.iiif.profile import Version
from iiif_shim.presentation.documents import Picture, Urls
from iiif_shim.presentation.records import ObjectRecord
from iiif_shim.presentation.service import PresentationService, open_presentation

log = logging.getLogger("iiif_shim")

STAMP = ".iiif-export.json"
MAX_NAMES = 10_000_000  # object names read of one source
INDEX_IMAGES = 10_000  # images listed by index.html (then a count of the rest)


@dataclass(frozen=True)
class ExportOptions:
    folder: Path
    base_url: str  # the public URL the folder is served at (no trailing '/')
    versions: tuple[Version, ...]
    identifiers: tuple[str, ...] = ()
    objects: tuple[str, ...] = ()
    sources: tuple[str, ...] = ()
    everything: bool = False
    dry_run: bool = False
    tile_size: int | None = None
    jobs: int | None = None


@dataclass
class Selection:
    """What is exported, read and checked before any file is planned."""

    identifiers: list[str] = field(default_factory=list)
    extras: dict[str, list[Extra]] = field(default_factory=dict)
    documents: list[tuple[str, bytes]] = field(default_factory=list)  # manifests, collections
    objects: list[tuple[str, dict[str, str]]] = field(default_factory=list)  # for index.html
    refused: int = 0


def total_threads(settings: Settings) -> int:
    """The image threads of the whole server: its processes' threads together."""
    server = settings.server
    processes = server.processes or cpus()
    return processes * (server.workers or max(1, cpus() // processes))


class Export:
    def __init__(self, settings: Settings, options: ExportOptions, err: TextIO, out: TextIO):
        self.settings = settings
        self.options = options
        self.err = err
        self.out = out
        self.root = options.folder
        self.prefix = settings.iiif.prefix
        self.tree = self.prefix.strip("/")
        self.urls = Urls(site=options.base_url, iiif=options.base_url + self.prefix)
        self.threads = total_threads(settings)
        self.jobs = options.jobs or self.threads
        self.failed = 0
        self.unfetched: set[str] = set()
        self.selection = Selection()

    def say(self, line: str) -> None:
        self.err.write(f"export: {line}\n")
        self.err.flush()

    def _path(self, *parts: str) -> str:
        return "/".join(p for p in (self.tree, *parts) if p)

    # --- the selection ---------------------------------------------------------------

    async def _objects(self, presentation: PresentationService) -> list[ObjectRecord]:
        """The records of the objects asked for, in order; each that cannot be read refused."""
        opts = self.options
        wanted: list[tuple[str | None, str]] = [(None, name) for name in opts.objects]
        sources = list(presentation.sources) if opts.everything else list(opts.sources)
        for source_name in sources:
            try:
                source = presentation.source(source_name)
                wanted += [(source_name, n) for n in await source.names(MAX_NAMES)]
            except ShimError as exc:
                self._refuse(f"source {source_name!r}", exc.public_text())
        records: list[ObjectRecord] = []
        seen: set[str] = set()
        for owner, name in wanted:
            if name in seen:
                continue
            seen.add(name)
            try:
                if owner is None:
                    record = await presentation.record(name)
                else:
                    found = await presentation.record_in(presentation.source(owner), name)
                    if found is None:
                        raise ShimError(f"source {owner!r} has no object {name!r}")
                    record = found
            except ShimError as exc:
                self._refuse(f"object {name!r}", exc.public_text())
                continue
            records.append(record)
        return records

    def _refuse(self, what: str, why: str) -> None:
        self.say(f"refused {what}: {why}")
        self.selection.refused += 1

    async def select(self, presentation: PresentationService | None) -> Selection:
        self.selection = selection = Selection()
        root = str(self.root.resolve())
        records = await self._objects(presentation) if presentation is not None else []
        # object names that cannot be files, or fall where another's manifest is
        fit: list[ObjectRecord] = []
        for record in records:
            why = names.object_unfit(record.name, root)
            if why is not None:
                self._refuse(f"object {record.name!r}", why)
            else:
                fit.append(record)
        clash = names.collisions((r.name for r in fit), names.object_entry)
        for name, why in clash.items():
            self._refuse(f"object {name!r}", why)
        fit = [r for r in fit if r.name not in clash]
        # every identifier: those asked for, then each object's
        asked = dict.fromkeys(self.options.identifiers)
        for record in fit:
            asked.update(dict.fromkeys(c.image for c in record.canvases))
        bad = {i: why for i in asked if (why := names.unfit(i, root)) is not None}
        bad.update(names.collisions((i for i in asked if i not in bad), names.image_entry))
        for identifier, why in bad.items():
            self._refuse(f"identifier {identifier!r}", why)
        # objects: their pictures read, documents built (an object with a refused image too)
        kept: list[tuple[ObjectRecord, list[Picture]]] = []
        for record in fit:
            refused = [c.image for c in record.canvases if c.image in bad]
            if refused:
                self._refuse(f"object {record.name!r}", f"its image {refused[0]!r} is refused")
                continue
            assert presentation is not None
            try:
                kept.append((record, await presentation.pictures(record)))
            except ShimError as exc:
                self._refuse(f"object {record.name!r}", exc.public_text())
        used = dict.fromkeys(self.options.identifiers)
        for record, _ in kept:
            used.update(dict.fromkeys(c.image for c in record.canvases))
        selection.identifiers = [i for i in used if i not in bad]
        self._documents(kept)
        return selection

    def _documents(self, kept: Sequence[tuple[ObjectRecord, list[Picture]]]) -> None:
        selection, settings, versions = self.selection, self.settings, self.options.versions
        builder = Level0Builder(settings.presentation, self.urls, settings.landing.title, versions)
        by_source: dict[str, list[tuple[str, str, Picture | None]]] = {}
        docs: list[tuple[str, dict[str, Any]]] = []
        for record, pictures in kept:
            links: dict[str, str] = {}
            for version in versions:
                doc = builder.exported_manifest(version, record, pictures)
                docs.append(
                    (self._path("presentation", version.value, record.name, "manifest"), doc)
                )
                links[f"{version.value}.x manifest"] = self.urls.manifest(
                    version.value, record.name
                )
            selection.objects.append((record.label, links))
            by_source.setdefault(record.source, []).append((record.name, record.label, pictures[0]))
        if by_source:
            for version in versions:
                top = builder.exported_top(version, list(by_source))
                path = self._path("presentation", version.value, "collection", "index.json")
                docs.append((path, top))
                for source, entries in by_source.items():
                    doc = builder.exported_collection(version, source, entries)
                    path = self._path("presentation", version.value, "collection", source)
                    docs.append((path, doc))
        for path, doc in docs:
            for identifier, extra in image_urls(doc, self.urls.iiif):
                if extra[0] in versions:
                    selection.extras.setdefault(identifier, []).append(extra)
            body = json.dumps(doc, ensure_ascii=False, indent=1).encode()
            selection.documents.append((path, body))

    # --- the plans ---------------------------------------------------------------------

    async def plans(self, service: ImageService) -> AsyncIterator[ImagePlan]:
        """Each image's plan, one at a time; an image whose facts cannot be read is refused
        (once)."""
        offer = service.offer
        size = self.options.tile_size
        if size is not None:
            offer = replace(offer, tile_size=size)
        for identifier in self.selection.identifiers:
            if identifier in self.unfetched:
                continue
            try:
                src = await service.source(identifier)
            except ShimError as exc:
                self.unfetched.add(identifier)
                self._refuse(f"identifier {identifier!r}", exc.public_text())
                continue
            facts = src.info if size is None else replace(src.info, tiles=None)
            yield plan_image(
                identifier,
                facts,
                offer,
                service.limits,
                src.target.rights,
                self.options.versions,
                self.urls.iiif,
                self.tree,
                self.urls.service,
                self.selection.extras.get(identifier, ()),
            )

    def index(self) -> tuple[str, bytes]:
        images = []
        for identifier in self.selection.identifiers[:INDEX_IMAGES]:
            if identifier in self.unfetched:
                continue
            links = {
                f"{v.value}.x info.json": f"{self.urls.service(v, identifier)}/info.json"
                for v in self.options.versions
            }
            images.append((identifier, links))
        page = index_page(self.settings.landing.title, self.selection.objects, images)
        more = len(self.selection.identifiers) - INDEX_IMAGES
        if more > 0:
            page = page.replace("</body>", f"<p>... and {more} more images.</p>\n</body>")
        return "index.html", page.encode()

    async def estimate(self, service: ImageService) -> tuple[int, int, int]:
        """(files, bytes, images) this export writes."""
        count = len(self.selection.documents) + 1  # and index.html
        size = sum(len(b) for _, b in self.selection.documents)
        images = 0
        async for plan in self.plans(service):
            images += 1
            count += plan.file_count
            size += plan.estimated_bytes
            for line in plan.unservable:
                log.debug("not exported (the service refuses it): %s", line)
        return count, size + len(self.index()[1]), images

    # --- the work ------------------------------------------------------------------------

    def _stamp(self, service: ImageService) -> str | None:
        """Why the folder cannot take this export (made with another base or tile size)."""
        tile = self.options.tile_size or f"native, else {service.offer.tile_size}"
        mine = {"base_url": self.options.base_url, "prefix": self.prefix, "tile_size": tile}
        stamp = self.root / STAMP
        if stamp.exists():
            try:
                there = json.loads(stamp.read_text())
            except (OSError, ValueError):
                there = None
            if there != mine:
                return (
                    f"{self.root} holds an export made with {there} (its {STAMP}), not {mine}: "
                    "use an empty folder, or the same --base-url and --tile-size"
                )
            return None
        self.root.mkdir(parents=True, exist_ok=True)
        files.write_bytes(stamp, json.dumps(mine).encode())
        return None

    async def _document(self, path: str, data: bytes, progress: Progress) -> None:
        target = self.root / path
        if await asyncio.to_thread(target.exists):
            progress.add(skipped=1)
            return
        progress.add(files=1, written=await asyncio.to_thread(files.write_bytes, target, data))

    async def _image(self, service: ImageService, image: ImageFile, progress: Progress) -> None:
        paths = [self.root / p for p in image.paths]
        there = await asyncio.to_thread(lambda: [p for p in paths if p.exists()])
        if len(there) == len(paths):
            progress.add(skipped=len(paths))
            return
        first, written = there[0] if there else paths[0], 0
        if not there:
            written = await self._made(service, image, first)
        missing = [p for p in paths if p not in there and p != first]
        for path in missing:
            await asyncio.to_thread(files.link, first, path)
        progress.add(files=len(missing) + (0 if there else 1), written=written,
                     skipped=len(there))  # fmt: skip

    async def _made(self, service: ImageService, image: ImageFile, path: Path) -> int:
        """The image service's answer to ``image.request`` at ``path``, as a server answers
        it: as it is when it passes through (a master's file, a stream), else produced."""
        async with asyncio.timeout(self.settings.server.request_timeout):
            prepared = await service.prepare(image.request)
            async with service.stream(prepared) as passing:
                body = passing.body
                if isinstance(body, OpenFile):
                    return await asyncio.to_thread(files.copy_open, path, body.file, body.changed)
                if body is not None:
                    return await files.write_stream(path, body.head, body.rest, asyncio.to_thread)
                prepared = passing.prepared
            made = await service.produce(prepared)
        return await asyncio.to_thread(files.write_bytes, path, made.rendered.body)

    async def _worker(
        self, queue: asyncio.Queue[Any], service: ImageService, progress: Progress
    ) -> None:
        while (job := await queue.get()) is not None:
            try:
                if isinstance(job, ImageFile):
                    await self._image(service, job, progress)
                else:
                    await self._document(job[0], job[1], progress)
            except (ShimError, OSError, TimeoutError) as exc:
                what = job.paths[0] if isinstance(job, ImageFile) else job[0]
                why = exc.public_text() if isinstance(exc, ShimError) else str(exc) or "timed out"
                count = len(job.paths) if isinstance(job, ImageFile) else 1
                progress.add(failed=count)
                self.failed += count
                self.say(f"failed {what}: {why}")

    async def write(self, service: ImageService, total: int, estimated: int) -> Progress:
        progress = Progress(self.err, total, estimated)
        queue: asyncio.Queue[Any] = asyncio.Queue(maxsize=2 * self.jobs)

        async def produce() -> None:
            async for plan in self.plans(service):
                for doc in plan.documents:
                    await queue.put(doc)
                for image in plan.files:
                    await queue.put(image)
            for doc in self.selection.documents:
                await queue.put(doc)
            await queue.put(self.index())
            for _ in range(self.jobs):
                await queue.put(None)

        async with asyncio.TaskGroup() as group:
            group.create_task(produce())
            for _ in range(self.jobs):
                group.create_task(self._worker(queue, service, progress))
        progress.finish()
        return progress

    async def run(self) -> int:
        opts, settings = self.options, self.settings
        service_settings = replace(
            settings.service(),
            threads=self.threads,
            max_pending=max(settings.server.max_pending, 2 * self.jobs),
        )
        with_objects = bool(opts.objects or opts.sources or opts.everything)
        async with AsyncExitStack() as stack:
            service = await stack.enter_async_context(open_service(service_settings))
            presentation = None
            if with_objects:
                presentation = await stack.enter_async_context(
                    open_presentation(settings.presentation, service, watch=False)
                )
            await self.select(presentation)
            count, size, images = await self.estimate(service)
            docs = len(self.selection.documents) + 1
            self.out.write(
                f"estimate: {count} files ({images} images, {docs} documents), about {size} "
                f"bytes ({human_bytes(size)}; JPEG at about 0.3 bytes a pixel, links to the "
                "same pixels count no bytes)\n"
            )
            self.out.flush()
            if opts.dry_run:
                return 1 if self.selection.refused else 0
            problem = self._stamp(service)
            if problem is not None:
                self.say(problem)
                return 2
            if removed := files.swept(self.root):
                self.say(f"removed {removed} temporary files an interrupted run left")
            files.mark(self.root)
            try:
                progress = await self.write(service, count, size)
            finally:
                files.unmark(self.root)
        self.out.write(
            f"exported: {progress.files} files written ({progress.bytes} bytes), "
            f"{progress.skipped} there already, {progress.failed} failed, into {self.root}\n"
        )
        return 1 if self.selection.refused or self.failed else 0


async def export(settings: Settings, options: ExportOptions, err: TextIO, out: TextIO) -> int:
    """Run one export; its exit status (0, 1 when anything was refused or failed, 2 when the
    folder holds another export)."""
    return await Export(settings, options, err, out).run()
