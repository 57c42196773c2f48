"""The write door: accepting one file into the private store, for the upload endpoint and for
`pyproxy import` alike.

`Publisher.publish` runs, in this order (cheap and authorising checks before the archive is
read, as the public index orders them):

1. the form fields (`validate.validate_form`): a bad form is refused before anyone's rights are
   looked at, and no file part is a bad request;
2. may this uploader upload to this name: to an existing project, `access.may_upload` over the
   store's role rows; a new name, `access.may_claim` (an admin's upload or `pyproxy reserve`
   is needed for a name under a reserved prefix, which is never looked up upstream, and for
   one that upstream's project list has; when that list cannot be had, 503 rather than a
   guess);
3. the file itself (`validate.validate_file`: name, digests, archive, metadata), in a thread,
   then the PEP 740 attestations sent with it, if any (`attestations.provenance_for`);
4. the record is built and stored: the identical file already stored is a success that writes
   nothing, unless its stored body is missing or damaged (`_mend`: the upload's verified bytes
   are written back, so re-running `twine upload` repairs it); otherwise
   `PrivateStore.add_file` re-checks duplicates and the permission under its write lock, so
   two uploads racing each other cannot both win.

The body arrives first, through `receiving()`: a temp file in the store's area, hashed while it
is written. Every refusal is an `UploadRejected` with a one-line message in the public index's
words and a `kind` for metrics; the store's refusals (`StoreRejected`) are worded here. A disk
that fills up while a file is received or stored is a 507 (`no_space`): the temp file goes, and
nothing is recorded.
"""

from __future__ import annotations

import asyncio
import enum
import hashlib
import logging
from collections.abc import Callable, Iterator, Mapping, Sequence
from contextlib import contextmanager
from dataclasses import dataclass
from pathlib import Path
from typing import BinaryIO

from pyproxy.access import Claim, RoleRows, may_claim, may_upload, under_prefix
from pyproxy.model import LocalFile, NormalizedName, NotFound, Unavailable, normalize
from pyproxy.publish.attestations import provenance_for
from pyproxy.publish.rejections import UploadRejected, missing_file
from pyproxy.publish.upstream_names import UpstreamNames
from pyproxy.publish.validate import UploadForm, validate_form
from pyproxy.publish.validate_file import ValidatedFile, validate_file
from pyproxy.stores.interfaces import PrivateStoreAPI
from pyproxy.stores.private import write_side_body
from pyproxy.stores.private_files import NotLocal
from pyproxy.stores.private_schema import NewFile, StoreRejected
from pyproxy.stores.space import is_disk_full

log = logging.getLogger("pyproxy.upload")


class Received:
    """A file body as it arrives: written to a temp file while sha256, blake2_256 and md5 are
    taken (the validator compares them with the form's, the store records them)."""

    def __init__(self, path: Path, out: BinaryIO) -> None:
        self.path = path
        self.size = 0
        self._out = out
        self._hashes = (
            hashlib.sha256(), hashlib.blake2b(digest_size=32), hashlib.md5(usedforsecurity=False)
        )

    def write(self, chunk: bytes) -> None:
        for digest in self._hashes:
            digest.update(chunk)
        self._out.write(chunk)
        self.size += len(chunk)

    def close(self) -> None:
        self._out.close()

    def digests(self) -> dict[str, str]:
        sha256, blake2_256, md5 = (digest.hexdigest() for digest in self._hashes)
        return {"sha256": sha256, "blake2_256": blake2_256, "md5": md5}


@dataclass(frozen=True, slots=True)
class Uploader:
    user: str | None  # None: a file with no recorded uploader (`pyproxy import`, as an admin)
    admin: bool = False


@dataclass(frozen=True, slots=True)
class Kept:
    """What `pyproxy import` keeps from the exporting index instead of the upload's own."""

    display_name: str | None = None
    upload_time: str | None = None  # ISO 8601, UTC
    yanked_reason: str | None = None  # None: not yanked


@dataclass(frozen=True, slots=True)
class Submission:
    fields: Mapping[str, Sequence[str]]  # every non-file field of the form
    filename: str | None  # of the `content` part; None: the upload has no file
    content_type: str | None  # of the `content` part
    body: Received
    kept: Kept | None = None


class Published(enum.Enum):
    STORED = "stored"
    ALREADY_STORED = "already stored"  # the identical file was there: nothing written
    STORED_MEANWHILE = "stored meanwhile"  # an identical upload committed while this one ran
    REPAIRED = "repaired"  # the identical file was there, its body missing or damaged: rewritten


def not_allowed(user: str, project: NormalizedName) -> UploadRejected:
    return UploadRejected(
        f"The user {user!r} isn't allowed to upload to project {project!r}."
        f" An owner can allow it with: pyproxy grant {project} {user}",
        status=403,
        kind="forbidden",
    )


def not_claimable(claim: Claim, project: NormalizedName) -> UploadRejected:
    if claim is Claim.UPSTREAM:
        why = (f"The name {project!r} is a project on the upstream index, and a private upload"
               " would hide upstream's files from every client.")
    else:
        why = (f"The name {project!r} is under a reserved prefix ([uploads] reserved_prefixes)"
               " and not yet a private project.")
    return UploadRejected(
        f"{why} An admin can make it private with: pyproxy reserve {project}",
        status=403,
        kind="forbidden",
    )


def upstream_unknown(project: NormalizedName, problem: Unavailable) -> UploadRejected:
    return UploadRejected(
        f"Cannot tell whether {project!r} is a project on the upstream index ({problem}), so a"
        f" new name is refused for now. Try again later, or an admin can make it private with:"
        f" pyproxy reserve {project}",
        status=503,
        kind="upstream_unavailable",
    )


def worded(refusal: StoreRejected, new: NewFile) -> UploadRejected:
    """The uploader's words for a file the store refused."""
    if refusal.kind == "forbidden":
        return not_allowed(str(new.uploader), new.project)
    if refusal.kind == "file_exists":
        filename = refusal.filename or new.filename
        blake2_256 = refusal.blake2_256 or new.blake2_256
        message = (
            f"File already exists ({filename!r}, with blake2_256 hash {blake2_256!r})."
            " Use a different version or filename."
        )
    elif refusal.kind == "filename_removed":
        message = (
            "This filename was previously used by a file that has since been deleted."
            " Use a different version."
        )
    elif refusal.kind == "sdist_removed":
        message = (
            f"The sdist of this release was previously uploaded as {refusal.filename!r} and has"
            " since been deleted. Use a different version."
        )
    else:
        message = "Only one sdist may be uploaded per release."
    return UploadRejected(message, kind="duplicate")


def no_space() -> UploadRejected:
    return UploadRejected(
        "Insufficient Storage: the index's disk is full, so the file was not stored. Try again"
        " once an operator has freed space (e.g. with pyproxy cache prune).",
        status=507,
        kind="no_space",
    )


@contextmanager
def _507_when_full(what: str) -> Iterator[None]:
    """A full disk (OSError, or SQLite's word for it) is the 507 `no_space`."""
    try:
        yield
    except UploadRejected:
        raise
    except Exception as exc:
        if not is_disk_full(exc):
            raise
        log.warning("refused %s with 507: the disk is full (%s)", what, exc)
        raise no_space() from None


@contextmanager
def _counted_as(kind: str) -> Iterator[None]:
    try:
        yield
    except UploadRejected as rejection:
        if rejection.kind is None:  # the innermost, most specific kind wins
            rejection.kind = kind
        raise


def build_record(
    form: UploadForm, checked: ValidatedFile, body: Received, uploader: str | None,
    kept: Kept | None = None, provenance: bytes | None = None,
) -> NewFile:
    """The store's record of a validated file."""
    digests = body.digests()
    kept = kept or Kept()
    return NewFile(
        filename=checked.filename,
        project=form.project,
        display_name=kept.display_name or form.name,
        version=checked.version,
        filetype=checked.filetype,
        size=body.size,
        sha256=digests["sha256"],
        blake2_256=digests["blake2_256"],
        md5=digests["md5"],
        # PEP 658 for wheels only: an sdist's PKG-INFO may leave dependencies dynamic
        core_metadata=checked.core_metadata if checked.filetype == "bdist_wheel" else None,
        requires_python=checked.requires_python,
        summary=checked.summary,
        fields=form.fields,
        uploader=uploader,
        upload_time=kept.upload_time,
        yanked_reason=kept.yanked_reason,
        provenance=provenance,
    )


Allowed = Callable[[RoleRows | None], bool]


class Publisher:
    """upstream: None when there is no upstream (private packages only): any new name is free.
    reserved_prefixes: `[uploads] reserved_prefixes` (normalised here too)."""

    def __init__(
        self, store: PrivateStoreAPI, *, upstream: UpstreamNames | None = None,
        reserved_prefixes: Sequence[str] = (),
    ) -> None:
        self.store = store
        self.upstream = upstream
        self.reserved_prefixes = tuple(normalize(prefix) for prefix in reserved_prefixes)

    @contextmanager
    def receiving(self) -> Iterator[Received]:
        """Where a body is written before `publish`; removed unless it was stored. A disk that
        fills up meanwhile is an UploadRejected (507) from the `with` block."""
        with _507_when_full("an upload"), self.store.files.temporary_file() as path, \
                path.open("wb") as out:
            yield Received(path, out)

    async def publish(self, submission: Submission, uploader: Uploader) -> Published:
        body = submission.body
        with _507_when_full("an upload"):
            body.close()  # the last buffered bytes are written here
        with _counted_as("invalid_metadata"):
            form = validate_form(submission.fields)
        if submission.filename is None:
            raise missing_file()
        allowed = await self._authorise(form, uploader)
        with _counted_as("invalid_file"):
            checked = await asyncio.to_thread(
                validate_file, form, submission.filename, submission.content_type, body.path,
                body.digests(),
            )
        provenance = provenance_for(
            submission.fields.get("attestations", ()), checked.filename, body.digests()["sha256"]
        )
        new = build_record(form, checked, body, uploader.user, submission.kept, provenance)
        try:
            # in a thread: on a cluster these are database round trips
            if await asyncio.to_thread(self.store.find_duplicate, new):
                with _507_when_full(f"the repair of {new.filename}"):
                    if await asyncio.to_thread(self._mend, new, body.path):
                        return Published.REPAIRED
                log.info("identical re-upload of %s by %s: nothing to do", new.filename,
                         new.uploader)
                return Published.ALREADY_STORED
            with _507_when_full(f"the upload of {new.filename}"):
                stored = await asyncio.to_thread(
                    self.store.add_file, new, body.path, allowed=allowed
                )
        except StoreRejected as refusal:
            raise worded(refusal, new) from None
        log.info(
            "%s %s (%d bytes) by %s", "stored" if stored else "identical re-upload of",
            new.filename, new.size, new.uploader,
        )
        return Published.STORED if stored else Published.STORED_MEANWHILE

    def _mend(self, new: NewFile, body: Path) -> bool:
        """Blocking. An identical re-upload: write back the stored bodies that are missing or
        damaged (the file's, and its .metadata and provenance when this upload makes the same
        ones) from this upload's bytes, verified again; True if any was. A body that is fine
        costs a HEAD on a cluster (its ETag against the md5), a read of it on one box."""
        files = self.store.files
        mended = False
        problem = files.problem(new.sha256, new.size, md5=new.md5)
        if problem is not None:
            log.error("identical re-upload of %s by %s: %s: writing it again", new.filename,
                      new.uploader, problem)
            mended = files.restore(new.sha256, body)
        for kind, side in (("metadata", new.core_metadata), ("provenance", new.provenance)):
            if side is None or self._recorded_side(kind, new) != hashlib.sha256(side).hexdigest():
                continue  # none, or not the one recorded (other attestations)
            digest = hashlib.sha256(side).hexdigest()
            md5 = hashlib.md5(side, usedforsecurity=False).hexdigest()
            problem = files.problem(digest, len(side), md5=md5)
            if problem is None:
                continue
            log.error("identical re-upload of %s by %s: its %s: %s: writing it again",
                      new.filename, new.uploader, kind, problem)
            with files.temporary_file() as temp:
                write_side_body(temp, side)
                mended = files.restore(digest, temp) or mended
        return mended

    def _recorded_side(self, kind: str, new: NewFile) -> str | None:
        """The sha256 of the file's recorded .metadata or provenance (None: it has none)."""
        open_body = self.store.open_metadata if kind == "metadata" else self.store.open_provenance
        try:
            found: LocalFile = open_body(new.project, new.filename)
        except NotLocal as missing:  # a cluster node without a copy: the record names it
            return missing.sha256
        except NotFound:
            return None
        except FileNotFoundError:  # one box, its body gone: made from the same file, so taken
            return hashlib.sha256(  # to be this one's (were it not, GC removes it again)
                (new.core_metadata if kind == "metadata" else new.provenance) or b""
            ).hexdigest()
        return found.sha256

    async def _authorise(self, form: UploadForm, uploader: Uploader) -> Allowed | None:
        """Refuse an uploader without the right to this name; what the store re-checks under
        its write lock (None: nothing to check, for admins and imports)."""
        user = uploader.user
        if uploader.admin:
            return None
        if user is None:  # only an import stores files nobody uploaded, with an admin's rights
            raise ValueError("an upload by nobody must be an admin's")
        roles = await asyncio.to_thread(self.store.project_roles, form.project)
        if roles is None:
            await self._check_claim(form.project)
        elif not may_upload(user, roles, admin=False):
            raise not_allowed(user, form.project)
        claimed = roles is None  # a name that vanished meanwhile (remove --forget-name) is not

        def allowed(now: RoleRows | None) -> bool:
            return claimed if now is None else may_upload(user, now, admin=False)

        return allowed

    async def _check_claim(self, project: NormalizedName) -> None:
        reserved = under_prefix(project, self.reserved_prefixes)
        listed = False
        if not reserved and self.upstream is not None:
            try:
                listed = await self.upstream.lists(project)
            except Unavailable as problem:
                raise upstream_unknown(project, problem) from None
        claim = may_claim(reserved_prefix=reserved, listed_upstream=listed)
        if claim is not Claim.FREE:
            raise not_claimable(claim, project)
