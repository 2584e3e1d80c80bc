"""check-config's warnings about settings that quietly open restricted images to anyone."""

from __future__ import annotations

from pathlib import Path
from typing import Any

from iiif_shim.config.settings import parse_settings

KEY = "0123456789abcdef0123456789abcdef-openings"


def _warnings(tmp_path: Path, **changes: Any) -> dict[str, str]:
    (tmp_path / "images").mkdir(exist_ok=True)
    policies: dict[str, Any] = {
        "room": {"kind": "external", "label": "Room", "networks": ["10.20.0.0/16"]},
        "terms": {"kind": "clickthrough", "label": "Terms"},
    }
    policies.update(changes.pop("policies", {}))
    data: dict[str, Any] = {
        "backends": {"a": {"type": "files", "root": "images"}},
        "routes": changes.pop(
            "routes",
            [{"match": "^room/", "backend": "a", "access": "room"}, {"backend": "a"}],
        ),
        "auth": {"secret": KEY, "policies": policies, **changes.pop("auth", {})},
        **changes,
    }
    return dict(parse_settings(data, tmp_path).warnings)


def test_an_ordinary_configuration_has_no_warning(tmp_path: Path) -> None:
    assert _warnings(tmp_path, auth={"forwarded_by": ["127.0.0.1", "10.0.0.5/32"]}) == {}


def test_trusting_everyone_or_public_addresses_is_a_warning(tmp_path: Path) -> None:
    found = _warnings(tmp_path, auth={"forwarded_by": ["0.0.0.0/0"]})
    assert "claim any address" in found["auth.forwarded_by"]
    found = _warnings(tmp_path, auth={"forwarded_by": ["8.8.4.0/24"]})
    assert "public addresses" in found["auth.forwarded_by"]
    header = {"header": "X-Remote-User", "trusted_proxies": ["::/0"]}
    found = _warnings(
        tmp_path, policies={"sso": {"kind": "login", "label": "SSO", "users": header}}
    )
    assert "log in as anyone" in found["auth.policies.sso.users.trusted_proxies"]
    everyone = {"kind": "kiosk", "label": "K", "networks": ["0.0.0.0/0"]}
    found = _warnings(tmp_path, policies={"k": everyone})
    assert "are public" in found["auth.policies.k.networks"]
    # a reading room's own public range is ordinary (universities have them)
    campus = {"kind": "external", "label": "R", "networks": ["8.8.4.0/24"]}
    assert _warnings(tmp_path, policies={"room": campus}) == {}


def test_logins_over_a_public_plain_http_url_are_a_warning(tmp_path: Path) -> None:
    found = _warnings(tmp_path, server={"public_url": "http://images.example.org/iiif"})
    assert "unencrypted" in found["server.public_url"]
    assert _warnings(tmp_path, server={"public_url": "http://127.0.0.1:8182/iiif"}) == {}
    assert _warnings(tmp_path, server={"public_url": "https://images.example.org/iiif"}) == {}


def test_a_public_route_beside_a_stripping_restricted_route_is_a_warning(
    tmp_path: Path,
) -> None:
    """``room/x`` served as native ``x`` while the catch-all serves ``x`` to anyone."""
    stripping = [
        {"match": "^room/(?P<rest>.+)$", "id": "{rest}", "backend": "a", "access": "room"},
        {"backend": "a"},
    ]
    found = _warnings(tmp_path, routes=stripping)
    assert "are public here" in found["routes[1]"]


def test_a_proxy_without_forwarded_by_is_a_warning(tmp_path: Path) -> None:
    """Behind a proxy with an empty `auth.forwarded_by`, every client has the proxy's address:
    the per-address limits of logins and failures then apply to everyone together."""
    found = _warnings(tmp_path, server={"trust_forwarded": True})
    assert "apply to everyone together" in found["auth.forwarded_by"]
    header = {"header": "X-Remote-User", "trusted_proxies": ["127.0.0.1"]}
    sso = {"sso": {"kind": "login", "label": "SSO", "users": header}}
    found = _warnings(tmp_path, policies=sso)
    assert "apply to everyone together" in found["auth.forwarded_by"]
    proxied = {"forwarded_by": ["127.0.0.1"]}
    assert _warnings(tmp_path, server={"trust_forwarded": True}, auth=proxied) == {}
    assert _warnings(tmp_path, policies=sso, auth=proxied) == {}
