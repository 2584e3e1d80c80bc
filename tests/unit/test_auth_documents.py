"""The Auth 1.0 and 2.0 service documents and messages (auth/documents.py) against the shapes
of the specs' examples (IIIF/api source/auth/1.0/index.md and source/auth/2.0/index.md):
the same keys, the same types, the same fixed values."""

from __future__ import annotations

import re
from typing import Any

import pytest

from iiif_shim.auth import documents
from iiif_shim.auth.documents import (
    AUTH1_CONTEXT,
    AUTH2_CONTEXT,
    ERRORS_2,
    PROBE_PROFILE,
    probe_2,
    probe_result,
    services_1,
    token_1,
    token_2,
    token_error_1,
    token_error_2,
    with_auth2_context,
)
from iiif_shim.auth.settings import DegradedSettings, PolicySettings, UsersSettings

BASE = "https://images.example.org"
LOGIN = PolicySettings(
    kind="login",
    label="Example Institution",
    heading="Please Log In",
    note="Example Institution requires that you log in with your example account.",
    confirm_label="Login",
    failure_heading="Authentication Failed",
    failure_note="Call Bob.",
    users=UsersSettings(header="X-User", trusted_proxies=("127.0.0.1",)),
    degraded=DegradedSettings(max_size=500),
)
TERMS = PolicySettings(kind="clickthrough", label="Terms", note="Be nice.", confirm_label="I agree")
KIOSK = PolicySettings(kind="kiosk", label="Gallery", networks=("10.0.0.0/8",))
ROOM = PolicySettings(kind="external", label="Reading room", networks=("10.0.0.0/8",))

# The spec's examples (their shapes: keys and value types), Auth 1.0 section 2.1.1 / 2.2 / 2.3
SPEC_COOKIE_1 = {
    "@context": "http://iiif.io/api/auth/1/context.json",
    "@id": "https://authentication.example.org/login",
    "profile": "http://iiif.io/api/auth/1/login",
    "label": "Login to Example Institution",
    "header": "Please Log In",
    "description": "Example Institution requires that you log in with your example account.",
    "confirmLabel": "Login",
    "failureHeader": "Authentication Failed",
    "failureDescription": '<a href="http://example.org/policy">Access Policy</a>',
    "service": [
        {
            "@id": "https://authentication.example.org/token",
            "profile": "http://iiif.io/api/auth/1/token",
        },
        {
            "@id": "https://authentication.example.org/logout",
            "profile": "http://iiif.io/api/auth/1/logout",
            "label": "Logout from Example Institution",
        },
    ],
}
# Image API 3.0 section 7 / Presentation 3.0: older services inside 3.0 documents
SPEC_COOKIE_1_IN_3 = {
    "@id": "https://auth.example.org/login",
    "@type": "AuthCookieService1",
    "profile": "http://iiif.io/api/auth/1/login",
    "label": "Login to Example Institution",
    "service": [
        {
            "@id": "https://auth.example.org/token",
            "@type": "AuthTokenService1",
            "profile": "http://iiif.io/api/auth/1/token",
        }
    ],
}
SPEC_TOKEN_1 = {"accessToken": "TOKEN_HERE", "expiresIn": 3600}
SPEC_TOKEN_1_MESSAGE = {"messageId": "1234", "accessToken": "TOKEN_HERE", "expiresIn": 3600}
SPEC_ERROR_1 = {"error": "missingCredentials", "description": "..."}
# Auth 2.0 sections 2.1, 3.3.1, 4.1
SPEC_PROBE_2 = {
    "id": "https://auth.example.org/probe/my-video",
    "type": "AuthProbeService2",
    "service": [
        {
            "id": "https://auth.example.org/login",
            "type": "AuthAccessService2",
            "profile": "active",
            "label": {"en": ["Login to Example Institution"]},
            "heading": {"en": ["Please Log In"]},
            "note": {"en": ["Example Institution requires that you log in."]},
            "confirmLabel": {"en": ["Login"]},
            "service": [
                {
                    "id": "https://auth.example.org/token",
                    "type": "AuthAccessTokenService2",
                    "errorHeading": {"en": ["Something went wrong"]},
                    "errorNote": {"en": ["Could not get a token."]},
                },
                {
                    "id": "https://auth.example.org/logout",
                    "type": "AuthLogoutService2",
                    "label": {"en": ["Logout from Example Institution"]},
                },
            ],
        }
    ],
    "errorHeading": {"en": ["Something went wrong"]},
    "errorNote": {"en": ["Could not get a token."]},
}
SPEC_TOKEN_2 = {
    "@context": "http://iiif.io/api/auth/2/context.json",
    "type": "AuthAccessToken2",
    "accessToken": "ddc76e416e3804e2369e6c9cee806f5e438a5cdc",
    "expiresIn": 300,
    "messageId": "ae3415",
}
SPEC_ERROR_2 = {
    "@context": "http://iiif.io/api/auth/2/context.json",
    "type": "AuthAccessTokenError2",
    "profile": "missingAspect",
    "heading": {"en": ["Unauthorized"]},
    "note": {"en": ["Call Bob at ext. 1234 to refill the cookie jar"]},
    "messageId": "ae3415",
}
SPEC_PROBE_RESULT_OK = {
    "@context": "http://iiif.io/api/auth/2/context.json",
    "type": "AuthProbeResult2",
    "status": 200,
}
SPEC_PROBE_RESULT_DENIED = {
    "@context": "http://iiif.io/api/auth/2/context.json",
    "type": "AuthProbeResult2",
    "status": 401,
    "substitute": [{"id": "https://auth.example.org/my-video-lo-res.mp4", "type": "Video"}],
    "heading": {"en": ["You can't see this"]},
    "note": {"en": ["Sorry"]},
}
FIXED = {"@context", "@type", "type", "profile"}  # keys whose values must be the same


def shape(value: Any) -> Any:
    """Keys and types; the values of the fixed keys; a language map as a map of lists of
    strings, whatever its language."""
    if isinstance(value, dict):
        lists = value and all(isinstance(v, list) for v in value.values())
        if lists and all(isinstance(x, str) for v in value.values() for x in v):
            return "language map"
        return {k: (v if k in FIXED else shape(v)) for k, v in value.items()}
    if isinstance(value, list):
        return [shape(v) for v in value]
    return type(value).__name__


def same_shape(ours: Any, spec: Any) -> None:
    assert shape(ours) == shape(spec), f"\nours: {shape(ours)}\nspec: {shape(spec)}"


def test_cookie_service_1_in_2x_documents_is_the_spec_example() -> None:
    doc = services_1(LOGIN, "staff", BASE, v3=False)
    same_shape(doc, SPEC_COOKIE_1)
    assert doc["@context"] == AUTH1_CONTEXT
    assert doc["@id"] == f"{BASE}/auth/staff/access"
    assert [s["@id"] for s in doc["service"]] == [
        f"{BASE}/auth/staff/token",
        f"{BASE}/auth/staff/logout",
    ]
    assert doc["label"] == "Example Institution" and doc["header"] == "Please Log In"


def test_cookie_service_1_in_3_documents_uses_typed_forms() -> None:
    doc = services_1(TERMS, "terms", BASE, v3=True)
    assert "@context" not in doc
    assert doc["@type"] == "AuthCookieService1"
    assert doc["profile"] == "http://iiif.io/api/auth/1/clickthrough"
    assert [s["@type"] for s in doc["service"]] == ["AuthTokenService1", "AuthLogoutService1"]
    assert [s["profile"] for s in doc["service"]] == [
        "http://iiif.io/api/auth/1/token",
        "http://iiif.io/api/auth/1/logout",
    ]
    minimal = {k: v for k, v in doc.items() if k not in ("description", "confirmLabel")}
    minimal["service"] = doc["service"][:1]
    same_shape(minimal, {**SPEC_COOKIE_1_IN_3, "profile": doc["profile"]})


@pytest.mark.parametrize(
    ("policy", "profile", "has_id", "has_logout"),
    [(KIOSK, "kiosk", True, False), (ROOM, "external", False, False)],
)
def test_cookie_service_1_profiles(
    policy: PolicySettings, profile: str, has_id: bool, has_logout: bool
) -> None:
    for v3 in (False, True):
        doc = services_1(policy, "p", BASE, v3=v3)
        assert doc["profile"] == f"http://iiif.io/api/auth/1/{profile}"
        assert ("@id" in doc) is has_id
        assert len(doc["service"]) == 1 + has_logout
        assert all(isinstance(v, str) for k, v in doc.items() if k != "service")


def test_token_messages_1() -> None:
    same_shape(token_1("abc", 3600), SPEC_TOKEN_1)
    same_shape(token_1("abc", 3600, "1234"), SPEC_TOKEN_1_MESSAGE)
    expected = {
        "invalidRequest": ("invalidRequest", 400),
        "invalidOrigin": ("invalidOrigin", 403),
        "missingAspect": ("missingCredentials", 401),
        "invalidAspect": ("invalidCredentials", 401),
        "expiredAspect": ("invalidCredentials", 401),
        "unavailable": ("unavailable", 503),
    }
    for profile, (error, status) in expected.items():
        doc, code = token_error_1(profile)
        same_shape(doc, SPEC_ERROR_1)
        assert (doc["error"], code) == (error, status)
        with_id, _ = token_error_1(profile, "m1")
        assert with_id["messageId"] == "m1"


def test_probe_service_2_is_the_spec_example() -> None:
    probe = probe_2(LOGIN, "staff", BASE, f"{BASE}/auth/probe/image/x")
    # the one key beyond the spec's example: a profile Mirador 4.0.0 needs on every service
    # beside a cookie service (it calls getProfile().match on each), matching no Auth 1.0 one
    assert probe.pop("profile") == PROBE_PROFILE
    assert not re.match(r"http://iiif.io/api/auth/", PROBE_PROFILE)
    same_shape(probe, SPEC_PROBE_2)
    access = probe["service"][0]
    assert access["id"] == f"{BASE}/auth/staff/access"
    assert access["label"] == {"none": ["Example Institution"]}
    assert [s["id"] for s in access["service"]] == [
        f"{BASE}/auth/staff/token2",
        f"{BASE}/auth/staff/logout",
    ]
    assert "@context" not in probe  # in 3.0 documents the context goes up
    assert probe_2(LOGIN, "staff", BASE, "u", v3=False)["@context"] == AUTH2_CONTEXT


@pytest.mark.parametrize(
    ("policy", "profile", "has_id"),
    [(TERMS, "active", True), (KIOSK, "kiosk", True), (ROOM, "external", False)],
)
def test_access_service_2_profiles(policy: PolicySettings, profile: str, has_id: bool) -> None:
    access = probe_2(policy, "p", BASE, "u")["service"][0]
    assert access["type"] == "AuthAccessService2"
    assert access["profile"] == profile
    assert ("id" in access) is has_id
    tokens = [s for s in access["service"] if s["type"] == "AuthAccessTokenService2"]
    assert len(tokens) == 1
    assert all(set(s) >= {"id", "type"} for s in access["service"])
    if profile != "active":
        assert not {"heading", "note", "confirmLabel"} & set(access)


def test_probe_results() -> None:
    same_shape(probe_result(200, policy=LOGIN), SPEC_PROBE_RESULT_OK)
    substitute = [{"id": "https://x/degraded/3/y", "type": "ImageService3"}]
    denied = probe_result(401, substitute=substitute, policy=LOGIN)
    same_shape(
        denied,
        {**SPEC_PROBE_RESULT_DENIED, "substitute": [{"id": "u", "type": "ImageService3"}]},
    )
    # before any attempt the user is shown the policy's prompt, not its failure texts
    assert denied["heading"] == {"none": ["Please Log In"]}
    assert denied["note"] == {"none": [LOGIN.note]}
    assert "substitute" not in probe_result(200, substitute=substitute, policy=LOGIN)
    bare = probe_result(401, policy=TERMS)
    assert "substitute" not in bare and "note" not in bare and "heading" in bare


def test_token_messages_2() -> None:
    same_shape(token_2("abc", 300, "ae3415"), SPEC_TOKEN_2)
    for profile in ERRORS_2:
        doc = token_error_2(profile, "ae3415", policy=LOGIN)
        same_shape(doc, {**SPEC_ERROR_2, "profile": profile})
        assert doc["profile"] == profile and doc["messageId"] == "ae3415"
        assert "note" not in doc or "heading" in doc
    with pytest.raises(ValueError):
        token_error_2("notAProfile", "m")


def test_auth2_context_goes_before_the_image_context() -> None:
    info = {"@context": "http://iiif.io/api/image/3/context.json", "id": "x", "type": "I"}
    out = with_auth2_context(info)
    assert out["@context"] == [AUTH2_CONTEXT, "http://iiif.io/api/image/3/context.json"]
    assert list(out) == ["@context", "id", "type"]
    again = with_auth2_context(out)
    assert again["@context"] == out["@context"]  # not twice
    manifest = {"@context": ["http://example.org/ext.json", documents.AUTH1_CONTEXT]}
    assert with_auth2_context(manifest)["@context"][0] == AUTH2_CONTEXT
