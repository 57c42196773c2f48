"""The `pyproxy` command: serve, and the operator commands that work beside a running server."""

from __future__ import annotations

import argparse
import getpass
import os
import sqlite3
import sys
from collections.abc import Callable, Sequence
from typing import Any

from packaging.utils import InvalidName, canonicalize_name

from pyproxy.cli import cache as cli_cache
from pyproxy.cli import policy as cli_policy
from pyproxy.cli import prefetch as cli_prefetch
from pyproxy.cli import transfer as cli_transfer
from pyproxy.compose import open_stores
from pyproxy.config import ConfigError, load_settings
from pyproxy.datadir import DataDir
from pyproxy.model import NotFound, Unavailable, normalize
from pyproxy.settings import Settings
from pyproxy.stores.auth import AuthError
from pyproxy.stores.interfaces import PrivateStoreAPI, UserStoreAPI
from pyproxy.stores.outages import BucketUnavailable, DatabaseUnavailable, SchemaTooNew
from pyproxy.stores.space import Spare, is_disk_full, with_room


class CommandError(Exception):
    """A command that cannot do what was asked; printed as one line, exit status 1."""


def _common(parser: argparse.ArgumentParser) -> None:
    parser.add_argument("--config", metavar="PATH",
                        help="configuration file (default: ./pyproxy.toml if present)")
    parser.add_argument("--data-dir", metavar="DIR", help="where pyproxy keeps its data")


def _settings(args: argparse.Namespace, **overrides: Any) -> Settings:
    return load_settings(args.config, {"data_dir": args.data_dir, **overrides})


_opened: list[tuple[PrivateStoreAPI, UserStoreAPI]] = []  # closed when the command is done


def _stores(args: argparse.Namespace) -> tuple[PrivateStoreAPI, UserStoreAPI]:
    """The data directory's stores, or the cluster's when [storage] database is set."""
    stores = open_stores(_settings(args))
    _opened.append(stores)
    return stores


def _close_stores() -> None:
    while _opened:
        private, users = _opened.pop()
        private.close()
        users.close()


# ---- commands ----

def cmd_serve(args: argparse.Namespace) -> int:
    from pyproxy import logs, multiproc

    upstream = "" if args.no_upstream else args.upstream
    settings = _settings(
        args, host=args.host, port=args.port, upstream_url=upstream, workers=args.workers,
        log_level=args.log_level, log_format=args.log_format, offline=args.offline or None,
    )
    logs.configure(settings.log_level, settings.log_format)
    # before the web stack imports prometheus_client, which reads the setting once
    metrics_dir = multiproc.prepare(settings.data_dir)
    from pyproxy.web import runner as server

    try:
        return server.serve(settings)
    finally:
        if metrics_dir is not None:
            multiproc.release(metrics_dir)


def _read_password(args: argparse.Namespace) -> str:
    if args.password_stdin:
        line = sys.stdin.readline()
        return line.rstrip("\r\n")
    if not sys.stdin.isatty():
        raise CommandError("no terminal to ask for a password: use --password-stdin")
    first = getpass.getpass("Password: ")
    if first != getpass.getpass("Repeat password: "):
        raise CommandError("the passwords differ")
    return first


def cmd_user_add(args: argparse.Namespace) -> int:
    _, users = _stores(args)
    users.add_user(args.name, _read_password(args), admin=args.admin)
    print(f"added user {args.name}" + (" (admin)" if args.admin else ""))
    return 0


def cmd_user_list(args: argparse.Namespace) -> int:
    _, users = _stores(args)
    for name, admin, tokens in users.users():
        print(f"{name}\t{'admin' if admin else 'user'}\t{tokens} token(s)")
    return 0


def cmd_user_remove(args: argparse.Namespace) -> int:
    _, users = _stores(args)
    users.remove_user(args.name)
    print(f"removed user {args.name} and their tokens")
    return 0


def cmd_token_create(args: argparse.Namespace) -> int:
    _, users = _stores(args)
    print(users.create_token(args.user))
    return 0


def cmd_token_revoke(args: argparse.Namespace) -> int:
    _, users = _stores(args)
    count = users.revoke_token(args.token)
    print(f"revoked {count} token(s)")
    return 0


def cmd_token_list(args: argparse.Namespace) -> int:
    _, users = _stores(args)
    if not users.exists(args.user):
        raise CommandError(f"no user {args.user!r}")
    for prefix, created in users.tokens(args.user):
        print(f"{prefix}…\tcreated {created}")
    return 0


def cmd_grant(args: argparse.Namespace) -> int:
    private, users = _stores(args)
    project = normalize(args.project)
    if args.revoke:
        if not private.revoke(project, args.user):
            raise CommandError(f"{args.user!r} has no role on {project!r}")
        print(f"{args.user} no longer has a role on {project}")
        return 0
    if not users.exists(args.user):
        raise CommandError(f"no user {args.user!r}")
    role = "owner" if args.owner else "reader" if args.read else "maintainer"
    private.grant(project, args.user, role)
    print(f"{args.user} is now {role} of {project}")
    return 0


def cmd_restrict(args: argparse.Namespace) -> int:
    private, _ = _stores(args)
    project = normalize(args.project)
    changed = private.restrict(project, undo=args.undo)
    if args.undo:
        state = "readable by every reader again" if changed else "was not restricted"
    else:
        state = "restricted" if changed else "was already restricted"
    print(f"{project} {state}")
    if not args.undo:
        print(f"readers: users with a role on it, and admins (pyproxy grant {project} USER --read)")
    return 0


def cmd_reserve(args: argparse.Namespace) -> int:
    try:
        if not args.project.isascii():
            raise InvalidName(args.project)
        project = canonicalize_name(args.project, validate=True)
    except InvalidName:
        raise CommandError(f"{args.project!r} is not a valid project name") from None
    private, _ = _stores(args)
    if not private.reserve(project, args.project):
        print(f"{project} is already a private project")
        return 0
    print(f"{project} is private now: pyproxy serves no upstream file of that name")
    print(f"its first uploader becomes its owner (or: pyproxy grant {project} USER --owner)")
    return 0


def cmd_yank(args: argparse.Namespace) -> int:
    private, _ = _stores(args)
    count = private.yank(normalize(args.project), args.version, args.reason, undo=args.undo)
    verb = "un-yanked" if args.undo else "yanked"
    print(f"{verb} {count} file(s) of {normalize(args.project)} {args.version}")
    return 0


def cmd_remove(args: argparse.Namespace) -> int:
    settings = _settings(args)
    layout = DataDir(settings.data_dir)
    project = normalize(args.project)

    def remove() -> int:
        private, users = open_stores(settings)
        try:
            return private.remove(project, args.version, forget_name=args.forget_name)
        finally:
            private.close()
            users.close()

    if settings.storage_database:
        count = remove()
    else:
        # on a full disk SQLite has no room to record a delete (nor to open the store): the
        # spare file's room lets the delete through, and the bodies it frees pay it back
        spare = Spare(layout.spare)
        count = with_room(spare, remove, "remove files")
        spare.keep()
    what = f"{project} {args.version}" if args.version else project
    print(f"removed {count} file(s) of {what}; their filenames cannot be uploaded again")
    if args.version is None and not args.forget_name:
        print(f"the name {project} stays reserved for private use (--forget-name releases it)")
    return 0


# ---- parser ----

def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(
        prog="pyproxy", description="A caching pull-through Python package index."
    )
    commands = parser.add_subparsers(dest="command", required=True, metavar="COMMAND")

    def command(name: str, func: Callable[[argparse.Namespace], int], help: str,
                parent: Any = commands) -> argparse.ArgumentParser:
        sub: argparse.ArgumentParser = parent.add_parser(name, help=help, description=help)
        _common(sub)
        sub.set_defaults(func=func)
        return sub

    serve = command("serve", cmd_serve, "run the index server")
    serve.add_argument("--host", help="address to listen on (default 127.0.0.1)")
    serve.add_argument("--port", type=int,
                       help="port to listen on (default 8080; 0 picks a free one)")
    serve.add_argument("--workers", metavar="N|auto",
                       help="worker processes sharing the port (default auto: one per core)")
    serve.add_argument("--log-level", type=str.lower, choices=["debug", "info", "warning", "error"])
    serve.add_argument("--log-format", type=str.lower, choices=["text", "json"],
                       help="stderr lines as text (default) or one JSON object per line")
    upstream = serve.add_mutually_exclusive_group()
    upstream.add_argument("--upstream", metavar="URL", help="upstream simple index URL")
    upstream.add_argument("--no-upstream", action="store_true", help="serve private packages only")
    serve.add_argument("--offline", action="store_true",
                       help="never contact upstream: serve private files and what the cache holds")

    user = commands.add_parser("user", help="manage users who may upload",
                               description="manage users who may upload")
    user_commands = user.add_subparsers(dest="user_command", required=True, metavar="COMMAND")
    add = command("add", cmd_user_add, "add a user (asks for the password)", user_commands)
    add.add_argument("name")
    add.add_argument("--password-stdin", action="store_true",
                     help="read the password from standard input")
    add.add_argument("--admin", action="store_true", help="may upload to every project")
    command("list", cmd_user_list, "list users", user_commands)
    remove_user = command("remove", cmd_user_remove, "remove a user and their tokens",
                          user_commands)
    remove_user.add_argument("name")

    token = commands.add_parser("token", help="manage API tokens", description="manage API tokens")
    token_commands = token.add_subparsers(dest="token_command", required=True, metavar="COMMAND")
    create = command("create", cmd_token_create,
                     "create a token; twine uses it with user name __token__", token_commands)
    create.add_argument("user")
    revoke = command("revoke", cmd_token_revoke,
                     "revoke a token (whole, or by the prefix 'token list' shows)", token_commands)
    revoke.add_argument("token")
    list_tokens = command("list", cmd_token_list, "list a user's tokens by prefix", token_commands)
    list_tokens.add_argument("user")

    grant = command("grant", cmd_grant, "let a user upload to (or read) a private project")
    grant.add_argument("project")
    grant.add_argument("user")
    role = grant.add_mutually_exclusive_group()
    role.add_argument("--owner", action="store_true", help="grant the owner role")
    role.add_argument("--read", action="store_true",
                      help="grant the reader role: may read the project if restricted, not upload")
    role.add_argument("--revoke", action="store_true", help="take the user's role away instead")

    restrict = command("restrict", cmd_restrict,
                       "let only users with a role on a private project (and admins) read it")
    restrict.add_argument("project")
    restrict.add_argument("--undo", action="store_true", help="let every reader read it again")

    reserve = command("reserve", cmd_reserve,
                      "make a name private before anyone uploads it (also one upstream has)")
    reserve.add_argument("project")

    yank = command("yank", cmd_yank, "yank a private release (installers skip it unless pinned)")
    yank.add_argument("project")
    yank.add_argument("version")
    yank.add_argument("--reason", default="", help="shown to users by pip and uv")
    yank.add_argument("--undo", action="store_true", help="un-yank instead")

    remove = command("remove", cmd_remove, "delete a private project's files, or one version's")
    remove.add_argument("project")
    remove.add_argument("version", nargs="?")
    remove.add_argument("--forget-name", action="store_true",
                        help="also release the name, so upstream may serve it again")

    cli_cache.add_parsers(commands, command, _settings)
    cli_transfer.add_parsers(commands, command, _settings)
    cli_policy.add_parsers(commands, command, _settings)
    cli_prefetch.add_parser(commands)  # its own --config, no --data-dir: it talks to a server
    return parser


def main(argv: Sequence[str] | None = None) -> int:
    args = build_parser().parse_args(argv)
    func: Callable[[argparse.Namespace], int] = args.func
    try:
        try:
            return func(args)
        finally:
            _close_stores()
    except ConfigError as exc:
        print(f"pyproxy: configuration error: {exc}", file=sys.stderr)
        return 2
    except (CommandError, AuthError, NotFound, Unavailable, BucketUnavailable,
            DatabaseUnavailable, SchemaTooNew) as exc:
        print(f"pyproxy: {exc}", file=sys.stderr)
        return 1
    except KeyboardInterrupt:
        return 130
    except BrokenPipeError:  # `pyproxy ... | head`: the reader has what it wanted
        # what is still buffered would fail again as the interpreter exits
        os.dup2(os.open(os.devnull, os.O_WRONLY), sys.stdout.fileno())
        return 1
    except OSError as exc:
        print(f"pyproxy: {exc.strerror or exc}: {exc.filename or ''}".rstrip(": "), file=sys.stderr)
        return 1
    except sqlite3.Error as exc:
        if not is_disk_full(exc):
            raise
        print(f"pyproxy: the data directory's disk is full ({exc}): free space first, e.g. with"
              " pyproxy cache prune or pyproxy remove", file=sys.stderr)
        return 1


if __name__ == "__main__":
    sys.exit(main())
