"""End to end: `pyproxy token revoke`, `user remove` and `grant --revoke` take effect at once on
every worker of a `pyproxy serve --workers 2` subprocess with `[auth] read = "authenticated"`.

Each test first has both workers answer the credentials (each worker remembers a verification),
keeps a client reading with them while the command runs, as a busy server would, and then
requires that every request started after the command returned is refused, on both workers.

The revoking command runs through the CLI's entry point in this process: a `pyproxy`
subprocess spends 100-200 ms shutting its interpreter down after its commit, which would let a
server that notices changes only every half second pass by luck.
"""

from __future__ import annotations

import threading
import time
import uuid
from collections import Counter
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path

import pytest
from prometheus_client.multiprocess import MultiProcessCollector

from pyproxy.cli.main import main
from tests.dists import make_wheel
from tests.e2e.clients import basic_auth, raw_request, raw_upload
from tests.e2e.conftest import PyproxyServer, ServerFactory
from tests.processes import session_members

pytestmark = pytest.mark.e2e

NAME = f"e2e-revoke-{uuid.uuid4().hex[:6]}"
PASSWORD = "revocation-pw-1"
ENOUGH = 200  # requests on new connections before giving up on one worker getting any
PATIENCE_S = 10.0  # for a worker's counter file to show a request it already answered


@pytest.fixture(scope="module")
def server(module_pyproxy_factory: ServerFactory, tmp_path_factory: pytest.TempPathFactory
           ) -> PyproxyServer:
    """Two workers, reads for users only, NAME 1.0 uploaded by alice and restricted."""
    directory = tmp_path_factory.mktemp("revocation")
    config = directory / "pyproxy.toml"
    config.write_text('[auth]\nread = "authenticated"\n')
    started = module_pyproxy_factory.start(extra_args=["--config", str(config), "--workers", "2"])
    assert len(workers(started)) == 2
    wheel = make_wheel(directory / "dist", NAME, "1.0")
    response = raw_upload(started.upload_url, wheel, started.user, started.password)
    assert response.status == 200, str(response)
    started.cli("restrict", NAME)
    return started


def workers(server: PyproxyServer) -> list[int]:
    return [pid for pid in session_members(server.pid) if pid != server.pid]


def answered(server: PyproxyServer) -> dict[int, Counter[int]]:
    """Per worker pid: how many requests it answered, by status (its own metrics file)."""
    counts: dict[int, Counter[int]] = {}
    for path in (server.data_dir / "metrics").glob("*/counter_*.db"):
        pid = int(path.stem.removeprefix("counter_"))
        statuses: Counter[int] = Counter()
        for family in MultiProcessCollector.merge([str(path)], accumulate=True):
            for sample in family.samples:
                if sample.name == "pyproxy_http_requests_total":
                    statuses[int(sample.labels["status"])] += int(sample.value)
        counts[pid] = statuses
    return counts


def on_every_worker(server: PyproxyServer, url: str, headers: dict[str, str],
                    expected: int) -> None:
    """GET url on new connections (the kernel spreads them over the workers) until both workers
    have answered one; every answer must be `expected`."""
    before = answered(server)
    pids = workers(server)

    def served_by_all() -> bool:
        now = answered(server)
        return all(now.get(pid, Counter())[expected] > before.get(pid, Counter())[expected]
                   for pid in pids)

    for sent in range(1, ENOUGH + 1):
        response = raw_request("GET", url, headers=headers)
        assert response.status == expected, (sent, str(response))
        if sent >= 8 and served_by_all():
            return
    deadline = time.monotonic() + PATIENCE_S  # the last counts may still be on their way
    while not served_by_all():
        assert time.monotonic() < deadline, f"one worker answered none of {ENOUGH}: {answered(server)}"
        time.sleep(0.05)


@contextmanager
def busy(url: str, headers: dict[str, str]) -> Iterator[None]:
    """A client reading with the credentials meanwhile, so every worker keeps using them."""
    stop = threading.Event()

    def read() -> None:
        while not stop.is_set():
            raw_request("GET", url, headers=headers)

    reader = threading.Thread(target=read, daemon=True)
    reader.start()
    try:
        yield
    finally:
        stop.set()
        reader.join(30)


def revoked_at_once(server: PyproxyServer, url: str, headers: dict[str, str],
                    command: list[str], refused: int) -> None:
    on_every_worker(server, url, headers, 200)
    with busy(url, headers):
        time.sleep(0.3)  # both workers busy with the credentials while the CLI starts
        assert main([*command, "--data-dir", str(server.data_dir)]) == 0
        # the very next requests, on any worker
        on_every_worker(server, url, headers, refused)


@pytest.fixture(autouse=True)
def _cli_cwd(isolated_cwd: Path) -> None:
    """main() reads no ./pyproxy.toml and no PYPROXY_* variables."""


def test_token_revoke_is_refused_at_once_on_every_worker(server: PyproxyServer) -> None:
    server.add_user("bob", PASSWORD)
    token = server.create_token("bob")
    headers = {"Authorization": basic_auth("__token__", token)}
    revoked_at_once(server, server.simple_url, headers, ["token", "revoke", token], 401)


def test_user_remove_is_refused_at_once_on_every_worker(server: PyproxyServer) -> None:
    server.add_user("carol", PASSWORD)
    headers = {"Authorization": basic_auth("carol", PASSWORD)}
    revoked_at_once(server, server.simple_url, headers, ["user", "remove", "carol"], 401)


def test_grant_revoke_is_refused_at_once_on_every_worker(server: PyproxyServer) -> None:
    server.add_user("dave", PASSWORD)
    server.cli("grant", NAME, "dave", "--read")
    headers = {"Authorization": basic_auth("dave", PASSWORD)}
    url = f"{server.simple_url}{NAME}/"
    revoked_at_once(server, url, headers, ["grant", NAME, "dave", "--revoke"], 403)
    # dave is still a user: what is not restricted he still reads
    assert raw_request("GET", server.simple_url, headers=headers).status == 200
