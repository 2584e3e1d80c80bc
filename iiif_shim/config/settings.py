"""YAML configuration -> frozen, typed settings, validated up front.

``load_settings(path)`` reads a file and returns :class:`Settings` or raises ``ConfigError``
listing every problem with its YAML path (``backends.archive.url: required``), unknown keys with
a "did you mean". Relative paths are relative to the file's own folder. The embedded default
(bundled config and sample images) is used when no file is given.
"""

from __future__ import annotations

import difflib
import importlib.util
import os
import re
import string
from collections.abc import Mapping
from dataclasses import dataclass, field, replace
from importlib import resources
from pathlib import Path
from types import MappingProxyType
from typing import Any
from urllib.parse import urlsplit

import yaml

from iiif_shim.backends import BACKEND_TYPES
from iiif_shim.base.errors import ConfigError, ShimError
from iiif_shim.base.schema import Reader, at_least, between, option
from iiif_shim.core.routing import Router, anchored, slashed
from iiif_shim.iiif.profile import RIGHTS_RE
from iiif_shim.imaging.engine import ENGINES, VIPS_STEPS, vips_missing
from iiif_shim.imaging.pillow import PILLOW_GUARD_PIXELS
from iiif_shim.presentation.settings import PresentationSettings
from iiif_shim.presentation.sources import SOURCE_TYPES, ConfigView
from iiif_shim.presentation.viewers import ViewerSettings
from iiif_shim.process import eventloop

CONFIG_ENV = "IIIF_SHIM_CONFIG"
_SMALL_SHARE = 128 * 1024 * 1024  # bytes of decoded pixels per process, below which we warn
_NAME_RE = re.compile(r"[A-Za-z0-9_-]+")
_PREFIX_RE = re.compile(r"(/[A-Za-z0-9._~!$'()*+,;=:@-]+)*")


def _public_url(value: str) -> str | None:
    split = urlsplit(value)
    if split.scheme not in ("http", "https") or not split.hostname:
        return "must be an http:// or https:// URL"
    if split.query or split.fragment:
        return "must not have a query or fragment"
    return None


def _prefix(value: str) -> str | None:
    if value.endswith("/") or not _PREFIX_RE.fullmatch(value):
        return "must be empty or start with '/', have no trailing '/' and only URL-safe characters"
    return None


def _rights(value: str) -> str | None:
    if RIGHTS_RE.fullmatch(value):
        return None
    return (
        "must be a Creative Commons or RightsStatements.org URI in its http:// form, "
        "e.g. http://creativecommons.org/licenses/by/4.0/"
    )


@dataclass(frozen=True)
class ServerSettings:
    host: str = option("127.0.0.1", doc="address to listen on")
    port: int = option(8182, doc="port to listen on", check=between(0, 65535))
    public_url: str | None = option(
        None,
        doc="scheme+host(+path) put in front of the prefix in every `id`",
        check=lambda v: None if v is None else _public_url(v),
    )
    trust_forwarded: bool = option(
        False, doc="use X-Forwarded-Proto/Host/Port/Prefix and Forwarded for `id`s"
    )
    cache_control: str = option(
        "public, max-age=86400", doc="Cache-Control of images and info.json (empty: none)"
    )
    processes: int = option(
        0,
        doc="processes serving the port, each with its own event loop (0: one per CPU)",
        check=between(0, 256),
    )
    workers: int = option(
        0,
        doc="threads for image work in each process (0: CPUs / processes, at least 1)",
        check=at_least(0),
    )
    max_pending: int = option(
        64, doc="image jobs queued or running before new ones get 503", check=at_least(1)
    )
    request_timeout: float = option(
        60.0,
        doc="seconds any request may take, all stages included (then 503)",
        check=at_least(1),
    )
    memory_budget: int = option(
        1024 * 1024 * 1024,
        doc="bytes of decoded pixels all requests together may hold (decoded-source cache "
        "apart; with N processes each gets 1/N); past it requests wait, then get 503",
        check=at_least(16 * 1024 * 1024),
    )
    memory_wait: float = option(
        10.0, doc="seconds a request waits for decoded-pixel memory (then 503)", check=at_least(0)
    )
    max_client_connections: int = option(
        0,
        doc="open client connections; past it new ones get 503 (0: what the open-file limit "
        "leaves after backends and files)",
        check=at_least(0),
    )
    header_timeout: float = option(
        10.0,
        doc="seconds a client has to send a request's line and headers (then 408 and closed)",
        check=at_least(0.1),
    )
    body_timeout: float = option(
        30.0, doc="seconds a client has to send a request body (then closed)", check=at_least(0.1)
    )
    keepalive_timeout: float = option(
        15.0, doc="seconds an idle keep-alive connection stays open", check=at_least(0.1)
    )
    max_request_line: int = option(
        8190, doc="bytes of a request line (longer: 414)", check=between(1024, 65536)
    )
    max_header_bytes: int = option(
        32768, doc="bytes of a request's head (larger: 431)", check=between(1024, 1048576)
    )
    max_headers: int = option(
        100, doc="header lines per request (more: 431)", check=between(8, 1000)
    )
    shutdown_timeout: float = option(
        30.0,
        doc="seconds requests in flight get to finish after SIGTERM or SIGINT",
        check=at_least(0),
    )
    access_log: str = option(
        "combined",
        doc="access log format: `combined`, `json` or `none`",
        check=lambda v: None if v in ("combined", "json", "none") else "combined, json or none",
    )
    event_loop: str = option(
        "auto",
        doc="`auto` (uvloop when installed: `pip install 'iiif-shim[fast]'`), `uvloop` "
        "(required) or `asyncio`",
        check=eventloop.problem,
    )
    health_interval: float = option(
        30.0, doc="seconds between the background checks of each backend", check=at_least(1)
    )


@dataclass(frozen=True)
class IIIFSettings:
    prefix: str = option("/iiif", doc="URL path before `/3/` and `/2/`", check=_prefix)
    max_width: int | None = option(
        12000, doc="widest output (info.json `maxWidth`)", check=at_least(1)
    )
    max_height: int | None = option(12000, doc="tallest output (`maxHeight`)", check=at_least(1))
    max_area: int | None = option(
        100_000_000, doc="most output pixels (`maxArea`)", check=at_least(1)
    )
    tile_size: int = option(
        512,
        doc="tile width and height advertised when the backend has no native tiles",
        check=at_least(16),
    )
    jpeg_quality: int = option(85, doc="JPEG/WebP/PDF encoder quality", check=between(1, 100))
    upscale_max_to_limits: bool = option(
        False,
        doc="3.0 `^max` enlarges to the limits (spec example) instead of equalling `max` "
        "(what the official validator expects)",
    )
    clamp_confined_size: bool = option(
        False,
        doc="3.0 `!w,h` larger than the region returns the region (spec text) instead of "
        "400 (what the official validator expects)",
    )
    max_source_pixels: int = option(
        500_000_000,
        doc="largest source (width x height) decoded; larger ones get 501",
        check=between(1, PILLOW_GUARD_PIXELS),
    )


@dataclass(frozen=True)
class CacheSettings:
    info_entries: int = option(10_000, doc="source facts kept (LRU)", check=at_least(0))
    info_ttl: float = option(3600.0, doc="seconds source facts stay fresh", check=at_least(0))
    image_bytes: int = option(
        64 * 1024 * 1024, doc="bytes of rendered images kept (LRU; 0: off)", check=at_least(0)
    )
    decoded_bytes: int = option(
        256 * 1024 * 1024,
        doc="bytes of decoded source pixels kept for whole-source backends (LRU; 0: off)",
        check=at_least(0),
    )
    disk: Path | None = option(
        None, doc="folder of the disk tier of rendered images (none: no disk tier)"
    )
    disk_bytes: int = option(
        1024 * 1024 * 1024,
        doc="bytes the disk tier may hold (LRU: oldest used first out)",
        check=at_least(1024 * 1024),
    )
    redis: str | None = option(
        None,
        doc="Redis URL of the shared tier (redis://, rediss:// or unix://; none: no Redis)",
        check=lambda v: None if v is None else _redis_url(v),
    )
    redis_ttl: float = option(
        86400.0, doc="seconds a rendered image stays in Redis", check=at_least(1)
    )
    redis_max_bytes: int = option(
        4 * 1024 * 1024,
        doc="largest rendered image put in Redis (larger: not shared)",
        check=between(1024, 512 * 1024 * 1024),
    )
    redis_timeout: float = option(
        0.25, doc="seconds one Redis call may take (then Redis is skipped)", check=at_least(0.01)
    )
    redis_retry: float = option(
        5.0, doc="seconds Redis is skipped after a failure", check=at_least(0.1)
    )
    redis_prefix: str = option(
        "iiif-shim:", doc="prefix of every Redis key and channel of this shim"
    )
    redis_lock: float = option(
        5.0,
        doc="seconds a render lock in Redis lasts at most; another process waits that long "
        "for the image, then renders it itself",
        check=at_least(0.1),
    )
    purge_token: str | None = option(
        None,
        doc="bearer token of `DELETE /admin/cache` (none: the endpoint is off)",
        check=lambda v: None if v is None or len(v) >= 16 else "must be at least 16 characters",
    )

    def problems(self) -> list[tuple[str, str]]:
        found = []
        if self.disk is not None and (problem := _writable_folder(self.disk)):
            found.append(("disk", problem))
        return found


def _redis_url(value: str) -> str | None:
    if urlsplit(value).scheme not in ("redis", "rediss", "unix"):
        return "must be a redis://, rediss:// or unix:// URL"
    if importlib.util.find_spec("redis") is None:
        return "needs the Redis client: pip install 'iiif-shim[redis]'"
    return None


def _writable_folder(path: Path) -> str | None:
    """Why the shim could not keep files in ``path`` (made if missing), or None."""
    if path.exists():
        if not path.is_dir():
            return f"{path} is not a folder"
        return None if os.access(path, os.W_OK | os.X_OK) else f"{path} is not writable"
    parent = path.parent
    while not parent.exists() and parent != parent.parent:
        parent = parent.parent
    if not os.access(parent, os.W_OK | os.X_OK):
        return f"{path} does not exist and {parent} is not writable"
    return None


def _engine(value: str) -> str | None:
    if value not in ENGINES:
        return f"must be one of: {', '.join(ENGINES)}"
    return vips_missing() if value == "vips" else None


@dataclass(frozen=True)
class ImagingSettings:
    engine: str = option(
        "pillow",
        doc="library doing the pixel work: `pillow`, or `vips` (libvips: the `vips` extra)",
        check=_engine,
    )
    vips_steps: str = option(
        "measured",
        doc="with `vips`: `measured` (libvips only for the steps it was measured faster at, "
        "Pillow for the rest) or `all` (libvips for every step it can do)",
        check=lambda v: None if v in VIPS_STEPS else f"must be one of: {', '.join(VIPS_STEPS)}",
    )


@dataclass(frozen=True)
class RouteSettings:
    backend: str = option(doc="name of a backend under `backends:`")
    match: re.Pattern[str] | None = option(
        None, doc="regular expression searched in the decoded identifier (none: matches all)"
    )
    id: str = option("{id}", doc="native identifier; `{id}` and the match's named groups")
    rights: str | None = option(
        None,
        doc="rights URI for info.json (`rights` in 3.0, `license` in 2.1)",
        check=lambda v: None if v is None else _rights(v),
    )


@dataclass(frozen=True)
class LandingSettings:
    title: str = option("iiif-shim", doc="heading of the landing page at `/`")
    identifiers: tuple[str, ...] = option(
        (), doc="identifiers listed at `/` (empty: listed from `files` backends)"
    )


@dataclass(frozen=True)
class Settings:
    server: ServerSettings
    iiif: IIIFSettings
    cache: CacheSettings
    backends: Mapping[str, Any]  # name -> that backend type's settings dataclass
    routes: tuple[RouteSettings, ...]
    landing: LandingSettings
    presentation: PresentationSettings = field(default_factory=PresentationSettings)
    viewers: ViewerSettings = field(default_factory=ViewerSettings)
    imaging: ImagingSettings = field(default_factory=ImagingSettings)
    source: str = "embedded default"
    warnings: tuple[tuple[str, str], ...] = field(default=())

    def with_overrides(self, host: str | None, port: int | None) -> Settings:
        server = self.server
        if host is not None:
            server = replace(server, host=host)
        if port is not None:
            server = replace(server, port=port)
        return replace(self, server=server)


_SECTIONS = (
    "server",
    "iiif",
    "cache",
    "backends",
    "routes",
    "landing",
    "presentation",
    "viewers",
    "imaging",
)


def parse_settings(data: Any, base_dir: Path, source: str = "") -> Settings:
    """Validate a parsed YAML document; raises ConfigError listing every problem."""
    r = Reader(base_dir)
    top = r.mapping(data, "")
    if top is None:
        raise ConfigError(r.problems, source)
    r.unknown_keys(top, _SECTIONS, "")
    server = r.read(ServerSettings, top.get("server"), "server")
    iiif = r.read(IIIFSettings, top.get("iiif"), "iiif")
    if iiif and iiif.max_height is not None and iiif.max_width is None:
        r.problem(
            "iiif.max_height",
            "needs iiif.max_width too (the spec requires maxWidth whenever maxHeight is given)",
        )
    if server:
        _check_shares(r, server)
    cache = r.read(CacheSettings, top.get("cache"), "cache")
    landing = r.read(LandingSettings, top.get("landing"), "landing")
    backends = _read_backends(r, top.get("backends"))
    declared = set(top["backends"]) if isinstance(top.get("backends"), Mapping) else set()
    routes = _read_routes(r, top.get("routes"), backends, declared)
    presentation = _read_presentation(r, top.get("presentation"), backends, routes)
    viewers = r.read(ViewerSettings, top.get("viewers"), "viewers")
    imaging = r.read(ImagingSettings, top.get("imaging"), "imaging")
    if r.problems:
        raise ConfigError(r.problems, source)
    assert server and iiif and cache and landing and presentation and viewers and imaging
    assert backends is not None
    return Settings(
        server=server,
        iiif=iiif,
        cache=cache,
        backends=MappingProxyType(dict(backends)),
        routes=tuple(routes),
        landing=landing,
        presentation=presentation,
        viewers=viewers,
        imaging=imaging,
        source=source,
        warnings=tuple(r.warnings),
    )


def _check_shares(r: Reader, server: ServerSettings) -> None:
    """Warn when the processes split the decoded-pixel budget into shares too small for
    ordinary masters (each process refuses what needs more than its share: 501)."""
    from iiif_shim.process.supervisor import (
        cpus,  # the supervisor reads settings: imported when used
    )

    processes = server.processes or cpus()
    share = server.memory_budget // processes
    if processes > 1 and share < _SMALL_SHARE:
        r.warn(
            "server.memory_budget",
            f"split between {processes} processes, each gets {share // (1 << 20)} MB of "
            f"decoded pixels: a 6000x4000 master alone needs about 96 MB "
            "(raise the budget or lower server.processes)",
        )


def _read_typed(
    r: Reader, specs: Mapping[str, Any], section: str, kind: str, types: Mapping[str, Any]
) -> dict[str, tuple[Any, Any]]:
    """Entries of a section whose ``type:`` picks a class from ``types`` (backends, object
    sources): name -> (class, its settings), each problem reported with its path."""
    out: dict[str, tuple[Any, Any]] = {}
    known = ", ".join(types)
    for name, spec in specs.items():
        path = f"{section}.{name}"
        if not isinstance(name, str) or not _NAME_RE.fullmatch(name):
            r.problem(path, f"{kind} names use only letters, digits, '_' and '-'")
            continue
        spec_map = r.mapping(spec, path)
        if spec_map is None:
            continue
        type_name = spec_map.get("type")
        if type_name is None:
            r.problem(f"{path}.type", f"required (one of: {known})")
            continue
        cls = types.get(type_name) if isinstance(type_name, str) else None
        if cls is None:
            hint = difflib.get_close_matches(str(type_name), list(types), n=1)
            extra = f"; did you mean '{hint[0]}'?" if hint else ""
            r.problem(f"{path}.type", f"unknown type {type_name!r} (known: {known}){extra}")
            continue
        settings = r.read(cls.settings_class, spec_map, path)
        if settings is not None:
            out[name] = (cls, settings)
    return out


def _read_backends(r: Reader, data: Any) -> dict[str, Any] | None:
    mapping = r.mapping(data, "backends")
    if mapping is None:
        return None
    if not mapping:
        r.problem("backends", "required: at least one backend")
    read = _read_typed(r, mapping, "backends", "backend", BACKEND_TYPES)
    return {name: settings for name, (_, settings) in read.items()}


def _read_presentation(
    r: Reader, data: Any, backends: dict[str, Any] | None, routes: list[RouteSettings]
) -> PresentationSettings | None:
    mapping = r.mapping(data, "presentation")
    if mapping is None:
        return None
    specs = r.mapping(mapping.get("sources"), "presentation.sources") or {}
    view = ConfigView(backends or {}, Router(tuple(routes)))
    sources: dict[str, Any] = {}
    for name, (cls, settings) in _read_typed(
        r, specs, "presentation.sources", "source", SOURCE_TYPES
    ).items():
        if backends is not None:
            for finding in cls.findings(settings, view):
                where = f"presentation.sources.{name}.{finding.key}"
                (r.problem if finding.error else r.warn)(where, finding.message)
        sources[name] = settings
    return r.read(
        PresentationSettings,
        mapping,
        "presentation",
        extra={"sources": MappingProxyType(sources)},
    )


def _read_routes(
    r: Reader, data: Any, backends: dict[str, Any] | None, declared: set[str]
) -> list[RouteSettings]:
    if data is None:
        r.problem("routes", "required: a list of routes (the last one usually a catch-all)")
        return []
    if not isinstance(data, list):
        r.problem("routes", "must be a list")
        return []
    routes: list[RouteSettings] = []
    catch_all: int | None = None
    used: set[str] = set()
    for i, item in enumerate(data):
        path = f"routes[{i}]"
        route = r.read(RouteSettings, item, path)
        if route is None:
            continue
        if catch_all is not None:
            r.problem(path, f"unreachable: routes[{catch_all}] before it matches every identifier")
        if route.match is None:
            catch_all = i
        groups = set(route.match.groupindex) if route.match else set()
        names = _template_names(r, route.id, f"{path}.id")
        if names is not None and not names <= groups | {"id"}:
            missing = ", ".join(sorted(names - groups - {"id"}))
            r.problem(
                f"{path}.id",
                f"uses {{{missing}}}, which the match does not capture "
                "(named groups: (?P<name>...))",
            )
        if backends is None:
            continue
        backend = backends.get(route.backend)
        if backend is None:
            if route.backend not in declared:  # (a declared but broken one is reported already)
                hint = difflib.get_close_matches(route.backend, list(declared), n=1)
                r.problem(
                    f"{path}.backend",
                    f"no backend named {route.backend!r}"
                    + (
                        f"; did you mean '{hint[0]}'?"
                        if hint
                        else f" (defined: {', '.join(sorted(declared)) or 'none'})"
                    ),
                )
            continue
        used.add(route.backend)
        if clash := groups & BACKEND_TYPES[backend.type].reserved(backend):
            hidden = ", ".join(sorted(clash))
            r.problem(
                f"{path}.match",
                f"named group {hidden} would be hidden by backend "
                f"{route.backend!r}'s own placeholder of that name; rename the group",
            )
        if route.match is not None and not anchored(route.match):
            r.warn(
                f"{path}.match",
                "searched anywhere in the identifier, so it also takes identifiers that merely "
                "contain a match; anchor it with ^ (and $) to match whole identifiers",
            )
        for finding in BACKEND_TYPES[backend.type].route_findings(
            backend, slashed(route.match, route.id), anchored(route.match)
        ):
            where = f"backends.{route.backend}.{finding.key}"
            message = f"{finding.message} (from {path})"
            (r.problem if finding.error else r.warn)(where, message)
        wanted = BACKEND_TYPES[backend.type].placeholders(backend) - {"id"}
        if not wanted <= groups:
            missing = ", ".join(sorted(wanted - groups))
            r.problem(
                f"{path}.match",
                f"backend {route.backend!r} needs {{{missing}}}; capture "
                "it with a named group (?P<name>...)",
            )
        routes.append(route)
    if backends:
        for name in backends:
            if name not in used:
                r.warn(f"backends.{name}", "no route uses this backend")
        router = Router(tuple(routes))
        for name, backend in backends.items():
            probe_id = getattr(backend, "probe_id", None)
            if probe_id is None:
                continue
            try:
                reached = router.route(probe_id).backend
            except ShimError:
                reached = None
            if reached != name:
                r.problem(
                    f"backends.{name}.probe_id",
                    f"routes to {'backend ' + repr(reached) if reached else 'no backend'}, "
                    "not to this one",
                )
    return routes


def _template_names(r: Reader, template: str, path: str) -> set[str] | None:
    try:
        return {name for _, name, _, _ in string.Formatter().parse(template) if name is not None}
    except ValueError as exc:
        r.problem(path, f"bad template: {exc}")
        return None


def load_settings(path: str | os.PathLike[str]) -> Settings:
    """Read and validate a YAML config file."""
    file = Path(path)
    try:
        text = file.read_text(encoding="utf-8")
    except OSError as exc:
        raise ConfigError([("", f"cannot read {file}: {exc.strerror or exc}")], str(file)) from None
    except UnicodeDecodeError:
        raise ConfigError([("", f"{file} is not UTF-8 text")], str(file)) from None
    try:
        data = yaml.safe_load(text)
    except yaml.YAMLError as exc:
        mark = getattr(exc, "problem_mark", None)
        where = f"line {mark.line + 1}, column {mark.column + 1}: " if mark else ""
        problem = getattr(exc, "problem", None) or str(exc)
        raise ConfigError([("", f"{where}not valid YAML ({problem})")], str(file)) from None
    return parse_settings(data, file.resolve().parent, source=str(file))


def default_config_path() -> Path:
    """The bundled config that serves the bundled sample images."""
    return Path(str(resources.files("iiif_shim") / "defaults" / "config.yaml"))


def settings_from_environment(config: str | None) -> Settings:
    """``--config``, else ``$IIIF_SHIM_CONFIG``, else the embedded default."""
    chosen = config or os.environ.get(CONFIG_ENV)
    settings = load_settings(chosen or default_config_path())
    if not chosen:
        settings = replace(settings, source="embedded default")
    return settings
