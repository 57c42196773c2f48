"""Resolution: pip's own resolver (`pip install --dry-run --report`) pointed at pyproxy, once per
target platform/Python; nothing is resolved here."""

from __future__ import annotations

import asyncio
import itertools
import json
import os
import sys
from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from pyproxy.model import normalize
from pyproxy.ops.prefetch.locks import (
    LockContents,
    Pinned,
    PrefetchError,
    hash_pair,
    is_remote,
    url_filename,
)

_STDERR_TAIL = 12  # lines of pip's stderr kept in a failure


@dataclass(frozen=True)
class Target:
    """One environment pip resolves for; all None means this machine's own."""

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
    """Every --python-version × every --platform; --implementation and --abi apply to all."""
    return [
        Target(version, platform, implementation, tuple(abis))
        for version, platform in itertools.product(python_versions or [None],
                                                    platforms or [None])
    ]


def pip_command(index_url: str, report: Path, requirements: Sequence[str],
                constraints: Sequence[str], target: Target, only_binary: Sequence[str]
                ) -> list[str]:
    cmd = [
        sys.executable, "-m", "pip", "install", "--dry-run", "--ignore-installed", "--quiet",
        "--report", str(report), "--no-cache-dir", "--disable-pip-version-check", "--no-input",
        "--index-url", index_url,
    ]
    for path in requirements:
        cmd += ["-r", path]
    for path in constraints:
        cmd += ["-c", path]
    for spec in only_binary:
        cmd += ["--only-binary", spec]
    return cmd + target.pip_args()


def pip_environment(environ: Mapping[str, str]) -> dict[str, str]:
    """This machine's environment without any pip configuration: pip must resolve through
    pyproxy only, never a find-links directory or an extra index."""
    env = {k: v for k, v in environ.items() if not k.upper().startswith("PIP_")}
    env.update(PIP_CONFIG_FILE=os.devnull, PIP_NO_INPUT="1", PIP_DISABLE_PIP_VERSION_CHECK="1")
    return env


def parse_pip_report(report: Mapping[str, Any]) -> LockContents:
    """The files of a `pip install --report`: `install[*].download_info` names each one's URL
    and `archive_info.hashes`. Local paths and VCS checkouts are not index files."""
    contents = LockContents()
    for item in report.get("install", []):
        info = item.get("download_info") or {}
        name = normalize(str((item.get("metadata") or {}).get("name", "")))
        url = str(info.get("url", ""))
        archive = info.get("archive_info")
        if not is_remote(url) or archive is None:
            contents.skipped.append(f"{name or url}: {url} is not a file of an index")
            continue
        hashes = {k.lower(): v.lower() for k, v in (archive.get("hashes") or {}).items()}
        if not hashes and archive.get("hash"):
            hashes = dict([hash_pair(archive["hash"], "pip report")])
        filename = url_filename(url.split("#", 1)[0])
        contents.files.append(Pinned(name, filename, hashes))
    return contents


def _tail(text: str) -> str:
    lines = [line for line in text.strip().splitlines() if line.strip()]
    return "\n".join(lines[-_STDERR_TAIL:]) or "(pip printed nothing)"


class ResolutionFailed(Exception):
    """pip could not resolve for a target; the message is pip's own tail, for the summary."""


async def resolve_for(index_url: str, target: Target, report: Path, requirements: Sequence[str],
                      constraints: Sequence[str], only_binary: Sequence[str]) -> LockContents:
    """Run pip once for `target` and read the files its report names."""
    cmd = pip_command(index_url, report, requirements, constraints, target, only_binary)
    try:
        proc = await asyncio.create_subprocess_exec(
            *cmd, stdin=asyncio.subprocess.DEVNULL, stdout=asyncio.subprocess.PIPE,
            stderr=asyncio.subprocess.PIPE, env=pip_environment(os.environ),
        )
        out, err = await proc.communicate()
    except OSError as exc:
        raise ResolutionFailed(f"cannot run pip: {exc}") from None
    if proc.returncode != 0:
        text = err.decode(errors="replace") or out.decode(errors="replace")
        raise ResolutionFailed(f"pip exited with {proc.returncode}:\n" + _tail(text))
    try:
        return parse_pip_report(json.loads(report.read_text(encoding="utf-8")))
    except (OSError, ValueError, PrefetchError) as exc:
        raise ResolutionFailed(f"unreadable pip report: {exc}") from None
