"""A page's file links made absolute, as `urljoin` then `urldefrag` would, but fast: a page of
thousands of files mostly links them from a few directories, so each distinct directory is
joined once and each file's last segment appended to it. A link whose last segment could mean
more than a name (`.`, `..`, a query, parameters) takes the full `urljoin`.

Parsing a large page (5,000 files) is on a cold install's critical path, and urljoin was a
third of it.
"""

from __future__ import annotations

from urllib.parse import unquote, urldefrag, urljoin, urlsplit

__all__ = ["Links", "filename_from_url"]

_SCHEMES = ("http", "https")


class Links:
    """Resolves the links of one page against its base URL."""

    def __init__(self, base_url: str) -> None:
        self.base_url = base_url
        self._dirs: dict[str, tuple[str, bool]] = {}  # href's directory -> (joined, http(s))

    def resolve(self, href: str) -> tuple[str, str] | None:
        """(absolute URL without fragment, fragment), or None when it is not an http(s) URL."""
        href = href.strip()
        link, hashmark, fragment = href.partition("#")
        head, slash, last = link.rpartition("/")
        # only a plain name after a directory: not "x://host", not "//host", no query anywhere
        if (not slash or last in ("", ".", "..") or head.endswith(("/", ":")) or not head
                or "?" in link or ";" in last):
            return _slow(self.base_url, href)
        known = self._dirs.get(head)
        if known is None:
            try:
                joined = urljoin(self.base_url, head + "/")
                known = (joined, urlsplit(joined).scheme in _SCHEMES and "#" not in joined)
            except ValueError:  # e.g. an invalid IPv6 literal in the host
                return None
            self._dirs[head] = known
        directory, usable = known
        if not usable:
            return _slow(self.base_url, href)
        return directory + last, fragment if hashmark else ""


def _slow(base_url: str, href: str) -> tuple[str, str] | None:
    try:
        absolute = urljoin(base_url, href)
        url, fragment = urldefrag(absolute)
        scheme = urlsplit(url).scheme
    except ValueError:
        return None
    # pyproxy will fetch this URL: never file:, data:, javascript: or other schemes
    if scheme not in _SCHEMES:
        return None
    return url, fragment


def filename_from_url(url: str) -> str:
    """The last path segment, percent-decoded, as pip and uv take it (validity unchecked)."""
    # scheme://host/...: the path's last segment is the URL's
    if "?" not in url and "#" not in url and url.count("/") >= 3:
        return unquote(url.rpartition("/")[2])
    return unquote(urlsplit(url).path.rpartition("/")[2])
