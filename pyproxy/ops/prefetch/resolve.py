"""Resolution: pip's own resolver (`pip install --dry-run --report`) pointed at pyproxy, once per
target platform/Python; nothing is resolved here."""

from __future__ import annotations

import asyncio
import json
import os
import sys
from collections.abc import Mapping, Sequence
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
from pyproxy.ops.prefetch.targets import Target

_STDERR_TAIL = 12  # lines of pip's stderr kept in a failure


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
