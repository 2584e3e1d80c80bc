"""The ``iiif-shim`` command: ``serve``, ``check-config``, ``probe`` and ``purge``."""

from __future__ import annotations

import argparse
import asyncio
import logging
import sys
from collections.abc import Sequence
from dataclasses import replace

from iiif_shim import __version__
from iiif_shim.backends.registry import backend_for
from iiif_shim.base.errors import ConfigError
from iiif_shim.config.settings import CONFIG_ENV, Settings, load_settings, settings_from_environment


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

    check = sub.add_parser("check-config", help="validate a config file and exit")
    check.add_argument("file")

    probe = sub.add_parser(
        "probe",
        help="report what happens to one identifier: route, "
        "backend, metadata, native or Pillow per feature, a sample timing",
    )
    probe.add_argument("--config", help="YAML config (default as for serve)")
    probe.add_argument("identifier", nargs="?", help="an image identifier")
    probe.add_argument(
        "--object", metavar="NAME", help="report an object instead: its source and canvases"
    )

    purge = sub.add_parser(
        "purge",
        help="remove one image's facts and rendered images (or everything) from the disk and "
        "Redis cache tiers and from the memory of running processes",
    )
    purge.add_argument("--config", help="YAML config (default as for serve)")
    purge.add_argument("identifier", nargs="?", help="an image identifier")
    purge.add_argument("--all", action="store_true", help="every image")
    return parser


def _summary(settings: Settings) -> list[str]:
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
        lines.append(f"  presentation source {name} ({source.type_name})")
    return lines


def _warnings(settings: Settings) -> list[str]:
    return [f"warning: {path}: {message}" for path, message in settings.warnings]


def check_config(file: str) -> int:
    try:
        settings = load_settings(file)
    except ConfigError as exc:
        print(exc.report(), file=sys.stderr)
        return 1
    print(f"{file}: OK")
    for line in _summary(settings) + _warnings(settings):
        print(line)
    return 0


def _worker_command(args: argparse.Namespace) -> list[str]:
    """How a supervisor starts a worker: this command again. It reads no configuration file:
    the supervisor hands it the configuration it runs (``WorkerRole.settings_file``)."""
    return [sys.executable, "-m", "iiif_shim", "serve", "--log-level", args.log_level]


def _logging(level: str, many: bool) -> None:
    logging.basicConfig(
        level=level.upper(),
        format="%(asctime)s %(levelname)s %(name)s"
        + ("[%(process)d]" if many else "")
        + ": %(message)s",
    )


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
    try:
        settings = settings_from_environment(args.config)
    except ConfigError as exc:
        print(exc.report(), file=sys.stderr)
        return 2
    from iiif_shim.cli.probe import report, report_object

    if (args.identifier is None) == (args.object is None):
        print("iiif-shim probe: give an identifier or --object NAME", file=sys.stderr)
        return 2
    if args.object is not None:
        lines, ok = asyncio.run(report_object(settings, args.object))
        print(f"object: {args.object!r} ({settings.origin})")
    else:
        lines, ok = asyncio.run(report(settings, args.identifier))
        print(f"identifier: {args.identifier!r} ({settings.origin})")
    for line in lines:
        print(line)
    return 0 if ok else 1


def purge(args: argparse.Namespace) -> int:
    from iiif_shim.base.errors import ShimError
    from iiif_shim.cache.entry import source_key
    from iiif_shim.cache.facade import purge_everywhere
    from iiif_shim.cache.journal import RUN_DIR_ENV, journal_paths
    from iiif_shim.core.routing import Router

    if (args.identifier is None) == (not args.all):
        print("iiif-shim purge: give an identifier or --all", file=sys.stderr)
        return 2
    try:
        settings = settings_from_environment(args.config)
    except ConfigError as exc:
        print(exc.report(), file=sys.stderr)
        return 2
    cache = settings.cache
    if cache.redis is None and not journal_paths(cache):
        print(
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
            print(f"iiif-shim purge: {args.identifier!r}: {exc.public_text()}", file=sys.stderr)
            return 2
        source = source_key(target.backend, target.native_id)
    report = asyncio.run(purge_everywhere(cache, source))
    ok = report.pop("ok")
    what = repr(args.identifier) if source else "every image"
    print(f"purged {what} ({settings.origin}):")
    for tier, outcome in report.items():
        text = str(outcome)
        if not text.startswith(("failed", "unreachable")):
            text = _PURGED.get(tier, "{}").format(outcome)
        print(f"  {tier}: {text}")
    return 0 if ok else 1


_PURGED = {
    "disk": "{} entries removed (images and facts)",
    "redis": "{} keys removed",
    "notified": "{} running processes told through Redis",
    "journal": "written to {} (running processes read it within a second)",
}


def main(argv: Sequence[str] | None = None) -> int:
    args = _parser().parse_args(argv)
    if args.command == "check-config":
        return check_config(args.file)
    if args.command == "probe":
        return probe(args)
    if args.command == "purge":
        return purge(args)
    return serve(args)
