"""End to end: `pyproxy prefetch` warming a pyproxy subprocess that pulls from a fake upstream,
then real pip and uv installing from what it cached, with upstream gone.

One fake upstream and one pyproxy serve the whole module (project names carry a per-test stem
and a per-run suffix, so the upstream's request counters tell each test's files apart); the
offline test has its own pair, since it stops both.
"""

from __future__ import annotations

import hashlib
import re
import socket
import subprocess
import uuid
import zipfile
from datetime import UTC, datetime
from pathlib import Path

import pytest

from tests.dists import make_sdist, make_wheel, underscored
from tests.e2e.clients import describe, get, installed, pip_install, run, uv_pip_install
from tests.e2e.conftest import FakeFactory, PyproxyServer, ServerFactory, pyproxy_command
from tests.fake_upstream import FakeUpstream

RUN = uuid.uuid4().hex[:6]
SUMMARY = re.compile(r"(\d+) file\(s\) fetched \(([^)]*)\), (\d+) already cached, (\d+) failed")
MAC = "macosx_11_0_arm64"
LINUX = "manylinux_2_17_x86_64"


def pname(stem: str) -> str:
    return f"pf-{stem}-{RUN}"


def publish(fake: FakeUpstream, path: Path, project: str) -> Path:
    metadata = None
    if path.name.endswith(".whl"):
        with zipfile.ZipFile(path) as archive:
            member = next(n for n in archive.namelist() if n.endswith(".dist-info/METADATA"))
            metadata = archive.read(member)
    fake.add_file(project, path.name, path.read_bytes(), metadata=metadata,
                  upload_time=datetime(2025, 1, 1, tzinfo=UTC))
    return path


def native_wheel(directory: Path, project: str, version: str, python: str, platform: str,
                 requires: list[str] | None = None) -> Path:
    return make_wheel(directory, project, version, python_tag=python, abi_tag=python,
                      platform_tag=platform, requires_dist=requires or [])


def prefetch(url: str, *args: str, cwd: Path) -> subprocess.CompletedProcess:
    return run([*pyproxy_command(), "prefetch", "--url", url, *args], check=False, cwd=cwd,
               timeout=180)


def counts(proc: subprocess.CompletedProcess) -> tuple[int, int, int]:
    """(fetched, already cached, failed) from the summary line."""
    match = SUMMARY.search(proc.stdout)
    assert match, f"no summary line:{describe(proc)}"
    return int(match[1]), int(match[3]), int(match[4])


def requirements(path: Path, *lines: str) -> str:
    path.write_text("".join(f"{line}\n" for line in lines))
    return str(path)


def sha256(path: Path) -> str:
    return hashlib.sha256(path.read_bytes()).hexdigest()


@pytest.fixture(scope="module")
def fake(module_fake_factory: FakeFactory) -> FakeUpstream:
    return module_fake_factory("json")


@pytest.fixture(scope="module")
def proxy(module_pyproxy_factory: ServerFactory, fake: FakeUpstream) -> PyproxyServer:
    return module_pyproxy_factory.start(user=None, extra_args=["--upstream", fake.index_url])


# ---------------------------------------------------------------------------------------------
# warm, then install with upstream gone


def test_prefetched_tree_installs_offline_with_pip_and_uv(pyproxy_factory, tmp_path):
    with FakeUpstream.running_in_thread(formats="json") as upstream:
        app, lib, base = pname("app"), pname("lib"), pname("base")
        dists = tmp_path / "dists"
        publish(upstream, make_wheel(dists, base, "1.0"), base)
        publish(upstream, make_wheel(dists, base, "2.0"), base)  # excluded by lib: never fetched
        publish(upstream, make_wheel(dists, lib, "1.1", requires_dist=[f"{base}<2"]), lib)
        publish(upstream, make_wheel(dists, app, "1.0", requires_dist=[f"{lib}>=1.1"]), app)
        server = pyproxy_factory.start(user=None, extra_args=["--upstream", upstream.index_url])
        req = requirements(tmp_path / "requirements.txt", app)

        proc = prefetch(server.url, "-r", req, cwd=tmp_path)
        assert proc.returncode == 0, describe(proc)
        assert counts(proc) == (3, 0, 0), describe(proc)
        base_2 = upstream.file_path(base, f"{underscored(base)}-2.0-py3-none-any.whl")
        assert upstream.count(base_2) == 0
        upstream_index = upstream.index_url
    # the fake upstream is stopped: nothing answers on its ports any more

    server.stop()
    offline = pyproxy_factory.start(server.data_dir, user=None,
                                    extra_args=["--upstream", upstream_index, "--offline"])
    expected = {underscored(app): "1.0", underscored(lib): "1.1", underscored(base): "1.0"}
    target = tmp_path / "pip"
    proc = pip_install(offline.simple_url, "-r", req, target=target, extra_args=["--retries", "0"])
    assert installed(target) == expected, describe(proc)
    target = tmp_path / "uv"
    proc = uv_pip_install(offline.simple_url, "-r", req, target=target)
    assert installed(target) == expected, describe(proc)


# ---------------------------------------------------------------------------------------------
# other platforms and Python versions


def test_foreign_platform_fetches_exactly_its_wheels(fake, proxy, tmp_path):
    native, dep = pname("native"), pname("dep")
    dists = tmp_path / "dists"
    mac = publish(fake, native_wheel(dists, native, "1.0", "cp312", MAC, [dep]), native)
    linux = publish(fake, native_wheel(dists, native, "1.0", "cp312", LINUX, [dep]), native)
    sdist = make_sdist(dists, native, "1.0", requires_dist=[dep])
    fake.add_file(native, sdist.name, sdist.read_bytes())
    pure = publish(fake, make_wheel(dists, dep, "1.0"), dep)
    req = requirements(tmp_path / "requirements.txt", native)
    args = ("-r", req, "--platform", MAC, "--python-version", "3.12", "--only-binary", ":all:")

    proc = prefetch(proxy.url, *args, cwd=tmp_path)
    assert proc.returncode == 0, describe(proc)
    assert counts(proc) == (2, 0, 0), describe(proc)
    assert fake.count(fake.file_path(native, mac.name)) == 1
    assert fake.count(fake.file_path(dep, pure.name)) == 1
    assert fake.count(fake.file_path(native, linux.name)) == 0
    assert fake.count(fake.file_path(native, sdist.name)) == 0
    # pyproxy now serves the macOS wheel from its cache
    response = get(f"{proxy.url}/files/{native}/{mac.name}")
    assert response.status == 200 and response.headers["x-pyproxy-cache"] == "hit", str(response)
    assert hashlib.sha256(response.content).hexdigest() == sha256(mac)
    assert fake.count(fake.file_path(native, mac.name)) == 1

    # a second run finds everything cached and moves no body from upstream
    before = fake.total
    proc = prefetch(proxy.url, *args, cwd=tmp_path)
    assert proc.returncode == 0, describe(proc)
    assert counts(proc) == (0, 2, 0), describe(proc)
    assert not any(path.endswith(".whl") for _m, path in fake.requests[before:]), fake.requests


def test_several_targets_in_one_run(fake, proxy, tmp_path):
    multi, common = pname("multi"), pname("common")
    dists = tmp_path / "dists"
    wanted = [
        publish(fake, native_wheel(dists, multi, "2.0", python, platform, [common]), multi)
        for python in ("cp311", "cp312") for platform in (LINUX, MAC)
    ]
    other = publish(fake, native_wheel(dists, multi, "2.0", "cp313", LINUX, [common]), multi)
    shared = publish(fake, make_wheel(dists, common, "1.0"), common)
    req = requirements(tmp_path / "requirements.txt", multi)

    proc = prefetch(proxy.url, "-r", req, "--python-version", "3.11", "--python-version", "3.12",
                    "--platform", LINUX, "--platform", MAC, "--only-binary", ":all:",
                    cwd=tmp_path)
    assert proc.returncode == 0, describe(proc)
    assert counts(proc) == (5, 0, 0), describe(proc)  # four native wheels, the shared one once
    for wheel in [*wanted, shared]:
        assert fake.count(fake.file_path(multi if wheel in wanted else common, wheel.name)) == 1
    assert fake.count(fake.file_path(multi, other.name)) == 0


# ---------------------------------------------------------------------------------------------
# lock files


def test_uv_lock_files_are_fetched_through_pyproxy(fake, proxy, tmp_path):
    locked = pname("uvlocked")
    dists = tmp_path / "dists"
    wheel = publish(fake, make_wheel(dists, locked, "1.0"), locked)
    sdist = make_sdist(dists, locked, "1.0")
    fake.add_file(locked, sdist.name, sdist.read_bytes())
    registry = fake.index_url.rstrip("/")
    sdist_url, wheel_url = fake.file_url(locked, sdist.name), fake.file_url(locked, wheel.name)
    lock = tmp_path / "uv.lock"
    lock.write_text(f"""\
version = 1
revision = 3
requires-python = ">=3.11"

[[package]]
name = "{locked}"
version = "1.0"
source = {{ registry = "{registry}" }}
sdist = {{ url = "{sdist_url}", hash = "sha256:{sha256(sdist)}", size = {sdist.stat().st_size} }}
wheels = [
    {{ url = "{wheel_url}", hash = "sha256:{sha256(wheel)}", size = {wheel.stat().st_size} }},
]

[[package]]
name = "my-app"
version = "0.1.0"
source = {{ editable = "." }}
dependencies = [{{ name = "{locked}" }}]
""")
    proc = prefetch(proxy.url, "--lock", str(lock), cwd=tmp_path)
    assert proc.returncode == 0, describe(proc)
    assert counts(proc) == (2, 0, 0), describe(proc)
    assert "my-app: editable" in proc.stdout, describe(proc)
    for dist in (wheel, sdist):
        assert fake.count(fake.file_path(locked, dist.name)) == 1
        response = get(f"{proxy.url}/files/{locked}/{dist.name}")
        assert response.headers["x-pyproxy-cache"] == "hit", str(response)
    served = proxy.requests("GET", rf"^/files/{locked}/", 200)
    assert served is None or served >= 2  # pyproxy, not the lock's URLs, served the files

    proc = prefetch(proxy.url, "--lock", str(lock), cwd=tmp_path)
    assert proc.returncode == 0 and counts(proc) == (0, 2, 0), describe(proc)
    assert fake.count(fake.file_path(locked, wheel.name)) == 1


def pylock_text(entries: list[tuple[str, str, str]]) -> str:
    """A PEP 751 lock of (project, filename, sha256) wheels, one package each."""
    text = 'lock-version = "1.0"\ncreated-by = "tests"\n'
    for project, filename, digest in entries:
        text += (f'\n[[packages]]\nname = "{project}"\nversion = "1.0"\n'
                 f'\n[[packages.wheels]]\nname = "{filename}"\n'
                 f'url = "http://127.0.0.1:9/files/{project}/{filename}"\n'
                 f'hashes = {{ sha256 = "{digest}" }}\n')
    return text


def test_pylock_files_are_fetched_and_a_wrong_hash_fails(fake, proxy, tmp_path):
    good, bad = pname("pygood"), pname("pybad")
    dists = tmp_path / "dists"
    good_wheel = publish(fake, make_wheel(dists, good, "1.0"), good)
    bad_wheel = publish(fake, make_wheel(dists, bad, "1.0"), bad)

    lock = tmp_path / "pylock.toml"
    lock.write_text(pylock_text([(good, good_wheel.name, sha256(good_wheel))]))
    proc = prefetch(proxy.url, "--lock", str(lock), cwd=tmp_path)
    assert proc.returncode == 0, describe(proc)
    assert counts(proc) == (1, 0, 0), describe(proc)
    assert fake.count(fake.file_path(good, good_wheel.name)) == 1

    missing = f"{underscored(bad)}-9.9-py3-none-any.whl"
    wrong = tmp_path / "wrong" / "pylock.toml"
    wrong.parent.mkdir()
    wrong.write_text(pylock_text([
        (good, good_wheel.name, sha256(good_wheel)),
        (bad, bad_wheel.name, "0" * 64),
        (bad, missing, "1" * 64),
    ]))
    proc = prefetch(proxy.url, "--lock", str(wrong), cwd=tmp_path)
    assert proc.returncode == 1, describe(proc)
    assert counts(proc) == (0, 1, 2), describe(proc)
    assert re.search(rf"{bad}/{re.escape(bad_wheel.name)}: hash mismatch: sha256 "
                     rf"{sha256(bad_wheel)}, expected 0{{64}}", proc.stdout), describe(proc)
    assert re.search(rf"{bad}/{re.escape(missing)}: HTTP 404: Not Found", proc.stdout), describe(proc)
    assert "Traceback" not in proc.stderr


def universal_lock(fake: FakeUpstream, dists: Path, native: str, pure: str
                   ) -> tuple[dict[str, Path], str, str]:
    """Files of a universal lock published upstream: `native` with a wheel per platform and
    Python plus an sdist, `pure` with one py3 wheel; and that lock as uv.lock and pylock.toml."""
    files = {
        "linux312": native_wheel(dists, native, "1.0", "cp312",
                                 "manylinux_2_17_x86_64.manylinux2014_x86_64"),
        "linux311": native_wheel(dists, native, "1.0", "cp311",
                                 "manylinux_2_17_x86_64.manylinux2014_x86_64"),
        "mac312": native_wheel(dists, native, "1.0", "cp312", MAC),
        "win312": native_wheel(dists, native, "1.0", "cp312", "win_amd64"),
        "musl312": native_wheel(dists, native, "1.0", "cp312", "musllinux_1_2_x86_64"),
        "sdist": make_sdist(dists, native, "1.0"),
        "pure": make_wheel(dists, pure, "1.0"),
    }
    for key, path in files.items():
        publish(fake, path, pure if key == "pure" else native)
    registry = fake.index_url.rstrip("/")
    entries = {native: [p for k, p in files.items() if k not in ("pure", "sdist")],
               pure: [files["pure"]]}
    uv_lock = 'version = 1\nrevision = 3\nrequires-python = ">=3.11"\n'
    pylock = 'lock-version = "1.0"\ncreated-by = "tests"\n'
    for project, wheels in entries.items():
        uv_lock += (f'\n[[package]]\nname = "{project}"\nversion = "1.0"\n'
                    f'source = {{ registry = "{registry}" }}\n')
        pylock += f'\n[[packages]]\nname = "{project}"\nversion = "1.0"\n'
        if project == native:
            sdist = files["sdist"]
            uv_lock += (f'sdist = {{ url = "{fake.file_url(project, sdist.name)}", '
                        f'hash = "sha256:{sha256(sdist)}" }}\n')
            pylock += (f'\n[packages.sdist]\nname = "{sdist.name}"\n'
                       f'hashes = {{ sha256 = "{sha256(sdist)}" }}\n')
        uv_lock += "wheels = [\n" + "".join(
            f'    {{ url = "{fake.file_url(project, w.name)}", hash = "sha256:{sha256(w)}" }},\n'
            for w in wheels) + "]\n"
        pylock += "".join(f'\n[[packages.wheels]]\nname = "{w.name}"\n'
                          f'hashes = {{ sha256 = "{sha256(w)}" }}\n' for w in wheels)
    return files, uv_lock, pylock


@pytest.mark.parametrize("kind", ["uv.lock", "pylock.toml"])
def test_a_universal_lock_gives_only_the_targets_files(fake, proxy, tmp_path, kind):
    """--platform/--python-version pick the lock's wheels by tag (a manylinux_2_28 machine takes
    manylinux2014 wheels); --only-binary :all: leaves the sdist out. Nothing else is fetched."""
    native, pure = pname(f"universal-{kind[:2]}"), pname(f"anywhere-{kind[:2]}")
    files, uv_lock, pylock = universal_lock(fake, tmp_path / "dists", native, pure)
    lock = tmp_path / kind
    lock.write_text(uv_lock if kind == "uv.lock" else pylock)

    proc = prefetch(proxy.url, "--lock", str(lock), "--platform", "manylinux_2_28_x86_64",
                    "--python-version", "3.12", "--only-binary", ":all:", cwd=tmp_path)
    assert proc.returncode == 0, describe(proc)
    assert counts(proc) == (2, 0, 0), describe(proc)
    assert "left out 5 file(s) of the lock files that no target needs" in proc.stdout
    fetched = {key for key, path in files.items()
               if fake.count(fake.file_path(pure if key == "pure" else native, path.name))}
    assert fetched == {"linux312", "pure"}

    # a second run for macOS and Python 3.11/3.12 adds exactly the macOS wheel and the sdist
    proc = prefetch(proxy.url, "--lock", str(lock), "--platform", MAC, "--python-version", "3.12",
                    "--python-version", "3.11", cwd=tmp_path)
    assert proc.returncode == 0, describe(proc)
    assert counts(proc) == (2, 1, 0), describe(proc)
    fetched = {key for key, path in files.items()
               if fake.count(fake.file_path(pure if key == "pure" else native, path.name))}
    assert fetched == {"linux312", "pure", "mac312", "sdist"}


# ---------------------------------------------------------------------------------------------
# failures that stop before or during resolution


def test_resolution_failure_is_reported_with_pips_message(fake, proxy, tmp_path):
    req = requirements(tmp_path / "requirements.txt", pname("nowhere"))
    proc = prefetch(proxy.url, "-r", req, cwd=tmp_path)
    assert proc.returncode == 1, describe(proc)
    assert counts(proc) == (0, 0, 1), describe(proc)
    assert "resolution for this machine: pip exited with 1" in proc.stdout, describe(proc)
    assert "No matching distribution found" in proc.stdout, describe(proc)


def test_unreachable_pyproxy_is_one_clear_line(tmp_path):
    with socket.socket() as sock:  # a port nothing listens on
        sock.bind(("127.0.0.1", 0))
        port = sock.getsockname()[1]
    req = requirements(tmp_path / "requirements.txt", "anything")
    proc = prefetch(f"http://127.0.0.1:{port}", "-r", req, cwd=tmp_path)
    assert proc.returncode == 1, describe(proc)
    lines = proc.stderr.strip().splitlines()
    assert len(lines) == 1 and lines[0].startswith(
        f"pyproxy: cannot reach pyproxy at http://127.0.0.1:{port}: "), describe(proc)
    assert proc.stdout == "", describe(proc)
