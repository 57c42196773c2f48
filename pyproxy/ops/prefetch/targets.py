"""The environments a prefetch is for, and which of a lock's files they need.

`--platform`, `--python-version`, `--implementation` and `--abi` describe the machines that will
install; pip is told them when it resolves (resolve.py), and a lock file, which lists the files of
every platform (a universal uv.lock lists hundreds), keeps only the wheels whose tags one of those
machines accepts, by packaging.tags as installers compute them. A platform names the oldest
system of its kind: manylinux_2_28_x86_64 also takes manylinux_2_17 (manylinux2014) wheels,
macosx_11_0_arm64 also 10.x universal2 ones. Under `--only-binary` (`:all:` or names, as
pip spells it) sdists are left out too.
"""

from __future__ import annotations

import itertools
import re
import sys
from collections.abc import Iterable, Iterator, Sequence
from dataclasses import dataclass

from packaging import tags
from packaging.utils import InvalidWheelFilename, parse_wheel_filename

from pyproxy.model import normalize
from pyproxy.ops.prefetch.locks import LockContents, Pinned, PrefetchError

_LEGACY_MANYLINUX = {"manylinux1": (2, 5), "manylinux2010": (2, 12), "manylinux2014": (2, 17)}
_GLIBC_NAMES = {version: name for name, version in _LEGACY_MANYLINUX.items()}


@dataclass(frozen=True)
class Target:
    """One environment to prefetch for (what pip resolves for, what a lock's wheels must
    fit); all None means this machine's own."""

    python_version: str | None = None
    platform: str | None = None
    implementation: str | None = None
    abis: tuple[str, ...] = ()

    @property
    def label(self) -> str:
        parts = []
        if self.implementation:
            parts.append(self.implementation)
        if self.python_version:
            parts.append(f"python {self.python_version}")
        if self.platform:
            parts.append(self.platform)
        if self.abis:
            parts.append("abi " + ",".join(self.abis))
        return ", ".join(parts) or "this machine"

    def pip_args(self) -> list[str]:
        args = []
        if self.python_version:
            args += ["--python-version", self.python_version]
        if self.platform:
            args += ["--platform", self.platform]
        if self.implementation:
            args += ["--implementation", self.implementation]
        for abi in self.abis:
            args += ["--abi", abi]
        return args

    @property
    def foreign(self) -> bool:
        return bool(self.python_version or self.platform or self.implementation or self.abis)


def expand_targets(python_versions: Sequence[str], platforms: Sequence[str],
                   implementation: str | None, abis: Sequence[str]) -> list[Target]:
    """Every --python-version times every --platform; --implementation and --abi apply to
    all."""
    versions: Sequence[str | None] = python_versions or [None]
    shown: Sequence[str | None] = platforms or [None]
    return [
        Target(version, platform, implementation, tuple(abis))
        for version, platform in itertools.product(versions, shown)
    ]


def _python_version(text: str) -> tuple[int, ...]:
    """pip's spellings: "3", "3.12", "312", "3.12.1"."""
    if re.fullmatch(r"\d+(\.\d+)*", text) is None:
        raise PrefetchError(f"--python-version {text!r} is not a version such as 3.12")
    if "." in text:
        return tuple(int(part) for part in text.split(".")[:2])
    return (int(text[0]), int(text[1:])) if len(text) > 1 else (int(text),)


def _platforms(platform: str) -> list[str]:
    """The platform tags a machine of `platform` installs: itself and what older systems of its
    kind built (glibc, musl and macOS versions are backward compatible)."""
    legacy = re.fullmatch(r"(manylinux1|manylinux2010|manylinux2014)_(.+)", platform)
    if legacy:
        (major, minor), arch = _LEGACY_MANYLINUX[legacy[1]], legacy[2]
        platform = f"manylinux_{major}_{minor}_{arch}"
    linux = re.fullmatch(r"(manylinux|musllinux)_(\d+)_(\d+)_(.+)", platform)
    if linux:
        kind, major, minor, arch = linux[1], int(linux[2]), int(linux[3]), linux[4]
        found = []
        for older in range(minor, -1, -1):
            found.append(f"{kind}_{major}_{older}_{arch}")
            if kind == "manylinux" and (major, older) in _GLIBC_NAMES:
                found.append(f"{_GLIBC_NAMES[major, older]}_{arch}")
        return found
    mac = re.fullmatch(r"macosx_(\d+)_(\d+)_(.+)", platform)
    if mac:
        return list(tags.mac_platforms((int(mac[1]), int(mac[2])), mac[3]))
    return [platform]


def supported_tags(target: Target) -> set[tags.Tag]:
    """The wheel tags an installer on `target` accepts; the unset parts are this machine's."""
    version = (_python_version(target.python_version) if target.python_version
               else sys.version_info[:2])
    platforms = (_platforms(target.platform) if target.platform
                 else list(tags.platform_tags()))
    implementation = target.implementation or tags.interpreter_name()
    abis = list(target.abis) or None
    interpreter = f"{implementation}{''.join(str(part) for part in version[:2])}"
    found: Iterator[tags.Tag]
    if implementation == "cp":
        found = tags.cpython_tags(version, abis, platforms)
    else:
        found = tags.generic_tags(interpreter, abis, platforms)
    return set(itertools.chain(found, tags.compatible_tags(version, interpreter, platforms)))


def _binary_only(specs: Iterable[str]) -> tuple[bool, set[str]]:
    """(every project, these projects) that must come as wheels, read as pip reads
    --only-binary: comma-separated names, :all: and :none: resetting what came before."""
    everything, names = False, set[str]()
    for spec in specs:
        for item in (part.strip() for part in spec.split(",")):
            if item in (":all:", ":none:"):
                everything, names = item == ":all:", set()
            elif item:
                names.add(normalize(item))
    return everything, names


def for_targets(contents: LockContents, targets: Sequence[Target],
                only_binary: Sequence[str]) -> LockContents:
    """The lock's files the targets need (counting those left out). Without a foreign target
    every wheel is kept (a lock prefetched for "everything it pins"); a wheel whose name cannot
    be parsed is kept rather than guessed about."""
    everything, names = _binary_only(only_binary)
    accepted: set[tags.Tag] | None = None
    if any(target.foreign for target in targets):
        accepted = set().union(*(supported_tags(target) for target in targets))
    kept = [pinned for pinned in contents.files if _needed(pinned, accepted, everything, names)]
    left_out = contents.left_out + len(contents.files) - len(kept)
    return LockContents(files=kept, skipped=list(contents.skipped), left_out=left_out)


def _needed(pinned: Pinned, accepted: set[tags.Tag] | None, everything: bool,
            names: set[str]) -> bool:
    if not pinned.filename.endswith(".whl"):
        return not (everything or pinned.project in names)
    if accepted is None:
        return True
    try:
        wheel_tags = parse_wheel_filename(pinned.filename)[3]
    except InvalidWheelFilename:
        return True
    return not wheel_tags.isdisjoint(accepted)
