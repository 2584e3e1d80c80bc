"""The connection settings every backend and object source that talks HTTP shares (each adds its
own keys), the HTTP Basic credentials sent to that server among them (``password`` is a
secret: ``base/redaction.py``), and the check of those credentials against the URLs they go
with (:func:`credential_findings`: credentials given in two places)."""

from __future__ import annotations

import dataclasses
from collections.abc import Iterable, Iterator
from dataclasses import dataclass
from typing import Any
from urllib.parse import urlsplit

from iiif_shim.base.schema import Finding, at_least, option, problem

_REDIRECTS = ("same_origin", "none")


def _credential(value: str, colon: bool) -> str | None:
    """What is wrong with a Basic user name or password (no control characters; a user name
    holds no ':', which would end it)."""
    if any(ord(c) < 0x20 or ord(c) == 0x7F for c in value):
        return "must not hold control characters (a line break, a tab)"
    if not colon and ":" in value:
        return "must not hold ':' (HTTP Basic ends the user name there)"
    return None


@dataclass(frozen=True, kw_only=True)
class UpstreamSettings:
    """Connection settings shared by every backend and object source that talks HTTP (each type
    adds its own keys)."""

    timeout: float = option(
        30.0,
        doc="seconds for one upstream request, everything included: waiting for a connection, "
        "retries, the body (then 504)",
        check=at_least(0.1),
    )
    connect_timeout: float = option(5.0, doc="seconds to open a connection", check=at_least(0.1))
    max_connections: int = option(
        8,
        doc="concurrent connections to this server; a backend keeps a quarter of them (at least "
        "one, unless it has only one) for image requests: its requests for facts hold at most "
        "the rest, so metadata that stalls cannot starve images, and those asked for documents "
        "(manifests, collections, PDFs) at most half of that (at least one), so cold documents "
        "leave connections for info.json",
        check=at_least(1),
    )
    max_connections_per_image: int = option(
        0,
        doc="connections one image may hold at once (0: half of `max_connections`), so one "
        "stalled image cannot starve the others",
        check=at_least(0),
    )
    pool_timeout: float = option(
        5.0,
        doc='seconds a request waits for a free connection (then 503 "busy", with `Retry-After`)',
        check=at_least(0.01),
    )
    max_bytes: int = option(
        256 * 1024 * 1024,
        doc="largest image answer it will read (larger: 502); one of more than 4 MiB is "
        "written to an unnamed temporary file (a backend's `spill_dir`) as it arrives, not "
        "held in memory, and an image answer (a master, a tile, a part of a master) that "
        "comes compressed (gzip, ...) is a 502, never inflated",
        check=at_least(1024),
    )
    max_metadata_bytes: int = option(
        1024 * 1024,
        doc="largest metadata answer (info.json, `.dzi`, IIP `OBJ`, a catalogue's JSON, ...) it "
        "will read (larger: 502); a gzip or deflate answer is inflated up to this (a CSV "
        "catalogue: up to its own `max_bytes`), never further, from at most as many compressed "
        "bytes, and bytes after the compressed stream are a 502; also the largest part of a "
        "master read by one `Range` request for its header",
        check=at_least(1024),
    )
    retries: int = option(
        2,
        doc="extra attempts at a metadata request after a refused or reset connection or a "
        "502/503/504, with jittered backoff, within `timeout` (image requests are never "
        "retried)",
        check=at_least(0),
    )
    redirects: str = option(
        "same_origin",
        doc="`same_origin`: follow up to 3 redirects that stay on the origin and under the "
        "folder of its URL templates; `none`: a redirect is a 502",
        check=lambda v: None if v in _REDIRECTS else f"must be one of {', '.join(_REDIRECTS)}",
    )
    username: str | None = option(
        None,
        doc="HTTP Basic user name sent to this server (with `password`; either alone is sent "
        "with the other empty). Sent only to the origins (scheme, host, port) of its own "
        "configured URLs, never after a redirect elsewhere, never logged",
        check=lambda v: None if v is None else _credential(v, colon=False),
    )
    password: str | None = option(
        None,
        secret=True,
        doc="secret: HTTP Basic password sent with `username` (or `password_file`: a file "
        "holding it); never printed in logs, reports, `/health` or errors",
        check=lambda v: None if v is None else _credential(v, colon=True),
    )
    breaker_failures: int = option(
        5,
        doc="consecutive failures (refused, reset, timed out, 5xx) that open the circuit of "
        "this server (0: never)",
        check=at_least(0),
    )
    breaker_reset: float = option(
        10.0,
        doc="seconds an open circuit answers 503 at once (with `Retry-After`) before one "
        "trial request",
        check=at_least(0.1),
    )

    @property
    def image_share(self) -> int:
        share = self.max_connections_per_image or max(1, self.max_connections // 2)
        return min(share, self.max_connections)

    def findings(self) -> list[Finding]:
        return credential_findings(self)


def credential_findings(
    settings: UpstreamSettings, urls: Iterable[tuple[str, str]] | None = None
) -> list[Finding]:
    """Problems of the credentials of ``settings`` with its URLs (``urls``: (key, URL); by
    default every text of its settings that is one): a URL with its own ``user:password@``
    while ``username`` or ``password`` is set (which would never be sent). (A URL whose
    ``user:password@`` does not read back as written is refused by its own check,
    ``urltemplate.py``.)"""
    found: list[Finding] = []
    given = settings.username is not None or settings.password is not None
    for key, url in _urls(settings, "") if urls is None else urls:
        if "@" not in url:
            continue
        try:
            userinfo = urlsplit(url).username is not None
        except ValueError:  # refused by the URL's own check (``urltemplate.py``)
            continue
        if given and userinfo:
            found.append(
                problem(
                    key,
                    "holds a user:password@ and username/password are set too: give the "
                    "credentials in one place, either in the URL or (better: no encoding, "
                    "password_file) as username/password",
                )
            )
    return found


def _urls(value: Any, path: str, depth: int = 0) -> Iterator[tuple[str, str]]:
    """(key, text) of every text that holds a URL in a settings object and those in it."""
    if depth > 8:  # settings nest a few levels
        return
    for f in dataclasses.fields(value):
        item = getattr(value, f.name, None)
        key = f"{path}.{f.name}" if path else f.name
        if isinstance(item, str) and "://" in item:
            yield key, item
        elif dataclasses.is_dataclass(item) and not isinstance(item, type):
            yield from _urls(item, key, depth + 1)
