"""PEP 740 attestations and provenance objects for tests, built with the pypi-attestations
library and no network: the signing certificate is self-made (no Sigstore, no transparency
log), which is all pyproxy checks and passes on (the shape, and the subject's name and digest).
"""

from __future__ import annotations

import base64
import datetime
import hashlib
import json
from pathlib import Path
from typing import Any

from cryptography import x509
from cryptography.hazmat.primitives import hashes, serialization
from cryptography.hazmat.primitives.asymmetric import ec
from cryptography.x509.oid import NameOID
from pypi_attestations import Attestation, AttestationType, Envelope, VerificationMaterial

__all__ = ["attest", "attestation_file", "provenance_of"]

_PAYLOAD_TYPE = b"application/vnd.in-toto+json"
_KEY = ec.generate_private_key(ec.SECP256R1())


def _certificate() -> bytes:
    name = x509.Name([x509.NameAttribute(NameOID.COMMON_NAME, "pyproxy test signer")])
    now = datetime.datetime.now(datetime.UTC)
    certificate = (
        x509.CertificateBuilder()
        .subject_name(name)
        .issuer_name(name)
        .public_key(_KEY.public_key())
        .serial_number(x509.random_serial_number())
        .not_valid_before(now)
        .not_valid_after(now + datetime.timedelta(minutes=10))
        .sign(_KEY, hashes.SHA256())
    )
    return certificate.public_bytes(serialization.Encoding.DER)


def attest(
    filename: str, sha256: str, *, predicate_type: str = AttestationType.PYPI_PUBLISH_V1.value
) -> Attestation:
    """An attestation whose in-toto statement names `filename` and `sha256`, signed (DSSE)
    with a throwaway key."""
    statement = json.dumps({
        "_type": "https://in-toto.io/Statement/v1",
        "subject": [{"name": filename, "digest": {"sha256": sha256}}],
        "predicateType": predicate_type,
        "predicate": None,
    }).encode()
    signed = b"DSSEv1 %d %b %d %b" % (len(_PAYLOAD_TYPE), _PAYLOAD_TYPE, len(statement), statement)
    signature = _KEY.sign(signed, ec.ECDSA(hashes.SHA256()))
    return Attestation(
        version=1,
        verification_material=VerificationMaterial(
            certificate=base64.b64encode(_certificate()),
            transparency_entries=[{"logIndex": "1", "kindVersion": {"kind": "dsse"}}],
        ),
        envelope=Envelope(
            statement=base64.b64encode(statement), signature=base64.b64encode(signature)
        ),
    )


def attestation_file(dist: Path, **kwargs: Any) -> Path:
    """`<dist>.publish.attestation` beside the file, as `twine upload --attestations` and
    `uv publish` look for them."""
    sha256 = hashlib.sha256(dist.read_bytes()).hexdigest()
    path = dist.with_name(dist.name + ".publish.attestation")
    path.write_text(attest(dist.name, sha256, **kwargs).model_dump_json())
    return path


def provenance_of(*attestations: Attestation) -> bytes:
    """A PEP 740 provenance object holding the attestations in one bundle."""
    return json.dumps({
        "version": 1,
        "attestation_bundles": [{
            "publisher": {"kind": "GitHub", "repository": "acme/tools", "workflow": "release.yml"},
            "attestations": [json.loads(a.model_dump_json()) for a in attestations],
        }],
    }).encode()
