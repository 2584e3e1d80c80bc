"""Redaction: the one place that knows which values are secret and replaces them with ``***``,
and the one place that reads the password out of a URL.

The configuration reader (``base/schema.py``) remembers here the value of every key declared
``option(..., secret=True)`` as it reads it (from the file, from ``${...}`` or from an ``X_file``;
for a URL, its password, and the whole URL only when it holds one: :func:`secret_values`), and
the password of every URL written with ``user:password@`` in any value; a worker process
remembers those of the settings its supervisor hands it (:func:`secrets_of`); an upstream
client, the value of the ``Authorization`` header it sends. What is remembered stays remembered
for the life of the process: a value a reload replaced is still never printed. Each value is
remembered in the forms it may be printed in too (:func:`forms`): percent-encoded, as a URL
carries it, and escaped, as JSON, a Python ``repr`` or a Prometheus label writes it.

Everything that leaves the process as text goes through :func:`redact` (or :func:`scrub` for a
JSON document) before it is written: log records (:func:`install`, called first thing by the
command, redacts each record as it is made: debug lines, tracebacks, the access log and other
libraries' lines too), and every other write to ``sys.stdout`` and ``sys.stderr`` (:func:`install`
wraps both: ``print``, uncaught exceptions, warnings; workers too, as they run the same command);
``check-config``'s report (text and JSON), the configuration's problems (``ConfigError``), error
answers (``ShimError.public_text``), ``/health``, ``/health/ready``, ``/metrics`` and the purge
report. Two limits: a record made with ``logging.makeLogRecord`` (what a ``QueueHandler`` or
``SocketHandler`` receiver does; the shim uses neither) skips the record factory, and a record
once redacted keeps its exception as text only (``exc_info`` is cleared, so a handler that wants
the exception object does not get it). Bytes written to ``sys.stdout.buffer`` are not redacted.

Exact occurrences of a value are replaced, longest first. A value shorter than
:data:`MIN_LENGTH` characters is not remembered: replacing every ``a`` or ``on`` in every line
would garble the output and tell what the secret is; the reader warns about such a secret.

URLs: :func:`url_problem` parses a URL fully (host, port, the ``user:password@`` part) and says
why it is not what it seems, such as a password holding ``/``, ``#``, ``?`` or ``@`` that was not
percent-encoded (its first part would be read as the host or the port); :func:`url_passwords`
gives the password a URL holds; :func:`display_url` the URL as logs may show it.
"""

from __future__ import annotations

import dataclasses
import json
import logging
import re
import sys
import threading
from collections.abc import Iterable, Mapping
from typing import Any, TextIO
from urllib.parse import quote, unquote, urlsplit

MIN_LENGTH = 4  # characters: shorter secrets are not looked for in output (see the docstring)
MASK = "***"
_SUB_DELIMS = "!$&'()*+,;="  # what yarl and others leave as it is in a URL's password
_BAD_ESCAPE_RE = re.compile(r"%(?![0-9A-Fa-f]{2})")

_lock = threading.Lock()
_secrets: frozenset[str] = frozenset()
_ordered: tuple[str, ...] = ()  # longest first, so a secret holding another goes whole


def forms(value: str) -> set[str]:
    """``value`` and the forms it may be printed in: percent-encoded (as a URL's password is
    sent, and as ``quote`` makes it), escaped as JSON (``ensure_ascii`` or not), a Python
    ``repr`` or a Prometheus label (a backslash, a quote, a line break escaped)."""
    label = value.replace("\\", "\\\\").replace('"', '\\"').replace("\n", "\\n")
    return {
        value,
        quote(value, safe=""),
        quote(value, safe=_SUB_DELIMS),
        json.dumps(value)[1:-1],
        json.dumps(value, ensure_ascii=False)[1:-1],
        repr(value)[1:-1],
        label,
    }


def remember(value: str | None) -> bool:
    """Never print ``value`` (in any of its :func:`forms`) again in this process; False when
    it is too short to look for."""
    global _secrets, _ordered
    if not value or len(value) < MIN_LENGTH:
        return False
    new = forms(value) - _secrets
    if new:
        with _lock:
            _secrets = _secrets | new
            _ordered = tuple(sorted(_secrets, key=len, reverse=True))
    return True


def remember_all(values: Iterable[str]) -> bool:
    """:func:`remember` each value; False when one was too short to look for."""
    return all([remember(value) for value in values])


def secret_values(value: str) -> set[str]:
    """What to remember of the value of a key declared secret: the whole value; for a URL, its
    password, and the whole URL only when it holds one (a URL without a password is no secret,
    and logs may show it: :func:`display_url`)."""
    if "://" not in value:
        return {value}
    passwords = url_passwords(value)
    return passwords | {value} if passwords else set()


def url_passwords(text: str) -> set[str]:
    """The password of a URL written ``scheme://user:password@host...``, as written and
    percent-decoded, if ``text`` is one (else nothing). A URL whose ``@`` comes after a ``/``,
    ``?`` or ``#`` (a password not percent-encoded: :func:`url_problem`) gives what lies
    between ``:`` and its last ``@`` too."""
    if "://" not in text or "@" not in text:
        return set()
    found: set[str] = set()
    try:
        password = urlsplit(text).password
    except ValueError:
        password = None
    if password:
        found |= {password, unquote(password)}
    raw = text.split("://", 1)[1].rpartition("@")[0].partition(":")[2]
    if raw and raw != password and any(c in raw for c in "/?#@"):
        found |= {raw, unquote(raw)}
    return found


def url_problem(text: str, *, at_in_path: bool = False) -> str | None:
    """Why ``text`` is not the URL it seems to be (never quoting it): a URL that does not parse,
    a port that is not a number, a ``user:password@`` part that is not all of what lies before
    the host (a ``/``, ``#``, ``?`` or ``@`` in the password, not percent-encoded), a ``%`` not
    followed by two hexadecimal digits there. ``at_in_path``: an ``@`` may stand in the path
    (a URL template's); else one there means a password cut short."""
    encode = (
        "percent-encode the password (/ as %2F, # as %23, ? as %3F, @ as %40, % as %25, : as %3A)"
    )
    try:
        split = urlsplit(text)
        _ = split.port  # raises ValueError when the port is not a number
    except ValueError:
        return f"is not a valid URL (its host or port cannot be read); {encode}"
    userinfo = split.netloc.rpartition("@")[0] if "@" in split.netloc else ""
    if not at_in_path and "@" in text.split("://", 1)[-1][len(split.netloc) :]:
        return f"holds '@' after the host: a password with '/', '#' or '?' is cut there; {encode}"
    if _BAD_ESCAPE_RE.search(userinfo):
        return f"holds a '%' that is not an escape before its host; {encode}"
    return None


def display_url(url: str) -> str:
    """``url`` as logs may show it: scheme, host, port and path, never its ``user:password@``
    (nor a query, which may hold one)."""
    try:
        split = urlsplit(url)
        port = split.port
    except ValueError:
        return "(a URL that cannot be read)"
    if not split.netloc:
        return f"{split.scheme}://{split.path}"
    host = split.hostname or ""
    host = f"[{host}]" if ":" in host else host
    return f"{split.scheme}://{host}{f':{port}' if port else ''}{split.path}"


def redact(text: str) -> str:
    """``text`` with every remembered secret replaced by ``***``."""
    ordered = _ordered
    if not ordered or not text:
        return text
    for secret in ordered:
        if secret in text:
            text = text.replace(secret, MASK)
    return text


def scrub(value: Any) -> Any:
    """A JSON-like document (mappings, lists, strings, numbers) with every string redacted,
    keys included, before it is serialised (its escaping would hide a secret from
    :func:`redact`)."""
    if isinstance(value, str):
        return redact(value)
    if isinstance(value, Mapping):
        return {scrub(k): scrub(v) for k, v in value.items()}
    if isinstance(value, (list, tuple)):
        return [scrub(v) for v in value]
    return value


def secrets_of(settings: Any) -> set[str]:
    """The secret values held by a settings object and everything in it: fields declared
    secret (:func:`secret_values`), and the passwords of URLs in any text."""
    found: set[str] = set()
    _collect(settings, found, False, 0)
    return found


def _collect(value: Any, found: set[str], secret: bool, depth: int) -> None:
    if depth > 32:  # settings nest a few levels; nothing here is recursive
        return
    if isinstance(value, str):
        if secret:
            found.update(secret_values(value))
        found.update(url_passwords(value))
    elif dataclasses.is_dataclass(value) and not isinstance(value, type):
        for f in dataclasses.fields(value):
            item = getattr(value, f.name, None)
            _collect(item, found, bool(f.metadata.get("secret")), depth + 1)
    elif isinstance(value, Mapping):
        for item in value.values():
            _collect(item, found, secret, depth + 1)
    elif isinstance(value, (list, tuple, frozenset, set)):
        for item in value:
            _collect(item, found, secret, depth + 1)


def redact_record(record: logging.LogRecord) -> logging.LogRecord:
    """``record`` with its message (arguments merged), exception and stack text redacted,
    frozen into it (formatters then use them as they are)."""
    if not _ordered:
        return record
    try:
        message = record.getMessage()
    except Exception:  # a bad format string: logging reports it itself when it formats
        return record
    record.msg, record.args = redact(message), None
    if record.exc_info and not record.exc_text:
        record.exc_text = logging.Formatter().formatException(record.exc_info)
    if record.exc_text:
        record.exc_text = redact(record.exc_text)
        record.exc_info = None  # the formatter uses exc_text as it is
    if record.stack_info:
        record.stack_info = redact(record.stack_info)
    return record


class RedactingStream:
    """A text stream that writes what it is given, redacted, to the stream it wraps (every
    other attribute is the wrapped stream's: ``fileno``, ``isatty``, ``encoding``...)."""

    redacting = True

    def __init__(self, stream: TextIO) -> None:
        self.stream = stream

    def write(self, text: str) -> int:
        self.stream.write(redact(text))
        return len(text)

    def writelines(self, lines: Iterable[str]) -> None:
        for line in lines:
            self.write(line)

    def flush(self) -> None:
        self.stream.flush()

    def __getattr__(self, name: str) -> Any:
        return getattr(self.stream, name)


def install() -> None:
    """Redact everything this process writes as text: every log record as it is made, whatever
    logger makes it and whatever handler writes it (those added later, such as the access
    log's, included): a record factory around the current one; and every write to
    ``sys.stdout`` and ``sys.stderr`` (``print``, uncaught exceptions of any thread, warnings):
    each wrapped in a :class:`RedactingStream`. Each is installed once."""
    for name in ("stdout", "stderr"):
        stream = getattr(sys, name)
        if stream is not None and not getattr(stream, "redacting", False):
            setattr(sys, name, RedactingStream(stream))
    previous = logging.getLogRecordFactory()
    if getattr(previous, "redacting", False):
        return

    def factory(*args: Any, **kwargs: Any) -> logging.LogRecord:
        return redact_record(previous(*args, **kwargs))

    factory.redacting = True  # type: ignore[attr-defined]
    logging.setLogRecordFactory(factory)
