"""``server.tls``: the certificate and key the shim serves HTTPS with, and what makes them usable.

:class:`TLSSettings` is the section; its ``findings()`` reads both files (each at most
:data:`MAX_PEM_BYTES`) and refuses, one line each: a file that is missing or cannot be read,
one that is not PEM or holds the wrong kind of PEM (a private key given as the certificate, a
certificate given as the key), an encrypted key without its password (or with a wrong one), a
certificate of the chain that has expired or is not yet valid (saying when), a key that is not
the leaf certificate's, a chain out of order (each certificate must be issued by the next), and
anything OpenSSL itself will not load, a file holding only a leaf whose issuer is neither in
it nor among the system's trusted roots (certbot's ``cert.pem`` given for ``fullchain.pem``),
and an ``acme_dir`` that is not a folder; it warns when the leaf expires within
:data:`EXPIRY_WARNING`, when the key file may be read by other users, and when a ``password`` is
given for a key that is not encrypted (unused). ``check-config`` and
``serve`` refuse through it, and the process checks a renewal through it before serving it
(``process/tls.py``, which keeps the dates apart: :func:`inspect`), so every path to a
certificate applies the same rules. :func:`server_context` is the one place a server
``SSLContext`` is made, for the check and for serving alike.
"""

from __future__ import annotations

import datetime
import functools
import itertools
import os
import ssl
import stat
import warnings
from dataclasses import dataclass, field
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
    acme_dir: Path | None = option(
        None,
        doc="with `server.http_redirect_port`: the folder given to `certbot certonly --webroot "
        "-w` (its `.well-known/acme-challenge/` files are answered on the redirect port, "
        "everything else is still a 308), so that HTTP-01 renewals work while the shim holds "
        "ports 80 and 443 (null: every request there is a 308)",
    )

    def findings(self) -> list[Finding]:
        return examine(self)


def server_context(tls: TLSSettings) -> ssl.SSLContext:
    """A server context serving ``tls``'s certificate chain and key (raises ``ssl.SSLError``,
    ``OSError`` or ``ValueError``): the ssl module's secure defaults for a server, TLS 1.2 at
    least, no renegotiation, no session tickets (their key would live as long as the process:
    TLS 1.3 resumes without one), ALPN ``http/1.1`` (aiohttp speaks HTTP/1.1 only). A password is
    always given, so an encrypted key never makes OpenSSL prompt."""
    context = ssl.create_default_context(ssl.Purpose.CLIENT_AUTH)
    context.minimum_version = ssl.TLSVersion.TLSv1_2
    context.options |= ssl.OP_NO_RENEGOTIATION | ssl.OP_NO_TICKET | ssl.OP_NO_COMPRESSION
    context.set_alpn_protocols(["http/1.1"])
    context.load_cert_chain(tls.cert, tls.key, password=tls.password or "")
    return context


@dataclass(frozen=True)
class Examined:
    """What :func:`inspect` found: ``findings`` (problems and warnings) apart from ``dates``
    (problems of validity dates, which a running process serves with an error line rather
    than stop serving), and, when both files could be read, their bytes and the leaf."""

    findings: list[Finding]
    dates: list[Finding] = field(default_factory=list)
    leaf: x509.Certificate | None = None
    cert_data: bytes = b""
    key_data: bytes = b""

    @property
    def problems(self) -> list[Finding]:
        return [f for f in self.findings if f.error]

    def described(self) -> str:
        """Which certificate (serial, subject, expiry), for a log line."""
        leaf = self.leaf
        if leaf is None:
            return "(none)"
        return f"serial {leaf.serial_number:x}, {_name(leaf)}, until {_when(_not_after(leaf))}"


def examine(tls: TLSSettings, now: datetime.datetime | None = None) -> list[Finding]:
    """What is wrong with ``tls``'s files (problems), or worth knowing (a near expiry)."""
    found = inspect(tls, now)
    return found.dates + found.findings


def inspect(tls: TLSSettings, now: datetime.datetime | None = None) -> Examined:
    """:func:`examine`'s findings with the dates kept apart, and what was read. Never raises:
    anything unexpected is a problem line."""
    try:
        return _inspect(tls, now or datetime.datetime.now(datetime.UTC))
    except Exception as exc:  # a kind of file or key no rule above foresaw: one line all the same
        return Examined(
            [problem("cert", f"{tls.cert} cannot be used: {exc or type(exc).__name__}")]
        )


def _inspect(tls: TLSSettings, now: datetime.datetime) -> Examined:
    cert_data, trouble = _read(tls.cert)
    if trouble:
        return Examined([problem("cert", trouble)])
    key_data, trouble = _read(tls.key)
    if trouble:
        return Examined([problem("key", trouble)])
    chain, trouble = _certificates(cert_data)
    if trouble:
        return Examined([problem("cert", f"{tls.cert} {trouble}")])
    key, trouble, unused = _private_key(key_data, tls.password)
    if trouble:
        return Examined([problem("key", f"{tls.key} {trouble}")])
    leaf = chain[0]
    done = functools.partial(Examined, leaf=leaf, cert_data=cert_data, key_data=key_data)
    dates = [problem("cert", f"{tls.cert} {t}") for t in _dates(chain, now)]
    found = [problem("cert", f"{tls.cert} {t}") for t in _order(chain) + _alone(chain)]
    if not found and not _same_key(leaf, key):
        matching = next((i for i, c in enumerate(chain) if _same_key(c, key)), None)
        why = (
            f"is not the key of the certificate in {tls.cert} ({_name(leaf)})"
            if matching is None
            else f"belongs to certificate {matching + 1} of {tls.cert}, not the first: the "
            "leaf must come first"
        )
        found.append(problem("key", f"{tls.key} {why}"))
    if tls.acme_dir is not None and not tls.acme_dir.is_dir():
        found.append(problem("acme_dir", f"{tls.acme_dir} is not a folder"))
    if found:
        return done(found, dates)
    try:  # what OpenSSL itself makes of them, as served
        server_context(tls)
    except (ssl.SSLError, OSError, ValueError) as exc:
        trouble = f"OpenSSL does not load {tls.cert} with {tls.key}: {exc}"
        return done([problem("cert", trouble)], dates)
    notes = _readable_key(tls.key)
    if unused:
        notes.append(
            warning(
                "password",
                f"is set, but {tls.key} is not encrypted: the password is not used",
            )
        )
    left = _not_after(leaf) - now
    if not dates and left < EXPIRY_WARNING:
        notes.append(
            warning(
                "cert",
                f"{tls.cert} expires on {_when(_not_after(leaf))} (in {_span(left)}): renew it",
            )
        )
    return done(notes, dates)


def not_after(leaf: x509.Certificate) -> datetime.datetime:
    """When ``leaf`` expires (UTC)."""
    return _not_after(leaf)


def _not_after(cert: x509.Certificate) -> datetime.datetime:
    return cert.not_valid_after_utc


def _readable_key(key: Path) -> list[Finding]:
    """A warning when others than the file's owner may read the key (not for Kubernetes' secret
    volumes, whose files are links into a ``..data`` folder and 0644 unless told otherwise)."""
    try:
        if key.is_symlink() and (key.parent / "..data").is_dir():
            return []
        mode = stat.S_IMODE(os.stat(key).st_mode)
    except (OSError, ValueError):
        return []
    if not mode & 0o044:
        return []
    return [
        warning(
            "key",
            f"{key} may be read by other users (mode {mode:o}): make it readable by the shim's "
            "user only (chmod 600)",
        )
    ]


def _read(path: Path) -> tuple[bytes, str | None]:
    try:
        if not stat.S_ISREG(os.stat(path).st_mode):  # (a FIFO would block the open)
            return b"", f"{path} is not a file"
        with path.open("rb") as file:
            data = file.read(MAX_PEM_BYTES + 1)
    except OSError as exc:
        return b"", f"cannot read {path}: {exc.strerror or exc}"
    except ValueError as exc:  # a NUL byte in the path
        return b"", f"cannot read {str(path)!r}: {exc}"
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


def _private_key(
    data: bytes, password: str | None
) -> tuple[PrivateKeyTypes | None, str | None, bool]:
    """The key, or why it cannot be read; and whether ``password`` was given for a key that is
    not encrypted (unused)."""
    kinds = _kinds(data)
    if not kinds:
        return None, "is not PEM (no -----BEGIN line): give the PEM file, not DER or PKCS#12", False
    if not any(kind.endswith("PRIVATE KEY") for kind in kinds):
        if "CERTIFICATE" in kinds:
            return None, f"holds a certificate, not a private key: {_SWAPPED}", False
        return None, f"holds no private key (only {', '.join(sorted(kinds))})", False
    secret = password.encode() if password else None
    try:
        try:
            return serialization.load_pem_private_key(data, secret), None, False
        except TypeError:  # not encrypted, yet a password was given; or the other way round
            if secret is None:
                return None, "is encrypted: set server.tls.password", False
            return serialization.load_pem_private_key(data, None), None, True
    except ValueError:
        if secret is not None:
            return None, "cannot be read with server.tls.password (a wrong password?)", False
        return None, "holds a private key that cannot be read", False
    except UnsupportedAlgorithm as exc:
        return None, f"holds a key of a kind that is not supported: {exc}", False


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
                f"is out of order or holds a wrong intermediate: certificate {i + 2} "
                f"({_name(issuer)}) did not issue certificate {i + 1} ({_name(cert)}); the file "
                "must hold the leaf first, then each issuer"
            ]
    return []


def _alone(chain: list[x509.Certificate]) -> list[str]:
    """A file holding only a leaf whose issuer is neither itself nor a trusted root of this
    system: clients that do not fetch intermediates (curl, Python, Java, validators) refuse it."""
    leaf = chain[0]
    if len(chain) > 1 or leaf.issuer == leaf.subject:
        return []
    for root in _trusted_roots().get(leaf.issuer.public_bytes(), ()):
        try:
            leaf.verify_directly_issued_by(root)
            return []
        except (ValueError, TypeError, InvalidSignature):
            continue
    return [
        f"holds only the server certificate ({_name(leaf)}), not the intermediate that issued "
        f"it ({leaf.issuer.rfc4514_string()}): give the full chain (certbot: fullchain.pem)"
    ]


@functools.cache
def _trusted_roots() -> dict[bytes, tuple[x509.Certificate, ...]]:
    """The system's trusted certificates (the ssl module's default verify paths), by subject."""
    paths = ssl.get_default_verify_paths()
    files = [Path(paths.cafile)] if paths.cafile else []
    if paths.capath and os.path.isdir(paths.capath):
        files += sorted(p for p in Path(paths.capath).iterdir() if p.suffix in (".pem", ".crt"))
    found: dict[bytes, list[x509.Certificate]] = {}
    for path in files:
        try:
            with path.open("rb") as file, warnings.catch_warnings():
                warnings.simplefilter("ignore")  # (old roots cryptography frowns upon)
                certs = x509.load_pem_x509_certificates(file.read(16 * MAX_PEM_BYTES))
        except (OSError, ValueError):
            continue
        for cert in certs:
            found.setdefault(cert.subject.public_bytes(), []).append(cert)
    return {subject: tuple(certs) for subject, certs in found.items()}


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
