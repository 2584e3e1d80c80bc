"""Object records (cached, single-flight) and the documents built from them, with no aiohttp
types in it.

An object name is looked up in the sources in their configured order; the first that has it
wins. Each canvas is sized from the Image API's own cached source facts (the same ones
info.json is built from), so a manifest never disagrees with the image services it names. A
document looks up its images' facts 8 at a time (the first that fails stops the others), and
all documents of a process together at most 16 at a time (a gate: the rest wait in line), so
cold manifests of many canvases cannot take every thread and connection images need; a
collection's records, asked of its object source, are not in that gate (a stalled source
holds none of it). Their pool jobs count in the ``documents`` lane (``base/lanes.py``, set by
the handlers), and the facts they ask of a backend hold at most half of what its metadata
may (``upstream/client.py``). PDFs are made by ``pdfs.py`` (:meth:`PresentationService.pdf_plan`
says what one is made of).

A collection leaves out the objects its source cannot show (no usable canvas, or an ``access``
naming no policy of this server: a 404 of their own). :class:`SourceWatch` reads every source
in the background every ``presentation.check_interval`` seconds (a local CSV through, its
objects built again only when the file changed; a folder through; a remote one, JSON, CONTENTdm
or a CSV URL, its list and a rotating sample of SAMPLED objects), for ``/health/ready`` and the
``iiif_shim_source_*`` gauges: ``ok``, ``degraded`` (values, rows or objects left out, with
their counts; or a stale copy) or ``down`` (with the error). Each read is bounded by
SURVEY_TIMEOUT, runs in the ``documents`` lane of the thread pool and, for its long part, on
one survey thread of its own (``SurveyThread``), never in the lane or the threads that serve
images; a source still being read when its next read is due is not read again meanwhile. The
reads stop when the service closes (a reload, shutdown).
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import time
from collections.abc import AsyncIterator, Callable, Collection, Coroutine, Mapping, Sequence
from contextlib import asynccontextmanager
from functools import partial
from typing import Any, TypeVar

from iiif_shim.backends.base import Health
from iiif_shim.base.errors import NotFound, RenderTimeout, ShimError, UnknownImage
from iiif_shim.base.lanes import Lane, in_lane
from iiif_shim.cache.memory import Observe, TtlCache
from iiif_shim.core.service import ImageService
from iiif_shim.iiif.profile import Version
from iiif_shim.iiif.request import parse_image_request
from iiif_shim.iiif.resolve import resolve
from iiif_shim.imaging.pool import Gate
from iiif_shim.presentation.documents import Builder, Picture, thumb_size
from iiif_shim.presentation.pdfs import PdfMaker, PdfPlan
from iiif_shim.presentation.records import ObjectRecord, check_name
from iiif_shim.presentation.settings import PresentationSettings
from iiif_shim.presentation.sources.base import (
    ObjectSource,
    SourceContext,
    Survey,
    SurveyStopped,
    SurveyThread,
    UnusableObject,
)
from iiif_shim.presentation.sources.registry import source_for
from iiif_shim.telemetry.metrics import Metrics

log = logging.getLogger("iiif_shim")

_CONCURRENT_FACTS = 8  # image facts looked up at once for one document
_DOCUMENT_LOOKUPS = 16  # ... and for all documents of a process together
_LOOKUP_LINE = 4096  # lookups that may wait for the gate (512 documents, 8 each)
SURVEY_TIMEOUT = 60.0  # seconds one background read of a source may take (then: down)
SAMPLED = 3  # objects of a remote source each background read reads (in turn)
T = TypeVar("T")


@asynccontextmanager
async def open_presentation(
    settings: PresentationSettings,
    images: ImageService,
    observe: Observe | None = None,
    watch: bool = True,
    survey_threads: int = 1,
    policies: Collection[str] = (),
) -> AsyncIterator[PresentationService]:
    """The presentation service with its sources started (and, with ``watch``, read in the
    background for health; ``survey_threads``: threads for surveys' long jobs); all closed on
    exit. ``policies``: the names under ``auth.policies`` (an object naming another is not
    served)."""
    threads = SurveyThread(survey_threads)
    context = SourceContext(
        images.workers.run,
        images.backends,
        images.router,
        images.metrics,
        settings.strict,
        threads,
    )
    sources = {name: source_for(name, spec) for name, spec in settings.sources.items()}
    started: list[ObjectSource[Any]] = []
    service: PresentationService | None = None
    try:
        for source in sources.values():
            await source.start(context)
            started.append(source)
        service = PresentationService(settings, images, sources, observe, policies)
        if watch and sources:
            service.watch.start()
        yield service
    finally:
        threads.close()  # a survey's job still running stops at its next object
        if service is not None:
            await service.watch.stop()
        for source in started:
            await source.close()


class SourceWatch:
    """Every source read now and then in the background; the latest :class:`Survey` of each."""

    def __init__(
        self,
        sources: Mapping[str, ObjectSource[Any]],
        interval: float,
        limit: int,
        metrics: Metrics | None = None,
    ) -> None:
        self.sources = sources
        self.interval = interval
        self.limit = limit
        self.metrics = metrics
        self.surveys: dict[str, tuple[Survey, float]] = {}  # by source: survey, when (epoch)
        self._task: asyncio.Task[None] | None = None
        self._reading: dict[str, asyncio.Task[None]] = {}  # the read of each source under way
        self._turn: dict[str, int] = {}  # a remote source's next sample starts at this object

    def start(self) -> None:
        self._task = asyncio.get_running_loop().create_task(self._run())

    async def stop(self) -> None:
        tasks = [t for t in (self._task, *self._reading.values()) if t is not None]
        for task in tasks:
            task.cancel()
        for task in tasks:
            with contextlib.suppress(asyncio.CancelledError):
                await task

    async def _run(self) -> None:
        while True:
            self.check_due()
            await asyncio.sleep(self.interval)

    def check_due(self) -> None:
        """Start a read of every source not being read already (one read per source at a
        time: a read still going when the next is due is left to finish)."""
        for name in self.sources:
            if name in self._reading and not self._reading[name].done():
                log.debug("object source %r is still being read; not read again yet", name)
                continue
            task = asyncio.get_running_loop().create_task(self._check_and_keep(name))
            self._reading[name] = task

    async def check_all(self) -> None:
        """Every source read now (waiting for reads under way)."""
        self.check_due()
        await asyncio.gather(*self._reading.values())

    async def _check_and_keep(self, name: str) -> None:
        survey = await self.check(name)
        self.surveys[name] = (survey, time.time())
        if self.metrics is not None:
            skipped = {"cells": survey.cells, "rows": survey.rows,
                       "columns": survey.columns, "objects": survey.unusable}  # fmt: skip
            self.metrics.source_state(
                name, survey.state is not Health.DOWN, survey.objects, skipped
            )

    async def check(self, name: str) -> Survey:
        """One source read, in the documents lane: a local one through, a remote one its list
        and SAMPLED of its objects, in turn."""
        source = self.sources[name]
        start = self._turn.get(name, 0)
        self._turn[name] = start + SAMPLED
        try:
            with in_lane(Lane.DOCUMENTS):
                async with asyncio.timeout(SURVEY_TIMEOUT):
                    return await source.survey(
                        self.limit, SAMPLED if source.remote else None, start
                    )
        except TimeoutError:
            error = f"not read within {SURVEY_TIMEOUT:g}s"
        except RenderTimeout:  # a job of its read waited past server.request_timeout
            error = "not read in time: the thread pool is busy, or the file is too large"
        except SurveyStopped:
            error = "its read was stopped"
        except ShimError as exc:
            error = exc.public_text()
        except Exception:  # a check must never take the watch down with it
            log.exception("reading object source %r for health failed", name)
            error = "reading it failed"
        last = self.surveys.get(name)
        if last is None or last[0].error != error:  # logged when it changes, not every read
            log.warning("object source %r: %s", name, error)
        return Survey(name, source.type_name, error=error)

    def down(self) -> dict[str, str]:
        """The sources that were down at their last read, with why."""
        return {name: survey.error for name, (survey, _) in self.surveys.items()
                if survey.error is not None and name in self.sources}  # fmt: skip

    def report(self) -> dict[str, Any]:
        """Each source's entry of ``/health/ready``."""
        out: dict[str, Any] = {}
        for name, source in self.sources.items():
            if name not in self.surveys:
                out[name] = {"type": source.type_name, "state": Health.DEGRADED.value,
                             "reason": "not read yet"}  # fmt: skip
                continue
            survey, when = self.surveys[name]
            out[name] = survey.as_json(problems=False) | {
                "checked": time.strftime("%Y-%m-%dT%H:%M:%SZ", time.gmtime(when))
            }
        return out

    def merged(self, overall: Health, body: dict[str, Any]) -> tuple[Health, dict[str, Any]]:
        """``/health/ready`` with the sources: a source that is down lowers an ``ok`` to
        ``degraded`` (never to ``down``: the images are still served, so the process stays
        ready); values left out do not change the overall state."""
        sources = self.report()
        if not sources:
            return overall, body
        if overall is Health.OK and any(s["state"] == "down" for s in sources.values()):
            overall = Health.DEGRADED
        return overall, body | {"status": overall.value, "sources": sources}


class PresentationService:
    def __init__(
        self,
        settings: PresentationSettings,
        images: ImageService,
        sources: Mapping[str, ObjectSource[Any]],
        observe: Observe | None = None,
        policies: Collection[str] = (),
    ) -> None:
        self.settings = settings
        self.policies = frozenset(policies)
        self.images = images
        self.sources = sources
        # by (source, object name); None (the source has no such object) is kept too, so a
        # name no source has does not ask every upstream again until the TTL passes
        self.records: TtlCache[tuple[str, str], ObjectRecord | None] = TtlCache(
            settings.record_entries, settings.record_ttl, "record", observe
        )
        images.caches.register(self._purged)
        self.lookups = Gate(
            _DOCUMENT_LOOKUPS,
            images.settings.request_timeout,
            _LOOKUP_LINE,
            "image facts being looked up for documents",
        )
        self.pdfs = PdfMaker(settings, images)
        self.watch = SourceWatch(
            sources, settings.check_interval, settings.collection_limit, images.metrics
        )

    def _purged(self, source: str | None) -> None:
        """Records are by object, not by image: a purge of everything empties them."""
        if source is None:
            self.records.clear()

    @property
    def enabled(self) -> bool:
        return bool(self.sources)

    async def record(self, name: str) -> ObjectRecord:
        """Object ``name`` from the first source that has it; 404 when none does. A source
        that fails does not hide the object from the sources after it; its error is the
        answer only when no source has the object."""
        if check_name(name) is not None:
            raise NotFound("no such object")
        failed: ShimError | None = None
        for source in self.sources.values():
            try:
                found = await self.record_in(source, name)
            except ShimError as exc:
                failed = failed or exc
                continue
            if found is not None:
                return found
        raise failed or NotFound(f"no object named {name[:100]!r}")

    async def record_in(self, source: ObjectSource[Any], name: str) -> ObjectRecord | None:
        """Object ``name`` of ``source`` (cached with a TTL, single-flight), or None."""

        async def load() -> ObjectRecord | None:
            return await source.record(name)

        return await self.records.get((source.name, name), load)

    def object_policy(self, record: ObjectRecord) -> str | None:
        """The access policy of ``record`` as a whole: its own ``access``, else its source's
        (its images have their routes'); an object naming a policy this server does not have
        is not served (never shown to everyone)."""
        source = self.sources.get(record.source)
        given: str | None = getattr(source.settings, "access", None) if source else None
        policy = record.access or given
        if policy is not None and policy not in self.policies:
            raise UnusableObject(
                f"object {record.name[:100]!r} names access policy {policy[:64]!r}, which is "
                "not under auth.policies"
            )
        return policy

    def pdf_policies(self, record: ObjectRecord) -> tuple[str, ...]:
        """The policies whose access ``record``'s PDF needs: the object's, then those of the
        routes of its images (in order, each once); empty for a public PDF."""
        found = [self.object_policy(record)]
        for canvas in record.canvases:
            try:
                found.append(self.images.router.route(canvas.image).access)
            except NotFound:
                continue  # (the PDF fails on it anyway)
        return tuple(dict.fromkeys(p for p in found if p is not None))

    def source(self, name: str) -> ObjectSource[Any]:
        found = self.sources.get(name)
        if found is None:
            raise NotFound(f"no object source named {name[:100]!r}")
        return found

    async def picture(self, identifier: str, owner: str = "") -> Picture:
        """Canvas facts of IIIF identifier ``identifier`` (an image of object ``owner``)."""
        try:
            src = await self.images.source(identifier)
        except NotFound:
            raise UnknownImage(
                f"object {owner!r}: image {identifier[:200]!r} is not one this server has",
            ) from None
        info = src.info
        full = parse_image_request(Version.V3, identifier, "full", "max", "0", "default.jpg")
        resolved = resolve(full, info.width, info.height, self.images.limits)
        largest = (resolved.width, resolved.height)  # what `max` gives under the limits
        return Picture(
            identifier,
            info.width,
            info.height,
            largest,
            thumb_size(*largest, self.settings.thumbnail_size),
            self.images.original_format(identifier, src),
            src.target.access,
        )

    async def pictures(self, record: ObjectRecord) -> list[Picture]:
        """The canvases' facts, 8 at a time; the first that fails stops the others."""
        gate = asyncio.Semaphore(_CONCURRENT_FACTS)

        async def one(identifier: str) -> Picture:
            async with gate, self.lookups.held():
                return await self.picture(identifier, record.name)

        return await _all_of([partial(one, canvas.image) for canvas in record.canvases])

    async def pdf_plan(self, record: ObjectRecord) -> PdfPlan:
        """What ``record``'s PDF is made of (``pdfs.py``), its images' facts read."""
        heard = await self.pdfs.heard(record)  # before any facts are read
        return await self.pdfs.plan(record, await self.pictures(record), heard)

    async def manifest(self, version: Version, name: str, builder: Builder) -> dict[str, Any]:
        record = await self.record(name)
        pdf = self.pdf_policies(record)
        pictures = await self.pictures(record)
        if version is Version.V3:
            return builder.manifest(record, pictures, pdf)
        return builder.manifest_2(record, pictures, pdf)

    async def entries(
        self, source: ObjectSource[Any], limit: int
    ) -> list[tuple[str, str, Picture | None]]:
        """(name, label, thumbnail picture) of up to ``limit`` objects of ``source``; an object
        that cannot be read is listed under its name, without a thumbnail; one its source
        cannot show (no usable canvas) is left out."""
        names = await source.names(limit)
        gate = asyncio.Semaphore(_CONCURRENT_FACTS)

        async def one(name: str) -> tuple[str, str, Picture | None] | None:
            async with gate:
                try:
                    record = await self.record_in(source, name)  # the source's: not in the gate
                    if record is None:
                        return name, name, None
                    self.object_policy(record)  # one naming no policy here is left out
                    async with self.lookups.held():
                        picture = await self.picture(record.canvases[0].image, name)
                    return name, record.label, picture
                except UnusableObject:
                    return None
                except ShimError:
                    return name, name, None

        found = await _all_of([partial(one, name) for name in names])
        return [entry for entry in found if entry is not None]

    async def collection(
        self, version: Version, source_name: str | None, builder: Builder
    ) -> dict[str, Any]:
        if source_name is None:
            names: Sequence[str] = list(self.sources)
            if version is Version.V3:
                return builder.top_collection(names)
            return builder.top_collection_2(names)
        source = self.source(source_name)
        entries = await self.entries(source, self.settings.collection_limit)
        if version is Version.V3:
            return builder.collection(source_name, entries)
        return builder.collection_2(source_name, entries)


async def _all_of(calls: Sequence[Callable[[], Coroutine[Any, Any, T]]]) -> list[T]:
    """Every call's result, in order; the first that fails stops the others (they give their
    places in the gates back at once) and is raised."""
    try:
        async with asyncio.TaskGroup() as group:
            tasks = [group.create_task(call()) for call in calls]
    except BaseExceptionGroup as failed:
        raise failed.exceptions[0] from None
    return [task.result() for task in tasks]
