"""`pyproxy prefetch` (pyproxy.cli.prefetch): the command-line errors that come before any
network, and the default --url."""

from __future__ import annotations

from pathlib import Path

import pytest

from pyproxy.cli import main as cli
from pyproxy.cli.prefetch import default_url


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
    monkeypatch.delenv("PYPROXY_CONFIG", raising=False)
    monkeypatch.delenv("PYPROXY_SERVER_PORT", raising=False)
    monkeypatch.delenv("PYPROXY_SERVER_HOST", raising=False)
    monkeypatch.delenv("PYPROXY_SERVER_BASE_URL", raising=False)
    monkeypatch.chdir(tmp_path)
    assert default_url(None) == "http://127.0.0.1:8080"
    config = tmp_path / "pyproxy.toml"
    config.write_text('[server]\nhost = "0.0.0.0"\nport = 3141\n')
    assert default_url(None) == "http://127.0.0.1:3141"
