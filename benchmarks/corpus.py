"""The benchmark's input: a static simple index on disk, served as is by nginx and, with latency,
by the fake upstream.

Layout under the root: `files/<project>/<filename>` (real wheels and sdists) and
`simple/[<project>/]index.{html,json}` plus their `.gz` (for nginx's gzip_static). Pages link
files relatively (`../../files/...`), so the same tree works behind any origin. A file with a
`<filename>.metadata` beside it is listed with its core metadata (PEP 658/714): every wheel of
the projects pip and uv install has one, as on the public index (the fake upstream's
`--html-only` hides them).

The tree is built once per size set and reused while `corpus.json` says the same sizes.
"""

from __future__ import annotations

import gzip
import hashlib
import html
import json
import random
import shutil
import sys
import zipfile
from base64 import urlsafe_b64encode
from dataclasses import asdict, dataclass, field
from pathlib import Path

REPO = Path(__file__).resolve().parent.parent
if str(REPO) not in sys.path:
    sys.path.insert(0, str(REPO))

from tests.dists import make_sdist, make_wheel, underscored

FORMAT_VERSION = 3  # bump when the layout or the projects change
JSON_TYPE = "application/vnd.pypi.simple.v1+json"

SMALL = "bench-small"
HUGE = "bench-huge"
BIG = "bench-big"
APP = "bench-app"
STAMPEDE = "bench-stampede"
META = "bench-meta"  # one wheel with a ~3 KB `.metadata`: the warm small-file case
METADATA_SUFFIX = ".metadata"


@dataclass(frozen=True)
class Sizes:
    huge_files: int  # files on the "huge" page (half wheels, half sdists)
    big_bytes: int  # payload of the one big wheel
    cold_bytes: int  # payload of each cold-download wheel
    libs: int  # dependencies of bench-app (each a 10-file project)
    cold_reps: int  # never-seen projects, one per cold measurement

    @property
    def cold_projects(self) -> list[str]:
        return [f"bench-cold-{i}" for i in range(1, self.cold_reps + 1)]

    @property
    def lib_projects(self) -> list[str]:
        return [f"bench-lib-{i}" for i in range(1, self.libs + 1)]


FULL = Sizes(huge_files=5000, big_bytes=60 * 2**20, cold_bytes=8 * 2**20, libs=8, cold_reps=3)
QUICK = Sizes(huge_files=100, big_bytes=2 * 2**20, cold_bytes=256 * 2**10, libs=2, cold_reps=1)

# what the `pip install` measurement resolves: app -> libs + bench-small, and the huge page
PIP_REQUIREMENTS = [APP, HUGE]


@dataclass
class Corpus:
    root: Path
    sizes: Sizes
    big_filename: str = ""
    files: dict[str, list[str]] = field(default_factory=dict)  # project -> filenames

    @property
    def small_files(self) -> int:
        return len(self.files[SMALL])

    def only_file(self, project: str) -> str:
        (filename,) = self.files[project]
        return filename

    def metadata_file(self) -> Path:
        """The small warm file: the `.metadata` of bench-meta's wheel (as upstream has it)."""
        return self.root / "files" / META / (self.only_file(META) + METADATA_SUFFIX)


def build(root: Path, sizes: Sizes) -> Corpus:
    """The corpus under `root`, built now unless an identical one is already there."""
    stamp = root / "corpus.json"
    wanted = {"format": FORMAT_VERSION, "sizes": asdict(sizes)}
    if stamp.exists():
        saved = json.loads(stamp.read_text())
        if {k: saved.get(k) for k in wanted} == wanted:
            return Corpus(root, sizes, saved["big_filename"], saved["files"])
    # build beside, then swap: an interrupted build never looks complete
    partial = root.with_name(root.name + ".partial")
    shutil.rmtree(partial, ignore_errors=True)
    corpus = _write(partial, sizes)
    (partial / "corpus.json").write_text(
        json.dumps({**wanted, "big_filename": corpus.big_filename, "files": corpus.files})
    )
    shutil.rmtree(root, ignore_errors=True)
    partial.rename(root)
    corpus.root = root
    return corpus


def _write(root: Path, sizes: Sizes) -> Corpus:
    files = root / "files"

    def project_dir(name: str) -> Path:
        return files / name

    for i in range(5):  # 10 files: 5 versions, wheel + sdist
        _pair(project_dir(SMALL), SMALL, f"1.{i}")
    for i in range(sizes.huge_files // 2):
        _pair(project_dir(HUGE), HUGE, f"{i // 100}.{i % 100}")
    for lib in sizes.lib_projects:
        for i in range(5):
            _pair(project_dir(lib), lib, f"2.{i}")
    _with_metadata(make_wheel(project_dir(APP), APP, "1.0",
                              requires_dist=[*sizes.lib_projects, SMALL]))
    make_sdist(project_dir(APP), APP, "1.0", requires_dist=[*sizes.lib_projects, SMALL])
    big = payload_wheel(project_dir(BIG), BIG, "1.0", sizes.big_bytes)
    for name in [*sizes.cold_projects, STAMPEDE]:
        payload_wheel(project_dir(name), name, "1.0", sizes.cold_bytes)
    _metadata_wheel(project_dir(META), META, "1.0")

    listing: dict[str, list[str]] = {}
    for directory in sorted(files.iterdir()):
        listing[directory.name] = sorted(
            p.name for p in directory.iterdir() if not p.name.endswith(METADATA_SUFFIX)
        )
        _project_pages(root, directory.name, [directory / n for n in listing[directory.name]])
    _root_pages(root, list(listing))
    return Corpus(root, sizes, big.name, listing)


def _pair(directory: Path, name: str, version: str) -> None:
    _with_metadata(make_wheel(directory, name, version))
    make_sdist(directory, name, version)


def _with_metadata(wheel: Path) -> Path:
    """The wheel's METADATA beside it as `<wheel>.metadata`, byte for byte."""
    name, version = wheel.name.split("-")[:2]
    with zipfile.ZipFile(wheel) as archive:
        metadata = archive.read(f"{name}-{version}.dist-info/METADATA")
    (wheel.parent / (wheel.name + METADATA_SUFFIX)).write_bytes(metadata)
    return wheel


def _metadata_wheel(directory: Path, name: str, version: str) -> Path:
    """A wheel whose METADATA (also beside it as `<wheel>.metadata`) is ~3 KB, the size of a
    typical project's: a summary, classifiers, dependencies with markers, a short description."""
    classifiers = [f"Classifier: Topic :: Software Development :: Libraries :: Part {i}"
                   for i in range(24)]
    requirements = [f"Requires-Dist: dependency-{i}>=1.{i}; python_version >= '3.{i % 4 + 9}'"
                    for i in range(12)]
    description = "\n".join(f"Line {i} of a long description." for i in range(20))
    extra = "\n".join([*classifiers, *requirements, "Description-Content-Type: text/plain", "",
                       description])
    return _with_metadata(make_wheel(directory, name, version, extra_metadata=extra))


def payload_wheel(directory: Path, name: str, version: str, size: int) -> Path:
    """A valid wheel carrying `size` incompressible bytes (stored, not deflated), written in
    chunks: the benchmark stands for real large binary wheels."""
    directory.mkdir(parents=True, exist_ok=True)
    stem = underscored(name)
    path = directory / f"{stem}-{version}-py3-none-any.whl"
    info = f"{stem}-{version}.dist-info"
    rng = random.Random(name)
    block = rng.randbytes(1 << 20)
    record: list[str] = []
    with zipfile.ZipFile(path, "w") as archive:
        members = {
            f"{stem}/__init__.py": f'VERSION = "{version}"\n'.encode(),
            f"{info}/METADATA": (
                f"Metadata-Version: 2.1\nName: {name}\nVersion: {version}\n".encode()
            ),
            f"{info}/WHEEL": b"Wheel-Version: 1.0\nGenerator: benchmarks\nRoot-Is-Purelib: true\n"
            b"Tag: py3-none-any\n",
        }
        for member, data in members.items():
            archive.writestr(_zinfo(member), data)
            record.append(_record_line(member, hashlib.sha256(data).digest(), len(data)))
        member = f"{stem}/payload.bin"
        digest = hashlib.sha256()
        with archive.open(_zinfo(member, stored=True), "w", force_zip64=True) as out:
            for index, offset in enumerate(range(0, size, len(block))):
                chunk = (index.to_bytes(8, "big") + block[8:])[: size - offset]
                digest.update(chunk)
                out.write(chunk)
        record.append(_record_line(member, digest.digest(), size))
        record.append(f"{info}/RECORD,,")
        archive.writestr(_zinfo(f"{info}/RECORD"), "\n".join(record) + "\n")
    return path


def _zinfo(member: str, *, stored: bool = False) -> zipfile.ZipInfo:
    info = zipfile.ZipInfo(member, date_time=(1980, 1, 1, 0, 0, 0))
    info.compress_type = zipfile.ZIP_STORED if stored else zipfile.ZIP_DEFLATED
    info.external_attr = 0o644 << 16
    return info


def _record_line(member: str, digest: bytes, size: int) -> str:
    return f"{member},sha256={urlsafe_b64encode(digest).rstrip(b'=').decode()},{size}"


def _sha256(path: Path) -> str:
    digest = hashlib.sha256()
    with path.open("rb") as f:
        while chunk := f.read(1 << 20):
            digest.update(chunk)
    return digest.hexdigest()


def _version(filename: str) -> str:
    if filename.endswith(".whl"):
        return filename.split("-")[1]
    return filename[: -len(".tar.gz")].rsplit("-", 1)[1]


def _project_pages(root: Path, project: str, paths: list[Path]) -> None:
    entries: list[dict] = []
    for p in paths:
        entry = {
            "filename": p.name,
            "url": f"../../files/{project}/{p.name}",
            "hashes": {"sha256": _sha256(p)},
            "size": p.stat().st_size,
        }
        metadata = p.with_name(p.name + METADATA_SUFFIX)
        if metadata.exists():  # PEP 714's key, and PEP 658's for older clients
            entry["core-metadata"] = entry["dist-info-metadata"] = {"sha256": _sha256(metadata)}
        entries.append(entry)
    versions = sorted({_version(p.name) for p in paths}, key=_version_key)
    document = {"meta": {"api-version": "1.1"}, "name": project, "files": entries,
                "versions": versions}
    anchors = "".join(
        f'    <a href="{html.escape(e["url"])}#sha256={e["hashes"]["sha256"]}"{_metadata_attrs(e)}>'
        f'{html.escape(e["filename"])}</a><br/>\n'
        for e in entries
    )
    _write_page(root / "simple" / project, f"Links for {project}", anchors, document)


def _metadata_attrs(entry: dict) -> str:
    if "core-metadata" not in entry:
        return ""
    value = f'sha256={entry["core-metadata"]["sha256"]}'
    return f' data-core-metadata="{value}" data-dist-info-metadata="{value}"'


def _version_key(version: str) -> tuple[int, ...]:
    return tuple(int(part) for part in version.split("."))


def _root_pages(root: Path, projects: list[str]) -> None:
    document = {"meta": {"api-version": "1.1"}, "projects": [{"name": p} for p in projects]}
    anchors = "".join(f'    <a href="{p}/">{p}</a><br/>\n' for p in projects)
    _write_page(root / "simple", "Simple index", anchors, document)


def _write_page(directory: Path, title: str, anchors: str, document: dict) -> None:
    directory.mkdir(parents=True, exist_ok=True)
    page = (
        '<!DOCTYPE html>\n<html>\n  <head>\n    <meta name="pypi:repository-version" '
        f'content="1.1">\n    <title>{html.escape(title)}</title>\n  </head>\n  <body>\n'
        f"    <h1>{html.escape(title)}</h1>\n{anchors}  </body>\n</html>\n"
    ).encode()
    for name, data in (("index.html", page), ("index.json", json.dumps(document).encode())):
        (directory / name).write_bytes(data)
        (directory / (name + ".gz")).write_bytes(gzip.compress(data, 6, mtime=0))
