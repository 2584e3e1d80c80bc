"""The HTML of the access flow (``web/auth.py`` serves it): the login form, the clickthrough
confirmation, the page that closes itself once access is granted, the refusals, the logout
page, and the token pages that post one message to the viewer's window.

Pages are pure functions of their values and return the markup only; the headers that go with
them (CSP with the page's script nonce, framing, ``no-store``) are ``web/auth.py``'s. Every
value is escaped. A JSON value put inside a script goes through :func:`script_json`, so no
string of the request (a ``messageId`` holding ``</script>``) can end the script or start
markup. Scripts run only with the page's nonce (``script-src 'nonce-…'``).
"""

from __future__ import annotations

from html import escape
from typing import Any

from iiif_shim.auth.settings import PolicySettings
from iiif_shim.base.text import script_json

_STYLE = (
    "body{font:16px/1.45 system-ui,sans-serif;margin:3rem auto;max-width:32rem;padding:0 1rem;"
    "color:#222}h1{font-size:1.4rem}label{display:block;margin:.8rem 0 .2rem}"
    "input[type=text],input[type=password]{width:100%;padding:.4rem;font:inherit;"
    "box-sizing:border-box}button{margin-top:1rem;padding:.45rem 1.2rem;font:inherit}"
    ".failure{border-left:4px solid #b00;padding:.2rem .8rem;background:#fff4f4}"
    ".note{white-space:pre-line}"
)


def _page(title: str, body: str, nonce: str, script: str = "") -> str:
    tag = f'<script nonce="{escape(nonce)}">{script}</script>' if script else ""
    return (
        "<!doctype html>\n<html lang=en><head><meta charset=utf-8>"
        '<meta name="viewport" content="width=device-width,initial-scale=1">'
        '<meta name="referrer" content="no-referrer">'
        f"<title>{escape(title)}</title>"
        f'<style nonce="{escape(nonce)}">{_STYLE}</style></head>'
        f"<body>{body}{tag}</body></html>\n"
    )


def _note(text: str | None) -> str:
    return f'<p class="note">{escape(text)}</p>' if text else ""


def _failure(policy: PolicySettings, fallback: str) -> str:
    heading = policy.failure_heading or fallback
    note = _note(policy.failure_note)
    return f'<div class="failure" role="alert"><h2>{escape(heading)}</h2>{note}</div>'


def _hidden(name: str, value: str) -> str:
    return f'<input type="hidden" name="{escape(name)}" value="{escape(value)}">'


def login_form(
    policy: PolicySettings,
    csrf: str,
    origin: str | None,
    nonce: str,
    *,
    failed: bool = False,
    username: str = "",
) -> str:
    """The login form of a policy with ``users.htpasswd``: ``username`` and ``password``
    posted back to the same URL with the CSRF value and the viewer's ``origin``; after a
    failed attempt, the policy's failure heading and note above it."""
    heading = policy.heading or f"Log in: {policy.label}"
    body = (
        f"<h1>{escape(heading)}</h1>"
        + (
            _failure(policy, "Login failed: the user name or the password is wrong")
            if failed
            else ""
        )
        + _note(policy.note)
        + '<form method="post" action="access" autocomplete="on">'
        + _hidden("csrf", csrf)
        + _hidden("origin", origin or "")
        + '<label for="username">User name</label>'
        f'<input type="text" id="username" name="username" value="{escape(username)}" '
        'autocomplete="username" required autofocus maxlength="256">'
        '<label for="password">Password</label>'
        '<input type="password" id="password" name="password" autocomplete="current-password" '
        'required maxlength="1024">'
        f"<button type=submit>{escape(policy.confirm_label or 'Log in')}</button></form>"
    )
    return _page(heading, body, nonce)


def confirm_form(policy: PolicySettings, csrf: str, origin: str | None, nonce: str) -> str:
    """The clickthrough page: the policy's heading and note (the terms), and one button that
    posts the CSRF value back (accepting is a click, never a page load)."""
    heading = policy.heading or policy.label
    body = (
        f"<h1>{escape(heading)}</h1>"
        + _note(policy.note)
        + '<form method="post" action="access">'
        + _hidden("csrf", csrf)
        + _hidden("origin", origin or "")
        + f"<button type=submit>{escape(policy.confirm_label or 'I agree')}</button></form>"
    )
    return _page(heading, body, nonce)


def closing(policy: PolicySettings, nonce: str) -> str:
    """Access granted: the page closes its own window (the viewer that opened it is waiting for
    that), and says so for the case where the browser does not let it."""
    body = (
        f"<h1>{escape(policy.label)}</h1>"
        "<p>Access granted. You may close this window and return to the viewer.</p>"
    )
    return _page("Access granted", body, nonce, "window.close();")


def message(
    title: str,
    text: str,
    nonce: str,
    policy: PolicySettings | None = None,
    *,
    close_after: float | None = None,
) -> str:
    """A page for a person that says one thing (a refusal, a limit, an error); with
    ``policy``, its failure heading and note too. With ``close_after`` (seconds) the page
    closes its own window after that long, so a viewer waiting for it goes on (to its token
    service, which then tells it the failure)."""
    body = f"<h1>{escape(title)}</h1><p>{escape(text)}</p>"
    if policy is not None and policy.failure_heading:
        body += _failure(policy, policy.failure_heading)
    script = ""
    if close_after is not None:
        body += "<p>This window closes by itself in a moment.</p>"
        script = f"setTimeout(function(){{window.close();}},{round(close_after * 1000)});"
    return _page(title, body, nonce, script)


def logged_out(policy: PolicySettings, nonce: str) -> str:
    body = (
        f"<h1>{escape(policy.label)}</h1>"
        "<p>You are logged out: this browser no longer has access, and the tokens it was "
        "given no longer open anything. You may close this window.</p>"
    )
    return _page("Logged out", body, nonce)


def token_page(msg: dict[str, Any], origin: str | None, nonce: str) -> str:
    """The page a viewer loads in a hidden frame: posts ``msg`` to its parent window with
    ``origin`` as the target (only a window of that origin receives it). Without a usable
    origin nothing is posted: the page only shows what went wrong."""
    script = (
        f"window.parent.postMessage({script_json(msg)}, {script_json(origin)});"
        if origin is not None
        else ""
    )
    shown = (
        "a token"
        if "accessToken" in msg
        else "an error: " + str(msg.get("profile") or msg.get("error") or "")
    )
    body = f"<p>This page gives the viewer that opened it {escape(shown)}.</p>"
    return _page("Access token", body, nonce, script)
