"""Redaction: the one place that knows which values are secret and replaces them with ``***``.

The configuration reader (``base/schema.py``) remembers here the value of every key declared
``option(..., secret=True)`` as it reads it (from the file, from ``${...}`` or from an ``X_file``),
and the password of every URL written with ``user:password@`` in any value; a worker process
remembers those of the settings its supervisor hands it (:func:`secrets_of`). What is
remembered stays remembered for the life of the process: a value a reload replaced is still
never printed.

Everything that leaves the process as text goes through :func:`redact` (or :func:`scrub` for a
JSON document) before it is written: log records (:func:`install`, called by the command's
logging setup, redacts each record as it is made: debug lines, tracebacks, the access log and
other libraries' lines too), ``check-config``'s report (text and JSON), the configuration's problems
(``ConfigError``), error answers (``ShimError.public_text``), ``/health``, ``/health/ready``
and ``/metrics``.

Exact occurrences of a value are replaced, longest first. A value shorter than
:data:`MIN_LENGTH` characters is not remembered: replacing every ``a`` or ``on`` in every line
would garble the output and tell what the secret is; the reader warns about such a secret.
"""

from __future__ import annotations

import dataclasses
import logging
import threading
from collections.abc import Iterable, Mapping
from typing import Any
from urllib.parse import unquote, urlsplit

MIN_LENGTH = 4  # characters: shorter secrets are not looked for in output (see the docstring)
MASK = "***"

_lock = threading.Lock()
_secrets: frozenset[str] = frozenset()
_ordered: tuple[str, ...] = ()  # longest first, so a secret holding another goes whole


def remember(value: str | None) -> bool:
    """Never print ``value`` again in this process; False when it is too short to look for."""
    global _secrets, _ordered
    if not value or len(value) < MIN_LENGTH:
        return False
    with _lock:
        if value not in _secrets:
            _secrets = _secrets | {value}
            _ordered = tuple(sorted(_secrets, key=len, reverse=True))
    return True


def remember_all(values: Iterable[str]) -> None:
    for value in values:
        remember(value)


def url_passwords(text: str) -> set[str]:
    """The password of a URL written ``scheme://user:password@host...``, as written and
    percent-decoded, if ``text`` is one (else nothing)."""
    if "://" not in text or "@" not in text:
        return set()
    try:
        password = urlsplit(text).password
    except ValueError:
        return set()
    return {password, unquote(password)} if password else set()


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
    secret, and the passwords of URLs in any text."""
    found: set[str] = set()
    _collect(settings, found, False, 0)
    return found


def _collect(value: Any, found: set[str], secret: bool, depth: int) -> None:
    if depth > 32:  # settings nest a few levels; nothing here is recursive
        return
    if isinstance(value, str):
        if secret:
            found.add(value)
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


def install() -> None:
    """Redact every log record of this process as it is made, whatever logger makes it and
    whatever handler writes it (those added later, such as the access log's, included): a
    record factory around the current one (installed once)."""
    previous = logging.getLogRecordFactory()
    if getattr(previous, "redacting", False):
        return

    def factory(*args: Any, **kwargs: Any) -> logging.LogRecord:
        return redact_record(previous(*args, **kwargs))

    factory.redacting = True  # type: ignore[attr-defined]
    logging.setLogRecordFactory(factory)
