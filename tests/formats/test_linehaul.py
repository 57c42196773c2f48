"""pyproxy.formats.linehaul: the client's environment from pip's and uv's User-Agent."""

from __future__ import annotations

import json

import pytest
from packaging.tags import Tag

from pyproxy.formats.linehaul import client_environment

PIP_LINUX = "pip/24.0 " + json.dumps({
    "ci": None, "cpu": "x86_64",
    "distro": {"id": "bookworm", "libc": {"lib": "glibc", "version": "2.36"}, "name": "Debian GNU/Linux",
               "version": "12"},
    "implementation": {"name": "CPython", "version": "3.11.7"},
    "installer": {"name": "pip", "version": "24.0"}, "openssl_version": "OpenSSL 3.0.11",
    "python": "3.11.7", "setuptools_version": "69.0.0",
    "system": {"name": "Linux", "release": "6.1.0-18-amd64"},
})
UV_MAC = "uv/0.5.1 " + json.dumps({
    "installer": {"name": "uv", "version": "0.5.1"}, "python": "3.12.6",
    "implementation": {"name": "CPython", "version": "3.12.6"},
    "distro": {"name": "macOS", "version": "14.1", "id": None, "libc": None},
    "system": {"name": "Darwin", "release": "23.1.0"}, "cpu": "arm64",
    "openssl_version": None, "setuptools_version": None, "rustc_version": None, "ci": None,
})


def test_pip_on_linux_states_the_markers_and_manylinux() -> None:
    env = client_environment(PIP_LINUX)
    assert env is not None
    assert env.markers == {
        "python_full_version": "3.11.7", "python_version": "3.11", "implementation_name": "cpython",
        "platform_python_implementation": "CPython", "implementation_version": "3.11.7",
        "platform_system": "Linux", "sys_platform": "linux", "os_name": "posix",
        "platform_release": "6.1.0-18-amd64", "platform_machine": "x86_64",
    }
    assert env.python == (3, 11)
    assert env.platforms is not None and env.knows_platform
    assert env.platforms[0] == "manylinux_2_36_x86_64"
    assert {"manylinux2014_x86_64", "manylinux1_x86_64", "linux_x86_64"} <= set(env.platforms)
    supported = env.supported_tags()
    assert supported.index(Tag("cp311", "cp311", "manylinux_2_17_x86_64")) < supported.index(
        Tag("py3", "none", "any"))
    assert Tag("cp311", "abi3", "manylinux2014_x86_64") in supported
    assert Tag("cp311", "cp311", "manylinux_2_38_x86_64") not in supported  # newer glibc than the client's


def test_uv_on_macos_takes_the_macos_version_from_the_darwin_release() -> None:
    env = client_environment(UV_MAC)
    assert env is not None
    assert env.markers["sys_platform"] == "darwin" and env.markers["platform_machine"] == "arm64"
    assert env.platforms is not None and env.platforms[0] == "macosx_14_0_arm64"
    assert Tag("cp312", "cp312", "macosx_11_0_arm64") in env.supported_tags()


def test_windows_platform() -> None:
    agent = "pip/24.0 " + json.dumps({"python": "3.12.1", "implementation": {"name": "CPython"},
                                       "system": {"name": "Windows", "release": "10"}, "cpu": "AMD64"})
    env = client_environment(agent)
    assert env is not None
    assert env.platforms == ("win_amd64",)
    assert env.markers["os_name"] == "nt" and env.markers["sys_platform"] == "win32"


@pytest.mark.parametrize("distro", [None, {"libc": {"lib": "musl", "version": "1.2"}}, {"libc": None},
                                    {"libc": {"lib": "glibc", "version": "two"}}])
def test_linux_without_glibc_version_knows_only_pure_wheels(distro: object) -> None:
    agent = "pip/24.0 " + json.dumps({"python": "3.11.2", "implementation": {"name": "CPython"},
                                       "system": {"name": "Linux"}, "cpu": "x86_64", "distro": distro})
    env = client_environment(agent)
    assert env is not None and env.platforms is None and not env.knows_platform
    assert {tag.platform for tag in env.supported_tags()} == {"any"}


def test_pypy_knows_only_pure_wheels() -> None:
    agent = PIP_LINUX.replace('"name": "CPython"', '"name": "PyPy"')
    env = client_environment(agent)
    assert env is not None and env.markers["implementation_name"] == "pypy"
    assert not env.knows_platform
    assert {tag.abi for tag in env.supported_tags()} == {"none"}


@pytest.mark.parametrize("agent", [
    None, "", "Mozilla/5.0 (X11; Linux x86_64)", "pip/24.0", "pip/24.0 {not json", "pip/24.0 [1, 2]",
    '{"python": "3.11.7"}',  # no installer name before the JSON
    'pip/24.0 {"python": 3.11}', 'pip/24.0 {"python": "three"}', 'pip/24.0 {"cpu": "x86_64"}',
    'pip/24.0 {"python": "3.11\\n7"}', "pip/24.0 " + json.dumps({"python": "3.11.7", "pad": "x" * 5000}),
])
def test_anything_else_has_no_environment(agent: str | None) -> None:
    assert client_environment(agent) is None


def test_odd_values_are_left_out_not_trusted() -> None:
    agent = "pip/24.0 " + json.dumps({"python": "3.11.7", "implementation": "CPython", "system": ["Linux"],
                                       "cpu": "x" * 100})
    env = client_environment(agent)
    assert env is not None
    assert env.markers == {"python_full_version": "3.11.7", "python_version": "3.11"}
    assert env.platforms is None
