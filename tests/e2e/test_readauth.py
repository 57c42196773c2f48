"""End to end: pip and uv against a `pyproxy serve` subprocess with `[auth] read =
"authenticated"`, using the credentials in the index URL (or a netrc file), as users configure
them."""

from __future__ import annotations

import sys
import uuid
from pathlib import Path

import pytest

from tests.dists import make_wheel, underscored
from tests.e2e.clients import (
    basic_auth,
    client_env,
    describe,
    get,
    import_from_target,
    output,
    pip_install,
    raw_request,
    raw_upload,
    run,
    uv_pip_install,
)
from tests.e2e.conftest import PyproxyServer, ServerFactory

NAME = f"e2e-readauth-{uuid.uuid4().hex[:6]}"


@pytest.fixture(scope="module")
def server(module_pyproxy_factory: ServerFactory, tmp_path_factory: pytest.TempPathFactory
           ) -> PyproxyServer:
    """A private-only server that lets only its users read, holding NAME 1.0."""
    directory = tmp_path_factory.mktemp("readauth")
    config = directory / "pyproxy.toml"
    config.write_text('[auth]\nread = "authenticated"\n')
    started = module_pyproxy_factory.start(extra_args=["--config", str(config)])
    wheel = make_wheel(directory / "dist", NAME, "1.0")
    response = raw_upload(started.upload_url, wheel, started.user, started.password)
    assert response.status == 200, str(response)
    return started


def with_credentials(server: PyproxyServer, user: str, password: str) -> str:
    return f"http://{user}:{password}@127.0.0.1:{server.port}/simple/"


def test_reads_need_credentials(server: PyproxyServer) -> None:
    assert server.user is not None and server.password is not None
    response = get(server.simple_url + f"{NAME}/")
    assert response.status == 401, str(response)
    assert response.headers["www-authenticate"] == 'Basic realm="pyproxy"'
    assert get(f"{server.url}/health").status == 200
    headers = {"Authorization": basic_auth(server.user, server.password)}
    assert raw_request("GET", server.simple_url + f"{NAME}/", headers=headers).status == 200


def test_pip_with_url_credentials(server: PyproxyServer, tmp_path: Path) -> None:
    assert server.user is not None and server.password is not None
    target = tmp_path / "target"
    pip_install(with_credentials(server, server.user, server.password), NAME, target=target)
    assert import_from_target(target, underscored(NAME)) == "1.0"


def test_pip_without_credentials_fails_with_401(server: PyproxyServer, tmp_path: Path) -> None:
    # pip (with --no-input) says why it skipped an index page only at debug level (-vv)
    proc = pip_install(server.simple_url, NAME, target=tmp_path / "target", check=False,
                       extra_args=["-vv"])
    assert proc.returncode != 0, describe(proc)
    assert "401 Client Error: Unauthorized: this index needs a user name and password" in output(
        proc), describe(proc)
    proc = pip_install(with_credentials(server, "alice", "not-the-password"), NAME,
                       target=tmp_path / "target", check=False, extra_args=["-vv"])
    assert proc.returncode != 0, describe(proc)
    assert "401 Client Error: Unauthorized: the credentials sent are not valid" in output(
        proc), describe(proc)
    # nothing pip was told leaks the password into the server's log
    assert "not-the-password" not in server.stderr_text()


def test_pip_with_netrc(server: PyproxyServer, tmp_path: Path) -> None:
    netrc = tmp_path / "netrc"
    netrc.write_text(f"machine 127.0.0.1 login {server.user} password {server.password}\n")
    netrc.chmod(0o600)
    target = tmp_path / "target"
    run(
        [sys.executable, "-m", "pip", "install", "--isolated", "--no-cache-dir",
         "--disable-pip-version-check", "--no-input", "--index-url", server.simple_url,
         "--target", str(target), NAME],
        env=client_env({"NETRC": str(netrc)}),
    )
    assert import_from_target(target, underscored(NAME)) == "1.0"


def test_uv_without_credentials_fails_with_401(server: PyproxyServer, tmp_path: Path) -> None:
    proc = uv_pip_install(server.simple_url, NAME, target=tmp_path / "target", check=False)
    assert proc.returncode != 0 and "401 Unauthorized" in output(proc), describe(proc)


def test_uv_with_url_credentials(server: PyproxyServer, tmp_path: Path) -> None:
    assert server.user is not None and server.password is not None
    target = tmp_path / "target"
    uv_pip_install(with_credentials(server, server.user, server.password), NAME, target=target)
    assert import_from_target(target, underscored(NAME)) == "1.0"
    assert server.password not in server.stderr_text()
