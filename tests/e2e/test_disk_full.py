"""End to end, `pyproxy serve` with its data directory on a small filesystem of its own (a
tmpfs, so the tests need root to mount it) that a filler file makes full: what issue 14 item 11
promises of a full disk.
"""

from __future__ import annotations

import os
import re
from collections.abc import Iterator
from pathlib import Path

import pytest

from pyproxy.stores.space import SPARE_BYTES
from tests.dists import make_sdist, make_wheel
from tests.e2e.clients import (
    get,
    listed_filenames,
    output,
    raw_request,
    raw_upload,
    twine_upload,
)
from tests.e2e.conftest import FakeFactory, PyproxyServer, ServerFactory
from tests.e2e.test_operations import counter
from tests.small_disk import fill, free, mounted

MiB = 1024 * 1024


@pytest.fixture
def disk(tmp_path: Path) -> Iterator[Path]:
    """A fresh 16 MiB tmpfs. Ask for it before the server factories, so that their servers
    have stopped when it is unmounted."""
    with mounted(tmp_path / "disk", "16m") as mount:
        yield mount


@pytest.fixture
def big_disk(tmp_path: Path) -> Iterator[Path]:
    """32 MiB, for files of a megabyte beside the spare file."""
    with mounted(tmp_path / "disk", "32m") as mount:
        yield mount


def assert_alive(server: PyproxyServer) -> None:
    assert server.proc is not None and server.proc.poll() is None, (
        f"pyproxy exited with {server.proc.returncode if server.proc else None}:\n"
        f"{server.stderr_text()}")
    assert get(f"{server.url}/health").status == 200


def test_metrics_cannot_kill_a_worker(disk: Path, pyproxy_factory: ServerFactory) -> None:
    """Metric values are written through mmap: a page first touched on a full disk would be a
    SIGBUS. Requests that make new series (routes, methods, statuses) on a full disk."""
    server = pyproxy_factory.start(disk / "data", user=None)
    fill(disk)
    for method, path in [("GET", "/health"), ("GET", "/ready"), ("GET", "/no/such/page"),
                         ("HEAD", "/simple/"), ("GET", "/files/none/none-1.0.tar.gz"),
                         ("POST", "/legacy/"), ("GET", "/metrics")]:
        raw_request(method, server.url + path)
    assert_alive(server)
    assert "pyproxy_http_requests_total" in get(f"{server.url}/metrics").body


def private_files(server: PyproxyServer) -> list[str]:
    """Every file under the private store's bodies and temp area."""
    private = server.data_dir / "private"
    return sorted(str(p.relative_to(private)) for p in private.rglob("*") if p.is_file()
                  and p.parent.name != "private")


def test_uploads_get_507_and_leave_nothing(
    disk: Path, pyproxy_factory: ServerFactory, tmp_path: Path
) -> None:
    server = pyproxy_factory.start(disk / "data")
    assert server.user is not None and server.password is not None
    first = make_wheel(tmp_path / "dists", "Tight", "1.0")
    twine_upload(server.upload_url, [first], server.user, server.password)
    stored = private_files(server)
    filler = fill(disk)

    wheel = make_wheel(tmp_path / "dists", "Tight", "2.0")
    proc = twine_upload(server.upload_url, [wheel], server.user, server.password, check=False)
    assert proc.returncode != 0
    said = " ".join(output(proc).split())
    assert "HTTPError: 507 Insufficient Storage" in said and "the index's disk is full" in said
    sdist = make_sdist(tmp_path / "dists", "Tight", "2.0")
    response = raw_upload(server.upload_url, sdist, server.user, server.password)
    assert (response.status, response.reason) == (507, "Insufficient Storage: the index's disk"
        " is full, so the file was not stored. Try again once an operator has freed space (e.g."
        " with pyproxy cache prune).")

    assert private_files(server) == stored  # no temp file left, no body without a record
    assert listed_filenames(server.simple_url, "tight") == [first.name]
    refused = server.requests("POST", "/legacy/", 507)
    assert refused and refused > 1  # twine tries again on a 5xx
    assert counter(server, "pyproxy_uploads_rejected_total", reason="no_space") == refused
    stderr = server.stderr_text()
    assert "Traceback" not in stderr
    assert stderr.count("WARNING pyproxy.upload: refused an upload with 507") == refused

    filler.unlink()  # room again: the same upload goes through
    twine_upload(server.upload_url, [wheel, sdist], server.user, server.password)
    assert listed_filenames(server.simple_url, "tight") == [first.name, wheel.name, sdist.name]


def test_not_ready_below_min_free_space_but_reads_go_on(
    disk: Path, pyproxy_factory: ServerFactory, tmp_path: Path
) -> None:
    config = tmp_path / "pyproxy.toml"
    config.write_text('[server]\nmin_free_space = "1MiB"\n')
    server = pyproxy_factory.start(disk / "data", extra_args=["--config", str(config)])
    assert server.user is not None and server.password is not None
    wheel = make_wheel(tmp_path / "dists", "Tight", "1.0")
    twine_upload(server.upload_url, [wheel], server.user, server.password)
    assert get(f"{server.url}/ready").status == 200
    filler = fill(disk)

    ready = get(f"{server.url}/ready")
    assert (ready.status, ready.body) == (503, "not ready: only 0 bytes free on the data"
                                          " directory's disk (below [server] min_free_space,"
                                          " 1.0 MB)\n")
    download = get(f"{server.url}/files/tight/{wheel.name}")
    assert (download.status, download.content) == (200, wheel.read_bytes())
    assert listed_filenames(server.simple_url, "tight") == [wheel.name]
    filler.unlink()
    assert get(f"{server.url}/ready").status == 200


def test_a_page_that_cannot_be_cached_is_served_from_memory(
    disk: Path, pyproxy_factory: ServerFactory, fake_factory: FakeFactory
) -> None:
    fake = fake_factory()
    fake.add_file("fresh", "fresh-1.0.tar.gz", b"body")
    # a page big enough that the cache keeps it in a file of its own, and a small one
    for number in range(400):
        fake.add_file("big", f"big-{number}.0.tar.gz", b"body")
    server = pyproxy_factory.start(
        disk / "data", user=None, extra_args=["--upstream", fake.index_url]
    )
    assert get(server.simple_url).status == 200
    fill(disk)
    for project, count in (("fresh", 1), ("big", 400)):
        for _ in range(2):  # the second from memory, upstream is not asked again
            assert len(listed_filenames(server.simple_url, project)) == count
        assert fake.count(f"/simple/{project}/") == 1
    stderr = server.stderr_text()
    assert "Traceback" not in stderr
    for project in ("fresh", "big"):
        assert stderr.count(f"WARNING pyproxy.pages: cannot keep the page of {project!r} on"
                            " disk (the disk is full): it is served from memory") == 1, stderr
    assert_alive(server)


def test_cached_files_are_served_on_a_full_disk(
    disk: Path, pyproxy_factory: ServerFactory, fake_factory: FakeFactory
) -> None:
    fake = fake_factory()
    cached = fake.add_file("up", "up-1.0.tar.gz", b"cached body " * 1000)
    fake.add_file("up", "up-2.0.tar.gz", b"not cached " * 1000)
    server = pyproxy_factory.start(
        disk / "data", user=None, extra_args=["--upstream", fake.index_url]
    )
    url = f"{server.url}/files/up/{cached.filename}"
    assert get(url).status == 200
    assert raw_request("HEAD", url).headers["x-pyproxy-cache"] == "hit"
    fill(disk)
    for _ in range(2):
        response = get(url)
        assert (response.status, response.headers["x-pyproxy-cache"]) == (200, "hit")
        assert response.content == cached.body
    assert fake.count(f"/files/up/{cached.filename}") == 1
    refused = get(f"{server.url}/files/up/up-2.0.tar.gz")  # no room to cache it
    assert (refused.status, refused.body) == (503, "Service Unavailable: the index's disk is"
                                              " full: it cannot fetch files it has not cached\n")
    assert "Traceback" not in server.stderr_text()
    assert_alive(server)


def test_remove_and_prune_free_space_on_a_full_disk(
    big_disk: Path, pyproxy_factory: ServerFactory, fake_factory: FakeFactory, tmp_path: Path
) -> None:
    fake = fake_factory()
    cached = [fake.add_file("up", f"up-{n}.0.tar.gz", os.urandom(MiB)) for n in range(4)]
    server = pyproxy_factory.start(
        big_disk / "data", extra_args=["--upstream", fake.index_url]
    )
    assert server.user is not None and server.password is not None
    assert (big_disk / "data" / "spare").stat().st_size == SPARE_BYTES  # kept from the start
    wheels = [make_wheel(tmp_path / "dists", "Tight", f"{n}.0",
                         modules={"tight/data.py": os.urandom(MiB // 2).hex()})
              for n in range(2)]
    twine_upload(server.upload_url, wheels, server.user, server.password)
    for dist in cached:
        assert get(f"{server.url}/files/up/{dist.filename}").status == 200
    fill(big_disk)

    removed = server.cli("remove", "tight", "1.0")
    assert "removed 1 file(s) of tight 1.0" in removed.stdout
    assert listed_filenames(server.simple_url, "tight") == [wheels[0].name]
    pruned = server.cli("cache", "prune", "--max-size", "2.5MiB")  # the index counts too
    assert pruned.stdout.startswith("removed 2 files (2.1 MB)"), pruned.stdout
    assert free(big_disk) > 2 * MiB
    assert get(f"{server.url}/files/up/{cached[3].filename}").status == 200  # still cached
    assert (big_disk / "data" / "spare").exists()  # kept again: there was room for it
    server.stop()

    fill(big_disk)  # and with no server holding the databases open
    refused = server.cli("user", "add", "bob", "--password-stdin", input="bob-password\n",
                         check=False)  # not a delete: the spare is not for it
    assert (refused.returncode, refused.stderr) == (1, "pyproxy: the data directory's disk is"
        " full (disk I/O error): free space first, e.g. with pyproxy cache prune or pyproxy"
        " remove\n")
    removed = server.cli("remove", "tight", "0.0")
    assert "removed 1 file(s) of tight 0.0" in removed.stdout
    pruned = server.cli("cache", "prune", "--older-than", "0")
    assert pruned.stdout.startswith("removed 2 files (2.1 MB)"), pruned.stdout
    assert "is full: gave up its spare 2.1 MB to remove files" in removed.stderr
    assert "Traceback" not in removed.stderr + pruned.stderr
    assert free(big_disk) > 2 * MiB


@pytest.mark.parametrize("workers", [1, 2])
def test_the_server_starts_on_a_full_disk_and_serves_reads(
    disk: Path, pyproxy_factory: ServerFactory, fake_factory: FakeFactory, tmp_path: Path,
    workers: int,
) -> None:
    fake = fake_factory()
    upstream_file = fake.add_file("up", "up-1.0.tar.gz", b"upstream body " * 1000)
    args = ["--upstream", fake.index_url, "--workers", str(workers)]
    server = pyproxy_factory.start(disk / "data", extra_args=args)
    assert server.user is not None and server.password is not None
    wheel = make_wheel(tmp_path / "dists", "Tight", "1.0")
    twine_upload(server.upload_url, [wheel], server.user, server.password)
    upstream_path = f"/files/up/{upstream_file.filename}"
    assert get(server.url + upstream_path).status == 200
    server.stop()
    fill(disk)
    fake.stop_blocking()  # only what is on disk can be served

    server.start()
    # room from the databases' logs (SQLite keeps it otherwise), else from the spare file
    assert re.search(r"is full: (cut the databases' logs|gave up its spare 2.1 MB) to start",
                     server.stderr_text())
    fill(disk)  # what the spare gave back is taken too
    for _ in range(2 * workers):  # new connections: with two workers, both answer
        assert listed_filenames(server.simple_url, "tight") == [wheel.name]
        assert get(f"{server.url}/files/tight/{wheel.name}").content == wheel.read_bytes()
        assert listed_filenames(server.simple_url, "up") == [upstream_file.filename]
        assert get(server.url + upstream_path).content == upstream_file.body
    assert get(f"{server.url}/ready").status == 503
    response = raw_upload(server.upload_url, make_wheel(tmp_path / "dists", "Tight", "2.0"),
                          server.user, server.password)
    assert response.status == 507
    assert "Traceback" not in server.stderr_text()
    assert_alive(server)
