"""pyproxy.cli: the operator commands, run in-process through main().

The commands that work on the stores run twice (`storage`): on a data directory, and on a
cluster's PostgreSQL ([storage] database in a configuration file), where they must do the same.
"""

from __future__ import annotations

import argparse
import contextlib
import hashlib
import io
import os
import sys
from collections.abc import Iterator
from pathlib import Path

import pytest

from pyproxy.access import ReadRestrictions, may_upload
from pyproxy.cli import main as cli
from pyproxy.compose import open_stores
from pyproxy.config import load_settings
from pyproxy.model import Unavailable, normalize
from pyproxy.stores import auth
from pyproxy.stores.auth import TOKEN_USERNAME, UserStore
from pyproxy.stores.bucket_files import BucketFiles
from pyproxy.stores.interfaces import PrivateStoreAPI, UserStoreAPI
from pyproxy.stores.private import PrivateStore
from pyproxy.stores.private_files import PrivateFiles
from pyproxy.stores.private_schema import NewFile
from tests.servers.s3 import S3Server
from tests.servers.s3 import credentials as s3_credentials

PASSWORD = "correct horse battery"


@pytest.fixture(autouse=True)
def _isolated(isolated_cwd: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    """No ./pyproxy.toml, no PYPROXY_* variables (see conftest), and a cheap scrypt cost."""
    monkeypatch.setattr(auth, "_SCRYPT_N", 2**8)


@pytest.fixture
def data_dir(tmp_path: Path) -> Path:
    return tmp_path / "data"


@pytest.fixture(params=["sqlite", "postgresql"])
def storage(request: pytest.FixtureRequest, tmp_path: Path) -> str:
    """The cluster's DSN (its bucket's name and endpoint in `cluster.toml` beside it), or ""
    for the data directory's stores."""
    if request.param == "sqlite":
        return ""
    dsn: str = request.getfixturevalue("pg_dsn")
    bucket: str = request.getfixturevalue("bucket")  # its credentials in the environment
    s3: S3Server = request.getfixturevalue("s3")
    storage_config(tmp_path, dsn, f"s3://{bucket}/cli", s3.endpoint)
    return dsn


def storage_config(tmp_path: Path, dsn: str, objects: str = "s3://bucket",
                   endpoint: str = "http://127.0.0.1:9") -> Path:
    config = tmp_path / "cluster.toml"
    config.write_text(f'[storage]\ndatabase = "{dsn}"\nobjects = "{objects}"\n'
                      f's3_endpoint = "{endpoint}"\nnode_url = "http://127.0.0.1:8080"\n')
    return config


@pytest.fixture
def pyproxy(data_dir: Path, capsys: pytest.CaptureFixture[str], monkeypatch: pytest.MonkeyPatch,  # type: ignore[no-untyped-def]
            storage: str, tmp_path: Path):
    """run(*args, stdin=None) -> (exit status, stdout, stderr), with --data-dir (and on a
    cluster --config) added."""
    config = ["--config", str(tmp_path / "cluster.toml")] if storage else []

    def run(*args: str, stdin: str | None = None, data: bool = True) -> tuple[int, str, str]:
        monkeypatch.setattr("sys.stdin", io.StringIO(stdin or ""))
        own = config if "--config" not in args else []  # a test's own configuration wins
        argv = [*args, "--data-dir", str(data_dir), *own] if data else list(args)
        code = cli.main(argv)
        captured = capsys.readouterr()
        return code, captured.out, captured.err

    return run


def one_line_error(err: str) -> str:
    assert "Traceback" not in err
    lines = err.strip().splitlines()
    assert len(lines) == 1, err
    assert lines[0].startswith("pyproxy: ")
    return lines[0]


@pytest.fixture
def stores(data_dir: Path, storage: str, tmp_path: Path
           ) -> Iterator[tuple[PrivateStoreAPI, UserStoreAPI]]:
    """The stores the commands work on, opened as a test's own view (nothing held in memory);
    on a cluster with the bodies in its bucket, as the commands have them."""
    if storage:
        settings = load_settings(str(tmp_path / "cluster.toml"), {"data_dir": str(data_dir)})
        opened: tuple[PrivateStoreAPI, UserStoreAPI] = open_stores(settings)
    else:
        opened = PrivateStore(data_dir / "private"), UserStore(data_dir)
    yield opened
    for store in opened:
        store.close()


@pytest.fixture
def open_users(stores: tuple[PrivateStoreAPI, UserStoreAPI]):  # type: ignore[no-untyped-def]
    """open_users(data_dir) -> the user store; closing it is harmless (the fixture closes)."""

    class Unclosed:
        def __init__(self, users: UserStoreAPI) -> None:
            self._users = users

        def __getattr__(self, name: str) -> object:
            return getattr(self._users, name)

        def close(self) -> None:
            pass

    return lambda _data_dir: Unclosed(stores[1])


@pytest.fixture
def private(stores: tuple[PrivateStoreAPI, UserStoreAPI]) -> PrivateStoreAPI:
    return stores[0]


def add_private(store: PrivateStoreAPI, filename: str, uploader: str = "alice") -> None:
    body = filename.encode()
    name, version = filename.split("-")[:2]
    version = version.removesuffix(".tar.gz")
    new = NewFile(
        filename=filename, project=normalize(name), display_name=name, version=version,
        filetype="bdist_wheel" if filename.endswith(".whl") else "sdist", size=len(body),
        sha256=hashlib.sha256(body).hexdigest(),
        blake2_256=hashlib.blake2b(body, digest_size=32).hexdigest(),
        md5=hashlib.md5(body).hexdigest(), core_metadata=None, requires_python=None, summary=None,
        fields={}, uploader=uploader,
    )
    with store.files.temporary_file() as tmp:
        tmp.write_bytes(body)
        store.add_file(new, tmp)


# ---- users ----


def test_user_add_list_remove(pyproxy, data_dir: Path, open_users) -> None:  # type: ignore[no-untyped-def]
    code, out, err = pyproxy("user", "add", "alice", "--password-stdin", stdin=PASSWORD + "\n")
    assert (code, err) == (0, "")
    assert out.strip() == "added user alice"
    code, out, _ = pyproxy("user", "add", "root", "--admin", "--password-stdin", stdin=PASSWORD + "\r\n")
    assert code == 0 and "(admin)" in out

    users = open_users(data_dir)
    try:
        assert users.authenticate("alice", PASSWORD) is not None  # the newline is not part of it
        assert users.authenticate("root", PASSWORD).admin  # type: ignore[union-attr]
    finally:
        users.close()

    code, out, _ = pyproxy("user", "list")
    assert code == 0
    assert out.splitlines() == ["alice\tuser\t0 token(s)", "root\tadmin\t0 token(s)"]

    code, out, _ = pyproxy("user", "remove", "alice")
    assert code == 0 and "removed user alice" in out
    assert pyproxy("user", "list")[1].splitlines() == ["root\tadmin\t0 token(s)"]


def test_user_add_password_with_spaces_kept(pyproxy, data_dir: Path, open_users) -> None:  # type: ignore[no-untyped-def]
    assert pyproxy("user", "add", "alice", "--password-stdin", stdin="  spaced out  \n")[0] == 0
    users = open_users(data_dir)
    try:
        assert users.authenticate("alice", "  spaced out  ") is not None
    finally:
        users.close()


@pytest.mark.parametrize(
    ("args", "stdin", "fragment"),
    [
        (("user", "add", "alice", "--password-stdin"), "short\n", "8 characters"),
        (("user", "add", "alice", "--password-stdin"), "", "8 characters"),
        (("user", "add", "bad name", "--password-stdin"), PASSWORD, "not a valid user name"),
        (("user", "add", TOKEN_USERNAME, "--password-stdin"), PASSWORD, "not a valid user name"),
        (("user", "add", "alice"), PASSWORD, "--password-stdin"),  # no terminal to ask on
        (("user", "remove", "nobody"), None, "no user"),
    ],
)
def test_user_errors(pyproxy, args: tuple[str, ...], stdin: str | None, fragment: str) -> None:  # type: ignore[no-untyped-def]
    code, out, err = pyproxy(*args, stdin=stdin)
    assert code == 1
    assert fragment in one_line_error(err)
    assert out == ""


def test_duplicate_user(pyproxy) -> None:  # type: ignore[no-untyped-def]
    pyproxy("user", "add", "alice", "--password-stdin", stdin=PASSWORD)
    code, _, err = pyproxy("user", "add", "alice", "--password-stdin", stdin=PASSWORD)
    assert code == 1 and "already exists" in one_line_error(err)


# ---- tokens ----


def test_token_create_list_revoke(pyproxy, data_dir: Path, open_users) -> None:  # type: ignore[no-untyped-def]
    pyproxy("user", "add", "alice", "--password-stdin", stdin=PASSWORD)
    code, out, err = pyproxy("token", "create", "alice")
    assert (code, err) == (0, "")
    first = out.strip()
    assert first.startswith("pyproxy-") and "\n" not in first
    second = pyproxy("token", "create", "alice")[1].strip()

    users = open_users(data_dir)
    try:
        assert users.authenticate(TOKEN_USERNAME, first + "\n") is not None
    finally:
        users.close()

    code, out, _ = pyproxy("token", "list", "alice")
    assert code == 0
    rows = out.splitlines()
    assert len(rows) == 2
    prefixes = [row.split("\t")[0].rstrip("…") for row in rows]
    assert any(first.startswith(p) for p in prefixes) and any(second.startswith(p) for p in prefixes)
    assert all("created" in row for row in rows)
    assert pyproxy("user", "list")[1].strip() == "alice\tuser\t2 token(s)"

    code, out, _ = pyproxy("token", "revoke", first)  # the whole token
    assert code == 0 and "revoked 1 token(s)" in out
    second_prefix = next(p for p in prefixes if second.startswith(p))
    code, out, _ = pyproxy("token", "revoke", second_prefix)  # the prefix `token list` shows
    assert code == 0 and "revoked 1 token(s)" in out
    assert pyproxy("token", "list", "alice")[1] == ""

    users = open_users(data_dir)
    try:
        assert users.authenticate(TOKEN_USERNAME, first) is None
        assert users.authenticate(TOKEN_USERNAME, second) is None
    finally:
        users.close()

    code, _, err = pyproxy("token", "revoke", first)
    assert code == 1 and "no such token" in one_line_error(err)


@pytest.mark.parametrize("args", [("token", "create", "nobody"), ("token", "list", "nobody")])
def test_token_unknown_user(pyproxy, args: tuple[str, ...]) -> None:  # type: ignore[no-untyped-def]
    code, out, err = pyproxy(*args)
    assert code == 1 and out == ""
    assert "nobody" in one_line_error(err)


def test_user_remove_revokes_tokens(pyproxy, data_dir: Path, open_users) -> None:  # type: ignore[no-untyped-def]
    pyproxy("user", "add", "alice", "--password-stdin", stdin=PASSWORD)
    token = pyproxy("token", "create", "alice")[1].strip()
    pyproxy("user", "remove", "alice")
    users = open_users(data_dir)
    try:
        assert users.authenticate(TOKEN_USERNAME, token) is None
    finally:
        users.close()


# ---- grant, yank, remove ----


def test_grant_and_revoke(pyproxy, private: PrivateStoreAPI) -> None:  # type: ignore[no-untyped-def]
    add_private(private, "foo-1.0-py3-none-any.whl", uploader="alice")
    pyproxy("user", "add", "bob", "--password-stdin", stdin=PASSWORD)
    code, out, err = pyproxy("grant", "Foo", "bob")
    assert (code, err) == (0, "")
    assert "bob is now maintainer of foo" in out
    assert may_upload("bob", private.project_roles(normalize("foo")), admin=False)

    code, out, _ = pyproxy("grant", "foo", "bob", "--owner")
    assert code == 0 and "owner" in out
    assert ("bob", "owner") in private.roles(normalize("foo"))

    code, out, _ = pyproxy("grant", "foo", "bob", "--revoke")
    assert code == 0 and "no longer" in out
    assert not may_upload("bob", private.project_roles(normalize("foo")), admin=False)

    code, _, err = pyproxy("grant", "foo", "bob", "--revoke")
    assert code == 1 and "no role" in one_line_error(err)


@pytest.mark.parametrize(
    ("args", "fragment"),
    [
        (("grant", "foo", "nobody"), "no user"),
        (("grant", "nope", "alice"), "nope"),
        (("yank", "nope", "1.0"), "nope"),
        (("yank", "foo", "9.9"), "9.9"),
        (("remove", "nope"), "nope"),
        (("remove", "foo", "9.9"), "9.9"),
    ],
)
def test_unknown_names(pyproxy, private: PrivateStoreAPI, args: tuple[str, ...], fragment: str) -> None:  # type: ignore[no-untyped-def]
    add_private(private, "foo-1.0-py3-none-any.whl")
    pyproxy("user", "add", "alice", "--password-stdin", stdin=PASSWORD)
    code, out, err = pyproxy(*args)
    assert code == 1 and out == ""
    assert fragment in one_line_error(err)


def test_yank_and_undo(pyproxy, private: PrivateStoreAPI) -> None:  # type: ignore[no-untyped-def]
    add_private(private, "foo-1.0-py3-none-any.whl")
    add_private(private, "foo-1.0.tar.gz")
    code, out, err = pyproxy("yank", "Foo", "1.0", "--reason", "broken build")
    assert (code, err) == (0, "")
    assert "yanked 2 file(s) of foo 1.0" in out
    files = private.project_page(normalize("foo")).files
    assert all(f.yanked and f.yanked_reason == "broken build" for f in files)

    code, out, _ = pyproxy("yank", "foo", "1.0", "--undo")
    assert code == 0 and "un-yanked 2 file(s)" in out
    assert not any(f.yanked for f in private.project_page(normalize("foo")).files)


def body_stored(private: PrivateStoreAPI, filename: str) -> bool:
    """Whether the body of `add_private(private, filename)` is kept: in the data dir, or in
    the cluster's bucket."""
    sha256 = hashlib.sha256(filename.encode()).hexdigest()
    files = private.files
    if isinstance(files, BucketFiles):
        return files.bucket.size(files.key(sha256)) is not None
    assert isinstance(files, PrivateFiles)
    return files.path(sha256).exists()


def test_remove_version_then_project(pyproxy, private: PrivateStoreAPI) -> None:  # type: ignore[no-untyped-def]
    add_private(private, "foo-1.0-py3-none-any.whl")
    add_private(private, "foo-2.0-py3-none-any.whl")
    assert body_stored(private, "foo-1.0-py3-none-any.whl")
    code, out, err = pyproxy("remove", "foo", "1.0")
    assert (code, err) == (0, "")
    assert "removed 1 file(s) of foo 1.0" in out
    assert [f.filename for f in private.project_page(normalize("foo")).files] == ["foo-2.0-py3-none-any.whl"]
    assert not body_stored(private, "foo-1.0-py3-none-any.whl")  # the bucket's too
    assert body_stored(private, "foo-2.0-py3-none-any.whl")

    code, out, _ = pyproxy("remove", "foo")
    assert code == 0 and "stays reserved" in out
    assert private.has_project(normalize("foo"))

    code, out, _ = pyproxy("remove", "foo", "--forget-name")
    assert code == 0 and "stays reserved" not in out
    assert not private.has_project(normalize("foo"))


def test_reserve_makes_a_name_private_before_any_upload(pyproxy, private: PrivateStoreAPI) -> None:  # type: ignore[no-untyped-def]
    code, out, err = pyproxy("reserve", "Requests")
    assert (code, err) == (0, "")
    assert "requests is private now" in out and "pyproxy grant requests USER --owner" in out
    assert private.has_project(normalize("requests"))
    assert private.list_projects().names == ("Requests",)
    assert private.roles(normalize("requests")) == []  # its first uploader will own it
    code, out, _ = pyproxy("reserve", "requests")
    assert code == 0 and out.strip() == "requests is already a private project"
    pyproxy("user", "add", "bob", "--password-stdin", stdin=PASSWORD)
    code, out, err = pyproxy("grant", "requests", "bob", "--owner")  # a reserved name takes grants
    assert (code, err) == (0, "") and "bob is now owner of requests" in out


@pytest.mark.parametrize("name", ["bad-", "no spaces", "a/b", "ﬁle", ""])
def test_reserve_refuses_what_is_not_a_project_name(pyproxy, data_dir: Path, name: str) -> None:  # type: ignore[no-untyped-def]
    code, _, err = pyproxy("reserve", name)
    assert code == 1 and "is not a valid project name" in one_line_error(err)
    assert not (data_dir / "private").exists()


# ---- configuration errors ----


@pytest.mark.parametrize(
    ("text", "named"),
    [
        ("[server]\nport = 'x'\n", "server.port"),
        ("[server]\nworkers = 0\n", "server.workers"),
        ("[server]\nunknown = 1\n", "server.unknown"),
        ("[server\n", "TOML"),
    ],
)
@pytest.mark.parametrize("command", [("user", "list"), ("token", "list", "alice"), ("remove", "foo")])
def test_bad_config_file_exits_2(pyproxy, tmp_path: Path, text: str | bytes, named: str,  # type: ignore[no-untyped-def]
                                 command: tuple[str, ...]) -> None:
    path = tmp_path / "bad.toml"
    if isinstance(text, bytes):
        path.write_bytes(text)
    else:
        path.write_text(text)
    code, out, err = pyproxy(*command, "--config", str(path))
    assert code == 2 and out == ""
    line = one_line_error(err)
    assert line.startswith("pyproxy: configuration error:") and named in line


def test_config_file_not_utf8_exits_2(pyproxy, tmp_path: Path) -> None:  # type: ignore[no-untyped-def]
    path = tmp_path / "latin1.toml"
    path.write_bytes(b"[server]\nhost = '\xe9'\n")
    code, out, err = pyproxy("user", "list", "--config", str(path))
    assert code == 2 and out == ""
    assert "latin1.toml" in one_line_error(err)


@pytest.fixture
def no_server(monkeypatch: pytest.MonkeyPatch) -> None:
    """A server that would start fails the test at once, rather than serving until killed."""
    from pyproxy.web import runner

    def serve(settings: object) -> int:
        raise AssertionError(f"a server started with {settings}")

    monkeypatch.setattr(runner, "serve", serve)


@pytest.mark.usefixtures("no_server")
@pytest.mark.parametrize(
    ("args", "named"),
    [
        (("--port", "70000"), "server.port"),
        (("--workers", "0"), "server.workers"),
        (("--workers", "100000"), "server.workers"),
        (("--upstream", "ftp://127.0.0.1/simple/"), "upstream.url"),
        (("--upstream", "http://[::1/simple/"), "upstream.url"),
        (("--upstream", "http://127.0.0.1:99999/simple/"), "upstream.url"),
        (("--host", "\udcff"), "server.host"),  # $'\xff' as sys.argv decodes it
    ],
)
def test_serve_with_bad_settings_exits_2_before_listening(pyproxy, args: tuple[str, ...], named: str) -> None:  # type: ignore[no-untyped-def]
    code, out, err = pyproxy("serve", "--host", "127.0.0.1", *args)
    assert code == 2 and out == ""
    line = one_line_error(err)
    assert "configuration error" in line and named in line and "listening" not in err


@pytest.mark.usefixtures("no_server")
@pytest.mark.parametrize(
    ("text", "named"),
    [
        ("[upstream]\ntimeout = nan\n", "upstream.timeout"),  # every upstream request a 500
        ("[upstream]\ndeadline = inf\n", "upstream.deadline"),
        ("[cache]\nmax_size = 1.5\n", "cache.max_size"),  # a traceback in parse_size
        ("[cache]\nmax_size = '99999999999999999999999TiB'\n", "cache.max_size"),  # SQLite's
        ("[policy]\nmin_age = '99999999999999999999d'\n", "policy.min_age"),  # a C int's
        ("[upstream]\nurl = 'http://[::1/simple/'\n", "upstream.url"),  # crashed after listening
        ("[upstream]\nurl = 'http://127.0.0.1:99999/simple/'\n", "upstream.url"),
        ("[[upstreams]]\nname = 'gpu'\nurl = 'http://[::1/'\nprojects = ['torch']\n",
         "upstreams.gpu.url"),
    ],
)
def test_serve_with_a_bad_file_exits_2_before_listening(pyproxy, tmp_path: Path, text: str,  # type: ignore[no-untyped-def]
                                                         named: str) -> None:
    path = tmp_path / "bad.toml"
    path.write_text(text)
    code, out, err = pyproxy("serve", "--port", "0", "--config", str(path))
    assert code == 2 and out == ""
    line = one_line_error(err)
    assert line.startswith("pyproxy: configuration error:") and named in line


@pytest.mark.usefixtures("no_server")
@pytest.mark.parametrize(
    ("variable", "value"),
    [
        ("PYPROXY_UPSTREAM_TIMEOUT", "nan"),
        ("PYPROXY_UPSTREAM_URL", "http://[::1"),
        ("PYPROXY_SERVER_HOST", "\udcff"),  # $'\xff' as os.environ decodes it
        ("PYPROXY_SERVER_BOGUS", "1"),  # a key no [server] has, as in the file
    ],
)
def test_serve_with_a_bad_environment_exits_2_before_listening(  # type: ignore[no-untyped-def]
    pyproxy, monkeypatch: pytest.MonkeyPatch, variable: str, value: str
) -> None:
    monkeypatch.setenv(variable, value)
    code, out, err = pyproxy("serve", "--port", "0")
    assert code == 2 and out == ""
    line = one_line_error(err)
    assert line.startswith("pyproxy: configuration error:")
    assert variable in line or variable.removeprefix("PYPROXY_").lower().replace("_", ".", 1) in line


def test_missing_config_file_exits_2(pyproxy, tmp_path: Path) -> None:  # type: ignore[no-untyped-def]
    code, _, err = pyproxy("user", "list", "--config", str(tmp_path / "missing.toml"))
    assert code == 2 and "missing.toml" in one_line_error(err)


def test_bad_environment_exits_2(pyproxy, monkeypatch: pytest.MonkeyPatch) -> None:  # type: ignore[no-untyped-def]
    monkeypatch.setenv("PYPROXY_LOG_LEVEL", "loud")
    code, _, err = pyproxy("user", "list")
    assert code == 2 and "PYPROXY_LOG_LEVEL" in one_line_error(err)


def test_config_file_from_environment(pyproxy, tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:  # type: ignore[no-untyped-def]
    conf = tmp_path / "conf"
    conf.mkdir()
    (conf / "pyproxy.toml").write_text("[server]\ndata_dir = 'state'\n")
    monkeypatch.setenv("PYPROXY_CONFIG", str(conf / "pyproxy.toml"))
    code, _, _ = pyproxy("user", "add", "alice", "--password-stdin", stdin=PASSWORD, data=False)
    assert code == 0
    assert (conf / "state" / "auth.sqlite3").is_file()


def test_data_dir_that_is_a_file(pyproxy, tmp_path: Path) -> None:  # type: ignore[no-untyped-def]
    blocker = tmp_path / "afile"
    blocker.write_text("")
    code, _, err = pyproxy("user", "list", "--data-dir", str(blocker), data=False)
    assert code == 1
    one_line_error(err)


# ---- help ----


def _all_commands() -> list[tuple[str, ...]]:
    """Every command path in the parser, so a new command is covered without editing this list."""
    found: list[tuple[str, ...]] = [()]

    def walk(parser: argparse.ArgumentParser, path: tuple[str, ...]) -> None:
        for action in parser._actions:
            if isinstance(action, argparse._SubParsersAction):
                for name, sub in action.choices.items():
                    found.append((*path, name))
                    walk(sub, (*path, name))

    walk(cli.build_parser(), ())
    return found


COMMANDS = _all_commands()


def test_command_list_is_complete() -> None:
    expected = {
        (), ("serve",), ("user",), ("user", "add"), ("user", "list"), ("user", "remove"), ("token",),
        ("token", "create"), ("token", "revoke"), ("token", "list"), ("grant",), ("yank",), ("remove",),
    }
    assert expected <= set(COMMANDS)


@pytest.mark.parametrize("command", COMMANDS, ids=lambda c: " ".join(c) or "pyproxy")
def test_help(command: tuple[str, ...], capsys: pytest.CaptureFixture[str]) -> None:
    with pytest.raises(SystemExit) as exited:
        cli.main([*command, "--help"])
    assert exited.value.code == 0
    captured = capsys.readouterr()
    assert captured.out.startswith("usage: pyproxy")
    assert " ".join(("pyproxy", *command)) in captured.out.splitlines()[0]
    assert captured.err == ""


@pytest.mark.parametrize("argv", [[], ["user"], ["token"], ["bogus"], ["user", "add"]])
def test_usage_errors_exit_2(argv: list[str], capsys: pytest.CaptureFixture[str]) -> None:
    with pytest.raises(SystemExit) as exited:
        cli.main(argv)
    assert exited.value.code == 2
    assert "usage:" in capsys.readouterr().err


def test_restrict_and_grant_read(pyproxy, private: PrivateStoreAPI) -> None:  # type: ignore[no-untyped-def]
    add_private(private, "foo-1.0-py3-none-any.whl", uploader="alice")
    pyproxy("user", "add", "bob", "--password-stdin", stdin=PASSWORD)
    code, out, err = pyproxy("restrict", "Foo")
    assert (code, err) == (0, "")
    assert "foo restricted" in out and "pyproxy grant foo USER --read" in out
    code, out, _ = pyproxy("restrict", "foo")
    assert code == 0 and "already" in out

    code, out, err = pyproxy("grant", "foo", "bob", "--read")
    assert (code, err) == (0, "")
    assert "bob is now reader of foo" in out
    assert ("bob", "reader") in private.roles(normalize("foo"))
    assert ReadRestrictions(private.restricted_readers()).may_read(normalize("foo"), "bob", admin=False)
    assert not may_upload("bob", private.project_roles(normalize("foo")), admin=False)

    with pytest.raises(SystemExit) as exited:  # one role at a time
        pyproxy("grant", "foo", "bob", "--read", "--owner")
    assert exited.value.code == 2

    code, out, _ = pyproxy("restrict", "foo", "--undo")
    assert code == 0 and "readable by every reader" in out
    # the SQLite `private` looks again only after a moment; the cluster's holds nothing
    fresh = PrivateStore(private.directory) if isinstance(private, PrivateStore) else private
    assert not fresh.restricted_readers()
    if fresh is not private:
        fresh.close()
    code, _, err = pyproxy("restrict", "nope")
    assert code == 1 and "nope" in one_line_error(err)


# ---- a cluster's database that cannot be reached ----


@pytest.mark.parametrize("command", [("user", "list"), ("token", "revoke", "pyproxy-abcdef"),
                                     ("grant", "foo", "bob"), ("yank", "foo", "1.0"),
                                     ("remove", "foo"), ("restrict", "foo"), ("reserve", "foo")])
def test_an_unreachable_database_is_one_line_and_exit_1(
    tmp_path: Path, capsys: pytest.CaptureFixture[str], command: tuple[str, ...],
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    from tests.servers.postgres import free_port

    for name, value in s3_credentials().items():  # the bucket is not asked: the database fails first
        monkeypatch.setenv(name, value)

    config = storage_config(tmp_path, f"postgresql://pyproxy:s3cr3t-pw@127.0.0.1:{free_port()}/db")
    code = cli.main([*command, "--config", str(config), "--data-dir", str(tmp_path / "data")])
    captured = capsys.readouterr()
    line = one_line_error(captured.err)
    assert code == 1, captured
    assert "cannot connect to PostgreSQL at postgresql://pyproxy:***@127.0.0.1" in line
    assert "s3cr3t-pw" not in captured.err + captured.out


def test_serve_with_an_unreachable_database_is_one_line_and_exit_1(
    tmp_path: Path, s3: S3Server, bucket: str
) -> None:
    """In a process of its own: serve sets up logging and metrics for the whole process. (The
    bucket answers: serve asks it first.)"""
    import os
    import subprocess
    import sys

    from tests.servers.postgres import free_port

    config = storage_config(tmp_path, f"postgresql://pyproxy:s3cr3t-pw@127.0.0.1:{free_port()}/db",
                            f"s3://{bucket}/cli", s3.endpoint)
    done = subprocess.run(
        [sys.executable, "-m", "pyproxy", "serve", "--port", "0", "--config", str(config),
         "--data-dir", str(tmp_path / "data")],
        capture_output=True, text=True, timeout=60, stdin=subprocess.DEVNULL,
        env={**os.environ, **s3_credentials()},
    )
    assert done.returncode == 1, done
    line = one_line_error(done.stderr)
    assert "cannot connect to PostgreSQL at postgresql://pyproxy:***@127.0.0.1" in line
    assert "s3cr3t-pw" not in done.stderr + done.stdout
    assert "listening" not in done.stderr  # refused before it listens


def test_a_store_that_is_unavailable_is_one_line_and_exit_1(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch, capsys: pytest.CaptureFixture[str]
) -> None:
    def unavailable(args: argparse.Namespace) -> int:  # as export finds a bucket that is down
        raise Unavailable("private file 9358 is not copied to this node, and bucket "
                          "s3://b cannot read private/9358: connection refused")

    monkeypatch.setattr(cli, "cmd_yank", unavailable)
    assert cli.main(["yank", "foo", "1.0", "--data-dir", str(tmp_path)]) == 1
    err = capsys.readouterr().err
    assert one_line_error(err).startswith("pyproxy: private file 9358 is not copied")
    assert "Traceback" not in err


def test_a_reader_that_stops_reading_ends_the_command_quietly(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch, capsys: pytest.CaptureFixture[str]
) -> None:
    reader, writer = os.pipe()
    os.close(reader)  # `pyproxy ... | head -1`, once head has its line
    pipe = os.fdopen(writer, "w")

    def chatty(args: argparse.Namespace) -> int:
        for line in range(100_000):
            print(line, file=pipe, flush=True)
        return 0

    monkeypatch.setattr(cli, "cmd_yank", chatty)
    monkeypatch.setattr(sys, "stdout", pipe)
    try:
        assert cli.main(["yank", "foo", "1.0", "--data-dir", str(tmp_path)]) == 1
    finally:
        monkeypatch.undo()
        with contextlib.suppress(OSError):
            pipe.close()
    assert capsys.readouterr().err == ""
