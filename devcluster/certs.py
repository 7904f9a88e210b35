"""Certificates for the dev cluster: one CA, the API server's serving cert, client certs
for the admin and each control-plane component, and the service-account key pair."""

from __future__ import annotations

import datetime
import ipaddress
from dataclasses import dataclass
from pathlib import Path

from cryptography import x509
from cryptography.hazmat.primitives import hashes, serialization
from cryptography.hazmat.primitives.asymmetric import ec, rsa
from cryptography.x509.oid import ExtendedKeyUsageOID, NameOID

VALIDITY = datetime.timedelta(days=3650)
API_SERVER_DNS_NAMES = (
    "localhost",
    "kubernetes",
    "kubernetes.default",
    "kubernetes.default.svc",
    "kubernetes.default.svc.cluster.local",
)
# 198.19.0.1: the `kubernetes` Service in SERVICE_CIDR (cluster.py); 10.96.0.1 for older clusters' certificates
API_SERVER_IPS = ("127.0.0.1", "198.19.0.1", "10.96.0.1")

# (file stem, common name, organization): the identities RBAC's bootstrap policy knows.
CLIENT_IDENTITIES = (
    ("admin", "devcluster-admin", "system:masters"),
    ("kube-controller-manager", "system:kube-controller-manager", None),
    ("kube-scheduler", "system:kube-scheduler", None),
    ("kwok", "devcluster-kwok", "system:masters"),
    ("podrunner", "devcluster-podrunner", "system:masters"),
)


@dataclass(frozen=True)
class ClusterCertificates:
    directory: Path

    @property
    def ca_cert(self) -> Path:
        return self.directory / "ca.crt"

    @property
    def ca_key(self) -> Path:
        return self.directory / "ca.key"

    @property
    def apiserver_cert(self) -> Path:
        return self.directory / "apiserver.crt"

    @property
    def apiserver_key(self) -> Path:
        return self.directory / "apiserver.key"

    @property
    def service_account_key(self) -> Path:
        return self.directory / "sa.key"

    @property
    def service_account_public_key(self) -> Path:
        return self.directory / "sa.pub"

    def client_cert(self, who: str) -> Path:
        return self.directory / f"{who}.crt"

    def client_key(self, who: str) -> Path:
        return self.directory / f"{who}.key"


def _new_key() -> ec.EllipticCurvePrivateKey:
    return ec.generate_private_key(ec.SECP256R1())


def _write_key(key: ec.EllipticCurvePrivateKey | rsa.RSAPrivateKey, path: Path) -> None:
    path.write_bytes(
        key.private_bytes(
            serialization.Encoding.PEM,
            serialization.PrivateFormat.PKCS8,
            serialization.NoEncryption(),
        )
    )
    path.chmod(0o600)


def _write_cert(cert: x509.Certificate, path: Path) -> None:
    path.write_bytes(cert.public_bytes(serialization.Encoding.PEM))


def _name(common_name: str, organization: str | None = None) -> x509.Name:
    attributes = [x509.NameAttribute(NameOID.COMMON_NAME, common_name)]
    if organization:
        attributes.append(x509.NameAttribute(NameOID.ORGANIZATION_NAME, organization))
    return x509.Name(attributes)


def _issue(
    subject: x509.Name,
    public_key: ec.EllipticCurvePublicKey,
    ca_cert: x509.Certificate,
    ca_key: ec.EllipticCurvePrivateKey,
    usage: x509.ObjectIdentifier,
    sans: list[x509.GeneralName] | None = None,
) -> x509.Certificate:
    now = datetime.datetime.now(datetime.UTC)
    builder = (
        x509.CertificateBuilder()
        .subject_name(subject)
        .issuer_name(ca_cert.subject)
        .public_key(public_key)
        .serial_number(x509.random_serial_number())
        .not_valid_before(now - datetime.timedelta(minutes=5))
        .not_valid_after(now + VALIDITY)
        .add_extension(x509.BasicConstraints(ca=False, path_length=None), critical=True)
        .add_extension(
            x509.KeyUsage(
                digital_signature=True,
                key_encipherment=True,
                content_commitment=False,
                data_encipherment=False,
                key_agreement=False,
                key_cert_sign=False,
                crl_sign=False,
                encipher_only=False,
                decipher_only=False,
            ),
            critical=True,
        )
        .add_extension(x509.ExtendedKeyUsage([usage]), critical=False)
    )
    if sans:
        builder = builder.add_extension(x509.SubjectAlternativeName(sans), critical=False)
    return builder.sign(ca_key, hashes.SHA256())


def _issue_apiserver_cert(
    certs: ClusterCertificates, ca_key: ec.EllipticCurvePrivateKey, ca_cert: x509.Certificate
) -> None:
    serving_key = _new_key()
    sans: list[x509.GeneralName] = [x509.DNSName(n) for n in API_SERVER_DNS_NAMES]
    sans += [x509.IPAddress(ipaddress.ip_address(ip)) for ip in API_SERVER_IPS]
    serving = _issue(
        _name("kube-apiserver"), serving_key.public_key(), ca_cert, ca_key, ExtendedKeyUsageOID.SERVER_AUTH, sans
    )
    _write_key(serving_key, certs.apiserver_key)
    _write_cert(serving, certs.apiserver_cert)


def _names_every_address(path: Path) -> bool:
    """The API server certificate at path names every address and DNS name it must."""
    try:
        cert = x509.load_pem_x509_certificate(path.read_bytes())
        sans = cert.extensions.get_extension_for_class(x509.SubjectAlternativeName).value
    except (OSError, ValueError, x509.ExtensionNotFound):
        return False
    ips = {str(ip) for ip in sans.get_values_for_type(x509.IPAddress)}
    names = set(sans.get_values_for_type(x509.DNSName))
    return set(API_SERVER_IPS) <= ips and set(API_SERVER_DNS_NAMES) <= names


def ensure_certificates(directory: Path) -> ClusterCertificates:
    """Create every certificate the cluster needs, keeping the ones already there (an API server
    certificate that lacks an address it must name, e.g. the Service range's first IP after the
    range moved, is issued again by the same CA)."""
    directory.mkdir(parents=True, exist_ok=True)
    certs = ClusterCertificates(directory)
    if certs.ca_cert.exists() and all(certs.client_cert(who).exists() for who, _, _ in CLIENT_IDENTITIES):
        if not _names_every_address(certs.apiserver_cert):
            ca_key = serialization.load_pem_private_key(certs.ca_key.read_bytes(), password=None)
            assert isinstance(ca_key, ec.EllipticCurvePrivateKey)
            _issue_apiserver_cert(certs, ca_key, x509.load_pem_x509_certificate(certs.ca_cert.read_bytes()))
        return certs

    now = datetime.datetime.now(datetime.UTC)
    ca_key = _new_key()
    ca_name = _name("devcluster-ca")
    ca_cert = (
        x509.CertificateBuilder()
        .subject_name(ca_name)
        .issuer_name(ca_name)
        .public_key(ca_key.public_key())
        .serial_number(x509.random_serial_number())
        .not_valid_before(now - datetime.timedelta(minutes=5))
        .not_valid_after(now + VALIDITY)
        .add_extension(x509.BasicConstraints(ca=True, path_length=None), critical=True)
        .add_extension(
            x509.KeyUsage(
                digital_signature=True,
                key_encipherment=False,
                content_commitment=False,
                data_encipherment=False,
                key_agreement=False,
                key_cert_sign=True,
                crl_sign=True,
                encipher_only=False,
                decipher_only=False,
            ),
            critical=True,
        )
        .sign(ca_key, hashes.SHA256())
    )
    _write_key(ca_key, certs.ca_key)
    _write_cert(ca_cert, certs.ca_cert)

    _issue_apiserver_cert(certs, ca_key, ca_cert)

    for who, common_name, organization in CLIENT_IDENTITIES:
        key = _new_key()
        cert = _issue(
            _name(common_name, organization), key.public_key(), ca_cert, ca_key, ExtendedKeyUsageOID.CLIENT_AUTH
        )
        _write_key(key, certs.client_key(who))
        _write_cert(cert, certs.client_cert(who))

    # Service-account tokens are signed with RSA (RS256), the algorithm every client expects.
    sa_key = rsa.generate_private_key(public_exponent=65537, key_size=2048)
    _write_key(sa_key, certs.service_account_key)
    certs.service_account_public_key.write_bytes(
        sa_key.public_key().public_bytes(serialization.Encoding.PEM, serialization.PublicFormat.SubjectPublicKeyInfo)
    )
    return certs


def ensure_client_certificate(directory: Path, who: str, common_name: str, organization: str | None) -> Path:
    """A client certificate from the cluster's CA for an identity outside CLIENT_IDENTITIES (the
    real node's kubelet, kube-proxy), kept if it exists; returns the certificate's path."""
    certs = ClusterCertificates(directory)
    if certs.client_cert(who).exists() and certs.client_key(who).exists():
        return certs.client_cert(who)
    ca_cert = x509.load_pem_x509_certificate(certs.ca_cert.read_bytes())
    ca_key = serialization.load_pem_private_key(certs.ca_key.read_bytes(), password=None)
    assert isinstance(ca_key, ec.EllipticCurvePrivateKey)
    key = _new_key()
    cert = _issue(_name(common_name, organization), key.public_key(), ca_cert, ca_key, ExtendedKeyUsageOID.CLIENT_AUTH)
    _write_key(key, certs.client_key(who))
    _write_cert(cert, certs.client_cert(who))
    return certs.client_cert(who)
