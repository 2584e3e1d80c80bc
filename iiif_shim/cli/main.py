"""The ``iiif-shim`` command: ``serve``, ``check-config``, ``probe``, ``purge``, ``export``
(a level-0 static copy: ``export/command.py``) and ``index`` (the objects' text indexed for
search ahead of time: ``cli/index.py``).

``check-config`` reads the settings and then every object source through (a local CSV file
and a folder whole; a CSV URL, a JSON or a CONTENTdm catalogue its list, as far as
``presentation.collection_limit``, and its first CHECK_REMOTE objects), the sources at the
same time, each request within its own timeouts and the whole check within CHECK_TIMEOUT (a
source not read by then is a problem naming the limit). A problem (exit 1): a source that
cannot be read (its list, or every object read failed), lacks its `object` or `image` column
or has one twice, has objects none of which can be served, and, with
``presentation.strict``, any value an object cannot use. ``--sources`` lists every value, row
and object left out, with its file, line and column; ``--format json`` gives the same as JSON,
in one shape whatever the outcome (``config``, ``ok``, ``problems``, ``warnings``,
``sources``). The shim's own log lines below errors are not shown: the report says it all,
once.

No secret of the configuration is ever printed (``base/redaction.py``): the reports of
``check-config``, ``probe`` and ``purge`` go through it line by line, every log record of
every command (``serve``'s workers too) is redacted as it is made, and so is every other write
to stdout and stderr (``print``, an uncaught exception, a warning): :func:`main` installs both
before anything else, and the secrets remembered as the settings are read count from then on.
"""

from __future__ import annotations

import argparse
import asyncio
import json
import logging
import os
import sys
from collections.abc import Mapping, Sequence
from dataclasses import replace
from typing import TextIO

from iiif_shim import __version__
from iiif_shim.backends.registry import backend_for
from iiif_shim.base import redaction
from iiif_shim.base.errors import ConfigError
from iiif_shim.cli import index as index_command
from iiif_shim.config.settings import CONFIG_ENV, Settings, load_settings, settings_from_environment
from iiif_shim.export import command as export_command
from iiif_shim.presentation.sources.base import Survey


def _parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(
        prog="iiif-shim",
        description="IIIF Image API 3.0 and 2.1 in front of an existing image server.",
    )
    parser.add_argument("--version", action="version", version=f"iiif-shim {__version__}")
    sub = parser.add_subparsers(dest="command", required=True)

    serve = sub.add_parser("serve", help="run the server")
    serve.add_argument(
        "--config",
        help=f"YAML config (default: ${CONFIG_ENV}, else the embedded default with sample images)",
    )
    serve.add_argument("--host", help="override server.host")
    serve.add_argument("--port", type=int, help="override server.port")
    serve.add_argument(
        "--processes", type=int, metavar="N", help="override server.processes (0: one per CPU)"
    )
    serve.add_argument("--log-level", default="info", choices=["debug", "info", "warning", "error"])

    check = sub.add_parser(
        "check-config", help="validate a config file and read every object source, then exit"
    )
    check.add_argument("file")
    check.add_argument(
        "--sources",
        action="store_true",
        help="list every bad value, row and object of the object sources (file, line, column)",
    )
    check.add_argument(
        "--format", choices=["text", "json"], default="text", help="json: the report as JSON"
    )
    check.add_argument("--json", action="store_true", help="the same as --format json")

    probe = sub.add_parser(
        "probe",
        help="report what happens to one identifier: route, "
        "backend, metadata, native or Pillow per feature, a sample timing",
    )
    probe.add_argument("--config", help="YAML config (default as for serve)")
    probe.add_argument(
        "identifier", nargs="?", help="an image identifier, decoded: a/b (not a%%2Fb as in URLs)"
    )
    probe.add_argument(
        "--object", metavar="NAME", help="report an object instead: its source and canvases"
    )

    purge = sub.add_parser(
        "purge",
        help="remove one image's facts and rendered images (or everything) from the disk and "
        "Redis cache tiers and from the memory of running processes",
    )
    purge.add_argument("--config", help="YAML config (default as for serve)")
    purge.add_argument(
        "identifier", nargs="?", help="an image identifier, decoded: a/b (not a%%2Fb as in URLs)"
    )
    purge.add_argument("--all", action="store_true", help="every image")
    export_command.add_parser(sub)
    index_command.add_parser(sub)
    return parser


def _summary(settings: Settings, surveys: Mapping[str, Survey] | None = None) -> list[str]:
    lines = []
    for name, spec in settings.backends.items():
        backend = backend_for(name, spec)
        words = backend.capabilities().natively()
        natively = backend.native_note or ", ".join(words) or "the whole source image only"
        lines.append(
            f"  backend {name} ({spec.type_name}): natively {natively}; Pillow does the rest"
        )
    for i, route in enumerate(settings.routes):
        match = route.match.pattern if route.match else "(every identifier)"
        lines.append(f"  routes[{i}]: {match} -> {route.backend} as {route.id}")
    for name, source in settings.presentation.sources.items():
        read = f": {_source_line(surveys[name])}" if surveys and name in surveys else ""
        lines.append(f"  presentation source {name} ({source.type_name}){read}")
    return lines


def _warnings(settings: Settings) -> list[str]:
    return [f"warning: {path}: {message}" for path, message in settings.warnings]


CHECK_REMOTE = 50  # objects of a remote catalogue check-config reads (besides its list)
CHECK_TIMEOUT = 300.0  # seconds check-config gives all object sources together
MAX_CHECKED = 10_000_000  # object names a check reads of one source


async def survey_sources(settings: Settings) -> dict[str, Survey]:
    """Every object source read through (a remote one: its list and first objects), all at
    once, within CHECK_TIMEOUT together; a source that fails is a Survey with its error."""
    from iiif_shim.base.errors import RenderTimeout, ShimError
    from iiif_shim.cache.settings import CacheSettings
    from iiif_shim.core.service import open_service
    from iiif_shim.presentation.service import open_presentation

    service_settings = replace(settings.service(), cache=CacheSettings())  # no cache tiers
    collection_limit = settings.presentation.collection_limit
    threads = min(len(settings.presentation.sources), os.cpu_count() or 1)
    async with (
        open_service(service_settings) as service,
        open_presentation(
            settings.presentation, service, watch=False, survey_threads=threads
        ) as presentation,
    ):

        async def one(name: str) -> Survey:
            source = presentation.sources[name]
            # a remote one: the list its collection shows, and its first objects
            limit = collection_limit if source.remote else MAX_CHECKED
            read = CHECK_REMOTE if source.remote else None
            try:
                return await source.survey(limit, read)
            except RenderTimeout:  # a job in the thread pool past server.request_timeout
                error = (
                    f"not read within server.request_timeout ({settings.server.request_timeout:g}s)"
                )
            except ShimError as exc:
                error = exc.public_text()
            except Exception as exc:  # a check reports; it never ends in a traceback
                error = f"reading it failed ({type(exc).__name__}: {exc})"
            return Survey(name, source.type_name, error=error)

        names = list(presentation.sources)
        tasks = [asyncio.ensure_future(one(name)) for name in names]
        await asyncio.wait(tasks, timeout=CHECK_TIMEOUT)
        found: dict[str, Survey] = {}
        for name, task in zip(names, tasks, strict=True):
            if task.done():
                found[name] = task.result()
                continue
            task.cancel()  # its survey thread's job stops at its next object
            error = f"not read within {CHECK_TIMEOUT:g}s (check-config's limit for all sources)"
            found[name] = Survey(name, presentation.sources[name].type_name, error=error)
        await asyncio.gather(*tasks, return_exceptions=True)
    return found


def _fatal(survey: Survey, strict: bool) -> str | None:
    """Why ``survey`` fails the check, or None."""
    if survey.error is not None:
        detail = f" ({survey.detail})" if survey.detail else ""
        return f"cannot be read: {survey.error}{detail}"
    if survey.read and survey.unusable == survey.read:
        return (
            f"none of the {_n(survey.read, 'object')} read can be served "
            "(check-config --sources lists why)"
        )
    if strict and (survey.cells or survey.rows or survey.columns or survey.unusable):
        return (
            f"presentation.strict: {_n(survey.affected + survey.unusable, 'object')} refused "
            "(check-config --sources lists why)"
        )
    return None


def _source_warnings(surveys: Mapping[str, Survey]) -> list[str]:
    """What does not fail the check but an operator should know."""
    out = []
    for name, survey in surveys.items():
        if survey.error is None and survey.objects == 0:
            out.append(f"presentation.sources.{name}: has no objects")
        if survey.stale is not None:
            out.append(f"presentation.sources.{name}: an old copy is in use ({survey.stale})")
        if survey.open_images:  # (--sources lists them)
            out.append(f"presentation.sources.{name}: {_n(survey.open_images, 'object')} with "
                       "an access that guards only the PDF, text and search: their images "
                       "are on public routes, so they are public; give their route `access` "
                       "too")  # fmt: skip
        if survey.texts:  # (--sources lists them)
            out.append(f"presentation.sources.{name}: {_n(survey.texts, 'text file')} cannot be "
                       "read (not there, or outside the folder): those pages have no text "
                       "(check-config --sources lists them)")  # fmt: skip
    return out


def _n(count: int, noun: str) -> str:
    """``1 object``, ``2 objects``."""
    return f"{count} {noun}{'' if count == 1 else 's'}"


def _source_line(survey: Survey) -> str:
    if survey.error is not None:
        return f"CANNOT BE READ: {survey.error}"
    read = f"{_n(survey.read, 'object')} read"
    if survey.read < survey.objects or not survey.complete:
        more = "+" if survey.objects and not survey.complete else ""
        read += f" (its first ones, of {survey.objects}{more} listed)"
    left = [
        _n(n, what)
        for n, what in ((survey.cells, "value"), (survey.rows, "row"), (survey.columns, "column"))
        if n
    ]
    notes = []
    if left:
        notes.append(f"{', '.join(left)} left out in {_n(survey.affected, 'object')}")
    if survey.unusable:
        notes.append(f"{_n(survey.unusable, 'object')} not served")
    if survey.notes:
        notes.append(f"{_n(survey.notes, 'value')} shown as written (not dates)")
    if not notes:
        return read
    return f"{read}; {'; '.join(notes)} (check-config --sources lists them)"


def _problem_lines(survey: Survey) -> list[str]:
    lines = []
    for p in survey.problems:
        column = f", column {p.column!r}" if p.column else ""
        named = f"object {p.object!r}"
        owner = f" ({named})" if p.object and named not in p.reason else ""
        what = _KINDS.get(p.kind, f"{p.kind} left out")
        lines.append(f"    {p.where}{column}: {p.reason}{owner} [{what}]")
    if survey.hidden > 0:
        lines.append(f"    ... and {survey.hidden} more")
    return lines


_KINDS = {
    "object": "object not served",
    "note": "note",
    "access": "its images are public",
    "text": "that page has no text",
}


def _quiet() -> None:
    """The shim's own log lines below errors not shown: the command's report says it all."""
    logging.getLogger("iiif_shim").setLevel(logging.ERROR)


def _say(text: str, file: TextIO | None = None) -> None:
    """Print a line of a command's report, the configuration's secrets replaced by ``***``."""
    print(redaction.redact(text), file=file or sys.stdout)


def check_config(file: str, sources: bool = False, as_json: bool = False) -> int:
    _quiet()
    try:
        settings = load_settings(file)
    except ConfigError as exc:
        if as_json:
            problems = [f"{path}: {msg}" if path else msg for path, msg in exc.problems]
            doc = {"config": file, "ok": False, "problems": problems, "warnings": [],
                   "sources": {}}  # fmt: skip
            _say(json.dumps(redaction.scrub(doc), ensure_ascii=False, indent=1))
        else:
            _say(exc.report(), file=sys.stderr)
        return 1
    surveys = asyncio.run(survey_sources(settings)) if settings.presentation.sources else {}
    strict = settings.presentation.strict
    fatal = {name: why for name, s in surveys.items() if (why := _fatal(s, strict)) is not None}
    if as_json:
        doc = {
            "config": file,
            "ok": not fatal,
            "problems": [f"presentation.sources.{name}: {why}" for name, why in fatal.items()],
            "warnings": [f"{path}: {message}" for path, message in settings.warnings]
            + _source_warnings(surveys),
            "sources": {name: s.as_json() for name, s in surveys.items()},
        }
        _say(json.dumps(redaction.scrub(doc), ensure_ascii=False, indent=1))
        return 1 if fatal else 0
    if fatal:
        plural = "s" if len(fatal) > 1 else ""
        _say(f"{file}: {len(fatal)} problem{plural}:", file=sys.stderr)
        for name, why in fatal.items():
            _say(f"  presentation.sources.{name}: {why}", file=sys.stderr)
    else:
        _say(f"{file}: OK")
    heads = {f"  presentation source {name} (": name for name in surveys}
    for line in _summary(settings, surveys):
        _say(line)
        shown = next((name for head, name in heads.items() if line.startswith(head)), None)
        if sources and shown is not None:
            for problem in _problem_lines(surveys[shown]):
                _say(problem)
    for line in _warnings(settings):
        _say(line)
    for line in _source_warnings(surveys):
        _say(f"warning: {line}")
    return 1 if fatal else 0


def _worker_command(args: argparse.Namespace) -> list[str]:
    """How a supervisor starts a worker: this command again. It reads no configuration file:
    the supervisor hands it the configuration it runs (``WorkerRole.settings_fd``)."""
    return [sys.executable, "-m", "iiif_shim", "serve", "--log-level", args.log_level]


def _logging(level: str, many: bool) -> None:
    """Log lines to stderr, every one (any logger's, debug included) with the configuration's
    secrets replaced by ``***`` (``base/redaction.py``). Pillow's own debug lines (a line for
    each tag and chunk of every file it opens) are left out at ``debug``: they drown the
    shim's."""
    logging.basicConfig(
        level=level.upper(),
        format="%(asctime)s %(levelname)s %(name)s"
        + ("[%(process)d]" if many else "")
        + ": %(message)s",
    )
    logging.getLogger("PIL").setLevel(max(logging.INFO, logging.getLogger().level))
    redaction.install()


def serve(args: argparse.Namespace) -> int:
    from iiif_shim.process.supervisor import WorkerRole, resolve_processes

    role = WorkerRole.from_environment()  # set when a supervisor started this process
    if role is not None:  # its configuration is the supervisor's, never the file's
        _logging(args.log_level, many=True)
        try:
            settings = role.settings()
        except Exception as exc:
            print(f"iiif-shim: worker {role.index}: no configuration: {exc}", file=sys.stderr)
            return 2
        # it read no YAML: the secrets of the settings it was handed are never printed either
        redaction.remember_all(redaction.secrets_of(settings))
        from iiif_shim.process.server import serve as run

        return run(settings, None, role)
    if args.port is not None and not 0 <= args.port <= 65535:
        print(f"iiif-shim: --port {args.port} is out of range (0 to 65535)", file=sys.stderr)
        return 2
    if args.processes is not None and not 0 <= args.processes <= 256:
        print(
            f"iiif-shim: --processes {args.processes} is out of range (0 to 256)", file=sys.stderr
        )
        return 2

    def load() -> Settings:  # at start, and again on SIGHUP, with the same overrides
        settings = settings_from_environment(args.config).with_overrides(args.host, args.port)
        if args.processes is not None:
            settings = replace(settings, server=replace(settings.server, processes=args.processes))
        return settings

    try:
        settings = load()
    except ConfigError as exc:
        print(exc.report(), file=sys.stderr)
        return 2
    many = resolve_processes(settings) > 1
    _logging(args.log_level, many)
    for line in _warnings(settings):
        logging.getLogger("iiif_shim").warning(line)
    if many:
        from iiif_shim.process.supervisor import supervise

        return supervise(settings, load, _worker_command(args))
    from iiif_shim.process.server import (
        serve as run,  # imported late: check-config needs no aiohttp app
    )

    return run(settings, load, None)


def probe(args: argparse.Namespace) -> int:
    _quiet()
    try:
        settings = settings_from_environment(args.config)
    except ConfigError as exc:
        _say(exc.report(), file=sys.stderr)
        return 2
    from iiif_shim.cli.probe import report, report_object

    if (args.identifier is None) == (args.object is None):
        _say("iiif-shim probe: give an identifier or --object NAME", file=sys.stderr)
        return 2
    if args.object is not None:
        lines, ok = asyncio.run(report_object(settings, args.object))
        _say(f"object: {args.object!r} ({settings.origin})")
    else:
        lines, ok = asyncio.run(report(settings, args.identifier))
        _say(f"identifier: {args.identifier!r} ({settings.origin})")
    for line in lines:
        _say(line)
    return 0 if ok else 1


def purge(args: argparse.Namespace) -> int:
    from iiif_shim.base.errors import ShimError
    from iiif_shim.cache.entry import source_key
    from iiif_shim.cache.facade import purge_everywhere
    from iiif_shim.cache.journal import RUN_DIR_ENV, journal_paths
    from iiif_shim.core.routing import Router

    if (args.identifier is None) == (not args.all):
        _say("iiif-shim purge: give an identifier or --all", file=sys.stderr)
        return 2
    try:
        settings = settings_from_environment(args.config)
    except ConfigError as exc:
        _say(exc.report(), file=sys.stderr)
        return 2
    cache = settings.cache
    if cache.redis is None and not journal_paths(cache):
        _say(
            "iiif-shim purge: this configuration has neither cache.disk nor cache.redis (and "
            f"${RUN_DIR_ENV} is not set), so running processes cannot be reached from here; "
            "use their endpoint instead: DELETE /admin/cache/{identifier} with "
            "Authorization: Bearer <cache.purge_token>",
            file=sys.stderr,
        )
        return 2
    source = None
    if args.identifier is not None:
        try:
            target = Router(settings.routes).route(args.identifier)
        except ShimError as exc:
            _say(f"iiif-shim purge: {args.identifier!r}: {exc.public_text()}", file=sys.stderr)
            return 2
        source = source_key(target.backend, target.native_id)
    report = asyncio.run(purge_everywhere(cache, source))
    ok = report.pop("ok")
    what = repr(args.identifier) if source else "every image"
    _say(f"purged {what} ({settings.origin}):")
    for tier, outcome in report.items():
        text = str(outcome)
        if not text.startswith(("failed", "unreachable")):
            text = _PURGED.get(tier, "{}").format(outcome)
        _say(f"  {tier}: {text}")
    return 0 if ok else 1


_PURGED = {
    "disk": "{} entries removed (images and facts)",
    "redis": "{} keys removed",
    "notified": "{} running processes told through Redis",
    "journal": "written to {} (running processes read it within a second)",
}


def main(argv: Sequence[str] | None = None) -> int:
    args = _parser().parse_args(argv)
    redaction.install()  # every log record and stdout/stderr, before (or without) _logging too
    if args.command == "check-config":
        as_json = args.json or args.format == "json"
        return check_config(args.file, args.sources or as_json, as_json)
    if args.command == "probe":
        return probe(args)
    if args.command == "purge":
        return purge(args)
    if args.command == "export":
        _logging(args.log_level, many=False)
        return export_command.main(args)
    if args.command == "index":
        _logging(args.log_level, many=False)
        return index_command.main(args)
    return serve(args)
