"""repository/core_metadata.py: a served `.metadata` read and parsed, through a real upstream
repository over the FakeUpstream (offering its own, or none: then made from the wheel)."""

from __future__ import annotations

from collections.abc import AsyncIterator
from pathlib import Path

import pytest

from pyproxy.model import NormalizedName, NotFound
from pyproxy.repository.core_metadata import parsed_metadata, read_metadata
from pyproxy.repository.http import UpstreamClient
from pyproxy.repository.upstream import UpstreamRepository
from pyproxy.stores.blobcache import BlobCache
from pyproxy.stores.pages import PageStore
from tests.dists import core_metadata, make_wheel
from tests.fake_upstream import FakeUpstream

PROJECT = NormalizedName("dep-reader")
META = core_metadata("Dep.Reader", "1.0", requires_dist=["attrs>=22", 'tomli; python_version < "3.11"'])


@pytest.fixture
async def repo(tmp_path: Path) -> AsyncIterator[tuple[FakeUpstream, UpstreamRepository]]:
    async with FakeUpstream(formats="json") as fake:
        upstream = UpstreamRepository(
            UpstreamClient(fake.index_url, timeout=5.0), PageStore(tmp_path / "pages"),
            BlobCache(tmp_path / "files", 2**30), page_ttl=600.0, index_ttl=600.0,
        )
        yield fake, upstream
        await upstream.close()


@pytest.mark.parametrize("offered", [True, False], ids=["upstream's", "made"])
async def test_parsed_dependencies(repo: tuple[FakeUpstream, UpstreamRepository], tmp_path: Path,
                                   offered: bool) -> None:
    fake, upstream = repo
    fake.offer_metadata = offered
    wheel = make_wheel(tmp_path, "Dep.Reader", "1.0", metadata=META)
    fake.add_file(PROJECT, wheel.name, wheel.read_bytes(), metadata=META)
    assert await read_metadata(upstream, PROJECT, wheel.name) == META
    raw = await parsed_metadata(upstream, PROJECT, wheel.name)
    assert raw is not None and raw["name"] == "Dep.Reader"
    assert raw["requires_dist"] == ["attrs>=22", 'tomli; python_version < "3.11"']


async def test_none_for_a_wheel_without_metadata(repo: tuple[FakeUpstream, UpstreamRepository],
                                                 tmp_path: Path) -> None:
    fake, upstream = repo
    fake.offer_metadata = False
    wheel = make_wheel(tmp_path, "Dep.Reader", "1.0", omit=("METADATA",))
    fake.add_file(PROJECT, wheel.name, wheel.read_bytes())
    assert await parsed_metadata(upstream, PROJECT, wheel.name) is None
    fake.add_file(PROJECT, "dep_reader-1.0.tar.gz", b"sdist")
    with pytest.raises(NotFound):  # sdists offer none
        await parsed_metadata(upstream, PROJECT, "dep_reader-1.0.tar.gz")
