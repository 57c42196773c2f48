"""`pyproxy export` / `pyproxy import`: a portable directory for air-gapped networks.

Layout of an export (the manifest is written last, so a directory without it is incomplete;
an export that could not read a private file carries on, then writes its manifest as
`pyproxy-export.incomplete.json` instead, naming the files missing, so import refuses it):

    pyproxy-export.json          format version, when, and the counts below
    private/projects.jsonl       every private name (also those reserved without files), whether
                                 it is restricted, and the user names holding roles on it
    private/files.jsonl          one record per file: the form fields, hashes, upload time, yank,
                                 the PEP 740 attestations uploaded with it
    private/files/<filename>     the bodies
    private/users.jsonl          with --include-users: users and tokens, hashed (transfer_users)
    policy/first_seen.jsonl      when each upstream file without an upload time was first seen
                                 (transfer_first_seen)
    cache/files.jsonl            with --include-cache: cache key, sha256, size, body name
    cache/files/<hash of key>
    cache/pages.jsonl            the cached upstream pages as fetched (headers, fetch time)
    cache/pages/<hash of key>

Import checks every private file as an upload would (form, archive, metadata, digests) and
skips what the target already holds. The cache's part (cache/) is ops.transfer_cache's.
"""

from __future__ import annotations

import asyncio
import os
from collections.abc import Callable
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

import orjson

from pyproxy.model import NotFound, Unavailable, normalize
from pyproxy.ops.transfer_cache import ExportableCache, export_blobs, export_pages
from pyproxy.ops.transfer_first_seen import export_first_seen
from pyproxy.ops.transfer_format import (
    CHUNK,
    FORMAT,
    MANIFEST,
    TransferError,
    TransferReport,
    body_path,
    copy_durably,
    read_jsonl,
    write_jsonl,
)
from pyproxy.ops.transfer_users import export_users
from pyproxy.publish.rejections import UploadRejected
from pyproxy.publish.service import Kept, Published, Publisher, Submission, Uploader
from pyproxy.stores.first_seen import FirstSeen
from pyproxy.stores.interfaces import PrivateStoreAPI, UserStoreAPI
from pyproxy.stores.pages import PageCache
from pyproxy.stores.private_files import NotLocal
from pyproxy.stores.private_schema import FileRecord

# ----------------------------------------------------------------------------------- export

INCOMPLETE = "pyproxy-export.incomplete.json"  # in place of MANIFEST: import refuses it


class BadBody(Exception):
    """The private file's body is not the one its record names (damaged where it is kept)."""


def export(
    private: PrivateStoreAPI,
    target: Path,
    *,
    blobs: ExportableCache | None = None,
    pages: PageCache | None = None,
    users: UserStoreAPI | None = None,
    first_seen: FirstSeen | None = None,
    log: Callable[[str], None] = lambda _line: None,
) -> TransferReport:
    """Write the private packages (and, given `blobs`/`pages`, the cache; given `users`,
    the users and tokens; given `first_seen`, the first-seen times) into `target`."""
    if target.exists() and (not target.is_dir() or any(target.iterdir())):
        raise TransferError(f"{target} exists and is not an empty directory")
    report = TransferReport()
    (target / "private" / "files").mkdir(parents=True, exist_ok=True)
    projects = exported_projects(private)
    write_jsonl(target / "private" / "projects.jsonl", projects)
    records = []
    unreadable: list[dict[str, str]] = []
    for record in exported_files(private):
        filename = str(record["filename"])
        body = target / "private" / "files" / filename
        try:
            if (problem := record.pop("_unreadable", None)) is not None:
                raise BadBody(problem)
            size = _copy_checked(private, record, body)
        except (FileNotFoundError, Unavailable, BadBody) as exc:
            body.unlink(missing_ok=True)  # no half-copied or damaged file is left
            if not private.has_file(normalize(str(record["name"])), filename):
                report.private.fail(filename, "removed during the export")
                continue
            # lost or damaged (in the bucket, on disk), or the bucket down: named, and the
            # others still exported
            why = ("its body is missing" if isinstance(exc, FileNotFoundError) else str(exc))
            report.private.fail(filename, f"not exported: {why}")
            unreadable.append({"filename": filename, "why": why})
            continue
        records.append(record)
        report.private.copied += 1
        report.private.bytes += size
        log(f"private {filename}")
    write_jsonl(target / "private" / "files.jsonl", records)
    if blobs is not None:
        export_blobs(blobs, target / "cache", report.cache_files, log)
    if pages is not None:
        export_pages(pages, target / "cache", report.pages)
    if users is not None:
        export_users(users, target, report.users)
    if first_seen is not None:
        export_first_seen(first_seen, target, report.first_seen)
    manifest = {
        "format": FORMAT,
        "created": datetime.now(UTC).isoformat(),
        "projects": len(projects),
        "private_files": report.private.copied,
        "cache_files": report.cache_files.copied,
        "pages": report.pages.copied,
        "users": report.users.copied,
        "first_seen": report.first_seen.copied,
    }
    # a private file that could not be read makes the export incomplete: the only copy of a
    # package must not look exported (a cached upstream file can be fetched again)
    if unreadable:
        manifest["unreadable_private_files"] = unreadable
    partial = target / (MANIFEST + ".part")
    partial.write_bytes(orjson.dumps(manifest, option=orjson.OPT_INDENT_2))
    os.replace(partial, target / (INCOMPLETE if unreadable else MANIFEST))
    return report


def _copy_checked(private: PrivateStoreAPI, record: dict[str, Any], target: Path) -> int:
    """Copy a private file's body into the export, durably, checking it is the record's bytes
    as it goes (BadBody if not); its size."""
    sha256, size = str(record["sha256"]), int(record["size"])
    written, actual = copy_durably(private.files.path(sha256), target)
    if written != size or actual != sha256:
        raise BadBody(f"its body is damaged: {written} bytes with sha256 {actual}, {size}"
                      f" bytes with sha256 {sha256} recorded")
    return written


def exported_projects(private: PrivateStoreAPI) -> list[dict[str, Any]]:
    """Every private project, with or without files: name, display name, restriction, roles."""
    return [
        {
            "name": project.name, "display_name": project.display_name,
            "restricted": project.restricted,
            "roles": [{"user": user, "role": role} for user, role in private.roles(project.name)],
        }
        for project in private.project_records()
    ]


def exported_files(private: PrivateStoreAPI) -> list[dict[str, Any]]:
    """Every file's record, oldest first, as files.jsonl holds it (with `_unreadable`, why its
    attestations could not be read, for export to take out)."""
    return [_exported_file(private, record) for record in private.file_records()]


def _exported_file(private: PrivateStoreAPI, record: FileRecord) -> dict[str, Any]:
    try:
        attestations, unreadable = _attestations(private, record.display_name,
                                                 record.filename), None
    except Unavailable as exc:
        attestations, unreadable = None, f"its provenance: {exc}"
    exported: dict[str, Any] = {
        "filename": record.filename, "name": record.display_name, "version": record.version,
        "filetype": record.filetype, "size": record.size, "sha256": record.sha256,
        "blake2_256": record.blake2_256, "md5": record.md5,
        "upload_time": record.upload_time, "uploader": record.uploader,
        "yanked_reason": record.yanked_reason, "fields": record.fields,
        "attestations": attestations,
    }
    if unreadable is not None:
        exported["_unreadable"] = unreadable
    return exported


def _attestations(private: PrivateStoreAPI, shown: str, filename: str) -> list[Any] | None:
    """The PEP 740 attestations uploaded with a file (None: none were): the import sends them
    as an upload's `attestations` field, so they are checked again and the same provenance
    object is built from them."""
    try:
        try:
            path = private.open_provenance(normalize(shown), filename).path
        except NotLocal as elsewhere:  # a cluster's, not copied here: downloaded (Unavailable)
            path = private.files.path(elsewhere.sha256)
        body = path.read_bytes()
    except (NotFound, FileNotFoundError):  # none, or removed meanwhile
        return None
    provenance = orjson.loads(body)  # a store's own object, at most MAX_PROVENANCE_BYTES
    return [attestation for bundle in provenance["attestation_bundles"]
            for attestation in bundle["attestations"]]


# ----------------------------------------------------------------------------------- import


def import_private(private: PrivateStoreAPI, source: Path, report: TransferReport,
                   log: Callable[[str], None] = lambda _line: None) -> None:
    """Every private name, then every file through the publish service as an admin's upload.
    Runs its own event loop: call it outside one, as `pyproxy import` does."""
    # names, restrictions and roles first: no file is ever readable by more people than it was
    for record in read_jsonl(source / "private" / "projects.jsonl"):
        name, shown = record.get("name"), record.get("display_name")
        if not (isinstance(name, str) and isinstance(shown, str) and normalize(shown) == name):
            report.private.fail(f"project {name!r}", "unusable record")
            continue
        project = normalize(shown)
        report.reserved += private.reserve(project, shown)
        if record.get("restricted"):
            private.restrict(project)
        for role in record.get("roles") or ():
            try:
                private.grant(project, str(role["user"]), str(role["role"]))
            except (KeyError, TypeError, ValueError) as exc:
                report.private.fail(f"role on {project}", f"unusable record: {exc}")
    asyncio.run(_import_files(Publisher(private), source, report, log))


async def _import_files(publisher: Publisher, source: Path, report: TransferReport,
                        log: Callable[[str], None]) -> None:
    for record in read_jsonl(source / "private" / "files.jsonl"):
        filename = str(record.get("filename"))
        try:
            stored = await _import_file(publisher, source / "private" / "files", record)
        except UploadRejected as exc:
            report.private.fail(filename, exc.message)
            continue
        except (ValueError, KeyError, TypeError, OSError) as exc:
            report.private.fail(filename, f"unusable record: {exc}")
            continue
        if stored:
            report.private.copied += 1
            report.private.bytes += int(record["size"])
            log(f"private {filename}")
        else:
            report.private.skipped += 1


def _pyversion(filename: str, filetype: str) -> str:
    if filetype == "sdist":
        return "source"
    parts = filename[: -len(".whl")].split("-")
    return parts[-3] if len(parts) >= 5 else ""


async def _import_file(publisher: Publisher, files: Path, record: dict[str, Any]) -> bool:
    """Publish one exported file as its uploader would have, with an admin's rights (the
    names and roles came first); False if it was already there."""
    filename, filetype = str(record["filename"]), str(record["filetype"])
    fields: dict[str, list[str]] = {
        key: [str(v) for v in values] for key, values in dict(record["fields"]).items()
    }
    fields.update({
        ":action": ["file_upload"],
        "protocol_version": ["1"],
        "filetype": [filetype],
        "pyversion": [_pyversion(filename, filetype)],
        "sha256_digest": [str(record["sha256"])],
        "blake2_256_digest": [str(record["blake2_256"])],
        "md5_digest": [str(record["md5"])],
    })
    attestations = record.get("attestations")
    if attestations is not None:  # checked by the publisher as an upload's would be
        fields["attestations"] = [orjson.dumps(attestations).decode()]
    yanked, uploader = record.get("yanked_reason"), record.get("uploader")
    shown = record.get("name")
    kept = Kept(
        display_name=str(shown) if shown else None,
        upload_time=datetime.fromisoformat(str(record["upload_time"])).isoformat(),
        yanked_reason=str(yanked) if yanked is not None else None,
    )
    with publisher.receiving() as body:
        with open(body_path(files, filename), "rb") as reader:
            while chunk := reader.read(CHUNK):
                body.write(chunk)
        published = await publisher.publish(
            Submission(fields, filename, "application/octet-stream", body, kept),
            Uploader(uploader if isinstance(uploader, str) else None, admin=True),
        )
    return published is Published.STORED
