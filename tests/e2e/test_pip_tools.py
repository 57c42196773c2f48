"""End to end: `pip-compile --generate-hashes` (pip-tools) against `pyproxy serve` pulling
through a fake upstream.

pip-tools does not trust the hashes on the Simple API's pages: for each pinned release it asks
the legacy JSON API beside the index URL (`<index root>/<name>/json` for `--index-url
http://HOST/simple/`) and downloads, to hash it, every file of the release that the answer
does not list. So pyproxy must answer there, or one compile pulls every wheel of every platform
of every pinned release through the cache.
"""

from __future__ import annotations

import hashlib
import re
import sys
import uuid
from datetime import UTC, datetime
from pathlib import Path

from tests.dists import make_sdist, make_wheel
from tests.e2e.clients import run
from tests.e2e.test_pull_through import start_proxy, wheel_metadata
from tests.fake_upstream import FakeUpstream

RUN = uuid.uuid4().hex[:6]
PLATFORMS = (
    ("cp311", "cp311", "manylinux_2_17_x86_64"),
    ("cp312", "cp312", "win_amd64"),
    ("cp311", "cp311", "macosx_11_0_arm64"),
)


def publish_release(fake: FakeUpstream, tmp_path: Path, name: str, version: str,
                    requires: tuple[str, ...] = ()) -> dict[str, str]:
    """A pure wheel, three platform wheels and an sdist of one release; filename -> sha256."""
    out = tmp_path / "dists" / f"{name}-{version}"
    paths = [make_wheel(out, name, version, requires_dist=requires)]
    paths += [
        make_wheel(out, name, version, requires_dist=requires, python_tag=py, abi_tag=abi,
                   platform_tag=platform)
        for py, abi, platform in PLATFORMS
    ]
    paths.append(make_sdist(out, name, version, requires_dist=requires))
    when = datetime(2025, 1, 1, tzinfo=UTC)
    hashes = {}
    for path in paths:
        body = path.read_bytes()
        metadata = wheel_metadata(path) if path.suffix == ".whl" else None
        fake.add_file(name, path.name, body, metadata=metadata, upload_time=when)
        hashes[path.name] = hashlib.sha256(body).hexdigest()
    return hashes


def test_pip_compile_generate_hashes_reads_them_from_the_json_api(
    pyproxy_factory, fake_factory, tmp_path: Path
) -> None:
    fake = fake_factory()
    top, dep = f"ptools-top-{RUN}", f"ptools-dep-{RUN}"
    expected = {
        top: publish_release(fake, tmp_path, top, "1.0", (f"{dep}>=2",)),
        dep: publish_release(fake, tmp_path, dep, "2.1"),
    }
    publish_release(fake, tmp_path, dep, "1.0")  # an older release: never pinned, never hashed
    server = start_proxy(pyproxy_factory, fake, tmp_path)
    work = tmp_path / "compile"
    work.mkdir()
    (work / "requirements.in").write_text(f"{top.replace('-', '_').upper()}\n")

    run([
        sys.executable, "-m", "piptools", "compile", "--generate-hashes", "--quiet",
        "--index-url", server.simple_url, "--cache-dir", str(tmp_path / "pip-tools-cache"),
        "--pip-args", "--no-cache-dir --isolated", "--no-emit-index-url",
        "--output-file", "requirements.txt", "requirements.in",
    ], cwd=work, timeout=300)

    # every file of each pinned release, with its sha256, and nothing else
    text = (work / "requirements.txt").read_text()
    pins = dict(re.findall(r"^(\S+)==(\S+) \\$", text, re.MULTILINE))
    assert pins == {top: "1.0", dep: "2.1"}, text
    hashes = re.findall(r"--hash=sha256:([0-9a-f]{64})", text)
    assert sorted(hashes) == sorted(h for files in expected.values() for h in files.values())

    # no file body was downloaded to hash it (pip read the .metadata files to resolve)
    bodies = [
        path for method, path in fake.requests
        if method == "GET" and path.startswith("/files/") and not path.endswith(".metadata")
    ]
    assert bodies == [], bodies
    assert server.requests("GET", r"^/files/.*(?<!\.metadata)$") == 0
    # the hashes came from the JSON API, once per pinned project, at first try: where pip-tools
    # 7.7 asks (/pypi/<project>/json), 7.6 (/<project>/json) or earlier (/simple/pypi/...)
    json_api = r"^/(?:pypi/|simple/pypi/)?[^/]+/json$"
    assert server.requests("GET", json_api, status=200) == 2, server.stderr_text()
    assert server.requests("GET", r"json", status=404) == 0
    total = server.requests()
    assert total is not None and total < 25, server.stderr_text()  # a handful, not hundreds
