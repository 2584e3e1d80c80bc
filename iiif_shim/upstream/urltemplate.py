"""URL templates with ``{name}`` placeholders, expanded so no value can leave its place.

A placeholder in the path is percent-encoded as one path segment (``/`` becomes ``%2F``); one in
the query is encoded as a query value (``&``, ``=``, ``+``, ``;``, ``#`` encoded). Placeholders are
never allowed in the scheme, host or port.

Encoding alone does not contain a value: legacy web servers decode ``%2F`` and ``%2E`` (some
twice, some read ``%C0%AE`` as a dot, ``\\`` as a separator, ``;`` as the start of parameters, a
NUL as the end of a name) and then resolve dot segments, so ``..%2Fsecret`` still climbs out of
the template's folder on nginx. So every value is also checked, as it is and as each further
round of percent-decoding would leave it (:func:`unsafe_reason`): a value that is, or decodes to,
a dot segment, a backslash, a control character, invalid or overlong UTF-8, or a URL with an
authority (``scheme://``, ``//host``) is refused (:class:`UnsafeValue`) and the request never
leaves the shim. Finally, for templates with a placeholder in the path, the expanded URL is
checked to stay on the template's origin and under its fixed path (:meth:`UrlTemplate.expand`),
as a second line; a value in a query has only the first. That check (:meth:`UrlTemplate.within`)
is also what every redirect and every text URL under ``text_origins`` must pass, for whole URLs
written by others: it resolves ``.`` and ``..`` as each round of decoding leaves the path, and
refuses outright what a server might read as a separator or a dot segment that resolution does
not see (a backslash, ``..;``, a control character, ``%u``, trailing dots and spaces, fullwidth
dots) and bytes that are not UTF-8; a template whose own path is not UTF-8 once decoded is
refused when it is read. Origins are compared in one way everywhere (:func:`origin_of`: default
ports, case and IDNA made alike).

A value may still hold ``/``: behind a server that decodes ``%2F`` it then reaches sub-folders
of the template's fixed path (never above it). ``check-config`` warns where a route lets that
happen (:attr:`UrlTemplate.path_placeholders`). A template whose ``user:password@`` does not read
back as written (a password with ``/``, ``?`` or ``#`` not percent-encoded, whose first part
would be taken for the host or the port) is refused (``base/redaction.py``'s ``url_problem``).
"""

from __future__ import annotations

import posixpath
import re
import string
import unicodedata
from collections.abc import Mapping
from dataclasses import dataclass
from urllib.parse import quote, unquote_to_bytes, urlsplit

from yarl import URL

from iiif_shim.base.redaction import url_problem

_PATH_SAFE = "-._~!$'()*,;:@"  # RFC 3986 pchar minus "/", "&", "=" and "+" (ambiguous to servers)
_QUERY_SAFE = "-._~!$'()*,:@"  # also encodes ";", which old CGI servers split on
_DECODE_ROUNDS = 4  # legacy stacks decode at most twice; more rounds of encoding are refused
_CONTROL_RE = re.compile(r"[\x00-\x1f\x7f]")
_AUTHORITY_RE = re.compile(r"^\s*//|://")
_IIS_ESCAPE_RE = re.compile(r"%u[0-9A-Fa-f]{4}")
_SEPARATOR_RE = re.compile(r"[/\\?#]")  # where a segment ends, for some server or other


class UnsafeValue(ValueError):
    """A value that would make the upstream server reach something the template does not name."""


def unsafe_reason(value: str) -> str | None:
    """Why ``value`` may not fill a placeholder, or ``None`` when it is safe."""
    stage = value
    for _ in range(_DECODE_ROUNDS):
        for form in {stage, unicodedata.normalize("NFKC", stage)}:
            if reason := _reason(form):
                return reason
        try:
            decoded = unquote_to_bytes(stage).decode("utf-8")  # strict: overlong forms fail
        except UnicodeDecodeError:
            return "it decodes to invalid UTF-8"
        if decoded == stage:
            return None
        stage = decoded
    return "it is percent-encoded too many times"


def _reason(text: str) -> str | None:
    if _CONTROL_RE.search(text):
        return "it holds a control character"
    if "\\" in text:
        return "it holds a backslash"
    if _AUTHORITY_RE.search(text):
        return "it names a host"
    if text.startswith("/"):
        return "it is an absolute path"
    if _IIS_ESCAPE_RE.search(text):
        return "it holds a %u escape"
    for segment in _SEPARATOR_RE.split(text):
        name = segment.split(";", 1)[0]  # servlet containers drop ";params" from a segment
        if name and not name.rstrip(". "):  # ".", "..", and what Windows trims to them
            return "it holds a dot segment"
    return None


Origin = tuple[str, str, int]  # scheme, host, port


def origin_of(url: str | URL) -> Origin | None:
    """The origin of an http(s) URL as every same-origin decision compares it (credentials,
    redirects, expansions): the scheme and host lowercased, the host IDNA-encoded as it is sent
    (``Bücher.example`` is ``xn--bcher-kva.example``), the port filled in when it is the
    scheme's default (``https://h:443/`` and ``https://h/`` are one origin), the
    ``user:password@`` left out; ``None`` for anything else."""
    try:
        parsed = url if isinstance(url, URL) else URL(url)
        scheme, host, port = parsed.scheme.lower(), parsed.raw_host, parsed.port
    except (ValueError, TypeError, UnicodeError):
        return None
    if scheme not in ("http", "https") or not host or port is None:
        return None
    if not host.isascii():  # a URL taken as encoded keeps its host as written
        try:
            host = URL.build(scheme=scheme, host=host).raw_host or host
        except (ValueError, UnicodeError):
            return None
    return scheme, host.lower(), port


@dataclass(frozen=True)
class _Part:
    literal: str
    name: str | None
    in_query: bool


@dataclass(frozen=True)
class UrlTemplate:
    text: str
    parts: tuple[_Part, ...]

    @property
    def placeholders(self) -> frozenset[str]:
        return frozenset(p.name for p in self.parts if p.name)

    @property
    def path_placeholders(self) -> frozenset[str]:
        """Placeholders in the path (not the query): a ``/`` in their value becomes a path
        separator on servers that decode ``%2F``."""
        return frozenset(p.name for p in self.parts if p.name and not p.in_query)

    @property
    def origin(self) -> str | None:
        """``scheme://host:port`` of an http(s) template as written, else ``None``."""
        split = urlsplit(self.text.split("{", 1)[0])
        if split.scheme not in ("http", "https") or not split.hostname:
            return None
        return f"{split.scheme}://{split.netloc}".lower()

    @property
    def origin_key(self) -> Origin | None:
        """The template's origin as :func:`origin_of` compares it, else ``None``."""
        return origin_of(self.text.split("{", 1)[0]) if self.origin is not None else None

    @property
    def fixed_path(self) -> str:
        """The folder every expansion stays in: the literal path before the first path
        placeholder, up to its last ``/`` (for a template without one, its path's folder)."""
        head = self.text
        for part in self.parts:
            if part.name and not part.in_query:
                head = "".join(p.literal for p in self.parts[: self.parts.index(part) + 1])
                break
        path = urlsplit(head.split("?", 1)[0]).path if "://" in head else head.split("?", 1)[0]
        return path[: path.rfind("/") + 1] if "/" in path else ""

    @classmethod
    def parse(cls, text: str, *, require_http: bool = True) -> UrlTemplate:
        """Parse and check a template; raises ``ValueError`` with a message for ops staff."""
        try:
            pieces = list(string.Formatter().parse(text))
        except ValueError as exc:
            raise ValueError(f"bad placeholder syntax: {exc}") from None
        parts: list[_Part] = []
        in_query = False
        for literal, name, spec, conversion in pieces:
            if "#" in literal:
                raise ValueError("a URL template may not contain a fragment (#)")
            in_query = in_query or "?" in literal
            if name is not None:
                if not name.isidentifier():
                    raise ValueError(f"placeholder {{{name}}} must be a plain name")
                if spec or conversion:
                    raise ValueError(f"placeholder {{{name}}} takes no format spec")
            parts.append(_Part(literal, name if name is not None else None, in_query))
        template = cls(text, tuple(parts))
        if _decoded(text.split("?", 1)[0]) is None:  # every URL it made would be refused
            raise ValueError("its path percent-encodes bytes that are not UTF-8")
        if require_http:
            template._check_authority()
        return template

    def _check_authority(self) -> None:
        scheme, sep, head = self.text.partition("://")
        if not sep:
            raise ValueError("must be an http:// or https:// URL with a host")
        authority = head.split("/", 1)[0].split("?", 1)[0]
        if "{" in scheme or "{" in authority:
            raise ValueError("placeholders may not appear in the scheme, host or port")
        if "@" in self.text and (why := url_problem(self.text, at_in_path=True)):
            raise ValueError(why)  # a password that would be read as the host or the port
        split = urlsplit(self.expand({name: "x" for name in self.placeholders}))
        if split.scheme not in ("http", "https") or not split.hostname:
            raise ValueError("must be an http:// or https:// URL with a host")

    def expand(self, values: Mapping[str, str]) -> str:
        """The URL with each value encoded for its place; :class:`UnsafeValue` if a value is
        unsafe (see :func:`unsafe_reason`) or the result leaves the template's origin or its
        fixed path."""
        out: list[str] = []
        for part in self.parts:
            out.append(part.literal)
            if part.name is None:
                continue
            value = values[part.name]
            if reason := unsafe_reason(value):
                raise UnsafeValue(f"{{{part.name}}}: {reason}")
            out.append(quote(value, safe=_QUERY_SAFE if part.in_query else _PATH_SAFE))
        url = "".join(out)
        if self.parts and any(p.name for p in self.parts) and not self.within(url):
            raise UnsafeValue("the URL would leave the template's folder")
        return url

    def within(self, url: str) -> bool:
        """Whether ``url`` is on this template's origin and, as servers decoding it once or
        several times and then normalising it would read it, under its fixed path (compared
        as the same rounds of decoding leave it). A path any round leaves holding what some
        server reads as a separator or a dot segment that ``/``-separated resolution does not
        see (:func:`_other_separators`), or bytes that are not UTF-8 (overlong forms of ``.``
        and ``/`` among them), is not: its server might read it anywhere."""
        origin = self.origin_key
        if origin is None:  # a template for part of a URL: only its own fixed prefix counts
            path = url.split("?", 1)[0]
        else:
            if origin_of(url) != origin:
                return False
            path = urlsplit(url).path
        fixed = self.fixed_path
        for _ in range(_DECODE_ROUNDS):
            for form in {path, unicodedata.normalize("NFKC", path)}:
                resolved = _resolved(form)
                if _other_separators(form) or not resolved.startswith(fixed):
                    return False
                if resolved.split("/", 1)[0] == "..":
                    return False
            decoded, folder = _decoded(path), _decoded(fixed)
            if decoded is None or folder is None:
                return False
            if decoded == path:
                return True
            path, fixed = decoded, folder
        return False


def _decoded(text: str) -> str | None:
    """``text`` percent-decoded once, None when the bytes are not UTF-8 (strict: overlong
    forms, which old decoders read as ``.`` or ``/``, are not)."""
    try:
        return unquote_to_bytes(text).decode("utf-8")
    except UnicodeDecodeError:
        return None


def _other_separators(path: str) -> bool:
    """Whether ``path`` holds what some server reads as a separator or a dot segment, which
    resolving ``/``-separated ``.`` and ``..`` does not see: a backslash (IIS, Windows), a
    control character (a NUL ends a name for C servers), an IIS ``%u`` escape, or a segment
    that is dots once ``;params`` are dropped (servlet containers) or trailing dots and spaces
    trimmed (Windows), other than ``.`` and ``..`` themselves (resolved)."""
    if "\\" in path or _CONTROL_RE.search(path) or _IIS_ESCAPE_RE.search(path):
        return True
    for segment in path.split("/"):
        name = segment.split(";", 1)[0]
        if name and not name.rstrip(". ") and segment not in (".", ".."):
            return True
    return False


def _resolved(decoded: str) -> str:
    if not decoded:
        return ""
    resolved = posixpath.normpath(decoded)
    if decoded.startswith("/") and not resolved.startswith("/"):
        resolved = "/" + resolved
    if resolved.startswith("//"):
        resolved = "/" + resolved.lstrip("/")
    return resolved + ("/" if decoded.endswith("/") and resolved != "/" else "")


def url_template(text: str) -> str | None:
    """A settings check: ``text`` is a valid http(s) URL template."""
    try:
        UrlTemplate.parse(text)
    except ValueError as exc:
        return str(exc)
    return None


def fixed_url(text: str) -> str | None:
    """A settings check: ``text`` is an http(s) URL without placeholders."""
    if problem := url_template(text):
        return problem
    return "takes no placeholders" if UrlTemplate.parse(text).placeholders else None


def path_template(text: str) -> str | None:
    """A settings check: ``text`` is a valid template for part of a URL."""
    try:
        UrlTemplate.parse(text, require_http=False)
    except ValueError as exc:
        return str(exc)
    return None
