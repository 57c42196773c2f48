"""pyproxy.ops.prefetch.resolve: pip's report, the targets, pip's command line and environment
(runs of pip itself: tests/e2e/test_prefetch.py)."""

from __future__ import annotations

import sys
from pathlib import Path

from pyproxy.ops.prefetch.locks import Pinned
from pyproxy.ops.prefetch.resolve import parse_pip_report, pip_command, pip_environment
from pyproxy.ops.prefetch.targets import Target

A = "a" * 64
B = "b" * 64


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
