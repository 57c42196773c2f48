"""End to end: several upstreams, driven by real pip, uv and twine.

Two fake upstreams in background threads: "public" behind `--upstream`, "gpu" behind one
`[[upstreams]]` route. The public index also has the routed name, at a higher version: the
torchtriton case, where an installer that merges indexes (pip) or falls through on a 404 (uv)
would take it. Every test asserts the public fake's counters: it is never asked for a routed
name, whatever the routed upstream answers.
"""

from __future__ import annotations

import hashlib
import json
import uuid
import zipfile
from pathlib import Path

import pytest

from tests.attestations import attest, provenance_of
from tests.dists import core_metadata, make_wheel, underscored
from tests.e2e.clients import (
    describe,
    file_entries,
    get,
    installed,
    output,
    pip_install,
    twine_upload,
    uv_pip_install,
)
from tests.fake_upstream import FakeUpstream

RUN = uuid.uuid4().hex[:6]
TORCH = f"rt-torch-{RUN}"  # routed by name
NV = f"rt-nv-cudnn-{RUN}"  # routed by the glob "rt-nv-*"
APP = f"rt-app-{RUN}"  # from the public index, needs TORCH


def publish(fake: FakeUpstream, wheel: Path, project: str) -> None:
    with zipfile.ZipFile(wheel) as archive:
        member = next(n for n in archive.namelist() if n.endswith(".dist-info/METADATA"))
        fake.add_file(project, wheel.name, wheel.read_bytes(), metadata=archive.read(member))


def start(pyproxy_factory, public: FakeUpstream, gpu: FakeUpstream, tmp_path: Path, **kwargs):
    config = tmp_path / f"routes-{uuid.uuid4().hex[:6]}.toml"
    config.write_text(
        "[[upstreams]]\n"
        'name = "gpu"\n'
        f'url = "{gpu.index_url}"\n'
        f'projects = ["{TORCH}", "rt-nv-*"]\n'
    )
    return pyproxy_factory.start(
        extra_args=["--upstream", public.index_url, "--config", str(config)], **kwargs
    )


@pytest.fixture
def indexes(fake_factory, tmp_path: Path) -> tuple[FakeUpstream, FakeUpstream]:
    public, gpu = fake_factory("json"), fake_factory("html")
    dists = tmp_path / "dists"
    publish(public, make_wheel(dists / "public", TORCH, "9.0"), TORCH)
    publish(public, make_wheel(dists / "public", NV, "9.0"), NV)
    publish(public, make_wheel(dists / "public", APP, "1.0", requires_dist=[TORCH, NV]), APP)
    publish(gpu, make_wheel(dists / "gpu", TORCH, "1.0"), TORCH)
    publish(gpu, make_wheel(dists / "gpu", NV, "1.0"), NV)
    return public, gpu


def routed_paths(public: FakeUpstream) -> list[str]:
    """What the public index was asked about the routed names."""
    stems = (TORCH, NV, underscored(TORCH), underscored(NV))
    return [path for _method, path in public.requests if any(stem in path for stem in stems)]


@pytest.mark.parametrize("client", ["pip", "uv"])
def test_routed_names_install_from_their_upstream(pyproxy_factory, indexes, tmp_path, client):
    public, gpu = indexes
    server = start(pyproxy_factory, public, gpu, tmp_path)
    install = pip_install if client == "pip" else uv_pip_install
    target = tmp_path / client
    proc = install(server.simple_url, APP, target=target)
    expected = {underscored(APP): "1.0", underscored(TORCH): "1.0", underscored(NV): "1.0"}
    assert installed(target) == expected, describe(proc)
    assert routed_paths(public) == [], public.requests
    assert gpu.count(gpu.page_path(TORCH)) == 1 and gpu.count(gpu.page_path(APP)) == 0
    # the pages say which upstream serves which name
    assert f"gpu ({gpu.index_url})" in get(f"{server.url}/project/{TORCH}/").body
    assert public.index_url in get(f"{server.url}/project/{APP}/").body


@pytest.mark.parametrize("client", ["pip", "uv"])
@pytest.mark.parametrize("failure", [404, 500])
def test_a_routed_upstream_without_the_name_never_falls_through(
    pyproxy_factory, indexes, tmp_path, client, failure
):
    public, gpu = indexes
    gpu.fail_paths[gpu.page_path(TORCH)] = failure
    server = start(pyproxy_factory, public, gpu, tmp_path)
    install = pip_install if client == "pip" else uv_pip_install
    target = tmp_path / client
    retries = ["--retries", "0"] if client == "pip" else []
    proc = install(server.simple_url, TORCH, target=target, check=False, extra_args=retries)
    assert proc.returncode != 0, f"{client} installed a routed name from elsewhere:{describe(proc)}"
    assert not installed(target)
    assert TORCH in output(proc) or underscored(TORCH) in output(proc), describe(proc)
    expected = 404 if failure == 404 else 503
    assert get(f"{server.simple_url}{TORCH}/").status == expected
    assert gpu.count(gpu.page_path(TORCH)) >= 1
    assert routed_paths(public) == [], public.requests


def test_a_private_name_a_route_claims_wins_and_is_never_asked(
    pyproxy_factory, indexes, tmp_path
):
    public, gpu = indexes
    private = f"rt-nv-private-{RUN}"
    publish(gpu, make_wheel(tmp_path / "gpu", private, "5.0"), private)
    publish(public, make_wheel(tmp_path / "public", private, "6.0"), private)
    server = start(pyproxy_factory, public, gpu, tmp_path, admin=True)
    wheel = make_wheel(tmp_path / "private", private, "1.0")
    twine_upload(server.upload_url, [wheel], server.user, server.password)
    public.reset_counters()
    gpu.reset_counters()
    for client, install in (("pip", pip_install), ("uv", uv_pip_install)):
        target = tmp_path / client
        proc = install(server.simple_url, private, target=target)
        assert installed(target) == {underscored(private): "1.0"}, describe(proc)
    assert gpu.total == 0, gpu.requests
    assert public.total == 0, public.requests


@pytest.mark.parametrize("public_metadata", ["made", "unhashed"])
def test_a_route_cannot_give_another_upstream_s_file_its_metadata_or_provenance(
    pyproxy_factory, fake_factory, tmp_path, public_metadata
):
    """The routed index lists a file of the same sha256 as one of the public index (under a
    name of its own project), with a `.metadata` and a provenance object of its own and no hash
    for either.
    Asked for first, they stay the routed name's: the public file's `.metadata` is still its
    wheel's METADATA (made by pyproxy, or its index's), its provenance its index's, and uv
    installs it without the dependency the routed `.metadata` names."""
    public, gpu = fake_factory("json"), fake_factory("json")
    victim, evil = f"rt-victim-{RUN}-{public_metadata}", f"rt-evil-{RUN}-{public_metadata}"
    wheel = make_wheel(tmp_path / "dists", victim, "1.0")
    body, sha256 = wheel.read_bytes(), hashlib.sha256(wheel.read_bytes()).hexdigest()
    with zipfile.ZipFile(wheel) as archive:
        genuine = archive.read(next(n for n in archive.namelist() if n.endswith(".dist-info/METADATA")))
    attestation = attest(wheel.name, sha256)
    public.offer_metadata = public_metadata == "unhashed"
    public.add_file(victim, wheel.name, body, metadata=genuine, listed_metadata_hash=False,
                    provenance=provenance_of(attestation))
    publish(public, make_wheel(tmp_path / "dists", evil, "6.6.6"), evil)
    routed_name = f"{underscored(TORCH)}-1.0-py3-none-any.whl"
    forged = core_metadata(TORCH, "1.0", requires_dist=[evil])
    forged_attestation = attest(routed_name, sha256, predicate_type="https://forged.test/v1")
    gpu.add_file(TORCH, routed_name, body, metadata=forged, listed_metadata_hash=False,
                 provenance=provenance_of(forged_attestation))
    server = start(pyproxy_factory, public, gpu, tmp_path)

    routed = file_entries(server.simple_url, TORCH)[routed_name]
    assert routed["hashes"] == {"sha256": sha256} and routed["core-metadata"] is True
    assert get(routed["url"] + ".metadata").content == forged
    assert attestations_at(routed["provenance"]) == [json.loads(forged_attestation.model_dump_json())]

    entry = file_entries(server.simple_url, victim)[wheel.name]
    assert get(entry["url"] + ".metadata").content == genuine
    assert attestations_at(entry["provenance"]) == [json.loads(attestation.model_dump_json())]
    target = tmp_path / "uv"
    proc = uv_pip_install(server.simple_url, f"{victim}==1.0", target=target)
    assert installed(target) == {underscored(victim): "1.0"}, describe(proc)


def attestations_at(url: str) -> list[dict]:
    response = get(url, accept="application/vnd.pypi.integrity.v1+json")
    assert response.status == 200, str(response)
    (bundle,) = json.loads(response.body)["attestation_bundles"]
    return bundle["attestations"]
