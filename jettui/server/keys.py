"""The server's long-term keys: the TLS certificate of the API port, and the X25519 key of
the data plane (its ``publicKey``).

Both are kept in the persistent state directory (mode 0600) so a server's identity
survives restarts; without a state directory they are made in memory at start.
"""

from __future__ import annotations

import datetime
import hashlib
import os
import ssl
import tempfile
from dataclasses import dataclass
from pathlib import Path

from cryptography import x509
from cryptography.hazmat.primitives import hashes, serialization
from cryptography.hazmat.primitives.asymmetric import ec, x25519
from cryptography.x509.oid import NameOID

CERT_VALID_DAYS = 3650


@dataclass
class ServerKeys:
    tls_key_pem: bytes
    tls_cert_pem: bytes
    transfer_key: x25519.X25519PrivateKey

    @property
    def cert(self) -> x509.Certificate:
        return x509.load_pem_x509_certificate(self.tls_cert_pem)

    @property
    def fingerprint(self) -> str:
        """SHA-256 of the DER certificate, hex: what clients pin."""
        return hashlib.sha256(self.cert.public_bytes(serialization.Encoding.DER)).hexdigest()

    @property
    def public_key(self) -> str:
        """The data-plane public key, hex of the raw 32 bytes."""
        raw = self.transfer_key.public_key().public_bytes(serialization.Encoding.Raw, serialization.PublicFormat.Raw)
        return raw.hex()

    def certificate_days_left(self) -> int:
        left = self.cert.not_valid_after_utc - datetime.datetime.now(datetime.UTC)
        return max(0, left.days)

    def ssl_context(self) -> ssl.SSLContext:
        ctx = ssl.SSLContext(ssl.PROTOCOL_TLS_SERVER)
        ctx.minimum_version = ssl.TLSVersion.TLSv1_3
        # load_cert_chain only reads files: use a private temporary directory.
        with tempfile.TemporaryDirectory(prefix="jettui-tls-") as tmp:
            key_path, cert_path = Path(tmp, "key.pem"), Path(tmp, "cert.pem")
            _write_private(key_path, self.tls_key_pem)
            cert_path.write_bytes(self.tls_cert_pem)
            ctx.load_cert_chain(str(cert_path), str(key_path))
        return ctx


def _write_private(path: Path, data: bytes) -> None:
    fd = os.open(path, os.O_WRONLY | os.O_CREAT | os.O_TRUNC, 0o600)
    with os.fdopen(fd, "wb") as fh:
        fh.write(data)


def _make_tls(common_name: str) -> tuple[bytes, bytes]:
    key = ec.generate_private_key(ec.SECP256R1())
    name = x509.Name([x509.NameAttribute(NameOID.COMMON_NAME, common_name)])
    now = datetime.datetime.now(datetime.UTC)
    cert = (
        x509.CertificateBuilder()
        .subject_name(name)
        .issuer_name(name)
        .public_key(key.public_key())
        .serial_number(x509.random_serial_number())
        .not_valid_before(now - datetime.timedelta(minutes=5))
        .not_valid_after(now + datetime.timedelta(days=CERT_VALID_DAYS))
        .add_extension(x509.SubjectAlternativeName([x509.DNSName("jettui-server")]), critical=False)
        .add_extension(x509.BasicConstraints(ca=False, path_length=None), critical=True)
        .sign(key, hashes.SHA256())
    )
    key_pem = key.private_bytes(
        serialization.Encoding.PEM, serialization.PrivateFormat.PKCS8, serialization.NoEncryption()
    )
    return key_pem, cert.public_bytes(serialization.Encoding.PEM)


def load_or_create_keys(state_dir: Path | None, common_name: str = "jettui-server") -> ServerKeys:
    if state_dir is None:
        key_pem, cert_pem = _make_tls(common_name)
        return ServerKeys(key_pem, cert_pem, x25519.X25519PrivateKey.generate())
    tls_key, tls_cert, xkey = state_dir / "tls.key", state_dir / "tls.crt", state_dir / "transfer.key"
    if not (tls_key.exists() and tls_cert.exists()):
        key_pem, cert_pem = _make_tls(common_name)
        _write_private(tls_key, key_pem)
        tls_cert.write_bytes(cert_pem)
    if not xkey.exists():
        raw = x25519.X25519PrivateKey.generate().private_bytes(
            serialization.Encoding.Raw, serialization.PrivateFormat.Raw, serialization.NoEncryption()
        )
        _write_private(xkey, raw)
    return ServerKeys(
        tls_key.read_bytes(),
        tls_cert.read_bytes(),
        x25519.X25519PrivateKey.from_private_bytes(xkey.read_bytes()),
    )
