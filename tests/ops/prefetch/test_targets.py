"""pyproxy.ops.prefetch.targets: the environments of a prefetch, and which of a lock's files
they need (runs against a real server: tests/e2e/test_prefetch.py)."""

from __future__ import annotations

from collections.abc import Callable, Sequence

import pytest

from pyproxy.ops.prefetch.locks import (
    LockContents,
    Pinned,
    PrefetchError,
    parse_pylock,
    parse_uv_lock,
)
from pyproxy.ops.prefetch.targets import Target, expand_targets, for_targets, supported_tags

A = "a" * 64
LINUX = "manylinux_2_17_x86_64"
MAC = "macosx_11_0_arm64"

# one native project with a wheel per platform and Python, one pure one, and sdists
WHEELS = [
    "native-1.0-cp311-cp311-manylinux_2_17_x86_64.manylinux2014_x86_64.whl",
    "native-1.0-cp312-cp312-manylinux_2_17_x86_64.manylinux2014_x86_64.whl",
    "native-1.0-cp312-cp312-musllinux_1_2_x86_64.whl",
    "native-1.0-cp312-cp312-macosx_11_0_arm64.whl",
    "native-1.0-cp312-cp312-win_amd64.whl",
    "native-1.0-cp312-cp312-manylinux_2_28_aarch64.whl",
]
UV_LOCK = f"""\
version = 1
revision = 3
requires-python = ">=3.11"

[[package]]
name = "native"
version = "1.0"
source = {{ registry = "http://127.0.0.1:9/simple" }}
sdist = {{ url = "http://127.0.0.1:9/files/native/native-1.0.tar.gz", hash = "sha256:{A}" }}
wheels = [
""" + "".join(
    f'    {{ url = "http://127.0.0.1:9/files/native/{w}", hash = "sha256:{A}" }},\n' for w in WHEELS
) + f"""]

[[package]]
name = "stable-abi"
version = "2.0"
source = {{ registry = "http://127.0.0.1:9/simple" }}
wheels = [
    {{ url = "http://127.0.0.1:9/files/stable-abi/stable_abi-2.0-cp38-abi3-manylinux_2_5_x86_64.manylinux1_x86_64.whl", hash = "sha256:{A}" }},
    {{ url = "http://127.0.0.1:9/files/stable-abi/stable_abi-2.0-cp38-abi3-win_amd64.whl", hash = "sha256:{A}" }},
]

[[package]]
name = "pure"
version = "3.0"
source = {{ registry = "http://127.0.0.1:9/simple" }}
sdist = {{ url = "http://127.0.0.1:9/files/pure/pure-3.0.tar.gz", hash = "sha256:{A}" }}
wheels = [
    {{ url = "http://127.0.0.1:9/files/pure/pure-3.0-py3-none-any.whl", hash = "sha256:{A}" }},
]
"""  # noqa: E501 - a TOML inline table (a file's URL and hash) must stay on one line
PYLOCK = 'lock-version = "1.0"\ncreated-by = "tests"\n' + "".join(
    f'\n[[packages]]\nname = "{project}"\nversion = "1.0"\n'
    + "".join(f'\n[[packages.wheels]]\nname = "{w}"\nhashes = {{ sha256 = "{A}" }}\n'
              for w in wheels)
    + (f'\n[packages.sdist]\nname = "{project}-1.0.tar.gz"\nhashes = {{ sha256 = "{A}" }}\n'
       if sdist else "")
    for project, wheels, sdist in [
        ("native", WHEELS, True),
        ("pure", ["pure-3.0-py3-none-any.whl"], False),
    ]
)


def filenames(contents: LockContents) -> list[str]:
    return [pinned.filename for pinned in contents.files]


def picked(text: str, *, python: list[str], platforms: list[str],
           only_binary: Sequence[str] = (),
           parse: Callable[[str], LockContents] = parse_uv_lock) -> tuple[list[str], int]:
    contents = for_targets(parse(text), expand_targets(python, platforms, None, []),
                           list(only_binary))
    return filenames(contents), contents.left_out


def test_a_universal_uv_lock_gives_only_the_targets_wheels() -> None:
    files, left_out = picked(UV_LOCK, python=["3.12"], platforms=[LINUX],
                             only_binary=[":all:"])
    assert files == [
        "native-1.0-cp312-cp312-manylinux_2_17_x86_64.manylinux2014_x86_64.whl",
        "stable_abi-2.0-cp38-abi3-manylinux_2_5_x86_64.manylinux1_x86_64.whl",
        "pure-3.0-py3-none-any.whl",
    ]
    assert left_out == 11 - 3  # 7 native, 2 stable-abi, 2 pure files; 3 kept


def test_every_python_version_with_every_platform() -> None:
    files, _ = picked(UV_LOCK, python=["3.11", "3.12"], platforms=[LINUX, MAC],
                      only_binary=[":all:"])
    assert [f for f in files if f.startswith("native")] == [
        "native-1.0-cp311-cp311-manylinux_2_17_x86_64.manylinux2014_x86_64.whl",
        "native-1.0-cp312-cp312-manylinux_2_17_x86_64.manylinux2014_x86_64.whl",
        "native-1.0-cp312-cp312-macosx_11_0_arm64.whl",
    ]


def test_a_newer_system_takes_the_wheels_of_older_ones() -> None:
    """manylinux_2_28 runs manylinux2014 and manylinux1 wheels; musllinux and aarch64 are others."""
    files, _ = picked(UV_LOCK, python=["3.12"], platforms=["manylinux_2_28_x86_64"])
    assert "native-1.0-cp312-cp312-manylinux_2_17_x86_64.manylinux2014_x86_64.whl" in files
    assert "stable_abi-2.0-cp38-abi3-manylinux_2_5_x86_64.manylinux1_x86_64.whl" in files
    assert not any("musllinux" in f or "aarch64" in f or "win" in f for f in files)
    files, _ = picked(UV_LOCK, python=["3.12"], platforms=["manylinux2014_x86_64"])
    assert "native-1.0-cp312-cp312-manylinux_2_17_x86_64.manylinux2014_x86_64.whl" in files
    files, _ = picked(UV_LOCK, python=["3.12"], platforms=["macosx_14_0_arm64"])
    assert "native-1.0-cp312-cp312-macosx_11_0_arm64.whl" in files


def test_sdists_stay_unless_only_binary_says_otherwise() -> None:
    files, _ = picked(UV_LOCK, python=["3.12"], platforms=[LINUX])
    assert {"native-1.0.tar.gz", "pure-3.0.tar.gz"} <= set(files)
    files, _ = picked(UV_LOCK, python=["3.12"], platforms=[LINUX], only_binary=["native"])
    assert "native-1.0.tar.gz" not in files and "pure-3.0.tar.gz" in files
    files, _ = picked(UV_LOCK, python=["3.12"], platforms=[LINUX],
                      only_binary=[":all:", ":none:,pure"])
    assert "native-1.0.tar.gz" in files and "pure-3.0.tar.gz" not in files


def test_without_a_target_every_file_is_kept_but_only_binary_still_applies() -> None:
    files, left_out = picked(UV_LOCK, python=[], platforms=[])
    assert len(files) == 11 and left_out == 0
    files, left_out = picked(UV_LOCK, python=[], platforms=[], only_binary=[":all:"])
    assert len(files) == 9 and left_out == 2 and not any(f.endswith(".tar.gz") for f in files)


def test_a_pylock_is_filtered_the_same_way() -> None:
    files, left_out = picked(PYLOCK, python=["3.12"], platforms=["win_amd64"],
                             only_binary=[":all:"], parse=parse_pylock)
    assert files == ["native-1.0-cp312-cp312-win_amd64.whl", "pure-3.0-py3-none-any.whl"]
    assert left_out == 6


def test_a_wheel_name_that_does_not_parse_is_kept() -> None:
    odd = LockContents([Pinned("odd", "odd-1.0.whl", {"sha256": A})])
    assert filenames(for_targets(odd, [Target("3.12", LINUX)], [])) == ["odd-1.0.whl"]


@pytest.mark.parametrize("version", ["3.12", "312", "3.12.1"])
def test_python_versions_in_pips_spellings(version: str) -> None:
    assert any(str(tag) == "cp312-cp312-manylinux_2_17_x86_64"
               for tag in supported_tags(Target(version, LINUX)))


def test_a_bad_python_version_is_a_clear_error() -> None:
    with pytest.raises(PrefetchError, match="--python-version 'three' is not a version"):
        for_targets(parse_uv_lock(UV_LOCK), [Target("three", LINUX)], [])


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


