"""YAML configuration -> frozen, typed settings, validated up front.

``load_settings(path)`` reads a file and returns :class:`Settings` or raises ``ConfigError``
listing every problem with its YAML path (``backends.archive.url: required``), unknown keys with
a "did you mean". Relative paths are relative to the file's own folder. The embedded default
(bundled config and sample images) is used when no file is given. ``${NAME}`` in text values is
substituted from the environment before anything is read (``environment.py``); secret keys may
be given as ``<key>_file`` (``base/schema.py``), and their values are never printed
(``base/redaction.py``).
"""

from __future__ import annotations

import difflib
import importlib.util
import ipaddress
import os
import re
import secrets
import string
from collections.abc import Mapping
from dataclasses import dataclass, field, replace
from importlib import resources
from pathlib import Path
from types import MappingProxyType
from typing import Any, TypeVar
from urllib.parse import urlsplit

import yaml

from iiif_shim.auth.settings import AuthSettings
from iiif_shim.backends.settings import BACKEND_SETTINGS, BackendSettings, NetworkSettings
from iiif_shim.base import redaction
from iiif_shim.base.errors import ConfigError, ShimError
from iiif_shim.base.schema import Finding, Reader, at_least, between, option, problem
from iiif_shim.cache.settings import CacheSettings
from iiif_shim.config.environment import interpolate
from iiif_shim.config.tls import TLSSettings
from iiif_shim.core.routing import Router, RouteSettings, anchored, slashed
from iiif_shim.core.settings import IIIFSettings, ServiceSettings
from iiif_shim.imaging.settings import (
    ImagingSettings,
)
from iiif_shim.presentation.settings import PresentationSettings
from iiif_shim.presentation.sources.settings import SOURCE_SETTINGS, ConfigView, SourceSettings
from iiif_shim.presentation.viewers import ViewerSettings
from iiif_shim.search.settings import SearchSettings

CONFIG_ENV = "IIIF_SHIM_CONFIG"
_SMALL_SHARE = 128 * 1024 * 1024  # bytes of decoded pixels per process, below which we warn
_MIN_BUDGET = 16 * 1024 * 1024
_BUDGET_PROBLEM = f"must be 0 (derived from the machine's memory) or at least {_MIN_BUDGET}"
_NAME_RE = re.compile(r"[A-Za-z0-9_-]+")
T = TypeVar("T")


_NOT_IN_URLS = frozenset(" \"'<>\\`")  # with whitespace and control characters


def public_url_problem(value: str) -> str | None:
    """What is wrong with ``value`` as the public URL every ``id`` is built on
    (``server.public_url``, ``export --base-url``), or ``None``: an http(s) URL with a host,
    without ``user:password@`` (it would be written into every id), a query or a fragment,
    spaces, quotes or control characters (ids must be URIs as written)."""
    if any(c in _NOT_IN_URLS or not c.isprintable() for c in value):
        return "must not hold spaces, quotes, '<', '>', '\\' or control characters"
    split = urlsplit(value)
    try:
        _ = split.port  # a port that is not a number raises
    except ValueError:
        return "must be an http:// or https:// URL (its port is not a number from 0 to 65535)"
    if split.scheme not in ("http", "https") or not split.hostname:
        return "must be an http:// or https:// URL with a host"
    if "@" in split.netloc:
        return "must not hold user:password@ (it would be written into every id)"
    if "?" in value or "#" in value:
        return "must not have a query or fragment"
    return None


EVENT_LOOPS = ("auto", "uvloop", "asyncio")


def uvloop_installed() -> bool:
    return importlib.util.find_spec("uvloop") is not None


def _event_loop(choice: str) -> str | None:
    """What is wrong with ``server.event_loop: choice`` on this machine, if anything."""
    if choice not in EVENT_LOOPS:
        return f"must be one of {', '.join(EVENT_LOOPS)}"
    if choice == "uvloop" and not uvloop_installed():
        return "uvloop is not installed: pip install 'iiif-shim[fast]' (or choose auto)"
    return None


@dataclass(frozen=True)
class ServerSettings:
    host: str = option("127.0.0.1", doc="address to listen on")
    port: int = option(8182, doc="port to listen on", check=between(0, 65535))
    public_url: str | None = option(
        None,
        doc="scheme+host(+path) put in front of the prefix in every `id`, e.g. "
        "`https://images.example.org` gives `https://images.example.org/iiif/3/{id}`; no "
        "`user:password@`, query, fragment, spaces or quotes (the same rule as "
        "`iiif-shim export --base-url`)",
        check=lambda v: None if v is None else public_url_problem(v),
    )
    trust_forwarded: bool = option(
        False,
        doc="build `id`s from `Forwarded` (`proto`, `host`) and "
        "`X-Forwarded-Proto/Host/Port/Prefix`; `X-Forwarded-Prefix` *replaces* "
        "`iiif.prefix`. Off by default: the headers are ignored. On, the proxy in front "
        "must overwrite or drop every such header a client sends (the shim believes what "
        "it receives, `Forwarded` first), as `deploy/nginx-proxy.conf` does",
    )
    cache_control: str = option(
        "public, max-age=86400", doc="`Cache-Control` of images and info.json (empty: none)"
    )
    processes: int = option(
        0,
        doc="processes serving the port, each with its own event loop, threads and caches (0: "
        "one per CPU; 1: no supervisor); `--processes N` overrides it. See "
        "[Processes](operations.md#processes)",
        check=between(0, 256),
    )
    workers: int = option(
        0,
        doc="threads for image work in each process (0: CPUs / processes, at least 1)",
        check=at_least(0),
    )
    max_pending: int = option(
        64,
        doc="jobs of the thread pool queued or running for each kind of request (images; "
        "manifests, collections and object pages; PDF pages: each a lane of its own) before "
        "new ones of that kind get 503",
        check=at_least(1),
    )
    request_timeout: float = option(
        60.0,
        doc="seconds any request may take until its answer's headers go out, every stage "
        "included (then 503); a body sent as it is (an original, a stream) then goes on as "
        "long as the client keeps reading",
        check=at_least(1),
    )
    memory_budget: int = option(
        0,
        doc="bytes of image memory all requests together may hold (decoded pixels, every "
        "step's images, encoders' output and what upstream bodies hold in memory; the "
        "decoded-source cache apart), for the whole server: with N processes each gets "
        "1/N; past it requests wait, then get 503; one that alone needs more gets 501. 0: "
        "half the memory the server may really use (its cgroup's memory limit in a "
        "container, else the physical memory), the other half left for caches, libraries "
        "and bodies in flight. See "
        "[Memory](performance.md#memory-budget-and-cost-model)",
        check=lambda v: None if v in (None, 0) or v >= _MIN_BUDGET else _BUDGET_PROBLEM,
    )
    memory_wait: float = option(
        10.0,
        doc="seconds a request waits for image memory (then 503 with `Retry-After`)",
        check=at_least(0),
    )
    max_client_connections: int = option(
        0,
        doc="open client connections; past it new ones get 503 (0: what the open-file limit "
        "leaves after backends, threads and files)",
        check=at_least(0),
    )
    header_timeout: float = option(
        10.0,
        doc="seconds a client has to send a request's line and headers (then 408, closed); "
        "with `tls`, also to finish its TLS handshake (then closed)",
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
        doc="access log on stdout: `combined` (plus the request id and seconds), `json` (one "
        "object a line) or `none`",
        check=lambda v: None if v in ("combined", "json", "none") else "combined, json or none",
    )
    event_loop: str = option(
        "auto",
        doc="`auto`: uvloop when installed (`pip install 'iiif-shim[fast]'`, which "
        "`deploy/setup.sh` does), else asyncio's loop; `uvloop` (refused by check-config "
        "when missing) or `asyncio`. `/health` says which runs",
        check=_event_loop,
    )
    health_interval: float = option(
        30.0,
        doc="seconds between the background checks of every backend (`/health/ready`)",
        check=at_least(1),
    )
    tls: TLSSettings | None = option(
        None,
        doc="serve HTTPS on `port` with this certificate and key (null: plain HTTP). See "
        "[TLS](operations.md#tls)",
    )
    http_redirect_port: int | None = option(
        None,
        doc="with `tls`: a second port, plain HTTP, whose every answer is a 308 to the same "
        "path and query over HTTPS (on `public_url`'s origin when set, else on the request's "
        "host at `port`); nothing else is served there",
        check=lambda v: None if v is None else between(1, 65535)(v),
    )

    def findings(self) -> list[Finding]:
        found = []
        if self.http_redirect_port is not None:
            if self.tls is None:
                found.append(problem("http_redirect_port", "needs server.tls (HTTPS to send to)"))
            elif self.http_redirect_port == self.port:
                found.append(problem("http_redirect_port", "must differ from server.port"))
            elif self.public_url is not None and not self.public_url.startswith("https://"):
                found.append(
                    problem(
                        "http_redirect_port",
                        "server.public_url is not https://: the redirect would send clients "
                        "back to plain HTTP",
                    )
                )
        return found


@dataclass(frozen=True)
class LandingSettings:
    title: str = option("iiif-shim", doc="heading of the landing page at `/`")
    identifiers: tuple[str, ...] = option(
        (),
        doc="identifiers listed at `/` (empty: listed from `files` backends that a catch-all "
        "route reaches unchanged, up to 50 each)",
    )


@dataclass(frozen=True)
class Settings:
    server: ServerSettings
    iiif: IIIFSettings
    cache: CacheSettings
    backends: Mapping[str, BackendSettings]  # name -> that backend type's settings
    routes: tuple[RouteSettings, ...]
    landing: LandingSettings
    presentation: PresentationSettings = field(default_factory=PresentationSettings)
    viewers: ViewerSettings = field(default_factory=ViewerSettings)
    imaging: ImagingSettings = field(default_factory=ImagingSettings)
    auth: AuthSettings = field(default_factory=AuthSettings)
    search: SearchSettings = field(default_factory=SearchSettings)
    origin: str = "embedded default"  # the file it was read from
    warnings: tuple[tuple[str, str], ...] = field(default=())

    def service(self) -> ServiceSettings:
        """The image service's slice of this configuration."""
        server = self.server
        return ServiceSettings(
            iiif=self.iiif,
            routes=self.routes,
            backends=self.backends,
            cache=self.cache,
            imaging=self.imaging,
            threads=server.workers,
            max_pending=server.max_pending,
            request_timeout=server.request_timeout,
            memory_budget=server.memory_budget,
            memory_wait=server.memory_wait,
        )

    def with_overrides(self, host: str | None, port: int | None) -> Settings:
        server = self.server
        if host is not None:
            server = replace(server, host=host)
        if port is not None:
            server = replace(server, port=port)
        return replace(self, server=server)


#: The top-level sections of a configuration, in the order the reference gives them: (key, what
#: it holds, its settings class; None for ``backends``, whose entries each name their type).
SECTIONS: tuple[tuple[str, str, type | None], ...] = (
    ("server", "the listening socket, processes, limits and timeouts", ServerSettings),
    ("iiif", "the Image API's prefix, limits and choices", IIIFSettings),
    ("cache", "the memory, disk and Redis caches", CacheSettings),
    ("imaging", "the image engine", ImagingSettings),
    ("routes", "required: a list; an identifier takes the first route that matches", RouteSettings),
    ("backends", "required: a mapping of name to backend; `type:` picks the kind", None),
    ("landing", "the page at `/`", LandingSettings),
    ("presentation", "manifests, collections, object pages and PDFs", PresentationSettings),
    ("viewers", "the viewers on object pages", ViewerSettings),
    ("auth", "access policies: who may see which images (IIIF Auth 1.0 and 2.0)", AuthSettings),
    ("search", "the index of objects' text (IIIF Content Search 2.0 and 1.0)", SearchSettings),
)
_SECTIONS = tuple(key for key, _, _ in SECTIONS)


def parse_settings(
    data: Any, base_dir: Path, origin: str = "", environ: Mapping[str, str] | None = None
) -> Settings:
    """Validate a parsed YAML document, its ``${NAME}`` first substituted from ``environ``
    (default: the process's environment, ``config/environment.py``); raises ConfigError
    listing every problem."""
    r = Reader(base_dir)
    data, unset = interpolate(data, environ)
    r.problems.extend(unset)
    top = r.mapping(data, "")
    if top is None:
        raise ConfigError(r.problems, origin)
    r.unknown_keys(top, _SECTIONS, "")
    server = r.read(ServerSettings, top.get("server"), "server")
    iiif = r.read(IIIFSettings, top.get("iiif"), "iiif")
    if iiif and iiif.max_height is not None and iiif.max_width is None:
        r.problem(
            "iiif.max_height",
            "needs iiif.max_width too (the spec requires maxWidth whenever maxHeight is given)",
        )
    if server:
        server = _check_shares(r, server)
    cache = r.read(CacheSettings, top.get("cache"), "cache")
    landing = r.read(LandingSettings, top.get("landing"), "landing")
    backends = _read_backends(r, top.get("backends"))
    declared = set(top["backends"]) if isinstance(top.get("backends"), Mapping) else set()
    routes = _read_routes(r, top.get("routes"), backends, declared)
    presentation = _read_presentation(r, top.get("presentation"), backends, routes)
    viewers = r.read(ViewerSettings, top.get("viewers"), "viewers")
    imaging = r.read(ImagingSettings, top.get("imaging"), "imaging")
    auth = r.read(AuthSettings, top.get("auth"), "auth")
    search = r.read(SearchSettings, top.get("search"), "search")
    _check_access(r, _policy_names(top.get("auth"), auth), routes, presentation)
    if auth:
        _warn_openings(r, server, auth, routes)
        _warn_object_access(r, routes, presentation)
        auth = _keyed(auth)
    if cache and backends:
        _check_spills(r, cache.disk, backends)
    if r.problems:
        raise ConfigError(r.problems, origin)
    assert server and iiif and cache and landing and presentation and viewers and imaging and auth
    assert search
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
        auth=auth,
        search=search,
        origin=origin,
        warnings=tuple(r.warnings),
    )


def _policy_names(data: Any, auth: AuthSettings | None) -> frozenset[str]:
    """The names of ``auth.policies``: those read, else (the section has problems of its own,
    reported already) those written, so a route naming none of them is reported at once."""
    if auth is not None:
        return frozenset(auth.policies)
    policies = data.get("policies") if isinstance(data, Mapping) else None
    return frozenset(str(n) for n in policies) if isinstance(policies, Mapping) else frozenset()


def _check_access(
    r: Reader,
    policies: frozenset[str],
    routes: list[RouteSettings],
    presentation: PresentationSettings | None,
) -> None:
    """Each route's ``access``, and each object source's, names a policy of ``auth.policies``
    (an object's own ``access`` is checked when it is read: ``PresentationService``)."""
    known = ", ".join(sorted(policies)) or "none is defined"
    named = [(f"routes[{i}].access", route.access) for i, route in enumerate(routes)]
    if presentation is not None:
        named += [
            (f"presentation.sources.{name}.access", getattr(source, "access", None))
            for name, source in presentation.sources.items()
        ]
    for key, policy in named:
        if policy is not None and policy not in policies:
            r.problem(key, f"no policy {policy!r} under auth.policies ({known})")


def _warn_object_access(
    r: Reader, routes: list[RouteSettings], presentation: PresentationSettings | None
) -> None:
    """A warning for a source whose ``access`` names a policy while every route is public:
    that policy then guards only its objects' PDFs, text and search, as their images follow
    their routes (an image may be in several objects). With some routes restricted,
    ``check-config`` says it of each object it reads whose images are public
    (``ObjectSource.open_images``)."""
    if presentation is None or any(route.access is not None for route in routes):
        return
    for name, source in presentation.sources.items():
        policy = getattr(source, "access", None)
        if policy is not None:
            r.warn(
                f"presentation.sources.{name}.access",
                f"{policy!r} guards only the PDFs, text and search of its objects: their images "
                "follow their routes, and every route is public, so its images are public; give "
                "their route `access` too",
            )


def _warn_openings(
    r: Reader, server: ServerSettings | None, auth: AuthSettings, routes: list[RouteSettings]
) -> None:
    """Warnings for settings that quietly open restricted images to anyone: a trusted proxy or
    network that is everyone (or, for a proxy, a public address), a proxy in front without
    `auth.forwarded_by` (the per-address limits then hold everyone), logins over a public plain
    http URL, and a public route on a backend whose restricted route rewrites identifiers (the
    native ids it reaches may then be reachable by their own name)."""
    if not auth.policies:
        return

    def everyone(value: str) -> bool:
        return ipaddress.ip_network(value, strict=False).prefixlen == 0

    def public(value: str) -> bool:
        network = ipaddress.ip_network(value, strict=False)
        return not (network.is_private or network.is_loopback)

    for value in auth.forwarded_by:
        if everyone(value) or public(value):
            r.warn(
                "auth.forwarded_by",
                f"{value} holds public addresses: any client among them can claim any address "
                "(reading rooms, login limits); list only your proxy's address",
            )
    for name, policy in auth.policies.items():
        users = policy.users
        for value in users.trusted_proxies if users is not None else ():
            if everyone(value) or public(value):
                r.warn(
                    f"auth.policies.{name}.users.trusted_proxies",
                    f"{value} holds public addresses: any client among them can log in as "
                    "anyone by sending the header; list only the sign-on proxy's address",
                )
        for value in policy.networks:
            if everyone(value):
                r.warn(
                    f"auth.policies.{name}.networks",
                    f"{value} is every address: the images of this policy are public",
                )
    header = any(p.users is not None and p.users.header for p in auth.policies.values())
    if not auth.forwarded_by and (header or (server is not None and server.trust_forwarded)):
        r.warn(
            "auth.forwarded_by",
            "is empty behind a proxy (a header login, or server.trust_forwarded): every client "
            "seems to come from the proxy: the per-address limits apply to everyone together; "
            "list the proxy's address",
        )
    url = server.public_url if server is not None else None
    if url is not None and url.startswith("http://"):
        host = (urlsplit(url).hostname or "").lower()
        if host not in ("localhost", "127.0.0.1", "::1"):
            r.warn(
                "server.public_url",
                "is plain http: passwords and login cookies cross the network unencrypted, and "
                "viewers on another host cannot log in (cookies are SameSite=None only over "
                "https)",
            )
    restricted = {(route.backend, route.id) for route in routes if route.access is not None}
    for i, route in enumerate(routes):
        if route.access is not None:
            continue
        for backend, template in restricted:
            if backend == route.backend and template != route.id:
                r.warn(
                    f"routes[{i}]",
                    f"is public on backend {backend!r}, which a restricted route reaches with "
                    f"id {template!r}: if this route can name the same native images (e.g. "
                    "its {id} is a restricted route's stripped identifier), they are public "
                    "here; keep the restricted route's prefix in its id, or use a backend of "
                    "its own",
                )
                break


def _keyed(auth: AuthSettings) -> AuthSettings:
    """``auth`` with a random signing key when policies need one and neither ``auth.secret``
    nor the environment gives it (``check-config`` warns). It is made here, once per reading of
    the file: the workers of one supervisor are handed these settings, so they share it."""
    if not auth.policies or auth.keys():
        return auth
    key = secrets.token_urlsafe(48)
    redaction.remember(key)
    return replace(auth, secret=key)


def _check_spills(
    r: Reader, disk_cache: Path | None, backends: Mapping[str, BackendSettings]
) -> None:
    """Each network backend's spill folder (``spill_dir``, else the disk cache's, else
    ``TMPDIR``): one it is given must be a writable folder; one in memory (tmpfs) is a warning,
    its large answers being RAM (``upstream/spill.py``)."""
    from iiif_shim.upstream import spill

    for name, backend in backends.items():
        if not isinstance(backend, NetworkSettings):
            continue
        given = backend.spill_dir
        if given is not None and not (given.is_dir() and os.access(given, os.W_OK | os.X_OK)):
            r.problem(f"backends.{name}.spill_dir", f"{given} is not a writable folder")
            continue
        where = spill.folder(given if given is not None else disk_cache)
        if spill.in_memory(where):
            r.warn(
                f"backends.{name}.spill_dir",
                f"{where} is in memory (tmpfs): answers over 4 MiB written there are RAM, "
                "counted against the memory budget (each image request reserves max_bytes "
                "more); set spill_dir to a folder on disk",
            )


def _check_shares(r: Reader, server: ServerSettings) -> ServerSettings:
    """The server's settings with ``memory_budget: 0`` made the machine's default
    (``base.machine.default_memory_budget``); a warning when the processes split the budget
    into shares too small for ordinary masters (each process refuses what needs more than its
    share: 501)."""
    from iiif_shim.base.machine import cpus, default_memory_budget

    if server.memory_budget == 0:
        server = replace(server, memory_budget=default_memory_budget())
    processes = server.processes or cpus()
    share = server.memory_budget // processes
    if processes > 1 and share < _SMALL_SHARE:
        r.warn(
            "server.memory_budget",
            f"split between {processes} processes, each gets {share // (1 << 20)} MB of "
            f"decoded pixels: a 6000x4000 master alone needs about 96 MB "
            "(raise the budget or lower server.processes)",
        )
    return server


def _read_typed(
    r: Reader, specs: Mapping[str, Any], section: str, kind: str, types: Mapping[str, type[T]]
) -> dict[str, T]:
    """Entries of a section whose ``type:`` picks a settings class from ``types`` (backends,
    object sources): name -> its settings, each problem reported with its path."""
    out: dict[str, T] = {}
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
        settings = r.read(cls, spec_map, path)
        if settings is not None:
            out[name] = settings
    return out


def _read_backends(r: Reader, data: Any) -> dict[str, BackendSettings] | None:
    mapping = r.mapping(data, "backends")
    if mapping is None:
        return None
    if not mapping:
        r.problem("backends", "required: at least one backend")
    return _read_typed(r, mapping, "backends", "backend", BACKEND_SETTINGS)


def _read_presentation(
    r: Reader,
    data: Any,
    backends: dict[str, BackendSettings] | None,
    routes: list[RouteSettings],
) -> PresentationSettings | None:
    mapping = r.mapping(data, "presentation")
    if mapping is None:
        return None
    specs = r.mapping(mapping.get("sources"), "presentation.sources") or {}
    view = ConfigView(backends or {}, Router(tuple(routes)))
    sources: dict[str, SourceSettings] = {}
    for name, settings in _read_typed(
        r, specs, "presentation.sources", "source", SOURCE_SETTINGS
    ).items():
        if backends is not None:
            r.found(f"presentation.sources.{name}", settings.findings_in(view))
        sources[name] = settings
    return r.read(
        PresentationSettings,
        mapping,
        "presentation",
        extra={"sources": MappingProxyType(sources)},
    )


def _read_routes(
    r: Reader, data: Any, backends: dict[str, BackendSettings] | None, declared: set[str]
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
        if clash := groups & backend.reserved():
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
        for finding in backend.route_findings(
            slashed(route.match, route.id), anchored(route.match)
        ):
            where = f"backends.{route.backend}.{finding.key}"
            message = f"{finding.message} (from {path})"
            (r.problem if finding.error else r.warn)(where, message)
        wanted = backend.placeholders() - {"id"}
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
            probe_id = backend.health_id()
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
    return parse_settings(data, file.resolve().parent, origin=str(file))


def default_config_path() -> Path:
    """The bundled config that serves the bundled sample images."""
    return Path(str(resources.files("iiif_shim") / "defaults" / "config.yaml"))


def settings_from_environment(config: str | None) -> Settings:
    """``--config``, else ``$IIIF_SHIM_CONFIG``, else the embedded default."""
    chosen = config or os.environ.get(CONFIG_ENV)
    settings = load_settings(chosen or default_config_path())
    if not chosen:
        settings = replace(settings, origin="embedded default")
    return settings
