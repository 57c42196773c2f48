"""pyproxy.datadir: the data directory's layout, which the server and the CLI share."""

from __future__ import annotations

import subprocess
import sys
from pathlib import Path

from pyproxy.datadir import DataDir


def test_the_layout(tmp_path: Path) -> None:
    layout = DataDir(tmp_path)
    assert layout.users == tmp_path
    assert layout.private == tmp_path / "private"
    assert layout.first_seen == tmp_path / "first-seen.sqlite3"
    assert layout.pages == tmp_path / "cache" / "pages"
    assert layout.upstream_pages("gpu") == tmp_path / "cache" / "upstreams" / "gpu" / "pages"
    assert layout.files == tmp_path / "cache" / "files"
    assert layout.metrics == tmp_path / "metrics"
    assert layout.spare == tmp_path / "spare"


def test_the_cli_learns_the_layout_without_the_web_server() -> None:
    """The operator commands import neither aiohttp.web nor the server that runs it."""
    script = (
        "import sys\n"
        "import pyproxy.cli.main, pyproxy.cli.cache, pyproxy.cli.transfer\n"
        "pyproxy.cli.main.build_parser()\n"
        "loaded = [m for m in ('pyproxy.web.runner', 'aiohttp.web') if m in sys.modules]\n"
        "print(','.join(loaded))\n"
    )
    out = subprocess.run([sys.executable, "-c", script], capture_output=True, text=True,
                         check=True).stdout
    assert out.strip() == ""
