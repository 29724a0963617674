"""A `certificates` provider for the simulation, and what each node's TLS files say.

The provider behaves as self-signed-certificates does (its charm's `_generate_certificate`
signs with the CSR's subject and copies the CSR's extensions, adding none): every CSR a
unit puts in its relation databag gets a certificate in the provider's app databag, in the
tls-certificates v1 shape (`certificates`: a JSON list of {certificate_signing_request,
certificate, ca, chain}). Rotating its CA re-signs every request, as that charm does when
its CA changes. It can also behave as a public CA would, dropping clientAuth.

`node_tls_files` reads a unit's certificate, key and trusted-roots directory off its
volume, for the cluster model's rule 12.
"""

from __future__ import annotations

import json
import pathlib
from collections.abc import Iterable, Mapping

from cryptography import x509
from issuing_ca import IssuingCA, sign_request

import tls
from sim.kurrentdb_cluster import NodeTlsFiles
from workload import paths

RELATION_ID = 3
APP = "self-signed-certificates"


class SimCertificatesProvider:
    """Signs what the units ask for, with its current CA."""

    def __init__(self, ca: IssuingCA, *, drop_client_auth: bool = False):
        self.ca = ca
        self.drop_client_auth = drop_client_auth
        self.roots: list[str] = [ca.root_pem]  # every root it ever signed with
        self._signed: dict[str, str] = {}  # CSR PEM: certificate PEM

    def rotate(self, ca: IssuingCA) -> None:
        """A new CA: every certificate is issued again from it."""
        self.ca = ca
        self.roots.append(ca.root_pem)
        self._signed.clear()

    def answer(self, unit_databags: Iterable[Mapping[str, str]]) -> dict[str, str]:
        """The provider's app databag for these requirer unit databags."""
        issued = []
        for databag in unit_databags:
            try:
                requests = json.loads(databag.get("certificate_signing_requests") or "[]")
            except ValueError:
                continue
            for request in requests:
                csr = request.get("certificate_signing_request")
                if not isinstance(csr, str):
                    continue
                if csr not in self._signed:
                    self._signed[csr] = sign_request(
                        self.ca, csr, drop_client_auth=self.drop_client_auth
                    )
                issued.append(
                    {
                        "certificate_signing_request": csr,
                        "certificate": self._signed[csr],
                        "ca": self.ca.ca_pem,
                        "chain": self.ca.chain,
                    }
                )
        return {"certificates": json.dumps(issued)} if issued else {}


def node_tls_files(etc: pathlib.Path, known_roots: Iterable[str]) -> NodeTlsFiles | None:
    """What the node reads at start or reload: None before the charm pushed its files."""
    certs = etc / pathlib.Path(paths.CERTS_DIR).relative_to("/etc")
    certificate_file, key_file = certs / "node.crt", certs / "node.key"
    if not certificate_file.exists() or not key_file.exists():
        return None
    certificate = certificate_file.read_text()
    chain = x509.load_pem_x509_certificates(certificate.encode())
    by_subject = {
        x509.load_pem_x509_certificate(pem.encode()).subject: tls.fingerprint(pem)
        for pem in known_roots
    }
    presents = by_subject.get(chain[-1].issuer, "unknown root")
    roots_dir = certs / "ca"
    trusts = frozenset(
        tls.fingerprint(f.read_text()) for f in roots_dir.iterdir() if f.is_file()
    ) if roots_dir.exists() else frozenset()  # fmt: skip
    return NodeTlsFiles(certificate, key_file.read_text(), presents, trusts)
