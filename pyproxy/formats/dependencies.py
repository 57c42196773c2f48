"""Which projects a release depends on for a client, and which of a project's files that client
would pick: for warming pages and `.metadata` ahead of it. Pure: no I/O.

A dependency is kept when its marker holds in the client's environment with no extra asked for
(a client never asks for an extra of a dependency through the index). A marker that reads a
variable the client did not state is undetermined and the dependency is left out; with no
environment at all, every dependency with a marker is left out. Leaving out costs the client
what it costs without warm-up; warming what it never asks for costs an upstream request.
"""

from __future__ import annotations

import io
import re
import zipfile
from collections.abc import Iterable
from dataclasses import dataclass
from functools import lru_cache

from packaging.markers import Marker
from packaging.metadata import parse_email
from packaging.requirements import InvalidRequirement, Requirement
from packaging.specifiers import SpecifierSet
from packaging.tags import Tag, parse_tag
from packaging.version import InvalidVersion, Version

from pyproxy.formats.linehaul import ClientEnvironment
from pyproxy.model import DistFile, NormalizedName, ProjectPage, normalize

__all__ = ["Dependency", "best_candidate", "dependencies", "wheel_metadata"]

MAX_METADATA = 1024 * 1024  # a METADATA file is a few kB; a bigger one is not read
_QUOTED = re.compile(r"\"[^\"]*\"|'[^']*'")
_WORD = re.compile(r"[a-z_]+")  # variables, and the words `and`, `or`, `in`, `not`
_KEYWORDS = frozenset({"and", "or", "in", "not"})


@dataclass(frozen=True, slots=True)
class Dependency:
    name: NormalizedName
    specifier: SpecifierSet


def wheel_metadata(archive: bytes | io.BufferedIOBase | str) -> bytes | None:
    """A wheel's `*.dist-info/METADATA` (the only one at its top), at most MAX_METADATA bytes;
    None when there is not exactly one or it is too big. Raises zipfile.BadZipFile, OSError."""
    with zipfile.ZipFile(archive if not isinstance(archive, bytes) else io.BytesIO(archive)) as z:
        found = [
            info for info in z.infolist()
            if info.filename.count("/") == 1 and info.filename.endswith(".dist-info/METADATA")
        ]
        if len(found) != 1 or found[0].file_size > MAX_METADATA:
            return None
        return z.read(found[0])


def _holds(marker: Marker, environment: ClientEnvironment | None) -> bool:
    """Whether the marker holds for the client with no extra; False when it reads a variable
    the client did not state."""
    stated = {} if environment is None else dict(environment.markers)
    stated["extra"] = ""
    read = set(_WORD.findall(_QUOTED.sub("", str(marker)))) - _KEYWORDS
    if not read <= stated.keys():
        return False
    try:
        return marker.evaluate(stated)
    except Exception:
        return False


def dependencies(metadata: bytes, environment: ClientEnvironment | None) -> list[Dependency]:
    """The projects `metadata`'s Requires-Dist names for the client, each once (their
    specifiers combined), in order, without the release's own name and direct URLs."""
    try:
        raw, _unparsed = parse_email(metadata)
    except Exception:
        return []
    own = normalize(raw.get("name", ""))
    found: dict[NormalizedName, SpecifierSet] = {}
    for line in raw.get("requires_dist") or ():
        try:
            requirement = Requirement(line)
        except InvalidRequirement:
            continue
        if requirement.url or (
            requirement.marker is not None and not _holds(requirement.marker, environment)
        ):
            continue
        name = normalize(requirement.name)
        if name == own:
            continue
        found[name] = found[name] & requirement.specifier if name in found else (
            requirement.specifier
        )
    return [Dependency(name, specifier) for name, specifier in found.items()]


@lru_cache(maxsize=1024)
def _python_ok(requires_python: str, python: Version) -> bool:
    try:
        return SpecifierSet(requires_python).contains(python, prereleases=True)
    except ValueError:  # InvalidSpecifier, or a number too long for int()
        return True  # pip ignores a requires-python it cannot read


@lru_cache(maxsize=8192)
def _version(text: str) -> Version | None:
    try:
        return Version(text)
    except ValueError:  # InvalidVersion, or a number too long for int()
        return None


@lru_cache(maxsize=1024)
def _tags(text: str) -> frozenset[Tag]:
    return parse_tag(text)


_UNSURE = -1  # a platform wheel for a client whose platform tags are not known


def _rank(filename: str, supported: dict[Tag, int], knows_platform: bool) -> int | None:
    """How much the client prefers the file (lower is better; sdists after every wheel),
    _UNSURE, or None if it cannot install it or the file is neither wheel nor sdist. For a
    file whose version could be read from its name (which for a wheel or an sdist means that
    parse_wheel_filename or parse_sdist_filename accepts it): a page has thousands."""
    if filename.endswith(".whl"):
        # the last three parts are the tags, with or without a build tag before them
        ranks = [supported[tag] for tag in _tags("-".join(filename[:-4].split("-")[-3:]))
                 if tag in supported]
        if ranks:
            return min(ranks)
        return None if knows_platform else _UNSURE
    return len(supported) if filename.endswith((".tar.gz", ".zip")) else None


def best_candidate(
    page: ProjectPage, specifier: SpecifierSet, environment: ClientEnvironment
) -> DistFile | None:
    """The file a client would pick under `specifier`: the newest version the specifier admits
    (prereleases only if it admits no final release) that has a file for the client, not
    yanked, whose requires-python the client meets; of that version, the wheel with the best
    tag, else the sdist. None if there is none, it offers no `.metadata`, or the client's
    platform is not known and that version has no file that surely suits it."""
    try:
        python = Version(environment.python_full_version)
    except InvalidVersion:
        return None
    supported = {tag: index for index, tag in enumerate(environment.supported_tags())}
    by_version: dict[Version, list[tuple[int, DistFile]]] = {}
    for dist in page.files:
        text = dist.version
        if dist.yanked or text is None or (version := _version(text)) is None or (
            dist.requires_python and not _python_ok(dist.requires_python, python)
        ):
            continue
        rank = _rank(dist.filename, supported, environment.knows_platform)
        if rank is None:
            continue
        by_version.setdefault(version, []).append((rank, dist))
    admitted: Iterable[Version] = specifier.filter(by_version)
    newest = max(admitted, default=None)
    if newest is None:
        return None
    suited = [pair for pair in by_version[newest] if pair[0] != _UNSURE]
    if not suited:
        return None
    chosen = min(suited, key=lambda pair: pair[0])[1]
    return chosen if chosen.core_metadata else None
