"""``server.tls`` and ``server.http_redirect_port`` as a configuration file gives them: each bad
certificate or key is one problem line saying what is wrong (expired and when, not yet valid and
from when, a key that is not the certificate's, cert and key swapped, a chain out of order, a
file that is missing or not PEM, an encrypted key without its password), a certificate about to
expire is a warning, and the redirect port needs TLS and a port of its own. The test CA
(``tests/tls.py``) makes every certificate."""

from __future__ import annotations

import asyncio
import datetime
import logging
import textwrap
from dataclasses import replace
from pathlib import Path

import pytest
from cryptography.hazmat.primitives import serialization

from iiif_shim.base.errors import ConfigError
from iiif_shim.config.settings import Settings, load_settings
from iiif_shim.config.tls import TLSSettings
from tests.tls import CA, DAY, Issued, make_ca

HOUR = datetime.timedelta(hours=1)


@pytest.fixture(scope="module")
def ca(tmp_path_factory: pytest.TempPathFactory) -> CA:
    return make_ca(tmp_path_factory.mktemp("ca"))


def _config(tmp_path: Path, tls: str, server: str = "") -> Path:
    (tmp_path / "images").mkdir(exist_ok=True)
    path = tmp_path / "shim.yaml"
    body = textwrap.dedent(
        """\
        backends:
          local: {type: files, root: ./images}
        routes:
          - {backend: local}
        """
    )
    path.write_text(f"server:\n  tls: {tls}\n{server}\n{body}")
    return path


def _tls(cert: Path, key: Path, more: str = "") -> str:
    return f"{{cert: '{cert}', key: '{key}'{more}}}"


def _load(tmp_path: Path, tls: str, server: str = "") -> Settings:
    return load_settings(_config(tmp_path, tls, server))


def _problems(tmp_path: Path, tls: str, server: str = "") -> list[tuple[str, str]]:
    with pytest.raises(ConfigError) as err:
        _load(tmp_path, tls, server)
    return err.value.problems


def _one(tmp_path: Path, tls: str, server: str = "") -> tuple[str, str]:
    found = _problems(tmp_path, tls, server)
    assert len(found) == 1, found
    return found[0]


def test_a_good_certificate_is_read(tmp_path: Path, ca: CA) -> None:
    issued = ca.issue("good")
    settings = _load(tmp_path, _tls(issued.cert, issued.key, ", hsts: 600"))
    tls = settings.server.tls
    assert tls is not None and tls.cert == issued.cert and tls.hsts == 600 and tls.watch == 30
    assert settings.warnings == ()


def test_relative_paths_are_relative_to_the_config_file(tmp_path: Path, ca: CA) -> None:
    issued = ca.issue("relative")
    (tmp_path / "c.pem").write_bytes(issued.cert.read_bytes())
    (tmp_path / "k.pem").write_bytes(issued.key.read_bytes())
    settings = _load(tmp_path, "{cert: c.pem, key: k.pem}")
    assert settings.server.tls is not None and settings.server.tls.cert == tmp_path / "c.pem"


def test_an_expired_certificate_says_when(tmp_path: Path, ca: CA) -> None:
    issued = ca.issue("expired", valid_from=-30 * DAY, valid_for=10 * DAY)
    key, message = _one(tmp_path, _tls(issued.cert, issued.key))
    when = issued.not_after.strftime("%Y-%m-%d %H:%M UTC")
    assert key == "server.tls.cert" and message == f"{issued.cert} expired on {when}"


def test_a_certificate_not_yet_valid_says_from_when(tmp_path: Path, ca: CA) -> None:
    issued = ca.issue("future", valid_from=5 * DAY)
    key, message = _one(tmp_path, _tls(issued.cert, issued.key))
    start = (issued.not_after - 90 * DAY).strftime("%Y-%m-%d %H:%M UTC")
    assert key == "server.tls.cert"
    assert message == f"{issued.cert} is not valid yet: valid from {start}"


def test_a_key_that_is_not_the_certificates(tmp_path: Path, ca: CA) -> None:
    issued = ca.issue("mismatch", wrong_key=True)
    key, message = _one(tmp_path, _tls(issued.cert, issued.key))
    assert key == "server.tls.key"
    assert message == (
        f"{issued.key} is not the key of the certificate in {issued.cert} (CN=localhost)"
    )


def test_cert_and_key_swapped(tmp_path: Path, ca: CA) -> None:
    issued = ca.issue("swapped")
    key, message = _one(tmp_path, _tls(issued.key, issued.cert))
    assert key == "server.tls.cert"
    assert message == (
        f"{issued.key} holds a private key, not a certificate: are cert and key swapped?"
    )
    good = ca.issue("swapped-key")
    key, message = _one(tmp_path, _tls(good.cert, good.cert))
    assert key == "server.tls.key"
    assert message == (
        f"{good.cert} holds a certificate, not a private key: are cert and key swapped?"
    )


def _blocks(issued: Issued) -> list[str]:
    end = "-----END CERTIFICATE-----\n"
    return [block + end for block in issued.cert.read_text().split(end) if block.strip()]


def test_a_chain_out_of_order(tmp_path: Path, ca: CA) -> None:
    issued = ca.issue("order")
    leaf, intermediate = _blocks(issued)
    reordered = tmp_path / "reordered.pem"
    reordered.write_text(intermediate + leaf)
    key, message = _problems(tmp_path, _tls(reordered, issued.key))[0]
    assert key == "server.tls.cert"
    assert message == (
        f"{reordered} is out of order or holds a wrong intermediate: certificate 2 (CN=localhost) "
        "did not issue certificate 1 "
        "(CN=iiif-shim test CA intermediate); the file must hold the leaf first, then each issuer"
    )
    other = ca.issue("other")  # a leaf followed by another leaf: not its issuer either
    mixed = tmp_path / "mixed.pem"
    mixed.write_text(_blocks(issued)[0] + _blocks(other)[0])
    key, message = _one(tmp_path, _tls(mixed, issued.key))
    assert key == "server.tls.cert" and "is out of order or holds a wrong intermediate" in message


def test_the_leaf_without_its_intermediate_is_a_problem(tmp_path: Path, ca: CA) -> None:
    """certbot's cert.pem given for fullchain.pem: curl, Python, Java and validators refuse it
    (the issuer is neither in the file nor a root this system trusts)."""
    issued = ca.issue("alone", chain=False)
    assert _one(tmp_path, _tls(issued.cert, issued.key)) == (
        "server.tls.cert",
        f"{issued.cert} holds only the server certificate (CN=localhost), not the intermediate "
        "that issued it (CN=iiif-shim test CA intermediate): give the full chain (certbot: "
        "fullchain.pem)",
    )


def test_the_context_served_refuses_old_protocols_renegotiation_and_tickets(
    tmp_path: Path, ca: CA
) -> None:
    """What the shim serves with, as built for check-config and serve alike (a regression
    check: the ssl module's defaults are not relied on)."""
    import ssl

    from iiif_shim.config.tls import server_context  # (one place for both since it exists)

    issued = ca.issue("context")
    tls = _load(tmp_path, _tls(issued.cert, issued.key)).server.tls
    assert tls is not None
    context = server_context(tls)
    assert context.minimum_version == ssl.TLSVersion.TLSv1_2
    for option in (ssl.OP_NO_RENEGOTIATION, ssl.OP_NO_TICKET, ssl.OP_NO_COMPRESSION):
        assert context.options & option == option, option
    assert context.verify_mode == ssl.CERT_NONE  # no client certificates asked for


def test_a_path_with_a_nul_byte_is_one_problem(tmp_path: Path, ca: CA) -> None:
    issued = ca.issue("nul")
    key, message = _one(tmp_path, f'{{cert: "a\\0b.pem", key: "{issued.key}"}}')
    assert key == "server.tls.cert" and message.startswith("cannot read ") and "null" in message


def test_a_key_others_may_read_is_a_warning(tmp_path: Path, ca: CA) -> None:
    issued = ca.issue("readable")
    issued.key.chmod(0o644)
    settings = _load(tmp_path, _tls(issued.cert, issued.key))
    assert settings.warnings == (
        (
            "server.tls.key",
            f"{issued.key} may be read by other users (mode 644): make it readable by the "
            "shim's user only (chmod 600)",
        ),
    )
    # Kubernetes' secret volumes: links into a ..data folder, 0644 unless told otherwise
    data = tmp_path / "secret" / "..2024_01_01"
    data.mkdir(parents=True)
    (data / "tls.key").write_bytes(issued.key.read_bytes())
    (data / "tls.key").chmod(0o644)
    (tmp_path / "secret" / "..data").symlink_to(data.name)
    (tmp_path / "secret" / "tls.key").symlink_to("..data/tls.key")
    mounted = _load(tmp_path, _tls(issued.cert, tmp_path / "secret" / "tls.key"))
    assert mounted.warnings == ()


def test_acme_dir_must_be_a_folder(tmp_path: Path, ca: CA) -> None:
    issued = ca.issue("acme")
    missing = tmp_path / "no-webroot"
    assert _one(tmp_path, _tls(issued.cert, issued.key, f", acme_dir: '{missing}'")) == (
        "server.tls.acme_dir",
        f"{missing} is not a folder",
    )
    (tmp_path / "webroot").mkdir()
    settings = _load(tmp_path, _tls(issued.cert, issued.key, ", acme_dir: webroot"))
    assert settings.server.tls is not None
    assert settings.server.tls.acme_dir == tmp_path / "webroot"


def test_a_certificate_about_to_expire_is_a_warning(tmp_path: Path, ca: CA) -> None:
    issued = ca.issue("soon", valid_for=6 * DAY)  # from yesterday: 5 days left
    settings = _load(tmp_path, _tls(issued.cert, issued.key))
    when = issued.not_after.strftime("%Y-%m-%d %H:%M UTC")
    assert settings.warnings == (
        ("server.tls.cert", f"{issued.cert} expires on {when} (in 5 days): renew it"),
    )
    later = ca.issue("later", valid_for=16 * DAY)  # 15 days left: nothing to say
    assert _load(tmp_path, _tls(later.cert, later.key)).warnings == ()


def test_missing_and_non_pem_files(tmp_path: Path, ca: CA) -> None:
    issued = ca.issue("files")
    missing = tmp_path / "nowhere.pem"
    assert _one(tmp_path, _tls(missing, issued.key)) == (
        "server.tls.cert",
        f"cannot read {missing}: No such file or directory",
    )
    der = tmp_path / "cert.der"
    der.write_bytes(b"\x30\x82\x01\x0a" + bytes(64))
    assert _one(tmp_path, _tls(der, issued.key)) == (
        "server.tls.cert",
        f"{der} is not PEM (no -----BEGIN line): give the PEM file, not DER or PKCS#12",
    )
    assert _one(tmp_path, _tls(issued.cert, tmp_path)) == (
        "server.tls.key",
        f"{tmp_path} is not a file",
    )
    assert _one(tmp_path, "{cert: a.pem}") == ("server.tls.key", "required")


def test_an_encrypted_key_needs_its_password(tmp_path: Path, ca: CA) -> None:
    issued = ca.issue("encrypted")
    key = serialization.load_pem_private_key(issued.key.read_bytes(), None)
    locked = tmp_path / "locked.key"
    locked.write_bytes(
        key.private_bytes(
            serialization.Encoding.PEM,
            serialization.PrivateFormat.PKCS8,
            serialization.BestAvailableEncryption(b"open sesame"),
        )
    )
    assert _one(tmp_path, _tls(issued.cert, locked)) == (
        "server.tls.key",
        f"{locked} is encrypted: set server.tls.password",
    )
    wrong = _one(tmp_path, _tls(issued.cert, locked, ", password: 'not it'"))
    assert wrong == (
        "server.tls.key",
        f"{locked} cannot be read with server.tls.password (a wrong password?)",
    )
    settings = _load(tmp_path, _tls(issued.cert, locked, ", password: 'open sesame'"))
    assert settings.server.tls is not None and settings.server.tls.password == "open sesame"


def test_a_password_for_a_key_that_is_not_encrypted_is_a_warning(tmp_path: Path, ca: CA) -> None:
    """A renewal that wrote the key unencrypted, the password left in the file: said, not
    ignored in silence (and the password itself never in the line)."""
    issued = ca.issue("plainkey")
    settings = _load(tmp_path, _tls(issued.cert, issued.key, ", password: 'forgotten pw'"))
    assert settings.warnings == (
        (
            "server.tls.password",
            f"is set, but {issued.key} is not encrypted: the password is not used",
        ),
    )


def test_the_redirect_port_needs_tls_and_a_port_of_its_own(tmp_path: Path, ca: CA) -> None:
    issued = ca.issue("redirect")
    assert _one(tmp_path, "null", "  http_redirect_port: 8080") == (
        "server.http_redirect_port",
        "needs server.tls (HTTPS to send to)",
    )
    same = "  port: 8443\n  http_redirect_port: 8443"
    assert _one(tmp_path, _tls(issued.cert, issued.key), same) == (
        "server.http_redirect_port",
        "must differ from server.port",
    )
    plain = "  public_url: http://images.example.org\n  http_redirect_port: 8080"
    assert _one(tmp_path, _tls(issued.cert, issued.key), plain)[0] == "server.http_redirect_port"
    settings = _load(tmp_path, _tls(issued.cert, issued.key), "  http_redirect_port: 8080")
    assert settings.server.http_redirect_port == 8080


def _settings(issued: Issued, **more: object) -> TLSSettings:
    return TLSSettings(cert=issued.cert, key=issued.key, **more)  # type: ignore[arg-type]


def test_a_running_process_says_when_its_certificate_nears_its_end_and_passes_it(
    ca: CA, caplog: pytest.LogCaptureFixture
) -> None:
    """Checked at each tick with no I/O: a warning a day within 14 days of the end, an error a
    day once it has passed (still served); /health/ready's numbers."""
    from iiif_shim.process.tls import Certificates

    issued = ca.issue("ending", valid_for=6 * DAY)  # from yesterday: 5 days left
    certificates = Certificates.open(_settings(issued))
    end = issued.not_after.replace(microsecond=0)
    assert certificates.status(end - 2 * DAY) == {
        "not_after": end.isoformat().replace("+00:00", "Z"),
        "days_left": 2.0,
    }
    caplog.clear()
    with caplog.at_level(logging.INFO, "iiif_shim"):
        for hours in range(0, 48, 6):  # two days of ticks: one warning each day
            certificates.check_expiry(end - 5 * DAY + hours * HOUR)
        certificates.check_expiry(end + HOUR)
        certificates.check_expiry(end + 2 * HOUR)
    said = [(r.levelno, r.getMessage()) for r in caplog.records]
    assert [level for level, _ in said] == [logging.WARNING, logging.WARNING, logging.ERROR], said
    assert "expires in 5.0 days: renew it" in said[0][1]
    assert "serving an expired certificate" in said[2][1]
    assert f"{issued.serial:x}" in said[2][1]


def test_the_watch_survives_an_unexpected_error(
    ca: CA, caplog: pytest.LogCaptureFixture, monkeypatch: pytest.MonkeyPatch
) -> None:
    """An exception no rule foresaw is logged once (the same one again at debug level) and the
    next look tries again; the certificate in use stays."""
    from iiif_shim.process import tls as process_tls

    first, second = ca.issue("w1"), ca.issue("w2")
    tls = _settings(first)
    certificates = process_tls.Certificates.open(tls)

    def broken(*args: object, **kwargs: object) -> object:
        raise UnicodeEncodeError("utf-8", "x", 0, 1, "odd bytes")

    async def run() -> list[bool]:
        done = []
        with monkeypatch.context() as patch:
            patch.setattr(process_tls, "load", broken)
            done.append(await certificates.reload())
            done.append(await certificates.reload())
        done.append(await certificates.reload(_settings(second)))
        return done

    with caplog.at_level(logging.DEBUG, "iiif_shim"):
        assert asyncio.run(run()) == [False, False, True]
    errors = [r for r in caplog.records if r.levelno >= logging.ERROR]
    assert len(errors) == 1 and "odd bytes" in errors[0].getMessage(), errors
    assert f"{second.serial:x}" in certificates.described


def test_a_process_starting_on_bad_files_serves_the_kept_pair_or_the_expired_one(
    ca: CA, tmp_path: Path, caplog: pytest.LogCaptureFixture
) -> None:
    """A worker started after the files went bad serves the last good pair its supervisor
    kept; with none, an expired certificate is served with an error line, not refused."""
    from iiif_shim.process import handover
    from iiif_shim.process.tls import Certificates, good_pair, kept

    good = ca.issue("kept")
    pair = good_pair(_settings(good))
    assert pair is not None and pair.key == good.key.read_bytes()
    assert "BEGIN" not in repr(pair)
    fds = (handover.write("tls-cert", pair.cert), handover.write("tls-key", pair.key))
    saved = kept(_settings(good), fds)
    assert saved is not None and oct(saved.key.stat().st_mode & 0o777) == "0o600"
    expired = ca.issue("gone", valid_from=-20 * DAY, valid_for=10 * DAY)
    assert good_pair(_settings(expired)) is None  # never kept: only a pair with no problem
    with caplog.at_level(logging.INFO, "iiif_shim"):
        served = Certificates.open(_settings(expired), saved)
        assert f"{good.serial:x}" in served.described
        assert "serving the last good certificate the supervisor kept" in caplog.text
        caplog.clear()
        alone = Certificates.open(_settings(expired))
    assert f"{expired.serial:x}" in alone.described
    assert any(
        r.levelno == logging.ERROR and "expired on" in r.getMessage() for r in caplog.records
    )
    half = tmp_path / "half.pem"
    half.write_bytes(b"not a certificate\n")
    again = Certificates.open(replace(_settings(good), cert=half), saved)
    assert f"{good.serial:x}" in again.described
    handover.close(fds)
