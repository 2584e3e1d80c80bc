"""One export: the folder checked and locked, the services opened as serving opens them, the
selection streamed through, each image's files made ``jobs`` at a time and published whole,
and the folder's documents rewritten from all it holds.

The image service and the presentation service are opened from the configuration exactly as a
server opens them (``core/service.py``, ``presentation/service.py``): the same backends, cache
tiers, memory budget and thread pool, in one process that holds the whole server's threads
(``server.processes`` x ``server.workers``, from the machine when 0) and its whole memory
budget, except that the images it renders are neither looked for nor kept in the image cache
tiers (``ServiceSettings.keep_rendered``: an export would push a live server's working set out
of caches they share); facts are cached as usual. Each image file is asked of the image
service as a request of the Image API is (prepare, then the answer as it is when it passes
through, else produced): never pixels of its own.

The decoded-source cache is sized for the run (:func:`decoded_cache`): a quarter of
``server.memory_budget``, never less than ``cache.decoded_bytes``, so that a large master,
decoded once, serves all its tiles (the cache keeps no entry over half of itself; serving's
default would decode a 10000 x 8000 JPEG again for each tile). One line says the size and why;
an image whose master decoded is more than half of it gets a line saying each of its tiles
decodes it again and what ``cache.decoded_bytes`` would keep it. Images go through the workers
one after another (each image's files queued together), so the jobs work on one master at a
time, and an image's decoded levels are dropped once its files are made.

Before any facts are read, the folder is checked: the public base, prefix and tile size it was
made with (``.iiif-export.json``; a run with others is refused, exit 2) and its lock
(``files.py``: one run at a time, exit 2 naming the pid holding it). Then the selection is
streamed: identifiers, or object names (a source's, every source's) read ``jobs`` at a time,
each object's record and its images' facts read, its manifests built; names that cannot be
files, or collide with another of this run or of the folder (``names.py``), are refused with
one line each (exit 1 at the end). An object claims its images' names, then its own; one
refused (for an image, its name, or facts not read) gives back what it claimed, and so does an
image refused for its facts: a name refused reserves nothing. Each read of facts or records is
bounded by ``server.request_timeout`` (a source's list of names by that or
``SURVEY_TIMEOUT``, whichever is more): one not read in time refuses its image, object or
source with a line saying so, never a hang. Each image is planned (``plan.py``, in a
thread) once its facts are read, ``jobs`` images at a time, and its files go through a queue
of at most 2 x ``jobs`` to ``jobs`` workers: a file that is there is skipped, the first path
of a file's pixels made, the others linked to it. Nothing is held for the whole selection
but the names met (for the collisions) and what the collections list.

An image is published whole: its info.json (each version) and then its stamp
(``.iiif-export/images/``: the source's version, size and modification time and the export's
parameters, fsynced with its folder) are written only after every file of the image is there.
An image with a stamp whose facts or parameters differ now is rebuilt (its files removed
first); an image without one resumes (its complete files kept). An image a file of which
fails is not published: one line (how many files were not made, the first error), the rest of
its files not tried, its objects left out of the collections and the index (exit 1). An
object's manifests are written once its images are published.

The last line counts the files written, found there and failed, and the names refused; the
exit status is 1 exactly when one of the last two is not 0.

At the end the collections and ``index.html`` are rewritten from the folder's record
(``.iiif-export/record.json``: every object and image published into the folder, merged across
runs), so a collection lists the objects of every run and every ``partOf`` resolves.
``--dry-run`` plans everything the same way and counts files and bytes
(:data:`~iiif_shim.export.plan.BYTES_PER_PIXEL`) without writing.
"""

from __future__ import annotations

import asyncio
import hashlib
import json
import logging
import os
from collections.abc import Awaitable, Callable, Sequence
from contextlib import AsyncExitStack
from dataclasses import asdict, dataclass, field, replace
from pathlib import Path
from typing import Any, TextIO

from iiif_shim.backends.base import OpenFile
from iiif_shim.base.errors import ShimError
from iiif_shim.base.machine import cpus
from iiif_shim.cache.entry import source_key
from iiif_shim.config.settings import Settings
from iiif_shim.core.service import ImageService, open_service
from iiif_shim.export import files, names
from iiif_shim.export.documents import Level0Builder, image_urls, index_page
from iiif_shim.export.plan import Extra, ImageFile, ImagePlan, plan_image
from iiif_shim.export.progress import Progress, human_bytes
from iiif_shim.iiif.profile import Version
from iiif_shim.presentation.documents import Picture, Urls
from iiif_shim.presentation.records import ObjectRecord
from iiif_shim.presentation.service import (
    SURVEY_TIMEOUT,
    PresentationService,
    open_presentation,
)

log = logging.getLogger("iiif_shim")

STAMP = ".iiif-export.json"  # the folder's base URL, prefix and tile size
RECORD = f"{files.STATE}/record.json"
IMAGE_STAMPS = f"{files.STATE}/images"
MAX_NAMES = 10_000_000  # object names read of one source
INDEX_IMAGES = 10_000  # images listed by index.html (then a count of the rest)
READ_LIMIT = 1 << 30  # bytes of the folder's own records read back
DECODED_SHARE = 4  # the run's decoded-source cache: this fraction of server.memory_budget


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
class Tracker:
    """One image's files in flight."""

    pending: int
    done: asyncio.Event = field(default_factory=asyncio.Event)
    failed: int = 0
    first: str | None = None  # the first error


@dataclass
class Record:
    """What the folder holds, merged across runs: objects (name -> source, label, thumbnail
    picture, versions) and images (identifier -> versions)."""

    objects: dict[str, dict[str, Any]] = field(default_factory=dict)
    images: dict[str, list[str]] = field(default_factory=dict)

    @classmethod
    def parse(cls, data: bytes | None) -> Record:
        if not data:
            return cls()
        try:
            doc = json.loads(data)
            return cls(dict(doc["objects"]), dict(doc["images"]))
        except (ValueError, KeyError, TypeError):
            return cls()

    def body(self) -> bytes:
        return json.dumps({"objects": self.objects, "images": self.images}).encode()


def total_threads(settings: Settings) -> int:
    """The image threads of the whole server: its processes' threads together."""
    server = settings.server
    processes = server.processes or cpus()
    return processes * (server.workers or max(1, cpus() // processes))


def decoded_cache(settings: Settings) -> tuple[int, str]:
    """The bytes of the run's decoded-source cache, and why: a quarter of the memory budget
    (the cache comes on top of it), or ``cache.decoded_bytes`` when that is more."""
    configured = settings.cache.decoded_bytes
    budget = settings.server.memory_budget
    share = budget // DECODED_SHARE
    if configured >= share:
        why = f"cache.decoded_bytes ({configured}), a quarter of server.memory_budget or more"
        return configured, why
    return share, (
        f"a quarter of server.memory_budget ({human_bytes(budget)}), as cache.decoded_bytes "
        f"({configured}) keeps no master over {human_bytes(configured // 2)} decoded"
    )


def _picture(value: dict[str, Any] | None) -> Picture | None:
    if value is None:
        return None
    return Picture(
        value["identifier"],
        value["width"],
        value["height"],
        (value["max_size"][0], value["max_size"][1]),
        (value["thumb_size"][0], value["thumb_size"][1]),
    )


def _stamp_path(identifier: str) -> str:
    digest = hashlib.sha256(identifier.encode()).hexdigest()
    return f"{IMAGE_STAMPS}/{digest[:2]}/{digest[2:34]}.json"


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
        self.builder = Level0Builder(
            settings.presentation, self.urls, settings.landing.title, options.versions
        )
        self.versions = [v.value for v in options.versions]
        self.folder: files.Tree | None = None  # None: a dry run
        self.record = Record()
        self.refused = 0  # names refused (identifiers, objects, sources)
        self.refused_images: set[str] = set()  # refused for their facts: nothing written
        self.failed_images = 0
        # facts and records are read within a request's time, a source's list within its read's
        self.read_timeout = settings.server.request_timeout
        self.list_timeout = max(settings.server.request_timeout, SURVEY_TIMEOUT)
        self.images: dict[str, asyncio.Future[bool]] = {}
        self.image_claims = names.Claims(names.image_entry)
        self.object_claims = names.Claims(names.object_entry)
        self.objects_done: dict[str, dict[str, Any]] = {}
        self.objects_failed: set[str] = set()
        self.manifests: list[tuple[str, bytes]] = []  # a dry run's, counted
        self.queue: asyncio.Queue[tuple[ImageFile, Tracker] | None] = asyncio.Queue(
            maxsize=2 * self.jobs
        )
        self.image_gate = asyncio.Semaphore(self.jobs)
        self.feeding = asyncio.Lock()  # one image's files queued at a time
        self.decoded_bytes, self.decoded_why = decoded_cache(settings)
        self.progress = Progress(err, 0, 0)
        self.planned_bytes = 0
        root = str(self.root.resolve())
        self.root_text = root
        self.name_max, self.path_max = names.limits(root)

    def say(self, line: str) -> None:
        self.err.write(f"export: {line}\n")
        self.err.flush()

    def _refuse(self, what: str, why: str) -> None:
        self.say(f"refused {what}: {why}")
        self.refused += 1

    def _late(self, limit: float) -> str:
        setting = "server.request_timeout" if limit == self.read_timeout else "a source's read"
        return f"not read within {setting} ({limit:g}s)"

    def _why(self, exc: ShimError | TimeoutError, what: str) -> str:
        if isinstance(exc, ShimError):
            return exc.public_text()
        return f"{what} {self._late(self.read_timeout)}"

    def _path(self, *parts: str) -> str:
        return "/".join(p for p in (self.tree, *parts) if p)

    async def _disk(self, fn: Callable[..., Any], *args: Any) -> Any:
        return await asyncio.to_thread(fn, *args)

    # --- the folder ----------------------------------------------------------------------

    def _folder_stamp(self, service_tile: int) -> tuple[dict[str, Any], str | None]:
        tile = self.options.tile_size or f"native, else {service_tile}"
        mine = {"base_url": self.options.base_url, "prefix": self.prefix, "tile_size": tile}
        path = self.root / STAMP
        if path.is_symlink():
            return mine, f"{path} is a symbolic link: the export writes no file through one"
        if not path.exists():
            return mine, None
        try:
            there = json.loads(path.read_text())
        except (OSError, ValueError):
            there = None
        if there != mine:
            return mine, (
                f"{self.root} holds an export made with {there} (its {STAMP}), not {mine}: "
                "use an empty folder, or the same --base-url and --tile-size"
            )
        return mine, None

    # --- the selection --------------------------------------------------------------------

    async def _select(self, presentation: PresentationService | None, spawn: Any) -> None:
        """Each image and object of the selection started (``spawn``), in order."""
        opts = self.options
        for identifier in opts.identifiers:
            if self._claim_image(identifier):
                await spawn(self._whole_image(identifier))
        if presentation is None:
            return
        wanted: list[tuple[str | None, str]] = [(None, name) for name in opts.objects]
        for owner, name in wanted:
            await spawn(self._object(presentation, owner, name))
        sources = list(presentation.sources) if opts.everything else list(opts.sources)
        source_claims = names.Claims(lambda _: False)
        for source_name in sources:
            why = source_claims.claim(source_name)  # collection/A and collection/a
            if why is not None:
                self._refuse(f"source {source_name!r}", why)
                continue
            try:
                source = presentation.source(source_name)
                async with asyncio.timeout(self.list_timeout):
                    found = await source.names(MAX_NAMES)
            except ShimError as exc:
                self._refuse(f"source {source_name!r}", exc.public_text())
                continue
            except TimeoutError:
                self._refuse(f"source {source_name!r}", f"its list {self._late(self.list_timeout)}")
                continue
            for name in found:
                await spawn(self._object(presentation, source_name, name))

    def _claim_image(self, identifier: str) -> bool:
        """``identifier`` claimed (each caller releases its claim if the image is refused), or
        refused with a line."""
        why = names.unfit(identifier, self.root_text, self.name_max, self.path_max)
        why = why or self._restricted(identifier)
        why = why or self.image_claims.claim(identifier)
        if why is not None:
            self._refuse(f"identifier {identifier!r}", why)
            return False
        return True

    def _restricted(self, identifier: str) -> str | None:
        """Why ``identifier`` may not be copied: its route has an access policy, which a static
        copy cannot enforce (neither its full nor its degraded tier is written)."""
        try:
            policy = self.service.router.route(identifier).access
        except ShimError:
            return None  # no route: refused for its facts, with the router's own reason
        if policy is None:
            return None
        return f"restricted by the access policy {policy!r}: a static copy cannot enforce it"

    async def _object(
        self, presentation: PresentationService, owner: str | None, name: str
    ) -> None:
        if name in self.objects_done or name in self.objects_failed:
            return
        why = names.object_unfit(name, self.root_text)
        if why is not None:
            self._refuse(f"object {name!r}", why)
            return
        try:
            async with asyncio.timeout(self.read_timeout):
                if owner is None:
                    record = await presentation.record(name)
                else:
                    found = await presentation.record_in(presentation.source(owner), name)
                    if found is None:
                        raise ShimError(f"source {owner!r} has no object {name!r}")
                    record = found
        except (ShimError, TimeoutError) as exc:
            self._refuse(f"object {name!r}", self._why(exc, "its record"))
            self.objects_failed.add(name)
            return
        # its images claimed first, then its own name; a refused object holds none of them
        images = list(dict.fromkeys(c.image for c in record.canvases))
        taken: list[str] = []
        for image in images:
            if not self._claim_image(image):
                why = f"its image {image!r} is refused"
                break
            taken.append(image)
        else:
            why = self.object_claims.claim(name)
        if why is None:
            try:
                async with asyncio.timeout(self.read_timeout):
                    pictures = await presentation.pictures(record)
            except (ShimError, TimeoutError) as exc:
                self.object_claims.release(name)
                why = self._why(exc, "its images' facts")
        if why is not None:
            for image in taken:
                self.image_claims.release(image)
            self._refuse(f"object {name!r}", why)
            self.objects_failed.add(name)
            return
        manifests, extras = self._manifests(record, pictures)
        started = [self._image_future(image, extras.get(image, ())) for image in images]
        results = await asyncio.gather(*started)
        if not all(results):
            bad = next(i for i, ok in zip(images, results, strict=True) if not ok)
            for image in taken:  # a refused image is written nowhere: its name is free
                if image in self.refused_images:
                    self.image_claims.release(image)
            self.object_claims.release(name)
            what = "is refused" if bad in self.refused_images else "was not exported"
            self._refuse(f"object {name!r}", f"its image {bad!r} {what}")
            self.objects_failed.add(name)
            if self.folder is not None:
                for path, _ in manifests:
                    await self._disk(self.folder.remove, path)
            return
        for path, body in manifests:
            if self.folder is None:
                self.manifests.append((path, b""))
                self.progress.plan(1, len(body))
            else:
                self.progress.plan(1, len(body))
                await self._document(path, body)
        picture = asdict(pictures[0]) if pictures else None
        if picture is not None:
            picture.pop("original", None)
        self.objects_done[name] = {
            "source": record.source,
            "label": record.label,
            "picture": picture,
            "versions": self.versions,
        }

    def _manifests(
        self, record: ObjectRecord, pictures: list[Picture]
    ) -> tuple[list[tuple[str, bytes]], dict[str, list[Extra]]]:
        """An object's manifests (path, body), and the image requests they and its entry in
        its collection name, by identifier."""
        docs: list[tuple[str, dict[str, Any]]] = []
        extras: dict[str, list[Extra]] = {}
        entry = [(record.name, record.label, pictures[0] if pictures else None)]
        for version in self.options.versions:
            doc = self.builder.exported_manifest(version, record, pictures)
            docs.append((self._path("presentation", version.value, record.name, "manifest"), doc))
            listing = self.builder.exported_collection(version, record.source, entry)
            for found in (doc, listing):
                for identifier, extra in image_urls(found, self.urls.iiif):
                    if extra[0] in self.options.versions:
                        extras.setdefault(identifier, []).append(extra)
        bodies = [(p, json.dumps(d, ensure_ascii=False, indent=1).encode()) for p, d in docs]
        return bodies, extras

    # --- images ----------------------------------------------------------------------------

    def _image_future(self, identifier: str, extras: Sequence[Extra]) -> Awaitable[bool]:
        future = self.images.get(identifier)
        if future is None:
            future = asyncio.ensure_future(self._image(identifier, extras))
            self.images[identifier] = future
        return future

    async def _whole_image(self, identifier: str) -> None:
        await self._image_future(identifier, ())
        if identifier in self.refused_images:
            self.image_claims.release(identifier)

    def _stamp_of(
        self, service: ImageService, identifier: str, plan: ImagePlan, facts: Any
    ) -> bytes:
        info = hashlib.sha256(b"".join(body for _, body in plan.documents)).hexdigest()
        stamp = {
            "identifier": identifier,
            "source": {
                "version": facts.version,
                "last_modified": facts.last_modified,
                "width": facts.width,
                "height": facts.height,
                "format": facts.format,
            },
            "export": {
                "info": info,
                "jpeg_quality": service.settings.iiif.jpeg_quality,
                "engine": service.engine.identity,
            },
        }
        return json.dumps(stamp, sort_keys=True).encode()

    async def _image(self, identifier: str, extras: Sequence[Extra]) -> bool:
        """Image ``identifier`` exported and published (or counted, on a dry run); whether it
        is."""
        service = self.service
        async with self.image_gate:
            try:
                async with asyncio.timeout(self.read_timeout):
                    src = await service.source(identifier)
            except (ShimError, TimeoutError) as exc:
                self._refuse(f"identifier {identifier!r}", self._why(exc, "its facts"))
                self.refused_images.add(identifier)
                return False
            offer = service.offer
            size = self.options.tile_size
            if size is not None:
                offer = replace(offer, tile_size=size)
            facts = src.info if size is None else replace(src.info, tiles=None)
            plan = await asyncio.to_thread(
                plan_image,
                identifier,
                facts,
                offer,
                service.limits,
                src.target.rights,
                self.options.versions,
                self.urls.iiif,
                self.tree,
                self.urls.service,
                extras,
            )
            if plan.unservable:
                log.info(
                    "%s: %d requests a viewer may make are not exported, the service refuses "
                    "them: %s", identifier, len(plan.unservable), "; ".join(plan.unservable[:3])
                )  # fmt: skip
            self.progress.plan(plan.file_count, plan.estimated_bytes)
            folder = self.folder
            if folder is None:  # a dry run: counted
                self.record.images[identifier] = self.versions
                return True
            stamp = self._stamp_of(service, identifier, plan, src.info)
            stamp_path = _stamp_path(identifier)
            try:
                there = await self._disk(folder.read, stamp_path, READ_LIMIT)
                if there is not None and there != stamp:
                    await self._disk(self._unpublish, identifier, stamp_path)
                tracker = Tracker(len(plan.files))
                if not plan.files:
                    tracker.done.set()
                await self._decoded_room(identifier, plan)
                async with self.feeding:  # its files together: one decoding serves them all
                    for image in plan.files:
                        await self.queue.put((image, tracker))
                await tracker.done.wait()  # each file bounded by server.request_timeout
                service.decoded.drop(source_key(src.target.backend, src.target.native_id))
                if tracker.failed:
                    self.say(
                        f"identifier {identifier!r} not exported: {tracker.failed} of its files "
                        f"not made; first: {tracker.first}"
                    )
                    self.failed_images += 1
                    self.progress.add(failed=len(plan.documents))
                    return False
                for path, body in plan.documents:
                    await self._document(path, body)
                if there != stamp:
                    await self._disk(self._stamped, stamp_path, stamp)
            except (OSError, ShimError) as exc:
                why = exc.public_text() if isinstance(exc, ShimError) else str(exc)
                self.say(f"identifier {identifier!r} not exported: {why}")
                self.failed_images += 1
                self.progress.add(failed=1)  # the file it failed on at least
                return False
            self.record.images[identifier] = sorted(
                set(self.record.images.get(identifier, ())) | set(self.versions), reverse=True
            )
            return True

    async def _decoded_room(self, identifier: str, plan: ImagePlan) -> None:
        """One line when the master of ``identifier``, decoded whole for its first file (a
        tile at full resolution when it has tiles), is more than the run's decoded-source cache
        keeps: then each of its files that needs it at full size decodes it again."""
        if not plan.files:
            return
        service = self.service
        try:
            async with asyncio.timeout(self.read_timeout):
                prepared = await service.prepare(plan.files[0].request)
        except (ShimError, TimeoutError):
            return  # the file fails with its own line
        info = prepared.source.info
        if not prepared.plan.native.whole_source(info.width, info.height):
            return  # decoded by windows or tiles: nothing is kept whole
        kept = service.engine.cost(prepared.plan, info).kept
        if 2 * kept > self.decoded_bytes:
            self.say(
                f"identifier {identifier!r}: its master takes {human_bytes(kept)} decoded, more "
                f"than half of this run's decoded-source cache ({human_bytes(self.decoded_bytes)})"
                ": each of its files that needs it at full size decodes it again; for a faster "
                f"export set cache.decoded_bytes: {2 * kept} (or more) in the configuration it "
                "reads"
            )

    def _unpublish(self, identifier: str, stamp_path: str) -> None:
        """An image made from another source or with other parameters removed (each version's
        info.json and files, then its stamp): blocking."""
        assert self.folder is not None
        for version in Version:
            where = self._path(version.value, identifier)
            self.folder.remove_entries(where, lambda entry: not names.image_entry(entry))
        self.folder.remove(stamp_path)
        self.record.images.pop(identifier, None)

    def _stamped(self, path: str, stamp: bytes) -> None:
        assert self.folder is not None
        self.folder.write(path, stamp)
        self.folder.sync_folder(path.rsplit("/", 1)[0])

    async def _document(self, path: str, body: bytes) -> None:
        """A document written unless the file holds it already."""
        assert self.folder is not None
        written = await self._disk(self.folder.replace, path, body)
        self.progress.add(files=1 if written else 0, written=written, skipped=0 if written else 1)

    async def _worker(self) -> None:
        while (job := await self.queue.get()) is not None:
            image, tracker = job
            try:
                if tracker.first is not None:  # the image failed: the rest not tried
                    tracker.failed += len(image.paths)
                    self.progress.add(failed=len(image.paths))
                else:
                    await self._file(image)
            except (ShimError, OSError, TimeoutError) as exc:
                why = exc.public_text() if isinstance(exc, ShimError) else str(exc) or "timed out"
                tracker.failed += len(image.paths)
                tracker.first = tracker.first or f"{image.paths[0]}: {why}"
                self.progress.add(failed=len(image.paths))
            finally:
                tracker.pending -= 1
                if tracker.pending == 0:
                    tracker.done.set()

    async def _file(self, image: ImageFile) -> None:
        folder = self.folder
        assert folder is not None
        paths = image.paths
        there = await self._disk(lambda: [p for p in paths if folder.exists(p)])
        if len(there) == len(paths):
            self.progress.add(skipped=len(paths))
            return
        first, written = there[0] if there else paths[0], 0
        if not there:
            written = await self._made(image, first)
        missing = [p for p in paths if p not in there and p != first]
        for path in missing:
            await self._disk(folder.link, first, path)
        self.progress.add(files=len(missing) + (0 if there else 1), written=written,
                          skipped=len(there))  # fmt: skip

    async def _made(self, image: ImageFile, path: str) -> int:
        """The image service's answer to ``image.request`` at ``path``, as a server answers
        it: as it is when it passes through (a master's file, a stream), else produced."""
        service, folder = self.service, self.folder
        assert folder is not None
        async with asyncio.timeout(self.settings.server.request_timeout):
            prepared = await service.prepare(image.request)
            async with service.stream(prepared) as passing:
                body = passing.body
                if isinstance(body, OpenFile):
                    return int(await self._disk(folder.copy_open, path, body.file, body.changed))
                if body is not None:
                    return await folder.write_stream(path, body.head, body.rest)
                prepared = passing.prepared
            made = await service.produce(prepared)
        return int(await self._disk(folder.write, path, made.rendered.body))

    # --- the folder's documents ------------------------------------------------------------

    def _merged(self) -> Record:
        record = self.record
        for name in self.objects_failed:
            record.objects.pop(name, None)
        for name, entry in self.objects_done.items():
            before = record.objects.get(name, {}).get("versions", [])
            entry = {
                **entry,
                "versions": sorted(set(before) | set(entry["versions"]), reverse=True),
            }
            record.objects[name] = entry
        # an object whose image is not (or no longer) there is not listed
        for name, entry in list(record.objects.items()):
            picture = entry.get("picture")
            if picture is not None and picture["identifier"] not in record.images:
                record.objects.pop(name)
        return record

    def folder_documents(self, record: Record) -> list[tuple[str, bytes]]:
        """The collections and index.html of everything ``record`` lists."""
        docs: list[tuple[str, dict[str, Any]]] = []
        by_version: dict[str, dict[str, list[tuple[str, str, Picture | None]]]] = {}
        for name, entry in record.objects.items():
            for version in entry["versions"]:
                by_source = by_version.setdefault(version, {})
                by_source.setdefault(entry["source"], []).append(
                    (name, entry["label"], _picture(entry["picture"]))
                )
        builder = Level0Builder(
            self.settings.presentation,
            self.urls,
            self.settings.landing.title,
            tuple(Version(v) for v in ("3", "2") if v in by_version),
        )
        for version_text, by_source in by_version.items():
            version = Version(version_text)
            top = builder.exported_top(version, list(by_source))
            docs.append((self._path("presentation", version_text, "collection", "index.json"), top))
            for source, entries in by_source.items():
                doc = builder.exported_collection(version, source, entries)
                docs.append((self._path("presentation", version_text, "collection", source), doc))
        bodies = [(p, json.dumps(d, ensure_ascii=False, indent=1).encode()) for p, d in docs]
        return [*bodies, self.index(record)]

    def index(self, record: Record) -> tuple[str, bytes]:
        objects = [
            (
                entry["label"],
                {f"{v}.x manifest": self.urls.manifest(v, name) for v in entry["versions"]},
            )
            for name, entry in record.objects.items()
        ]
        images = []
        for identifier, versions in list(record.images.items())[:INDEX_IMAGES]:
            links = {
                f"{v}.x info.json": f"{self.urls.service(Version(v), identifier)}/info.json"
                for v in versions
            }
            images.append((identifier, links))
        page = index_page(self.settings.landing.title, objects, images)
        more = len(record.images) - INDEX_IMAGES
        if more > 0:
            page = page.replace("</body>", f"<p>... and {more} more images.</p>\n</body>")
        return "index.html", page.encode()

    # --- the run ---------------------------------------------------------------------------

    async def _work(self, presentation: PresentationService | None) -> None:
        """The selection streamed through the image plans and the file workers."""
        objects = asyncio.Semaphore(self.jobs)
        running: set[asyncio.Task[None]] = set()

        async def spawn(work: Awaitable[None]) -> None:
            await objects.acquire()

            async def held() -> None:
                try:
                    await work
                finally:
                    objects.release()

            task = asyncio.ensure_future(held())
            running.add(task)
            task.add_done_callback(running.discard)

        async with asyncio.TaskGroup() as group:
            workers = [group.create_task(self._worker()) for _ in range(self.jobs)]
            try:
                await self._select(presentation, spawn)
                while running:
                    await asyncio.gather(*list(running))
                await asyncio.gather(*self.images.values())
            except BaseException:
                pending: list[asyncio.Future[Any]] = [*running, *self.images.values(), *workers]
                for task in pending:
                    task.cancel()
                raise
            for _ in workers:
                await self.queue.put(None)

    async def run(self) -> int:
        opts, settings = self.options, self.settings
        _, problem = self._folder_stamp(settings.iiif.tile_size)
        if problem is not None:
            self.say(problem)
            return 2
        lock = None
        if not opts.dry_run:
            try:
                folder = await self._disk(files.Tree, self.root)
            except OSError as exc:
                self.say(f"cannot write into {self.root}: {exc}")
                return 2
            try:
                lock = await self._disk(folder.lock)
            except (files.Locked, OSError) as exc:
                folder.close()
                if isinstance(exc, OSError):
                    self.say(f"cannot write into {self.root}: {exc}")
                    return 2
                self.say(
                    f"another export (pid {exc.pid}) is writing into {self.root}: one run at "
                    "a time in a folder; wait for it, or stop it"
                )
                return 2
            self.folder = folder
        try:
            return await self._locked()
        finally:
            if self.folder is not None:
                if lock is not None:
                    os.close(lock)
                self.folder.close()

    async def _locked(self) -> int:
        opts, settings = self.options, self.settings
        folder = self.folder
        if folder is not None:
            mine, problem = self._folder_stamp(settings.iiif.tile_size)
            if problem is not None:  # written meanwhile by a run that held the lock
                self.say(problem)
                return 2
            await self._disk(folder.replace, STAMP, json.dumps(mine).encode())
            if removed := await self._disk(folder.swept):
                self.say(f"removed {removed} temporary files an interrupted run left")
            self.record = Record.parse(await self._disk(folder.read, RECORD, READ_LIMIT))
        else:
            kept = self.root / RECORD
            self.record = Record.parse(kept.read_bytes() if kept.is_file() else None)
        for identifier in self.record.images:
            self.image_claims.claim(identifier)
        for name in self.record.objects:
            self.object_claims.claim(name)
        service_settings = replace(
            settings.service(),
            threads=self.threads,
            max_pending=max(settings.server.max_pending, 2 * self.jobs),
            keep_rendered=False,
            cache=replace(settings.cache, decoded_bytes=self.decoded_bytes),
        )
        if folder is not None:
            self.say(
                f"decoded-source cache for this run: {human_bytes(self.decoded_bytes)}, "
                f"{self.decoded_why}: a master up to {human_bytes(self.decoded_bytes // 2)} "
                "decoded is decoded once for all its tiles"
            )
        with_objects = bool(opts.objects or opts.sources or opts.everything)
        self.progress = Progress(self.err, 0, 0, planning=True)
        async with AsyncExitStack() as stack:
            self.service = await stack.enter_async_context(open_service(service_settings))
            presentation = None
            if with_objects:
                presentation = await stack.enter_async_context(
                    open_presentation(settings.presentation, self.service, watch=False)
                )
            if folder is not None:
                await self._disk(folder.mark)
            try:
                await self._work(presentation)
                record = self._merged()
                documents = self.folder_documents(record)
                self.progress.plan(len(documents), sum(len(b) for _, b in documents))
                self.progress.planned()
                if folder is not None:
                    for path, body in documents:
                        await self._document(path, body)
                    await self._disk(folder.write, RECORD, record.body())
                    await self._disk(folder.sync_folder, files.STATE)
            finally:
                if folder is not None:
                    folder.unmark()
        progress = self.progress
        if opts.dry_run:
            images = len(self.images)
            docs = len(self.manifests) + len(documents)
            size = progress.estimated
            self.out.write(
                f"estimate: {progress.total} files ({images} images, {docs} documents), about "
                f"{size} bytes ({human_bytes(size)}; JPEG at about 0.3 bytes a pixel, links to "
                f"the same pixels count no bytes), {self.refused} refused\n"
            )
            return 1 if self.refused else 0
        progress.finish()
        self.out.write(
            f"exported: {progress.files} files written ({progress.bytes} bytes), "
            f"{progress.skipped} there already, {progress.failed} failed, {self.refused} "
            f"refused, into {self.root}\n"
        )
        return 1 if self.refused or self.failed_images else 0

    service: ImageService


async def export(settings: Settings, options: ExportOptions, err: TextIO, out: TextIO) -> int:
    """Run one export; its exit status (0, 1 when anything was refused or failed, 2 when the
    folder holds another export or another run is writing into it)."""
    return await Export(settings, options, err, out).run()
