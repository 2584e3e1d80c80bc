"""What check-config says about the auth section's files: the state folder and the audit
log's folder must be folders the shim can write in."""

from __future__ import annotations

from pathlib import Path

from iiif_shim.auth.settings import AuthSettings, PolicySettings


def test_state_dir_and_audit_log_folders(tmp_path: Path) -> None:
    a_file = tmp_path / "file"
    a_file.write_text("")
    assert AuthSettings(state_dir=tmp_path / "new" / "state").findings() == []
    assert AuthSettings(audit_log=tmp_path / "new" / "audit.log").findings() == []
    [bad] = AuthSettings(state_dir=a_file / "state").findings()
    assert bad.error and bad.key == "state_dir" and "is not a folder" in bad.message
    [warned] = AuthSettings(audit_log=a_file / "audit.log").findings()
    assert not warned.error and "server's log" in warned.message


def test_policy_names_that_urls_and_cookies_cannot_carry_are_problems() -> None:
    """``/auth/probe/...`` is the probes' path, so a policy named ``probe`` would never get its
    own pages; a non-ASCII name cannot be part of a cookie's name."""
    staff = PolicySettings(kind="clickthrough", label="Staff")
    for name in ("probe", "café", "a b", "x" * 65, ""):
        found = AuthSettings(secret="k" * 40, policies={name: staff}).findings()
        assert [f.key for f in found if f.error] == [f"policies.{name}"], name
    assert AuthSettings(secret="k" * 40, policies={"Staff-2_b": staff}).findings() == []
