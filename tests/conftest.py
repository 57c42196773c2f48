"""Shared fixtures: a pyproxy app served in process by pytest-aiohttp on 127.0.0.1, the fake
upstream it pulls through, and a twine-like `upload()` helper.

Fixtures:
- `settings`: `Settings(data_dir=tmp_path / "data", upstream_url="")`. Override it in a module
  for other settings (`seeded_settings()` copies the pre-built data dir), or use `make_client`.
- `services`: `build_services(settings)` with user "alice" (password "secret123"); the stores
  are closed at teardown.
- `client`: an aiohttp `TestClient` for `build_app(services)`.
- `make_client`: the one way to open further apps. `await make_client(**options) ->
  (client, services)`; each call opens its own data dir, `tmp_path / "data-N"` (or `data_dir=`,
  for apps that share one or move data between two), with user "alice". Options:
  `seeded=True` starts from a copy of the session's seeded data dir; `access_log=True` serves
  the app as `pyproxy serve` does: with pyproxy's access logger (which also records the request
  metrics) and protocol log, and without cancelling a handler whose client went away (a
  TestServer's default); every other keyword is a `Settings` field (`upstream_url=fake.index_url`
  for a pull-through app). `await make_client.close(client)` stops one app early (a restart on
  the same data dir); the rest are closed at teardown, each server before its stores.
- `fake_upstream`: the one way to run a `FakeUpstream` in the test's loop.
  `await fake_upstream(formats="json", relative_file_urls=False) -> FakeUpstream`, started on
  127.0.0.1 and stopped at teardown.
- `fake`: `await fake_upstream()`: an empty fake index serving JSON. A module that needs other
  formats or files overrides `fake` (through `fake_upstream`, or by requesting `fake` and
  filling it).
- `seed`: a session-wide data dir filled once through real HTTP uploads (see `Seed`); modules
  that only read can override `settings` with `seeded_settings(seed, tmp_path)`, or call
  `make_client(seeded=True)`, instead of paying for the uploads (scrypt makes each
  authenticated request ~0.1 s).
- `isolated_cwd`: for commands run through `cli.main()`: an empty working directory and no
  `PYPROXY_*` variables.

- `backends`: the private and user stores on SQLite, then on PostgreSQL (tests/stores/backends.py).

The e2e tests (tests/e2e/) start `pyproxy serve` subprocesses instead: see tests/e2e/conftest.py.
"""

from __future__ import annotations

import asyncio
import dataclasses
import os
import shutil
from collections.abc import AsyncIterator, Awaitable, Callable, Iterator
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import pytest
from aiohttp import ClientResponse, FormData, encode_basic_auth
from aiohttp.test_utils import TestClient, TestServer
from aiohttp.web_runner import BaseRunner

from pyproxy import compose
from pyproxy.settings import Settings
from pyproxy.web.access_log import runner_options
from pyproxy.web.app import build_app
from pyproxy.web.context import Services
from tests.dists import form_fields_for, make_sdist, make_wheel
from tests.fake_upstream import FakeUpstream, Formats
from tests.servers.postgres import PostgresServer
from tests.servers.postgres import available as postgres_available
from tests.servers.s3 import S3Server
from tests.servers.s3 import available as s3_available
from tests.servers.s3 import credentials as s3_credentials
from tests.stores.backends import BACKENDS, Backends, backends_fixture

USER = "alice"
PASSWORD = "secret123"
UPLOAD_URL = "/legacy/"


def base_settings(data_dir: Path, **overrides: Any) -> Settings:
    return dataclasses.replace(Settings(data_dir=data_dir, upstream_url=""), **overrides)


def open_services(settings: Settings) -> Services:
    services = compose.build_services(settings)
    if not services.users.exists(USER):
        services.users.add_user(USER, PASSWORD)
    return services


async def upload(
    client: TestClient,
    path: Path,
    user: str | None = USER,
    password: str | None = PASSWORD,
    *,
    url: str = UPLOAD_URL,
    filename: str | None = None,
    content: bytes | bool | None = None,
    content_type: str = "application/octet-stream",
    headers: dict[str, str] | None = None,
    file_parts: dict[str, tuple[str, bytes]] | None = None,
    **field_overrides: Any,
) -> ClientResponse:
    """POST `path` as twine does: the metadata fields of `form_fields_for(path)`, then `:action`
    and `protocol_version`, then the `content` file part; Basic auth sent up front.

    `field_overrides`: a value replaces the field (a list repeats it), None removes it; use
    `**{":action": ...}` for names that are not identifiers. `content=False` sends no file part,
    bytes replace the file's bytes; `filename` replaces the part's filename. `user=None` sends
    no credentials. `file_parts` maps field names to (filename, bytes) sent as extra file parts
    (before `content`), replacing a text field of that name.
    """
    fields = form_fields_for(path)
    for key in file_parts or {}:
        fields.pop(key, None)
    for key, value in field_overrides.items():
        if value is None:
            fields.pop(key, None)
        else:
            fields[key] = [str(v) for v in value] if isinstance(value, (list, tuple)) else [str(value)]
    # twine (urllib3) writes the filename as is; aiohttp would percent-encode it by default
    form = FormData(default_to_multipart=True, quote_fields=False)
    for key, values in fields.items():
        for value in values:
            form.add_field(key, value)
    for key, (part_filename, data) in (file_parts or {}).items():
        form.add_field(key, data, filename=part_filename, content_type="application/octet-stream")
    if content is not False:
        body = path.read_bytes() if content is None or content is True else content
        form.add_field("content", body, filename=filename or path.name, content_type=content_type)
    headers = dict(headers or {})
    if user is not None:
        headers["Authorization"] = encode_basic_auth(user, password or "")
    return await client.post(url, data=form, headers=headers, allow_redirects=False)


# ---------------------------------------------------------------------------- the CLI


@pytest.fixture
def isolated_cwd(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> Path:
    """For commands run through cli.main(): an empty working directory (so no ./pyproxy.toml is
    read) and no PYPROXY_* variables."""
    work = tmp_path / "cwd"
    work.mkdir()
    monkeypatch.chdir(work)
    for variable in list(os.environ):
        if variable.startswith("PYPROXY"):
            monkeypatch.delenv(variable)
    return work


# ---------------------------------------------------------------------------- per-test app


@pytest.fixture
def settings(tmp_path: Path) -> Settings:
    return base_settings(tmp_path / "data")


@pytest.fixture
async def services(settings: Settings) -> AsyncIterator[Services]:
    services = open_services(settings)
    try:
        yield services
    finally:
        await services.close()


@pytest.fixture
async def client(services: Services, aiohttp_client: Callable[..., Awaitable[TestClient]]) -> TestClient:
    # `services` is set up first, so the server is torn down before the stores are closed
    return await aiohttp_client(build_app(services))


class ServedAsServe(TestServer):
    """A TestServer whose handlers, as under `pyproxy serve`, run on when their client goes away
    (TestServer cancels them), so what they do then is what the server does."""

    async def _make_runner(self, **kwargs: Any) -> BaseRunner:
        kwargs["handler_cancellation"] = False
        return await super()._make_runner(**kwargs)


class MakeClient:
    """`make_client`: see the module docstring."""

    def __init__(self, tmp_path: Path, request: pytest.FixtureRequest,
                 aiohttp_client: Callable[..., Awaitable[TestClient]]) -> None:
        self._tmp_path = tmp_path
        self._request = request
        self._aiohttp_client = aiohttp_client
        self._made = 0
        self._open: list[tuple[TestClient, Services]] = []

    async def __call__(
        self, *, seeded: bool = False, access_log: bool = False, data_dir: Path | None = None,
        **overrides: Any,
    ) -> tuple[TestClient, Services]:
        if data_dir is None:
            data_dir = self._tmp_path / f"data-{self._made}"
        self._made += 1
        if seeded:
            seed: Seed = self._request.getfixturevalue("seed")
            shutil.copytree(seed.data_dir, data_dir)
        services = open_services(base_settings(data_dir, **overrides))
        try:
            server_class = ServedAsServe if access_log else TestServer
            app = server_class(build_app(services), host="127.0.0.1")
            if access_log:
                await app.start_server(**runner_options())
            test_client = await self._aiohttp_client(app)
        except BaseException:
            await services.close()
            raise
        self._open.append((test_client, services))
        return test_client, services

    async def close(self, test_client: TestClient) -> None:
        """Stop the app behind `test_client` (server first, then its stores) before teardown."""
        for index, (opened, services) in enumerate(self._open):
            if opened is test_client:
                del self._open[index]
                await opened.close()
                await services.close()
                return
        raise ValueError("not a client of this make_client")

    async def close_all(self) -> None:
        while self._open:
            await self.close(self._open[-1][0])


@pytest.fixture
async def make_client(
    tmp_path: Path, request: pytest.FixtureRequest,
    aiohttp_client: Callable[..., Awaitable[TestClient]],
) -> AsyncIterator[MakeClient]:
    maker = MakeClient(tmp_path, request, aiohttp_client)
    try:
        yield maker
    finally:
        await maker.close_all()


# ---------------------------------------------------------------------------- fake upstream

StartFake = Callable[..., Awaitable[FakeUpstream]]


@pytest.fixture
async def fake_upstream() -> AsyncIterator[StartFake]:
    started: list[FakeUpstream] = []

    async def start(*, formats: Formats = "json", relative_file_urls: bool = False) -> FakeUpstream:
        upstream = FakeUpstream(formats=formats, relative_file_urls=relative_file_urls)
        await upstream.start()
        started.append(upstream)
        return upstream

    try:
        yield start
    finally:
        for upstream in reversed(started):
            await upstream.stop()


@pytest.fixture
async def fake(fake_upstream: StartFake) -> FakeUpstream:
    return await fake_upstream()


# ----------------------------------------------------------------------- shared seeded data


@dataclass
class Seed:
    """A data dir populated by real uploads, and the distribution files that went in.

    Projects: `Foo_Bar` (name sent as "Foo-Bar" by twine's safe_name; normalised "foo-bar"):
    wheel 1.0 (Requires-Python ">=3.8,<4"), sdist 1.0, wheel 2.0, wheel 2.1+local (a '+' in
    its filename); `HolyGrail` (normalised "holygrail"): wheel 0.1.
    """

    data_dir: Path
    dists: dict[str, Path] = field(default_factory=dict)  # filename -> local path

    def path(self, filename: str) -> Path:
        return self.dists[filename]


def _seed_dists(directory: Path) -> list[Path]:
    return [
        make_wheel(
            directory, "Foo_Bar", "1.0", requires_python=">=3.8,<4",
            requires_dist=["packaging>=20"], filename="foo_bar-1.0-py3-none-any.whl",
        ),
        make_sdist(directory, "Foo_Bar", "1.0", requires_python=">=3.8,<4"),
        make_wheel(directory, "Foo_Bar", "2.0", filename="foo_bar-2.0-py3-none-any.whl"),
        make_wheel(directory, "Foo_Bar", "2.1+local", filename="foo_bar-2.1+local-py3-none-any.whl"),
        make_wheel(directory, "HolyGrail", "0.1", filename="holygrail-0.1-py3-none-any.whl"),
    ]


async def _upload_all(settings: Settings, paths: list[Path]) -> None:
    services = open_services(settings)
    try:
        async with TestClient(TestServer(build_app(services), host="127.0.0.1")) as test_client:
            for path in paths:
                response = await upload(test_client, path)
                assert response.status == 200, (path.name, response.status, await response.text())
    finally:
        await services.close()


@pytest.fixture(scope="session")
def seed(tmp_path_factory: pytest.TempPathFactory) -> Seed:
    root = tmp_path_factory.mktemp("seed")
    paths = _seed_dists(root / "dists")
    data_dir = root / "data"
    # in a thread of its own: the seed may first be asked for from inside a running loop
    # (`make_client(seeded=True)`), where asyncio.run() cannot be called
    with ThreadPoolExecutor(1) as pool:
        pool.submit(asyncio.run, _upload_all(base_settings(data_dir), paths)).result()
    return Seed(data_dir=data_dir, dists={path.name: path for path in paths})


def seeded_settings(seed: Seed, tmp_path: Path, **overrides: Any) -> Settings:
    """Settings on a private copy of the seeded data dir (tests may change it freely)."""
    data_dir = tmp_path / "data"
    shutil.copytree(seed.data_dir, data_dir)
    return base_settings(data_dir, **overrides)


# ---- the cluster's real servers: PostgreSQL and an S3-compatible store (tests/servers/) ----


@pytest.fixture(scope="session")
def postgres() -> Iterator[PostgresServer]:
    """One PostgreSQL server for the session; tests take databases of their own (`pg_dsn`)."""
    why_not = postgres_available()
    if why_not is not None:
        pytest.fail(f"PostgreSQL is needed for this test: {why_not}")
    server = PostgresServer().start()
    yield server
    server.close()


@pytest.fixture
def pg_dsn(postgres: PostgresServer) -> str:
    """The DSN of a new, empty database (the server is started again if a test stopped it)."""
    if postgres.pid is None:
        postgres.start()
    return postgres.new_database()


@pytest.fixture(scope="session")
def s3() -> Iterator[S3Server]:
    """One moto S3 server for the session; tests take buckets of their own (`bucket`)."""
    why_not = s3_available()
    if why_not is not None:
        pytest.fail(f"an S3 server is needed for this test: {why_not}")
    server = S3Server().start()
    yield server
    server.close()


@pytest.fixture
def bucket(s3: S3Server, monkeypatch: pytest.MonkeyPatch) -> str:
    """A new, empty bucket's name, with the server's credentials in the environment (the server
    is started again if a test stopped it)."""
    if s3.pid is None:
        s3.start()
    for name, value in s3_credentials().items():
        monkeypatch.setenv(name, value)
    return s3.new_bucket()


@pytest.fixture(params=BACKENDS)
def backends(request: pytest.FixtureRequest) -> Iterator[Backends]:
    """Stores on each backend in turn (see tests/stores/backends.py): parity tests."""
    yield from backends_fixture(request)
