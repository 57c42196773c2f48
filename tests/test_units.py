"""pyproxy.units: sizes read ("10GiB" -> bytes) and shown (bytes -> "1.2 MB")."""

from __future__ import annotations

import pytest

from pyproxy.units import human_size, parse_size

GiB = 1024**3


@pytest.mark.parametrize(
    ("value", "expected"),
    [
        ("10GiB", 10 * GiB),
        ("500 MB", 500 * 1000**2),
        ("500MiB", 500 * 1024**2),
        (1024, 1024),
        ("1024", 1024),
        (0, 0),
        ("1.5GiB", int(1.5 * GiB)),
        ("2k", 2000),
        ("2KiB", 2048),
        ("1 TB", 10**12),
        ("1tib", 1024**4),
        ("  7 b ", 7),
        ("3G", 3 * 1000**3),
        (1024.0, 1024),  # TOML's float, when it is whole
        (1e9, 10**9),
        ("1.13kb", 1130),  # exact: a float would make it 1129
        ("1000000TB", 10**18),  # the largest
    ],
)
def test_parse_size(value: str | int, expected: int) -> None:
    assert parse_size(value) == expected


@pytest.mark.parametrize(
    "value", ["", "GiB", "10 XB", "-5", -5, "ten", "1,000", "10 GiB extra", True, None, [1],
              -1.0]
)
def test_parse_size_rejects(value: object) -> None:
    with pytest.raises(ValueError):
        parse_size(value)  # type: ignore[arg-type]


@pytest.mark.parametrize("value", [1.5, 0.5, float("nan"), float("inf"), float("-inf")])
def test_parse_size_refuses_a_float_that_is_no_whole_number(value: float) -> None:
    with pytest.raises(ValueError, match="is not a whole number of bytes"):
        parse_size(value)


@pytest.mark.parametrize(
    "value", ["99999999999999999999999TiB", "1000000.001TB", "9" * 400, 10**18 + 1, 1e19, 2**64]
)
def test_parse_size_refuses_more_than_an_exabyte(value: str | int | float) -> None:
    # SQLite stores at most 2**63 - 1; a float of "9" * 400 digits would be inf
    with pytest.raises(ValueError, match="is more than 1000000 TB, the largest size"):
        parse_size(value)


def test_parse_size_says_what_was_expected() -> None:
    with pytest.raises(ValueError, match="'fast' is not a rate such as 10kB/s"):
        parse_size("fast", what="a rate such as 10kB/s")


def test_human_size_is_decimal() -> None:
    assert [human_size(n) for n in (None, 0, 1, 999, 1000, 1499, 999_949, 999_950, 12_345_678,
                                    3 * 10**12, 5 * 10**15)] == [
        "unknown size", "0 bytes", "1 byte", "999 bytes", "1.0 kB", "1.5 kB", "999.9 kB",
        "1.0 MB", "12.3 MB", "3.0 TB", "5000.0 TB",
    ]


def test_exact_adds_the_byte_count_to_a_rounded_figure() -> None:
    assert human_size(1024**2, exact=True) == "1.0 MB (1048576 bytes)"
    assert human_size(100 * 1024**2, exact=True) == "104.9 MB (104857600 bytes)"
    assert human_size(500, exact=True) == "500 bytes"


@pytest.mark.parametrize("size", [0, 1, 999, 1000, 1049, 123_456_789, 10 * GiB])
def test_what_is_shown_reads_back_within_its_last_digit(size: int) -> None:
    number, unit = human_size(size).split()
    scale = {"byte": 1, "bytes": 1, "kB": 1000, "MB": 1000**2, "GB": 1000**3}[unit]
    assert abs(parse_size(number + ("b" if scale == 1 else unit)) - size) <= 0.05 * scale
