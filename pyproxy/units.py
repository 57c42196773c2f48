"""Sizes both ways: "10GiB" -> bytes (settings, CLI options), bytes -> "1.2 MB" (anything shown).

Reading takes both kinds of unit, since operators write both: "500MB" is 500 * 10^6 bytes,
"500MiB" 500 * 2^20, a bare number or "b" is bytes.

Showing uses one spelling for the whole house, decimal (SI: kB, MB, GB, TB, powers of 1000),
because that is what people see beside pyproxy: the public index's project pages, pip's and
uv's download lines and rich's transfer speeds all count in powers of 1000, so a file pyproxy
shows as "34.5 MB" is "34.5 MB" in the installer too. Where the exact figure matters (a limit an
operator set in MiB) `exact=True` adds the byte count, rather than a second set of units.
"""

from __future__ import annotations

import re
from decimal import Decimal

_UNITS = {"": 1, "b": 1, "k": 1000, "kb": 1000, "kib": 1024, "m": 1000**2, "mb": 1000**2,
          "mib": 1024**2, "g": 1000**3, "gb": 1000**3, "gib": 1024**3, "t": 1000**4,
          "tb": 1000**4, "tib": 1024**4}
_SIZE = re.compile(r"\s*(\d+(?:\.\d+)?)\s*([a-zA-Z]*)\s*")
_SHOWN = ("kB", "MB", "GB", "TB")
# an exabyte: the largest size read, far past any disk and short of SQLite's 2**63 - 1
MAX_SIZE = 1000**6


def parse_size(value: str | int | float, *, what: str = "a size such as 500MiB or 10GB") -> int:
    """'10GiB', '500 MB', '1024' or an int -> bytes; ValueError for anything else, including a
    size past MAX_SIZE (no disk holds it, and SQLite's integers stop at 2**63 - 1). `what` is
    what the messages say was expected."""
    if isinstance(value, bool):
        raise ValueError(f"expected {what}")
    if isinstance(value, float):  # TOML's 1.5 or 1e9: bytes are whole
        if not value.is_integer():
            raise ValueError(f"{value!r} is not a whole number of bytes: write a size such as "
                             "\"1.5GiB\"")
        value = int(value)
    if isinstance(value, int):
        size = value
    elif isinstance(value, str):
        match = _SIZE.fullmatch(value)
        if not match or match.group(2).lower() not in _UNITS:
            raise ValueError(f"{value!r} is not {what}")
        # exact, unlike a float: "99999999999999999999999TiB" is not inf
        size = int(Decimal(match.group(1)) * _UNITS[match.group(2).lower()])
    else:
        raise ValueError(f"expected {what}")
    if size < 0:
        raise ValueError("a size cannot be negative")
    if size > MAX_SIZE:
        raise ValueError(f"{value!r} is more than {MAX_SIZE // 1000**4} TB, the largest size")
    return size


def human_size(size: int | None, *, exact: bool = False) -> str:
    """999 bytes, 1.2 kB, 34.5 MB, 3.0 TB; "unknown size" for None. With `exact`, a rounded
    figure is followed by the byte count: "1.0 MB (1048576 bytes)"."""
    if size is None:
        return "unknown size"
    if size < 1000:
        return "1 byte" if size == 1 else f"{size} bytes"
    value = float(size)
    for unit in _SHOWN:
        value /= 1000
        if value < 999.95 or unit == _SHOWN[-1]:
            shown = f"{value:.1f} {unit}"
            return f"{shown} ({size} bytes)" if exact else shown
    raise AssertionError("unreachable")
