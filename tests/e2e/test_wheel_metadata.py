"""End to end: real pip and uv against pyproxy over an upstream that offers no `.metadata`
(repository/wheel_metadata.py makes it), with upstream doing ranges or not, and with wheels whose
METADATA cannot be had."""

from __future__ import annotations

import random
from collections import Counter

import pytest

from tests.dists import make_wheel, underscored
from tests.e2e.clients import file_entries, installed, output, pip_install, uv_pip_install
from tests.e2e.test_pull_through import expected_tree, pname, publish_tree, start_proxy
from tests.fake_upstream import FakeUpstream

INSTALL = {"pip": pip_install, "uv": uv_pip_install}


def full_downloads(fake: FakeUpstream) -> Counter:
    """Wheel paths upstream was asked for without a Range header."""
    ranged = Counter(path for path, _wanted in fake.ranged)
    asked = Counter(path for method, path in fake.requests if method == "GET" and path.endswith(".whl"))
    return asked - ranged


@pytest.mark.parametrize("ranges", [True, False], ids=["ranges", "no-ranges"])
@pytest.mark.parametrize("client", ["pip", "uv"])
def test_install_from_an_upstream_without_metadata(fake_factory, pyproxy_factory, tmp_path, client, ranges):
    fake = fake_factory("json")
    fake.offer_metadata, fake.serve_ranges = False, ranges
    tree = publish_tree(fake, tmp_path / "dists")
    server = start_proxy(pyproxy_factory, fake, tmp_path)
    fake.reset_counters()

    proc = INSTALL[client](server.simple_url, tree.app, target=tmp_path / "t")
    assert installed(tmp_path / "t") == expected_tree(tree), output(proc)
    # every candidate's metadata came from pyproxy's .metadata, none from a wheel
    assert server.requests("GET", r"\.whl\.metadata$", 200) >= 3, server.stderr_text()[-3000:]
    assert server.requests("HEAD", r"\.whl$") == 0  # uv probes for ranges only without .metadata
    assert server.requests("GET", r"\.whl$", 206) == 0  # and reads no range of a wheel
    downloads = full_downloads(fake)
    assert all(count == 1 for count in downloads.values()), downloads  # one download per file
    wanted = {f"{underscored(n)}-{v}-py3-none-any.whl" for n, v in
              ((tree.app, "1.0"), (tree.lib, "1.1"), (tree.base, "1.0"))}
    if ranges:  # nothing downloaded that was not installed: the candidates were read in ranges
        assert {path.rsplit("/", 1)[1] for path in downloads} == wanted, downloads
        assert all(len(fake.ranges_of(path)) <= 2 for path, _ in fake.ranged)

    # warm: the same from the cache, upstream not asked for a file
    fake.reset_counters()
    proc = INSTALL[client](server.simple_url, tree.app, target=tmp_path / "warm")
    assert installed(tmp_path / "warm") == expected_tree(tree), output(proc)
    assert not [path for _method, path in fake.requests if path.startswith("/files/")], fake.requests


@pytest.mark.parametrize("client", ["pip", "uv"])
def test_ranges_failing_upstream(fake_factory, pyproxy_factory, tmp_path, client):
    fake = fake_factory("json")
    fake.offer_metadata, fake.serve_ranges, fake.range_status = False, True, 500
    tree = publish_tree(fake, tmp_path / "dists")
    server = start_proxy(pyproxy_factory, fake, tmp_path)
    proc = INSTALL[client](server.simple_url, tree.app, target=tmp_path / "t")
    assert installed(tmp_path / "t") == expected_tree(tree), output(proc)
    assert all(count == 1 for count in full_downloads(fake).values()), fake.requests


@pytest.mark.parametrize("kind", ["no METADATA", "corrupt zip"])
@pytest.mark.parametrize("client", ["pip", "uv"])
def test_a_newest_wheel_without_usable_metadata(fake_factory, pyproxy_factory, tmp_path, client, kind):
    """uv skips such a version (reading the wheel itself from upstream, it skips one without
    METADATA and stops at a damaged zip); pip stops, as it does with the wheel itself. Never an
    HTTP error from pyproxy, on the first try or later."""
    fake = fake_factory("json")
    fake.offer_metadata, fake.serve_ranges = False, True
    project = pname(f"broken-{client}")
    good = make_wheel(tmp_path / "d", project, "1.0")
    if kind == "no METADATA":
        bad = make_wheel(tmp_path / "d", project, "2.0", omit=("METADATA",)).read_bytes()
    else:
        bad = random.Random(9).randbytes(100_000)
    fake.add_file(project, good.name, good.read_bytes())
    fake.add_file(project, f"{underscored(project)}-2.0-py3-none-any.whl", bad)
    server = start_proxy(pyproxy_factory, fake, tmp_path)
    for attempt in ("first", "known"):
        target = tmp_path / attempt
        proc = INSTALL[client](server.simple_url, project, target=target, check=False)
        text = output(proc)
        assert "HTTP error" not in text and "status client error" not in text, (attempt, text)
        if client == "uv":
            assert proc.returncode == 0, (attempt, text)
            assert installed(target) == {underscored(project): "1.0"}, (attempt, text)
        else:
            assert proc.returncode != 0, (attempt, text)
            if kind == "no METADATA":
                assert "Bad metadata" in text or "invalid" in text.lower(), (attempt, text)
    assert server.requests(status=404) == 0 and server.requests(status=503) == 0


@pytest.mark.parametrize("fault", ["404", "wrong body"])
@pytest.mark.parametrize("client", ["pip", "uv"])
def test_an_upstream_metadata_that_is_missing_or_wrong_is_made_from_the_wheel(
    fake_factory, pyproxy_factory, tmp_path, client, fault
):
    """An index that offers `.metadata` (with its hash) and then has none (404: a proxy in
    front of another, pulp_python#1083), or sends other bytes: the file is the wheel's METADATA
    (PEP 658), so pyproxy makes it from the wheel, checked against the listed hash, and pip
    and uv install; once upstream's failed, it is not asked for again."""
    fake = fake_factory("json")
    tree = publish_tree(fake, tmp_path / "dists")
    server = start_proxy(pyproxy_factory, fake, tmp_path)
    wheels = [(project, name) for name in tree.wheels for project in (tree.app, tree.lib, tree.base)
              if name.startswith(underscored(project) + "-")]
    for project in (tree.app, tree.lib, tree.base):
        file_entries(server.simple_url, project)  # pyproxy holds the pages: the listed hashes
    for project, name in wheels:
        if fault == "404":
            fake.fail_paths[fake.file_path(project, name) + ".metadata"] = 404
        else:
            fake.file(project, name).metadata += b"Requires-Dist: evil-dep\n"
    fake.reset_counters()
    proc = INSTALL[client](server.simple_url, tree.app, target=tmp_path / "t")
    assert installed(tmp_path / "t") == expected_tree(tree), output(proc)
    asked = Counter(path for _method, path in fake.requests if path.endswith(".metadata"))
    # the warm-up's request and the client's may both ask before either has failed
    assert asked and all(count <= 2 for count in asked.values()), asked
    fake.reset_counters()
    proc = INSTALL[client](server.simple_url, tree.app, target=tmp_path / "again")
    assert installed(tmp_path / "again") == expected_tree(tree), output(proc)
    assert not [path for _method, path in fake.requests if path.endswith(".metadata")], fake.requests
