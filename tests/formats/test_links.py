"""pyproxy.formats.links: a page's links resolved as urljoin + urldefrag resolve them."""

from __future__ import annotations

from urllib.parse import unquote, urldefrag, urljoin, urlsplit

import pytest

from pyproxy.formats.links import Links, filename_from_url

BASES = ["http://127.0.0.1:8000/simple/foo/", "https://127.0.0.1/simple/foo", "http://h/"]
HREFS = [
    "../../files/foo/foo-1.0-py3-none-any.whl#sha256=" + "a" * 64,
    "../../files/foo/foo-1.0.tar.gz", "foo-1.0.whl", "./foo-1.0.whl", "a/./b/../foo.whl",
    "/files/foo/foo%2B1.whl#md5=00&egg=x", "https://127.0.0.2/p/foo.whl", "//127.0.0.3/p/x.whl",
    "https://127.0.0.2", "https://127.0.0.2/", "x/..", "x/.", "dl?file=a/b.whl", "a/b.whl;p=1",
    "a//b.whl", "  ../x.whl  ", "file:///etc/passwd", "javascript:alert(1)/x", "data:x/y.whl",
    "#only-a-fragment", "../../../../../x.whl", "http://[::1/x.whl", "mailto:a@b/c.whl", "?q/x",
]


def slow(base: str, href: str) -> tuple[str, str] | None:
    """What the parser did before: urljoin, urldefrag, an http(s) scheme."""
    try:
        url, fragment = urldefrag(urljoin(base, href.strip()))
        scheme = urlsplit(url).scheme
    except ValueError:
        return None
    return (url, fragment) if scheme in ("http", "https") else None


@pytest.mark.parametrize("base", BASES)
def test_every_link_resolves_as_urljoin_does(base: str) -> None:
    links = Links(base)
    for _ in range(2):  # the second time from the directories it remembered
        assert [links.resolve(href) for href in HREFS] == [slow(base, href) for href in HREFS]


def test_links_of_other_directories_do_not_share_a_resolution() -> None:
    links = Links("http://h/simple/foo/")
    assert links.resolve("../a/x.whl") == ("http://h/simple/a/x.whl", "")
    assert links.resolve("../b/x.whl#sha256=ab") == ("http://h/simple/b/x.whl", "sha256=ab")
    assert links.resolve("../a/y.whl") == ("http://h/simple/a/y.whl", "")


@pytest.mark.parametrize("url", ["http://h/a/foo%2B1-1.0.whl", "http://h/a/b.whl?x=1/c",
                                 "http://h", "http://h/", "https://h/p;x/f.whl"])
def test_filename_is_the_last_path_segment_percent_decoded(url: str) -> None:
    assert filename_from_url(url) == unquote(urlsplit(url).path.rpartition("/")[2])
