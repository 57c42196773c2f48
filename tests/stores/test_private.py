"""pyproxy.stores.private.PrivateStore: durable private files, records, permissions, tombstones, GC.

Every test taking `store` runs twice (the `backends` fixture): on the embedded store and on a
cluster node's PostgreSQL store (stores/pg/private.py), which must behave the same; `other` is
another process (SQLite) or another node (PostgreSQL), whose changes a node hears of by
notification: `settle()` waits for that.
"""

from __future__ import annotations

import hashlib
import sqlite3
import threading
import time
from collections.abc import Iterator
from pathlib import Path

import pytest

from pyproxy import access
from pyproxy.access import ReadRestrictions
from pyproxy.model import LocalFile, NotFound, Origin, normalize
from pyproxy.stores.interfaces import PrivateStoreAPI
from pyproxy.stores.private import PrivateStore
from pyproxy.stores.private_files import PrivateFiles
from pyproxy.stores.private_schema import NewFile, StoreRejected
from pyproxy.stores.space import is_disk_full
from tests.small_disk import fill, mounted
from tests.stores.backends import Backends, settle

METADATA = b"Metadata-Version: 2.1\nName: foo\nVersion: 1.0\n"


@pytest.fixture
def directory(tmp_path: Path) -> Path:
    return tmp_path / "private"


@pytest.fixture
def store(directory: Path, backends: Backends) -> PrivateStoreAPI:
    return backends.open_private(directory)


@pytest.fixture
def other(directory: Path, store: PrivateStoreAPI, backends: Backends) -> PrivateStoreAPI:
    """A second store on the same directory and database: another worker process, as far as
    SQLite can tell, or another node."""
    return backends.open_private(directory)


@pytest.fixture
def sqlite_store(directory: Path) -> Iterator[PrivateStore]:
    opened = PrivateStore(directory)
    yield opened
    opened.close()


@pytest.fixture
def sqlite_other(directory: Path, sqlite_store: PrivateStoreAPI) -> Iterator[PrivateStore]:
    opened = PrivateStore(directory)
    yield opened
    opened.close()


def new_file(
    filename: str = "foo-1.0-py3-none-any.whl",
    body: bytes = b"wheel body",
    *,
    project: str | None = None,
    version: str | None = None,
    uploader: str | None = "alice",
    core_metadata: bytes | None = None,
    requires_python: str | None = None,
    provenance: bytes | None = None,
) -> NewFile:
    stem = filename.split("-")
    name = project or stem[0]
    filetype = "bdist_wheel" if filename.endswith(".whl") else "sdist"
    if version is None:
        version = stem[1].removesuffix(".tar.gz").removesuffix(".zip")
    return NewFile(
        filename=filename,
        project=normalize(name),
        display_name=name,
        version=version,
        filetype=filetype,
        size=len(body),
        sha256=hashlib.sha256(body).hexdigest(),
        blake2_256=hashlib.blake2b(body, digest_size=32).hexdigest(),
        md5=hashlib.md5(body).hexdigest(),
        core_metadata=core_metadata,
        requires_python=requires_python,
        summary="a test package",
        fields={"name": (name,), "version": (version,)},
        uploader=uploader,
        provenance=provenance,
    )


def add(store: PrivateStoreAPI, new: NewFile, body: bytes, *, admin: bool = False) -> bool:
    """As the publish service adds a file: the upload rule re-checked under the write lock."""
    uploader = new.uploader
    with store.files.temporary_file() as tmp:
        tmp.write_bytes(body)
        if uploader is None:
            return store.add_file(new, tmp)
        return store.add_file(
            new, tmp, allowed=lambda roles: access.may_upload(uploader, roles, admin=admin)
        )


def may_upload(store: PrivateStoreAPI, user: str, project: str, *, admin: bool) -> bool:
    return access.may_upload(user, store.project_roles(normalize(project)), admin=admin)


def upload(
    store: PrivateStoreAPI, filename: str = "foo-1.0-py3-none-any.whl", body: bytes | None = None,
    *, admin: bool = False, **kwargs: object,
) -> bool:
    body = filename.encode() + b" body" if body is None else body
    return add(store, new_file(filename, body, **kwargs), body, admin=admin)  # type: ignore[arg-type]


def filenames(store: PrivateStoreAPI, project: str = "foo") -> list[str]:
    return [f.filename for f in store.project_page(normalize(project)).files]


def blob_files(store: PrivateStoreAPI) -> set[str]:
    assert isinstance(store.files, PrivateFiles)
    return {path.name for path in store.files.blobs.glob("*/*/*")}


def temp_files(store: PrivateStoreAPI) -> list[Path]:
    assert isinstance(store.files, PrivateFiles)
    return list(store.files.tmp.iterdir())


# ---- adding files ----


def test_add_file_makes_it_visible(store: PrivateStoreAPI) -> None:
    body = b"the wheel"
    assert upload(store, body=body, core_metadata=METADATA, requires_python=">=3.8")
    page = store.project_page(normalize("foo"))
    (dist,) = page.files
    assert dist.filename == "foo-1.0-py3-none-any.whl"
    assert dist.hashes == {"sha256": hashlib.sha256(body).hexdigest()}
    assert dist.size == len(body)
    assert dist.requires_python == ">=3.8"
    assert dist.core_metadata == {"sha256": hashlib.sha256(METADATA).hexdigest()}
    assert dist.origin is Origin.PRIVATE
    assert dist.upload_time is not None and dist.upload_time.tzinfo is not None
    assert page.versions == ("1.0",)
    opened = store.open_file(normalize("foo"), dist.filename)
    assert isinstance(opened, LocalFile)
    assert opened.path.read_bytes() == body and opened.size == len(body)
    assert opened.sha256 == hashlib.sha256(body).hexdigest()
    metadata = store.open_metadata(normalize("foo"), dist.filename)
    assert metadata.path.read_bytes() == METADATA and metadata.size == len(METADATA)
    assert store.has_project(normalize("foo"))
    assert store.list_projects().names == ("foo",)
    assert store.file_fields(dist.filename) == {"name": ["foo"], "version": ["1.0"]}
    assert temp_files(store) == []  # the body was moved, the metadata temp file removed


def test_without_metadata(store: PrivateStoreAPI) -> None:
    upload(store)
    (dist,) = store.project_page(normalize("foo")).files
    assert dist.core_metadata is False
    with pytest.raises(NotFound):
        store.open_metadata(normalize("foo"), dist.filename)


def test_display_name_and_normalisation(store: PrivateStoreAPI) -> None:
    upload(store, "My_Pkg-1.0-py3-none-any.whl", project="My_Pkg")
    assert store.list_projects().names == ("My_Pkg",)
    for spelling in ("my-pkg", "MY_PKG", "my.pkg", "my__pkg"):
        assert store.has_project(normalize(spelling))
        assert filenames(store, spelling) == ["My_Pkg-1.0-py3-none-any.whl"]


def test_identical_duplicate_returns_false(store: PrivateStoreAPI) -> None:
    assert upload(store, body=b"same")
    assert not upload(store, body=b"same")
    assert filenames(store) == ["foo-1.0-py3-none-any.whl"]
    assert temp_files(store) == []


def test_same_filename_other_bytes_is_rejected(store: PrivateStoreAPI) -> None:
    upload(store, body=b"first")
    with pytest.raises(StoreRejected) as caught:
        upload(store, body=b"second")
    assert caught.value.kind == "file_exists"  # worded by the publish service
    assert (caught.value.filename, caught.value.blake2_256) == (
        "foo-1.0-py3-none-any.whl", hashlib.blake2b(b"first", digest_size=32).hexdigest()
    )
    assert store.open_file(normalize("foo"), "foo-1.0-py3-none-any.whl").path.read_bytes() == b"first"


def test_same_bytes_other_filename_is_rejected(store: PrivateStoreAPI) -> None:
    upload(store, "foo-1.0-py3-none-any.whl", body=b"identical")
    with pytest.raises(StoreRejected) as caught:
        upload(store, "foo-1.0-py2.py3-none-any.whl", body=b"identical")
    assert caught.value.kind == "file_exists"
    assert caught.value.filename == "foo-1.0-py3-none-any.whl"
    assert filenames(store) == ["foo-1.0-py3-none-any.whl"]


def test_find_duplicate(store: PrivateStoreAPI) -> None:
    new = new_file(body=b"x")
    assert store.find_duplicate(new) is False
    add(store, new, b"x")
    assert store.find_duplicate(new) is True
    with pytest.raises(StoreRejected):
        store.find_duplicate(new_file(body=b"y"))


def test_one_sdist_per_release(store: PrivateStoreAPI) -> None:
    assert upload(store, "foo-1.0.tar.gz")
    with pytest.raises(StoreRejected) as caught:
        upload(store, "foo-1.0.zip")
    assert caught.value.kind == "sdist_exists"
    # wheels of the same release and sdists of other releases are fine
    assert upload(store, "foo-1.0-py3-none-any.whl")
    assert upload(store, "foo-1.1.tar.gz")
    assert sorted(filenames(store)) == ["foo-1.0-py3-none-any.whl", "foo-1.0.tar.gz", "foo-1.1.tar.gz"]


def test_one_sdist_per_release_compares_canonical_versions(store: PrivateStoreAPI) -> None:
    # the store records str(Version(...)), so its duplicate check must compare that too
    assert upload(store, "foo-1.0.post1.tar.gz", version="1.0.post1")
    with pytest.raises(StoreRejected):
        upload(store, "foo-1.0-post1.zip", version="1.0-post1")


def test_many_versions_listed(store: PrivateStoreAPI) -> None:
    for version in ("1.0", "1.1", "2.0"):
        upload(store, f"foo-{version}-py3-none-any.whl")
    assert store.project_page(normalize("foo")).versions == ("1.0", "1.1", "2.0")


def test_unknown_project_and_file(store: PrivateStoreAPI) -> None:
    with pytest.raises(NotFound):
        store.project_page(normalize("nope"))
    upload(store)
    with pytest.raises(NotFound):
        store.open_file(normalize("foo"), "foo-9.9-py3-none-any.whl")
    with pytest.raises(NotFound):
        store.open_file(normalize("bar"), "foo-1.0-py3-none-any.whl")  # right file, wrong project
    assert store.file_fields("nope.whl") is None
    assert not store.has_project(normalize("nope"))


# ---- yank ----


def test_yank_and_unyank(store: PrivateStoreAPI) -> None:
    upload(store, "foo-1.0-py3-none-any.whl")
    upload(store, "foo-1.0.tar.gz")
    upload(store, "foo-2.0.tar.gz")
    assert store.yank(normalize("foo"), "1.0", "broken") == 2
    by_name = {f.filename: f for f in store.project_page(normalize("foo")).files}
    assert by_name["foo-1.0.tar.gz"].yanked and by_name["foo-1.0.tar.gz"].yanked_reason == "broken"
    assert by_name["foo-1.0-py3-none-any.whl"].yanked
    assert not by_name["foo-2.0.tar.gz"].yanked
    assert store.yank(normalize("foo"), "1.0", "", undo=True) == 2
    for dist in store.project_page(normalize("foo")).files:
        assert not dist.yanked and dist.yanked_reason == ""


def test_yank_without_reason(store: PrivateStoreAPI) -> None:
    upload(store)
    store.yank(normalize("foo"), "1.0", "")
    (dist,) = store.project_page(normalize("foo")).files
    assert dist.yanked and dist.yanked_reason == ""


def test_yank_matches_the_canonical_version(store: PrivateStoreAPI) -> None:
    upload(store, "foo-1.0rc1-py3-none-any.whl", version="1.0rc1")
    assert store.yank(normalize("foo"), "1.0-RC1", "x") == 1
    assert store.yank(normalize("foo"), "v1.0.rc1", "", undo=True) == 1


@pytest.mark.parametrize("version", ["9.9", "not a version!"])
def test_yank_unknown_version(store: PrivateStoreAPI, version: str) -> None:
    upload(store)
    with pytest.raises(NotFound):
        store.yank(normalize("foo"), version, "x")
    with pytest.raises(NotFound):
        store.yank(normalize("bar"), "1.0", "x")


# ---- remove and tombstones ----


def test_remove_version_keeps_others_and_tombstones_the_filenames(store: PrivateStoreAPI) -> None:
    upload(store, "foo-1.0-py3-none-any.whl", body=b"one")
    upload(store, "foo-2.0-py3-none-any.whl", body=b"two")
    assert store.remove(normalize("foo"), "1.0", forget_name=False) == 1
    assert filenames(store) == ["foo-2.0-py3-none-any.whl"]
    assert hashlib.sha256(b"one").hexdigest() not in blob_files(store)  # body collected
    with pytest.raises(NotFound):
        store.open_file(normalize("foo"), "foo-1.0-py3-none-any.whl")
    for body in (b"one", b"other bytes"):
        with pytest.raises(StoreRejected) as caught:
            upload(store, "foo-1.0-py3-none-any.whl", body=body)
        assert caught.value.kind == "filename_removed"
    assert upload(store, "foo-1.0.post1-py3-none-any.whl", body=b"one")  # the bytes are free again


def test_remove_project_reserves_the_name(store: PrivateStoreAPI) -> None:
    upload(store, "foo-1.0-py3-none-any.whl", uploader="alice")
    assert store.remove(normalize("foo"), None, forget_name=False) == 1
    assert store.has_project(normalize("foo"))  # still private: upstream cannot take it over
    assert filenames(store) == []
    assert store.list_projects().names == ("foo",)
    assert may_upload(store, "alice", "foo", admin=False)
    assert not may_upload(store, "mallory", "foo", admin=False)
    with pytest.raises(StoreRejected):
        upload(store, "foo-1.0-py3-none-any.whl", uploader="alice")
    assert upload(store, "foo-1.1-py3-none-any.whl", uploader="alice")


def test_remove_project_and_forget_the_name(store: PrivateStoreAPI) -> None:
    upload(store, "foo-1.0-py3-none-any.whl", uploader="alice")
    store.remove(normalize("foo"), None, forget_name=True)
    assert not store.has_project(normalize("foo"))
    assert store.list_projects().names == ()
    with pytest.raises(NotFound):
        store.project_page(normalize("foo"))
    assert store.roles(normalize("foo")) == []
    assert blob_files(store) == set()
    # anyone may claim the name again, but old filenames stay burnt
    assert may_upload(store, "mallory", "foo", admin=False)
    with pytest.raises(StoreRejected):
        upload(store, "foo-1.0-py3-none-any.whl", uploader="mallory")
    assert upload(store, "foo-2.0-py3-none-any.whl", uploader="mallory")
    assert store.roles(normalize("foo")) == [("mallory", "owner")]


def test_remove_unknown(store: PrivateStoreAPI) -> None:
    with pytest.raises(NotFound):
        store.remove(normalize("nope"), None, forget_name=False)
    upload(store)
    with pytest.raises(NotFound):
        store.remove(normalize("foo"), "9.9", forget_name=False)
    assert filenames(store) == ["foo-1.0-py3-none-any.whl"]


def test_shared_metadata_blob_survives_removing_one_file(store: PrivateStoreAPI) -> None:
    # two wheels of one release carry byte-identical METADATA: one blob, two references
    upload(store, "foo-1.0-py3-none-any.whl", body=b"w1", core_metadata=METADATA)
    upload(store, "foo-1.0-cp312-cp312-linux_x86_64.whl", body=b"w2", core_metadata=METADATA)
    upload(store, "foo-2.0-py3-none-any.whl", body=b"w3")
    store.remove(normalize("foo"), "2.0", forget_name=False)
    for name in ("foo-1.0-py3-none-any.whl", "foo-1.0-cp312-cp312-linux_x86_64.whl"):
        assert store.open_metadata(normalize("foo"), name).path.read_bytes() == METADATA


# ---- permissions ----


def test_first_uploader_owns(store: PrivateStoreAPI) -> None:
    upload(store, uploader="alice")
    assert store.roles(normalize("foo")) == [("alice", "owner")]
    assert may_upload(store, "alice", "foo", admin=False)
    assert not may_upload(store, "bob", "foo", admin=False)
    assert may_upload(store, "bob", "foo", admin=True)
    assert may_upload(store, "bob", "new-project", admin=False)  # new names are free


def test_others_need_a_grant(store: PrivateStoreAPI) -> None:
    upload(store, uploader="alice")
    with pytest.raises(StoreRejected) as caught:
        upload(store, "foo-1.1-py3-none-any.whl", uploader="bob")
    assert caught.value.kind == "forbidden"
    assert filenames(store) == ["foo-1.0-py3-none-any.whl"]
    assert temp_files(store) == []
    store.grant(normalize("foo"), "bob")
    assert upload(store, "foo-1.1-py3-none-any.whl", uploader="bob")
    assert store.roles(normalize("foo")) == [("alice", "owner"), ("bob", "maintainer")]
    # a grant of another role updates it
    store.grant(normalize("foo"), "bob", "owner")
    assert ("bob", "owner") in store.roles(normalize("foo"))
    assert store.revoke(normalize("foo"), "bob")
    assert not store.revoke(normalize("foo"), "bob")
    with pytest.raises(StoreRejected):
        upload(store, "foo-1.2-py3-none-any.whl", uploader="bob")


def test_admin_uploads_anywhere(store: PrivateStoreAPI) -> None:
    upload(store, uploader="alice")
    assert upload(store, "foo-1.1-py3-none-any.whl", uploader="root", admin=True)
    # the admin did not become an owner of someone else's project
    assert store.roles(normalize("foo")) == [("alice", "owner")]


def test_grant_needs_the_project(store: PrivateStoreAPI) -> None:
    with pytest.raises(NotFound):
        store.grant(normalize("nope"), "bob")


def test_upload_without_uploader_has_no_owner(store: PrivateStoreAPI) -> None:
    upload(store, uploader=None)
    assert store.roles(normalize("foo")) == []
    assert may_upload(store, "anyone", "foo", admin=False)


# ---- page caching across processes ----


def test_pages_are_cached(store: PrivateStoreAPI) -> None:
    upload(store)
    settle(store)  # a node also hears its own write's notification (and reloads once)
    first = store.project_page(normalize("foo"))
    assert store.project_page(normalize("foo")) is first


def test_write_from_another_instance_refreshes_pages(store: PrivateStoreAPI, other: PrivateStoreAPI) -> None:
    upload(store, "foo-1.0-py3-none-any.whl")
    before = store.project_page(normalize("foo"))
    settle(other)
    assert other.project_page(normalize("foo")).files == before.files

    upload(other, "foo-1.1-py3-none-any.whl")
    settle(store)
    after = store.project_page(normalize("foo"))
    assert [f.filename for f in after.files] == ["foo-1.0-py3-none-any.whl", "foo-1.1-py3-none-any.whl"]
    assert after.revision != before.revision

    other.yank(normalize("foo"), "1.0", "bad")
    settle(store)
    assert store.project_page(normalize("foo")).files[0].yanked

    other.remove(normalize("foo"), "1.1", forget_name=False)
    settle(store)
    assert filenames(store) == ["foo-1.0-py3-none-any.whl"]

    other.remove(normalize("foo"), None, forget_name=True)
    settle(store)
    with pytest.raises(NotFound):
        store.project_page(normalize("foo"))


def test_new_project_from_another_instance(store: PrivateStoreAPI, other: PrivateStoreAPI) -> None:
    with pytest.raises(NotFound):
        store.project_page(normalize("foo"))
    upload(other)
    settle(store)
    assert filenames(store) == ["foo-1.0-py3-none-any.whl"]
    assert store.list_projects().names == ("foo",)


def test_grant_from_another_instance(store: PrivateStoreAPI, other: PrivateStoreAPI) -> None:
    upload(store, uploader="alice")
    assert not may_upload(store, "bob", "foo", admin=False)
    other.grant(normalize("foo"), "bob")
    assert may_upload(store, "bob", "foo", admin=False)


def test_revision_changes_on_every_visible_change(store: PrivateStoreAPI) -> None:
    upload(store)
    seen = {store.project_page(normalize("foo")).revision}
    upload(store, "foo-1.1-py3-none-any.whl")
    seen.add(store.project_page(normalize("foo")).revision)
    store.yank(normalize("foo"), "1.1", "")
    seen.add(store.project_page(normalize("foo")).revision)
    store.yank(normalize("foo"), "1.1", "", undo=True)
    seen.add(store.project_page(normalize("foo")).revision)
    store.remove(normalize("foo"), "1.1", forget_name=False)
    seen.add(store.project_page(normalize("foo")).revision)
    assert len(seen) == 5


# ---- garbage collection and crashes ----


def test_collect_garbage(store: PrivateStoreAPI) -> None:
    assert isinstance(store.files, PrivateFiles)
    upload(store, body=b"kept", core_metadata=METADATA)
    orphan_sha = hashlib.sha256(b"orphan").hexdigest()
    orphan = store.files.path(orphan_sha)
    orphan.parent.mkdir(parents=True, exist_ok=True)
    orphan.write_bytes(b"orphan")
    old_temp = store.files.tmp / "upload-old.part"
    old_temp.write_bytes(b"half an upload")  # nobody holds its lock: its writer died

    with store.files.temporary_file() as live_temp:
        live_temp.write_bytes(b"an upload still arriving")
        assert store.collect_garbage() == 2
        assert not orphan.exists() and not old_temp.exists()
        assert live_temp.exists()  # locked by an upload in progress
    assert blob_files(store) == {hashlib.sha256(b"kept").hexdigest(), hashlib.sha256(METADATA).hexdigest()}
    assert store.open_file(normalize("foo"), "foo-1.0-py3-none-any.whl").path.read_bytes() == b"kept"
    assert store.collect_garbage() == 0


def test_collect_garbage_never_removes_a_referenced_blob(store: PrivateStoreAPI) -> None:
    for version in ("1.0", "1.1", "1.2"):
        upload(store, f"foo-{version}-py3-none-any.whl", core_metadata=METADATA + version.encode())
    before = blob_files(store)
    assert len(before) == 6
    assert store.collect_garbage() == 0
    assert blob_files(store) == before


def test_crash_leftovers_are_invisible_and_collected(directory: Path, backends: Backends) -> None:
    # a process died after writing its temp body, and another after moving a body into
    # place but before its record committed
    crashed = backends.open_private(directory)
    assert isinstance(crashed.files, PrivateFiles)
    upload(crashed, "foo-1.0-py3-none-any.whl", body=b"committed")
    leftover = crashed.files.tmp / "upload-crashed.part"
    leftover.write_bytes(b"partial")
    orphan = crashed.files.path(hashlib.sha256(b"uncommitted").hexdigest())
    orphan.parent.mkdir(parents=True, exist_ok=True)
    orphan.write_bytes(b"uncommitted")
    backends.close(crashed)

    restarted = backends.open_private(directory)
    try:
        assert filenames(restarted) == ["foo-1.0-py3-none-any.whl"]
        assert restarted.list_projects().names == ("foo",)
        with pytest.raises(NotFound):
            restarted.open_file(normalize("foo"), "foo-2.0-py3-none-any.whl")
        assert restarted.collect_garbage() == 2
        assert not leftover.exists() and not orphan.exists()
        assert restarted.open_file(normalize("foo"), "foo-1.0-py3-none-any.whl").path.read_bytes() == b"committed"
        # the same bytes can now be uploaded properly
        assert upload(restarted, "foo-2.0-py3-none-any.whl", body=b"uncommitted")
        assert restarted.open_file(normalize("foo"), "foo-2.0-py3-none-any.whl").path.read_bytes() == b"uncommitted"
    finally:
        backends.close(restarted)


def test_failed_add_leaves_nothing_visible(store: PrivateStoreAPI) -> None:
    upload(store, uploader="alice")
    body = b"rejected upload"
    with pytest.raises(StoreRejected):
        upload(store, "foo-2.0-py3-none-any.whl", body=body, uploader="bob")
    assert filenames(store) == ["foo-1.0-py3-none-any.whl"]
    assert hashlib.sha256(body).hexdigest() not in blob_files(store)
    assert temp_files(store) == []


# ---- concurrency ----


def test_concurrent_identical_uploads_from_separate_instances(
    directory: Path, store: PrivateStoreAPI, backends: Backends
) -> None:
    body = b"one body, eight uploaders"
    workers = 8
    barrier = threading.Barrier(workers)
    results: list[bool] = []
    errors: list[BaseException] = []
    lock = threading.Lock()

    mines = [backends.open_private(directory) for _ in range(workers)]

    def work(mine: PrivateStoreAPI) -> None:
        try:
            with mine.files.temporary_file() as tmp:
                tmp.write_bytes(body)
                barrier.wait(timeout=10)
                outcome = mine.add_file(new_file(body=body), tmp)
            with lock:
                results.append(outcome)
        except BaseException as exc:
            with lock:
                errors.append(exc)

    threads = [threading.Thread(target=work, args=(mine,)) for mine in mines]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join(timeout=60)
    assert errors == []
    assert sorted(results) == [False] * (workers - 1) + [True]
    settle(store)
    assert filenames(store) == ["foo-1.0-py3-none-any.whl"]
    assert store.open_file(normalize("foo"), "foo-1.0-py3-none-any.whl").path.read_bytes() == body
    assert temp_files(store) == []
    assert store.roles(normalize("foo")) == [("alice", "owner")]


def test_concurrent_different_files_from_separate_instances(
    directory: Path, store: PrivateStoreAPI, backends: Backends
) -> None:
    workers = 8
    barrier = threading.Barrier(workers)
    errors: list[BaseException] = []
    mines = [backends.open_private(directory) for _ in range(workers)]

    def work(index: int) -> None:
        mine = mines[index]
        try:
            body = f"body {index}".encode()
            barrier.wait(timeout=10)
            assert upload(mine, f"foo-1.{index}-py3-none-any.whl", body=body)
            assert mine.project_page(normalize("foo")).file(f"foo-1.{index}-py3-none-any.whl") is not None
        except BaseException as exc:
            errors.append(exc)

    threads = [threading.Thread(target=work, args=(i,)) for i in range(workers)]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join(timeout=60)
    assert errors == []
    settle(store)
    assert len(filenames(store)) == workers


def test_instances_opening_a_new_directory_together(tmp_path: Path) -> None:
    # worker processes starting at once on an empty data directory: the switch of a new
    # database to WAL got "database is locked" at once, now and then (see stores/sqlite.py)
    workers = 8
    errors: list[BaseException] = []
    for attempt in range(10):
        directory = tmp_path / f"fresh-{attempt}"
        barrier = threading.Barrier(workers)

        def work(barrier: threading.Barrier = barrier, directory: Path = directory) -> None:
            try:
                barrier.wait(timeout=10)
                PrivateStore(directory).close()
            except (sqlite3.Error, OSError, threading.BrokenBarrierError) as exc:
                errors.append(exc)

        threads = [threading.Thread(target=work) for _ in range(workers)]
        for thread in threads:
            thread.start()
        for thread in threads:
            thread.join(timeout=60)
    assert errors == []


# ---- what the legacy JSON API reads ----


def test_project_serial_and_file_digests(store: PrivateStoreAPI) -> None:
    foo = normalize("foo")
    assert store.project_serial(foo) is None and store.file_digests(foo) == {}
    upload(store, "foo-1.0-py3-none-any.whl", b"wheel body")
    upload(store, "foo-1.0.tar.gz", b"sdist body")
    assert store.project_serial(foo) == 2
    store.yank(foo, "1.0", "x")
    assert store.project_serial(foo) == 3
    body = b"sdist body"
    assert store.file_digests(foo)["foo-1.0.tar.gz"] == {
        "sha256": hashlib.sha256(body).hexdigest(),
        "blake2_256": hashlib.blake2b(body, digest_size=32).hexdigest(),
        "md5": hashlib.md5(body).hexdigest(),
    }
    assert set(store.file_digests(foo)) == {"foo-1.0-py3-none-any.whl", "foo-1.0.tar.gz"}


# ---- read restrictions ----


def test_restrict_and_readers(store: PrivateStoreAPI, other: PrivateStoreAPI) -> None:
    foo = normalize("foo")
    upload(store, uploader="alice")
    upload(store, "bar-1.0-py3-none-any.whl", uploader="alice")
    assert not store.restricted_readers()  # nothing restricted
    assert store.restrict(foo)
    assert not store.restrict(foo)  # already
    store.grant(foo, "bob", "reader")
    restrictions = ReadRestrictions(store.restricted_readers())  # own writes show at once
    assert dict(restrictions.readers) == {foo: frozenset({"alice", "bob"})}
    for user, admin, allowed in [("alice", False, True), ("bob", False, True),
                                 ("carol", False, False), (None, False, False),
                                 ("root", True, True)]:
        assert restrictions.may_read(foo, user, admin=admin) is allowed, user
        assert restrictions.may_read(normalize("bar"), user, admin=admin), user
        assert (foo in restrictions.hidden_from(user, admin=admin)) is not allowed, user
    # a reader may read, not upload
    assert not may_upload(store, "bob", "foo", admin=False)
    with pytest.raises(StoreRejected):
        upload(store, "foo-1.1-py3-none-any.whl", uploader="bob")
    assert store.roles(foo) == [("bob", "reader"), ("alice", "owner")]
    # another process sees the change within the recheck interval
    deadline = time.monotonic() + 2
    while not other.restricted_readers():
        assert time.monotonic() < deadline
        time.sleep(0.05)
    assert store.restrict(foo, undo=True)
    assert not store.restricted_readers()
    with pytest.raises(NotFound):
        store.restrict(normalize("nope"))


def test_readers_alone_do_not_hold_a_name(store: PrivateStoreAPI) -> None:
    """A name whose uploaders are all gone is free to claim, even with readers left on it;
    a reader claiming it becomes its owner."""
    foo = normalize("foo")
    upload(store, uploader="alice")
    store.grant(foo, "bob", "reader")
    store.revoke(foo, "alice")
    assert may_upload(store, "bob", "foo", admin=False)
    assert upload(store, "foo-1.1-py3-none-any.whl", uploader="bob")
    assert store.roles(foo) == [("bob", "owner")]
    with pytest.raises(ValueError):
        store.grant(foo, "carol", "superuser")


def test_databases_without_the_restricted_column_are_migrated(directory: Path) -> None:
    """A data dir written before read restrictions existed opens, keeps its data, and can
    restrict (two stores opening it at once both cope)."""
    directory.mkdir(parents=True)
    old = sqlite3.connect(directory / "private.sqlite3")
    old.executescript(
        "CREATE TABLE projects (name TEXT PRIMARY KEY, display_name TEXT NOT NULL,"
        " created TEXT NOT NULL, serial INTEGER NOT NULL DEFAULT 0);"
        "INSERT INTO projects VALUES ('foo', 'Foo', '2024-01-01T00:00:00+00:00', 3);"
    )
    old.close()
    stores = [PrivateStore(directory), PrivateStore(directory)]
    try:
        assert stores[0].list_projects().names == ("Foo",)
        assert stores[0].project_serial(normalize("foo")) == 3
        assert not stores[1].restricted_readers()
        assert stores[1].restrict(normalize("foo"))
        assert normalize("foo") in stores[1].restricted_readers()
    finally:
        for opened in stores:
            opened.close()


def test_a_provenance_object_is_kept_with_its_file_and_removed_with_it(
    store: PrivateStoreAPI,
) -> None:
    provenance = b'{"version": 1, "attestation_bundles": []}'
    assert upload(store, provenance=provenance)
    assert upload(store, "foo-2.0-py3-none-any.whl")
    first, second = store.project_page(normalize("foo")).files
    assert first.provenance and not second.provenance
    kept = store.open_provenance(normalize("foo"), first.filename)
    assert kept.path.read_bytes() == provenance
    assert kept.sha256 == hashlib.sha256(provenance).hexdigest()
    with pytest.raises(NotFound):
        store.open_provenance(normalize("foo"), second.filename)
    assert store.collect_garbage() == 0 and kept.path.exists()  # referenced: kept
    store.remove(normalize("foo"), "1.0", forget_name=False)
    assert not kept.path.exists()


def test_databases_without_the_provenance_column_are_migrated(directory: Path) -> None:
    """A data dir written before attestations were kept opens with its files, which offer no
    provenance, and takes attested files."""
    directory.mkdir(parents=True)
    old = sqlite3.connect(directory / "private.sqlite3")
    old.executescript(
        "CREATE TABLE projects (name TEXT PRIMARY KEY, display_name TEXT NOT NULL,"
        " created TEXT NOT NULL, serial INTEGER NOT NULL DEFAULT 0,"
        " restricted INTEGER NOT NULL DEFAULT 0);"
        "CREATE TABLE files (filename TEXT PRIMARY KEY, project TEXT NOT NULL, version TEXT NOT"
        " NULL, filetype TEXT NOT NULL, size INTEGER NOT NULL, sha256 TEXT NOT NULL, blake2_256"
        " TEXT NOT NULL UNIQUE, md5 TEXT NOT NULL, metadata_sha256 TEXT, requires_python TEXT,"
        " summary TEXT, upload_time TEXT NOT NULL, uploader TEXT, yanked INTEGER NOT NULL DEFAULT"
        " 0, yanked_reason TEXT NOT NULL DEFAULT '', fields BLOB NOT NULL);"
        "INSERT INTO projects VALUES ('foo', 'Foo', '2024-01-01T00:00:00+00:00', 1, 0);"
        "INSERT INTO files VALUES ('foo-0.1.tar.gz', 'foo', '0.1', 'sdist', 3, 'aa', 'bb', 'cc',"
        " NULL, NULL, NULL, '2024-01-01T00:00:00+00:00', 'alice', 0, '', '{}');"
    )
    old.close()
    stores = [PrivateStore(directory), PrivateStore(directory)]
    try:
        (dist,) = stores[0].project_page(normalize("foo")).files
        assert dist.filename == "foo-0.1.tar.gz" and not dist.provenance
        assert upload(stores[1], provenance=b'{"version": 1, "attestation_bundles": []}',
                      admin=True)
        assert [d.provenance for d in stores[1].project_page(normalize("foo")).files] == [
            False, True
        ]
    finally:
        for opened in stores:
            opened.close()


# ---------------------------------------------------------------------- the warm read path


def test_warm_reads_make_no_query_and_see_another_process_change_at_once(
    sqlite_store: PrivateStore, sqlite_other: PrivateStore
) -> None:
    store, other = sqlite_store, sqlite_other
    upload(store)
    foo = normalize("foo")
    assert other.has_project(foo) and not other.has_project(normalize("bar"))
    other.project_page(foo), other.list_projects()
    statements: list[str] = []
    other._reader.set_trace_callback(statements.append)
    for _ in range(3):
        assert other.has_project(foo)
        assert [f.filename for f in other.project_page(foo).files] == ["foo-1.0-py3-none-any.whl"]
        assert other.list_projects().names == ("foo",)
    # the database backstop may be asked once a second, nothing else
    assert [s for s in statements if "data_version" not in s] == []

    upload(store, "bar-1.0-py3-none-any.whl")  # "another worker" commits
    assert other.has_project(normalize("bar")), "seen without waiting for the backstop"
    assert other.list_projects().names == ("bar", "foo")
    upload(store, "foo-2.0-py3-none-any.whl")
    assert len(other.project_page(foo).files) == 2


def test_a_commit_that_finds_the_disk_full_leaves_no_body(tmp_path: Path) -> None:
    """The body is moved in under the write lock before the record commits; when SQLite then
    finds no room, the body goes again and nothing is recorded."""
    with mounted(tmp_path / "disk", "4m") as disk:
        store = PrivateStore(disk / "private")
        try:
            assert upload(store, "foo-1.0.tar.gz")
            before = blob_files(store)
            body = b"an sdist body" * 100
            new = new_file("foo-2.0.tar.gz", body)
            with store.files.temporary_file() as tmp:
                tmp.write_bytes(body)  # received while there was room
                store._reader.execute("PRAGMA wal_checkpoint(TRUNCATE)")  # the log has no room
                filler = fill(disk)
                with pytest.raises(sqlite3.OperationalError) as failure:
                    store.add_file(new, tmp)
                assert is_disk_full(failure.value)
            assert blob_files(store) == before
            assert filenames(store) == ["foo-1.0.tar.gz"]
            assert list(store.files.tmp.iterdir()) == []
            filler.unlink()
        finally:
            store.close()
