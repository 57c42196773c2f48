"""End to end: pyproxy as a pull-through cache of a fake upstream index, driven by real pip, uv
and twine, and by raw HTTP where the exact bytes and statuses matter.

Each test runs its own FakeUpstream in a background thread (tests/e2e/conftest.py's
`fake_factory`) and starts `pyproxy serve --upstream <fake index URL>` subprocesses through the
shared `pyproxy_factory`. Project names carry a per-run suffix so nothing but pyproxy can
satisfy them.
"""

from __future__ import annotations

import hashlib
import http.client
import os
import threading
import time
import urllib.parse
import uuid
import zipfile
from collections import Counter
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass
from datetime import UTC, datetime
from pathlib import Path

import pytest

from tests.dists import make_sdist, make_wheel, underscored
from tests.e2e.clients import (
    SIMPLE_JSON,
    describe,
    get,
    installed,
    listed_filenames,
    pip_install,
    project_json,
    twine_upload,
    uv_pip_install,
)
from tests.fake_upstream import FakeUpstream
from tests.processes import rss_kib

RUN = uuid.uuid4().hex[:6]
MB = 1000 * 1000


def pname(stem: str) -> str:
    return f"pt-{stem}-{RUN}"


def start_proxy(factory, fake: FakeUpstream, tmp_path: Path, *, config: str | None = None,
                extra_args: tuple[str, ...] = (), data_dir: Path | None = None,
                user: str | None = None):
    args = ["--upstream", fake.index_url, *extra_args]
    if config is not None:
        path = tmp_path / f"pyproxy-{uuid.uuid4().hex[:6]}.toml"
        path.write_text(config)
        args += ["--config", str(path)]
    return factory.start(data_dir, user=user, create_user=user is not None and data_dir is None,
                         extra_args=args)


def wheel_metadata(path: Path) -> bytes:
    with zipfile.ZipFile(path) as archive:
        member = next(n for n in archive.namelist() if n.endswith(".dist-info/METADATA"))
        return archive.read(member)


def publish(fake: FakeUpstream, wheel: Path, project: str) -> None:
    fake.add_file(project, wheel.name, wheel.read_bytes(), metadata=wheel_metadata(wheel),
                  upload_time=datetime(2025, 1, 1, tzinfo=UTC))


@dataclass
class Fetched:
    status: int
    length: int
    sha256: str
    complete: bool  # the client read the body to its announced end without an error
    error: str = ""


def fetch(url: str, timeout: float = 60) -> Fetched:
    """GET url, streaming the body into a hash (nothing kept in memory)."""
    parts = urllib.parse.urlsplit(url)
    conn = http.client.HTTPConnection(parts.hostname, parts.port, timeout=timeout)
    digest, length = hashlib.sha256(), 0
    status = 0
    try:
        conn.request("GET", parts.path)
        response = conn.getresponse()
        status = response.status
        announced = response.getheader("Content-Length")
        while chunk := response.read(256 * 1024):
            digest.update(chunk)
            length += len(chunk)
        # read(amt) returns b"" at an early EOF instead of raising: compare with the header
        complete = announced is None or int(announced) == length
        error = "" if complete else f"short body: {length} of {announced} bytes"
        return Fetched(status, length, digest.hexdigest(), complete, error)
    except (http.client.HTTPException, OSError) as exc:
        return Fetched(status, length, digest.hexdigest(), False, f"{type(exc).__name__}: {exc}")
    finally:
        conn.close()


def file_url(server, project: str, filename: str) -> str:
    return f"{server.url}/files/{project}/{urllib.parse.quote(filename)}"


def upstream_paths(fake: FakeUpstream) -> Counter:
    return Counter(path for _method, path in fake.requests)


# ---------------------------------------------------------------------------------------------
# a small dependency tree, cold and warm, with pip and uv


@dataclass
class Tree:
    app: str
    lib: str
    base: str
    wheels: dict[str, Path]  # filename -> path


def publish_tree(fake: FakeUpstream, directory: Path) -> Tree:
    app, lib, base = pname("app"), pname("lib"), pname("base")
    wheels = [
        (base, make_wheel(directory, base, "1.0")),
        (base, make_wheel(directory, base, "2.0")),
        (lib, make_wheel(directory, lib, "1.0", requires_dist=[base])),
        (lib, make_wheel(directory, lib, "1.1", requires_dist=[f"{base}<2"])),
        (app, make_wheel(directory, app, "1.0", requires_dist=[f"{lib}>=1.1"])),
    ]
    for project, wheel in wheels:
        publish(fake, wheel, project)
    return Tree(app, lib, base, {wheel.name: wheel for _p, wheel in wheels})


def expected_tree(tree: Tree) -> dict[str, str]:
    return {underscored(tree.app): "1.0", underscored(tree.lib): "1.1", underscored(tree.base): "1.0"}


@pytest.mark.parametrize("formats", ["json", "html"])
def test_install_tree_cold_and_warm(fake_factory, pyproxy_factory, tmp_path, formats,
                                    record_property):
    fake = fake_factory(formats)
    tree = publish_tree(fake, tmp_path / "dists")
    server = start_proxy(pyproxy_factory, fake, tmp_path)
    fake.reset_counters()

    target = tmp_path / "pip"
    proc = pip_install(server.simple_url, tree.app, target=target)
    assert installed(target) == expected_tree(tree), describe(proc)
    cold = upstream_paths(fake)
    record_property(f"upstream_requests_cold_pip_{formats}", sum(cold.values()))
    print(f"\n[{formats}] cold pip install: {sum(cold.values())} upstream requests: {dict(cold)}")
    assert all(count == 1 for count in cold.values()), f"a path was fetched twice: {cold}"
    pages = {p for p in cold if p.startswith("/simple/")}
    assert pages == {fake.page_path(n) for n in (tree.app, tree.lib, tree.base)}, cold
    wanted = {f"{underscored(n)}-{v}-py3-none-any.whl" for n, v in
              ((tree.app, "1.0"), (tree.lib, "1.1"), (tree.base, "1.0"))}
    downloaded = {p.rsplit("/", 1)[1] for p in cold if p.endswith(".whl")}
    assert downloaded == wanted, cold  # nothing that was not installed was downloaded
    assert sum(cold.values()) <= 9, cold  # 3 pages + 3 .metadata + 3 wheels at most
    # pip took every file from pyproxy, never from the upstream's file host
    served = server.requests("GET", r"^/files/.*\.whl$", 200)
    assert served is not None and served >= 3, server.stderr_text()[-3000:]

    fake.reset_counters()
    target = tmp_path / "uv-warm"
    proc = uv_pip_install(server.simple_url, tree.app, target=target)
    assert installed(target) == expected_tree(tree), describe(proc)
    assert fake.total == 0, f"a warm uv install went upstream: {fake.requests}"

    # uv, cold, on a second pyproxy
    cold_server = start_proxy(pyproxy_factory, fake, tmp_path)
    fake.reset_counters()
    target = tmp_path / "uv-cold"
    proc = uv_pip_install(cold_server.simple_url, tree.app, target=target)
    assert installed(target) == expected_tree(tree), describe(proc)
    cold_uv = upstream_paths(fake)
    record_property(f"upstream_requests_cold_uv_{formats}", sum(cold_uv.values()))
    print(f"[{formats}] cold uv install: {sum(cold_uv.values())} upstream requests: {dict(cold_uv)}")
    assert all(count == 1 for count in cold_uv.values()), f"a path was fetched twice: {cold_uv}"


# ---------------------------------------------------------------------------------------------
# single flight


@pytest.mark.parametrize("workers", [1, 2])
def test_concurrent_downloads_fetch_upstream_once(fake_factory, pyproxy_factory, tmp_path,
                                                  workers):
    fake = fake_factory("json")
    project = pname("single")
    dist = fake.add_generated_file(project, f"{underscored(project)}-1.0.tar.gz", 4 * 1024 * 1024)
    fake.chunk_delay = 0.005  # ~0.3 s per body, so the 50 requests overlap the one download
    server = start_proxy(pyproxy_factory, fake, tmp_path, extra_args=("--workers", str(workers)))
    assert listed_filenames(server.simple_url, project) == [dist.filename]  # warm the page only
    url = file_url(server, project, dist.filename)

    barrier = threading.Barrier(50)

    def one(_: int) -> Fetched:
        barrier.wait(timeout=30)
        return fetch(url)

    with ThreadPoolExecutor(50) as pool:
        results = list(pool.map(one, range(50)))

    bad = [r for r in results if not (r.status == 200 and r.complete and r.sha256 == dist.sha256
                                      and r.length == dist.size)]
    assert not bad, f"{len(bad)} of 50 downloads were wrong: {bad[:3]}"
    assert fake.count(fake.file_path(project, dist.filename)) == 1, upstream_paths(fake)
    # and afterwards it is served from the cache
    again = fetch(url)
    assert again.status == 200 and again.sha256 == dist.sha256
    assert fake.count(fake.file_path(project, dist.filename)) == 1


# ---------------------------------------------------------------------------------------------
# broken upstream bodies


@pytest.mark.parametrize("formats", ["json", "html"])
@pytest.mark.parametrize("breakage", ["truncate_files", "wrong_bytes", "drop_connection"])
def test_broken_upstream_body_is_never_served_as_complete(fake_factory, pyproxy_factory, tmp_path,
                                                          formats, breakage):
    fake = fake_factory(formats)
    project = pname("broken")
    dist = fake.add_generated_file(project, f"{underscored(project)}-1.0.tar.gz", 2 * 1024 * 1024)
    server = start_proxy(pyproxy_factory, fake, tmp_path)
    assert listed_filenames(server.simple_url, project) == [dist.filename]
    url = file_url(server, project, dist.filename)
    upstream_path = fake.file_path(project, dist.filename)

    setattr(fake, breakage, True)
    broken = fetch(url)
    assert not (broken.status == 200 and broken.complete), (
        f"a {breakage} upstream body was served as a complete 200 response: {broken} "
        f"(sha256 correct: {broken.sha256 == dist.sha256})"
    )
    assert fake.count(upstream_path) == 1

    setattr(fake, breakage, False)
    fixed = fetch(url)
    assert fixed.status == 200 and fixed.complete, fixed
    assert (fixed.length, fixed.sha256) == (dist.size, dist.sha256), fixed
    assert fake.count(upstream_path) == 2, "the broken body was cached"
    cached = fetch(url)
    assert cached.status == 200 and cached.sha256 == dist.sha256
    assert fake.count(upstream_path) == 2


def test_pip_refuses_a_wrong_bytes_upstream_file(fake_factory, pyproxy_factory, tmp_path):
    fake = fake_factory("json")
    project = pname("evil")
    wheel = make_wheel(tmp_path / "dists", project, "1.0")
    publish(fake, wheel, project)
    server = start_proxy(pyproxy_factory, fake, tmp_path)
    fake.wrong_bytes = True
    target = tmp_path / "pip"
    proc = pip_install(server.simple_url, project, target=target, check=False,
                       extra_args=["--retries", "0"])
    assert proc.returncode != 0, f"pip installed a corrupted wheel:{describe(proc)}"
    assert not installed(target)
    fake.wrong_bytes = False
    pip_install(server.simple_url, project, target=tmp_path / "pip2")
    assert installed(tmp_path / "pip2") == {underscored(project): "1.0"}


@pytest.mark.parametrize("client", ["pip", "uv"])
def test_an_sdist_labelled_gzip_is_cached_as_sent(fake_factory, pyproxy_factory, tmp_path, client):
    """A host that labels a .tar.gz `Content-Encoding: gzip` (S3, Apache's AddEncoding) sends
    the file as it is: pip and uv going to it directly keep those bytes, and so does pyproxy
    (undone, they would be a tar whose sha256 is not the listed one: a 503 for good)."""
    fake = fake_factory("json")
    project = pname("labelled")
    sdist = make_sdist(tmp_path / "dists", project, "1.0")
    fake.add_file(project, sdist.name, sdist.read_bytes())
    fake.gzip_labelled_sdists = True
    server = start_proxy(pyproxy_factory, fake, tmp_path)
    install = pip_install if client == "pip" else uv_pip_install
    target = tmp_path / client
    proc = install(server.simple_url, project, target=target,
                   extra_args=["--no-build-isolation"])  # the build needs no index
    assert installed(target) == {underscored(project): "1.0"}, describe(proc)
    url = f"{server.url}/files/{project}/{sdist.name}"
    cached = get(url)
    assert cached.status == 200 and cached.headers.get("x-pyproxy-cache") == "hit", str(cached)
    assert cached.content == sdist.read_bytes()
    assert fake.count(fake.file_path(project, sdist.name)) == 1


# ---------------------------------------------------------------------------------------------
# upstream gone


def test_upstream_down_after_warming(fake_factory, pyproxy_factory, tmp_path):
    fake = fake_factory("json")
    tree = publish_tree(fake, tmp_path / "dists")
    fake.add_file(pname("never"), f"{underscored(pname('never'))}-1.0.tar.gz", b"never fetched")
    config = "[upstream]\npage_ttl = 1\nindex_ttl = 1\ntimeout = 2\n"
    server = start_proxy(pyproxy_factory, fake, tmp_path, config=config)
    pip_install(server.simple_url, tree.app, target=tmp_path / "warm")

    fake.stop_blocking()
    time.sleep(1.2)  # every cached page is now past its TTL: pyproxy must fall back to stale
    target = tmp_path / "offline-pip"
    proc = pip_install(server.simple_url, tree.app, target=target, extra_args=["--retries", "0"])
    assert installed(target) == expected_tree(tree), describe(proc)
    target = tmp_path / "offline-uv"
    proc = uv_pip_install(server.simple_url, tree.app, target=target)
    assert installed(target) == expected_tree(tree), describe(proc)

    for accept in (SIMPLE_JSON, "text/html"):
        response = get(f"{server.simple_url}{pname('never')}/", accept=accept)
        assert response.status == 503, str(response)
    # a listed file that was never downloaded (base 2.0): unavailable, never 404
    base_2 = f"{underscored(tree.base)}-2.0-py3-none-any.whl"
    response = get(file_url(server, tree.base, base_2))
    assert response.status == 503, str(response)
    # a file of a project whose page was never fetched: unavailable too, never 404
    response = get(file_url(server, pname("never"), f"{underscored(pname('never'))}-1.0.tar.gz"))
    assert response.status == 503, str(response)
    assert "stale" in server.stderr_text()


# ---------------------------------------------------------------------------------------------
# dependency confusion


def test_private_upload_shadows_upstream_name(fake_factory, pyproxy_factory, tmp_path):
    fake = fake_factory("json")
    name = pname("foo")
    upstream_wheel = make_wheel(tmp_path / "upstream", name, "99.0")
    publish(fake, upstream_wheel, name)
    private_wheel = make_wheel(tmp_path / "private", name, "1.0")
    server = start_proxy(pyproxy_factory, fake, tmp_path, user="alice")
    server.cli("reserve", name)  # upstream has the name: only an admin makes it private
    twine_upload(server.upload_url, [private_wheel], server.user, server.password)

    assert listed_filenames(server.simple_url, name) == [private_wheel.name]
    assert project_json(server.simple_url, name)["versions"] == ["1.0"]
    target = tmp_path / "pip"
    proc = pip_install(server.simple_url, name, target=target)
    assert installed(target) == {underscored(name): "1.0"}, describe(proc)
    target = tmp_path / "uv"
    proc = uv_pip_install(server.simple_url, name, target=target)
    assert installed(target) == {underscored(name): "1.0"}, describe(proc)
    for suffix in ("", ".metadata"):
        response = get(file_url(server, name, upstream_wheel.name) + suffix)
        assert response.status == 404, str(response)
    assert [p for p in upstream_paths(fake) if name in p or underscored(name) in p] == [], (
        f"pyproxy asked upstream about a private name: {fake.requests}"
    )

    # allow-listed for merging (config file): both versions, the newest installs
    server.stop()
    merged = start_proxy(pyproxy_factory, fake, tmp_path, data_dir=server.data_dir,
                         config=f'[overlay]\nmerge = ["{name}"]\n')
    assert sorted(listed_filenames(merged.simple_url, name)) == sorted(
        [private_wheel.name, upstream_wheel.name])
    target = tmp_path / "pip-merged"
    proc = pip_install(merged.simple_url, name, target=target)
    assert installed(target) == {underscored(name): "99.0"}, describe(proc)
    target = tmp_path / "uv-merged"
    proc = uv_pip_install(merged.simple_url, f"{name}==1.0", target=target)
    assert installed(target) == {underscored(name): "1.0"}, describe(proc)
    assert fake.count(fake.file_path(name, upstream_wheel.name)) == 1


# ---------------------------------------------------------------------------------------------
# the size bound


def _tree_size(directory: Path) -> int:
    return sum(p.stat().st_size for p in directory.rglob("*") if p.is_file())


def _snapshot(directory: Path) -> dict[str, str]:
    return {
        str(p.relative_to(directory)): hashlib.sha256(p.read_bytes()).hexdigest()
        for p in sorted(directory.rglob("*"))
        if p.is_file() and not p.name.endswith(("-wal", "-shm", ".db", ".sqlite", ".sqlite3"))
    }


def test_cache_is_bounded_and_private_files_are_never_evicted(fake_factory, pyproxy_factory,
                                                               tmp_path):
    fake = fake_factory("json")
    bound = 3 * MB
    private_name = pname("keep")
    private_wheel = make_wheel(tmp_path / "private", private_name, "1.0",
                               extra_members={"big.bin": os.urandom(1 * MB)})
    server = start_proxy(pyproxy_factory, fake, tmp_path, user="alice",
                         config='[cache]\nmax_size = "3MB"\n')
    twine_upload(server.upload_url, [private_wheel], server.user, server.password)
    private_dir = server.data_dir / "private"
    before = _snapshot(private_dir)
    assert any(v == hashlib.sha256(private_wheel.read_bytes()).hexdigest() for v in before.values())

    project = pname("big")
    dists = [fake.add_generated_file(project, f"{underscored(project)}-{i}.0.tar.gz", 1 * MB)
             for i in range(6)]
    files_dir = server.data_dir / "cache" / "files"
    sizes = []
    for dist in dists:
        fetched = fetch(file_url(server, project, dist.filename))
        assert fetched.status == 200 and fetched.sha256 == dist.sha256, fetched
        time.sleep(0.05)
        blobs = sum(p.stat().st_size for p in files_dir.rglob("*.val"))
        sizes.append((blobs, _tree_size(files_dir)))
    print(f"\ncache size after each 1 MB download (blobs, whole files/ dir): {sizes}")
    for blobs, whole in sizes:
        assert blobs <= bound, sizes
        assert whole <= bound, f"the cache directory exceeds its {bound}-byte bound: {sizes}"

    # least recently used went first: the newest is still cached, the oldest was evicted
    newest, oldest = dists[-1], dists[0]
    assert fetch(file_url(server, project, newest.filename)).sha256 == newest.sha256
    assert fake.count(fake.file_path(project, newest.filename)) == 1
    assert fetch(file_url(server, project, oldest.filename)).sha256 == oldest.sha256
    assert fake.count(fake.file_path(project, oldest.filename)) == 2

    assert _snapshot(private_dir) == before, "the private store changed"
    served = fetch(file_url(server, private_name, private_wheel.name))
    assert served.status == 200
    assert served.sha256 == hashlib.sha256(private_wheel.read_bytes()).hexdigest()


# ---------------------------------------------------------------------------------------------
# memory while streaming a large file


def _rss_kib(pid: int) -> int:
    kib = rss_kib(pid)
    assert kib is not None, f"no VmRSS for {pid}"
    return kib


@pytest.mark.parametrize(("size_mib", "limit_mib"), [
    # every run: a buffered copy of the file would not fit under the limit
    pytest.param(50, 20, id="50MiB"),
    pytest.param(500, 100, id="500MiB", marks=[
        pytest.mark.slow,
        pytest.mark.skipif(os.environ.get("PYPROXY_SLOW_TESTS") != "1",
                           reason="streams 500 MB; set PYPROXY_SLOW_TESTS=1"),
    ]),
])
def test_streaming_a_large_file_keeps_memory_flat(fake_factory, pyproxy_factory, tmp_path,
                                                  size_mib, limit_mib):
    fake = fake_factory("json")
    project = pname(f"huge{size_mib}")
    size = size_mib * 1024 * 1024
    dist = fake.add_generated_file(project, f"{underscored(project)}-1.0.tar.gz", size)
    server = start_proxy(pyproxy_factory, fake, tmp_path)
    assert listed_filenames(server.simple_url, project) == [dist.filename]
    url = file_url(server, project, dist.filename)
    pid = server.pid

    def measure(label: str) -> tuple[int, int, Fetched]:
        baseline = _rss_kib(pid)
        peak = baseline
        done = threading.Event()

        def sample() -> None:
            nonlocal peak
            while not done.is_set():
                peak = max(peak, _rss_kib(pid))
                time.sleep(0.02)

        sampler = threading.Thread(target=sample)
        sampler.start()
        started = time.monotonic()
        try:
            result = fetch(url, timeout=300)
        finally:
            done.set()
            sampler.join()
        elapsed = time.monotonic() - started
        print(f"\n{label}: RSS baseline {baseline / 1024:.1f} MiB, peak {peak / 1024:.1f} MiB, "
              f"growth {(peak - baseline) / 1024:.1f} MiB, {size / 2**20 / elapsed:.0f} MiB/s")
        return baseline, peak, result

    baseline, peak, result = measure("first download (streamed from upstream while cached)")
    assert result.status == 200 and result.complete and result.sha256 == dist.sha256, result
    assert (peak - baseline) < limit_mib * 1024, f"RSS grew by {(peak - baseline) / 1024:.1f} MiB"
    assert fake.count(fake.file_path(project, dist.filename)) == 1

    baseline, peak, result = measure("second download (from the cache)")
    assert result.status == 200 and result.sha256 == dist.sha256, result
    assert (peak - baseline) < limit_mib * 1024, f"RSS grew by {(peak - baseline) / 1024:.1f} MiB"
    assert fake.count(fake.file_path(project, dist.filename)) == 1


# ---------------------------------------------------------------------------------------------
# credentials in the upstream URL


def test_upstream_credentials_never_appear_in_output(fake_factory, pyproxy_factory, tmp_path):
    fake = fake_factory("json")
    project = pname("cred")
    wheel = make_wheel(tmp_path / "dists", project, "1.0")
    publish(fake, wheel, project)
    secret = f"Sup3r-{RUN}-secret"
    index_url = fake.index_url.replace("http://", f"http://ci-bot:{secret}@")
    server = pyproxy_factory.start(user=None, extra_args=["--upstream", index_url,
                                                          "--log-level", "debug"])
    seen = [get(server.url + "/"), get(f"{server.simple_url}{project}/", accept=SIMPLE_JSON),
            get(f"{server.simple_url}{project}/", accept="text/html")]
    assert all(response.status == 200 for response in seen), [str(r) for r in seen]
    fake.stop_blocking()
    seen.append(get(f"{server.simple_url}{pname('absent')}/"))
    assert seen[-1].status == 503, str(seen[-1])
    server.stop()
    for response in seen:
        assert secret not in response.body and secret not in str(response.headers)
    assert secret not in server.stderr_text()
    # the landing page names the upstream in use, without its credentials
    assert fake.index_url.rstrip("/") in seen[0].body, seen[0].body
