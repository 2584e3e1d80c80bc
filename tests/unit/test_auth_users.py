"""htpasswd users (auth/users.py): bcrypt hashes made by the bcrypt library and by Apache's
`htpasswd -B`, other hash kinds refused with the line named (never the hash), the file read
again when it changes, an unknown user checked as long as a known one, header users trusted
only from their proxies."""

from __future__ import annotations

import asyncio
import os
import subprocess
from pathlib import Path

import bcrypt
import pytest

from iiif_shim.auth.users import Htpasswd, htpasswd_findings, parse_htpasswd, trusted_peer
from tests.support import need_tool


def _hash(password: str, cost: int = 4, prefix: bytes = b"2b") -> str:
    return bcrypt.hashpw(password.encode(), bcrypt.gensalt(cost, prefix)).decode()


def test_bcrypt_hashes_of_every_prefix_are_checked(tmp_path: Path) -> None:
    path = tmp_path / "users"
    path.write_text(
        f"# staff\nann:{_hash('a-pass')}\nbob:{_hash('b-pass', prefix=b'2a')}\n"
        f"cat:{_hash('c-pass').replace('$2b$', '$2y$', 1)}\n\n"
    )
    users = Htpasswd(path)

    async def main() -> None:
        assert await users.check("ann", "a-pass")
        assert await users.check("bob", "b-pass")
        assert await users.check("cat", "c-pass")  # $2y$, as htpasswd -B writes
        assert not await users.check("ann", "b-pass")
        assert not await users.check("nobody", "a-pass")
        assert not await users.check("ann", "")
        assert not await users.check("ann", "a-pass" + "x" * 5000)  # long: cut, not an error

    asyncio.run(main())
    assert htpasswd_findings(path, "htpasswd") == []


def test_htpasswd_B_files_are_read(tmp_path: Path) -> None:
    binary = need_tool("htpasswd")
    path = tmp_path / "users"
    subprocess.run([binary, "-c", "-b", "-B", "-C", "5", str(path), "demo", "s3cret!"], check=True)
    subprocess.run([binary, "-b", "-B", "-C", "5", str(path), "eve", "other"], check=True)
    assert path.read_text().startswith("demo:$2y$05$")
    users = Htpasswd(path)

    async def main() -> None:
        assert await users.check("demo", "s3cret!")
        assert await users.check("eve", "other")
        assert not await users.check("demo", "other")

    asyncio.run(main())


def test_other_hash_kinds_are_refused_naming_the_line_not_the_hash(tmp_path: Path) -> None:
    path = tmp_path / "users"
    md5 = "$apr1$Qs0fXWbB$0cpj5Sm0Hcbq9TFaYgERs/"
    sha = "{SHA}W6ph5Mm5Pz8GgiULbPgzG37mj9g="
    path.write_text(f"ann:{md5}\nbob:{sha}\ncat:plain\nno-colon\ndan:{_hash('d')}\n")
    parsed = parse_htpasswd(path.read_text())
    assert list(parsed.hashes) == ["dan"]
    findings = htpasswd_findings(path, "htpasswd")
    text = " | ".join(f.message for f in findings)
    assert [f.error for f in findings] == [True] * 4
    for number in ("line 1", "line 2", "line 3", "line 4"):
        assert number in text
    for secret in (md5, sha, "plain", "W6ph5"):
        assert secret not in text
    users = Htpasswd(path)
    assert not asyncio.run(users.check("bob", "password"))  # never checked as plain text
    assert not asyncio.run(users.check("cat", "plain"))


def test_missing_and_empty_files_are_findings(tmp_path: Path) -> None:
    missing = htpasswd_findings(tmp_path / "nothere", "htpasswd")
    assert len(missing) == 1 and missing[0].error and "cannot read" in missing[0].message
    (tmp_path / "empty").write_text("# nobody yet\n")
    empty = htpasswd_findings(tmp_path / "empty", "htpasswd")
    assert len(empty) == 1 and not empty[0].error
    (tmp_path / "folder").mkdir()
    assert htpasswd_findings(tmp_path / "folder", "htpasswd")[0].error


def test_a_file_mounted_through_links_is_read_and_a_pipe_is_refused(tmp_path: Path) -> None:
    """Kubernetes mounts a Secret's keys as links into a ``..data`` folder: read as the
    configuration's other files are; a pipe under the name is refused, never waited on."""
    real = tmp_path / "..data" / "users"
    real.parent.mkdir()
    real.write_text(f"ann:{_hash('a-pass')}\n")
    link = tmp_path / "users.htpasswd"
    link.symlink_to(real)
    assert htpasswd_findings(link, "htpasswd") == []
    assert asyncio.run(Htpasswd(link).check("ann", "a-pass"))
    fifo = tmp_path / "fifo"
    os.mkfifo(fifo)
    assert htpasswd_findings(fifo, "htpasswd")[0].error


def test_the_file_is_read_again_when_it_changes(tmp_path: Path) -> None:
    path = tmp_path / "users"
    path.write_text(f"ann:{_hash('one')}\n")
    users = Htpasswd(path)

    async def main() -> None:
        assert await users.check("ann", "one")
        path.write_text(f"ann:{_hash('two')}\nbob:{_hash('three')}\n")
        assert await users.check("ann", "two")
        assert not await users.check("ann", "one")
        assert await users.check("bob", "three")
        path.unlink()  # gone: the users last read stay
        assert await users.check("bob", "three")

    asyncio.run(main())


def test_an_unknown_user_is_checked_against_a_hash_of_the_same_cost(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    """So the time of the answer does not tell whether the user exists (shown by what is
    checked, not by a timing threshold)."""
    path = tmp_path / "users"
    path.write_text(f"ann:{_hash('x', cost=6)}\nbob:{_hash('y', cost=6)}\n")
    users = Htpasswd(path)
    checked: list[bytes] = []
    real = bcrypt.checkpw

    def spy(password: bytes, hashed: bytes) -> bool:
        checked.append(hashed)
        return bool(real(password, hashed))

    monkeypatch.setattr(bcrypt, "checkpw", spy)

    async def main() -> None:
        assert not await users.check("ann", "wrong")
        assert not await users.check("nobody", "wrong")
        assert not await users.check("x" * 10_000, "wrong")

    asyncio.run(main())
    assert len(checked) == 3
    assert [h[:7] for h in checked] == [b"$2b$06$"] * 3
    assert checked[1] == checked[2] != checked[0]  # the dummy, made once


def test_header_users_only_from_trusted_proxies() -> None:
    proxies = ("10.0.0.0/8", "127.0.0.1")
    assert trusted_peer("127.0.0.1", proxies)
    assert trusted_peer("10.2.3.4", proxies)
    assert trusted_peer("::ffff:10.2.3.4", proxies)
    assert not trusted_peer("192.168.1.1", proxies)
    assert not trusted_peer(None, proxies)
    assert not trusted_peer("garbage", proxies)
    assert not trusted_peer("127.0.0.1", ())
