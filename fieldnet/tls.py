"""A certificate authority and a broker certificate for the private broker's TLS listener, made once.

A city's broker has certificates from its own PKI; the private broker (demo, tests, benchmarks) makes its own at
its first start, so TLS is exercised everywhere: a CA (ECDSA P-256, ten years) and a server certificate for
127.0.0.1 and localhost signed by it (two years), each key readable by the owner only. Clients trust the CA file
(`LAMPLIGHTER_MQTT_CA_FILE`). Client certificates for brokers that require them can be issued from the same CA
(`issue`).
"""

from __future__ import annotations

import datetime as dt
import ipaddress
from dataclasses import dataclass
from pathlib import Path

from cryptography import x509
from cryptography.hazmat.primitives import hashes, serialization
from cryptography.hazmat.primitives.asymmetric import ec
from cryptography.x509.oid import ExtendedKeyUsageOID, NameOID

from kernel.files import atomic_write

__all__ = ["PrivateCA", "ensure_ca"]

_CA_YEARS, _LEAF_YEARS = 10, 2


@dataclass(frozen=True)
class PrivateCA:
    ca_file: Path
    ca_key_file: Path
    directory: Path

    def issue(self, name: str, *, server: bool, hosts: tuple[str, ...] = ()) -> tuple[Path, Path]:
        """A certificate and key signed by this CA, written as `{name}.crt` and `{name}.key`."""
        ca_cert = x509.load_pem_x509_certificate(self.ca_file.read_bytes())
        ca_key = serialization.load_pem_private_key(self.ca_key_file.read_bytes(), password=None)
        assert isinstance(ca_key, ec.EllipticCurvePrivateKey)
        key = ec.generate_private_key(ec.SECP256R1())
        now = dt.datetime.now(dt.UTC)
        usage = ExtendedKeyUsageOID.SERVER_AUTH if server else ExtendedKeyUsageOID.CLIENT_AUTH
        builder = (
            x509.CertificateBuilder()
            .subject_name(x509.Name([x509.NameAttribute(NameOID.COMMON_NAME, name)]))
            .issuer_name(ca_cert.subject)
            .public_key(key.public_key())
            .serial_number(x509.random_serial_number())
            .not_valid_before(now - dt.timedelta(minutes=5))
            .not_valid_after(now + dt.timedelta(days=365 * _LEAF_YEARS))
            .add_extension(x509.BasicConstraints(ca=False, path_length=None), critical=True)
            .add_extension(x509.ExtendedKeyUsage([usage]), critical=False)
        )
        if hosts:
            alt: list[x509.GeneralName] = []
            for h in hosts:
                try:
                    alt.append(x509.IPAddress(ipaddress.ip_address(h)))
                except ValueError:
                    alt.append(x509.DNSName(h))
            builder = builder.add_extension(x509.SubjectAlternativeName(alt), critical=False)
        cert = builder.sign(ca_key, hashes.SHA256())
        crt, pem = self.directory / f"{name}.crt", self.directory / f"{name}.key"
        _write(pem, _key_pem(key), 0o600)
        _write(crt, cert.public_bytes(serialization.Encoding.PEM), 0o644)
        return crt, pem


def ensure_ca(directory: Path) -> PrivateCA:
    """The CA in `directory` (`ca.crt`, `ca.key`), made if there is none."""
    directory.mkdir(parents=True, exist_ok=True)
    ca = PrivateCA(directory / "ca.crt", directory / "ca.key", directory)
    if ca.ca_file.exists() and ca.ca_key_file.exists():
        return ca
    key = ec.generate_private_key(ec.SECP256R1())
    name = x509.Name([x509.NameAttribute(NameOID.COMMON_NAME, "lamplighter private broker CA")])
    now = dt.datetime.now(dt.UTC)
    cert = (
        x509.CertificateBuilder()
        .subject_name(name)
        .issuer_name(name)
        .public_key(key.public_key())
        .serial_number(x509.random_serial_number())
        .not_valid_before(now - dt.timedelta(minutes=5))
        .not_valid_after(now + dt.timedelta(days=365 * _CA_YEARS))
        .add_extension(x509.BasicConstraints(ca=True, path_length=0), critical=True)
        .add_extension(
            x509.KeyUsage(
                digital_signature=True,
                key_cert_sign=True,
                crl_sign=True,
                content_commitment=False,
                key_encipherment=False,
                data_encipherment=False,
                key_agreement=False,
                encipher_only=False,
                decipher_only=False,
            ),
            critical=True,
        )
        .sign(key, hashes.SHA256())
    )
    _write(ca.ca_key_file, _key_pem(key), 0o600)
    _write(ca.ca_file, cert.public_bytes(serialization.Encoding.PEM), 0o644)
    return ca


def _key_pem(key: ec.EllipticCurvePrivateKey) -> bytes:
    return key.private_bytes(
        serialization.Encoding.PEM, serialization.PrivateFormat.PKCS8, serialization.NoEncryption()
    )


def _write(path: Path, data: bytes, mode: int) -> None:
    atomic_write(path, data, mode=mode)
