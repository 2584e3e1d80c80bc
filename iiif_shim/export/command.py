"""The ``iiif-shim export`` command line: its arguments, their checks, and SIGINT.

``--base-url`` is checked by the rule of ``server.public_url`` (``config/settings.py``,
:func:`~iiif_shim.config.settings.public_url_problem`) before anything is read: a bad one is
exit 2 with one line. Log lines go through the CLI's one logging setup (``cli/main.py``).

The first SIGINT (Ctrl-C) stops the export promptly: files being made are finished or removed
(only complete files exist under their names, ``files.py``), nothing more is started, and the
command exits 130; the same command run again resumes. A second SIGINT ends it at once.
"""

from __future__ import annotations

import argparse
import asyncio
import contextlib
import re
import signal
import sys
from collections.abc import Coroutine
from pathlib import Path
from typing import Any

from iiif_shim.base.errors import ConfigError
from iiif_shim.config.settings import (
    CONFIG_ENV,
    public_url_problem,
    settings_from_environment,
)
from iiif_shim.iiif.profile import Version

INTERRUPTED = 130
_APIS = {"3": (Version.V3,), "2": (Version.V2,), "both": (Version.V3, Version.V2)}


def add_parser(sub: argparse._SubParsersAction[argparse.ArgumentParser]) -> None:
    parser = sub.add_parser(
        "export",
        help="write a level-0 static copy of images and objects (info.json, tiles, sizes, "
        "manifests, collections) that any web server or bucket can serve",
    )
    parser.add_argument(
        "--config", help=f"YAML config (default: ${CONFIG_ENV}, else the embedded default)"
    )
    what = parser.add_mutually_exclusive_group(required=True)
    what.add_argument(  # repeated, they add up (--identifier a --identifier b: both)
        "--identifier",
        action="extend",
        nargs="+",
        metavar="ID",
        help="images by identifier, decoded: a/b",
    )
    what.add_argument(
        "--object", action="extend", nargs="+", metavar="NAME", help="objects by name"
    )
    what.add_argument("--source", action="append", metavar="NAME", help="every object of a source")
    what.add_argument("--all", action="store_true", help="every object of every source")
    parser.add_argument("--to", required=True, metavar="DIR", help="the folder to write")
    parser.add_argument(
        "--base-url",
        required=True,
        metavar="URL",
        help="the public URL DIR is served at (https://static.example.org); ids are built on it",
    )
    parser.add_argument(
        "--api", choices=list(_APIS), default="both", help="Image and Presentation API versions"
    )
    parser.add_argument(
        "--dry-run",
        action="store_true",
        help="print the estimate of files and bytes, write nothing",
    )
    parser.add_argument(
        "--tile-size",
        type=int,
        metavar="N",
        help="tiles of N x N (default: a backend's native tiles, else iiif.tile_size)",
    )
    parser.add_argument(
        "--jobs",
        type=int,
        metavar="N",
        help="files made at once (default: server.processes x server.workers, from the machine)",
    )
    parser.add_argument("--log-level", default="warning", choices=["debug", "info", "warning"])


def main(args: argparse.Namespace) -> int:
    """The export ``args`` ask for; its exit status. The CLI has set up logging."""
    problem = public_url_problem(args.base_url)
    if problem is not None:
        shown = re.sub(r"(?<=//)[^/@]*@", "***@", args.base_url)  # a password never echoed
        print(
            f"iiif-shim export: --base-url {shown!r} {problem} (the rule of server.public_url)",
            file=sys.stderr,
        )
        return 2
    base = args.base_url.rstrip("/")
    if args.tile_size is not None and not 16 <= args.tile_size <= 8192:
        print("iiif-shim export: --tile-size must be 16 to 8192", file=sys.stderr)
        return 2
    if args.jobs is not None and not 1 <= args.jobs <= 1024:
        print("iiif-shim export: --jobs must be 1 to 1024", file=sys.stderr)
        return 2
    from iiif_shim.export.run import ExportOptions, export  # late: --help needs no services

    try:
        settings = settings_from_environment(args.config)
    except ConfigError as exc:
        print(exc.report(), file=sys.stderr)
        return 2
    options = ExportOptions(
        folder=Path(args.to),
        base_url=base,
        versions=_APIS[args.api],
        identifiers=tuple(args.identifier or ()),
        objects=tuple(args.object or ()),
        sources=tuple(args.source or ()),
        everything=args.all,
        dry_run=args.dry_run,
        tile_size=args.tile_size,
        jobs=args.jobs,
    )
    try:
        return asyncio.run(_interruptible(export(settings, options, sys.stderr, sys.stdout)))
    except KeyboardInterrupt:  # the second SIGINT
        return INTERRUPTED


async def _interruptible(work: Coroutine[Any, Any, int]) -> int:
    """``work``'s status; 130 when SIGINT cancelled it (its clean-up done)."""
    loop = asyncio.get_running_loop()
    task = asyncio.ensure_future(work)
    interrupted = False

    def stop() -> None:
        nonlocal interrupted
        interrupted = True
        loop.remove_signal_handler(signal.SIGINT)  # a second one: KeyboardInterrupt at once
        print("\nexport: interrupted; finishing the files being written", file=sys.stderr)
        task.cancel()

    loop.add_signal_handler(signal.SIGINT, stop)
    try:
        result: int = await task
        return result
    except asyncio.CancelledError:
        if not interrupted:
            raise
        print(
            "export: stopped; every file there is complete: run the same command again to resume",
            file=sys.stderr,
        )
        return INTERRUPTED
    finally:
        with contextlib.suppress(RuntimeError):  # the loop closing
            loop.remove_signal_handler(signal.SIGINT)
