"""The service descriptions and messages of the IIIF Authorization Flow API, both versions,
shaped as the specs' examples: the one place that knows their keys, types and profile URIs.

Auth 1.0 (``services_1``, ``token_1``, ``token_error_1``): the cookie service of the policy's
profile (login, clickthrough, kiosk, external) with its token and logout services nested;
``@context`` auth/1 in Image 2.1 / Presentation 2.1 documents, ``@id`` + ``@type``
(``AuthCookieService1``...) and no ``@context`` inside 3.0 documents; plain strings.

Auth 2.0 (``probe_2``, ``probe_result``, ``token_2``, ``token_error_2``): probe service, its
access service (profile ``active`` for login and clickthrough, ``kiosk``, ``external`` without
``id``), the access token and logout services; text as language maps ``{"none": [...]}``.
In a 3.0 document the auth/2 context goes in the document's ``@context``, before the
image/presentation one (:func:`with_auth2_context`); in a 2.1 document the probe service carries
its own ``@context``.

Pure functions of their arguments: the URLs are made from ``base``, the public base of the
server (``https://host[:port]``, no trailing slash), and the fixed paths under ``/auth/``.
"""

from __future__ import annotations

from collections.abc import Mapping
from typing import Any

from iiif_shim.auth.settings import PolicySettings

AUTH1_CONTEXT = "http://iiif.io/api/auth/1/context.json"
AUTH2_CONTEXT = "http://iiif.io/api/auth/2/context.json"
AUTH1_PROFILE = "http://iiif.io/api/auth/1/"
TOKEN1_PROFILE = AUTH1_PROFILE + "token"
LOGOUT1_PROFILE = AUTH1_PROFILE + "logout"

# Auth 2.0 access token error profiles
INVALID_REQUEST = "invalidRequest"
INVALID_ORIGIN = "invalidOrigin"
MISSING_ASPECT = "missingAspect"
INVALID_ASPECT = "invalidAspect"
EXPIRED_ASPECT = "expiredAspect"
UNAVAILABLE = "unavailable"
ERRORS_2 = (
    INVALID_REQUEST,
    INVALID_ORIGIN,
    MISSING_ASPECT,
    INVALID_ASPECT,
    EXPIRED_ASPECT,
    UNAVAILABLE,
)
# the Auth 1.0 error (and the HTTP status of its direct JSON answer) of each 2.0 profile
ERRORS_1: Mapping[str, tuple[str, int]] = {
    INVALID_REQUEST: ("invalidRequest", 400),
    INVALID_ORIGIN: ("invalidOrigin", 403),
    MISSING_ASPECT: ("missingCredentials", 401),
    INVALID_ASPECT: ("invalidCredentials", 401),
    EXPIRED_ASPECT: ("invalidCredentials", 401),
    UNAVAILABLE: ("unavailable", 503),
}
_DESCRIPTIONS = {
    INVALID_REQUEST: "The request could not be processed.",
    INVALID_ORIGIN: "This viewer's origin may not receive tokens.",
    MISSING_ASPECT: "Not logged in.",
    INVALID_ASPECT: "The login is not valid.",
    EXPIRED_ASPECT: "The login has expired.",
    UNAVAILABLE: "The service is unavailable.",
}
DEFAULT_FAILURE_HEADING = "Access restricted"


def access_url(base: str, name: str) -> str:
    return f"{base}/auth/{name}/access"


def token1_url(base: str, name: str) -> str:
    return f"{base}/auth/{name}/token"


def token2_url(base: str, name: str) -> str:
    return f"{base}/auth/{name}/token2"


def logout_url(base: str, name: str) -> str:
    return f"{base}/auth/{name}/logout"


def lang(text: str) -> dict[str, list[str]]:
    """A language map of text of no known language."""
    return {"none": [text]}


def _has_logout(policy: PolicySettings) -> bool:
    """Logging out means something where a cookie carries the access."""
    return policy.kind in ("login", "clickthrough")


# --- Auth 1.0 --------------------------------------------------------------------------------


def services_1(policy: PolicySettings, name: str, base: str, *, v3: bool) -> dict[str, Any]:
    """The Auth 1.0 cookie service of ``policy`` with its token (and logout) services."""
    ident = "@id"

    def typed(kind: str, doc: dict[str, Any]) -> dict[str, Any]:
        return {ident: doc.pop(ident), "@type": kind, **doc} if v3 and ident in doc else doc

    token = typed("AuthTokenService1", {ident: token1_url(base, name), "profile": TOKEN1_PROFILE})
    nested = [token]
    if _has_logout(policy):
        logout = {
            ident: logout_url(base, name),
            "profile": LOGOUT1_PROFILE,
            "label": f"Log out from {policy.label}",
        }
        nested.append(typed("AuthLogoutService1", logout))
    cookie: dict[str, Any] = {} if v3 else {"@context": AUTH1_CONTEXT}
    if policy.kind != "external":
        cookie[ident] = access_url(base, name)
    if v3:
        cookie["@type"] = "AuthCookieService1"
    cookie["profile"] = AUTH1_PROFILE + policy.kind
    cookie["label"] = policy.label
    for key, value in (
        ("header", policy.heading),
        ("description", policy.note),
        ("confirmLabel", policy.confirm_label),
        ("failureHeader", policy.failure_heading),
        ("failureDescription", policy.failure_note),
    ):
        if value is not None:
            cookie[key] = value
    cookie["service"] = nested
    return cookie


def token_1(token: str, expires_in: int, message_id: str | None = None) -> dict[str, Any]:
    """The Auth 1.0 token answer (with ``messageId`` for the postMessage page)."""
    doc: dict[str, Any] = {"accessToken": token, "expiresIn": expires_in}
    if message_id is not None:
        doc["messageId"] = message_id
    return doc


def token_error_1(profile: str, message_id: str | None = None) -> tuple[dict[str, Any], int]:
    """The Auth 1.0 error answer for a 2.0 error ``profile``, and its HTTP status for the
    direct JSON answer (the postMessage page is always 200)."""
    error, status = ERRORS_1[profile]
    doc: dict[str, Any] = {"error": error, "description": _DESCRIPTIONS[profile]}
    if message_id is not None:
        doc["messageId"] = message_id
    return doc, status


# --- Auth 2.0 --------------------------------------------------------------------------------


def access_2(policy: PolicySettings, name: str, base: str) -> dict[str, Any]:
    """The Auth 2.0 access service of ``policy`` with its token and logout services."""
    profile = {"login": "active", "clickthrough": "active"}.get(policy.kind, policy.kind)
    token: dict[str, Any] = {"id": token2_url(base, name), "type": "AuthAccessTokenService2"}
    if policy.failure_heading is not None:
        token["errorHeading"] = lang(policy.failure_heading)
        if policy.failure_note is not None:
            token["errorNote"] = lang(policy.failure_note)
    nested = [token]
    if _has_logout(policy):
        nested.append(
            {
                "id": logout_url(base, name),
                "type": "AuthLogoutService2",
                "label": lang(f"Log out from {policy.label}"),
            }
        )
    access: dict[str, Any] = {}
    if profile != "external":
        access["id"] = access_url(base, name)
    access["type"] = "AuthAccessService2"
    access["profile"] = profile
    access["label"] = lang(policy.label)
    if profile == "active":
        for key, value in (
            ("heading", policy.heading),
            ("note", policy.note),
            ("confirmLabel", policy.confirm_label),
        ):
            if value is not None:
                access[key] = lang(value)
    access["service"] = nested
    return access


PROBE_PROFILE = "AuthProbeService2"  # see probe_2: for Mirador 4.0.0, not from the spec


def probe_2(
    policy: PolicySettings, name: str, base: str, probe_url: str, *, v3: bool = True
) -> dict[str, Any]:
    """The Auth 2.0 probe service at ``probe_url`` for a resource of ``policy``; inside a 2.1
    document (``v3`` false) it carries its own ``@context``."""
    probe: dict[str, Any] = {} if v3 else {"@context": AUTH2_CONTEXT}
    probe["id"] = probe_url
    probe["type"] = "AuthProbeService2"
    # Auth 2.0 gives a probe no profile, but Mirador 4.0.0 reads every service beside its Auth
    # 1.0 cookie service with ``getProfile().match(...)`` and stops on one without: a profile
    # that names the type and matches no Auth 1.0 profile keeps it going (clients of 2.0 go by
    # ``type`` and ignore it)
    probe["profile"] = PROBE_PROFILE
    probe["service"] = [access_2(policy, name, base)]
    if policy.failure_heading is not None:
        probe["errorHeading"] = lang(policy.failure_heading)
        if policy.failure_note is not None:
            probe["errorNote"] = lang(policy.failure_note)
    return probe


def services(
    policy: PolicySettings, name: str, base: str, probe_url: str | None, *, v3: bool
) -> list[dict[str, Any]]:
    """What a restricted resource declares: the Auth 2.0 probe at ``probe_url`` (``None``: no
    probe, as on the degraded tier, which everyone may see), then the Auth 1.0 cookie service
    with its token and logout services (1.0 viewers offer the login from it)."""
    found = [services_1(policy, name, base, v3=v3)]
    if probe_url is not None:
        found.insert(0, probe_2(policy, name, base, probe_url, v3=v3))
    return found


def probe_result(
    status: int,
    *,
    substitute: list[dict[str, Any]] | None = None,
    policy: PolicySettings | None = None,
) -> dict[str, Any]:
    """The probe's answer: ``status`` the real resource would have for this caller; a
    ``substitute`` (the degraded tier) and ``heading``/``note`` only when it is denied."""
    doc: dict[str, Any] = {"@context": AUTH2_CONTEXT, "type": "AuthProbeResult2", "status": status}
    if 200 <= status < 400:
        return doc
    if substitute:
        doc["substitute"] = substitute
    # what the user is shown before any attempt: the policy's prompt (its heading and note),
    # else its failure texts
    heading = note = None
    if policy is not None:
        heading = policy.heading or policy.failure_heading
        note = policy.note if policy.heading else policy.failure_note
    doc["heading"] = lang(heading or DEFAULT_FAILURE_HEADING)
    if note is not None:
        doc["note"] = lang(note)
    return doc


def token_2(token: str, expires_in: int, message_id: str) -> dict[str, Any]:
    """The Auth 2.0 access token message (``AuthAccessToken2``)."""
    return {
        "@context": AUTH2_CONTEXT,
        "type": "AuthAccessToken2",
        "accessToken": token,
        "expiresIn": expires_in,
        "messageId": message_id,
    }


def token_error_2(
    profile: str, message_id: str, *, policy: PolicySettings | None = None
) -> dict[str, Any]:
    """The Auth 2.0 access token error message (``AuthAccessTokenError2``) of ``profile``."""
    if profile not in ERRORS_2:
        raise ValueError(f"no Auth 2.0 token error {profile!r}")
    doc: dict[str, Any] = {
        "@context": AUTH2_CONTEXT,
        "type": "AuthAccessTokenError2",
        "profile": profile,
    }
    heading = policy.failure_heading if policy is not None else None
    doc["heading"] = lang(heading or DEFAULT_FAILURE_HEADING)
    note = policy.failure_note if policy is not None and heading else None
    doc["note"] = lang(note or _DESCRIPTIONS[profile])
    doc["messageId"] = message_id
    return doc


def with_auth2_context(doc: Mapping[str, Any]) -> dict[str, Any]:
    """``doc`` (a 3.0 info.json or Presentation resource) with the auth/2 context first in its
    ``@context`` (before the image/presentation context, as Auth 2.0 requires)."""
    context = doc.get("@context")
    values = list(context) if isinstance(context, list) else [] if context is None else [context]
    if AUTH2_CONTEXT in values:
        values.remove(AUTH2_CONTEXT)
    new = {"@context": [AUTH2_CONTEXT, *values]}
    new.update((k, v) for k, v in doc.items() if k != "@context")
    return new
