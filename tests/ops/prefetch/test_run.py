"""The pure parts of pyproxy.ops.prefetch.run: the download route, the --url, the summary
(end-to-end runs: tests/e2e/test_prefetch.py)."""

from __future__ import annotations

import pytest

from pyproxy.ops.prefetch.locks import PrefetchError
from pyproxy.ops.prefetch.run import Summary, files_url, normalize_base


def test_files_url_is_pyproxys_download_route() -> None:
    assert (files_url("http://127.0.0.1:8080", "Foo.Bar", "foo_bar-2.1+local-py3-none-any.whl")
            == "http://127.0.0.1:8080/files/foo-bar/foo_bar-2.1%2Blocal-py3-none-any.whl")


@pytest.mark.parametrize(
    ("given", "base"),
    [
        ("http://127.0.0.1:8080", "http://127.0.0.1:8080"),
        ("http://127.0.0.1:8080/", "http://127.0.0.1:8080"),
        ("http://127.0.0.1:8080/simple/", "http://127.0.0.1:8080"),
        ("https://mirror.example/pypi/simple", "https://mirror.example/pypi"),
    ],
)
def test_normalize_base(given: str, base: str) -> None:
    assert normalize_base(given) == base


@pytest.mark.parametrize("url", ["127.0.0.1:8080", "ftp://127.0.0.1/", "http://"])
def test_normalize_base_refuses_what_is_not_an_http_url(url: str) -> None:
    with pytest.raises(PrefetchError, match="not an http"):
        normalize_base(url)


def test_summary_lines_give_counts_and_every_failure_reason() -> None:
    summary = Summary(fetched=2, fetched_bytes=2500, cached=1,
                      failures=[("x/x-1.whl", "HTTP 503: Service Unavailable: upstream down"),
                                ("resolution for python 3.12", "pip exited with 1:\nERROR: a\nERROR: b")],
                      skipped=["mine: editable package, no index file"])
    assert not summary.ok
    lines = summary.lines()
    assert lines[0] == "2 file(s) fetched (2.5 kB), 1 already cached, 2 failed"
    text = "\n".join(lines)
    assert "x/x-1.whl: HTTP 503: Service Unavailable: upstream down" in text
    assert "resolution for python 3.12: pip exited with 1:\n    ERROR: a\n    ERROR: b" in text
    assert "mine: editable package" in text
    assert Summary().ok
