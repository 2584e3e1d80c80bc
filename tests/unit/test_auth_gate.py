"""The gate (auth/gate.py): who gets which tier, tokens and cookies never taken for each
other, bound to their policy and key, refused once expired or revoked (in another process
too), tokens for kiosk and external addresses, login limits, CSRF, origins, header users, and
audit lines that never hold a secret."""

from __future__ import annotations

import asyncio
import json
import time
from collections.abc import Iterator
from pathlib import Path

import bcrypt
import pytest

from iiif_shim.auth import users as users_module
from iiif_shim.auth.audit import Audit
from iiif_shim.auth.gate import Caller, Gate, Outcome, Tier, cookie_name
from iiif_shim.auth.settings import (
    AuthSettings,
    DegradedSettings,
    FailureLimits,
    PolicySettings,
    UsersSettings,
)
from iiif_shim.auth.signing import Purpose, Signer
from iiif_shim.auth.store import Store
from iiif_shim.base import redaction

SECRET = "s" * 20 + "-gate-test-secret-" + "t" * 10
OTHER_SECRET = "o" * 40
ADDRESS = "192.0.2.7"


def _settings(tmp_path: Path, secret: str = SECRET, **more: object) -> AuthSettings:
    users = tmp_path / "users.htpasswd"
    tmp_path.mkdir(parents=True, exist_ok=True)
    if not users.exists():
        hashed = bcrypt.hashpw(b"right-password", bcrypt.gensalt(4)).decode()
        users.write_text(f"bob:{hashed}\n")
    policies = {
        "staff": PolicySettings(
            kind="login",
            label="Staff",
            users=UsersSettings(htpasswd=users),
            degraded=DegradedSettings(max_size=400),
        ),
        "terms": PolicySettings(kind="clickthrough", label="Terms"),
        "room": PolicySettings(kind="external", label="Room", networks=("10.20.0.0/16",)),
        "kiosk": PolicySettings(kind="kiosk", label="Kiosk", networks=("2001:db8::/32",)),
        "sso": PolicySettings(
            kind="login",
            label="SSO",
            users=UsersSettings(header="X-Remote-User", trusted_proxies=("127.0.0.1",)),
        ),
    }
    values: dict[str, object] = {
        "secret": secret,
        "state_dir": tmp_path / "state",
        "audit_log": tmp_path / "audit.log",
        "policies": policies,
        "max_failures": FailureLimits(per_user=3, per_address=5, window=60),
        **more,
    }
    return AuthSettings(**values)  # type: ignore[arg-type]


def _open(settings: AuthSettings) -> Gate:
    return asyncio.run(Gate.open(settings, None, None))


@pytest.fixture
def gate(tmp_path: Path) -> Iterator[Gate]:
    found = _open(_settings(tmp_path))
    yield found
    asyncio.run(found.close())


def caller(
    cookies: dict[str, str] | None = None, bearer: str | None = None, address: str = ADDRESS
) -> Caller:
    return Caller(address, cookies or {}, bearer)


def test_tiers_without_and_with_a_login(gate: Gate) -> None:
    assert gate.decide(None, caller()).full  # public
    nobody = gate.decide("staff", caller())
    assert (nobody.tier, nobody.max_size) == (Tier.DEGRADED, 400)
    assert gate.decide("terms", caller()).tier is Tier.NONE
    assert gate.decide("no-such-policy", caller()).tier is Tier.NONE  # fail closed
    cookie, session = gate.start_session("staff", "bob")
    verdict = gate.decide("staff", caller({cookie_name("staff"): cookie}))
    assert verdict.full and verdict.user == "bob"
    assert gate.session("staff", caller({cookie_name("staff"): cookie})) == session


def test_any_user_name_fits_a_cookie(gate: Gate) -> None:
    """An SSO or OIDC name may be long and of any script: it is cut, never refused."""
    for name in ("\U0001f600" * 1000, "é" * 1000, "a\ud800b", "x" * 10_000):
        cookie, session = gate.start_session("terms", name)
        assert len(cookie) < 2048 and len(session.user) <= 128
        verdict = gate.decide("terms", caller({cookie_name("terms"): cookie}))
        assert verdict.full and verdict.user == session.user


def test_a_cookie_of_one_policy_opens_nothing_of_another(gate: Gate) -> None:
    terms, _ = gate.start_session("terms", "anyone")
    assert gate.decide("terms", caller({cookie_name("terms"): terms})).full
    # the terms cookie under the staff cookie's name
    assert not gate.decide("staff", caller({cookie_name("staff"): terms})).full
    token = gate.issue_token("terms", caller({cookie_name("terms"): terms}))
    assert not isinstance(token, str)
    assert gate.decide("terms", caller(bearer=token.value), bearer_ok=True).full
    assert not gate.decide("staff", caller(bearer=token.value), bearer_ok=True).full


def test_a_token_as_a_cookie_and_a_cookie_as_a_token_are_refused(gate: Gate) -> None:
    cookie, _ = gate.start_session("staff", "bob")
    token = gate.issue_token("staff", caller({cookie_name("staff"): cookie}))
    assert not isinstance(token, str)
    assert token.value != cookie
    assert not gate.decide("staff", caller({cookie_name("staff"): token.value})).full
    assert not gate.decide("staff", caller(bearer=cookie), bearer_ok=True).full
    csrf = gate.csrf("staff")
    assert not gate.decide("staff", caller({cookie_name("staff"): csrf})).full
    assert not gate.decide("staff", caller(bearer=csrf), bearer_ok=True).full
    # a token opens info.json (bearer_ok), never an image
    assert gate.decide("staff", caller(bearer=token.value), bearer_ok=True).full
    assert not gate.decide("staff", caller(bearer=token.value)).full


def test_forged_other_secret_and_expired_values_are_refused(tmp_path: Path, gate: Gate) -> None:
    other = _open(_settings(tmp_path / "other", secret=OTHER_SECRET))
    try:
        foreign, _ = other.start_session("staff", "bob")
        assert not gate.decide("staff", caller({cookie_name("staff"): foreign})).full
        foreign_token = other.issue_token("staff", caller({cookie_name("staff"): foreign}))
        assert not isinstance(foreign_token, str)
        assert not gate.decide("staff", caller(bearer=foreign_token.value), bearer_ok=True).full
    finally:
        asyncio.run(other.close())
    signer = Signer([SECRET.encode()])
    old, _ = signer.sign(Purpose.SESSION, {"p": "staff", "u": "bob"}, 10, now=time.time() - 20)
    assert not gate.decide("staff", caller({cookie_name("staff"): old})).full
    assert gate.issue_token("staff", caller({cookie_name("staff"): old})) == "expiredAspect"
    cookie, _ = gate.start_session("staff", "bob")
    forged = cookie[:-2] + ("AA" if not cookie.endswith("AA") else "BB")
    assert not gate.decide("staff", caller({cookie_name("staff"): forged})).full
    assert gate.issue_token("staff", caller({cookie_name("staff"): forged})) == "invalidAspect"
    assert gate.issue_token("staff", caller()) == "missingAspect"
    huge = "A" * 10240
    assert not gate.decide("staff", caller({cookie_name("staff"): huge}, huge), bearer_ok=True).full


def test_a_rotated_key_still_accepts_old_logins(tmp_path: Path) -> None:
    old = _open(_settings(tmp_path / "a", secret=OTHER_SECRET))
    new = _open(_settings(tmp_path / "b", secret=SECRET + "\n" + OTHER_SECRET))
    try:
        cookie, _ = old.start_session("staff", "bob")
        assert new.decide("staff", caller({cookie_name("staff"): cookie})).full
    finally:
        asyncio.run(old.close())
        asyncio.run(new.close())


def test_logout_revokes_the_cookie_and_its_tokens_in_every_process(
    tmp_path: Path, gate: Gate
) -> None:
    """Another gate on the same state folder (another worker) refuses the replayed cookie
    and the tokens made from it."""
    settings = _settings(tmp_path)
    other = _open(settings)
    try:
        cookie, _ = gate.start_session("staff", "bob")
        jar = {cookie_name("staff"): cookie}
        token = gate.issue_token("staff", caller(jar))
        assert not isinstance(token, str)
        assert other.decide("staff", caller(jar)).full
        assert other.decide("staff", caller(bearer=token.value), bearer_ok=True).full
        asyncio.run(gate.end_session("staff", caller(jar)))
        for g in (gate, other):
            assert not g.decide("staff", caller(jar)).full  # replayed after logout
            assert not g.decide("staff", caller(bearer=token.value), bearer_ok=True).full
            assert g.issue_token("staff", caller(jar)) == "invalidAspect"
        again, _ = other.start_session("staff", "bob")  # a new login works
        assert gate.decide("staff", caller({cookie_name("staff"): again})).full
    finally:
        asyncio.run(other.close())


def test_a_token_never_outlives_its_session(tmp_path: Path) -> None:
    gate = _open(_settings(tmp_path, token_ttl=3600, session_ttl=100))
    try:
        cookie, session = gate.start_session("terms", "x")
        token = gate.issue_token("terms", caller({cookie_name("terms"): cookie}))
        assert not isinstance(token, str)
        assert token.exp <= session.exp and token.expires_in <= 100
    finally:
        asyncio.run(gate.close())


def test_addresses_inside_networks_are_full_and_get_tokens(gate: Gate) -> None:
    inside, outside = "10.20.3.4", "10.21.0.1"
    assert gate.decide("room", caller(address=inside)).full
    assert gate.decide("room", caller(address="::ffff:10.20.3.4")).full
    assert not gate.decide("room", caller(address=outside)).full
    assert gate.decide("kiosk", caller(address="2001:db8::5")).full
    assert not gate.decide("kiosk", caller(address="garbage")).full
    token = gate.issue_token("room", caller(address=inside))
    assert not isinstance(token, str)
    assert inside not in token.value  # the token names no address
    assert gate.decide("room", caller(bearer=token.value, address=inside), bearer_ok=True).full
    # from another address the token is worth nothing
    moved = caller(bearer=token.value, address=outside)
    assert not gate.decide("room", moved, bearer_ok=True).full
    assert gate.issue_token("room", caller(address=outside)) == "missingAspect"
    # a logout with it revokes nothing: the token is short-lived and bound to the address
    asyncio.run(gate.end_session("room", caller(bearer=token.value, address=inside)))
    again = caller(bearer=token.value, address=inside)
    assert gate.decide("room", again).full  # the address still is inside
    assert gate._token_ok(gate._policies["room"], again)


def test_kiosk_and_external_take_no_cookie_the_address_decides(gate: Gate) -> None:
    """A room cookie (made with the key, as an old access page gave one) opens nothing
    outside the room and mints no token there."""
    value, _ = gate.signer.sign(Purpose.SESSION, {"p": "room", "u": "10.20.3.4"}, 3600)
    outside = caller({cookie_name("room"): value}, address="10.21.0.1")
    assert not gate.decide("room", outside, bearer_ok=True).full
    assert gate.session("room", outside) is None
    assert isinstance(gate.issue_token("room", outside), str)


def test_header_users_are_believed_from_trusted_proxies_only(gate: Gate) -> None:
    assert gate.header_user("sso", "127.0.0.1", "alice") == "alice"
    assert gate.header_user("sso", "192.0.2.1", "alice") is None
    assert gate.header_user("sso", "127.0.0.1", "") is None
    assert gate.header_user("sso", "127.0.0.1", "a\nb") is None
    assert gate.header_user("staff", "127.0.0.1", "alice") is None  # htpasswd, no header


def test_passwords_and_failure_limits(gate: Gate) -> None:
    async def main() -> None:
        attempt = await gate.try_login("staff", "bob", "right-password", ADDRESS)
        assert attempt.outcome is Outcome.OK
        assert (await gate.try_login("terms", "bob", "right-password", ADDRESS)).outcome is (
            Outcome.FAILED
        )
        for _ in range(3):
            attempt = await gate.try_login("staff", "bob", "wrong", ADDRESS)
            assert attempt.outcome is Outcome.FAILED
        limited = await gate.try_login("staff", "bob", "right-password", ADDRESS)
        assert limited.outcome is Outcome.LIMITED
        assert limited.retry_after is not None and 1 <= limited.retry_after <= 60
        # other users from the address: 5 failures of the address are allowed (the success
        # took its count back, the refused attempt was never counted)
        for user in ("carl", "dan"):
            assert (await gate.try_login("staff", user, "x", ADDRESS)).outcome is Outcome.FAILED
        assert (await gate.try_login("staff", "eve", "x", ADDRESS)).outcome is Outcome.LIMITED
        other = await gate.try_login("staff", "eve", "x", "192.0.2.8")
        assert other.outcome is Outcome.FAILED

    asyncio.run(main())


def test_a_busy_checker_counts_nothing_and_says_when_to_come_back(
    gate: Gate, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setattr(users_module, "CHECK_WAIT", 0.05)
    path = gate.policy("staff").users.htpasswd  # type: ignore[union-attr]
    assert path is not None

    async def main() -> None:
        gate._htpasswd[path] = users_module.Htpasswd(path, asyncio.Semaphore(0))  # no turn
        for _ in range(5):  # more than per_user (3)
            busy = await gate.try_login("staff", "bob", "right-password", ADDRESS)
            assert busy.outcome is Outcome.BUSY and busy.retry_after
        gate._htpasswd[path] = users_module.Htpasswd(path)
        assert (await gate.try_login("staff", "bob", "right-password", ADDRESS)).outcome is (
            Outcome.OK
        )

    asyncio.run(main())
    audit = gate.settings.audit_log
    assert audit is not None
    assert not audit.exists() or "login_failed" not in audit.read_text()


def test_a_failed_login_names_only_users_the_file_has(gate: Gate) -> None:
    """A password typed into the user field is never written: an unknown name is a hash."""

    async def main() -> None:
        await gate.try_login("staff", "bob", "wrong", ADDRESS)
        await gate.try_login("staff", "my-secret-password", "wrong", ADDRESS)
        await gate.try_login("staff", "my-secret-password", "again", ADDRESS)

    asyncio.run(main())
    path = gate.settings.audit_log
    assert path is not None
    text = path.read_text()
    lines = [json.loads(x) for x in text.splitlines() if "login_failed" in x]
    assert lines[0]["user"] == "bob" and "user_hash" not in lines[0]
    assert lines[1]["user"] is None and lines[1]["user_hash"]
    assert lines[1]["user_hash"] == lines[2]["user_hash"]  # the same text, the same hash
    assert "my-secret-password" not in text


def test_csrf_values(gate: Gate) -> None:
    value = gate.csrf("staff", "browser-1")
    assert gate.csrf_ok("staff", value, "browser-1")
    assert not gate.csrf_ok("staff", value, "browser-2")
    assert not gate.csrf_ok("terms", value, "browser-1")
    assert not gate.csrf_ok("staff", None, "browser-1")
    assert not gate.csrf_ok("staff", gate.start_session("staff", "x")[0], "")
    assert gate.csrf("staff") != gate.csrf("staff")


def test_origins(tmp_path: Path, gate: Gate) -> None:
    assert gate.origin_allowed("https://viewer.example.org")
    for bad in (None, "", "null", "javascript:alert(1)", "https://a/b", "https://a'><", "ftp://a"):
        assert not gate.origin_allowed(bad), bad
    strict = _open(_settings(tmp_path / "s", allowed_origins=("https://viewer.example.org",)))
    try:
        assert strict.origin_allowed("https://viewer.example.org")
        assert strict.origin_allowed("https://Viewer.example.org")
        assert not strict.origin_allowed("https://viewer.example.org/")  # an origin has no /
        assert not strict.origin_allowed("https://viewer.example.org.evil.test")
        assert not strict.origin_allowed("http://viewer.example.org")
        assert strict.origin_allowed("https://viewer.example.org:443")  # its default port
        assert not strict.origin_allowed("https://viewer.example.org:8443")
    finally:
        asyncio.run(strict.close())
    ported = _open(
        _settings(
            tmp_path / "p",
            allowed_origins=("https://viewer.example.org:443", "http://local.test:80"),
        )
    )
    try:
        assert ported.origin_allowed("https://viewer.example.org")
        assert ported.origin_allowed("http://local.test")
        assert not ported.origin_allowed("http://viewer.example.org")
    finally:
        asyncio.run(strict.close())


def test_audit_lines_name_events_and_hold_no_secret(tmp_path: Path) -> None:
    redaction.remember(SECRET)  # as the configuration reader does for auth.secret
    gate = _open(_settings(tmp_path))
    try:
        cookie, _ = gate.start_session("staff", "bob", address=ADDRESS)
        jar = {cookie_name("staff"): cookie}
        token = gate.issue_token("staff", caller(jar))
        assert not isinstance(token, str)
        assert gate.issue_token("staff", caller()) == "missingAspect"

        async def main() -> None:
            attempt = await gate.try_login("staff", "bob", "hunter2-password", ADDRESS)
            assert attempt.outcome is Outcome.FAILED
            await gate.end_session("staff", caller(jar, token.value))

        asyncio.run(main())
        gate.audit.event("refused", policy="staff", address=ADDRESS, identifier="x" * 5000)
    finally:
        asyncio.run(gate.close())
    text = (tmp_path / "audit.log").read_text()
    lines = [json.loads(line) for line in text.splitlines()]
    assert [line["event"] for line in lines] == [
        "login",
        "token",
        "token_refused",
        "login_failed",
        "logout",
        "refused",
    ]
    assert all(line["time"].endswith("Z") and "T" in line["time"] for line in lines)
    assert lines[0]["user"] == "bob" and lines[0]["address"] == ADDRESS
    assert lines[2]["reason"] == "missingAspect"
    assert len(lines[-1]["identifier"]) <= 256
    for secret in (cookie, token.value, SECRET, "hunter2-password", "right-password"):
        assert secret not in text
    for part in (cookie.split(".")[1], token.value.split(".")[1]):
        assert part not in text


def test_audit_without_a_file_goes_to_the_logger(
    tmp_path: Path, caplog: pytest.LogCaptureFixture
) -> None:
    gate = _open(_settings(tmp_path, audit_log=None))
    try:
        with caplog.at_level("INFO", logger="iiif_shim.audit"):
            gate.start_session("terms", "someone", address=ADDRESS)
    finally:
        asyncio.run(gate.close())
    records = [r for r in caplog.records if r.name == "iiif_shim.audit"]
    assert len(records) == 1 and json.loads(records[0].getMessage())["event"] == "login"


def test_a_gate_without_keys_makes_a_random_one(tmp_path: Path) -> None:
    settings = _settings(tmp_path)
    bare = AuthSettings(policies=settings.policies, state_dir=tmp_path / "state")
    store = asyncio.run(Store.open(tmp_path / "state", None))
    one, two = Gate(bare, store, keys=()), Gate(bare, store, keys=())
    cookie, _ = one.start_session("terms", "x")
    assert one.decide("terms", caller({cookie_name("terms"): cookie})).full
    assert not two.decide("terms", caller({cookie_name("terms"): cookie})).full
    asyncio.run(store.close())


def test_the_audit_log_follows_a_rotation(tmp_path: Path, caplog: pytest.LogCaptureFixture) -> None:
    """Renamed away (logrotate's default), the next line goes to a new file of that name;
    a file that cannot be written sends the lines to the logger, and back when it can."""
    audit = Audit(tmp_path / "audit.log")
    audit.event("login", user="one")
    (tmp_path / "audit.log").rename(tmp_path / "audit.log.1")
    audit.event("login", user="two")
    (tmp_path / "audit.log").unlink()
    audit.event("login", user="three")
    audit.close()
    assert '"one"' in (tmp_path / "audit.log.1").read_text()
    assert '"two"' not in (tmp_path / "audit.log.1").read_text()
    assert '"three"' in (tmp_path / "audit.log").read_text()
    assert '"two"' not in (tmp_path / "audit.log").read_text()  # removed with its file
    with pytest.raises(ValueError):
        audit.event("not-an-event")
    blocked = tmp_path / "blocked"
    blocked.mkdir()  # a folder where the file should be: cannot be written
    audit = Audit(blocked)
    with caplog.at_level("INFO"):
        audit.event("logout", user="four")
        audit.event("logout", user="five")
        blocked.rmdir()
        audit.event("logout", user="six")
    audit.close()
    lines = [r.getMessage() for r in caplog.records]
    assert len([m for m in lines if "cannot write the audit log" in m]) == 1
    assert any('"four"' in m for m in lines) and any('"five"' in m for m in lines)
    assert any("written again" in m for m in lines)
    assert '"six"' in blocked.read_text()


def test_kept_cookie_claims_are_still_checked_for_revocation_and_expiry(gate: Gate) -> None:
    """The claims of a cookie are verified once and kept; a logout and the cookie's end
    still count on the very next tile."""
    value, _ = gate.start_session("staff", "bob")
    jar = caller({cookie_name("staff"): value})
    assert gate.decide("staff", jar).full
    assert gate.decide("staff", jar).full  # from the kept claims
    asyncio.run(gate.end_session("staff", jar))
    assert not gate.decide("staff", jar).full
    short, _ = gate.signer.sign(Purpose.SESSION, {"p": "staff", "u": "bob"}, 1)
    brief = caller({cookie_name("staff"): short})
    assert gate.decide("staff", brief).full
    deadline = time.time() + 3
    while gate.decide("staff", brief).full and time.time() < deadline:
        time.sleep(0.05)
    assert not gate.decide("staff", brief).full


def _revocations(gate: Gate) -> list[str]:
    path = gate.store.folder / "revoked"
    return path.read_text().splitlines() if path.exists() else []


def test_only_a_login_with_credentials_is_revoked_at_logout(gate: Gate) -> None:
    """What fills the revocations (and so, when full, logs everyone out): only logouts of a
    `login` policy's session given by its cookie; never a kiosk/external token, a
    clickthrough session, or a bearer token alone, which cost nothing to make."""

    async def main() -> None:
        for _ in range(5):  # address tokens from inside a room or kiosk
            for policy, address in (("room", "10.20.3.4"), ("kiosk", "2001:db8::5")):
                token = gate.issue_token(policy, caller(address=address))
                assert not isinstance(token, str)
                await gate.end_session(policy, caller(bearer=token.value, address=address))
        for _ in range(5):  # free clickthrough logins, their tokens and logouts
            cookie, _ = gate.start_session("terms", "clickthrough")
            jar = {cookie_name("terms"): cookie}
            token = gate.issue_token("terms", caller(jar))
            assert not isinstance(token, str)
            await gate.end_session("terms", caller(jar, bearer=token.value))
        cookie, _ = gate.start_session("staff", "bob")
        jar = {cookie_name("staff"): cookie}
        token = gate.issue_token("staff", caller(jar))
        assert not isinstance(token, str)
        await gate.end_session("staff", caller(bearer=token.value))  # the token alone
        assert _revocations(gate) == []
        assert gate.decide("staff", caller(bearer=token.value), bearer_ok=True).full
        await gate.end_session("staff", caller(jar, bearer=token.value))
        assert len(_revocations(gate)) == 1  # the session: its tokens with it
        assert not gate.decide("staff", caller(bearer=token.value), bearer_ok=True).full
        assert not gate.decide("staff", caller(jar)).full

    asyncio.run(main())


def test_logins_per_address_count_logins_only_and_ipv6_by_its_64(tmp_path: Path) -> None:
    limits = FailureLimits(per_user=3, per_address=2, window=60, logins_per_address=3)
    gate = _open(_settings(tmp_path, max_failures=limits))

    async def main() -> None:
        for _ in range(10):  # clickthroughs are not counted
            assert await gate.allow_session("terms", ADDRESS) is None
        for _ in range(3):
            assert await gate.allow_session("staff", ADDRESS) is None
        assert await gate.allow_session("staff", ADDRESS) is not None
        assert await gate.allow_session("sso", ADDRESS) is not None  # every login policy
        assert await gate.allow_session("staff", "192.0.2.8") is None
        # IPv6: one /64 is one address
        for i in range(3):
            assert await gate.allow_session("staff", f"2001:db8:1:2::{i + 1:x}") is None
        assert await gate.allow_session("staff", "2001:db8:1:2:ffff::9") is not None
        assert await gate.allow_session("staff", "2001:db8:1:3::1") is None
        # failures per address too
        for i in range(2):
            attempt = await gate.try_login("staff", f"u{i}", "x", f"2001:db8:9:9::{i + 1}")
            assert attempt.outcome is Outcome.FAILED
        attempt = await gate.try_login("staff", "u9", "x", "2001:db8:9:9:1::1")
        assert attempt.outcome is Outcome.LIMITED

    try:
        asyncio.run(main())
    finally:
        asyncio.run(gate.close())


def test_repeated_refusals_are_counted_and_the_next_line_says_how_many(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    """The audit log's one throttle: the same refusal (event, policy, address, reason) within
    10 s is counted, not written; the next line written for it says how many were left out.
    Other events are all written."""
    from iiif_shim.auth import audit as audit_module

    clock = [1000.0]
    monkeypatch.setattr(audit_module.time, "monotonic", lambda: clock[0])
    path = tmp_path / "audit.log"
    audit = Audit(path)
    try:
        for _ in range(1000):
            audit.event("refused", policy="vault", address=ADDRESS, reason="not logged in")
            audit.event("token_refused", policy="vault", address=ADDRESS, reason="missingAspect")
            audit.event("login_failed", policy="vault", address=ADDRESS)
        audit.event("refused", policy="vault", address="192.0.2.8", reason="not logged in")
        clock[0] += 10.5
        audit.event("refused", policy="vault", address=ADDRESS, reason="not logged in")
        lines = [json.loads(x) for x in path.read_text().splitlines()]
    finally:
        audit.close()
    assert [x["event"] for x in lines].count("login_failed") == 1000
    refused = [x for x in lines if x["event"] != "login_failed"]
    assert [(x["event"], x["address"], x.get("repeated")) for x in refused] == [
        ("refused", ADDRESS, None),
        ("token_refused", ADDRESS, None),
        ("refused", "192.0.2.8", None),
        ("refused", ADDRESS, 999),
    ]
