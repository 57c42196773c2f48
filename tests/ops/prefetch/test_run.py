"""The pure parts of `pyproxy prefetch`: lock files, pip reports, targets, the summary, and the
command-line errors that come before any network (end-to-end runs: tests/e2e/test_prefetch.py)."""

from __future__ import annotations

import sys
from pathlib import Path

import pytest

from pyproxy.cli import main as cli
from pyproxy.ops.prefetch.run import (
    Pinned,
    PrefetchError,
    Summary,
    Target,
    expand_targets,
    files_url,
    normalize_base,
    parse_pip_report,
    parse_pylock,
    parse_uv_lock,
    pip_command,
    pip_environment,
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
"""

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
    with pytest.raises(PrefetchError, match="neither a uv.lock nor a pylock.toml"):
        read_lock(other)
    binary = tmp_path / "uv.lock"
    binary.write_bytes(b"\xff\xfe\x00")
    with pytest.raises(PrefetchError, match="not UTF-8"):
        read_lock(binary)


# ------------------------------------------------------------------------------ pip


def test_pip_report_gives_files_hashes_and_skips_local_ones() -> None:
    report = {
        "version": "1",
        "install": [
            {"metadata": {"name": "Foo_Bar", "version": "1.0"},
             "download_info": {"url": "http://127.0.0.1:8080/files/foo-bar/foo_bar-1.0-py3-none-any.whl",
                               "archive_info": {"hash": f"sha256={A}", "hashes": {"sha256": A}}}},
            {"metadata": {"name": "old", "version": "1"},
             "download_info": {"url": "http://127.0.0.1:8080/files/old/old-1.tar.gz#sha256=x",
                               "archive_info": {"hash": f"sha256={B}"}}},
            {"metadata": {"name": "mine", "version": "0.1"},
             "download_info": {"url": "file:///src/mine", "dir_info": {}}},
        ],
    }
    contents = parse_pip_report(report)
    assert contents.files == [
        Pinned("foo-bar", "foo_bar-1.0-py3-none-any.whl", {"sha256": A}),
        Pinned("old", "old-1.tar.gz", {"sha256": B}),
    ]
    assert len(contents.skipped) == 1 and contents.skipped[0].startswith("mine:")


def test_targets_are_every_version_with_every_platform() -> None:
    targets = expand_targets(["3.11", "3.12"], ["manylinux_2_17_x86_64", "macosx_11_0_arm64"],
                             "cp", ["cp311", "cp312"])
    assert [(t.python_version, t.platform) for t in targets] == [
        ("3.11", "manylinux_2_17_x86_64"), ("3.11", "macosx_11_0_arm64"),
        ("3.12", "manylinux_2_17_x86_64"), ("3.12", "macosx_11_0_arm64"),
    ]
    assert all(t.implementation == "cp" and t.abis == ("cp311", "cp312") for t in targets)
    assert expand_targets([], [], None, []) == [Target()]
    assert not Target().foreign and Target().label == "this machine"
    assert expand_targets(["3.12"], [], None, [])[0].label == "python 3.12"


def test_pip_command_is_a_dry_run_through_pyproxy(tmp_path: Path) -> None:
    target = Target("3.12", "macosx_11_0_arm64", "cp", ("cp312",))
    cmd = pip_command("http://127.0.0.1:8080/simple/", tmp_path / "r.json", ["a.txt", "b.txt"],
                      ["c.txt"], target, [":all:"])
    assert cmd[:4] == [sys.executable, "-m", "pip", "install"]
    joined = " ".join(cmd)
    for part in ("--dry-run", "--ignore-installed", f"--report {tmp_path / 'r.json'}",
                 "--no-cache-dir", "--index-url http://127.0.0.1:8080/simple/", "-r a.txt",
                 "-r b.txt", "-c c.txt", "--only-binary :all:", "--python-version 3.12",
                 "--platform macosx_11_0_arm64", "--implementation cp", "--abi cp312"):
        assert part in joined, part
    assert "--target" not in cmd


def test_pip_environment_drops_this_machines_pip_configuration() -> None:
    env = pip_environment({"PATH": "/bin", "PIP_FIND_LINKS": "/wheels", "pip_extra_index_url": "x",
                           "PIP_INDEX_URL": "http://elsewhere/", "PIP_CONFIG_FILE": "/etc/pip.conf"})
    assert env["PATH"] == "/bin"
    assert env["PIP_CONFIG_FILE"] == "/dev/null"
    assert not {"PIP_FIND_LINKS", "pip_extra_index_url", "PIP_INDEX_URL"} & set(env)


# ------------------------------------------------------------------------------ small pieces


def test_files_url_is_pyproxys_download_route() -> None:
    assert (files_url("http://127.0.0.1:8080", "Foo.Bar", "foo_bar-2.1+local-py3-none-any.whl")
            == "http://127.0.0.1:8080/files/foo-bar/foo_bar-2.1%2Blocal-py3-none-any.whl")


@pytest.mark.parametrize(
    ("given", "base"),
    [
        ("http://127.0.0.1:8080", "http://127.0.0.1:8080"),
        ("http://127.0.0.1:8080/", "http://127.0.0.1:8080"),
        ("http://127.0.0.1:8080/simple/", "http://127.0.0.1:8080"),
        ("https://mirror.example/pypi/simple", "https://mirror.example/pypi"),
    ],
)
def test_normalize_base(given: str, base: str) -> None:
    assert normalize_base(given) == base


@pytest.mark.parametrize("url", ["127.0.0.1:8080", "ftp://127.0.0.1/", "http://"])
def test_normalize_base_refuses_what_is_not_an_http_url(url: str) -> None:
    with pytest.raises(PrefetchError, match="not an http"):
        normalize_base(url)


def test_summary_lines_give_counts_and_every_failure_reason() -> None:
    summary = Summary(fetched=2, fetched_bytes=2500, cached=1,
                      failures=[("x/x-1.whl", "HTTP 503: Service Unavailable: upstream down"),
                                ("resolution for python 3.12", "pip exited with 1:\nERROR: a\nERROR: b")],
                      skipped=["mine: editable package, no index file"])
    assert not summary.ok
    lines = summary.lines()
    assert lines[0] == "2 file(s) fetched (2.5 kB), 1 already cached, 2 failed"
    text = "\n".join(lines)
    assert "x/x-1.whl: HTTP 503: Service Unavailable: upstream down" in text
    assert "resolution for python 3.12: pip exited with 1:\n    ERROR: a\n    ERROR: b" in text
    assert "mine: editable package" in text
    assert Summary().ok


# ------------------------------------------------------------------------------ command line


def run_cli(capsys: pytest.CaptureFixture[str], *args: str) -> tuple[int, str]:
    status = cli.main(["prefetch", *args])
    captured = capsys.readouterr()
    return status, captured.out + captured.err


def test_cli_needs_something_to_prefetch(capsys: pytest.CaptureFixture[str]) -> None:
    status, out = run_cli(capsys, "--url", "http://127.0.0.1:9")
    assert status == 1 and "nothing to prefetch" in out
    status, out = run_cli(capsys, "--url", "http://127.0.0.1:9", "-c", "c.txt", "--lock", "uv.lock")
    assert status == 1 and "give -r REQUIREMENTS too" in out


def test_cli_refuses_a_bad_url(capsys: pytest.CaptureFixture[str]) -> None:
    status, out = run_cli(capsys, "--url", "127.0.0.1:8080", "--lock", "uv.lock")
    assert status == 1 and out.strip() == "pyproxy: --url '127.0.0.1:8080' is not an http:// or https:// URL"


def test_cli_foreign_platform_needs_only_binary(capsys: pytest.CaptureFixture[str],
                                                 tmp_path: Path) -> None:
    requirements = tmp_path / "req.txt"
    requirements.write_text("foo\n")
    status, out = run_cli(capsys, "--url", "http://127.0.0.1:9", "-r", str(requirements),
                          "--platform", "macosx_11_0_arm64")
    assert status == 1
    assert out.strip() == ("pyproxy: pip resolves for another --platform/--python-version/"
                           "--implementation/--abi only from wheels: add --only-binary :all:")


def test_cli_missing_files_are_one_line_errors(capsys: pytest.CaptureFixture[str],
                                               tmp_path: Path) -> None:
    status, out = run_cli(capsys, "--url", "http://127.0.0.1:9", "-r", str(tmp_path / "no.txt"))
    assert status == 1 and out.strip() == f"pyproxy: {tmp_path / 'no.txt'}: no such file"
    status, out = run_cli(capsys, "--url", "http://127.0.0.1:9", "--lock", str(tmp_path / "uv.lock"))
    assert status == 1 and out.strip() == f"pyproxy: {tmp_path / 'uv.lock'}: no such lock file"


def test_cli_default_url_comes_from_the_configuration(capsys: pytest.CaptureFixture[str],
                                                      tmp_path: Path,
                                                      monkeypatch: pytest.MonkeyPatch) -> None:
    from pyproxy.ops.prefetch.run import default_url

    monkeypatch.delenv("PYPROXY_CONFIG", raising=False)
    monkeypatch.delenv("PYPROXY_SERVER_PORT", raising=False)
    monkeypatch.delenv("PYPROXY_SERVER_HOST", raising=False)
    monkeypatch.delenv("PYPROXY_SERVER_BASE_URL", raising=False)
    monkeypatch.chdir(tmp_path)
    assert default_url(None) == "http://127.0.0.1:8080"
    config = tmp_path / "pyproxy.toml"
    config.write_text('[server]\nhost = "0.0.0.0"\nport = 3141\n')
    assert default_url(None) == "http://127.0.0.1:3141"
