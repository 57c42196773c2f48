"""If-None-Match (pyproxy/web/conditional.py): the rule, then the same answer on every route
that sends an ETag (pages, the JSON API, files), over real HTTP on the seeded data."""

from __future__ import annotations

from pathlib import Path

import pytest
from aiohttp.test_utils import TestClient

from pyproxy.settings import Settings
from pyproxy.web.conditional import none_match
from tests.conftest import Seed, seeded_settings

TAG = '"0123abcd"'


@pytest.mark.parametrize(
    ("header", "matches"),
    [
        (None, False),
        ("", False),
        (TAG, True),
        (f"W/{TAG}", True),  # weak comparison
        ('"other"', False),
        (f'"other", {TAG}', True),
        (f'"other",W/{TAG} ', True),
        ("*", True),
        (' "other" , * ', True),
        ('"0123abc"', False),
        ("0123abcd", False),  # unquoted: not the same entity tag
    ],
)
def test_none_match(header: str | None, matches: bool) -> None:
    assert none_match(header, TAG) is matches


def test_a_weak_own_tag_compares_weakly() -> None:
    assert none_match(TAG, f"W/{TAG}")


@pytest.fixture
def settings(seed: Seed, tmp_path: Path) -> Settings:
    return seeded_settings(seed, tmp_path)


ROUTES = [
    ("/simple/foo-bar/", {"Accept": "application/vnd.pypi.simple.v1+json"}),
    ("/simple/", {"Accept": "text/html"}),
    ("/simple/foo-bar/", {"Accept": "text/html", "Accept-Encoding": "gzip"}),
    ("/pypi/foo-bar/json", {}),
    ("/files/foo-bar/foo_bar-1.0-py3-none-any.whl", {}),
]


@pytest.mark.parametrize(("path", "headers"), ROUTES)
async def test_every_route_answers_304_to_its_etag_and_to_a_star(
    client: TestClient, path: str, headers: dict[str, str]
) -> None:
    first = await client.get(path, headers=headers)
    assert first.status == 200, await first.text()
    etag = first.headers["ETag"]
    for header in (etag, f"W/{etag}", '"stale", ' + etag, "*"):
        again = await client.get(path, headers={**headers, "If-None-Match": header})
        assert again.status == 304, (header, again.status)
        assert again.headers["ETag"] == etag
        assert await again.read() == b""
    other = await client.get(path, headers={**headers, "If-None-Match": '"stale"'})
    assert other.status == 200
