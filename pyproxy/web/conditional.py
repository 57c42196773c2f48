"""If-None-Match (RFC 9110 13.1.2), one rule for pages, the JSON API and files."""

from __future__ import annotations


def none_match(header: str | None, etag: str) -> bool:
    """True when the client's copy is current, so the answer is 304: If-None-Match is "*" (any
    current representation) or lists `etag`. The comparison is weak, as the RFC asks for this
    header: W/"x" matches "x"."""
    if not header:
        return False
    tags = [tag.strip() for tag in header.split(",")]
    wanted = etag.removeprefix("W/")
    return "*" in tags or any(tag.removeprefix("W/") == wanted for tag in tags)
