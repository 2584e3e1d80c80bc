"""URL templates with ``{name}`` placeholders, expanded safely for their place in the URL.

A placeholder in the path is percent-encoded as one path segment (``/`` becomes ``%2F``, a value
of ``.`` or ``..`` is encoded so no client normalises it away); one in the query is encoded as a
query value (``&``, ``=``, ``+``, ``#`` encoded). Placeholders are never allowed in the scheme,
host or port, so no identifier can change which server is asked, leave the template's path, or
add query parameters.
"""

from __future__ import annotations

import string
from collections.abc import Mapping
from dataclasses import dataclass
from urllib.parse import quote, urlsplit

_PATH_SAFE = "-._~!$'()*,;:@"  # RFC 3986 pchar minus "/", "&", "=" and "+" (ambiguous to servers)
_QUERY_SAFE = "-._~!$'()*,:@"  # also encodes ";", which old CGI servers split on


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
        split = urlsplit(self.expand({name: "x" for name in self.placeholders}))
        if split.scheme not in ("http", "https") or not split.hostname:
            raise ValueError("must be an http:// or https:// URL with a host")

    def expand(self, values: Mapping[str, str]) -> str:
        out: list[str] = []
        for part in self.parts:
            out.append(part.literal)
            if part.name is None:
                continue
            value = values[part.name]
            if part.in_query:
                out.append(quote(value, safe=_QUERY_SAFE))
            elif value in (".", ".."):
                out.append(value.replace(".", "%2E"))
            else:
                out.append(quote(value, safe=_PATH_SAFE))
        return "".join(out)


def url_template(text: str) -> str | None:
    """A settings check: ``text`` is a valid http(s) URL template."""
    try:
        UrlTemplate.parse(text)
    except ValueError as exc:
        return str(exc)
    return None


def path_template(text: str) -> str | None:
    """A settings check: ``text`` is a valid template for part of a URL."""
    try:
        UrlTemplate.parse(text, require_http=False)
    except ValueError as exc:
        return str(exc)
    return None
