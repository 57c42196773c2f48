"""Reading pyproxy's access log back (both --log-format text and json), for tests.

text: `<time> INFO pyproxy.access: method=GET path=/simple/ status=200 ... agent="pip/25 (x)"`,
logfmt values, quoted as JSON strings when they hold a space, '"', '=' or '\\' (or are empty);
json: one object per line with "logger": "pyproxy.access" and the same keys.
"""

from __future__ import annotations

import json
import re
from typing import Any

FIELDS = ("method", "path", "status", "bytes", "duration_ms", "cache", "remote", "user", "agent")
_TEXT = re.compile(r" INFO pyproxy\.access: (?P<fields>method=.*)$")
_PAIR = re.compile(r'(\w+)=("(?:[^"\\]|\\.)*"|\S*)')


def parse_access_line(line: str) -> dict[str, Any] | None:
    """The fields of one access-log line, or None for any other line."""
    line = line.rstrip("\n")
    if line.startswith("{"):
        try:
            record = json.loads(line)
        except ValueError:
            return None
        if not isinstance(record, dict) or record.get("logger") != "pyproxy.access":
            return None
        return {**{key: record[key] for key in FIELDS}, "cut": record.get("cut")}
    match = _TEXT.search(line)
    if match is None:
        return None
    fields: dict[str, Any] = {"cut": None}  # only a body cut short says why
    for key, raw in _PAIR.findall(match["fields"]):
        value: Any = json.loads(raw) if raw.startswith('"') else raw
        if key in ("status", "bytes"):
            value = int(value)
        elif key == "duration_ms":
            value = float(value)
        elif key == "user" and value == "-":
            value = None
        fields[key] = value
    return fields


def access_records(text: str) -> list[dict[str, Any]]:
    return [record for line in text.splitlines() if (record := parse_access_line(line))]
