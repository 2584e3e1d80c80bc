"""``iiif-shim probe``: what happens to one identifier, for ops staff writing YAML; with
``--object``, an object: its source, every field it gives (each label in every language), what
was left out (placed: file, line and column, as ``check-config --sources`` places it), its
canvases.

For the route the identifier takes it reports: whether the backend was reached and how fast,
the metadata it gave, for each IIIF feature whether the backend does it natively or Pillow
does (read from the planner's own decisions on sample requests, so it is what would really
happen), and the timing and backend transfer of a sample thumbnail request.
"""

from __future__ import annotations

import time
from dataclasses import dataclass

from iiif_shim.base.errors import ShimError
from iiif_shim.config.settings import Settings
from iiif_shim.core.planner import plan
from iiif_shim.core.service import ImageService, open_service
from iiif_shim.iiif.profile import Format, Version
from iiif_shim.iiif.request import parse_image_request
from iiif_shim.iiif.resolve import Box, resolve
from iiif_shim.model.plan import NativeOp, Plan
from iiif_shim.presentation.labels import Texts
from iiif_shim.presentation.records import ObjectRecord
from iiif_shim.presentation.service import open_presentation


@dataclass(frozen=True)
class Feature:
    name: str
    region: str
    size: str
    rotation: str
    quality_format: str
    done: object  # callable: (NativeOp, Plan) -> str | None


def _native_size(op: NativeOp, p: Plan) -> str | None:
    if op.tile:
        return f"native tile at 1/{op.reduction}"
    if op.reduction:
        return f"native pyramid level 1/{op.reduction}, then Pillow"
    if op.size:
        exact = op.size == (p.resolved.width, p.resolved.height)
        return "native" if exact else f"native to {op.size[0]}x{op.size[1]}, then Pillow"
    return None


def _features(width: int, height: int) -> list[Feature]:
    half = f"{width // 4},{height // 4},{max(1, width // 2)},{max(1, height // 2)}"
    full = Box(0, 0, width, height)
    return [
        Feature(
            "region x,y,w,h",
            half,
            "max",
            "0",
            "default.jpg",
            lambda op, p: "native" if op.region != full else None,
        ),
        Feature(
            "size (thumbnail)", "full", f"{min(256, width)},", "0", "default.jpg", _native_size
        ),
        Feature(
            "rotation 90",
            "full",
            f"{min(256, width)},",
            "90",
            "default.jpg",
            lambda op, p: "native" if op.rotation else None,
        ),
        Feature(
            "rotation 22.5",
            "full",
            f"{min(256, width)},",
            "22.5",
            "default.png",
            lambda op, p: None,
        ),
        Feature(
            "mirroring",
            "full",
            f"{min(256, width)},",
            "!0",
            "default.jpg",
            lambda op, p: "native" if op.mirror else None,
        ),
        Feature(
            "quality gray",
            "full",
            f"{min(256, width)},",
            "0",
            "gray.jpg",
            lambda op, p: "native" if op.quality else None,
        ),
        Feature(
            "quality bitonal",
            "full",
            f"{min(256, width)},",
            "0",
            "bitonal.png",
            lambda op, p: "native" if op.quality else None,
        ),
        *(
            Feature(
                f"format {fmt.value}",
                "full",
                f"{min(256, width)},",
                "0",
                f"default.{fmt.value}",
                lambda op, p: "native" if op.format else None,
            )
            for fmt in Format
        ),
    ]


def _shown(text: str, limit: int = 200) -> str:
    """Catalogue text for a terminal: control characters (escape sequences) made visible."""
    shown = "".join(c if c.isprintable() else repr(c)[1:-1] for c in text)
    return shown if len(shown) <= limit else shown[:limit] + "..."


def _fields(record: ObjectRecord) -> list[tuple[str, str]]:
    """The object's own fields that it gives, as a terminal shows them."""
    out: list[tuple[str, str]] = []
    for field, value in (
        ("summary", record.summary),
        ("rights", record.rights),
        ("required_statement", record.required_statement),
        ("viewing_direction", record.viewing_direction),
    ):
        if value is not None:
            out.append((field, _shown(value)))
    if record.nav_date is not None:
        out.append(("date", f"{_shown(record.nav_date.shown)} (navDate {record.nav_date.nav})"))
    if record.behavior:
        out.append(("behavior", ", ".join(record.behavior)))
    for uri in record.see_also:
        out.append(("see_also", _shown(uri)))
    return out


def _all(texts: Texts) -> str:
    """Every language of a label or value: ``Date`` or ``[en] Date / [de] Datum``."""
    if len(texts.items) == 1:
        return _shown(texts.items[0][1])
    return " / ".join(f"[{tag or 'default'}] {_shown(text)}" for tag, text in texts.items)


async def report_object(settings: Settings, name: str) -> tuple[list[str], bool]:
    """The object's source, fields and canvases with their sizes (from the image facts)."""
    lines: list[str] = []
    async with (
        open_service(settings.service()) as service,
        open_presentation(settings.presentation, service, watch=False) as presentation,
    ):
        started = time.perf_counter()
        try:
            record = await presentation.record(name)
        except ShimError as exc:
            lines.append(f"  not found or unreadable: {exc.public_text()}")
            return lines, False
        kind = settings.presentation.sources[record.source].type_name
        lines.append(
            f"  source: {record.source} ({kind}), "
            f"read in {(time.perf_counter() - started) * 1000:.0f} ms"
        )
        lines.append(f"  label: {_shown(record.label)}")
        for field, given in _fields(record):
            lines.append(f"  {field}: {given}")
        for key, value in record.metadata:
            lines.append(f"  metadata {_all(key)}: {_all(value)}")
        source = presentation.sources[record.source]
        for problem in source.problems(record):  # placed as check-config places them
            column = f", column {problem.column!r}" if problem.column else ""
            what = "note" if problem.kind == "note" else "left out"
            lines.append(f"  {what}: {problem.where}{column}: {_shown(problem.reason)}")
        ok = True
        for i, canvas in enumerate(record.canvases, 1):
            try:
                picture = await presentation.picture(canvas.image, name)
                size = f"{picture.width}x{picture.height}"
            except ShimError as exc:
                size, ok = f"ERROR {exc.public_text()}", False
            label = f" {canvas.label!r}" if canvas.label else ""
            lines.append(f"  canvas {i}{label}: image {canvas.image!r} {size}")
        for part in record.ranges:
            lines.append(f"  range {part.label!r}: canvases {part.first + 1}-{part.last + 1}")
    return lines, ok


async def report(settings: Settings, identifier: str) -> tuple[list[str], bool]:
    lines: list[str] = []
    async with open_service(settings.service()) as service:
        ok = await _report(service, identifier, lines)
    return lines, ok


async def _report(service: ImageService, identifier: str, lines: list[str]) -> bool:
    try:
        target = service.router.route(identifier)
    except ShimError as exc:
        lines.append(f"route: none ({exc.public_text()})")
        return False
    backend = service.backends[target.backend]
    index = next(
        i
        for i, r in enumerate(service.settings.routes)
        if r.backend == target.backend and (r.match is None or r.match.search(identifier))
    )
    lines.append(
        f"route: routes[{index}] -> backend '{target.backend}' ({backend.type_name}), "
        f"native id {target.native_id!r}"
    )
    started = time.perf_counter()
    try:
        src = await service.source(identifier)
    except ShimError as exc:
        ms = (time.perf_counter() - started) * 1000
        lines.append(f"backend reached: no, after {ms:.0f} ms: {exc.status} {exc.public_text()}")
        return False
    info = src.info
    lines.append(
        f"backend reached: yes, metadata in {(time.perf_counter() - started) * 1000:.0f} ms"
    )
    grid = (
        f"{info.tiles.width}x{info.tiles.height} tiles, scale factors "
        f"{list(info.tiles.scale_factors)}"
        if info.tiles
        else "no native tiles"
    )
    lines.append(
        f"metadata: {info.width}x{info.height}, {info.colour.value}, "
        f"{info.format or 'format not given'}, {grid}, "
        f"version {info.version or 'unknown (derivatives are not cached)'}"
    )
    caps = backend.capabilities(info.native)
    lines.append("features (native: the backend does it; Pillow: the shim does):")
    for feature in _features(info.width, info.height):
        req = parse_image_request(
            Version.V3,
            identifier,
            feature.region,
            feature.size,
            feature.rotation,
            feature.quality_format,
        )
        the_plan = plan(resolve(req, info.width, info.height, service.limits), caps, info.tiles)
        verdict = feature.done(the_plan.native, the_plan)  # type: ignore[operator]
        lines.append(f"  {feature.name:<18} {verdict or 'Pillow'}")
    sample = f"full/{min(256, info.width)},/0/default.jpg"
    req = parse_image_request(Version.V3, identifier, *sample.split("/"))
    before = backend.traffic()
    started = time.perf_counter()
    try:
        prepared = await service.prepare(req)
        rendered = await service.render(prepared, cached=False)  # a real backend call
    except ShimError as exc:
        lines.append(f"sample {sample}: {exc.status} {exc.public_text()}")
        return False
    ms = (time.perf_counter() - started) * 1000
    after = backend.traffic()
    moved = ""
    if after:
        calls = after["requests"] - before["requests"]
        moved = f", {after['bytes'] - before['bytes']} bytes in {calls} backend requests"
    lines.append(
        f"sample {sample}: {len(rendered.body)} bytes of {rendered.media_type} in "
        f"{ms:.0f} ms{moved}"
    )
    return True
