"""A throwaway certificate authority with server and client certificates for TLS to the broker.

Keys are ECDSA P-256: small, quick to make, and accepted by Mosquitto, OpenSSL and Python's
``ssl``. The CA is meant for one site's test bench or pilot and is kept offline (only the
broker and the clients get ``ca.crt``). A client certificate's common name is its MQTT
username, so the broker can take the identity from the certificate
(``use_identity_as_username``): a van's password alone is then not enough to log in as it.

Pure: the caller passes the moment of issue; nothing here reads a clock or writes a file.
"""

from __future__ import annotations

import ipaddress
from collections.abc import Sequence
from dataclasses import dataclass
from datetime import datetime, timedelta

from cryptography import x509
from cryptography.hazmat.primitives import hashes, serialization
from cryptography.hazmat.primitives.asymmetric import ec
from cryptography.x509.oid import ExtendedKeyUsageOID, NameOID

# Certificates are back-dated a little so that a broker whose clock is slightly behind the
# generating machine's still accepts them.
BACKDATE = timedelta(minutes=5)


@dataclass(frozen=True, slots=True)
class IssuedCert:
    """A certificate and its private key, both PEM."""

    cert_pem: bytes
    key_pem: bytes


@dataclass(frozen=True, slots=True)
class CertificateAuthority:
    name: str
    cert: x509.Certificate
    key: ec.EllipticCurvePrivateKey

    @property
    def cert_pem(self) -> bytes:
        return self.cert.public_bytes(serialization.Encoding.PEM)

    @property
    def key_pem(self) -> bytes:
        return _key_pem(self.key)


def _key_pem(key: ec.EllipticCurvePrivateKey) -> bytes:
    return key.private_bytes(
        serialization.Encoding.PEM,
        serialization.PrivateFormat.PKCS8,
        serialization.NoEncryption(),
    )


def _name(common_name: str, organisation: str) -> x509.Name:
    return x509.Name(
        [
            x509.NameAttribute(NameOID.ORGANIZATION_NAME, organisation),
            x509.NameAttribute(NameOID.COMMON_NAME, common_name),
        ]
    )


def make_ca(site_name: str, now: datetime, *, days: int) -> CertificateAuthority:
    """A self-signed CA that may sign end-entity certificates only (path length 0)."""
    key = ec.generate_private_key(ec.SECP256R1())
    name = _name(f"fleet {site_name} CA", f"fleet {site_name}")
    cert = (
        x509.CertificateBuilder()
        .subject_name(name)
        .issuer_name(name)
        .public_key(key.public_key())
        .serial_number(x509.random_serial_number())
        .not_valid_before(now - BACKDATE)
        .not_valid_after(now + timedelta(days=days))
        .add_extension(x509.BasicConstraints(ca=True, path_length=0), critical=True)
        .add_extension(
            x509.KeyUsage(
                digital_signature=False,
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
        .sign(key, hashes.SHA256())
    )
    return CertificateAuthority(site_name, cert, key)


def _issue(
    ca: CertificateAuthority,
    common_name: str,
    now: datetime,
    days: int,
    usage: x509.ObjectIdentifier,
    alt_names: Sequence[x509.GeneralName],
) -> IssuedCert:
    key = ec.generate_private_key(ec.SECP256R1())
    builder = (
        x509.CertificateBuilder()
        .subject_name(_name(common_name, f"fleet {ca.name}"))
        .issuer_name(ca.cert.subject)
        .public_key(key.public_key())
        .serial_number(x509.random_serial_number())
        .not_valid_before(now - BACKDATE)
        .not_valid_after(now + timedelta(days=days))
        .add_extension(x509.BasicConstraints(ca=False, path_length=None), critical=True)
        .add_extension(
            x509.KeyUsage(
                digital_signature=True,
                content_commitment=False,
                key_encipherment=False,
                data_encipherment=False,
                key_agreement=True,
                key_cert_sign=False,
                crl_sign=False,
                encipher_only=False,
                decipher_only=False,
            ),
            critical=True,
        )
        .add_extension(x509.ExtendedKeyUsage([usage]), critical=False)
        .add_extension(
            x509.AuthorityKeyIdentifier.from_issuer_public_key(ca.key.public_key()),
            critical=False,
        )
    )
    if alt_names:
        builder = builder.add_extension(x509.SubjectAlternativeName(alt_names), critical=False)
    cert = builder.sign(ca.key, hashes.SHA256())
    return IssuedCert(cert.public_bytes(serialization.Encoding.PEM), _key_pem(key))


def issue_server_cert(
    ca: CertificateAuthority, hostnames: Sequence[str], now: datetime, *, days: int
) -> IssuedCert:
    """The broker's certificate, valid for each of ``hostnames`` (DNS names or IP addresses)."""
    if not hostnames:
        raise ValueError("a server certificate needs at least one host name or address")
    alt: list[x509.GeneralName] = []
    for host in hostnames:
        try:
            alt.append(x509.IPAddress(ipaddress.ip_address(host)))
        except ValueError:
            alt.append(x509.DNSName(host))
    return _issue(ca, hostnames[0], now, days, ExtendedKeyUsageOID.SERVER_AUTH, alt)


def issue_client_cert(
    ca: CertificateAuthority, username: str, now: datetime, *, days: int
) -> IssuedCert:
    """A client certificate whose common name is the MQTT ``username``."""
    return _issue(ca, username, now, days, ExtendedKeyUsageOID.CLIENT_AUTH, ())
