"""The built-in IIIF viewers: Mirador, Universal Viewer, OpenSeadragon, Leaflet-IIIF and Clover.

Owns the ``viewers:`` settings (:class:`ViewerSettings`), the pinned browser packages
(:data:`PACKAGES`, kept in step with ``deploy/viewers.sh``, which installs them into the assets
folder as ``NAME@VERSION/``) and the viewer pages (the web side serves them:
``iiif_shim.web.viewers``):

- :func:`viewer_page` for ``GET /view/{viewer}?iiif-content=...`` (also ``?manifest=URI`` with
  an optional ``&canvas=URI``, and ``?image=URI`` for a bare image service). The parameter is
  read (:func:`target_from_query`) with :mod:`iiif_shim.iiif.contentstate`; the page gets the
  result as JSON data, never as script source, and the viewer opens the manifest at the canvas
  and region asked for. Manifests and images are fetched by the browser, from any origin.
- :data:`BUILTIN_VIEWERS` and :func:`viewer_url` / :func:`external_links` for pages that link
  to the viewers.

Without the assets the viewer pages answer 503 naming the command that installs them
(:func:`missing_page`).
"""

from __future__ import annotations

import html
from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from pathlib import Path
from types import MappingProxyType
from urllib.parse import quote, urlsplit

from iiif_shim.base.schema import option
from iiif_shim.base.text import script_json
from iiif_shim.iiif import contentstate
from iiif_shim.iiif.contentstate import Target

DEFAULT_ASSETS = Path(__file__).resolve().parents[2] / ".viewers"
INSTALL_COMMAND = "bash deploy/viewers.sh"
STAMP = ".installed"  # written by deploy/viewers.sh once a package is complete

# npm package -> pinned version (deploy/viewers.sh has the same table, with checksums)
PACKAGES: Mapping[str, str] = MappingProxyType(
    {
        "mirador": "4.0.0",
        "universalviewer": "4.4.0",
        "openseadragon": "6.1.1",
        "leaflet": "1.9.4",
        "leaflet-iiif": "3.0.0",
        "@samvera/clover-iiif": "3.3.8",
    }
)

BUILTIN_VIEWERS: Mapping[str, str] = MappingProxyType(
    {
        "mirador": "Mirador",
        "uv": "Universal Viewer",
        "osd": "OpenSeadragon",
        "leaflet": "Leaflet-IIIF",
        "clover": "Clover",
    }
)


def _http_url(value: str) -> str | None:
    split = urlsplit(value)
    if split.scheme not in ("http", "https") or not split.hostname:
        return "must be an http:// or https:// URL"
    return None


def _base_url(value: str | None) -> str | None:
    if value is None:
        return None
    if problem := _http_url(value):
        return problem
    if urlsplit(value).query or urlsplit(value).fragment:
        return "must not have a query or fragment"
    return None


def _builtin(value: str) -> str | None:
    if value in BUILTIN_VIEWERS:
        return None
    return f"must be one of the built-in viewers: {', '.join(BUILTIN_VIEWERS)}"


def _external(value: Mapping[str, str]) -> str | None:
    for label, template in value.items():
        if not label.strip():
            return "labels must not be empty"
        if "{url}" not in template:
            return f"{label}: the URL template must contain {{url}} (the encoded manifest URL)"
        if _http_url(template.replace("{url}", "x")):
            return f"{label}: the URL template must be an http:// or https:// URL"
    return None


@dataclass(frozen=True)
class ViewerSettings:
    assets: Path | None = option(
        None,
        doc="folder of the viewers' files that `bash deploy/viewers.sh` fills (null: "
        "`.viewers` at the source root)",
    )
    base_url: str | None = option(
        None,
        doc="load the viewers' files from here instead (a copy of the assets folder, or an "
        "npm CDN such as `https://cdn.jsdelivr.net/npm`: paths are `NAME@VERSION/FILE`)",
        check=_base_url,
    )
    default: str = option(
        "mirador",
        doc="the viewer embedded on object pages (`mirador`, `uv`, `osd`, `leaflet`, `clover`)",
        check=_builtin,
    )
    external: Mapping[str, str] = option(
        MappingProxyType({}),
        doc="other viewers linked from object pages: label -> URL template with `{url}` for "
        "the percent-encoded manifest URL",
        check=_external,
    )

    @property
    def folder(self) -> Path:
        return self.assets if self.assets is not None else DEFAULT_ASSETS


# --- links ------------------------------------------------------------------------------------


def viewer_url(name: str, content: str) -> str:
    """The link to a built-in viewer page for ``content`` (a manifest URL or a content state)."""
    if name not in BUILTIN_VIEWERS:
        raise ValueError(f"no built-in viewer named {name!r}")
    return f"/view/{name}?iiif-content={quote(content, safe=':/')}"


def external_links(settings: ViewerSettings, manifest: str) -> tuple[tuple[str, str], ...]:
    """(label, URL) of each configured external viewer, opening ``manifest``."""
    encoded = quote(manifest, safe="")
    return tuple((label, t.replace("{url}", encoded)) for label, t in settings.external.items())


# --- what each viewer needs -------------------------------------------------------------------


@dataclass(frozen=True)
class _Viewer:
    packages: tuple[str, ...]
    scripts: tuple[str, ...]  # "package/path" inside the assets folder, before the version
    styles: tuple[str, ...]
    boot: str  # the page's own script (static text; the target arrives as JSON data)
    needs_manifest: bool = True


def _asset_path(ref: str) -> str:
    """``"mirador:dist/mirador.min.js"`` -> ``"mirador@4.0.0/dist/mirador.min.js"``."""
    package, _, path = ref.partition(":")
    return f"{package}@{PACKAGES[package]}/{path}"


# Shared by every page: read the target, show problems in the page.
_PRELUDE = """\
"use strict";
const target = JSON.parse(document.getElementById("iiif-target").textContent);
function fail(message) {
  const box = document.getElementById("problem");
  box.textContent = String(message && message.message ? message.message : message);
  box.hidden = false;
}
window.addEventListener("error", (event) => fail(event.message));
"""

# OpenSeadragon and Leaflet show one image: find it in a manifest (Presentation 3 or 2.1).
_FIND_IMAGE = """\
const list = (x) => (x == null ? [] : Array.isArray(x) ? x : [x]);
const idOf = (x) => (x && typeof x === "object" ? x.id || x["@id"] : x);
const typeOf = (x) => String((x && (x.type || x["@type"])) || "").replace(/^(sc|oa|dctypes):/, "");
const noFragment = (u) => String(u || "").split("#")[0];
async function getJson(url) {
  const response = await fetch(url, {
    credentials: "omit", headers: { Accept: "application/ld+json, application/json" },
  });
  if (!response.ok) throw new Error(url + " answered HTTP " + response.status);
  return response.json();
}
function labelOf(resource) {
  const label = resource && resource.label;
  if (typeof label === "string") return label;
  if (label && typeof label === "object") {
    for (const values of Object.values(label)) {
      if (list(values).length) return String(list(values)[0]);
    }
  }
  return "";
}
function imageServiceOf(body) {
  for (const choice of [body, ...list(body && body.items), body && body.default]) {
    if (!choice || typeof choice !== "object") continue;
    for (const service of list(choice.service)) {
      const kind = typeOf(service) + " " + String(service["@context"] || "") + " " +
        JSON.stringify(service.profile || "");
      if (/ImageService[123]|iiif\\.io\\/api\\/image/.test(kind) && idOf(service)) {
        return String(idOf(service)).replace(/\\/+$/, "").replace(/\\/info\\.json$/, "");
      }
    }
  }
  return null;
}
function paintingOf(canvas) {
  for (const page of list(canvas.items)) {
    for (const annotation of list(page.items)) {
      const motivation = list(annotation.motivation);
      if (motivation.length && !motivation.includes("painting")) continue;
      for (const body of list(annotation.body)) return body;
    }
  }
  for (const image of list(canvas.images)) return image.resource;
  return null;
}
async function locateImage() {
  if (target.image_service) return { service: target.image_service, canvas: null, label: "" };
  let doc = await getJson(target.manifest);
  for (let depth = 0; typeOf(doc) === "Collection" && depth < 4; depth++) {
    const members = [...list(doc.items), ...list(doc.manifests), ...list(doc.members)];
    const next = members.find((m) => typeOf(m) === "Manifest" || typeOf(m) === "Collection");
    if (!next) throw new Error("the collection lists no manifest");
    doc = await getJson(idOf(next));
  }
  const canvases = Array.isArray(doc.items)
    ? doc.items.filter((c) => typeOf(c) === "Canvas")
    : list((list(doc.sequences)[0] || {}).canvases);
  if (!canvases.length) throw new Error("the manifest has no canvases");
  let canvas = canvases[0];
  if (target.canvas) {
    canvas = canvases.find((c) => noFragment(idOf(c)) === target.canvas);
    if (!canvas) throw new Error("the manifest has no canvas " + target.canvas);
  }
  const service = imageServiceOf(paintingOf(canvas));
  if (!service) throw new Error("the canvas has no IIIF image service");
  return { service, canvas, label: labelOf(doc) };
}
// the target's region in the image's own pixels (a canvas may be sized unlike its image)
function imageRegion(found, info) {
  if (!target.region) return null;
  const [x, y, w, h] = target.region;
  const sx = found.canvas && found.canvas.width ? info.width / found.canvas.width : 1;
  const sy = found.canvas && found.canvas.height ? info.height / found.canvas.height : 1;
  return [x * sx, y * sy, w * sx, h * sy];
}
"""

_MIRADOR = """\
const windowConfig = { id: "main", manifestId: target.manifest };
if (target.canvas) windowConfig.canvasId = target.canvas;
if (target.region) windowConfig.view = "single";
const mirador = Mirador.viewer({
  id: "viewer",
  windows: [windowConfig],
  window: {
    allowClose: false, allowMaximize: false, sideBarOpenByDefault: true,
    defaultSideBarPanel: "info",
  },
  workspaceControlPanel: { enabled: false },
});
window.iiifViewer = mirador;
// Mirador 4.0.0 keeps the tiled image it drew before a login (its tile source does not follow a
// new info.json of the same image): once an image's info response turns from degraded (401, or
// a lower tier) to full, ask for it again, which replaces the old tiled image with the full one.
const degradedInfo = new Set();
mirador.store.subscribe(() => {
  const state = mirador.store.getState();
  const infos = (state.mirador || state).infoResponses || {};
  for (const [id, info] of Object.entries(infos)) {
    if (info.degraded) degradedInfo.add(id);
    else if (!info.isFetching && info.json && degradedInfo.has(id)) {
      degradedInfo.delete(id);
      mirador.store.dispatch(Mirador.fetchInfoResponse({ imageId: id }));
    }
  }
});
if (target.region) {
  // A canvas change resets the viewport, the starting one included: put the region back
  // until OpenSeadragon has opened at it (its first viewport report then carries a zoom).
  const store = mirador.store;
  const unsubscribe = store.subscribe(() => {
    const state = store.getState();
    const slice = state.mirador || state;
    const win = slice.windows && slice.windows.main;
    const viewer = slice.viewers && slice.viewers.main;
    if (!win || win.canvasId !== target.canvas) return;
    if (viewer && viewer.zoom != null) { unsubscribe(); return; }
    if (viewer && viewer.bounds) return;
    store.dispatch(Mirador.updateViewport("main", { bounds: target.region }));
  });
}
"""

_UV = """\
// UV 4.4 gives OpenSeadragon data: URLs for its hidden buttons but no prefixUrl, so OpenSeadragon
// asks for "/images/data:..." (a 404 on every page); give those images their data: URL.
const imageSrc = Object.getOwnPropertyDescriptor(HTMLImageElement.prototype, "src");
Object.defineProperty(HTMLImageElement.prototype, "src", {
  ...imageSrc,
  set(value) {
    const text = String(value);
    const at = text.indexOf("/images/data:");
    imageSrc.set.call(this, at >= 0 ? text.slice(at + "/images/".length) : value);
  },
});
// UV 4.4 has OpenSeadragon load tiles as CORS images (crossOrigin "anonymous", not configurable),
// which leaves a login's cookie off every tile from another origin: load them as plain images,
// and keep OpenSeadragon to its canvas drawer (its WebGL drawer cannot draw such images).
const crossOrigin = Object.getOwnPropertyDescriptor(HTMLImageElement.prototype, "crossOrigin");
Object.defineProperty(HTMLImageElement.prototype, "crossOrigin", {
  ...crossOrigin,
  set(value) {
    if (String(value).toLowerCase() !== "anonymous") crossOrigin.set.call(this, value);
  },
});
const getContext = HTMLCanvasElement.prototype.getContext;
HTMLCanvasElement.prototype.getContext = function (kind, ...rest) {
  return /webgl/i.test(String(kind)) ? null : getContext.call(this, kind, ...rest);
};
const element = document.getElementById("viewer");
element.classList.add("uv");
const data = { iiifManifestId: target.manifest, embedded: true };
if (target.canvas) data.canvasId = target.canvas;
if (target.region) data.xywh = target.region.join(",");
function fit() {
  element.style.width = window.innerWidth + "px";
  element.style.height = window.innerHeight + "px";
}
fit();
window.addEventListener("resize", fit);
const uv = UV.init(element, data);
window.iiifViewer = uv;
if (target.region) {
  // the region is in the canvas's pixels: show that canvas alone, not as a two-page spread
  uv.on("configure", ({ cb }) => cb(Promise.resolve({ options: { pagingEnabled: false } })));
}
"""

_OSD = """\
(async () => {
  const found = await locateImage();
  const info = await getJson(found.service + "/info.json");
  if (found.label) document.title = found.label + " \\u2013 OpenSeadragon";
  const viewer = OpenSeadragon({
    element: document.getElementById("viewer"),
    prefixUrl: target.assets + "/openseadragon@" + target.versions.openseadragon +
      "/build/openseadragon/images/",
    tileSources: info,
    crossOriginPolicy: "Anonymous",
    showNavigator: true,
  });
  window.iiifViewer = viewer;
  const region = imageRegion(found, info);
  viewer.addOnceHandler("open", () => {
    if (region) {
      viewer.viewport.fitBounds(viewer.viewport.imageToViewportRectangle(...region), true);
    }
  });
  viewer.addHandler("open-failed", (event) => fail(event.message));
})().catch(fail);
"""

_LEAFLET = """\
(async () => {
  const found = await locateImage();
  const info = await getJson(found.service + "/info.json");
  if (found.label) document.title = found.label + " \\u2013 Leaflet-IIIF";
  const map = L.map("viewer", { center: [0, 0], crs: L.CRS.Simple, zoom: 0, zoomSnap: 0.1 });
  window.iiifViewer = map;
  // The view is set first (to the region or the whole image), so no tile is asked for at a
  // zoom that is then left; the layer's own fit is off as it assumes no zoom levels past the
  // image's pixels, which are allowed here (Leaflet-IIIF stops there unless told).
  const tile = (info.tiles && info.tiles[0] && info.tiles[0].width) || 256;
  const native = Math.max(0, Math.ceil(Math.log2(Math.max(info.width, info.height) / tile)));
  const [x, y, w, h] = imageRegion(found, info) || [0, 0, info.width, info.height];
  const corners = [map.unproject([x, y + h], native), map.unproject([x + w, y], native)];
  map.fitBounds(L.latLngBounds(corners), { animate: false });
  const layer = L.tileLayer.iiif(found.service + "/info.json", {
    fitBounds: false, maxZoom: native + 3,
  });
  layer.addTo(map);
})().catch(fail);
"""

# The clover-viewer element fails on any content-state annotation ("l is not a function",
# samvera-labs/clover-iiif#312, open for 3.3.x), so it gets the manifest URL alone: Clover opens
# at the first canvas, without the region.
_CLOVER = """\
const element = document.createElement("clover-viewer");
element.setAttribute("iiif-content", target.manifest);
document.getElementById("viewer").appendChild(element);
"""

VIEWERS: Mapping[str, _Viewer] = MappingProxyType(
    {
        "mirador": _Viewer(("mirador",), ("mirador:dist/mirador.min.js",), (), _MIRADOR),
        "uv": _Viewer(
            ("universalviewer",),
            ("universalviewer:dist/umd/UV.js",),
            ("universalviewer:dist/uv.css",),
            _UV,
        ),
        "osd": _Viewer(
            ("openseadragon",),
            ("openseadragon:build/openseadragon/openseadragon.min.js",),
            (),
            _FIND_IMAGE + _OSD,
            needs_manifest=False,
        ),
        "leaflet": _Viewer(
            ("leaflet", "leaflet-iiif"),
            ("leaflet:dist/leaflet.js", "leaflet-iiif:leaflet-iiif.js"),
            ("leaflet:dist/leaflet.css",),
            _FIND_IMAGE + _LEAFLET,
            needs_manifest=False,
        ),
        "clover": _Viewer(
            ("@samvera/clover-iiif",),
            ("@samvera/clover-iiif:dist/web-components/index.umd.js",),
            (),
            _CLOVER,
        ),
    }
)

_STYLE = """\
html, body { margin: 0; height: 100%; overflow: hidden; font-family: system-ui, sans-serif; }
#viewer { position: absolute; inset: 0; }
#viewer > clover-viewer { display: block; height: 100%; overflow: auto; }
/* Clover 3.3.8's Annotations tab crashes the whole viewer on any annotation item (a variable its
   minifier shadowed), and objects with text reference their lines as annotations; its web
   component takes no options (only id and iiif-content), so the tab is hidden. */
clover-viewer [role=tab][id$="-trigger-manifest-annotations"] { display: none; }
#problem { position: absolute; z-index: 10000; left: 1em; right: 1em; top: 1em; margin: 0;
  padding: .75em 1em; background: #fff3f3; color: #8a1111; border: 1px solid #d88; }
"""


# --- pages ------------------------------------------------------------------------------------


def viewer_page(viewer: str, target: Target, assets: str) -> str:
    """The HTML page of a built-in viewer opening ``target``; ``assets`` is the URL (absolute
    or relative to the page) under which the packages' ``NAME@VERSION/`` folders are."""
    spec = VIEWERS[viewer]
    base = assets.rstrip("/")
    data = {
        "viewer": viewer,
        "manifest": target.manifest,
        "canvas": target.canvas,
        "region": list(target.region) if target.region else None,
        "image_service": target.image_service,
        "assets": base,
        "versions": dict(PACKAGES),
    }
    links = "".join(
        f'<link rel="stylesheet" href="{html.escape(base + "/" + _asset_path(s))}">\n'
        for s in spec.styles
    )
    scripts = "".join(
        f'<script src="{html.escape(base + "/" + _asset_path(s))}"></script>\n'
        for s in spec.scripts
    )
    title = f"{BUILTIN_VIEWERS[viewer]} \u2013 {target.manifest or target.image_service or ''}"
    return (
        "<!DOCTYPE html>\n"
        '<html lang="en">\n<head>\n<meta charset="utf-8">\n'
        '<meta name="viewport" content="width=device-width, initial-scale=1">\n'
        f"<title>{html.escape(title)}</title>\n"
        '<link rel="icon" href="data:,">\n'
        f"{links}<style>\n{_STYLE}</style>\n</head>\n<body>\n"
        '<p id="problem" role="alert" hidden></p>\n'
        '<div id="viewer"></div>\n'
        '<script type="application/json" id="iiif-target">'
        f"{script_json(data)}</script>\n"
        f"{scripts}<script>\n{_PRELUDE}{spec.boot}</script>\n</body>\n</html>\n"
    )


def missing_page(viewer: str, folder: Path, missing: Sequence[str]) -> str:
    """The 503 page shown when a viewer's files are not installed."""
    command = INSTALL_COMMAND if folder == DEFAULT_ASSETS else f"{INSTALL_COMMAND} {folder}"
    packages = ", ".join(f"{p}@{PACKAGES[p]}" for p in missing)
    return (
        "<!DOCTYPE html>\n"
        '<html lang="en">\n<head>\n<meta charset="utf-8">\n'
        f"<title>{html.escape(BUILTIN_VIEWERS[viewer])} is not installed</title>\n</head>\n"
        f"<body>\n<h1>{html.escape(BUILTIN_VIEWERS[viewer])} is not installed</h1>\n"
        f"<p>This server has no copy of {html.escape(packages)} in "
        f"<code>{html.escape(str(folder))}</code>. Install the viewers with:</p>\n"
        f"<pre><code>{html.escape(command)}</code></pre>\n"
        "<p>(run it in the iiif-shim source folder), or set <code>viewers.base_url</code> to "
        "where they are published.</p>\n</body>\n</html>\n"
    )


def missing_packages(settings: ViewerSettings, viewer: str) -> list[str]:
    """The packages a viewer needs that are not in the assets folder (none with a base_url)."""
    if settings.base_url is not None:
        return []
    folder = settings.folder
    return [
        p for p in VIEWERS[viewer].packages if not (folder / f"{p}@{PACKAGES[p]}" / STAMP).is_file()
    ]


def target_from_query(query: Mapping[str, Sequence[str]]) -> Target:
    """Read ``iiif-content`` (or ``manifest`` with ``canvas``, or ``image``); ``ValueError``."""
    given = [k for k in ("iiif-content", "manifest", "image") if query.get(k)]
    if not given:
        raise ValueError(
            "say what to open: ?iiif-content=<manifest URL or content state> "
            "(or ?manifest=<URL>, or ?image=<image service URL>)"
        )
    if len(given) > 1:
        raise ValueError(f"give only one of {', '.join(given)}")
    key = given[0]
    values = query[key]
    if len(values) > 1 or len(query.get("canvas", ())) > 1:
        raise ValueError(f"{key} is given more than once")
    value = values[0]
    if key == "image":
        return contentstate.decode(value, kind="image")
    if key == "iiif-content":
        if query.get("canvas"):
            raise ValueError("canvas goes with manifest=, not with iiif-content=")
        return contentstate.decode(value)
    found = contentstate.decode(value, kind="manifest")
    if found.manifest is None or found.manifest != value.strip():
        raise ValueError("manifest= takes the URL of a manifest or collection")
    canvas = query.get("canvas")
    if canvas:
        target = contentstate.decode(canvas[0], kind="manifest")
        if target.manifest is None:
            raise ValueError("canvas= takes the URL of a canvas")
        base, _, fragment = target.manifest.partition("#")
        region = contentstate.region_of(fragment) if fragment else None
        return Target(manifest=found.manifest, canvas=base, region=region)
    return found
