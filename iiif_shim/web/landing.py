"""The landing page at ``/``: the objects with their thumbnails (and each object source that
cannot be read now, or was down at its last background read, named with its error: a broken
catalogue shows, it does not vanish), then each
identifier with its info.json links and a thumbnail.

Links are relative to the page, so they work behind any proxy; every value is escaped.
"""

from __future__ import annotations

import asyncio
from collections.abc import Sequence
from html import escape
from typing import Any

from aiohttp import web

from iiif_shim import __version__
from iiif_shim.base.errors import ShimError
from iiif_shim.iiif.identifier import encode_identifier
from iiif_shim.presentation.sources.base import ObjectSource
from iiif_shim.web.presentation import builder_of
from iiif_shim.web.state import observed, runtime_of

_STYLE = """
body{font:15px/1.4 system-ui,sans-serif;margin:2rem auto;max-width:60rem;padding:0 1rem;color:#222}
ul{list-style:none;padding:0;display:grid;grid-template-columns:repeat(auto-fill,minmax(14rem,1fr));gap:1rem}
li{border:1px solid #ddd;border-radius:6px;padding:.6rem}
img{display:block;max-width:100%;height:auto;margin:0 auto .4rem;background:#eee}
code{font-size:.85em;word-break:break-all}
"""


def landing_page(
    title: str,
    prefix: str,
    identifiers: list[str],
    objects: Sequence[tuple[str, str, str | None]] = (),
    site: str = "",
    broken: Sequence[tuple[str, str]] = (),
) -> str:
    """``objects``: (name, label, thumbnail URL) of the objects to list first; ``site``: the
    public URL their pages are under; ``broken``: (source, why) of the sources that could not
    be read."""
    shown = []
    for name, label, thumbnail in objects:
        img = (
            f'<img src="{escape(thumbnail)}" alt="{escape(label)}" loading="lazy">'
            if thumbnail
            else ""
        )
        shown.append(
            f'<li><a href="{escape(site)}/objects/{escape(encode_identifier(name))}">{img}'
            f"{escape(label)}</a></li>"
        )
    items = []
    for identifier in identifiers:
        enc = encode_identifier(identifier)
        v3, v2 = f"{prefix}/3/{enc}", f"{prefix}/2/{enc}"
        items.append(
            "<li>"
            f'<a href="{escape(v3)}/full/max/0/default.jpg">'
            # 2.1's "!w,h" fits any image in the box (3.0's rejects boxes larger than the image)
            f'<img src="{escape(v2)}/full/!240,240/0/default.jpg" alt="{escape(identifier)}" '
            'loading="lazy"></a>'
            f"<code>{escape(identifier)}</code><br>"
            f'<a href="{escape(v3)}/info.json">info.json (3.0)</a> · '
            f'<a href="{escape(v2)}/info.json">info.json (2.1)</a>'
            "</li>"
        )
    body = "\n".join(items) or "<p>No identifiers to list: see the configuration.</p>"
    notes = "".join(
        f'<p class="broken">Object source <code>{escape(source)}</code> cannot be read: '
        f"{escape(why)}</p>"
        for source, why in broken
    )
    return (
        "<!doctype html>\n<html lang=en><head><meta charset=utf-8>"
        f"<title>{escape(title)}</title><style>{_STYLE}</style></head><body>"
        f"<h1>{escape(title)}</h1>"
        f"<p>IIIF Image API 3.0 at <code>{escape(prefix)}/3/</code> and 2.1 at "
        f"<code>{escape(prefix)}/2/</code> · iiif-shim {escape(__version__)} · "
        '<a href="/health">health</a></p>'
        + (
            f'<h2>Objects</h2>{notes}<ul class="objects">\n{"".join(shown)}\n</ul>'
            f'<p><a href="{escape(prefix)}/presentation/3/collection">IIIF collection</a></p>'
            "<h2>Images</h2>"
            if shown or notes
            else ""
        )
        + f"<ul>\n{body}\n</ul></body></html>\n"
    )


LANDING_SOURCE_WAIT = 3.0  # seconds the landing page waits for one source's objects


async def landing(request: web.Request) -> web.Response:
    observed(request).endpoint = "landing"
    runtime = runtime_of(request)
    service, settings = runtime.service, runtime.settings
    identifiers = list(settings.landing.identifiers)
    if not identifiers:
        for name in service.router.identity_backends():
            identifiers += await service.backends[name].identifiers(50)
    builder = builder_of(request, runtime)

    broken: list[tuple[str, str]] = []

    async def listed(source: ObjectSource[Any]) -> list[tuple[str, str, str | None]]:
        try:  # a source that is down or slow leaves the rest of the page, and is named
            async with asyncio.timeout(LANDING_SOURCE_WAIT):
                entries = await runtime.presentation.entries(source, 50)
        except ShimError as exc:
            broken.append((source.name, exc.public_text()))
            return []
        except TimeoutError:
            broken.append((source.name, f"no answer within {LANDING_SOURCE_WAIT:g}s"))
            return []
        thumbnails = [builder.thumbnail(p) if p else None for _, _, p in entries]
        return [
            (name, label, thumbnail["id"] if thumbnail else None)  # restricted: the degraded one
            for (name, label, _), thumbnail in zip(entries, thumbnails, strict=True)
        ]

    sources = runtime.presentation.sources.values()
    listings = await asyncio.gather(*(listed(source) for source in sources))
    objects = [entry for listing in listings for entry in listing]
    named = {name for name, _ in broken}
    for name, why in runtime.presentation.watch.down().items():  # its last background read
        if name not in named:
            broken.append((name, why))
    return web.Response(
        text=landing_page(
            settings.landing.title,
            settings.iiif.prefix,
            identifiers,
            objects,
            builder.urls.site,
            sorted(broken),
        ),
        content_type="text/html",
    )
