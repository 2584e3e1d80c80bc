"""The ``cache:`` section: how much each process keeps in memory, the disk tier's folder and
budget, the Redis tier's URL, password, timing and key prefix, and the purge endpoint's token
(one line of visible ASCII, as an ``Authorization`` header carries it; the URL when it holds a
password, the password and the token are secrets:
``base/redaction.py``, which also reads the URL: one that does not read back as written, such as
a password holding ``/`` not percent-encoded, is refused)."""

from __future__ import annotations

import importlib.util
import os
from dataclasses import dataclass
from pathlib import Path

from iiif_shim.base.redaction import url_passwords, url_problem
from iiif_shim.base.schema import Finding, at_least, between, option, problem


@dataclass(frozen=True)
class CacheSettings:
    info_entries: int = option(
        10_000, doc="source facts (width, height, format, validators) kept, LRU", check=at_least(0)
    )
    info_ttl: float = option(3600.0, doc="seconds source facts stay fresh", check=at_least(0))
    image_bytes: int = option(
        64 * 1024 * 1024, doc="bytes of rendered images kept, LRU (0: off)", check=at_least(0)
    )
    decoded_bytes: int = option(
        256 * 1024 * 1024,
        doc="bytes of decoded source pixels kept, LRU (0: off): the master of a "
        "`files`/`http` image stays decoded (per reduction level) while a viewer asks for "
        "its tiles",
        check=at_least(0),
    )
    disk: Path | None = option(
        None,
        doc="folder of the disk tier of rendered images, shared by the processes of one "
        "machine (`null`: no disk tier)",
    )
    disk_bytes: int = option(
        1024 * 1024 * 1024,
        doc="bytes the disk tier may hold (at least 1 MiB); least recently used entries go first",
        check=at_least(1024 * 1024),
    )
    redis: str | None = option(
        None,
        doc="Redis URL of the shared tier (`redis://`, `rediss://` or `unix://`; `null`: no "
        "Redis); needs `pip install 'iiif-shim[redis]'`. A password is better given as "
        "`redis_password`; one written in the URL (`redis://:PASSWORD@host:6379/0`) must be "
        "percent-encoded (`/` as `%2F`, `#` as `%23`, `?` as `%3F`, `@` as `%40`, `%` as `%25`, "
        "`:` as `%3A`): a URL that does not read back as written is refused. A secret when it "
        "holds a password (never printed; logs show the URL without it); `redis_file` names a "
        "file holding the URL instead",
        check=lambda v: None if v is None else _redis_url(v),
        secret=True,
    )
    redis_password: str | None = option(
        None,
        doc="password Redis requires (AUTH), sent with the URL `redis` names, which then holds "
        "none; any characters, no encoding. A secret: never printed; `redis_password_file` "
        "names a file holding it instead (a Kubernetes Secret, a systemd credential), and "
        "`${REDIS_PASSWORD}` takes it from the environment",
        secret=True,
    )
    redis_ttl: float = option(
        86400.0, doc="seconds a rendered image stays in Redis", check=at_least(1)
    )
    redis_max_bytes: int = option(
        4 * 1024 * 1024,
        doc="largest rendered image put in Redis (larger ones are not shared)",
        check=between(1024, 512 * 1024 * 1024),
    )
    redis_timeout: float = option(
        0.25,
        doc="seconds one Redis call may take; past it Redis counts as failed",
        check=at_least(0.01),
    )
    redis_retry: float = option(
        5.0,
        doc="seconds Redis is skipped after a failure, before it is tried again",
        check=at_least(0.1),
    )
    redis_prefix: str = option(
        "iiif-shim:",
        doc="prefix of every Redis key and of the purge channel (several shims may share one "
        "Redis under different prefixes)",
    )
    redis_lock: float = option(
        5.0,
        doc="seconds a render lock in Redis lasts at most; another process waits that long "
        "for the image, then renders it itself",
        check=at_least(0.1),
    )
    purge_token: str | None = option(
        None,
        doc="bearer token of `DELETE /admin/cache` (`null`: the endpoint is off): one line of "
        "at least 16 letters, digits and punctuation, no space, as an `Authorization` header "
        "carries it (`openssl rand -hex 32`). A secret: never printed; `purge_token_file` "
        "names a file holding it instead (a Kubernetes Secret, a systemd credential)",
        check=lambda v: None if v is None else _purge_token(v),
        secret=True,
    )

    def findings(self) -> list[Finding]:
        found = []
        if self.disk is not None and (why := _writable_folder(self.disk)):
            found.append(problem("disk", why))
        if self.redis_password is not None:
            if self.redis is None:
                found.append(problem("redis_password", "needs cache.redis (the Redis it is for)"))
            elif url_passwords(self.redis):
                found.append(
                    problem(
                        "redis_password",
                        "cache.redis holds a password too: give it in one place, "
                        "redis_password (then the URL holds none)",
                    )
                )
        return found


def _purge_token(token: str) -> str | None:
    """What is wrong with a purge token (never quoting it): it is sent as ``Authorization:
    Bearer <token>``, so one line of visible ASCII, at least 16 characters."""
    if "\n" in token or "\r" in token:
        return "holds a line break: one line expected"
    if not all("!" <= c <= "~" for c in token):
        return (
            "must be letters, digits and punctuation only (no space, tab, control character or "
            "character outside ASCII): it is sent in an Authorization header"
        )
    return None if len(token) >= 16 else "must be at least 16 characters"


def _redis_url(value: str) -> str | None:
    """What is wrong with a Redis URL (never quoting it: it may hold a password)."""
    if not value.lower().startswith(("redis://", "rediss://", "unix://")):
        return "must be a redis://, rediss:// or unix:// URL"
    if why := url_problem(value):
        return f"{why}, or give it as cache.redis_password"
    if importlib.util.find_spec("redis") is None:
        return "needs the Redis client: pip install 'iiif-shim[redis]'"
    return None


def _writable_folder(path: Path) -> str | None:
    """Why the shim could not keep files in ``path`` (made if missing), or None."""
    if path.exists():
        if not path.is_dir():
            return f"{path} is not a folder"
        return None if os.access(path, os.W_OK | os.X_OK) else f"{path} is not writable"
    parent = path.parent
    while not parent.exists() and parent != parent.parent:
        parent = parent.parent
    if not os.access(parent, os.W_OK | os.X_OK):
        return f"{path} does not exist and {parent} is not writable"
    return None
