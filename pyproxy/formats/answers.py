"""What every upstream simple-index answer is checked for, page or project list: its media
type, its api-version, the JSON types of its members, and the errors that make it untrustworthy
as a whole (formats/parse.py's policy)."""

from __future__ import annotations

import re
from typing import Any

__all__ = [
    "HTML_TYPES",
    "JSON_TYPE",
    "NULL",
    "Emptied",
    "NotASimplePage",
    "UpstreamFormatError",
    "check_api_version",
    "expect_json",
    "json_type",
    "split_content_type",
]

JSON_TYPE = "application/vnd.pypi.simple.v1+json"
HTML_TYPES = frozenset({"text/html", "application/vnd.pypi.simple.v1+html"})

_API_VERSION = re.compile(r"\s*(\d+)\.(\d+)\s*")


class UpstreamFormatError(Exception):
    """A malformed upstream answer; the message is one line and says what was wrong."""


class Emptied(UpstreamFormatError):
    """An answer that lists nothing where the copy listed something (a page's files, the
    list's projects) and upstream does not say why."""


class NotASimplePage(UpstreamFormatError):
    """An HTML answer that parses, but has nothing of a simple page about it."""


def split_content_type(content_type: str | None) -> tuple[str, str | None]:
    """(media type, charset parameter); raises unless it is one of the three simple-API types."""
    if not content_type or not content_type.strip():
        raise UpstreamFormatError("upstream answer has no Content-Type")
    media_type, *params = content_type.split(";")
    media_type = media_type.strip().lower()
    if media_type != JSON_TYPE and media_type not in HTML_TYPES:
        raise UpstreamFormatError(f"unsupported upstream Content-Type {media_type!r}")
    charset = None
    for param in params:
        key, _, value = param.partition("=")
        if key.strip().lower() == "charset":
            charset = value.strip().strip('"').strip() or None
    return media_type, charset


def check_api_version(version: object, where: str) -> None:
    # PEP 629: a missing version means 1.0; a newer minor is compatible, a newer major is not
    if version is None:
        return
    if not isinstance(version, str) or not (match := _API_VERSION.fullmatch(version)):
        raise UpstreamFormatError(f"{where} is not Major.Minor: {version!r}")
    if match.group(1) != "1":
        raise UpstreamFormatError(f"unsupported upstream api-version {version.strip()!r}")



# -- JSON types ---------------------------------------------------------------------------------


NULL = type(None)


def json_type(value: object) -> str:
    names = {dict: "object", list: "array", str: "string", bool: "boolean", NULL: "null"}
    return names.get(type(value), "number")


def expect_json(value: object, kinds: tuple[type, ...], where: str) -> Any:
    """`value` if it has one of these JSON types, else UpstreamFormatError naming `where`."""
    # bool is an int subclass: a JSON true must not pass as a size
    if not isinstance(value, kinds) or (type(value) is bool and bool not in kinds):
        raise UpstreamFormatError(f"{where} is a {json_type(value)}, which is not allowed there")
    return value
