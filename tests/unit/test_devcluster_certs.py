"""The dev cluster's certificates (devcluster/certs.py)."""

from __future__ import annotations

from pathlib import Path

import pytest
from cryptography import x509

from devcluster import certs


def names(path: Path) -> set[str]:
    sans = x509.load_pem_x509_certificate(path.read_bytes()).extensions.get_extension_for_class(
        x509.SubjectAlternativeName
    )
    return {str(ip) for ip in sans.value.get_values_for_type(x509.IPAddress)}


def test_an_api_server_certificate_missing_an_address_is_issued_again_by_the_same_ca(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    # A state directory from before the Service range moved: its certificate names 10.96.0.1 only.
    monkeypatch.setattr(certs, "API_SERVER_IPS", ("127.0.0.1", "10.96.0.1"))
    first = certs.ensure_certificates(tmp_path)
    ca, admin = first.ca_cert.read_bytes(), first.client_cert("admin").read_bytes()
    assert "198.19.0.1" not in names(first.apiserver_cert)
    monkeypatch.undo()
    again = certs.ensure_certificates(tmp_path)
    assert {"127.0.0.1", "198.19.0.1", "10.96.0.1"} <= names(again.apiserver_cert)
    assert again.ca_cert.read_bytes() == ca and again.client_cert("admin").read_bytes() == admin  # kept
    issued = again.apiserver_cert.read_bytes()
    certs.ensure_certificates(tmp_path)
    assert again.apiserver_cert.read_bytes() == issued  # complete: left alone
