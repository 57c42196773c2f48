"""pyproxy.publish.service.Publisher: the one pipeline uploads and imports go through, in its
order (form, rights, file, store), with the store's refusals worded for the uploader.

Real files (tests/dists.py) into a real private store, on each backend (`backends`: SQLite,
then a cluster's PostgreSQL); the HTTP side is tested in tests/web/test_upload.py, the import
in tests/ops/test_transfer.py."""

from __future__ import annotations

import hashlib
import json
from pathlib import Path

import orjson
import pytest

from pyproxy.model import NormalizedName, NotFound, Unavailable, normalize
from pyproxy.publish.rejections import UploadRejected
from pyproxy.publish.service import (
    Kept,
    Published,
    Publisher,
    Received,
    Submission,
    Uploader,
    worded,
)
from pyproxy.stores.interfaces import PrivateStoreAPI
from pyproxy.stores.private import PrivateStore
from pyproxy.stores.private_files import PrivateFiles
from pyproxy.stores.private_schema import NewFile, StoreRejected
from tests.attestations import attest
from tests.dists import form_fields_for, make_sdist, make_wheel
from tests.stores.backends import Backends

ALICE, BOB = Uploader("alice"), Uploader("bob")


@pytest.fixture
def store(tmp_path: Path, backends: Backends) -> PrivateStoreAPI:
    return backends.open_private(tmp_path / "private")


@pytest.fixture
def publisher(store: PrivateStoreAPI) -> Publisher:
    return Publisher(store)


@pytest.fixture
def dists(tmp_path: Path) -> Path:
    return tmp_path / "dists"


async def publish(
    publisher: Publisher, path: Path, uploader: Uploader = ALICE, *, content: bytes | None = None,
    filename: str | None = None, no_file: bool = False, kept: Kept | None = None,
    **field_overrides: str | None,
) -> Published:
    """`path` as twine would send it; a None override drops that field."""
    fields = form_fields_for(path)
    for key, value in field_overrides.items():
        if value is None:
            fields.pop(key, None)
        else:
            fields[key] = [value]
    with publisher.receiving() as body:
        body.write(path.read_bytes() if content is None else content)
        submission = Submission(
            fields, None if no_file else filename or path.name, "application/octet-stream", body,
            kept,
        )
        return await publisher.publish(submission, uploader)


async def rejected(
    publisher: Publisher, path: Path, uploader: Uploader = ALICE, **kwargs: object
) -> UploadRejected:
    with pytest.raises(UploadRejected) as caught:
        await publish(publisher, path, uploader, **kwargs)  # type: ignore[arg-type]
    return caught.value


def stored_bodies(store: PrivateStoreAPI) -> set[str]:
    assert isinstance(store.files, PrivateFiles)
    return {path.name for path in store.files.blobs.glob("*/*/*")}


def temp_files(store: PrivateStoreAPI) -> list[Path]:
    assert isinstance(store.files, PrivateFiles)
    return list(store.files.tmp.iterdir())


# ------------------------------------------------------------------------------ the happy path


async def test_a_wheel_is_stored_with_its_digests_metadata_and_owner(
    publisher: Publisher, store: PrivateStoreAPI, dists: Path
) -> None:
    wheel = make_wheel(dists, "Demo_Pkg", "1.0", requires_python=">=3.9")
    assert await publish(publisher, wheel) is Published.STORED
    (dist,) = store.project_page(normalize("demo-pkg")).files
    data = wheel.read_bytes()
    assert dist.filename == wheel.name and dist.size == len(data)
    assert dist.hashes == {"sha256": hashlib.sha256(data).hexdigest()}
    assert dist.requires_python == ">=3.9"
    assert dist.core_metadata  # PEP 658, wheels only
    assert store.file_digests(normalize("demo-pkg"))[wheel.name] == {
        "sha256": hashlib.sha256(data).hexdigest(),
        "blake2_256": hashlib.blake2b(data, digest_size=32).hexdigest(),
        "md5": hashlib.md5(data).hexdigest(),
    }
    assert store.list_projects().names == ("Demo-Pkg",)  # as twine sends it
    assert store.roles(normalize("demo-pkg")) == [("alice", "owner")]
    assert temp_files(store) == []


async def test_an_sdist_keeps_no_metadata_file(
    publisher: Publisher, store: PrivateStoreAPI, dists: Path
) -> None:
    sdist = make_sdist(dists, "demo", "1.0")
    assert await publish(publisher, sdist) is Published.STORED
    (dist,) = store.project_page(normalize("demo")).files
    assert dist.core_metadata is False  # an sdist's PKG-INFO may leave dependencies dynamic


async def test_the_identical_file_again_writes_nothing(
    publisher: Publisher, store: PrivateStoreAPI, dists: Path
) -> None:
    wheel = make_wheel(dists, "demo", "1.0")
    await publish(publisher, wheel)
    serial, bodies = store.project_serial(normalize("demo")), stored_bodies(store)
    assert await publish(publisher, wheel) is Published.ALREADY_STORED
    assert store.project_serial(normalize("demo")) == serial and stored_bodies(store) == bodies
    assert temp_files(store) == []


async def test_the_identical_file_again_writes_back_its_damaged_or_lost_bodies(
    publisher: Publisher, store: PrivateStoreAPI, dists: Path
) -> None:
    wheel = make_wheel(dists, "demo", "1.0")
    sha256 = hashlib.sha256(wheel.read_bytes()).hexdigest()
    attestations = json.dumps([json.loads(attest(wheel.name, sha256).model_dump_json())])
    await publish(publisher, wheel, attestations=attestations)
    assert isinstance(store.files, PrivateFiles)
    project = normalize("demo")
    body = store.files.path(sha256)
    metadata = store.open_metadata(project, wheel.name).path
    provenance = store.open_provenance(project, wheel.name).path
    kept = metadata.read_bytes(), provenance.read_bytes()
    body.write_bytes(bytes(255 - byte for byte in wheel.read_bytes()))  # same length
    metadata.unlink()
    provenance.unlink()
    serial = store.project_serial(project)
    assert await publish(publisher, wheel, attestations=attestations) is Published.REPAIRED
    assert body.read_bytes() == wheel.read_bytes()
    assert (metadata.read_bytes(), provenance.read_bytes()) == kept
    assert store.project_serial(project) == serial  # the record is untouched
    assert temp_files(store) == []
    assert await publish(publisher, wheel) is Published.ALREADY_STORED  # fine now: nothing


def test_received_hashes_and_counts_what_it_writes(publisher: Publisher) -> None:
    data = b"x" * 70_000 + b"tail"
    with publisher.receiving() as body:
        assert isinstance(body, Received)
        for start in range(0, len(data), 4096):
            body.write(data[start : start + 4096])
        body.close()
        assert body.path.read_bytes() == data and body.size == len(data)
        assert body.digests() == {
            "sha256": hashlib.sha256(data).hexdigest(),
            "blake2_256": hashlib.blake2b(data, digest_size=32).hexdigest(),
            "md5": hashlib.md5(data).hexdigest(),
        }
    assert not body.path.exists()  # not stored: removed


# ------------------------------------------------------------------------------ the order


async def test_a_bad_form_is_refused_before_the_rights_are_looked_at(
    publisher: Publisher, dists: Path
) -> None:
    await publish(publisher, make_wheel(dists, "demo", "1.0"))  # alice owns demo
    rejection = await rejected(publisher, make_wheel(dists, "demo", "2.0"), BOB, version=None)
    assert (rejection.status, rejection.kind) == (400, "invalid_metadata")
    assert "version" in rejection.message.lower()


async def test_no_file_is_refused_after_the_form_and_before_the_rights(
    publisher: Publisher, dists: Path
) -> None:
    await publish(publisher, make_wheel(dists, "demo", "1.0"))
    wheel = make_wheel(dists, "demo", "2.0")
    rejection = await rejected(publisher, wheel, BOB, no_file=True)
    assert rejection.message == "Upload payload does not have a file." and rejection.status == 400
    rejection = await rejected(publisher, wheel, BOB, no_file=True, version=None)
    assert rejection.kind == "invalid_metadata"


async def test_the_rights_are_checked_before_the_archive_is_read(
    publisher: Publisher, store: PrivateStoreAPI, dists: Path
) -> None:
    await publish(publisher, make_wheel(dists, "demo", "1.0"))
    wheel = make_wheel(dists, "demo", "2.0")
    garbage = b"not a zip file at all"
    digests = {"sha256_digest": hashlib.sha256(garbage).hexdigest(),
               "blake2_256_digest": hashlib.blake2b(garbage, digest_size=32).hexdigest()}
    rejection = await rejected(publisher, wheel, BOB, content=garbage, **digests)
    assert (rejection.status, rejection.kind) == (403, "forbidden")
    assert rejection.message == (
        "The user 'bob' isn't allowed to upload to project 'demo'."
        " An owner can allow it with: pyproxy grant demo bob"
    )
    # with the right, the same garbage is refused for what it is
    store.grant(normalize("demo"), "bob")
    rejection = await rejected(publisher, wheel, BOB, content=garbage, **digests)
    assert (rejection.status, rejection.kind) == (400, "invalid_file")
    assert rejection.message.startswith("Invalid distribution file.")
    assert temp_files(store) == []


async def test_the_file_is_checked_before_the_store_is_asked_about_duplicates(
    publisher: Publisher, dists: Path
) -> None:
    wheel = make_wheel(dists, "demo", "1.0")
    await publish(publisher, wheel)
    other = wheel.read_bytes() + b"\0"  # the same filename with other bytes, and a wrong digest
    rejection = await rejected(publisher, wheel, content=other)
    assert rejection.message.startswith("The digest supplied does not match")
    assert rejection.kind == "invalid_file"


async def test_admins_and_imports_need_no_role(
    publisher: Publisher, store: PrivateStoreAPI, dists: Path
) -> None:
    await publish(publisher, make_wheel(dists, "demo", "1.0"))
    for version, uploader in [("1.1", Uploader("root", admin=True)),
                              ("1.2", Uploader(None, admin=True))]:
        wheel = make_wheel(dists, "demo", version)
        assert await publish(publisher, wheel, uploader) is Published.STORED
    assert store.roles(normalize("demo")) == [("alice", "owner")]  # neither became an owner


# ------------------------------------------------------------------- the store's refusals, worded


async def test_the_same_filename_with_other_bytes(
    publisher: Publisher, dists: Path, tmp_path: Path
) -> None:
    first = make_wheel(dists, "demo", "1.0")
    await publish(publisher, first)
    second = make_wheel(tmp_path / "other", "demo", "1.0", modules={"demo/x.py": "X = 2\n"})
    assert second.name == first.name and second.read_bytes() != first.read_bytes()
    rejection = await rejected(publisher, second)
    blake2 = hashlib.blake2b(first.read_bytes(), digest_size=32).hexdigest()
    assert rejection.message == (
        f"File already exists ({first.name!r}, with blake2_256 hash {blake2!r})."
        " Use a different version or filename."
    )
    assert (rejection.status, rejection.kind) == (400, "duplicate")


async def test_a_removed_filename(publisher: Publisher, store: PrivateStoreAPI, dists: Path) -> None:
    wheel = make_wheel(dists, "demo", "1.0")
    await publish(publisher, wheel)
    store.remove(normalize("demo"), "1.0", forget_name=False)
    rejection = await rejected(publisher, wheel)
    assert rejection.message == (
        "This filename was previously used by a file that has since been deleted."
        " Use a different version."
    )
    assert (rejection.status, rejection.kind) == (400, "duplicate")


def _record(filename: str = "demo-1.0.tar.gz", uploader: str | None = "bob") -> NewFile:
    body = filename.encode()
    return NewFile(
        filename=filename, project=normalize("demo"), display_name="demo", version="1.0",
        filetype="sdist" if filename.endswith(".tar.gz") else "bdist_wheel", size=len(body),
        sha256=hashlib.sha256(body).hexdigest(),
        blake2_256=hashlib.blake2b(body, digest_size=32).hexdigest(),
        md5=hashlib.md5(body).hexdigest(), core_metadata=None, requires_python=None,
        summary=None, fields={}, uploader=uploader,
    )


@pytest.mark.parametrize(
    ("refusal", "status", "kind", "message"),
    [
        (StoreRejected("file_exists", filename="demo-1.0.tar.gz", blake2_256="ab" * 32), 400,
         "duplicate",
         f"File already exists ('demo-1.0.tar.gz', with blake2_256 hash {'ab' * 32!r})."
         " Use a different version or filename."),
        (StoreRejected("filename_removed"), 400, "duplicate",
         "This filename was previously used by a file that has since been deleted."
         " Use a different version."),
        (StoreRejected("sdist_removed", filename="Demo-1.0.tar.gz"), 400, "duplicate",
         "The sdist of this release was previously uploaded as 'Demo-1.0.tar.gz' and has since"
         " been deleted. Use a different version."),
        (StoreRejected("sdist_exists"), 400, "duplicate",
         "Only one sdist may be uploaded per release."),
        (StoreRejected("forbidden"), 403, "forbidden",
         "The user 'bob' isn't allowed to upload to project 'demo'."
         " An owner can allow it with: pyproxy grant demo bob"),
    ],
)
def test_every_store_refusal_in_the_uploaders_words(
    refusal: StoreRejected, status: int, kind: str, message: str
) -> None:
    rejection = worded(refusal, _record())
    assert (rejection.status, rejection.kind, rejection.message) == (status, kind, message)


class _Racing(PrivateStore):
    """Another uploader claims the name between the service's check and its write."""

    claim: NewFile | None = None

    def find_duplicate(self, new: NewFile) -> bool:
        if self.claim is not None:
            claim, self.claim = self.claim, None
            other = PrivateStore(self.directory)  # another worker process, as SQLite sees it
            try:
                with other.files.temporary_file() as tmp:
                    tmp.write_bytes(claim.filename.encode())
                    assert other.add_file(claim, tmp)
            finally:
                other.close()
        return super().find_duplicate(new)


async def test_the_rights_are_checked_again_under_the_write_lock(
    tmp_path: Path, dists: Path
) -> None:
    store = _Racing(tmp_path / "private")
    try:
        store.claim = _record("demo-0.1-py3-none-any.whl")
        rejection = await rejected(Publisher(store), make_wheel(dists, "demo", "1.0"), ALICE)
        assert (rejection.status, rejection.kind) == (403, "forbidden")
        assert "pyproxy grant demo alice" in rejection.message
        files = store.project_page(normalize("demo")).files
        assert [f.filename for f in files] == ["demo-0.1-py3-none-any.whl"]
        assert store.roles(normalize("demo")) == [("bob", "owner")]
        assert list(store.files.tmp.iterdir()) == []
    finally:
        store.close()


# ------------------------------------------------------------------------------ imports


async def test_an_import_keeps_what_the_exporting_index_recorded(
    publisher: Publisher, store: PrivateStoreAPI, dists: Path
) -> None:
    wheel = make_wheel(dists, "demo", "1.0")
    kept = Kept(display_name="DEMO", upload_time="2020-01-02T03:04:05+00:00", yanked_reason="old")
    published = await publish(publisher, wheel, Uploader("carol", admin=True), kept=kept)
    assert published is Published.STORED
    (dist,) = store.project_page(normalize("demo")).files
    assert dist.upload_time is not None and dist.upload_time.year == 2020
    assert dist.yanked and dist.yanked_reason == "old"
    assert store.list_projects().names == ("DEMO",)
    assert store.roles(normalize("demo")) == [("carol", "owner")]


# ------------------------------------------------------------------------- claiming a new name


class Listing:
    """UpstreamNames with a fixed answer: which names upstream's list has, or that the list
    cannot be had; it records every name asked about."""

    def __init__(self, *names: str, down: bool = False) -> None:
        self.names = {normalize(name) for name in names}
        self.down = down
        self.asked: list[str] = []

    async def lists(self, name: NormalizedName) -> bool:
        self.asked.append(name)
        if self.down:
            raise Unavailable(
                "upstream index unavailable (answered HTTP 500) and no copy is cached"
            )
        return name in self.names


UPSTREAM_HAS_REQUESTS = (
    "The name 'requests' is a project on the upstream index, and a private upload would hide"
    " upstream's files from every client. An admin can make it private with:"
    " pyproxy reserve requests"
)


async def test_a_name_upstream_lists_is_not_claimed_by_a_plain_upload(
    store: PrivateStoreAPI, dists: Path
) -> None:
    listing = Listing("Requests", "urllib3")
    publisher = Publisher(store, upstream=listing)
    rejection = await rejected(publisher, make_wheel(dists, "requests", "1.0"))
    assert (rejection.status, rejection.kind, rejection.message) == (
        403, "forbidden", UPSTREAM_HAS_REQUESTS
    )
    assert listing.asked == ["requests"]
    assert not store.has_project(normalize("requests")) and temp_files(store) == []


async def test_after_a_reserve_the_first_uploader_claims_it(
    store: PrivateStoreAPI, dists: Path
) -> None:
    listing = Listing("requests")
    publisher = Publisher(store, upstream=listing)
    assert store.reserve(normalize("requests"), "requests")  # `pyproxy reserve requests`
    assert await publish(publisher, make_wheel(dists, "requests", "1.0")) is Published.STORED
    assert store.roles(normalize("requests")) == [("alice", "owner")]
    rejection = await rejected(publisher, make_wheel(dists, "requests", "1.1"), BOB)
    assert rejection.status == 403 and "pyproxy grant requests bob" in rejection.message
    assert listing.asked == []  # a private name is private: upstream is not consulted


async def test_admins_claim_any_name_without_asking_upstream(
    store: PrivateStoreAPI, dists: Path
) -> None:
    listing = Listing("requests", down=True)
    publisher = Publisher(store, upstream=listing, reserved_prefixes=["acme-"])
    root = Uploader("root", admin=True)
    for name in ("requests", "acme-widgets", "new-thing"):
        assert await publish(publisher, make_wheel(dists, name, "1.0"), root) is Published.STORED
    assert listing.asked == []


async def test_a_name_upstream_does_not_list_is_free(store: PrivateStoreAPI, dists: Path) -> None:
    listing = Listing("requests")
    publisher = Publisher(store, upstream=listing)
    assert await publish(publisher, make_wheel(dists, "Our_Tool", "1.0")) is Published.STORED
    assert listing.asked == ["our-tool"]  # normalised, as upstream's list is compared


async def test_no_upstream_means_every_new_name_is_free(publisher: Publisher, dists: Path) -> None:
    assert await publish(publisher, make_wheel(dists, "requests", "1.0")) is Published.STORED


async def test_without_upstreams_list_a_new_name_is_refused_not_guessed(
    store: PrivateStoreAPI, dists: Path
) -> None:
    publisher = Publisher(store, upstream=Listing(down=True))
    rejection = await rejected(publisher, make_wheel(dists, "new-thing", "1.0"))
    assert (rejection.status, rejection.kind) == (503, "upstream_unavailable")
    assert rejection.message == (
        "Cannot tell whether 'new-thing' is a project on the upstream index (upstream index"
        " unavailable (answered HTTP 500) and no copy is cached), so a new name is refused for"
        " now. Try again later, or an admin can make it private with: pyproxy reserve new-thing"
    )
    assert not store.has_project(normalize("new-thing"))
    root = Uploader("root", admin=True)
    assert await publish(publisher, make_wheel(dists, "new-thing", "1.0"), root) is Published.STORED
    # an existing private project needs no upstream answer
    store.grant(normalize("new-thing"), "alice")
    assert await publish(publisher, make_wheel(dists, "new-thing", "1.2")) is Published.STORED


@pytest.mark.parametrize("configured", ["acme-", "Acme_", "acme."])
async def test_a_reserved_prefix_is_never_looked_up_upstream(
    store: PrivateStoreAPI, dists: Path, configured: str
) -> None:
    listing = Listing()  # upstream does not have it: the prefix alone decides
    publisher = Publisher(store, upstream=listing, reserved_prefixes=[configured])
    rejection = await rejected(publisher, make_wheel(dists, "Acme.Widgets", "1.0"))
    assert (rejection.status, rejection.kind, rejection.message) == (
        403, "forbidden",
        "The name 'acme-widgets' is under a reserved prefix ([uploads] reserved_prefixes) and not"
        " yet a private project. An admin can make it private with: pyproxy reserve acme-widgets",
    )
    assert listing.asked == []
    store.reserve(normalize("acme-widgets"), "Acme.Widgets")
    assert await publish(publisher, make_wheel(dists, "Acme.Widgets", "1.0")) is Published.STORED
    assert await publish(publisher, make_wheel(dists, "acmeless", "1.0")) is Published.STORED
    assert listing.asked == ["acmeless"]


async def test_the_claim_is_checked_after_the_form_and_before_the_archive(
    store: PrivateStoreAPI, dists: Path
) -> None:
    listing = Listing("requests")
    publisher = Publisher(store, upstream=listing)
    wheel = make_wheel(dists, "requests", "1.0")
    rejection = await rejected(publisher, wheel, version=None)
    assert rejection.kind == "invalid_metadata" and listing.asked == []
    garbage = b"no archive"
    rejection = await rejected(
        publisher, wheel, content=garbage,
        sha256_digest=hashlib.sha256(garbage).hexdigest(),
        blake2_256_digest=hashlib.blake2b(garbage, digest_size=32).hexdigest(),
    )
    assert rejection.message == UPSTREAM_HAS_REQUESTS  # not "Invalid distribution file"


# ------------------------------------------------------------------------------ attestations


async def test_attestations_are_stored_as_the_files_provenance(
    publisher: Publisher, store: PrivateStoreAPI, dists: Path
) -> None:
    wheel = make_wheel(dists, "demo", "1.0")
    sha256 = hashlib.sha256(wheel.read_bytes()).hexdigest()
    attestations = json.dumps([json.loads(attest(wheel.name, sha256).model_dump_json())])
    assert await publish(publisher, wheel, attestations=attestations) is Published.STORED
    (dist,) = store.project_page(normalize("demo")).files
    assert dist.provenance
    kept = store.open_provenance(normalize("demo"), wheel.name)
    provenance = orjson.loads(kept.path.read_bytes())
    assert provenance["attestation_bundles"][0]["attestations"] == json.loads(attestations)
    assert "attestations" not in (store.file_fields(wheel.name) or {})  # not kept as metadata


async def test_attestations_of_another_file_are_refused_and_nothing_is_stored(
    publisher: Publisher, store: PrivateStoreAPI, dists: Path
) -> None:
    wheel = make_wheel(dists, "demo", "1.0")
    attestations = json.dumps([json.loads(attest(wheel.name, "00" * 32).model_dump_json())])
    rejection = await rejected(publisher, wheel, attestations=attestations)
    assert "sha256 is not the uploaded file's" in rejection.message
    assert not store.has_project(normalize("demo"))
    assert stored_bodies(store) == set() and temp_files(store) == []


async def test_a_file_without_attestations_offers_no_provenance(
    publisher: Publisher, store: PrivateStoreAPI, dists: Path
) -> None:
    wheel = make_wheel(dists, "demo", "1.0")
    await publish(publisher, wheel)
    (dist,) = store.project_page(normalize("demo")).files
    assert not dist.provenance
    with pytest.raises(NotFound):
        store.open_provenance(normalize("demo"), wheel.name)
