"""The HTML object page at ``/objects/{object}``: what a museum links to.

Title, summary and a metadata table (each label and value in ``presentation.language`` when
given in it; the date at the precision the catalogue gave); the default viewer embedded; a
thumbnail of every canvas with a link that opens the viewer at that canvas (a Content State);
the manifest URL with the IIIF drag-and-drop link; "open in" links to every built-in and
configured external viewer; the PDF; for an object with text, its whole text and a line saying
its words can be searched in the viewer; under each canvas whose master is sent as it is (the
manifest's "download original" ``rendering``) a "Download original" link. Every value is
escaped; the page needs nothing but the shim.

A restricted image (its route's ``access``) shows its degraded tier's thumbnail, or a note when
its policy has none, and never a download; the page then has, for each policy of its images or
its PDF, a link to log in (``/auth/{policy}/access``, in a new tab, as the viewers open it) and
one to log out: "log in to get the PDF" for a policy only its PDF needs (the object's own
``access``, its images being public). A page with nothing restricted has no such link. The
page is the same for everyone.
"""

from __future__ import annotations

from collections.abc import Sequence
from html import escape
from urllib.parse import quote

from iiif_shim import __version__
from iiif_shim.auth.documents import access_url, logout_url
from iiif_shim.iiif.contentstate import encode
from iiif_shim.iiif.profile import Version
from iiif_shim.presentation.documents import Builder, Picture
from iiif_shim.presentation.labels import Texts
from iiif_shim.presentation.records import ObjectRecord
from iiif_shim.presentation.viewers import BUILTIN_VIEWERS, ViewerSettings, viewer_url

STYLE = """
body{font:15px/1.45 system-ui,sans-serif;margin:1.5rem auto;max-width:72rem;padding:0 1rem;
  color:#222}
h1{font-size:1.6rem;margin:.2rem 0 .6rem}
table{border-collapse:collapse;margin:.8rem 0}
th,td{text-align:left;vertical-align:top;padding:.25rem .8rem .25rem 0;border-bottom:1px solid #eee}
th{color:#555;font-weight:600;white-space:nowrap}
iframe{width:100%;height:70vh;border:1px solid #ccc;border-radius:6px}
ul.canvases{list-style:none;padding:0;display:grid;grid-template-columns:repeat(auto-fill,minmax(11rem,1fr));gap:.8rem}
ul.canvases li{border:1px solid #ddd;border-radius:6px;padding:.5rem;text-align:center}
ul.canvases img{display:block;max-width:100%;height:auto;margin:0 auto .3rem;background:#eee}
ul.canvases small{display:block;margin-top:.3rem;color:#555}
code{font-size:.85em;word-break:break-all}
.iiif{display:inline-block;background:#2873ab;color:#fff;font-weight:700;padding:0 .45rem;
  border-radius:4px;text-decoration:none}
nav a{margin-right:.8rem}
"""


def content_state(manifest: str, canvas: str) -> str:
    """A Content State (encoded for a URL) that opens ``canvas`` of ``manifest``."""
    return encode(
        {
            "@context": "http://iiif.io/api/presentation/3/context.json",
            "id": f"{canvas}#state",
            "type": "Annotation",
            "motivation": ["contentState"],
            "target": {
                "id": canvas,
                "type": "Canvas",
                "partOf": [{"id": manifest, "type": "Manifest"}],
            },
        }
    )


def _shown(texts: Texts, language: str) -> str:
    """The text (escaped) for a reader of ``language``, marked with its own language when it is
    another one."""
    tag, text = texts.pick(language)
    if tag is None or tag in (language, "none"):
        return escape(text)
    return f'<span lang="{escape(tag)}">{escape(text)}</span>'


def _access(builder: Builder, images: Sequence[str], pdf: Sequence[str], text: bool = False) -> str:
    """The login and logout links of each policy the object's images or PDF need: one its
    images need says some of this is restricted; one only its PDF needs (the object's own
    ``access``, its images being public) says to log in to get the PDF (and, for an object
    with ``text``, its text and search, which need what the PDF needs)."""
    lines = []
    for name in dict.fromkeys([*images, *pdf]):
        policy = builder.policies[name]
        site = builder.urls.site
        if name in images:
            what, login = "some of this is restricted", "Log in"
        elif text:
            what, login = "the PDF, the text and its search are restricted", "Log in to get them"
        else:
            what, login = "the PDF is restricted", "Log in to get the PDF"
        lines.append(
            f"<p class=access><strong>{escape(policy.label)}</strong>: {what}. "
            f'<a href="{escape(access_url(site, name))}" target="_blank">{login}</a> '
            f"(in a new tab), then reload this page; "
            f'<a href="{escape(logout_url(site, name))}" target="_blank">Log out</a></p>\n'
        )
    return "".join(lines)


def object_page(
    record: ObjectRecord,
    pictures: Sequence[Picture],
    builder: Builder,
    viewers: ViewerSettings,
    settings_title: str,
    pdf_policies: Sequence[str] = (),
) -> str:
    urls = builder.urls
    manifest = urls.manifest("3", record.name)
    language = builder.settings.language
    rows = [(_shown(label, language), _shown(value, language)) for label, value in record.metadata]
    if record.required_statement:
        rows.append(
            (
                escape(builder.settings.required_statement_label),
                escape(record.required_statement),
            )
        )
    if record.rights:  # the one cell that is markup: a link built here, its URI escaped
        rights = escape(record.rights)
        rows.append(("Rights", f'<a href="{rights}">{rights}</a>'))
    if record.nav_date:  # at the precision the catalogue gave: 1887 stays 1887
        rows.append(("Date", escape(record.nav_date.shown)))
    table = "".join(f"<tr><th>{label}</th><td>{cell}</td></tr>" for label, cell in rows)
    canvases = []
    for i, (canvas, picture) in enumerate(zip(record.canvases, pictures, strict=True)):
        thumb = builder.thumbnail(picture)
        state = content_state(manifest, urls.canvas("3", record.name, i))
        original = None if picture.access else builder.original(Version.V3, picture)
        download = (
            f'<small><a href="{escape(original["id"])}" download>Download original</a> '
            f"({escape(picture.original_text)})</small>"
            if original
            else ""
        )
        image = (
            f'<img src="{escape(thumb["id"])}" width="{thumb["width"]}" '
            f'height="{thumb["height"]}" alt="{escape(canvas.label or str(i + 1))}" loading="lazy">'
            if thumb is not None
            else '<small class="restricted">Restricted: log in to see it</small>'
        )
        canvases.append(
            "<li>"
            f'<a href="{escape(urls.site + viewer_url(viewers.default, state))}">'
            f"{image}{escape(canvas.label or str(i + 1))}</a>{download}"
            "</li>"
        )
    open_in = [
        f'<a href="{escape(urls.site + viewer_url(name, manifest))}">{escape(label)}</a>'
        for name, label in BUILTIN_VIEWERS.items()
    ]
    open_in += [
        f'<a href="{escape(template.replace("{url}", quote(manifest, safe="")))}" '
        f'rel="noopener">{escape(label)}</a>'
        for label, template in viewers.external.items()
    ]
    drag = f"{urls.object_page(record.name)}?manifest={quote(manifest, safe=':/')}"
    access = _access(
        builder, [p.access for p in pictures if p.access], pdf_policies, record.has_text
    )
    summary = f"<p>{escape(record.summary)}</p>" if record.summary else ""
    text = (
        f' · <a href="{escape(urls.plain_text(record.name))}">Text</a></p>\n'
        "<p class=search>Search inside: the viewer's search finds this object's words and "
        "shows them on the page"
        if record.has_text
        else ""
    )
    return (
        "<!doctype html>\n<html lang=en><head><meta charset=utf-8>"
        '<meta name="viewport" content="width=device-width,initial-scale=1">'
        f"<title>{escape(record.label)} · {escape(settings_title)}</title>"
        f'<link rel="alternate" type="application/ld+json" href="{escape(manifest)}">'
        f"<style>{STYLE}</style></head><body>\n"
        f'<p><a href="{escape(urls.site)}/">{escape(settings_title)}</a></p>'
        f"<h1>{escape(record.label)}</h1>{summary}"
        f"<table>{table}</table>\n{access}"
        f'<iframe src="{escape(urls.site + viewer_url(viewers.default, manifest))}" '
        f'title="{escape(BUILTIN_VIEWERS.get(viewers.default, viewers.default))}" '
        "allowfullscreen></iframe>\n"
        f"<nav><strong>Open in:</strong> {' '.join(open_in)}</nav>\n"
        f'<p><a class="iiif" href="{escape(drag)}" title="Drag and drop into a IIIF viewer">'
        f'IIIF</a> Manifest: <a href="{escape(manifest)}"><code>{escape(manifest)}</code></a> '
        f'(<a href="{escape(urls.manifest("2", record.name))}">Presentation 2.1</a>) · '
        f'<a href="{escape(urls.pdf(record.name))}">PDF</a>{text}</p>\n'
        f"<h2>{len(record.canvases)} image{'s' if len(record.canvases) != 1 else ''}</h2>"
        f'<ul class="canvases">{"".join(canvases)}</ul>\n'
        f"<footer><small>iiif-shim {escape(__version__)}</small></footer>"
        "</body></html>\n"
    )
