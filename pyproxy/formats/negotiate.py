"""Choosing the representation of a simple page from Accept and ?format= (PEP 691)."""

from __future__ import annotations

import enum
import re
from functools import lru_cache


class Format(enum.Enum):
    """A representation we can send, with its exact Content-Type header value."""

    JSON = "application/vnd.pypi.simple.v1+json"
    HTML_V1 = "application/vnd.pypi.simple.v1+html"
    HTML = "text/html"

    @property
    def content_type(self) -> str:
        # micropip 0.7 matches "text/html; charset=utf-8" exactly, and JSON with no parameters
        return "text/html; charset=utf-8" if self is Format.HTML else self.value

    @property
    def is_json(self) -> bool:
        return self is Format.JSON


# Types a client may name; "latest" resolves to v1 (PEP 691 requires the concrete type back).
_NAMED: dict[str, Format] = {
    "application/vnd.pypi.simple.v1+json": Format.JSON,
    "application/vnd.pypi.simple.latest+json": Format.JSON,
    "application/vnd.pypi.simple.v1+html": Format.HTML_V1,
    "application/vnd.pypi.simple.latest+html": Format.HTML_V1,
    "text/html": Format.HTML,
}
# On equal q the most expressive format wins (the spec's recommendation), HTML alias last.
_PREFERENCE = (Format.JSON, Format.HTML_V1, Format.HTML)
# With no Accept, or a bare */*, answer what the public index answers.
DEFAULT = Format.HTML
_QVALUE = re.compile(r"0(\.\d{0,3})?|1(\.0{0,3})?")


def _parse_accept(header: str) -> list[tuple[str, float]]:
    ranges: list[tuple[str, float]] = []
    for item in header.split(","):
        media, *params = (part.strip() for part in item.split(";"))
        if not media:
            continue
        quality = 1.0
        for param in params:
            key, _, value = param.partition("=")
            if key.strip().lower() == "q":
                # RFC 9110 qvalue; anything else (nan, inf, 1_0, 2) makes the range unusable
                value = value.strip()
                quality = float(value) if _QVALUE.fullmatch(value) else 0.0
        ranges.append((media.lower(), quality))
    return ranges


def _quality(fmt: Format, ranges: list[tuple[str, float]]) -> float:
    """The q of the most specific range matching fmt (RFC 9110 12.5.1), -1 if none matches."""
    best_specificity, quality = -1, -1.0
    main_type = fmt.value.split("/")[0]
    for media, q in ranges:
        if _NAMED.get(media) is fmt:
            specificity = 2
        elif media == f"{main_type}/*":
            specificity = 1
        elif media == "*/*":
            specificity = 0
        else:
            continue
        if specificity > best_specificity:
            best_specificity, quality = specificity, q
    return quality


# clients send a handful of distinct Accept headers: parse each once (bounded, they are theirs)
@lru_cache(maxsize=256)
def negotiate(accept: str | None, format_param: str | None = None) -> Format | None:
    """The format to send, or None when nothing acceptable exists (the caller answers 406).

    `?format=` names exactly one type and overrides Accept when we support it; an
    unsupported value falls back to Accept, as the spec allows.
    """
    if format_param:
        # an unencoded "+" in a query string arrives as a space
        chosen = _NAMED.get(format_param.strip().lower().replace(" ", "+"))
        if chosen is not None:
            return chosen
    if accept is None or not accept.strip():
        return DEFAULT
    ranges = _parse_accept(accept)
    if not ranges:
        return DEFAULT
    only_wildcard = all(media == "*/*" for media, _ in ranges)
    if only_wildcard and ranges[0][1] > 0:
        return DEFAULT
    scored = [(_quality(fmt, ranges), -rank, fmt) for rank, fmt in enumerate(_PREFERENCE)]
    quality, _, fmt = max(scored)
    return fmt if quality > 0 else None
