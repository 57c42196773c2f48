"""The client's environment, as pip and uv describe it in their User-Agent (the "linehaul" JSON
after the installer's name: `pip/24.0 {"python":"3.11.7","implementation":{…},…}`), for
evaluating PEP 508 markers and telling which wheels the client can install.

Only what the JSON states is used: a key it does not give stays unknown (a marker that depends
on it is undetermined, see formats.dependencies), and an agent without the JSON, or with one
that does not parse, has no environment at all. Pure: no I/O.
"""

from __future__ import annotations

import json
import re
from collections.abc import Mapping
from dataclasses import dataclass
from functools import lru_cache
from typing import Any

from packaging import tags

__all__ = ["ClientEnvironment", "client_environment"]

_MAX_AGENT = 4096  # a linehaul agent is a few hundred bytes
_PYTHON = re.compile(r"(\d+)\.(\d+)(?:\.\d+)?(?:[a-z]+\d*)?\+?")
_SYS_PLATFORM = {"Linux": "linux", "Darwin": "darwin", "Windows": "win32"}
_OS_NAME = {"Linux": "posix", "Darwin": "posix", "Windows": "nt"}
_WINDOWS_PLATFORM = {"AMD64": "win_amd64", "x86": "win32", "ARM64": "win_arm64"}
_LEGACY_MANYLINUX = {17: "manylinux2014", 12: "manylinux2010", 5: "manylinux1"}
_LINUX_ARCHES = frozenset({"x86_64", "i686", "aarch64", "ppc64le", "s390x", "armv7l", "riscv64"})


@dataclass(frozen=True, slots=True)
class ClientEnvironment:
    """PEP 508 marker variables the client stated (others are unknown), and its wheel tags."""

    markers: Mapping[str, str]
    python: tuple[int, int]
    # platform tags the client accepts, best first; None when they cannot be told from the agent
    platforms: tuple[str, ...] | None

    @property
    def python_full_version(self) -> str:
        return self.markers["python_full_version"]

    @property
    def knows_platform(self) -> bool:
        """Whether supported_tags lists every wheel tag the client takes, not only pure ones."""
        return self.platforms is not None and self.markers.get("implementation_name") == "cpython"

    def supported_tags(self) -> tuple[tags.Tag, ...]:
        """The wheel tags the client accepts, best first: for CPython on a known platform the
        full list; otherwise only the pure-Python ones (`py3-none-any` and kin)."""
        return _supported_tags(
            self.markers.get("implementation_name", ""), self.python, self.platforms
        )


@lru_cache(maxsize=32)
def _supported_tags(
    implementation: str, python: tuple[int, int], platforms: tuple[str, ...] | None
) -> tuple[tags.Tag, ...]:
    interpreter = f"cp{python[0]}{python[1]}"
    if implementation == "cpython" and platforms:
        return (
            *tags.cpython_tags(python, platforms=platforms),
            *tags.compatible_tags(python, interpreter, platforms),
        )
    return tuple(tags.compatible_tags(python, interpreter, platforms=[]))


@lru_cache(maxsize=64)  # clients repeat their agent on every request
def client_environment(user_agent: str | None) -> ClientEnvironment | None:
    """The environment a pip or uv User-Agent states; None for any other agent, and for a
    JSON without at least the Python version."""
    if not user_agent or len(user_agent) > _MAX_AGENT:
        return None
    start = user_agent.find("{")
    if start <= 0:
        return None
    try:
        data = json.loads(user_agent[start:])
    except ValueError:
        return None
    if not isinstance(data, dict):
        return None
    python = _text(data, "python")
    matched = _PYTHON.fullmatch(python) if python else None
    if python is None or matched is None:
        return None
    major, minor = int(matched.group(1)), int(matched.group(2))
    markers = {"python_full_version": python, "python_version": f"{major}.{minor}"}
    implementation = data.get("implementation")
    if isinstance(implementation, dict) and (name := _text(implementation, "name")):
        markers["implementation_name"] = name.lower()
        markers["platform_python_implementation"] = name
        if version := _text(implementation, "version"):
            markers["implementation_version"] = version
    system = data.get("system")
    system_name = _text(system, "name") if isinstance(system, dict) else None
    release = _text(system, "release") if isinstance(system, dict) else None
    if system_name:
        markers["platform_system"] = system_name
        if system_name in _SYS_PLATFORM:
            markers["sys_platform"] = _SYS_PLATFORM[system_name]
            markers["os_name"] = _OS_NAME[system_name]
    if release:
        markers["platform_release"] = release
    cpu = _text(data, "cpu")
    if cpu:
        markers["platform_machine"] = cpu
    platforms = _platforms(system_name, release, cpu, data.get("distro"))
    return ClientEnvironment(markers, (major, minor), platforms)


def _text(data: Mapping[str, Any], key: str) -> str | None:
    value = data.get(key)
    if not isinstance(value, str) or not value.isprintable() or len(value) > 64:
        return None
    return value.strip() or None


def _platforms(
    system: str | None, release: str | None, cpu: str | None, distro: Any
) -> tuple[str, ...] | None:
    if system == "Linux" and cpu in _LINUX_ARCHES:
        libc = distro.get("libc") if isinstance(distro, dict) else None
        if not isinstance(libc, dict) or libc.get("lib") != "glibc":
            return None  # musl, or not said: which manylinux it takes is not known
        version = _text(libc, "version") or ""
        glibc = re.fullmatch(r"2\.(\d+)", version)
        if glibc is None:
            return None
        return _manylinux(int(glibc.group(1)), cpu)
    if system == "Darwin" and cpu in ("arm64", "x86_64") and release:
        darwin = re.match(r"(\d+)\.", release)
        if darwin is None:
            return None
        major = int(darwin.group(1))
        macos = (major - 9, 0) if major >= 20 else (10, major - 4)
        return tuple(tags.mac_platforms(macos, cpu))
    if system == "Windows" and cpu in _WINDOWS_PLATFORM:
        return (_WINDOWS_PLATFORM[cpu],)
    return None


def _manylinux(glibc_minor: int, arch: str) -> tuple[str, ...]:
    found = []
    for minor in range(min(glibc_minor, 99), 4, -1):
        found.append(f"manylinux_2_{minor}_{arch}")
        if minor in _LEGACY_MANYLINUX and (minor == 17 or arch in ("x86_64", "i686")):
            found.append(f"{_LEGACY_MANYLINUX[minor]}_{arch}")
    found.append(f"linux_{arch}")
    return tuple(found)
