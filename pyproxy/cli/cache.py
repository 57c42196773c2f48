"""`pyproxy cache stats|prune|verify`: the command-line side of pyproxy.cacheops, on the data
directory's cache, or with [storage] set on the cluster's shared one (ops.clustercache).
`verify` checks the private files' bodies too (never removing one), unless --no-private."""

from __future__ import annotations

import argparse
import errno
import sys
from collections.abc import Callable
from datetime import UTC, datetime
from typing import Any

import orjson

from pyproxy.datadir import DataDir
from pyproxy.ops import cacheops, cacheverify
from pyproxy.settings import Settings
from pyproxy.stores.space import Spare, with_room
from pyproxy.units import human_size, parse_size

Command = Callable[..., argparse.ArgumentParser]
LoadSettings = Callable[[argparse.Namespace], Settings]


def _when(timestamp: float) -> str:
    return datetime.fromtimestamp(timestamp, UTC).strftime("%Y-%m-%d %H:%M UTC")


def _size_argument(text: str) -> int:
    try:
        return parse_size(text)
    except ValueError as exc:
        raise argparse.ArgumentTypeError(str(exc)) from None


def _days_argument(text: str) -> float:
    try:
        days = float(text)
    except ValueError:
        raise argparse.ArgumentTypeError(f"{text!r} is not a number of days") from None
    if days < 0:
        raise argparse.ArgumentTypeError("a number of days cannot be negative")
    return days


def open_cache(settings: Settings) -> cacheops.Cache:
    """The cluster's shared cache when [storage] is set, else the data directory's."""
    if settings.storage_database:
        from pyproxy.ops import clustercache  # psycopg only for a cluster

        return clustercache.open_shared(settings)
    if not settings.data_dir.is_dir():
        raise FileNotFoundError(errno.ENOENT, "no data directory", str(settings.data_dir))
    blobs = cacheops.open_blobs(settings.data_dir, settings.cache_max_size)
    return cacheops.LocalCache(blobs, settings.data_dir)


def cmd_stats(args: argparse.Namespace, settings: Settings) -> int:
    cache = open_cache(settings)
    try:
        found = cacheops.stats(cache)
        names: dict[str, str] = {}
        if not args.json and found.oldest is not None and found.least_recent is not None:
            names = cache.describe({found.oldest.key, found.least_recent.key})
    finally:
        cache.close()
    hits = cacheops.hit_counts(settings.data_dir)
    if args.json:
        document: dict[str, Any] = {
            "projects": found.projects,
            "files": found.files,
            "metadata_files": found.metadata_files,
            "bytes": found.bytes,
            "max_size": found.max_size,
            "list_bytes": found.list_bytes,
            "oldest_stored": found.oldest.stored if found.oldest else None,
            "least_recently_used": found.least_recent.accessed if found.least_recent else None,
            "hits": hits[0] if hits else None,
            "misses": hits[1] if hits else None,
        }
        if settings.storage_database:
            document["page_bytes"] = found.page_bytes
        sys.stdout.write(orjson.dumps(document, option=orjson.OPT_INDENT_2).decode() + "\n")
        return 0
    share = 100 * found.bytes / found.max_size if found.max_size else 0
    pages = f" ({human_size(found.page_bytes)} in PostgreSQL)" if found.page_bytes else ""
    print(f"projects    {found.projects} upstream project pages{pages}")
    print(f"files       {found.files} files, {found.metadata_files} .metadata")
    print(f"size        {human_size(found.bytes)} of {human_size(found.max_size)} ({share:.0f}%)")
    if found.list_bytes:
        print(f"lists       {human_size(found.list_bytes)} of project lists (/simple/,"
              " not bounded by max_size)")
    if found.oldest is not None and found.least_recent is not None:
        oldest = names.get(found.oldest.key, found.oldest.key)
        print(f"oldest      {_when(found.oldest.stored)}  {oldest}")
        print(f"least used  {_when(found.least_recent.accessed)}"
              f"  {names.get(found.least_recent.key, found.least_recent.key)}")
    else:
        print("oldest      - (the cache is empty)")
    print(_hit_ratio(hits, cluster=bool(settings.storage_database)))
    return 0


def _hit_ratio(hits: tuple[int, int] | None, *, cluster: bool) -> str:
    """Hits are counted by the servers running on the data directory: on a cluster, the
    node's own (each node's are on its /metrics)."""
    where = "this node's server" if cluster else "the server"
    if hits is None:
        if cluster:
            return ("hit ratio   unknown: no node runs on this data directory"
                    " (see each node's /metrics)")
        return "hit ratio   unknown: no server has run on this data directory since it started"
    total = hits[0] + hits[1]
    ratio = f"{100 * hits[0] / total:.1f}%" if total else "-"
    return f"hit ratio   {ratio} since {where} started ({hits[0]} hits, {hits[1]} misses)"


def cmd_prune(args: argparse.Namespace, settings: Settings) -> int:
    if args.max_size is None and args.older_than is None:
        print("pyproxy: say what to prune: --max-size SIZE and/or --older-than DAYS",
              file=sys.stderr)
        return 2
    if settings.storage_database:
        return _prune_cluster(args, settings)
    spare = Spare(DataDir(settings.data_dir).spare)
    cache = with_room(spare, lambda: open_cache(settings), "open the cache")  # its index writes
    try:
        before = cache.volume()
        result = cacheops.prune(
            cache, max_size=args.max_size, older_than_days=args.older_than, spare=spare
        )
        after = cache.volume()
    finally:
        cache.close()
    spare.keep()
    _pruned(result, before, after, "the cache")
    return 0


def _prune_cluster(args: argparse.Namespace, settings: Settings) -> int:
    from pyproxy.ops import clustercache  # psycopg only for a cluster

    cache = clustercache.open_shared(settings)
    try:
        before = cache.volume()
        result = cache.prune(max_size=args.max_size, older_than_days=args.older_than)
        after = cache.volume()
    except clustercache.EvictionBusy as exc:
        print(f"pyproxy: {exc}", file=sys.stderr)
        return 1
    finally:
        cache.close()
    _pruned(result, before, after, "the shared cache")
    return 0


def _pruned(result: cacheops.PruneResult, before: int, after: int, what: str) -> None:
    print(f"removed {len(result.removed)} files ({human_size(result.bytes)});"
          f" {what} holds {human_size(after)} (was {human_size(before)})")


def cmd_verify(args: argparse.Namespace, settings: Settings) -> int:
    cache = open_cache(settings)
    try:
        total = len(cache.entries())
        with _progress(total) as advance:
            result = cacheverify.verify(cache, advance)
        names = cache.describe({d.entry.key for d in result.damaged})
    finally:
        cache.close()
    for damaged in result.damaged:
        label = names.get(damaged.entry.key, damaged.entry.key)
        print(f"removed {label}: {damaged.reason}")
    print(f"checked {result.checked} files ({human_size(result.bytes)}):"
          f" {len(result.damaged)} damaged and removed")
    private_ok = True if args.no_private else _verify_private(settings)
    return 1 if result.damaged or not private_ok else 0


def _verify_private(settings: Settings) -> bool:
    """The private bodies (in the bucket on a cluster): each bad one named, none removed; a
    cluster node puts back what its own local copies hold. False if any was bad."""
    if not settings.storage_database and not DataDir(settings.data_dir).private.is_dir():
        return True  # no private store here: nothing to check
    from pyproxy.compose import open_stores

    private, users = open_stores(settings)
    try:
        total = len(private.file_records())
        with _progress(total) as advance:
            result = cacheverify.verify_private(private, advance)
    finally:
        private.close()
        users.close()
    for bad in result.damaged:
        if bad.repaired:
            print(f"repaired private file {bad.project} {bad.filename}: {bad.reason};"
                  " put back from this node's local copy")
        else:
            print(f"damaged private file {bad.project} {bad.filename}: {bad.reason}; not"
                  " removed: upload the same file again (twine upload) to repair it")
    for filename, why in result.unchecked:
        print(f"could not check private file {filename}: {why}")
    repaired = sum(bad.repaired for bad in result.damaged)
    unchecked = f", {len(result.unchecked)} not checked" if result.unchecked else ""
    print(f"checked {result.checked} private files ({human_size(result.bytes)}):"
          f" {len(result.damaged)} damaged ({repaired} repaired from this node's local"
          f" copies){unchecked}")
    return not result.damaged and not result.unchecked


class _progress:
    """A rich progress bar on a terminal; nothing otherwise (the summary line says it all)."""

    def __init__(self, total: int) -> None:
        self.total = total
        self._bar: Any = None

    def __enter__(self) -> Callable[[object], None]:
        if sys.stderr.isatty():
            from rich.progress import Progress

            self._bar = Progress(transient=True)
            self._bar.start()
            task = self._bar.add_task("verifying", total=self.total)
            return lambda _entry: self._bar.advance(task)
        return lambda _entry: None

    def __exit__(self, *exc_info: object) -> None:
        if self._bar is not None:
            self._bar.stop()


def add_parsers(commands: Any, command: Command, settings: LoadSettings) -> None:
    cache = commands.add_parser(
        "cache", help="inspect and tidy the upstream cache (safe while serving)",
        description="inspect and tidy the upstream cache (safe while serving)",
    )
    sub = cache.add_subparsers(dest="cache_command", required=True, metavar="COMMAND")

    def bound(func: Callable[[argparse.Namespace, Settings], int]
              ) -> Callable[[argparse.Namespace], int]:
        return lambda args: func(args, settings(args))

    stats = command("stats", bound(cmd_stats),
                    "projects, files, bytes, hit ratio, oldest entry", sub)
    stats.add_argument("--json", action="store_true", help="print the figures as JSON")
    prune = command("prune", bound(cmd_prune),
                    "remove cached files: unused ones, or down to a size", sub)
    prune.add_argument("--max-size", type=_size_argument, metavar="SIZE",
                       help="remove least recently used files until the cache holds at most "
                            "SIZE (e.g. 5GiB)")
    prune.add_argument("--older-than", type=_days_argument, metavar="DAYS",
                       help="remove files not used for DAYS days")
    verify = command("verify", bound(cmd_verify),
                     "re-hash every cached file, removing those that changed or are malformed;"
                     " then every private file's body, reporting (never removing) bad ones", sub)
    verify.add_argument("--no-private", action="store_true",
                        help="check only the upstream cache, not the private files' bodies")
