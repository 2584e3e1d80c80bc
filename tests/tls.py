"""A test certificate authority: made by the tests, in their own folder, for TLS on 127.0.0.1.

:func:`make_ca` makes a root CA (its certificate is what a client is told to trust:
``curl --cacert``, ``ssl.create_default_context(cafile=...)``, Chromium's NSS database), and
:meth:`CA.issue` issues a server certificate for ``localhost`` and ``127.0.0.1`` (or the names
given) through an intermediate CA, written as PEM: the leaf followed by the intermediate (the
chain a server sends), and the key. Dates, key type and a deliberately wrong key are
parameters, so tests can make an expired certificate, one not yet valid, or a key that does
not match.
"""

from __future__ import annotations

import datetime
import ipaddress
import subprocess
from dataclasses import dataclass
from pathlib import Path

from cryptography import x509
from cryptography.hazmat.primitives import hashes, serialization
from cryptography.hazmat.primitives.asymmetric import ec
from cryptography.x509.oid import ExtendedKeyUsageOID, NameOID

from tests.support import need_tool

Key = ec.EllipticCurvePrivateKey
DAY = datetime.timedelta(days=1)


def _now() -> datetime.datetime:
    return datetime.datetime.now(datetime.UTC)


def _key() -> Key:
    return ec.generate_private_key(ec.SECP256R1())


def _name(common: str) -> x509.Name:
    return x509.Name([x509.NameAttribute(NameOID.COMMON_NAME, common)])


def _pem(cert: x509.Certificate) -> bytes:
    return cert.public_bytes(serialization.Encoding.PEM)


def key_pem(key: Key) -> bytes:
    """``key`` as unencrypted PKCS#8 PEM."""
    return key.private_bytes(
        serialization.Encoding.PEM,
        serialization.PrivateFormat.PKCS8,
        serialization.NoEncryption(),
    )


def _ca_cert(
    name: str, key: Key, issuer: x509.Name, signer: Key, path_length: int | None
) -> x509.Certificate:
    now = _now()
    return (
        x509.CertificateBuilder()
        .subject_name(_name(name))
        .issuer_name(issuer)
        .public_key(key.public_key())
        .serial_number(x509.random_serial_number())
        .not_valid_before(now - DAY)
        .not_valid_after(now + 3650 * DAY)
        .add_extension(x509.BasicConstraints(ca=True, path_length=path_length), critical=True)
        .add_extension(
            x509.KeyUsage(
                digital_signature=True,
                content_commitment=False,
                key_encipherment=False,
                data_encipherment=False,
                key_agreement=False,
                key_cert_sign=True,
                crl_sign=True,
                encipher_only=False,
                decipher_only=False,
            ),
            critical=True,
        )
        .add_extension(x509.SubjectKeyIdentifier.from_public_key(key.public_key()), critical=False)
        .sign(signer, hashes.SHA256())
    )


@dataclass(frozen=True)
class Issued:
    """A server certificate: ``cert`` (leaf + intermediate, PEM), ``key`` (PEM), its serial."""

    cert: Path
    key: Path
    serial: int
    not_after: datetime.datetime


@dataclass(frozen=True)
class CA:
    """A root CA (``root`` is its certificate's PEM file) with one intermediate."""

    folder: Path
    root: Path
    root_cert: x509.Certificate
    inter_cert: x509.Certificate
    inter_key: Key

    def issue(
        self,
        stem: str,
        names: tuple[str, ...] = ("localhost", "127.0.0.1"),
        *,
        valid_from: datetime.timedelta = -DAY,
        valid_for: datetime.timedelta = 90 * DAY,
        wrong_key: bool = False,
        chain: bool = True,
    ) -> Issued:
        """A certificate for ``names`` (DNS names or IP addresses), written as
        ``{stem}.crt`` / ``{stem}.key`` in the CA's folder. ``valid_from`` and ``valid_for`` set
        its dates relative to now (a negative ``valid_from + valid_for``: expired);
        ``wrong_key`` writes a key that is not the certificate's; ``chain`` False writes the
        leaf alone, without the intermediate."""
        key = _key()
        alt: list[x509.GeneralName] = []
        for name in names:
            try:
                alt.append(x509.IPAddress(ipaddress.ip_address(name)))
            except ValueError:
                alt.append(x509.DNSName(name))
        start = _now() + valid_from
        end = start + valid_for
        cert = (
            x509.CertificateBuilder()
            .subject_name(_name(names[0]))
            .issuer_name(self.inter_cert.subject)
            .public_key(key.public_key())
            .serial_number(x509.random_serial_number())
            .not_valid_before(start)
            .not_valid_after(end)
            .add_extension(x509.SubjectAlternativeName(alt), critical=False)
            .add_extension(x509.BasicConstraints(ca=False, path_length=None), critical=True)
            .add_extension(x509.ExtendedKeyUsage([ExtendedKeyUsageOID.SERVER_AUTH]), critical=False)
            .add_extension(
                x509.AuthorityKeyIdentifier.from_issuer_public_key(self.inter_key.public_key()),
                critical=False,
            )
            .sign(self.inter_key, hashes.SHA256())
        )
        cert_file = self.folder / f"{stem}.crt"
        key_file = self.folder / f"{stem}.key"
        cert_file.write_bytes(_pem(cert) + (_pem(self.inter_cert) if chain else b""))
        key_file.write_bytes(key_pem(_key() if wrong_key else key))
        key_file.chmod(0o600)
        return Issued(cert_file, key_file, cert.serial_number, end)


def make_ca(folder: Path, name: str = "iiif-shim test CA") -> CA:
    """A root CA and an intermediate, in ``folder`` (made if missing); ``root`` is
    ``folder/ca.crt``."""
    folder.mkdir(parents=True, exist_ok=True)
    root_key = _key()
    root = _ca_cert(name, root_key, _name(name), root_key, path_length=1)
    inter_key = _key()
    inter = _ca_cert(f"{name} intermediate", inter_key, root.subject, root_key, path_length=0)
    root_file = folder / "ca.crt"
    root_file.write_bytes(_pem(root))
    return CA(folder, root_file, root, inter, inter_key)


def trusting_home(folder: Path, ca: CA) -> Path:
    """A HOME whose NSS database trusts the test CA (how a user's Linux machine is set up)."""
    nssdb = folder / ".pki" / "nssdb"
    nssdb.mkdir(parents=True)
    certutil = need_tool("certutil", "/usr/bin/certutil")
    for args in (
        ["-N", "--empty-password"],
        ["-A", "-t", "C,,", "-n", "iiif-shim test CA", "-i", str(ca.root)],
    ):
        subprocess.run(
            [certutil, "-d", f"sql:{nssdb}", *args], check=True, capture_output=True, timeout=60
        )
    return folder
