"""pyproxy.repository.private.PrivateRepository: the private store as a Repository."""

from __future__ import annotations

from collections.abc import Iterator
from pathlib import Path

import pytest

from pyproxy.model import NotFound, normalize
from pyproxy.repository.private import PrivateRepository
from pyproxy.stores.private import PrivateStore
from tests.stores.test_private import METADATA, upload


@pytest.fixture
def store(tmp_path: Path) -> Iterator[PrivateStore]:
    opened = PrivateStore(tmp_path / "private")
    yield opened
    opened.close()


async def test_private_repository_wraps_the_store(store: PrivateStore) -> None:
    upload(store, body=b"b", core_metadata=METADATA)
    repository = PrivateRepository(store)
    assert (await repository.list_projects()).names == ("foo",)
    page = await repository.project_page(normalize("foo"))
    assert page.files[0].filename == "foo-1.0-py3-none-any.whl"
    opened = await repository.open_file(normalize("foo"), page.files[0].filename)
    assert opened.path.read_bytes() == b"b"
    meta = await repository.open_metadata(normalize("foo"), page.files[0].filename)
    assert meta.path.read_bytes() == METADATA
    with pytest.raises(NotFound):
        await repository.project_page(normalize("nope"))
