"""`pyproxy prefetch`: the command-line side of pyproxy.ops.prefetch."""

from __future__ import annotations

import argparse
import sys
from pathlib import Path
from typing import Any

from pyproxy.config import load_settings
from pyproxy.ops.prefetch.locks import PrefetchError
from pyproxy.ops.prefetch.progress import BarProgress, PlainProgress, Progress
from pyproxy.ops.prefetch.run import Request, normalize_base, prefetch
from pyproxy.ops.prefetch.targets import expand_targets


def default_url(config: str | None) -> str:
    """The server's own address from the configuration (pyproxy.toml, PYPROXY_*)."""
    settings = load_settings(config)
    if settings.base_url:
        return settings.base_url
    host = settings.host if settings.host not in ("", "0.0.0.0", "::") else "127.0.0.1"
    if ":" in host:
        host = f"[{host}]"
    return f"http://{host}:{settings.port or 8080}"


def cmd_prefetch(args: argparse.Namespace) -> int:
    try:
        if not args.requirements and not args.locks:
            raise PrefetchError("nothing to prefetch: give -r REQUIREMENTS or --lock LOCKFILE")
        if args.constraints and not args.requirements:
            raise PrefetchError("-c constrains what -r asks for: give -r REQUIREMENTS too")
        base = normalize_base(args.url or default_url(args.config))
        request = Request(
            base=base,
            requirements=list(args.requirements),
            constraints=list(args.constraints),
            locks=[Path(p) for p in args.locks],
            targets=expand_targets(args.python_versions, args.platforms, args.implementation,
                                   args.abis),
            only_binary=list(args.only_binary),
        )
        progress: Progress = BarProgress() if sys.stderr.isatty() else PlainProgress()
        summary = prefetch(request, progress)
    except PrefetchError as exc:
        print(f"pyproxy: {exc}", file=sys.stderr)
        return 1
    for line in summary.lines():
        print(line)
    return 0 if summary.ok else 1


def add_parser(commands: Any) -> argparse.ArgumentParser:
    """`pyproxy prefetch`, on the `pyproxy` command's subparsers."""
    description = ("warm a running pyproxy: resolve requirements with pip through it, or read "
                   "lock files, and download every file through it")
    parser: argparse.ArgumentParser = commands.add_parser(
        "prefetch", help=description, description=description
    )
    parser.set_defaults(func=cmd_prefetch)
    parser.add_argument("--config", metavar="PATH",
                        help="configuration file the default --url is read from")
    parser.add_argument("--url", metavar="URL",
                        help="the running pyproxy (default: its configured address, "
                             "http://127.0.0.1:8080)")
    parser.add_argument("-r", "--requirement", dest="requirements", action="append", default=[],
                        metavar="FILE", help="requirements file (repeatable)")
    parser.add_argument("-c", "--constraint", dest="constraints", action="append", default=[],
                        metavar="FILE", help="constraints file (repeatable)")
    parser.add_argument("--lock", dest="locks", action="append", default=[], metavar="FILE",
                        help="uv.lock or pylock.toml: fetch the files it pins that the targets "
                        "need (every file when no target is given; repeatable)")
    parser.add_argument("--platform", dest="platforms", action="append", default=[],
                        metavar="TAG", help="prefetch for this platform tag, e.g. "
                        "manylinux_2_17_x86_64: pip resolves for it (with --only-binary :all:) "
                        "and lock files give only its wheels (repeatable)")
    parser.add_argument("--python-version", dest="python_versions", action="append", default=[],
                        metavar="VERSION", help="prefetch for this Python, e.g. 3.12 "
                        "(repeatable; each one with each --platform)")
    parser.add_argument("--implementation", metavar="IMPL",
                        help="Python implementation for every target: cp, pp, py")
    parser.add_argument("--abi", dest="abis", action="append", default=[], metavar="ABI",
                        help="ABI tag for every target, e.g. cp312 (repeatable)")
    parser.add_argument("--only-binary", action="append", default=[], metavar="SPEC",
                        help="as pip's --only-binary, e.g. :all: (repeatable); lock files' "
                        "sdists of those projects are left out")
    return parser

