"""pyproxy.publish.attestations: the `attestations` upload field (PEP 740) checked against the
uploaded file and made into its provenance object. Attestations are built with the
pypi-attestations library (tests/attestations.py), offline."""

from __future__ import annotations

import base64
import hashlib
import json
from typing import Any

import orjson
import pytest
from pypi_attestations import Attestation, AttestationType

from pyproxy.publish.attestations import PUBLISHER, provenance_for
from pyproxy.publish.rejections import UploadRejected
from tests.attestations import attest

WHEEL = "demo-1.0-py3-none-any.whl"
SHA = hashlib.sha256(b"the wheel").hexdigest()


def field(*attestations: Attestation | dict[str, Any]) -> list[str]:
    items = [a if isinstance(a, dict) else json.loads(a.model_dump_json()) for a in attestations]
    return [json.dumps(items)]


def refused(values: list[str], filename: str = WHEEL, sha256: str = SHA) -> str:
    with pytest.raises(UploadRejected) as caught:
        provenance_for(values, filename, sha256)
    assert caught.value.status == 400
    message = caught.value.message
    assert message.startswith("Invalid attestations supplied during upload: ")
    return message


def test_no_field_no_provenance() -> None:
    assert provenance_for([], WHEEL, SHA) is None


def test_attestations_of_the_file_become_its_provenance_object() -> None:
    publish = attest(WHEEL, SHA)
    slsa = attest(WHEEL, SHA, predicate_type=AttestationType.SLSA_PROVENANCE_V1.value)
    provenance = provenance_for(field(publish, slsa), WHEEL, SHA.upper())
    assert provenance is not None
    document = orjson.loads(provenance)
    assert document["version"] == 1
    (bundle,) = document["attestation_bundles"]
    assert bundle["publisher"] == PUBLISHER
    served = [Attestation.model_validate(item) for item in bundle["attestations"]]
    assert served == [publish, slsa]  # as uploaded


@pytest.mark.parametrize(
    "subject",
    ["demo-1.0-py3-none-any.whl", "Demo-1.0-py3-none-any.whl", "demo-1.0.0-py3-none-any.whl"],
)
def test_the_subject_may_spell_the_filename_otherwise(subject: str) -> None:
    # compared as pypi-attestations compares them: parsed name, version, tags
    assert provenance_for(field(attest(subject, SHA)), WHEEL, SHA) is not None


def _tampered(**changes: Any) -> dict[str, Any]:
    item: dict[str, Any] = json.loads(attest(WHEEL, SHA).model_dump_json())
    for path, value in changes.items():
        target = item
        *parents, last = path.split("__")
        for key in parents:
            target = target[key]
        if value is None:
            del target[last]
        else:
            target[last] = value
    return item


def _statement(**fields: Any) -> str:
    statement = {
        "_type": "https://in-toto.io/Statement/v1",
        "subject": [{"name": WHEEL, "digest": {"sha256": SHA}}],
        "predicateType": AttestationType.PYPI_PUBLISH_V1.value,
        "predicate": None,
        **fields,
    }
    return base64.b64encode(json.dumps(statement).encode()).decode()


@pytest.mark.parametrize(
    ("values", "why"),
    [
        (["not json"], "not JSON"),
        (["{}"], "expected a non-empty JSON list"),
        (["[]"], "expected a non-empty JSON list"),
        (['["x"]'], "attestation 0 is not an object"),
        (field(attest(WHEEL, SHA)) * 2, "sent more than once"),
        (field(_tampered(version=2)), "version is not 1"),
        (field(_tampered(verification_material=None)), "verification_material is not an object"),
        (field(_tampered(verification_material__certificate="%%%")), "certificate is not valid"),
        (field(_tampered(verification_material__transparency_entries=[])), "transparency_entries"),
        (field(_tampered(envelope__signature="")), "the signature is not a base64 string"),
        (field(_tampered(envelope__statement=base64.b64encode(b"[1").decode())),
         "the statement is not JSON"),
        (field(_tampered(envelope__statement=_statement(_type="other"))), "not an in-toto v1"),
        (field(_tampered(envelope__statement=_statement(subject=[]))), "exactly one subject"),
        (field(_tampered(envelope__statement=_statement(predicateType="publish/v1"))),
         "attestation type 'publish/v1' is not an https URI"),
        (field(_tampered(envelope__statement=_statement(predicateType=7))),
         "attestation type 7 is not an https URI"),
        (field(attest("other-1.0-py3-none-any.whl", SHA)), "is not the uploaded file"),
        (field(attest("demo-2.0-py3-none-any.whl", SHA)), "is not the uploaded file"),
        (field(attest(WHEEL, "00" * 32)), "sha256 is not the uploaded file's"),
        (field(attest(WHEEL, SHA), attest(WHEEL, SHA)), "more than one attestation of type"),
    ],
)
def test_malformed_or_foreign_attestations_are_refused(values: list[str], why: str) -> None:
    message = refused(values)
    assert why in message, message
    assert "\n" not in message
