"""Stand-ins for legacy servers that cannot be installed here: Djatoka and CONTENTdm.

Each implements only the documented parameters the presets in ``config/`` use, over a folder of
images, with Pillow, so the ``template`` backend (and the ``contentdm`` object source) is tested
over real HTTP. They follow the documented request and answer shapes; they are not the real
products, and the presets and the source say so.

    python -m tests.standins djatoka|contentdm --port P --root DIR

- Djatoka OpenURL resolver ``/adore-djatoka/resolver``: ``svc_id=info:lanl-repo/svc/getMetadata``
  answers JSON with string values; ``.../getRegion`` takes ``svc.region=Y,X,H,W`` (full-resolution
  pixels), ``svc.scale`` (``w,h`` with 0 keeping the aspect, one number for the long side, or a
  factor below 2), ``svc.rotate`` (0/90/180/270 clockwise, anything else 0), ``svc.format``
  (a media type). The identifier is ``rft_id``: a file name in the folder, without extension.
- CONTENTdm: ``/dmwebservices/index.php?q=dmGetImageInfo/{alias}/{ptr}/json`` answers JSON with
  string width and height; ``/cgi-bin/getimage.exe`` takes ``CISOROOT=/{alias}``, ``CISOPTR``,
  ``DMSCALE`` (percent), ``DMX``/``DMY`` (offset in scaled pixels) and ``DMWIDTH``/``DMHEIGHT``
  (viewport in scaled pixels, clipped at the image edge); it answers JPEG. Images are
  ``{alias}/{ptr}.{ext}`` in the folder.
- CONTENTdm web services for objects, from ``{alias}/items.json`` in the folder (pointer -> the
  item's fields by nickname, with an optional ``cpd``: its compound structure as
  ``dmGetCompoundObjectInfo`` answers it), in the shapes OCLC documents and sites are seen to
  send: ``dmGetItemInfo/{alias}/{ptr}/json`` (the fields, an empty one as ``{}``, plus ``find``
  and ``dmrecord``, and ``cdmhasocr`` 1 when the item's full-text field ``full`` has text: a
  page's full text is that field of the page's own item; an unknown pointer ``{"code": "-2",
  "message": "Requested item not found"}``), ``dmGetCompoundObjectInfo/{alias}/{ptr}/json`` (the
  ``cpd``, or ``{"code": "-2", "message": "Requested item is not compound"}``) and
  ``dmQuery/{alias}/0/{fields}/{sortby}/{maxrecs}/{start}/{suppress}/...`` (browse: ``{"pager":
  ..., "records": [{pointer, parentobject, collection, filetype, find, <fields>}]}``, pages of
  compound objects only with suppress 0). Any function on an alias without a folder answers 200
  with the HTML text ``Error looking up collection /{alias}<br>``, as the product does.

Both count requests and bytes sent, at ``/_stats``.
"""

from __future__ import annotations

import argparse
import io
import json
from pathlib import Path
from typing import Any

from aiohttp import web
from PIL import Image

EXTENSIONS = (".png", ".jpg", ".tif", ".jp2")
MEDIA = {"image/jpeg": "JPEG", "image/png": "PNG", "image/gif": "GIF", "image/tiff": "TIFF"}


def find(root: Path, name: str) -> Path:
    if not name or ".." in name or name.startswith("/"):
        raise web.HTTPNotFound()
    for ext in EXTENSIONS:
        path = root / f"{name}{ext}"
        if path.is_file():
            return path
    raise web.HTTPNotFound(text="no such image")


def encode(im: Image.Image, fmt: str) -> bytes:
    buf = io.BytesIO()
    im.convert("RGB").save(buf, fmt, quality=95)
    return buf.getvalue()


def djatoka(root: Path) -> web.Application:
    async def resolver(request: web.Request) -> web.Response:
        q = request.query
        path = find(root, q.get("rft_id", ""))
        with Image.open(path) as im:
            im.load()
            width, height = im.size
            if q.get("svc_id") == "info:lanl-repo/svc/getMetadata":
                return web.json_response(
                    {
                        "identifier": q["rft_id"],
                        "imagefile": str(path.name),
                        "width": str(width),
                        "height": str(height),
                        "dwtLevels": "5",
                        "levels": "5",
                        "compositingLayerCount": "1",
                    }
                )
            if q.get("svc_id") != "info:lanl-repo/svc/getRegion":
                raise web.HTTPBadRequest(text="unknown svc_id")
            out = im
            if region := q.get("svc.region"):
                y, x, h, w = (int(v) for v in region.split(","))
                out = out.crop((x, y, min(x + w, width), min(y + h, height)))
            if scale := q.get("svc.scale"):
                out = out.resize(_djatoka_size(scale, out.size), Image.Resampling.LANCZOS)
            rotate = q.get("svc.rotate", "0")
            turns = {
                "90": Image.Transpose.ROTATE_270,
                "180": Image.Transpose.ROTATE_180,
                "270": Image.Transpose.ROTATE_90,
            }
            if rotate in turns:
                out = out.transpose(turns[rotate])
            media = q.get("svc.format", "image/jpeg")
            body = encode(out, MEDIA.get(media, "JPEG"))
            return web.Response(body=body, content_type=media if media in MEDIA else "image/jpeg")

    app = web.Application()
    app.router.add_get("/adore-djatoka/resolver", resolver)
    return app


def _djatoka_size(scale: str, size: tuple[int, int]) -> tuple[int, int]:
    w0, h0 = size
    if "," in scale:
        w, h = (int(v) for v in scale.split(","))
        if w == 0:
            w = round(w0 * h / h0)
        if h == 0:
            h = round(h0 * w / w0)
        return max(1, w), max(1, h)
    value = float(scale)
    if value < 2:  # a factor
        return max(1, round(w0 * value)), max(1, round(h0 * value))
    factor = value / max(w0, h0)  # the long side
    return max(1, round(w0 * factor)), max(1, round(h0 * factor))


def _cdm_items(root: Path, alias: str) -> dict[str, Any] | None:
    """The collection's items (pointer -> fields), or None when there is no such alias."""
    folder = root / alias
    if not alias or ".." in alias or "/" in alias or not folder.is_dir():
        return None
    path = folder / "items.json"
    items: dict[str, Any] = json.loads(path.read_text()) if path.is_file() else {}
    return items


def _cdm_pages(cpd: Any) -> list[dict[str, Any]]:
    """Every page of a compound structure, sections included."""
    found: list[dict[str, Any]] = []
    if isinstance(cpd, list):
        for item in cpd:
            found += _cdm_pages(item)
    elif isinstance(cpd, dict):
        page = cpd.get("page")
        found += page if isinstance(page, list) else [page] if isinstance(page, dict) else []
        found += _cdm_pages(cpd.get("node"))
    return found


def _cdm_item(items: dict[str, Any], pointer: str) -> dict[str, Any]:
    fields = {k: ({} if v == "" else v) for k, v in items[pointer].items() if k != "cpd"}
    extension = "cpd" if "cpd" in items[pointer] else "jp2"
    return {
        **fields,
        "find": f"{pointer}.{extension}",
        "dmrecord": pointer,
        "restrictionCode": "0",
        "cdmfilesize": "1000",
        "cdmhasocr": "1" if items[pointer].get("full") else "0",
    }


def _cdm_query(items: dict[str, Any], alias: str, args: list[str]) -> dict[str, Any]:
    """``dmQuery`` browsing (searchstrings 0) one collection."""
    fields, sortby, maxrecs, start, suppress = args[1], args[2], args[3], args[4], args[5]
    parents = {
        str(page.get("pageptr")): pointer
        for pointer, item in items.items()
        for page in _cdm_pages(item.get("cpd"))
    }
    records = []
    for pointer, item in items.items():
        parent = parents.get(pointer)
        if parent is not None and suppress == "1":
            continue
        record = {
            "collection": f"/{alias}",
            "pointer": int(pointer),
            "filetype": "jp2",
            "parentobject": -1 if parent is None else parent,
            "find": f"{pointer}.jp2",
        }
        for nick in fields.split("!"):
            value = item.get(nick, "")
            record[nick] = value if isinstance(value, str) else ""
        records.append(record)
    if sortby not in ("nosort", "0"):
        key = sortby.split("!")[0]
        records.sort(key=lambda r: str(r.get(key, "")))
    count = max(1, min(int(maxrecs or "10") or 10, 1024))
    first = max(int(start or "1"), 1) - 1
    return {
        "pager": {"start": start, "maxrecs": maxrecs, "total": len(records)},
        "records": records[first : first + count],
    }


def contentdm(root: Path) -> web.Application:
    async def webservices(request: web.Request) -> web.Response:
        parts = request.query.get("q", "").split("/")
        if parts[0] in ("dmGetItemInfo", "dmGetCompoundObjectInfo", "dmQuery") and len(parts) > 2:
            items = _cdm_items(root, parts[1])
            if items is None:
                return web.Response(
                    text=f"Error looking up collection /{parts[1]}<br>", content_type="text/html"
                )
            if parts[0] == "dmQuery":
                if len(parts) != 14 or parts[2] != "0" or parts[13] != "json":
                    raise web.HTTPBadRequest(text="the stand-in only browses")
                return web.json_response(_cdm_query(items, parts[1], parts[2:]))
            if len(parts) != 4 or parts[3] != "json":
                raise web.HTTPBadRequest(text="unknown query")
            pointer = parts[2]
            if pointer not in items:
                missing = {"code": "-2", "message": "Requested item not found"}
                return web.json_response({**missing, "restrictionCode": "-1"})
            if parts[0] == "dmGetItemInfo":
                return web.json_response(_cdm_item(items, pointer))
            cpd = items[pointer].get("cpd")
            if cpd is None:
                return web.json_response(
                    {"message": "Requested item is not compound", "code": "-2"}
                )
            return web.json_response(cpd)
        return await info(request, parts)

    async def info(request: web.Request, parts: list[str]) -> web.Response:
        if len(parts) != 4 or parts[0] != "dmGetImageInfo" or parts[3] != "json":
            raise web.HTTPBadRequest(text="unknown query")
        path = find(root, f"{parts[1]}/{parts[2]}")
        with Image.open(path) as im:
            return web.json_response(
                {
                    "filename": path.name,
                    "type": path.suffix[1:],
                    "width": str(im.width),
                    "height": str(im.height),
                }
            )

    async def getimage(request: web.Request) -> web.Response:
        q = request.query
        path = find(root, f"{q.get('CISOROOT', '').lstrip('/')}/{q.get('CISOPTR', '')}")
        with Image.open(path) as im:
            im.load()
            s = float(q.get("DMSCALE", "100")) / 100
            dx, dy = int(q.get("DMX", "0")), int(q.get("DMY", "0"))
            vw = int(q.get("DMWIDTH", str(round(im.width * s))))
            vh = int(q.get("DMHEIGHT", str(round(im.height * s))))
            scaled_w, scaled_h = round(im.width * s), round(im.height * s)
            vw, vh = min(vw, scaled_w - dx), min(vh, scaled_h - dy)  # clipped at the edge
            box = (dx / s, dy / s, min((dx + vw) / s, im.width), min((dy + vh) / s, im.height))
            out = im.resize((vw, vh), Image.Resampling.LANCZOS, box=box)
            return web.Response(body=encode(out, "JPEG"), content_type="image/jpeg")

    app = web.Application()
    app.router.add_get("/dmwebservices/index.php", webservices)
    app.router.add_get("/cgi-bin/getimage.exe", getimage)
    return app


def with_stats(app: web.Application) -> web.Application:
    stats = {"requests": 0, "bytes": 0}

    async def count(request: web.Request, response: web.StreamResponse) -> None:
        if request.path != "/_stats":
            stats["requests"] += 1
            body = response.body if isinstance(response, web.Response) else None
            stats["bytes"] += len(body) if isinstance(body, bytes) else 0

    async def show(request: web.Request) -> web.Response:
        return web.Response(text=json.dumps(stats), content_type="application/json")

    app.on_response_prepare.append(count)
    app.router.add_get("/_stats", show)
    return app


def main() -> None:
    parser = argparse.ArgumentParser()
    parser.add_argument("kind", choices=["djatoka", "contentdm"])
    parser.add_argument("--port", type=int, required=True)
    parser.add_argument("--root", type=Path, required=True)
    args = parser.parse_args()
    app = djatoka(args.root) if args.kind == "djatoka" else contentdm(args.root)
    web.run_app(with_stats(app), host="127.0.0.1", port=args.port, print=None, access_log=None)


if __name__ == "__main__":
    main()
