"""End to end: PEP 740 attestations uploaded with real twine (`--attestations`) and uv
(`uv publish`, which sends the attestation files given with the dists), served back by
pyproxy as the file's provenance object, and an upstream file's provenance passed through.

The attestations are built with the pypi-attestations library, offline (tests/attestations.py).
"""

from __future__ import annotations

import hashlib
import json
import uuid
from pathlib import Path

import pytest
from pypi_attestations import Attestation

from tests.attestations import attest, attestation_file, provenance_of
from tests.dists import make_wheel, underscored
from tests.e2e.clients import (
    SIMPLE_JSON,
    describe,
    file_entries,
    get,
    installed,
    pip_install,
    twine_upload,
    uv_publish,
)

RUN = uuid.uuid4().hex[:6]
INTEGRITY = "application/vnd.pypi.integrity.v1+json"


def served_attestations(url: str) -> list[Attestation]:
    response = get(url, accept=INTEGRITY)
    assert response.status == 200, str(response)
    assert response.headers["content-type"].split(";")[0] == INTEGRITY
    document = json.loads(response.body)
    assert document["version"] == 1
    (bundle,) = document["attestation_bundles"]
    return [Attestation.model_validate(item) for item in bundle["attestations"]]


@pytest.mark.parametrize("client", ["twine", "uv"])
def test_an_attested_upload_is_served_back(pyproxy_factory, tmp_path: Path, client: str) -> None:
    server = pyproxy_factory.start()
    project = f"attested-{client}-{RUN}"
    wheel = make_wheel(tmp_path / "dists", project, "1.0")
    attestation = attestation_file(wheel)
    # both take the attestation files from the command line, beside the dists
    if client == "twine":
        twine_upload(server.upload_url, [wheel, attestation], server.user, server.password,
                     extra_args=["--attestations"])
    else:
        uv_publish(server.upload_url, [wheel, attestation], server.user, server.password)
    entry = file_entries(server.simple_url, project)[wheel.name]
    assert entry["provenance"] == (
        f"{server.url}/integrity/{project}/1.0/{wheel.name}/provenance"
    )
    expected = Attestation.model_validate_json(attestation.read_text())
    assert served_attestations(entry["provenance"]) == [expected]
    # the file itself still installs as any other
    target = tmp_path / "pip"
    proc = pip_install(server.simple_url, project, target=target)
    assert installed(target) == {underscored(project): "1.0"}, describe(proc)


def test_an_attestation_of_other_bytes_is_refused(pyproxy_factory, tmp_path: Path) -> None:
    server = pyproxy_factory.start()
    project = f"forged-{RUN}"
    wheel = make_wheel(tmp_path / "dists", project, "1.0")
    forged = attest(wheel.name, hashlib.sha256(b"other bytes").hexdigest())
    forgery = wheel.with_name(wheel.name + ".publish.attestation")
    forgery.write_text(forged.model_dump_json())
    proc = twine_upload(server.upload_url, [wheel, forgery], server.user, server.password,
                        extra_args=["--attestations"], check=False)
    assert proc.returncode != 0, describe(proc)
    assert "Invalid attestations supplied during upload" in proc.stdout + proc.stderr
    assert get(f"{server.simple_url}{project}/", accept=SIMPLE_JSON).status == 404


def test_upstream_provenance_is_passed_through(fake_factory, pyproxy_factory, tmp_path) -> None:
    fake = fake_factory("html")
    project = f"upstream-attested-{RUN}"
    wheel = make_wheel(tmp_path / "dists", project, "1.0")
    body = wheel.read_bytes()
    attestation = attest(wheel.name, hashlib.sha256(body).hexdigest())
    fake.add_file(project, wheel.name, body, provenance=provenance_of(attestation))
    server = pyproxy_factory.start(extra_args=["--upstream", fake.index_url])
    entry = file_entries(server.simple_url, project)[wheel.name]
    assert entry["provenance"].startswith(server.url + "/integrity/")
    assert served_attestations(entry["provenance"]) == [attestation]
    assert served_attestations(entry["provenance"]) == [attestation]
    assert fake.count(fake.file_path(project, wheel.name) + ".provenance") == 1
