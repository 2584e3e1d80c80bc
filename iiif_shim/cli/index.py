"""The ``iiif-shim index`` command: the text of the objects of the object sources indexed for
search ahead of time, into the index a server with the same configuration uses
(``search/service.py`` does the work; this is its command line and its report).

It opens the image, presentation and search services as a server does (the same backends and
cache tiers for the canvases' sizes, the same index) and walks the objects: every source's,
or those of ``--source`` (repeatable), or ``--object`` names (repeatable; with ``--source``,
looked up in those sources only). An object listed by two sources is the first source's, as
when serving. Each object with text is indexed (``SearchService.index_object``), ``--jobs`` at
a time (1 by default: parsing is bound by the interpreter lock; on a 2-CPU machine 500
one-page objects went at 162 pages/s with 1 job, 142 with 2 and 103 with 4, a 2,000-page
object at 221 with 1 and 219 with 2; more help only text read over the network). Only files
whose stamp (size and time, or ETag) changed since the last run are read (``--force``: every
file). An object that has no text any more is dropped from the index, and
so, after a run over every source whose lists were all read, is every object no source lists
any more.

On stderr: one line per file refused (for what it is: hostile, broken, too large, not
there; the service remembers it and reads it again only once it changes) or not read now (a
timeout, an error of its server: the service's ``Refusal.remembered`` is false, and it is
read again at the next run), with its name, object, canvas and why; one per object or source
that could not be read; the index's own trouble with its detail (``IndexUnavailable.detail``:
the engine's error, its URL's password masked, as the server logs it); and the progress: a bar
redrawn in place on a terminal, else a line every PLAIN_EVERY seconds. On stdout, the summary:
objects, pages indexed, unchanged, refused and not read now, pages and objects dropped,
objects or sources not read, seconds and pages per second. Exit status: 0; 1 when a file was
refused or not read, or an object, a source or the index could not be read or written; 2 for
a configuration with problems, an unknown source or object, or no object sources at all. The
service's own log lines about refused files are not shown (the command's lines say it once).
"""

from __future__ import annotations

import argparse
import asyncio
import logging
import sys
import time
from collections.abc import Sequence
from dataclasses import dataclass, field, replace
from typing import TYPE_CHECKING, Any, TextIO

from iiif_shim.base import redaction
from iiif_shim.base.errors import ConfigError, ShimError
from iiif_shim.config.settings import CONFIG_ENV, Settings, settings_from_environment

if TYPE_CHECKING:
    from iiif_shim.presentation.records import ObjectRecord
    from iiif_shim.presentation.sources.base import ObjectSource

    Source = ObjectSource[Any]

log = logging.getLogger("iiif_shim")

PLAIN_EVERY = 5.0  # seconds between progress lines when stderr is not a terminal
MAX_NAMES = 10_000_000  # object names read of one source
_BAR_EVERY = 0.2
_BAR_WIDTH = 24
INTERRUPTED = 130


def add_parser(sub: argparse._SubParsersAction[argparse.ArgumentParser]) -> None:
    parser = sub.add_parser(
        "index",
        help="index the text (ALTO, hOCR, plain) of the objects for search, ahead of time; "
        "only changed files are read again",
    )
    parser.add_argument(
        "--config", help=f"YAML config (default: ${CONFIG_ENV}, else the embedded default)"
    )
    parser.add_argument(
        "--source", action="append", metavar="NAME", help="the objects of this source only"
    )
    parser.add_argument("--object", action="append", metavar="NAME", help="this object only")
    parser.add_argument(
        "--force", action="store_true", help="read every file again, changed or not"
    )
    parser.add_argument(
        "--jobs",
        type=int,
        metavar="N",
        help="objects indexed at once (default 1: parsing holds one CPU whatever the number; "
        "more helps only when text files come over the network)",
    )
    parser.add_argument("--log-level", default="warning", choices=["debug", "info", "warning"])


@dataclass
class Tally:
    """What the run did so far."""

    objects: int = 0  # indexed (looked at)
    listed: int = 0  # to look at, as far as known
    pages: int = 0  # read and stored now
    skipped: int = 0  # unchanged
    refused: int = 0  # files refused for what they are
    unread: int = 0  # files not read now (a timeout, their server's error): read next time
    removed: int = 0  # canvases dropped
    dropped: int = 0  # objects dropped
    failed: int = 0  # objects or sources not read
    done: int = 0  # pages looked at (for the progress)
    running: dict[str, tuple[int, int]] = field(default_factory=dict)  # pages done, of
    started: float = field(default_factory=time.monotonic)


class Progress:
    """The run's progress on ``stream``: a bar redrawn in place on a terminal (at most every
    0.2 s), else a line every PLAIN_EVERY seconds; :meth:`say` writes a line of its own."""

    def __init__(self, stream: TextIO, tally: Tally, bar: bool | None = None) -> None:
        self.stream = stream
        self.tally = tally
        self.bar = stream.isatty() if bar is None else bar
        self._last = time.monotonic()
        self._drawn = False

    def line(self) -> str:
        t = self.tally
        elapsed = max(time.monotonic() - t.started, 1e-6)
        unread = f", {t.unread} not read now" if t.unread else ""
        text = (
            f"{t.objects}/{t.listed} objects, {t.done} pages ({t.pages} indexed, "
            f"{t.skipped} unchanged, {t.refused} refused{unread}), "
            f"{t.done / elapsed:.1f} pages/s"
        )
        done = self.share()
        if 0 < done < t.listed:
            text += f", ETA {_duration((t.listed - done) * elapsed / done)}"
        return text

    def share(self) -> float:
        """Objects done, and the share done of those being indexed (a large object too)."""
        t = self.tally
        return t.objects + sum(done / total for done, total in t.running.values() if total)

    def tick(self) -> None:
        now = time.monotonic()
        if now - self._last >= (_BAR_EVERY if self.bar else PLAIN_EVERY):
            self._last = now
            self.show()

    def show(self) -> None:
        t = self.tally
        if self.bar:
            filled = round(_BAR_WIDTH * self.share() / t.listed) if t.listed else 0
            filled = min(filled, _BAR_WIDTH)
            bar = "#" * filled + "-" * (_BAR_WIDTH - filled)
            self.stream.write(f"\r[{bar}] {self.line()}\x1b[K")
            self._drawn = True
        else:
            self.stream.write(f"index: {self.line()}\n")
        self.stream.flush()

    def say(self, text: str) -> None:
        if self._drawn:
            self.stream.write("\r\x1b[K")
            self._drawn = False
        self.stream.write(redaction.redact(f"index: {text}") + "\n")
        self.stream.flush()

    def finish(self) -> None:
        """The last progress line (a bar: drawn once more, and ended)."""
        self.show()
        if self.bar:
            self.stream.write("\n")
            self.stream.flush()
            self._drawn = False


def _duration(seconds: float) -> str:
    seconds = int(seconds)
    if seconds >= 3600:
        return f"{seconds // 3600}h{seconds % 3600 // 60:02d}m"
    return f"{seconds // 60}m{seconds % 60:02d}s"


def main(args: argparse.Namespace) -> int:
    """The run ``args`` ask for; its exit status. The CLI has set up logging."""
    if args.jobs is not None and not 1 <= args.jobs <= 64:
        print("iiif-shim index: --jobs must be 1 to 64", file=sys.stderr)
        return 2
    try:
        settings = settings_from_environment(args.config)
    except ConfigError as exc:
        print(exc.report(), file=sys.stderr)
        return 2
    # the command names each refused file itself, once: the service's lines would repeat it
    logging.getLogger("iiif_shim.search.refused").setLevel(logging.ERROR)
    jobs = args.jobs or 1
    try:
        return asyncio.run(
            index(
                settings,
                tuple(args.source or ()),
                tuple(args.object or ()),
                args.force,
                jobs,
                sys.stderr,
                sys.stdout,
            )
        )
    except KeyboardInterrupt:
        print(
            "\nindex: interrupted; what was indexed is kept: run the same command again to go on",
            file=sys.stderr,
        )
        return INTERRUPTED


async def index(
    settings: Settings,
    sources: Sequence[str],
    objects: Sequence[str],
    force: bool,
    jobs: int,
    err: TextIO,
    out: TextIO,
) -> int:
    """One run; its exit status."""
    from iiif_shim.core.service import open_service
    from iiif_shim.presentation.service import SURVEY_TIMEOUT, open_presentation
    from iiif_shim.search.index import IndexUnavailable
    from iiif_shim.search.service import open_search

    known = settings.presentation.sources
    if not known:
        err.write(f"index: {settings.origin} has no object sources (presentation.sources)\n")
        return 2
    unknown = [name for name in sources if name not in known]
    if unknown:
        err.write(
            f"index: no object source named {unknown[0]!r} (presentation.sources has "
            f"{', '.join(map(repr, known))})\n"
        )
        return 2
    search_settings = replace(settings.search, build_concurrency=jobs)
    tally = Tally()
    progress = Progress(err, tally)
    read_timeout = settings.server.request_timeout
    list_timeout = max(read_timeout, SURVEY_TIMEOUT)
    async with (
        open_service(settings.service()) as images,
        open_presentation(
            settings.presentation, images, watch=False, policies=settings.auth.policies
        ) as presentation,
        open_search(search_settings, presentation, settings.origin) as search,
    ):
        chosen = [presentation.sources[name] for name in sources] or list(
            presentation.sources.values()
        )

        async def record_of(name: str, owner: Source | None) -> ObjectRecord | None:
            """Object ``name`` of ``owner``, else of the first source that has it."""
            async with asyncio.timeout(read_timeout):
                if owner is None:
                    return await presentation.record(name)
                return await presentation.record_in(owner, name)

        # the work: name, the source that lists it (None: any), whether it was named
        work: list[tuple[str, Source | None, bool]] = []
        every = not objects and not sources
        if objects:
            for name in objects:
                found = None
                for owner in chosen if sources else [None]:
                    try:
                        found = await record_of(name, owner)
                    except ShimError as exc:
                        if exc.status != 404:
                            progress.say(f"object {name!r} cannot be read: {exc.public_text()}")
                            return 1
                    except TimeoutError:
                        progress.say(f"object {name!r}: not read within {read_timeout:g}s")
                        return 1
                    if found is not None:
                        break
                if found is None:
                    where = f"source {', '.join(map(repr, sources))}" if sources else "any source"
                    progress.say(f"no object named {name!r} in {where}")
                    return 2
                work.append((name, owner, True))
        else:
            for source in chosen:
                try:
                    async with asyncio.timeout(list_timeout):
                        names = await source.names(MAX_NAMES)
                except ShimError as exc:
                    progress.say(f"source {source.name!r}: its list cannot be read: "
                                 f"{exc.public_text()}")  # fmt: skip
                    tally.failed += 1
                    every = False
                    continue
                except TimeoutError:
                    progress.say(f"source {source.name!r}: its list was not read within "
                                 f"{list_timeout:g}s")  # fmt: skip
                    tally.failed += 1
                    every = False
                    continue
                work.extend((name, source, False) for name in names)
        tally.listed = len(work)
        seen: set[str] = set()
        try:
            indexed = set(await search.indexed())
        except IndexUnavailable as exc:
            progress.say(f"the search index cannot be read: {_trouble(exc)}")
            return 1
        broken: list[IndexUnavailable] = []

        async def one(name: str, owner: Source | None, named: bool) -> None:
            seen.add(name)  # its source lists it: kept in the index, whatever comes of it
            try:
                record = await record_of(name, owner if named else None)
            except ShimError as exc:
                if exc.status != 404 or named:  # (a listed object it cannot serve: a 404)
                    progress.say(f"object {name!r} cannot be read: {exc.public_text()}")
                    tally.failed += 1
                return
            except TimeoutError:
                progress.say(f"object {name!r}: not read within {read_timeout:g}s")
                tally.failed += 1
                return
            if record is None:
                return
            if owner is not None and record.source != owner.name:
                return  # an earlier source's object of the same name: indexed under it
            if not record.has_text:
                if name in indexed:
                    await search.drop(name)
                    tally.dropped += 1
                elif named:
                    progress.say(f"object {name!r} has no text: nothing to index")
                return
            try:
                pages = sum(canvas.text is not None for canvas in record.canvases)
                tally.running[name] = (0, pages)

                def page_done(count: int) -> None:
                    tally.done += count
                    done, total = tally.running.get(name, (0, pages))
                    tally.running[name] = (done + count, total)
                    progress.tick()

                report = await search.index_object(record, force=force, progress=page_done)
            except IndexUnavailable:
                raise
            except ShimError as exc:
                progress.say(f"object {name!r} not indexed: {exc.public_text()}")
                tally.failed += 1
                return
            tally.pages += report.pages
            tally.skipped += report.skipped
            tally.removed += report.removed
            for refusal in report.refused:
                where = f"{refusal.name} (object {name!r}, canvas {refusal.canvas + 1})"
                if refusal.remembered:
                    tally.refused += 1
                    progress.say(f"refused {where}: {refusal.reason}")
                else:
                    tally.unread += 1
                    progress.say(f"{where}: {refusal.reason} (read at the next run)")

        gate = asyncio.Semaphore(jobs)

        async def held(name: str, owner: Source | None, named: bool) -> None:
            try:
                await one(name, owner, named)
            except IndexUnavailable as exc:  # the run stops: nothing more can be written
                broken.append(exc)
            except Exception:  # one object's failure never ends the run without a word
                log.exception("indexing object %r failed", name)
                progress.say(f"object {name!r} not indexed: an error (logged above)")
                tally.failed += 1
            finally:
                tally.running.pop(name, None)
                tally.objects += 1
                progress.tick()
                gate.release()

        running: set[asyncio.Task[None]] = set()
        try:
            for name, owner, named in work:
                await gate.acquire()
                if broken:
                    gate.release()
                    break
                task = asyncio.ensure_future(held(name, owner, named))
                running.add(task)
                task.add_done_callback(running.discard)
            await asyncio.gather(*running)
            if broken:
                raise broken[0]
            if every:  # the objects no source lists any more
                for name in sorted(indexed - seen):
                    await search.drop(name)
                    tally.dropped += 1
        except IndexUnavailable as exc:
            for task in running:
                task.cancel()
            progress.finish()
            progress.say(f"the search index cannot be written: {_trouble(exc)}")
            return 1
        progress.finish()
    seconds = time.monotonic() - tally.started
    rate = tally.pages / seconds if seconds > 0 else 0.0
    out.write(
        redaction.redact(
            f"indexed: {tally.objects} objects, {tally.pages} pages indexed, {tally.skipped} "
            f"unchanged, {tally.refused} refused, {tally.unread} not read now, "
            f"{tally.removed} pages and {tally.dropped} objects dropped, {tally.failed} "
            f"objects or sources not read, in {seconds:.1f}s ({rate:.1f} pages/s)"
        )
        + "\n"
    )
    return 1 if tally.refused or tally.unread or tally.failed else 0


def _trouble(exc: ShimError) -> str:
    """What is wrong with the index, for its operator: the public message and the detail the
    server logs (the engine's own error: refused connection, bad option, damaged file; a
    password in it is masked where it is made, and again when it is printed), on one line."""
    text = exc.public_text()
    return f"{text} ({' '.join(exc.detail.split())})" if exc.detail else text
