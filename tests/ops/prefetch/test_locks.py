"""pyproxy.ops.prefetch.locks: the files a uv.lock or a pylock.toml pins."""

from __future__ import annotations

from pathlib import Path

import pytest

from pyproxy.ops.prefetch.locks import (
    Pinned,
    PrefetchError,
    parse_pylock,
    parse_uv_lock,
    read_lock,
)

A = "a" * 64
B = "b" * 64
C = "c" * 64

UV_LOCK = f"""\
version = 1
revision = 3
requires-python = ">=3.11"

[[package]]
name = "Foo.Bar"
version = "1.0"
source = {{ registry = "http://127.0.0.1:9/simple" }}
sdist = {{ url = "http://127.0.0.1:9/files/foo-bar/foo_bar-1.0.tar.gz", hash = "sha256:{A}", size = 10 }}
wheels = [
    {{ url = "http://127.0.0.1:9/files/foo-bar/foo_bar-1.0%2Blocal-py3-none-any.whl", hash = "sha256:{B.upper()}", size = 20 }},
]

[[package]]
name = "myapp"
version = "0.1.0"
source = {{ editable = "." }}

[[package]]
name = "fromgit"
version = "0.2"
source = {{ git = "https://127.0.0.1:9/repo.git?rev=main#abc" }}

[[package]]
name = "direct"
version = "0.3"
source = {{ url = "http://127.0.0.1:9/direct-0.3.tar.gz" }}
sdist = {{ url = "http://127.0.0.1:9/direct-0.3.tar.gz", hash = "sha256:{C}" }}
"""  # noqa: E501 - a TOML inline table (a file's URL and hash) must stay on one line

PYLOCK = f"""\
lock-version = "1.0"
created-by = "test"

[[packages]]
name = "foo-bar"
version = "1.0"
index = "http://127.0.0.1:9/simple"

[packages.sdist]
name = "foo_bar-1.0.tar.gz"
url = "http://127.0.0.1:9/files/foo-bar/foo_bar-1.0.tar.gz"
hashes = {{ sha256 = "{A}" }}

[[packages.wheels]]
url = "http://127.0.0.1:9/files/foo-bar/foo_bar-1.0-py3-none-any.whl"
hashes = {{ sha256 = "{B}", blake2b = "{C}" }}

[[packages]]
name = "local"
directory = {{ path = "./local" }}

[[packages]]
name = "arch"
archive = {{ url = "http://127.0.0.1:9/arch.zip", hashes = {{ sha256 = "{C}" }} }}
"""


# ------------------------------------------------------------------------------ uv.lock


def test_uv_lock_registry_files_are_pinned_with_their_hashes() -> None:
    contents = parse_uv_lock(UV_LOCK)
    assert contents.files == [
        Pinned("foo-bar", "foo_bar-1.0.tar.gz", {"sha256": A}),
        Pinned("foo-bar", "foo_bar-1.0+local-py3-none-any.whl", {"sha256": B}),  # unquoted, lower
    ]


def test_uv_lock_packages_without_an_index_file_are_skipped_with_a_reason() -> None:
    skipped = parse_uv_lock(UV_LOCK).skipped
    assert len(skipped) == 3
    assert any(s.startswith("myapp: editable") for s in skipped), skipped
    assert any(s.startswith("fromgit: git") for s in skipped), skipped
    assert any(s.startswith("direct: direct URL") for s in skipped), skipped


@pytest.mark.parametrize(
    ("text", "message"),
    [
        ("package = 3\n", "not an array"),
        ("[[package]]\nversion = '1'\n", "no name"),
        ("[[package]\n", "not valid TOML"),
        (('[[package]]\nname = "x"\nsource = { registry = "r" }\n'
          'sdist = { url = "http://h/x-1.tar.gz", hash = "nocolon" }\n'), "not a hash"),
    ],
)
def test_uv_lock_errors_name_the_problem(text: str, message: str) -> None:
    with pytest.raises(PrefetchError, match=message):
        parse_uv_lock(text, "uv.lock")


# ------------------------------------------------------------------------------ pylock.toml


def test_pylock_files_take_the_name_or_the_url_basename() -> None:
    contents = parse_pylock(PYLOCK)
    assert contents.files == [
        Pinned("foo-bar", "foo_bar-1.0.tar.gz", {"sha256": A}),
        Pinned("foo-bar", "foo_bar-1.0-py3-none-any.whl", {"sha256": B, "blake2b": C}),
    ]
    assert [s.split(":")[0] for s in contents.skipped] == ["local", "arch"]


@pytest.mark.parametrize(
    ("text", "message"),
    [
        ('created-by = "x"\n', "lock-version"),
        ('lock-version = "2.0"\ncreated-by = "x"\n', "lock-version"),
        (('lock-version = "1.0"\n[[packages]]\nname = "x"\n[[packages.wheels]]\n'
          'url = "http://h/x-1-py3-none-any.whl"\n'), "no hashes"),
        (('lock-version = "1.0"\n[[packages]]\nname = "x"\n[[packages.wheels]]\n'
          'hashes = { sha256 = "aa" }\n'), "neither name, url nor path"),
    ],
)
def test_pylock_errors_name_the_problem(text: str, message: str) -> None:
    with pytest.raises(PrefetchError, match=message):
        parse_pylock(text)


@pytest.mark.parametrize(
    ("name", "text", "kind"),
    [
        ("uv.lock", UV_LOCK, "uv"),
        ("pylock.toml", PYLOCK, "pylock"),
        ("pylock.dev.toml", PYLOCK, "pylock"),
        ("anything.toml", PYLOCK, "pylock"),
        ("anything.toml", UV_LOCK, "uv"),
    ],
)
def test_read_lock_tells_the_formats_apart(tmp_path: Path, name: str, text: str, kind: str) -> None:
    path = tmp_path / name
    path.write_text(text)
    expected = parse_uv_lock(text) if kind == "uv" else parse_pylock(text)
    assert read_lock(path).files == expected.files


def test_read_lock_errors(tmp_path: Path) -> None:
    with pytest.raises(PrefetchError, match="no such lock file"):
        read_lock(tmp_path / "uv.lock")
    other = tmp_path / "other.toml"
    other.write_text('[tool]\nx = 1\n')
    with pytest.raises(PrefetchError, match=r"neither a uv\.lock nor a pylock\.toml"):
        read_lock(other)
    binary = tmp_path / "uv.lock"
    binary.write_bytes(b"\xff\xfe\x00")
    with pytest.raises(PrefetchError, match="not UTF-8"):
        read_lock(binary)
