"""Users and tokens in an export (`pyproxy export --include-users`, pyproxy/ops/transfer_users.py):
the same password and the same token work against the imported data directory, nothing but
hashes is written, a user already there keeps its password, and bad records are refused."""

from __future__ import annotations

from pathlib import Path

import orjson
import pytest

from pyproxy.cli import main as cli
from pyproxy.datadir import DataDir
from pyproxy.stores.auth import UserStore


@pytest.fixture(autouse=True)
def _isolated(isolated_cwd: Path) -> None:
    """No ./pyproxy.toml and no PYPROXY_* variables reach the commands."""


def _run(capsys: pytest.CaptureFixture[str], *args: str) -> tuple[int, str, str]:
    code = cli.main(list(args))
    out, err = capsys.readouterr()
    assert "Traceback" not in err
    return code, out, err


def _source(tmp_path: Path) -> tuple[Path, str]:
    data = tmp_path / "source"
    users = UserStore(DataDir(data).users)
    try:
        users.add_user("alice", "alice's password", admin=True)
        users.add_user("bob", "bob's password")
        token = users.create_token("bob")
    finally:
        users.close()
    (data / "private").mkdir(parents=True)  # an index with users and no packages yet
    return data, token


def test_users_and_tokens_move_with_the_export(
    tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    source, token = _source(tmp_path)
    export = tmp_path / "export"
    code, out, err = _run(capsys, "export", str(export), "--include-users", "--data-dir", str(source))
    assert code == 0, err
    assert "users: 2 exported" in out
    written = (export / "private" / "users.jsonl").read_text()
    assert token not in written and "bob's password" not in written  # hashes only
    assert orjson.loads((export / "pyproxy-export.json").read_bytes())["users"] == 2

    target = tmp_path / "target"
    code, out, err = _run(capsys, "import", str(export), "--data-dir", str(target))
    assert code == 0, err
    assert "users: 2 imported" in out
    users = UserStore(DataDir(target).users)
    try:
        assert users.authenticate("alice", "alice's password") is not None
        assert users.authenticate("alice", "alice's password").admin  # type: ignore[union-attr]
        identity = users.token_identity(token)
        assert identity is not None and identity.user == "bob" and not identity.admin
        assert [prefix for prefix, _ in users.tokens("bob")] == [token[:14]]
    finally:
        users.close()

    # again: nothing new, and a user already there keeps its own password
    users = UserStore(DataDir(target).users)
    try:
        users.remove_user("alice")
        users.add_user("alice", "a new password")
    finally:
        users.close()
    code, out, _ = _run(capsys, "import", str(export), "--data-dir", str(target))
    assert code == 0 and "users: 0 imported, 2 already there" in out
    users = UserStore(DataDir(target).users)
    try:
        assert users.authenticate("alice", "a new password") is not None
        assert users.authenticate("alice", "alice's password") is None
    finally:
        users.close()


def test_without_the_flag_no_user_is_written(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    source, _ = _source(tmp_path)
    code, out, _ = _run(capsys, "export", str(tmp_path / "export"), "--data-dir", str(source))
    assert code == 0 and "users" not in out
    assert not (tmp_path / "export" / "private" / "users.jsonl").exists()


@pytest.mark.parametrize(
    ("change", "why"),
    [
        ({"name": "__token__"}, "is not a user name"),
        ({"name": "bad name"}, "is not a user name"),
        ({"password_hash": "plain text"}, "not a password hash"),
        ({"tokens": [{"token_hash": "zz", "prefix": "pyproxy-abc", "created": "x"}]}, "sha256"),
        ({"tokens": [{"prefix": "pyproxy-abc"}]}, "token_hash is not text"),
        ({"name": None}, "name is not text"),
        ({"admin": "yes"}, "admin is not true or false"),
    ],
)
def test_bad_user_records_are_refused_and_named(
    tmp_path: Path, capsys: pytest.CaptureFixture[str], change: dict[str, object], why: str
) -> None:
    source, _ = _source(tmp_path)
    export = tmp_path / "export"
    assert _run(capsys, "export", str(export), "--include-users", "--data-dir", str(source))[0] == 0
    path = export / "private" / "users.jsonl"
    records = [orjson.loads(line) for line in path.read_bytes().splitlines()]
    records[0].update(change)
    path.write_bytes(b"".join(orjson.dumps(r) + b"\n" for r in records))
    code, out, err = _run(capsys, "import", str(export), "--data-dir", str(tmp_path / "target"))
    assert code == 1
    assert "users: 1 imported" in out and why in err

