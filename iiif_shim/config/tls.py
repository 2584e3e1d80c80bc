"""``server.tls``: the certificate and key the shim serves HTTPS with, and what makes them usable.

:class:`TLSSettings` is the section; its ``findings()`` reads both files (each at most
:data:`MAX_PEM_BYTES`) and refuses, one line each: a file that is missing or cannot be read,
one that is not PEM or holds the wrong kind of PEM (a private key given as the certificate, a
certificate given as the key), an encrypted key without its password (or with a wrong one), a
certificate of the chain that has expired or is not yet valid (saying when), a key that is not
the leaf certificate's, a chain out of order (each certificate must be issued by the next), and
anything OpenSSL itself will not load; it warns when the leaf expires within
:data:`EXPIRY_WARNING`. ``check-config`` and ``serve`` refuse through it, and the process
checks a renewal through it before serving it (``process/tls.py``), so every path to a
certificate applies the same rules. :func:`describe` says which certificate is in a file.
"""

from __future__ import annotations

import datetime
import itertools
import os
import ssl
import stat
from dataclasses import dataclass
from pathlib import Path

from cryptography import x509
from cryptography.exceptions import InvalidSignature, UnsupportedAlgorithm
from cryptography.hazmat.primitives import serialization
from cryptography.hazmat.primitives.asymmetric.types import PrivateKeyTypes

from iiif_shim.base.schema import Finding, at_least, option, problem, warning

MAX_PEM_BYTES = 1 << 20  # a PEM chain is a few KB; a larger file is not one
EXPIRY_WARNING = datetime.timedelta(days=14)
_BEGIN = b"-----BEGIN "
_SWAPPED = "are cert and key swapped?"


@dataclass(frozen=True)
class TLSSettings:
    cert: Path = option(
        doc="PEM file of the server certificate followed by its intermediates (leaf first, "
        "each certificate issued by the next: certbot's `fullchain.pem`, cert-manager's "
        "`tls.crt`)"
    )
    key: Path = option(
        doc="PEM file of the certificate's private key (certbot's `privkey.pem`, "
        "cert-manager's `tls.key`)"
    )
    password: str | None = option(
        None,
        doc="passphrase of an encrypted `key` (null: the key is not encrypted); a secret: "
        "`password_file` names a file holding it instead",
        secret=True,
    )
    hsts: int = option(
        0,
        doc="seconds of `Strict-Transport-Security: max-age` sent on every HTTPS answer "
        "(0: no header); browsers then use HTTPS only for this host that long, so raise it "
        "once HTTPS works",
        check=at_least(0),
    )
    watch: float = option(
        30.0,
        doc="seconds between checks of the `cert` and `key` files for a renewal, in every "
        "process: a changed file that passes the checks is served to new connections, a bad "
        "one is logged and the certificate in use kept (0: only on SIGHUP)",
        check=lambda v: None if v == 0 or v >= 1 else "must be 0 (off) or at least 1",
    )

    def findings(self) -> list[Finding]:
        return examine(self)


def examine(tls: TLSSettings, now: datetime.datetime | None = None) -> list[Finding]:
    """What is wrong with ``tls``'s files (problems), or worth knowing (a near expiry)."""
    now = now or datetime.datetime.now(datetime.UTC)
    cert_data, trouble = _read(tls.cert)
    if trouble:
        return [problem("cert", trouble)]
    key_data, trouble = _read(tls.key)
    if trouble:
        return [problem("key", trouble)]
    chain, trouble = _certificates(cert_data)
    if trouble:
        return [problem("cert", f"{tls.cert} {trouble}")]
    key, trouble = _private_key(key_data, tls.password)
    if trouble:
        return [problem("key", f"{tls.key} {trouble}")]
    found = [problem("cert", f"{tls.cert} {t}") for t in _dates(chain, now) + _order(chain)]
    if not found and not _same_key(chain[0], key):
        matching = next((i for i, c in enumerate(chain) if _same_key(c, key)), None)
        why = (
            f"is not the key of the certificate in {tls.cert} ({_name(chain[0])})"
            if matching is None
            else f"belongs to certificate {matching + 1} of {tls.cert}, not the first: the "
            "leaf must come first"
        )
        found.append(problem("key", f"{tls.key} {why}"))
    if found:
        return found
    try:  # what OpenSSL itself makes of them (a password is always given: it never prompts)
        ssl.SSLContext(ssl.PROTOCOL_TLS_SERVER).load_cert_chain(
            tls.cert, tls.key, password=tls.password or ""
        )
    except (ssl.SSLError, OSError) as exc:
        return [problem("cert", f"OpenSSL does not load {tls.cert} with {tls.key}: {exc}")]
    left = chain[0].not_valid_after_utc - now
    if left < EXPIRY_WARNING:
        return [
            warning(
                "cert",
                f"{tls.cert} expires on {_when(chain[0].not_valid_after_utc)} (in "
                f"{_span(left)}): renew it",
            )
        ]
    return []


def describe(path: Path) -> str:
    """Which certificate ``path`` holds first, for a log line: serial, subject, expiry."""
    data, trouble = _read(path)
    chain, trouble = _certificates(data) if not trouble else ([], trouble)
    if trouble or not chain:
        return f"{path}: {trouble}"
    leaf = chain[0]
    return f"serial {leaf.serial_number:x}, {_name(leaf)}, until {_when(leaf.not_valid_after_utc)}"


def _read(path: Path) -> tuple[bytes, str | None]:
    try:
        if not stat.S_ISREG(os.stat(path).st_mode):  # (a FIFO would block the open)
            return b"", f"{path} is not a file"
        with path.open("rb") as file:
            data = file.read(MAX_PEM_BYTES + 1)
    except OSError as exc:
        return b"", f"cannot read {path}: {exc.strerror or exc}"
    if len(data) > MAX_PEM_BYTES:
        return b"", f"{path} is larger than {MAX_PEM_BYTES >> 20} MiB: not a PEM file"
    return data, None


def _kinds(data: bytes) -> set[str]:
    """The kinds of PEM blocks in ``data``: ``CERTIFICATE``, ``PRIVATE KEY``, ..."""
    kinds = set()
    for line in data.splitlines():
        line = line.strip()
        if line.startswith(_BEGIN) and line.endswith(b"-----"):
            kinds.add(line[len(_BEGIN) : -5].decode("ascii", "replace"))
    return kinds


def _certificates(data: bytes) -> tuple[list[x509.Certificate], str | None]:
    kinds = _kinds(data)
    if not kinds:
        return [], "is not PEM (no -----BEGIN line): give the PEM file, not DER or PKCS#12"
    if "CERTIFICATE" not in kinds:
        if any(kind.endswith("PRIVATE KEY") for kind in kinds):
            return [], f"holds a private key, not a certificate: {_SWAPPED}"
        return [], f"holds no certificate (only {', '.join(sorted(kinds))})"
    try:
        return x509.load_pem_x509_certificates(data), None
    except ValueError as exc:
        return [], f"holds a certificate that cannot be read: {exc}"


def _private_key(data: bytes, password: str | None) -> tuple[PrivateKeyTypes | None, str | None]:
    kinds = _kinds(data)
    if not kinds:
        return None, "is not PEM (no -----BEGIN line): give the PEM file, not DER or PKCS#12"
    if not any(kind.endswith("PRIVATE KEY") for kind in kinds):
        if "CERTIFICATE" in kinds:
            return None, f"holds a certificate, not a private key: {_SWAPPED}"
        return None, f"holds no private key (only {', '.join(sorted(kinds))})"
    secret = password.encode() if password else None
    try:
        try:
            return serialization.load_pem_private_key(data, secret), None
        except TypeError:  # not encrypted, yet a password was given; or the other way round
            if secret is None:
                return None, "is encrypted: set server.tls.password"
            return serialization.load_pem_private_key(data, None), None
    except ValueError:
        if secret is not None:
            return None, "cannot be read with server.tls.password (a wrong password?)"
        return None, "holds a private key that cannot be read"
    except UnsupportedAlgorithm as exc:
        return None, f"holds a key of a kind that is not supported: {exc}"


def _dates(chain: list[x509.Certificate], now: datetime.datetime) -> list[str]:
    found = []
    for i, cert in enumerate(chain):
        which = "" if i == 0 else f"certificate {i + 1} ({_name(cert)}) "
        if cert.not_valid_after_utc <= now:
            found.append(f"{which}expired on {_when(cert.not_valid_after_utc)}")
        elif cert.not_valid_before_utc > now:
            found.append(f"{which}is not valid yet: valid from {_when(cert.not_valid_before_utc)}")
    return found


def _order(chain: list[x509.Certificate]) -> list[str]:
    for i, (cert, issuer) in enumerate(itertools.pairwise(chain)):
        try:
            cert.verify_directly_issued_by(issuer)
        except (ValueError, TypeError, InvalidSignature):
            return [
                f"is out of order: certificate {i + 2} ({_name(issuer)}) did not issue "
                f"certificate {i + 1} ({_name(cert)}); the file must hold the leaf first, then "
                "each issuer"
            ]
    return []


def _same_key(cert: x509.Certificate, key: PrivateKeyTypes | None) -> bool:
    if key is None:
        return False
    spki = serialization.Encoding.DER, serialization.PublicFormat.SubjectPublicKeyInfo
    return bool(cert.public_key().public_bytes(*spki) == key.public_key().public_bytes(*spki))


def _name(cert: x509.Certificate) -> str:
    return cert.subject.rfc4514_string() or "no subject"


def _when(moment: datetime.datetime) -> str:
    return moment.strftime("%Y-%m-%d %H:%M UTC")


def _span(left: datetime.timedelta) -> str:
    if left >= datetime.timedelta(days=2):
        return f"{round(left / datetime.timedelta(days=1))} days"
    return f"{max(0, int(left.total_seconds() // 3600))} hours"
