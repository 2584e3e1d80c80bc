"""Settings from the environment (``${NAME}``), secret keys given as ``<key>_file``, and the
redaction of every secret value read (``base/redaction.py``)."""

from __future__ import annotations

import asyncio
import base64
import json
import logging
import os
import subprocess
import sys
import textwrap
from pathlib import Path
from urllib.parse import quote, urlsplit

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


def test_the_settings_repr_never_holds_a_secret(tmp_path: Path) -> None:
    """A secret field is left out of its settings' repr (a debugger, a traceback's locals, an
    f-string of the settings): the value is not there to be redacted later."""
    (tmp_path / "secrets").mkdir()
    (tmp_path / "secrets" / "token").write_text(TOKEN + "\n")
    path = config(tmp_path, "cache: {purge_token_file: secrets/token}\n")
    settings = read(path)
    assert settings.cache.purge_token == TOKEN  # type: ignore[attr-defined]
    assert TOKEN not in repr(settings) and TOKEN not in repr(settings.cache)  # type: ignore[attr-defined]


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
    monkeypatch.setattr(sys, "stdout", sys.stdout)  # install() wraps them: put back after
    monkeypatch.setattr(sys, "stderr", sys.stderr)
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


# --- Redis: the URL read as written, the password apart ----------------------------------------

# passwords as `openssl rand -base64` and people make them: each holds a character that ends
# the authority of a URL unless percent-encoded
UNENCODED = ("Zm9vYmFyYmF6cXV4/K3+xQw==", "Kq3v#Zt9w-7c1e", "Kq3v?Zt9w-2b8d", "9051/8642-9abc")


@pytest.mark.parametrize("password", UNENCODED)
def test_a_redis_password_not_percent_encoded_is_refused_without_quoting_it(
    tmp_path: Path, password: str
) -> None:
    """redis-py would read a host or a port out of it (and print that part in its error):
    check-config refuses the URL, says what to do, and quotes no part of it."""
    path = config(tmp_path, 'cache: {redis: "redis://:${REDIS_PASSWORD}@cache:6379/0"}\n')
    done = check_config(path, {"REDIS_PASSWORD": password})
    output = (done.stdout + done.stderr).replace(str(path), "")
    assert done.returncode != 0, output
    (line,) = [line for line in output.splitlines() if "cache.redis:" in line]
    assert "percent-encode the password" in line and "cache.redis_password" in line, line
    for part in {password, *password.replace("#", "/").replace("?", "/").split("/")}:
        assert part not in output, (part, output)
    # percent-encoded, the same password is read back as written
    from urllib.parse import quote

    settings = read(path, {"REDIS_PASSWORD": quote(password, safe="")})
    assert urlsplit(settings.cache.redis).password == quote(password, safe="")  # type: ignore[attr-defined]


def test_a_url_that_cannot_be_read_is_a_problem_not_a_traceback(tmp_path: Path) -> None:
    path = config(tmp_path, 'cache: {redis: "redis://:hunter2pass@[cache/0"}\n')
    done = check_config(path, {})
    assert "Traceback" not in done.stderr and "cache.redis: is not a valid URL" in done.stderr
    assert "hunter2pass" not in done.stdout + done.stderr


def test_the_redis_password_apart_from_the_url(tmp_path: Path) -> None:
    """cache.redis_password (or its _file) holds any characters, with no encoding; the URL
    without a password is then no secret, and its log form shows host and port; a password
    in both places, or one without a Redis, is a problem."""
    password = "Zm9v/YmFy#YmF6?cXV4@K3+x%Qw=="
    (tmp_path / "redis_password").write_text(password + "\n")
    path = config(
        tmp_path,
        "cache: {redis: 'redis://cache:6379/0', redis_password_file: redis_password}\n",
    )
    cache = read(path).cache  # type: ignore[attr-defined]
    assert cache.redis_password == password
    for form in (password, quote(password, safe=""), json.dumps(password)[1:-1]):
        assert redaction.redact(f"<{form}>") == "<***>"
    shown = redaction.display_url(cache.redis)
    assert shown == "redis://cache:6379/0" and redaction.redact(shown) == shown
    assert redaction.display_url("redis://:pw-1234@cache/0") == "redis://cache/0"
    both = config(
        tmp_path,
        "cache: {redis: 'redis://:other-pw-1234@cache:6379/0', redis_password: abcd-1234}\n",
        "both.yaml",
    )
    assert problems_of(both) == [
        (
            "cache.redis_password",
            "cache.redis holds a password too: give it in one place, redis_password (then the "
            "URL holds none)",
        )
    ]
    alone = config(tmp_path, "cache: {redis_password: abcd-1234}\n", "alone.yaml")
    assert problems_of(alone) == [
        ("cache.redis_password", "needs cache.redis (the Redis it is for)")
    ]


def test_the_redis_tier_sends_the_password_apart(monkeypatch: pytest.MonkeyPatch) -> None:
    """The pool is made from the URL and the password as given (redis-py's own keyword)."""
    import redis.asyncio as aioredis

    from iiif_shim.cache.redis import RedisTier
    from iiif_shim.cache.settings import CacheSettings

    made: dict[str, object] = {}

    def from_url(url: str, **kwargs: object) -> object:
        made.update(kwargs, url=url)
        raise RuntimeError("made")

    monkeypatch.setattr(aioredis.BlockingConnectionPool, "from_url", from_url)
    tier = RedisTier(CacheSettings(redis="redis://cache:6379/0", redis_password="p/w#?@x"))
    with pytest.raises(RuntimeError):
        asyncio.run(tier.start())
    assert made["url"] == "redis://cache:6379/0" and made["password"] == "p/w#?@x"


# --- what is remembered ------------------------------------------------------------------------


def test_the_printed_forms_of_a_secret_are_redacted_too(tmp_path: Path) -> None:
    """A password as a URL carries it (percent-encoded), as JSON, repr() and a Prometheus
    label escape it, and the Basic header an upstream client sends."""
    from iiif_shim.upstream.client import Upstream
    from iiif_shim.upstream.urltemplate import UrlTemplate

    password = 'p@ss word\\"x'
    path = config(
        tmp_path,
        "",
        backends="  legacy: {type: http, url: 'http://l.example.org/{id}', username: u, "
        "password: '${PW}'}\n",
    )
    settings = read(path, {"PW": password}).backends["legacy"]  # type: ignore[attr-defined]
    Upstream("legacy", settings, [UrlTemplate.parse(settings.url)])
    header = base64.b64encode(f"u:{password}".encode()).decode()
    label = password.replace("\\", "\\\\").replace('"', '\\"')
    for form in (quote(password, safe=""), json.dumps(password), repr(password), label, header):
        assert password not in redaction.redact(form)
        assert redaction.redact(f"<{form}>").count("***") >= 1, form


def test_a_short_url_password_is_not_looked_for_and_the_reader_says_so(tmp_path: Path) -> None:
    path = config(
        tmp_path,
        "",
        backends="  legacy: {type: http, url: 'http://u:abc@l.example.org/{id}'}\n",
    )
    warnings = dict(read(path).warnings)  # type: ignore[attr-defined]
    assert "shorter than 4 characters" in warnings["backends.legacy.url"]


def test_a_secret_file_may_start_with_a_bom(tmp_path: Path) -> None:
    (tmp_path / "token").write_bytes(b"\xef\xbb\xbf" + TOKEN.encode() + b"\r\n")
    path = config(tmp_path, "cache: {purge_token_file: token}\n")
    assert read(path).cache.purge_token == TOKEN  # type: ignore[attr-defined]


def test_stdout_and_stderr_are_redacted_whatever_writes_them(tmp_path: Path) -> None:
    """print, a warning, an uncaught exception in a thread and in the main thread, as the
    command installs the redaction first (a worker's "could not start" line is such a print)."""
    script = textwrap.dedent(
        f"""
        import sys, threading, warnings
        from iiif_shim.base import redaction
        redaction.install()
        redaction.remember({TOKEN!r})
        print("printed {TOKEN}")
        print("to stderr {TOKEN}", file=sys.stderr)
        warnings.warn("warned {TOKEN}")
        def fail():
            raise KeyError({TOKEN!r})
        thread = threading.Thread(target=fail)
        thread.start()
        thread.join()
        raise ValueError("uncaught {TOKEN}")
        """
    )
    done = subprocess.run(
        [sys.executable, "-c", script], capture_output=True, text=True, timeout=60, cwd=ROOT
    )
    output = done.stdout + done.stderr
    assert TOKEN not in output, output
    for seen in ("printed ***", "to stderr ***", "warned ***", "KeyError: '***'", "uncaught ***"):
        assert seen in output, output


# --- ${NAME}: every node once ------------------------------------------------------------------


@pytest.mark.timeout(20)
def test_aliases_of_aliases_are_walked_once() -> None:
    """A file of 8 levels of 10 aliases spells out 10^9 values: each node is walked once,
    and the copy shares its nodes as the document did."""
    doc = "a: &a ['${X}', x, x, x, x, x, x, x, x, x]\n"
    for i in range(1, 9):
        doc += f"l{i}: &l{i} [" + ", ".join([f"*{'a' if i == 1 else f'l{i - 1}'}"] * 10) + "]\n"
    out, problems = interpolate(yaml.safe_load(doc), {"X": "v"})
    assert problems == []
    assert out["l8"][9][9][9][9][9][9][9][9][0] == "v"
    assert out["l8"][0] is out["l8"][9]  # shared, as the aliases were


def test_too_deep_or_holding_itself_is_a_problem() -> None:
    deep = yaml.safe_load("k: " + "[" * 70 + "'${X}'" + "]" * 70)
    _, problems = interpolate(deep, {"X": "v"})
    ((key, message),) = problems
    assert key.startswith("k[0]") and "nested more than 64 levels" in message
    _, problems = interpolate(yaml.safe_load("a: &a [1, *a]"), {})
    assert problems == [("a[1]", "holds itself (a YAML alias inside its own anchor)")]


# --- upstream credentials: one origin rule, nothing ignored ------------------------------------


@pytest.mark.parametrize(
    "template,url",
    [
        ("https://img.example.org:443/iiif/{id}", "https://img.example.org/iiif/a"),
        ("http://img.example.org:80/iiif/{id}", "http://img.example.org/iiif/a"),
        ("https://IMG.example.org/iiif/{id}", "https://img.example.org:443/iiif/a"),
        ("http://Bücher.example/iiif/{id}", "http://xn--bcher-kva.example/iiif/a"),
    ],
)
def test_one_origin_rule_for_credentials_and_redirects(
    tmp_path: Path, template: str, url: str
) -> None:
    """A default port written or not, the host's case and its IDNA form are one origin, for
    the credentials and for a redirect (yarl drops default ports and encodes hosts)."""
    from yarl import URL

    from iiif_shim.upstream.client import Upstream
    from iiif_shim.upstream.urltemplate import UrlTemplate

    path = config(
        tmp_path,
        "",
        backends=f"  c: {{type: http, url: '{template}', username: u, password: {PASSWORD}}}\n",
    )
    settings = read(path).backends["c"]  # type: ignore[attr-defined]
    scope = UrlTemplate.parse(settings.url)
    upstream = Upstream("c", settings, [scope])
    expanded = URL(scope.expand({"id": "a"}), encoded=True)
    assert "Authorization" in upstream._credited(expanded, {}), str(expanded)
    assert "Authorization" in upstream._credited(URL(url), {}), url
    assert scope.within(url)
    assert upstream._redirect(expanded, url.replace("/a", "/b")) is not None
    other = URL(url.replace("img.example.org", "elsewhere.example.org").replace("bcher", "x"))
    assert "Authorization" not in upstream._credited(other, {})


def test_credentials_in_a_url_and_as_keys_are_a_problem(tmp_path: Path) -> None:
    path = config(
        tmp_path,
        "",
        backends="  b: {type: http, url: 'http://olduser:oldpassword1@l.example.org/{id}', "
        "username: newuser, password: newpassword1}\n",
    )
    ((key, message),) = problems_of(path)
    assert key == "backends.b.url" and "give the credentials in one place" in message
    assert "oldpassword1" not in message


def test_a_url_password_not_percent_encoded_is_a_problem(tmp_path: Path) -> None:
    """'http://u:ab/cd@h/{id}' would send requests to the host 'u'."""
    path = config(
        tmp_path,
        "",
        backends="  b: {type: http, url: 'http://u:${PW}@l.example.org/{id}'}\n",
    )
    ((key, message),) = problems_of(path, {"PW": "ab/cd-efgh"})
    assert key == "backends.b.url" and "percent-encode the password" in message


def test_credentials_of_a_csv_file_are_a_problem(tmp_path: Path) -> None:
    """A CSV read from a file sends nothing over HTTP: its upstream keys would be ignored."""
    (tmp_path / "objects.csv").write_text("obj,img\nbook,p1\n")
    body = """
        presentation:
          sources:
            cat:
              type: csv
              path: objects.csv
              columns: {object: obj, image: img}
              username: someone
              password: a-long-password-here
              timeout: 5
        """
    found = problems_of(config(tmp_path, body))
    assert sorted(key for key, _ in found) == [
        f"presentation.sources.cat.{key}" for key in ("password", "timeout", "username")
    ]
    assert all("for a CSV read over HTTP" in message for _, message in found)
    assert "a-long-password-here" not in str(found)
    # the same keys with a URL are used, and accepted
    remote = body.replace("path: objects.csv", "path: https://cat.example.org/objects.csv")
    read(config(tmp_path, remote, "remote.yaml"))


def test_a_purge_token_an_authorization_header_cannot_carry_is_a_problem(
    tmp_path: Path,
) -> None:
    """A token of several lines (a file with two), or holding a space, a tab, a control
    character or a character outside ASCII, could never be sent in ``Authorization: Bearer``:
    purge would never succeed. One clear line, never quoting the token; a generated token
    (hex, base64) is accepted."""
    lines = "first-line-of-token-41\nsecond-line-of-token-42"
    (tmp_path / "token").write_text(lines + "\n")
    path = config(tmp_path, "cache: {purge_token_file: token}\n")
    broken = [("cache.purge_token", "holds a line break: one line expected")]
    assert problems_of(path) == broken
    path = config(tmp_path, 'cache: {purge_token: "first-line-of-token-41\\r\\nsecond"}\n')
    assert problems_of(path) == broken
    header = (
        "cache.purge_token",
        "must be letters, digits and punctuation only (no space, tab, control character or "
        "character outside ASCII): it is sent in an Authorization header",
    )
    unsendable = (
        "token with spaces inside",
        "token\twith-a-tab-inside",
        "token-\x7f-with-del",
        "token-mit-\u00fcmlaut-inside",
        " leading-space-token",
        "trailing-space-token ",
    )
    for token in unsendable:
        (tmp_path / "token").write_text(token)
        path = config(tmp_path, "cache: {purge_token_file: token}\n")
        found = problems_of(path)
        assert found == [header], token
        assert not any(token.strip() in message for _, message in found)
    generated = "q+8/Zx-_.~!=aB0123456789abcdef"
    (tmp_path / "token").write_text(generated + "\n")
    settings = read(config(tmp_path, "cache: {purge_token_file: token}\n"))
    assert settings.cache.purge_token == generated  # type: ignore[attr-defined]


def test_the_variables_substituted_are_told_for_the_workers_environment() -> None:
    """What a supervisor leaves out of its workers' environment: every variable substituted."""
    from iiif_shim.config.environment import referenced

    interpolate({"a": "x${ONE_SUBSTITUTED}y", "b": ["${TWO_SUBSTITUTED}"], "c": "$${NOT_ONE}"},
                {"ONE_SUBSTITUTED": "1", "TWO_SUBSTITUTED": "2", "NOT_ONE": "3"})  # fmt: skip
    assert {"ONE_SUBSTITUTED", "TWO_SUBSTITUTED"} <= referenced()
    assert "NOT_ONE" not in referenced()
