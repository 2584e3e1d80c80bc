"""What ``backends:`` entries may say, one settings class per ``type:`` (:data:`BACKEND_SETTINGS`;
each backend module holds the behaviour), and what the settings alone tell ``check-config``:
the backend's URL templates, the placeholders a route must supply or may not use, what a route
that feeds it lets through, the identifier its health check asks for. Read by ``config/``
without loading any backend: nothing here talks to a server or touches a pixel.
"""

from __future__ import annotations

import re
from collections.abc import Mapping
from dataclasses import dataclass
from pathlib import Path
from types import MappingProxyType
from typing import Any, ClassVar

from iiif_shim.base.schema import Finding, at_least, option, problem, warning
from iiif_shim.iiif.profile import Format, Quality
from iiif_shim.upstream.jsonpath import path_check, select
from iiif_shim.upstream.parse import parse_json, parse_xml
from iiif_shim.upstream.settings import UpstreamSettings
from iiif_shim.upstream.urltemplate import UrlTemplate, fixed_url, path_template, url_template


class BackendSettings:
    """What every backend type's settings answer from the settings alone (a mixin of the
    settings dataclasses below; ``type_name`` is their ``type:``)."""

    type_name: ClassVar[str]

    def templates(self) -> Mapping[str, UrlTemplate]:
        """The backend's URL templates by their key in its settings (``url``, ``image.url``)."""
        return {}

    def reserved(self) -> frozenset[str]:
        """Placeholder names the backend fills itself (a route's named group may not use them)."""
        return frozenset()

    def placeholders(self) -> frozenset[str]:
        """Template placeholders a route must supply (checked against each route)."""
        names = frozenset().union(*(t.placeholders for t in self.templates().values()))
        return names - self.reserved()

    def route_findings(self, slashed: frozenset[str], admitted: bool) -> list[Finding]:
        """What ``check-config`` says of a route that feeds this backend: ``slashed`` are the
        placeholders whose value may hold a ``/`` from the identifier, ``admitted`` whether the
        route names the identifiers it takes (a match anchored at the start)."""
        found = []
        for key, template in self.templates().items():
            # a template for part of a URL (a loader path, a FIF) is a path all through
            paths = template.placeholders if template.origin is None else template.path_placeholders
            for name in sorted(paths & slashed):
                where = (
                    f"any file below {template.fixed_path!r} (never above it)"
                    if template.fixed_path
                    else "any file the server serves"
                )
                found.append(
                    warning(
                        key,
                        f"{{{name}}} may hold '/' from identifiers: on a server that decodes %2F "
                        f"it then reaches {where}; restrict the route's match (e.g. [^/]+) if "
                        "that is not intended",
                    )
                )
        return found

    def health_id(self) -> str | None:
        """An identifier routed to this backend, whose facts its health check asks for."""
        return None


@dataclass(frozen=True, kw_only=True)
class NetworkSettings(UpstreamSettings, BackendSettings):
    """The settings of every backend that talks HTTP to a legacy server."""

    probe_id: str | None = option(
        None,
        doc="an identifier routed to this backend whose facts the background health check "
        "asks for (`null`: any answer below 500 from the server's root counts)",
    )
    spill_dir: Path | None = option(
        None,
        doc="folder where image answers of more than 4 MiB are written while they are read "
        "(unnamed files, gone when done); it needs room for `max_bytes` times the image "
        "requests served at once, and no room there is a 503. `null`: the disk cache's folder "
        "(`cache.disk`) when there is one, else `TMPDIR` (`/tmp` unless set). A folder in "
        "memory (`tmpfs`, as `/tmp` is on some systems) holds those answers in RAM: "
        "`check-config` warns, and what is written there counts against the memory budget "
        "(from an answer's declared length, else as it is written)",
    )

    def health_id(self) -> str | None:
        return self.probe_id


def _folder(path: Path) -> str | None:
    return None if path.is_dir() else f"{path} is not a folder"


def _extensions(exts: tuple[str, ...]) -> str | None:
    bad = [e for e in exts if not e.startswith(".") or "/" in e]
    return f"each extension starts with '.': {bad}" if bad else None


@dataclass(frozen=True)
class FilesSettings(BackendSettings):
    type_name = "files"
    type: str = option(doc="`files`")
    root: Path = option(doc="folder of master images (relative to the config file)", check=_folder)
    extensions: tuple[str, ...] = option(
        (".tif", ".tiff", ".jp2", ".jpg", ".jpeg", ".png"),
        doc="tried in order after the bare name",
        check=_extensions,
    )


@dataclass(frozen=True, kw_only=True)
class HttpSettings(NetworkSettings):
    type_name = "http"
    type: str = option(doc="`http`")
    url: str = option(
        doc="URL template of one image, e.g. `http://host/masters/{id}.tif`", check=url_template
    )
    probe_bytes: int = option(
        256 * 1024, doc="bytes read to learn an image's size", check=at_least(1024)
    )

    def templates(self) -> Mapping[str, UrlTemplate]:
        return {"url": UrlTemplate.parse(self.url)}


@dataclass(frozen=True, kw_only=True)
class PyramidSettings(NetworkSettings):
    tile_cache_bytes: int = option(
        32 * 1024 * 1024,
        doc="recent tiles kept (neighbouring requests share tiles)",
        check=at_least(0),
    )


@dataclass(frozen=True, kw_only=True)
class IipSettings(PyramidSettings):
    type_name = "iip"
    type: str = option(doc="`iip`")
    url: str = option(
        doc="iipsrv's FastCGI URL, e.g. `http://host/fcgi-bin/iipsrv.fcgi`", check=fixed_url
    )
    path: str = option(doc="template of the `FIF=` value, e.g. `{id}.tif`", check=path_template)
    max_cvt: int = option(
        5000, doc="iipsrv's `MAX_CVT`: larger outputs are stitched from tiles", check=at_least(1)
    )
    min_native_size: int = option(
        8, doc="outputs with a side under this come from tiles", check=at_least(1)
    )

    def templates(self) -> Mapping[str, UrlTemplate]:
        # the FIF value sits in a query: its placeholders are encoded as a query value
        return {
            "url": UrlTemplate.parse(self.url),
            "path": UrlTemplate.parse("?" + self.path, require_http=False),
        }


def _dzi_url(text: str) -> str | None:
    problem = url_template(text)
    if problem is None and not text.split("?", 1)[0].endswith(".dzi"):
        return "must be the URL of the .dzi file (ending in .dzi)"
    return problem


@dataclass(frozen=True, kw_only=True)
class DeepZoomSettings(PyramidSettings):
    type_name = "deepzoom"
    type: str = option(doc="`deepzoom`")
    url: str = option(
        doc="URL template of the `.dzi`, e.g. `http://host/tiles/{id}.dzi`", check=_dzi_url
    )

    def templates(self) -> Mapping[str, UrlTemplate]:
        return {"url": UrlTemplate.parse(self.url)}


_TILE_SUFFIX_RE = re.compile(r"[A-Za-z0-9]+")


@dataclass(frozen=True, kw_only=True)
class ZoomifySettings(PyramidSettings):
    type_name = "zoomify"
    type: str = option(doc="`zoomify`")
    url: str = option(
        doc="URL template of the folder holding `ImageProperties.xml`, e.g. "
        "`http://host/zoomify/{id}/`",
        check=url_template,
    )
    tile_format: str = option(
        "jpg",
        doc="file extension of the tiles (the XML does not say)",
        check=lambda v: (
            None if _TILE_SUFFIX_RE.fullmatch(v) else "letters and digits only, e.g. jpg"
        ),
    )

    def templates(self) -> Mapping[str, UrlTemplate]:
        return {"url": UrlTemplate.parse(self.url)}


@dataclass(frozen=True, kw_only=True)
class ThumborSettings(NetworkSettings):
    type_name = "thumbor"
    type: str = option(doc="`thumbor`")
    url: str = option(doc="Thumbor's base URL, e.g. `http://thumbor:8888`", check=fixed_url)
    path: str = option(
        "{id}", doc="the image part of the URL (Thumbor's loader path)", check=path_template
    )
    security_key: str | None = option(
        None,
        secret=True,
        doc="a secret (`security_key_file` names a file holding it; never printed): sign "
        "every URL with it (HMAC-SHA1); `null`: `unsafe` URLs. A signing key must "
        "not sign whatever an identifier makes: with one, `check-config` refuses a `path` "
        "that starts with a placeholder (with an HTTP loader the identifier would name "
        "the host); give it a fixed beginning such as `masters/{id}` or "
        "`images.example.org/{id}`. Without one, it warns unless the route's match is "
        "anchored",
    )

    def templates(self) -> Mapping[str, UrlTemplate]:
        return {
            "url": UrlTemplate.parse(self.url),
            "path": UrlTemplate.parse(self.path, require_http=False),
        }

    def route_findings(self, slashed: frozenset[str], admitted: bool) -> list[Finding]:
        found = super().route_findings(slashed, admitted)
        path = self.templates()["path"]
        signed = self.security_key is not None
        if path.parts and path.parts[0].literal == "" and (signed or not admitted):
            # the identifier is the start of the loader path: with an HTTP loader it names the
            # host, and a signing key would sign whatever it names
            message = (
                "starts with a placeholder, so an identifier chooses the whole Thumbor "
                "loader path (with an HTTP loader, any host)"
                + (
                    ", which security_key would sign; give `path` a fixed beginning, e.g. "
                    "`masters/{id}` or `images.example.org/{id}`"
                    if signed
                    else "; give `path` a fixed beginning"
                )
            )
            found.append(problem("path", message) if signed else warning("path", message))
        return found


@dataclass(frozen=True, kw_only=True)
class IiifSettings(NetworkSettings):
    type_name = "iiif"
    type: str = option(doc="`iiif`")
    url: str = option(
        doc="URL template of the upstream image service's base URI, e.g. "
        "`http://old-server/iiif/2/{id}`",
        check=url_template,
    )
    min_native_size: int = option(
        8,
        doc="outputs with a side under this are not asked of the upstream's scaler (tiles or "
        "the unscaled region instead): iipsrv's IIIF endpoint crashes on some",
        check=at_least(1),
    )
    tile_cache_bytes: int = option(
        32 * 1024 * 1024, doc="recent level-0 tiles kept", check=at_least(0)
    )

    def templates(self) -> Mapping[str, UrlTemplate]:
        return {"url": UrlTemplate.parse(self.url)}

    def route_findings(self, slashed: frozenset[str], admitted: bool) -> list[Finding]:
        # an Image API service reads %2F as part of the identifier, never as a folder
        return []


REGION_MODES = ("none", "pixels", "fractions", "scaled")
SIZE_MODES = ("none", "exact", "keep_aspect")
_COMPUTED = {
    "x",
    "y",
    "w",
    "h",
    "width",
    "height",
    "scale_pct",
    "scaled_x",
    "scaled_y",
    "rotation",
    "format",
    "quality",
}


_NEEDS = {
    "pixels": {"x", "y", "w", "h"},
    "fractions": {"x", "y", "w", "h"},
    "scaled": {"scaled_x", "scaled_y", "width", "height"},
}


def _one_of(choices: tuple[str, ...]) -> Any:
    return lambda v: None if v in choices else f"must be one of {', '.join(choices)}"


@dataclass(frozen=True)
class Extract:
    """Where a number is in the metadata answer: give exactly one of the three."""

    json: str | None = option(
        None,
        doc="path in a JSON answer, e.g. `image.width`, `sizes.0.width` or `$.sizes[0].width` "
        "(its first match)",
        check=path_check,
    )
    xml: str | None = option(None, doc="element path and attribute in XML, e.g. `Size/@Width`")
    regex: str | None = option(None, doc="regular expression on the text; its first group")

    def findings(self) -> list[Finding]:
        given = [k for k in ("json", "xml", "regex") if getattr(self, k) is not None]
        if len(given) != 1:
            return [problem("", "give exactly one of json, xml or regex")]
        if self.xml is not None and "@" not in self.xml:
            return [problem("xml", "must end in an attribute, e.g. `Size/@Width`")]
        if self.regex is not None:
            try:
                if re.compile(self.regex).groups < 1:
                    return [
                        problem("regex", "needs a group around the number, e.g. `Width=(\\d+)`")
                    ]
            except re.error as exc:
                return [problem("regex", f"not a valid regular expression: {exc}")]
        return []

    def find(self, text: str) -> int:
        """The number in ``text``; ValueError when it is not there."""
        if self.json is not None:
            matches = select(parse_json(text), self.json)
            if not matches:
                raise ValueError(f"nothing at {self.json}")
            return _number(matches[0])
        if self.xml is not None:
            element_path, _, attribute = self.xml.rpartition("@")
            root = parse_xml(text)  # tag names without their XML namespaces
            element_path = element_path.rstrip("/")
            found = root if element_path in ("", ".", root.tag) else root.find(element_path)
            if found is None:
                found = root.find(".//" + element_path.rsplit("/", 1)[-1])
            if found is None or attribute not in found.attrib:
                raise ValueError(f"no {self.xml}")
            return _number(found.attrib[attribute])
        assert self.regex is not None
        m = re.search(self.regex, text)
        if m is None:
            raise ValueError(f"no match for {self.regex}")
        return _number(m.group(1))


def _number(value: Any) -> int:
    number = int(float(value))
    if number < 1:
        raise ValueError(f"{value!r} is not a positive size")
    return number


@dataclass(frozen=True)
class TemplateInfo:
    url: str = option(doc="URL template of the metadata answer", check=url_template)
    width: Extract = option(doc="where the width is")
    height: Extract = option(doc="where the height is")


@dataclass(frozen=True)
class TemplateImage:
    url: str = option(doc="URL template of an image", check=url_template)
    region: str = option(
        "none",
        doc="`pixels` or `fractions` (`{x} {y} {w} {h}`, in any order), or `scaled` "
        "(`{scaled_x} {scaled_y}`, the offset at the output scale, with `{width} "
        "{height}` as the viewport and `{scale_pct}`), or `none`",
        check=_one_of(REGION_MODES),
    )
    size: str = option(
        "none",
        doc="`exact` (`{width} {height}`, may distort), `keep_aspect` "
        "(`{width}`/`{height}`/`{scale_pct}`), or `none`",
        check=_one_of(SIZE_MODES),
    )
    upscale: bool = option(False, doc="the server enlarges beyond the region")
    max_size: int | None = option(None, doc="the longest side it will scale to", check=at_least(1))
    rotation: tuple[int, ...] = option(
        (), doc="the clockwise 90s it turns by (`{rotation}`), e.g. `[90, 180, 270]`"
    )
    formats: Mapping[str, str] = option(
        MappingProxyType({"jpg": "jpeg"}), doc="IIIF format → the server's word for `{format}`"
    )
    qualities: Mapping[str, str] = option(
        MappingProxyType({}),
        doc="IIIF quality → the server's word for `{quality}` (name `default` too)",
    )

    def findings(self) -> list[Finding]:
        found: list[Finding] = []
        names = UrlTemplate.parse(self.url).placeholders
        if self.region in _NEEDS and not _NEEDS[self.region] <= names:
            missing = ", ".join("{" + n + "}" for n in sorted(_NEEDS[self.region] - names))
            found.append(problem("url", f"region: {self.region} needs {missing}"))
        if self.region == "scaled" and self.size != "keep_aspect":
            found.append(problem("size", "region: scaled needs size: keep_aspect"))
        if self.size != "none" and not ({"width", "height", "scale_pct"} & names):
            found.append(
                problem("url", f"size: {self.size} needs {{width}}, {{height}} or {{scale_pct}}")
            )
        if self.rotation and "rotation" not in names:
            found.append(problem("url", "rotation is listed but the URL has no {rotation}"))
        if bad := [r for r in self.rotation if r not in (90, 180, 270)]:
            found.append(problem("rotation", f"only 90, 180 and 270 can be native, not {bad}"))
        if bad_f := [f for f in self.formats if f not in {x.value for x in Format}]:
            found.append(problem("formats", f"not IIIF formats: {bad_f}"))
        if not self.formats:
            found.append(problem("formats", "name at least the format the server sends"))
        if bad_q := [q for q in self.qualities if q not in {x.value for x in Quality}]:
            found.append(problem("qualities", f"not IIIF qualities: {bad_q}"))
        if self.qualities and "quality" not in names:
            found.append(problem("url", "qualities are listed but the URL has no {quality}"))
        if "quality" in names and "default" not in self.qualities:
            found.append(problem("qualities", "the URL has {quality}: name the server's `default`"))
        if "format" in names and not self.formats:
            found.append(problem("formats", "the URL has {format}: map at least `jpg`"))
        return found


@dataclass(frozen=True, kw_only=True)
class TemplateSettings(NetworkSettings):
    type_name = "template"
    type: str = option(doc="`template`")
    info: TemplateInfo = option(
        doc="the metadata request: `url`, and where `width` and `height` are"
    )
    image: TemplateImage = option(doc="the image request and what the server does natively")

    def templates(self) -> Mapping[str, UrlTemplate]:
        return {
            "info.url": UrlTemplate.parse(self.info.url),
            "image.url": UrlTemplate.parse(self.image.url),
        }

    def reserved(self) -> frozenset[str]:
        return frozenset(_COMPUTED)


BACKEND_SETTINGS: Mapping[str, type[BackendSettings]] = MappingProxyType(
    {
        cls.type_name: cls
        for cls in (
            FilesSettings,
            HttpSettings,
            IipSettings,
            DeepZoomSettings,
            ZoomifySettings,
            ThumborSettings,
            IiifSettings,
            TemplateSettings,
        )
    }
)
