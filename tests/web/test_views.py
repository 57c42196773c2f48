"""pyproxy.web.views: what the human pages show, from hand-built pages. Pure calls."""

from __future__ import annotations

from pyproxy.web.views import human_size


def test_human_size() -> None:
    assert [human_size(n) for n in (None, 0, 1, 999, 1000, 1499, 999_949, 999_950, 12_345_678,
                                    3 * 10**12)] == [
        "unknown size", "0 bytes", "1 byte", "999 bytes", "1.0 kB", "1.5 kB", "999.9 kB",
        "1.0 MB", "12.3 MB", "3.0 TB",
    ]
