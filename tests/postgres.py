"""A real PostgreSQL for the tests of the search index: a throwaway server of its own, in a
folder of its own, listening on 127.0.0.1 (and a Unix socket in that folder), trusting every
local connection, stopped and removed afterwards.

Debian's ``postgresql`` package (``bash deploy/setup.sh test`` installs it) puts the binaries in
``/usr/lib/postgresql/<version>/bin``; the newest version found is used. The server refuses to
run as root, so as root it runs as the ``postgres`` user (``runuser``), in a folder made for it
outside pytest's (which only root may enter). Where PostgreSQL is missing a test that needs it
is skipped, except in CI (``CI=true``), where that is a failure.

Durability is off (``fsync``, ``synchronous_commit``, ``full_page_writes``): a test server
loses nothing it needs to keep if the machine stops, and it is faster so; ``durable=True``
keeps PostgreSQL's defaults (for measurements)."""

from __future__ import annotations

import contextlib
import os
import secrets
import shutil
import subprocess
import tempfile
from pathlib import Path

import pytest

from tests.support import free_port

_BIN_ROOT = Path("/usr/lib/postgresql")
_FAST = ("-c fsync=off", "-c synchronous_commit=off", "-c full_page_writes=off")


def binaries() -> Path | None:
    """The ``bin`` folder of the newest PostgreSQL installed, None when there is none."""
    found = [
        d / "bin"
        for d in (_BIN_ROOT.iterdir() if _BIN_ROOT.is_dir() else ())
        if d.name.isdigit() and (d / "bin" / "pg_ctl").exists() and (d / "bin" / "initdb").exists()
    ]
    return max(found, key=lambda b: int(b.parent.name)) if found else None


def need_postgres() -> Path:
    """:func:`binaries`, else the test is skipped (a failure in CI)."""
    found = binaries()
    if found is None:
        message = "PostgreSQL is not installed: run `bash deploy/setup.sh test`, which installs it"
        if os.environ.get("CI") == "true":
            pytest.fail(message)
        pytest.skip(message)
    return found


class Postgres:
    """A PostgreSQL server of the tests. :attr:`password` is a password the DSNs carry (the
    server trusts every local connection and never checks it): what a test looks for in
    messages, which must never show it."""

    def __init__(self, port: int | None = None, user: str = "shim", durable: bool = False) -> None:
        self.bin = need_postgres()
        self.durable = durable
        self.port = port or free_port()
        self.user = user
        self.password = "pw-" + secrets.token_hex(8)
        self.folder = Path(tempfile.mkdtemp(prefix="iiif-shim-pg-"))
        self.data = self.folder / "data"
        self.log = self.folder / "server.log"
        self._as_root = os.geteuid() == 0
        if self._as_root:
            shutil.chown(self.folder, "postgres")
        try:
            self._run(["initdb", "-D", str(self.data), "-A", "trust", "-U", user, "-E", "UTF8"])
            self.start()
        except BaseException:
            shutil.rmtree(self.folder, ignore_errors=True)
            raise

    def _run(self, args: list[str], timeout: float = 120) -> None:
        command = [str(self.bin / args[0]), *args[1:]]
        if self._as_root:
            command = ["runuser", "-u", "postgres", "--", *command]
        done = subprocess.run(command, capture_output=True, text=True, timeout=timeout)
        if done.returncode != 0:
            log = self.log.read_text() if self.log.exists() else ""
            raise RuntimeError(f"{args[0]} failed: {done.stdout}{done.stderr}\n{log}")

    def start(self) -> None:
        options = f"-p {self.port} -k {self.folder} -c listen_addresses=127.0.0.1"
        if not self.durable:
            options += " " + " ".join(_FAST)
        data, log = str(self.data), str(self.log)
        self._run(["pg_ctl", "-D", data, "-l", log, "-o", options, "-w", "-t", "60", "start"])

    def stop(self) -> None:
        """Stop the server now (``-m fast``: connections are ended); :meth:`start` starts it
        again on the same port, with the same data."""
        self._run(["pg_ctl", "-D", str(self.data), "-m", "fast", "-w", "-t", "60", "stop"])

    def dsn(self, database: str = "postgres") -> str:
        return f"postgresql://{self.user}:{self.password}@127.0.0.1:{self.port}/{database}"

    def remove(self) -> None:
        """Stop the server (if it runs) and remove its folder."""
        with contextlib.suppress(RuntimeError):  # already stopped
            self.stop()
        shutil.rmtree(self.folder, ignore_errors=True)


def new_database(dsn: str) -> str:
    """A new empty database on the server of ``dsn`` (a test's own: tests sharing the session's
    server never see each other's tables); its DSN."""
    import psycopg

    name = "t_" + secrets.token_hex(6)
    with psycopg.connect(dsn, autocommit=True, connect_timeout=10) as conn:
        conn.execute(f"CREATE DATABASE {name}")
    return dsn.rsplit("/", 1)[0] + "/" + name
