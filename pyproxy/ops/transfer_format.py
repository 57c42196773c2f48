"""The export directory's format, shared by its parts (transfer, transfer_users): the manifest,
JSON-lines records written durably, reports of what was copied."""

from __future__ import annotations

import hashlib
import os
import shutil
from collections.abc import Iterable, Iterator
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, BinaryIO

import orjson

FORMAT = 1
MANIFEST = "pyproxy-export.json"
CHUNK = 1024 * 1024


class TransferError(Exception):
    """The export or import cannot start (one line for the operator)."""


@dataclass
class Report:
    copied: int = 0
    skipped: int = 0  # already there
    bytes: int = 0
    failures: list[tuple[str, str]] = field(default_factory=list)  # (what, why)

    def fail(self, what: str, why: str) -> None:
        self.failures.append((what, why))


@dataclass
class TransferReport:
    private: Report = field(default_factory=Report)
    cache_files: Report = field(default_factory=Report)
    pages: Report = field(default_factory=Report)
    first_seen: Report = field(default_factory=Report)
    users: Report = field(default_factory=Report)
    reserved: int = 0


def key_name(key: str) -> str:
    return hashlib.sha256(key.encode()).hexdigest()


def write_jsonl(path: Path, records: Iterable[dict[str, Any]]) -> int:
    count = 0
    with open(path, "wb") as out:
        for record in records:
            out.write(orjson.dumps(record) + b"\n")
            count += 1
        out.flush()
        os.fsync(out.fileno())
    return count


def read_jsonl(path: Path) -> Iterator[dict[str, Any]]:
    if not path.exists():
        return
    with open(path, "rb") as source:
        for number, line in enumerate(source, 1):
            if not line.strip():
                continue
            try:
                record = orjson.loads(line)
            except orjson.JSONDecodeError:
                raise TransferError(f"{path}, line {number}: not a JSON record") from None
            if not isinstance(record, dict):
                raise TransferError(f"{path}, line {number}: not a JSON object")
            yield record


def copy_durably(source: Path, target: Path) -> tuple[int, str]:
    """Copy `source` to `target`, fsync'd: the size and sha256 of what was copied, read once."""
    digest = hashlib.sha256()
    with open(source, "rb") as reader, open(target, "wb") as writer:
        while chunk := reader.read(CHUNK):
            digest.update(chunk)
            writer.write(chunk)
        writer.flush()
        os.fsync(writer.fileno())
        return writer.tell(), digest.hexdigest()


def copy_stream_durably(reader: BinaryIO, target: Path) -> int:
    with open(target, "wb") as writer:
        shutil.copyfileobj(reader, writer, CHUNK)
        writer.flush()
        os.fsync(writer.fileno())
        return writer.tell()


def read_manifest(source: Path) -> dict[str, Any]:
    path = source / MANIFEST
    if not path.exists():
        raise TransferError(f"{source} is not a complete pyproxy export (no {MANIFEST})")
    try:
        manifest = orjson.loads(path.read_bytes())
    except orjson.JSONDecodeError:
        raise TransferError(f"{path} is not valid JSON") from None
    if not isinstance(manifest, dict) or manifest.get("format") != FORMAT:
        raise TransferError(f"{path}: unknown export format {manifest.get('format')!r}"
                            if isinstance(manifest, dict) else f"{path}: not a manifest")
    return manifest


def body_path(directory: Path, name: object) -> Path:
    """The body file a record names, refusing names that would leave `directory`."""
    if not isinstance(name, str) or not name or name != Path(name).name or name.startswith("."):
        raise ValueError(f"bad file name {name!r}")
    return directory / name
