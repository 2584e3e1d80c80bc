"""Signed values (auth/signing.py): bound to their purpose, expiring, rotated keys, refused
when forged, truncated, signed by another key or oversized."""

from __future__ import annotations

import base64
import json
import time

import pytest

from iiif_shim.auth.signing import MAX_VALUE, Purpose, Signer

KEY = b"k" * 40
OTHER = b"o" * 40


def test_a_value_verifies_for_its_purpose_only() -> None:
    signer = Signer([KEY])
    for purpose in Purpose:
        value, claims = signer.sign(purpose, {"p": "staff"}, 60)
        assert signer.verify(purpose, value) == claims
        for other in Purpose:
            if other is not purpose:
                assert signer.verify(other, value) is None, (purpose, other)


def test_values_are_url_and_cookie_safe_and_never_equal() -> None:
    signer = Signer([KEY])
    now = time.time()
    values = {signer.sign(Purpose.SESSION, {"p": "a"}, 60, now=now)[0] for _ in range(1000)}
    assert len(values) == 1000  # the same claims in the same second: a new id each time
    allowed = set("ABCDEFGHIJKLMNOPQRSTUVWXYZabcdefghijklmnopqrstuvwxyz0123456789-_.")
    assert all(set(v) <= allowed for v in values)
    assert max(len(v) for v in values) < 200


def test_expired_values_are_refused() -> None:
    signer = Signer([KEY])
    now = time.time()
    value, _ = signer.sign(Purpose.TOKEN, {"p": "a"}, 10, now=now)
    assert signer.verify(Purpose.TOKEN, value, now=now + 9) is not None
    assert signer.examine(Purpose.TOKEN, value, now=now + 10) == (None, "expired")
    assert signer.verify(Purpose.TOKEN, value, now=now + 3600) is None


def test_rotation_first_key_signs_every_key_verifies() -> None:
    old = Signer([OTHER])
    rotated = Signer([KEY, OTHER])
    value_old, _ = old.sign(Purpose.SESSION, {"p": "a"}, 60)
    value_new, _ = rotated.sign(Purpose.SESSION, {"p": "a"}, 60)
    assert rotated.verify(Purpose.SESSION, value_old) is not None
    assert rotated.verify(Purpose.SESSION, value_new) is not None
    assert old.verify(Purpose.SESSION, value_new) is None  # made with the new key
    assert Signer([KEY]).verify(Purpose.SESSION, value_old) is None  # the old key dropped


def test_another_key_is_refused() -> None:
    value, _ = Signer([OTHER]).sign(Purpose.SESSION, {"p": "a"}, 60)
    assert Signer([KEY]).examine(Purpose.SESSION, value) == (None, "invalid")


def _forge(value: str, **changes: object) -> str:
    payload, _, mac = value.partition(".")
    claims = json.loads(base64.urlsafe_b64decode(payload + "=" * (-len(payload) % 4)))
    claims.update(changes)
    data = json.dumps(claims, separators=(",", ":")).encode()
    return base64.urlsafe_b64encode(data).rstrip(b"=").decode() + "." + mac


def test_forged_truncated_and_garbage_values_are_refused() -> None:
    signer = Signer([KEY])
    value, _ = signer.sign(Purpose.SESSION, {"p": "terms", "u": "bob"}, 60)
    payload, _, mac = value.partition(".")
    bad = [
        _forge(value, p="staff"),  # another policy, the old mac
        _forge(value, e=int(time.time()) + 10**6),  # a longer life
        value[:-1],
        value[:-5],
        payload,
        payload + ".",
        "." + mac,
        value + "x",
        value.replace(".", ".."),
        payload[:-2] + "." + mac,
        "",
        "a.b",
        "é" * 10 + "." + mac,
    ]
    for forged in bad:
        assert signer.verify(Purpose.SESSION, forged) is None, forged
    assert signer.verify(Purpose.SESSION, None) is None


def test_claims_that_are_not_a_signed_object_are_refused() -> None:
    """A mac that matches over a payload that is no object (a key compromise aside, only a
    bug could sign one) is still not taken for claims."""
    signer = Signer([KEY])
    for raw in (b"[1,2]", b'"x"', b'{"i":"a"}', b'{"i":"a","e":"9999999999"}', b"\xff"):
        payload = base64.urlsafe_b64encode(raw).rstrip(b"=").decode()
        value = payload + "." + signer._mac(KEY, Purpose.SESSION, payload)
        assert signer.verify(Purpose.SESSION, value) is None, raw


def test_oversized_input_is_refused_before_decoding() -> None:
    signer = Signer([KEY])
    value, _ = signer.sign(Purpose.SESSION, {"p": "a"}, 60)
    huge = "A" * (10 * 1024) + value
    assert signer.examine(Purpose.SESSION, huge) == (None, "invalid")
    # even validly signed: nothing over the bound is decoded
    payload = base64.urlsafe_b64encode(b'{"x":"' + b"y" * 3000 + b'"}').rstrip(b"=").decode()
    signed = payload + "." + signer._mac(KEY, Purpose.SESSION, payload)
    assert len(signed) > MAX_VALUE
    assert signer.verify(Purpose.SESSION, signed) is None
    with pytest.raises(ValueError):
        signer.sign(Purpose.SESSION, {"u": "y" * 3000}, 60)


def test_verifying_is_a_function_of_the_key_alone() -> None:
    """Another signer with the same key (another process, another machine) accepts it."""
    value, claims = Signer([KEY]).sign(Purpose.TOKEN, {"p": "a", "s": "sid"}, 60)
    assert Signer([b"k" * 40]).verify(Purpose.TOKEN, value) == claims


def test_digest_hides_the_text_and_is_stable() -> None:
    signer = Signer([KEY])
    digest = signer.digest("user", "alice")
    assert digest == Signer([KEY]).digest("user", "alice")
    assert "alice" not in digest
    assert digest != signer.digest("address", "alice")
    assert digest != Signer([OTHER]).digest("user", "alice")
