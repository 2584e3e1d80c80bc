"""Settings from the environment (``${NAME}``), secret keys given as ``<key>_file``, and the
redaction of every secret value read (``base/redaction.py``)."""

from __future__ import annotations

import base64
import json
import logging
import os
import subprocess
import sys
import textwrap
from pathlib import Path

import pytest
import yaml

from iiif_shim.base import redaction
from iiif_shim.base.errors import ConfigError, NotFound
from iiif_shim.base.schema import SECRET_FILE_LIMIT
from iiif_shim.config.environment import interpolate
from iiif_shim.config.settings import default_config_path, load_settings, parse_settings
from tests.support import ROOT

TOKEN = "unit-purge-token-5f1c9a7e"  # distinct values: the registry is the process's
PASSWORD = "unit-redis-pw-8d2b"


@pytest.fixture(autouse=True)
def fresh_registry(monkeypatch: pytest.MonkeyPatch) -> None:
    """Each test starts with no secret remembered (and leaves none behind)."""
    monkeypatch.setattr(redaction, "_secrets", frozenset())
    monkeypatch.setattr(redaction, "_ordered", ())


def config(tmp_path: Path, body: str, name: str = "shim.yaml", backends: str = "") -> Path:
    """A configuration of ``body`` and a files backend (``backends``: more of them, each
    line indented by two spaces)."""
    (tmp_path / "images").mkdir(exist_ok=True)
    path = tmp_path / name
    path.write_text(
        textwrap.dedent(body)
        + "backends:\n  local: {type: files, root: ./images}\n"
        + backends
        + "routes:\n  - {backend: local}\n"
    )
    return path


def read(path: Path, env: dict[str, str] | None = None) -> object:
    data = yaml.safe_load(path.read_text())
    return parse_settings(data, path.parent, str(path), environ=env or {})


def problems_of(path: Path, env: dict[str, str] | None = None) -> list[tuple[str, str]]:
    with pytest.raises(ConfigError) as err:
        read(path, env)
    return err.value.problems


# --- ${NAME} ---------------------------------------------------------------------------------


def test_whole_and_inside_values_anywhere_but_keys() -> None:
    data = {
        "cache": {"redis": "redis://:${PW}@${HOST}:6379/0", "redis_prefix": "${P}"},
        "routes": [{"id": "x-${P}-${P}"}],
        "${P}": "kept",
        "number": 7,
    }
    env = {"PW": "pw", "HOST": "cache", "P": "v"}
    out, problems = interpolate(data, env)
    assert problems == []
    assert out == {
        "cache": {"redis": "redis://:pw@cache:6379/0", "redis_prefix": "v"},
        "routes": [{"id": "x-v-v"}],
        "${P}": "kept",  # keys are never interpolated
        "number": 7,
    }


def test_a_double_dollar_writes_a_literal_and_a_lone_dollar_is_itself() -> None:
    out, problems = interpolate(
        {"a": "$${HOME}", "b": "cost $5 and $HOME", "c": "$$${X}", "d": "^a$"}, {"X": "x"}
    )
    assert problems == []
    assert out == {"a": "${HOME}", "b": "cost $5 and $HOME", "c": "$${X}", "d": "^a$"}


def test_what_is_substituted_is_not_read_again() -> None:
    out, _ = interpolate({"a": "${A}"}, {"A": "${B}", "B": "no"})
    assert out == {"a": "${B}"}


def test_unset_variables_are_problems_naming_them_and_their_keys_all_at_once(
    tmp_path: Path,
) -> None:
    path = config(
        tmp_path,
        """
        server: {host: "${HOST}", port: 80}
        cache: {redis: "redis://:${REDIS_PASSWORD}@cache:6379/${DB}"}
        iiif: {prefix: /iiif, max_width: nope}
        """,
    )
    found = problems_of(path, {"DB": "0"})
    assert ("server.host", "environment variable HOST is not set (used as ${HOST})") in found
    assert (
        "cache.redis",
        "environment variable REDIS_PASSWORD is not set (used as ${REDIS_PASSWORD})",
    ) in found
    # with the configuration's other problems, and no second problem for the unset values
    assert any(key == "iiif.max_width" for key, _ in found)
    assert len(found) == 3, found


def test_an_unclosed_or_bad_name_is_a_problem() -> None:
    _, problems = interpolate({"a": "x${OPEN", "b": "${1X}", "c": "${}"}, {})
    assert [key for key, _ in problems] == ["a", "b", "c"]
    assert "not closed" in problems[0][1] and "$${" in problems[0][1]
    assert "does not name an environment variable" in problems[1][1]


def test_an_empty_variable_is_empty_text(tmp_path: Path) -> None:
    path = config(tmp_path, 'landing: {title: "a${E}b"}\n')
    settings = read(path, {"E": ""})
    assert settings.landing.title == "ab"  # type: ignore[attr-defined]


def test_text_from_the_environment_is_read_as_the_number_or_boolean_a_key_wants(
    tmp_path: Path,
) -> None:
    path = config(
        tmp_path,
        """
        server: {port: "${PORT}", trust_forwarded: "${TRUST}", request_timeout: "${T}"}
        landing: {title: "${PORT}"}
        """,
    )
    settings = read(path, {"PORT": "8080", "TRUST": "yes", "T": "2.5"})
    server = settings.server  # type: ignore[attr-defined]
    assert (server.port, server.trust_forwarded, server.request_timeout) == (8080, True, 2.5)
    assert settings.landing.title == "8080"  # type: ignore[attr-defined]  # text stays text
    assert type(settings.landing.title) is str  # type: ignore[attr-defined]
    found = problems_of(path, {"PORT": "eighty", "TRUST": "maybe", "T": "nan"})
    assert ("server.port", "must be a whole number, not 'eighty' (from the environment)") in found
    assert (
        "server.trust_forwarded",
        "must be true or false, not 'maybe' (from the environment)",
    ) in found
    assert any(key == "server.request_timeout" for key, _ in found)
    # written in the file, a quoted number stays refused as before
    quoted = config(tmp_path, 'server: {port: "8080"}\n', "quoted.yaml")
    assert problems_of(quoted) == [("server.port", "must be a whole number, not text")]


def test_bundled_and_shipped_configs_read_as_before() -> None:
    """None of them holds a ${: interpolation leaves each document as it was."""
    paths = [default_config_path(), *sorted((ROOT / "config").glob("*.yaml"))]
    for path in paths:
        data = yaml.safe_load(path.read_text())
        assert interpolate(data, {}) == (data, []), path
        load_settings(path)


# --- <key>_file ------------------------------------------------------------------------------


def test_a_secret_from_a_file_its_trailing_newline_stripped(tmp_path: Path) -> None:
    (tmp_path / "secrets").mkdir()
    (tmp_path / "secrets" / "token").write_text(TOKEN + "\n")
    path = config(tmp_path, "cache: {purge_token_file: secrets/token}\n")
    settings = read(path)
    assert settings.cache.purge_token == TOKEN  # type: ignore[attr-defined]
    # the file's name from the environment (a systemd credential)
    path = config(tmp_path, "cache:\n  purge_token_file: ${DIR}/token\n")  # unquoted
    settings = read(path, {"DIR": str(tmp_path / "secrets")})
    assert settings.cache.purge_token == TOKEN  # type: ignore[attr-defined]


def test_both_given_is_a_problem(tmp_path: Path) -> None:
    (tmp_path / "token").write_text(TOKEN)
    path = config(tmp_path, f"cache: {{purge_token: {TOKEN}, purge_token_file: token}}\n")
    assert problems_of(path) == [
        ("cache.purge_token", "give either purge_token or purge_token_file, not both")
    ]


def test_a_missing_empty_or_oversized_file_is_a_problem_naming_the_file(tmp_path: Path) -> None:
    missing = tmp_path / "nothing"
    path = config(tmp_path, f"cache: {{purge_token_file: {missing}}}\n")
    ((key, message),) = problems_of(path)
    assert key == "cache.purge_token_file"
    assert message == f"cannot read {missing}: No such file or directory"
    (tmp_path / "empty").write_text("\n")
    path = config(tmp_path, "cache: {purge_token_file: empty}\n")
    assert problems_of(path) == [("cache.purge_token_file", f"{tmp_path / 'empty'} is empty")]
    big = tmp_path / "big"
    big.write_text("x" * (SECRET_FILE_LIMIT + 1))
    path = config(tmp_path, "cache: {purge_token_file: big}\n")
    assert problems_of(path) == [
        ("cache.purge_token_file", f"{big} holds more than {SECRET_FILE_LIMIT} bytes")
    ]
    os.mkfifo(tmp_path / "fifo")  # never read: a FIFO would wait for a writer
    path = config(tmp_path, "cache: {purge_token_file: fifo}\n")
    assert problems_of(path) == [("cache.purge_token_file", f"{tmp_path / 'fifo'} is not a file")]


def test_only_secret_keys_take_a_file(tmp_path: Path) -> None:
    (tmp_path / "f").write_text("x")
    path = config(tmp_path, "cache: {redis_prefix_file: f}\n")
    ((key, message),) = problems_of(path)
    assert key == "cache.redis_prefix_file" and message.startswith("unknown key")


def test_a_file_the_reader_refuses_is_never_quoted(tmp_path: Path) -> None:
    """The file's content is never in a problem: a token too short is refused by its check,
    which names no value."""
    (tmp_path / "token").write_text("short-secret\n")
    path = config(tmp_path, "cache: {purge_token_file: token}\n")
    found = problems_of(path)
    assert found == [("cache.purge_token", "must be at least 16 characters")]


# --- redaction -------------------------------------------------------------------------------


def test_a_secret_quoted_by_a_problem_is_redacted(tmp_path: Path) -> None:
    """A value quoted by a problem of another key (here the same value by mistake in a type:
    the reader quotes types it does not know) is shown as ***, once the secret is read."""
    path = config(
        tmp_path,
        """
        cache: {purge_token: "${TOKEN}"}
        server: {port: "${TOKEN}"}
        """,
    )
    found = problems_of(path, {"TOKEN": TOKEN})
    assert found == [("server.port", "must be a whole number, not '***' (from the environment)")]
    with pytest.raises(ConfigError) as err:
        read(path, {"TOKEN": TOKEN})
    assert TOKEN not in err.value.report() and TOKEN not in str(err.value)


def test_the_password_of_any_url_is_remembered(tmp_path: Path) -> None:
    path = config(
        tmp_path,
        f"""
        cache: {{redis: "redis://:{PASSWORD}@cache:6379/0"}}
        """,
        backends="  legacy: {type: http, url: 'http://u:p%40ss-word@legacy.example.org/{id}'}\n",
    )
    read(path)
    for secret in (PASSWORD, "p%40ss-word", "p@ss-word"):
        assert redaction.redact(f"<{secret}>") == "<***>"


def test_a_short_secret_is_not_looked_for_and_the_reader_says_so(tmp_path: Path) -> None:
    """A one-letter password would make every 'a' of every line ***: it is not remembered,
    and check-config warns."""
    path = config(
        tmp_path,
        "",
        backends="  legacy: {type: http, url: 'http://l.example.org/{id}', password: a}\n",
    )
    settings = read(path)
    warnings = dict(settings.warnings)  # type: ignore[attr-defined]
    assert "shorter than 4 characters" in warnings["backends.legacy.password"]
    assert redaction.redact("a cat and a bat") == "a cat and a bat"


def test_redact_replaces_exact_values_longest_first() -> None:
    redaction.remember("abcd")
    redaction.remember("abcdefgh")
    assert redaction.redact("x abcdefgh y abcd z abc") == "x *** y *** z abc"
    doc = {"abcd": ["abcd!", 3, None, {"k": "no abcdefgh"}]}
    assert redaction.scrub(doc) == {"***": ["***!", 3, None, {"k": "no ***"}]}


def test_an_error_answer_never_shows_a_secret() -> None:
    redaction.remember(TOKEN)
    assert NotFound(f"no such image {TOKEN}").public_text() == "no such image ***"


def test_log_records_are_redacted_as_they_are_made(monkeypatch: pytest.MonkeyPatch) -> None:
    """Message, arguments, exceptions and stacks, whatever handler writes them (one added
    after the redaction was installed too)."""
    monkeypatch.setattr(logging, "_logRecordFactory", logging.getLogRecordFactory())
    records: list[str] = []

    class Keep(logging.Handler):
        def emit(self, record: logging.LogRecord) -> None:
            records.append(self.format(record))

    redaction.install()
    redaction.install()  # once
    redaction.remember(TOKEN)
    log = logging.getLogger("test_secrets")
    handler = Keep()
    handler.setFormatter(logging.Formatter("%(message)s"))
    log.addHandler(handler)
    log.setLevel(logging.DEBUG)
    try:
        log.debug("token %s in %r", TOKEN, {"t": TOKEN})
        try:
            raise ValueError(f"bad {TOKEN}")
        except ValueError:
            log.exception("failed with %s", TOKEN)
        log.info("here", stack_info=True, extra={"x": TOKEN})
    finally:
        log.removeHandler(handler)
    text = "\n".join(records)
    assert TOKEN not in text
    assert "token *** in {'t': '***'}" in text and "ValueError: bad ***" in text


def test_secrets_of_settings_as_a_worker_is_handed_them(tmp_path: Path) -> None:
    (tmp_path / "token").write_text(TOKEN)
    path = config(
        tmp_path,
        f"""
        cache: {{purge_token_file: token, redis: "redis://:{PASSWORD}@cache:6379/0"}}
        """,
    )
    settings = read(path)
    found = redaction.secrets_of(settings)
    assert {TOKEN, PASSWORD, f"redis://:{PASSWORD}@cache:6379/0"} <= found


# --- check-config ----------------------------------------------------------------------------


def check_config(path: Path, env: dict[str, str], *args: str) -> subprocess.CompletedProcess[str]:
    return subprocess.run(
        [sys.executable, "-m", "iiif_shim", "check-config", str(path), *args],
        capture_output=True,
        text=True,
        timeout=60,
        env={**os.environ, **env},
        cwd=ROOT,
    )


def test_check_config_prints_no_secret_in_text_or_json(tmp_path: Path) -> None:
    """The token, by mistake also a route's match and a backend's type, is *** where
    check-config prints the routes (text) and the problems (text and JSON); without the token
    being a secret (the control), the same reports show it."""
    (tmp_path / "images").mkdir()
    (tmp_path / "token").write_text(TOKEN + "\n")
    secret = "cache: {purge_token_file: token}\n"
    good = f"""routes:
  - {{match: "^{TOKEN}$", backend: local}}
  - {{match: "^(?P<rest>.+)$", backend: local, id: "{{rest}}"}}
backends:
  local: {{type: files, root: ./images}}
"""
    bad = good.replace('id: "{rest}"', 'id: "{rest}", rights: "${NOPE}"') + (
        f"  broken: {{type: {TOKEN}}}\n"
    )

    def reports(name: str, text: str) -> list[str]:
        path = tmp_path / name
        path.write_text(text)
        done = [check_config(path, {}, *args) for args in ((), ("--format", "json"))]
        return [d.stdout + d.stderr for d in done]

    good_text, good_json = reports("good.yaml", secret + good)
    bad_text, bad_json = reports("bad.yaml", secret + bad)
    for output in (good_text, good_json, bad_text, bad_json):
        assert TOKEN not in output
    assert "routes[0]: ^***$ -> local" in good_text
    problems = json.loads(bad_json)["problems"]
    assert "backends.broken.type: unknown type '***' (known: " in "\n".join(problems)
    assert "routes[1].rights: environment variable NOPE is not set" in "\n".join(problems)
    assert "backends.broken.type: unknown type '***'" in bad_text
    # the control: the token is no secret, and the same reports show it
    control_text, _ = reports("control.yaml", good)
    assert f"routes[0]: ^{TOKEN}$ -> local" in control_text
    _, control_json = reports("control-bad.yaml", bad)
    assert f"unknown type '{TOKEN}'" in control_json


# --- upstream credentials --------------------------------------------------------------------


def test_credentials_go_to_the_configured_origins_only(tmp_path: Path) -> None:
    from yarl import URL

    from iiif_shim.upstream.client import Upstream
    from iiif_shim.upstream.urltemplate import UrlTemplate

    path = config(
        tmp_path,
        "",
        backends="  legacy: {type: http, url: 'http://Legacy.example.org:8080/m/{id}', "
        f"username: u, password: {PASSWORD}}}\n",
    )
    settings = read(path).backends["legacy"]  # type: ignore[attr-defined]
    upstream = Upstream("legacy", settings, [UrlTemplate.parse(settings.url)])
    expected = "Basic " + base64.b64encode(f"u:{PASSWORD}".encode()).decode()
    sent = {"Accept-Encoding": "identity"}
    for url, credited in (
        ("http://legacy.example.org:8080/m/a.tif", True),
        ("http://legacy.example.org:8080/elsewhere", True),  # the origin, any path
        ("https://legacy.example.org:8080/m/a.tif", False),  # another scheme
        ("http://legacy.example.org/m/a.tif", False),  # another port
        ("http://other.example.org:8080/m/a.tif", False),
        ("http://x:y@legacy.example.org:8080/m/a.tif", False),  # the URL's own
    ):
        headers = upstream._credited(URL(url), sent)
        assert headers.get("Authorization") == (expected if credited else None), url
    assert sent == {"Accept-Encoding": "identity"}


def test_a_user_name_with_a_colon_or_a_line_break_is_refused(tmp_path: Path) -> None:
    path = config(
        tmp_path,
        "",
        backends="  legacy: {type: http, url: 'http://l.example.org/{id}', "
        'username: "a:b", password: "pass\\nword"}\n',
    )
    assert problems_of(path) == [
        ("backends.legacy.username", "must not hold ':' (HTTP Basic ends the user name there)"),
        (
            "backends.legacy.password",
            "must not hold control characters (a line break, a tab)",
        ),
    ]


def test_every_key_that_holds_a_secret_is_declared_secret() -> None:
    """The keys the configuration page lists as secret are (so each takes KEY_file and is
    redacted): the Redis URL, the purge token, the TLS key's passphrase, upstream passwords
    and Thumbor's signing key."""
    import dataclasses

    from iiif_shim.backends.settings import ThumborSettings
    from iiif_shim.cache.settings import CacheSettings
    from iiif_shim.config.tls import TLSSettings
    from iiif_shim.upstream.settings import UpstreamSettings

    def secret(cls: type, name: str) -> bool:
        (f,) = [f for f in dataclasses.fields(cls) if f.name == name]
        return bool(f.metadata.get("secret"))

    assert secret(CacheSettings, "redis") and secret(CacheSettings, "purge_token")
    assert secret(TLSSettings, "password")
    assert secret(UpstreamSettings, "password") and not secret(UpstreamSettings, "username")
    assert secret(ThumborSettings, "security_key")
