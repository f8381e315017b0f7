"""TLS for the broker's `mqtts` listener: a certificate authority and a server certificate made
once in the broker's state folder, or a certificate and key the site gives.

Clients verify the server against the CA (`mqtts://user:password@host:8883?ca=/path/ca.crt`,
or $SMARTLAB_MQTT_CA): the CA certificate is public, its key and the server key are 0600.
"""

from __future__ import annotations

import datetime
import ipaddress
import os
import shutil
import socket
from dataclasses import dataclass
from pathlib import Path

from cryptography import x509
from cryptography.hazmat.primitives import hashes, serialization
from cryptography.hazmat.primitives.asymmetric import ec
from cryptography.x509.oid import NameOID

VALID_DAYS = 3650


@dataclass(frozen=True)
class TlsFiles:
    """What the broker's listener reads (cert, key) and what clients verify against (ca)."""

    ca: Path | None  # None: a certificate the system's trust store verifies
    cert: Path
    key: Path


def default_names() -> list[str]:
    """Names the generated server certificate is valid for: this machine and loopback."""
    names = ["localhost", "127.0.0.1", "::1", socket.gethostname(), socket.getfqdn()]
    return list(dict.fromkeys(n for n in names if n))


def _write_private(path: Path, data: bytes) -> None:
    """A file only its owner reads, created 0600 (never readable in between)."""
    path.unlink(missing_ok=True)
    fd = os.open(path, os.O_WRONLY | os.O_CREAT | os.O_EXCL | os.O_NOFOLLOW, 0o600)
    with os.fdopen(fd, "wb") as out:
        out.write(data)


def _key_pem(key: ec.EllipticCurvePrivateKey) -> bytes:
    return key.private_bytes(
        serialization.Encoding.PEM,
        serialization.PrivateFormat.PKCS8,
        serialization.NoEncryption(),
    )


def _san(names: list[str]) -> x509.SubjectAlternativeName:
    entries: list[x509.GeneralName] = []
    for name in names:
        try:
            entries.append(x509.IPAddress(ipaddress.ip_address(name)))
        except ValueError:
            entries.append(x509.DNSName(name))
    return x509.SubjectAlternativeName(entries)


def _certificate(
    subject: str,
    key: ec.EllipticCurvePrivateKey,
    issuer: str,
    signer: ec.EllipticCurvePrivateKey,
    *,
    ca: bool,
    names: tuple[str, ...] = (),
) -> x509.Certificate:
    now = datetime.datetime.now(datetime.UTC)
    builder = (
        x509.CertificateBuilder()
        .subject_name(x509.Name([x509.NameAttribute(NameOID.COMMON_NAME, subject)]))
        .issuer_name(x509.Name([x509.NameAttribute(NameOID.COMMON_NAME, issuer)]))
        .public_key(key.public_key())
        .serial_number(x509.random_serial_number())
        .not_valid_before(now - datetime.timedelta(minutes=5))
        .not_valid_after(now + datetime.timedelta(days=VALID_DAYS))
        .add_extension(x509.BasicConstraints(ca=ca, path_length=0 if ca else None), critical=True)
    )
    if ca:
        builder = builder.add_extension(
            x509.KeyUsage(False, False, False, False, False, True, True, False, False), True
        )
    else:
        builder = builder.add_extension(_san(list(names)), critical=False)
    return builder.sign(signer, hashes.SHA256())


def generate(folder: Path, names: list[str]) -> TlsFiles:
    """A new CA and a server certificate for `names` in `folder` (keys 0600)."""
    folder.mkdir(mode=0o755, parents=True, exist_ok=True)
    files = TlsFiles(folder / "ca.crt", folder / "server.crt", folder / "server.key")
    ca_key = ec.generate_private_key(ec.SECP256R1())
    ca_cert = _certificate(
        "Smart City Lab broker CA", ca_key, "Smart City Lab broker CA", ca_key, ca=True
    )
    server_key = ec.generate_private_key(ec.SECP256R1())
    server_cert = _certificate(
        names[0], server_key, "Smart City Lab broker CA", ca_key, ca=False, names=tuple(names)
    )
    _write_private(folder / "ca.key", _key_pem(ca_key))
    _write_private(files.key, _key_pem(server_key))
    files.cert.write_bytes(server_cert.public_bytes(serialization.Encoding.PEM))
    files.ca.write_bytes(ca_cert.public_bytes(serialization.Encoding.PEM))
    files.ca.chmod(0o644)  # public: every client verifies the broker with it
    return files


def ensure(
    folder: Path,
    names: list[str],
    cert: Path | None = None,
    key: Path | None = None,
    ca: Path | None = None,
) -> TlsFiles:
    """The listener's files: the site's certificate and key (and the CA that signed them, if it
    is not one the system trusts) copied in, so that the broker's account can read them; else
    the generated ones, made on first use and kept."""
    if (cert is None) != (key is None):
        raise ValueError("give both a TLS certificate and its key, or neither")
    own = TlsFiles(folder / "ca.crt", folder / "server.crt", folder / "server.key")
    if cert is not None and key is not None:
        folder.mkdir(mode=0o755, parents=True, exist_ok=True)
        shutil.copyfile(cert, own.cert)
        _write_private(own.key, Path(key).read_bytes())
        (folder / "ca.key").unlink(missing_ok=True)  # a generated CA no longer applies
        own.ca.unlink(missing_ok=True)
        if ca is None:
            return TlsFiles(None, own.cert, own.key)
        shutil.copyfile(ca, own.ca)
        own.ca.chmod(0o644)
        return own
    if not ((folder / "ca.key").exists() and own.cert.exists() and own.key.exists()):
        return generate(folder, names)
    return own
