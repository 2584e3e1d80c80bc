"""The public base URL of each response: what goes in front of ``/{version}/{identifier}``.

One decision, made here: ``server.public_url`` when set (then ``iiif.prefix``); otherwise, with
``server.trust_forwarded``, the proxy's ``Forwarded`` / ``X-Forwarded-Proto|Host|Port|Prefix``
headers (the forwarded prefix *replaces* ``iiif.prefix``); otherwise the scheme and ``Host`` the
client used. Forwarded values that are not plausible hosts, ports or paths are ignored, so a
client cannot inject markup or another URL into an ``id``; a ``Host`` header that is not a host
(or whose port is out of range) is a 400, as HTTP requires.
"""

from __future__ import annotations

import re
from collections.abc import Mapping
from dataclasses import dataclass

from iiif_shim.base.errors import BadRequest

_HOST_RE = re.compile(r"(\[[0-9A-Fa-f:.]+\]|[A-Za-z0-9._-]+)(:\d{1,5})?")
_PREFIX_RE = re.compile(r"(/[A-Za-z0-9._~!$'()*+,;=:@%-]+)*/?")
_FORWARDED_PAIR_RE = re.compile(r'\s*([A-Za-z]+)\s*=\s*("(?:[^"\\]|\\.)*"|[^;,\s]*)\s*')


@dataclass(frozen=True)
class PublicBase:
    public_url: str | None
    prefix: str
    trust_forwarded: bool

    def site(self, scheme: str, host: str, headers: Mapping[str, str]) -> str:
        """``scheme://host[/path]``: the base less the IIIF prefix (object and viewer pages)."""
        base = self.base(scheme, host, headers)
        if self.public_url:
            return self.public_url.rstrip("/")
        split = base.find("/", base.find("//") + 2)
        origin, path = (base, "") if split < 0 else (base[:split], base[split:])
        return origin + (path.removesuffix(self.prefix) if self.prefix else path)

    def base(self, scheme: str, host: str, headers: Mapping[str, str]) -> str:
        """``scheme://host[/path]`` + prefix, for a request with these attributes."""
        if self.public_url:
            return self.public_url.rstrip("/") + self.prefix
        prefix = self.prefix
        if self.trust_forwarded:
            scheme, host, fwd_prefix = _forwarded(scheme, host, headers)
            if fwd_prefix is not None:
                prefix = fwd_prefix.rstrip("/")
        if not valid_host(host):
            raise BadRequest("the Host header is not a valid host")
        return f"{scheme}://{host}{prefix}"


def valid_host(host: str) -> bool:
    """A host name or address, with a port from 1 to 65535 if any."""
    found = _HOST_RE.fullmatch(host)
    if found is None:
        return False
    port = found.group(2)
    return port is None or 1 <= int(port[1:]) <= 65535


def _first(value: str | None) -> str | None:
    if value is None:
        return None
    first = value.split(",", 1)[0].strip()
    return first or None


def _forwarded(scheme: str, host: str, headers: Mapping[str, str]) -> tuple[str, str, str | None]:
    proto = fwd_host = None
    if (forwarded := headers.get("Forwarded")) is not None:
        element = forwarded.split(",", 1)[0]
        for m in _FORWARDED_PAIR_RE.finditer(element.replace(";", " ; ")):
            key, value = m.group(1).lower(), m.group(2).strip('"')
            if key == "proto":
                proto = value
            elif key == "host":
                fwd_host = value
    proto = proto or _first(headers.get("X-Forwarded-Proto"))
    fwd_host = fwd_host or _first(headers.get("X-Forwarded-Host"))
    if proto in ("http", "https"):
        scheme = proto
    if fwd_host and valid_host(fwd_host):
        host = fwd_host
    port = _first(headers.get("X-Forwarded-Port"))
    if port and port.isdigit() and 0 < int(port) < 65536:
        bare = host.rsplit(":", 1)[0] if not host.endswith("]") else host
        default = (scheme == "http" and port == "80") or (scheme == "https" and port == "443")
        host = bare if default else f"{bare}:{port}"
    prefix = _first(headers.get("X-Forwarded-Prefix"))
    if prefix is not None and not (prefix.startswith("/") and _PREFIX_RE.fullmatch(prefix)):
        prefix = None
    return scheme, host, prefix
