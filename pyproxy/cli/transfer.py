"""`pyproxy export DIR` / `pyproxy import DIR`: the command-line side of pyproxy.transfer."""

from __future__ import annotations

import argparse
import asyncio
import contextlib
import sys
from collections.abc import Callable
from pathlib import Path
from typing import Any

from pyproxy.cli.cache import open_cache
from pyproxy.compose import first_seen_store, open_stores, page_cache
from pyproxy.datadir import DataDir
from pyproxy.ops import cacheops, transfer, transfer_cache, transfer_first_seen, transfer_users
from pyproxy.ops.transfer_format import Report, TransferError, TransferReport, read_manifest
from pyproxy.settings import Settings
from pyproxy.units import human_size

Command = Callable[..., argparse.ArgumentParser]
LoadSettings = Callable[[argparse.Namespace], Settings]


def _line(what: str, report: Report, verb: str) -> str:
    text = f"{what}: {report.copied} {verb} ({human_size(report.bytes)})"
    if report.skipped:
        text += f", {report.skipped} already there"
    if report.failures:
        text += f", {len(report.failures)} failed"
    return text


def _summary(result: TransferReport, verb: str, *, cache: bool, users: bool = False) -> int:
    print(_line("private files", result.private, verb))
    if users:
        skipped = f", {result.users.skipped} already there" if result.users.skipped else ""
        print(f"users: {result.users.copied} {verb}{skipped}")
    if cache:
        print(_line("cached files", result.cache_files, verb))
        print(_line("cached pages", result.pages, verb))
    seen = result.first_seen
    if seen.copied or seen.skipped or seen.failures:
        skipped = f", {seen.skipped} already there" if seen.skipped else ""
        print(f"first-seen times: {seen.copied} {verb}{skipped}")
    failures = (result.private.failures + result.cache_files.failures + result.pages.failures
                + result.users.failures + result.first_seen.failures)
    for what, why in failures:
        print(f"failed: {what}: {why}", file=sys.stderr)
    return 1 if failures else 0


def cmd_export(args: argparse.Namespace, settings: Settings) -> int:
    layout = DataDir(settings.data_dir)
    if not settings.storage_database and not layout.private.is_dir():
        raise TransferError(f"no private store in {settings.data_dir}")
    private, opened_users = open_stores(settings)
    users = opened_users if args.include_users else None
    blobs: cacheops.Cache | None = None
    pages = None
    first_seen = None
    try:
        if settings.storage_database or layout.first_seen.exists():
            first_seen = first_seen_store(settings, private)
        if args.include_cache and (settings.storage_database or layout.files.is_dir()):
            blobs = open_cache(settings)
        if args.include_cache and (settings.storage_database or layout.pages.is_dir()):
            pages = page_cache(settings, private, "")
        result = transfer.export(
            private, Path(args.directory), blobs=blobs, pages=pages, users=users,
            first_seen=first_seen,
        )
    finally:
        if first_seen is not None:
            first_seen.close()
        if pages is not None:
            pages.close()
        private.close()
        opened_users.close()
        if blobs is not None:
            blobs.close()
    status = _summary(result, "exported", cache=args.include_cache, users=args.include_users)
    if (Path(args.directory) / transfer.INCOMPLETE).exists():
        print(f"pyproxy: the export in {args.directory} is incomplete: private files could not"
              f" be read (above); it has {transfer.INCOMPLETE} instead of a manifest, and"
              " import refuses it", file=sys.stderr)
        return 1
    return status


def cmd_import(args: argparse.Namespace, settings: Settings) -> int:
    source = Path(args.directory)
    manifest = read_manifest(source)
    settings.data_dir.mkdir(parents=True, exist_ok=True)
    result = TransferReport()
    with_users = (source / transfer_users.USERS).exists()
    cache = bool(manifest.get("cache_files") or manifest.get("pages"))
    private, users = open_stores(settings)
    with contextlib.ExitStack() as closing:
        closing.callback(private.close)  # last: a cluster's page cache shares its connections
        pages = page_cache(settings, private, "") if cache else None
        if pages is not None:
            closing.callback(pages.close)
        with contextlib.closing(users):
            if with_users:  # before the files: roles name users, and tokens work at once
                transfer_users.import_users(users, source, result.users)
        transfer.import_private(private, source, result)
        if pages is not None:
            transfer_cache.import_pages(pages, source, result.pages)
        if (source / transfer_first_seen.FIRST_SEEN).exists():
            first_seen = first_seen_store(settings, private)
            closing.callback(first_seen.close)
            transfer_first_seen.import_first_seen(first_seen, source, result.first_seen)
    if cache and settings.storage_database:
        from pyproxy.ops import clustercache  # psycopg only for a cluster

        shared = clustercache.open_shared(settings)
        try:
            asyncio.run(transfer_cache.import_shared(shared, source, result.cache_files))
        finally:
            shared.close()
    elif cache:
        blobs = cacheops.open_blobs(settings.data_dir, settings.cache_max_size)

        async def load() -> None:
            try:
                await transfer_cache.import_blobs(blobs, source, result.cache_files)
            finally:
                await blobs.aclose()

        asyncio.run(load())
    if result.reserved:
        print(f"reserved {result.reserved} private names")
    return _summary(result, "imported", cache=cache, users=with_users)


def add_parsers(commands: Any, command: Command, settings: LoadSettings) -> None:
    def bound(func: Callable[[argparse.Namespace, Settings], int]
              ) -> Callable[[argparse.Namespace], int]:
        def run(args: argparse.Namespace) -> int:
            try:
                return func(args, settings(args))
            except TransferError as exc:
                print(f"pyproxy: {exc}", file=sys.stderr)
                return 1
        return run

    export = command("export", bound(cmd_export), "write the private packages into a portable "
                     "directory (for air-gapped networks)")
    export.add_argument("directory", help="a new or empty directory")
    export.add_argument("--include-cache", action="store_true",
                        help="also write the cached upstream files and pages")
    export.add_argument("--include-users", action="store_true",
                        help="also write the users and API tokens (their hashes: keep the "
                             "directory private), to move a deployment")
    load = command("import", bound(cmd_import), "load an export into this data directory, "
                   "checking every file; skips what is there")
    load.add_argument("directory", help="a directory written by pyproxy export")
