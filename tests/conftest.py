"""Fixtures for the HTTP-level tests: a private-only pyproxy app served by pytest-aiohttp on
127.0.0.1, and a twine-like `upload()` helper.

Fixtures:
- `settings`: `Settings(data_dir=tmp_path / "data", upstream_url="")`. Override it in a module
  (or use `make_client`) for other settings; `seeded_settings()` copies a pre-built data dir.
- `services`: `compose.build_services(settings)` with user "alice" (password "secret123");
  the stores are closed at teardown.
- `client`: an aiohttp `TestClient` for `web.app.build_app(services)`.
- `make_client`: `await make_client(**settings_overrides) -> (client, services)` for a second
  app with other settings (each one gets its own data dir and user "alice").
- `seed`: a session-wide data dir filled once through real HTTP uploads (see `Seed`); modules
  that only read can override `settings` with `seeded_settings(seed, tmp_path)`, which copies
  it, instead of paying for the uploads (scrypt makes each authenticated request ~0.1 s).
"""

from __future__ import annotations

import asyncio
import dataclasses
import os
import shutil
from collections.abc import AsyncIterator, Awaitable, Callable
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import pytest
from aiohttp import ClientResponse, FormData, encode_basic_auth
from aiohttp.test_utils import TestClient, TestServer

from pyproxy import compose
from pyproxy.config import Settings
from pyproxy.web.app import build_app
from pyproxy.web.context import Services
from tests.dists import form_fields_for, make_sdist, make_wheel

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
    content: bytes | None | bool = None,
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


@pytest.fixture
async def make_client(
    tmp_path: Path, aiohttp_client: Callable[..., Awaitable[TestClient]]
) -> AsyncIterator[Callable[..., Awaitable[tuple[TestClient, Services]]]]:
    opened: list[tuple[TestClient, Services]] = []

    async def make(**overrides: Any) -> tuple[TestClient, Services]:
        services = open_services(base_settings(tmp_path / f"data-{len(opened)}", **overrides))
        test_client = await aiohttp_client(build_app(services))
        opened.append((test_client, services))
        return test_client, services

    yield make
    for test_client, services in opened:
        await test_client.close()
        await services.close()


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
    asyncio.run(_upload_all(base_settings(data_dir), paths))
    return Seed(data_dir=data_dir, dists={path.name: path for path in paths})


def seeded_settings(seed: Seed, tmp_path: Path, **overrides: Any) -> Settings:
    """Settings on a private copy of the seeded data dir (tests may change it freely)."""
    data_dir = tmp_path / "data"
    shutil.copytree(seed.data_dir, data_dir)
    return base_settings(data_dir, **overrides)
