"""Write real wheels and sdists for tests, without network or build backends.

Output is deterministic: the same arguments give byte-identical files (fixed timestamps, sorted
members), so a test can build a file twice to model an identical re-upload.

Wheels are complete: `pip install --no-index --find-links DIR name` then `import name_with_underscores`
works. Sdists are made mostly for upload tests: they carry a `pyproject.toml` naming the setuptools
backend, so `pip install` can build one offline only with `--no-build-isolation` and setuptools
installed in the environment (it is in the test extra).
"""

from __future__ import annotations

import base64
import gzip
import hashlib
import io
import re
import tarfile
import zipfile
from collections.abc import Collection, Mapping, Sequence
from pathlib import Path

from packaging.metadata import parse_email
from packaging.utils import canonicalize_name
from packaging.version import InvalidVersion, Version

__all__ = ["core_metadata", "form_fields_for", "make_sdist", "make_wheel", "underscored"]

_ZIP_EPOCH = (1980, 1, 1, 0, 0, 0)
_TAR_MTIME = 315532800  # 1980-01-01, same instant as the zip epoch


def underscored(name: str) -> str:
    """The PEP 503 normalised name with '-' as '_', as in dist-info dirs and PEP 625 sdist names."""
    return canonicalize_name(name).replace("-", "_")


def core_metadata(
    name: str,
    version: str,
    *,
    requires_dist: Sequence[str] = (),
    requires_python: str | None = None,
    summary: str | None = "A test package",
    metadata_version: str = "2.1",
    extra_metadata: str = "",
) -> bytes:
    """METADATA / PKG-INFO text in the core metadata email format."""
    lines = [f"Metadata-Version: {metadata_version}", f"Name: {name}", f"Version: {version}"]
    if summary is not None:
        lines.append(f"Summary: {summary}")
    if requires_python is not None:
        lines.append(f"Requires-Python: {requires_python}")
    lines.extend(f"Requires-Dist: {req}" for req in requires_dist)
    text = "\n".join(lines) + "\n"
    if extra_metadata:
        text += extra_metadata if extra_metadata.endswith("\n") else extra_metadata + "\n"
    return text.encode("utf-8")


def _record_line(member: str, data: bytes) -> str:
    digest = base64.urlsafe_b64encode(hashlib.sha256(data).digest()).rstrip(b"=").decode()
    return f"{member},sha256={digest},{len(data)}"


def _zip_write(archive: zipfile.ZipFile, member: str, data: bytes) -> None:
    info = zipfile.ZipInfo(member, date_time=_ZIP_EPOCH)
    info.compress_type = zipfile.ZIP_DEFLATED
    info.external_attr = 0o644 << 16
    archive.writestr(info, data)


def make_wheel(
    directory: Path,
    name: str,
    version: str,
    *,
    requires_dist: Sequence[str] = (),
    requires_python: str | None = None,
    summary: str = "A test package",
    metadata_version: str = "2.1",
    extra_metadata: str = "",
    modules: Mapping[str, str] | None = None,
    python_tag: str = "py3",
    abi_tag: str = "none",
    platform_tag: str = "any",
    metadata: bytes | None = None,
    omit: Collection[str] = (),
    filename: str | None = None,
    dist_info: str | None = None,
    extra_members: Mapping[str, bytes] | None = None,
) -> Path:
    """Write a wheel into `directory` and return its path.

    `modules` maps member paths to text (default: one package `{underscored}/__init__.py` holding
    `VERSION`). `metadata` replaces the whole METADATA. `omit` names dist-info members to leave out
    ("METADATA", "WHEEL", "RECORD"). `filename` and `dist_info` (the `.dist-info` directory stem)
    override the names derived from `name`/`version`, for mismatch tests; `extra_members` are added
    verbatim (after RECORD, not listed in it), e.g. for path-traversal tests.
    """
    directory.mkdir(parents=True, exist_ok=True)
    stem = underscored(name)
    if filename is None:
        as_given = name.replace("-", "_").replace(".", "_")
        filename = f"{as_given}-{version}-{python_tag}-{abi_tag}-{platform_tag}.whl"
    info_dir = f"{dist_info or f'{stem}-{version}'}.dist-info"
    if modules is None:
        modules = {f"{stem}/__init__.py": f'VERSION = "{version}"\n'}
    if metadata is None:
        metadata = core_metadata(
            name,
            version,
            requires_dist=requires_dist,
            requires_python=requires_python,
            summary=summary,
            metadata_version=metadata_version,
            extra_metadata=extra_metadata,
        )
    wheel_file = (
        "Wheel-Version: 1.0\n"
        "Generator: tests.dists\n"
        "Root-Is-Purelib: true\n"
        f"Tag: {python_tag}-{abi_tag}-{platform_tag}\n"
    ).encode()

    members: dict[str, bytes] = {path: text.encode() for path, text in modules.items()}
    if "METADATA" not in omit:
        members[f"{info_dir}/METADATA"] = metadata
    if "WHEEL" not in omit:
        members[f"{info_dir}/WHEEL"] = wheel_file
    record_name = f"{info_dir}/RECORD"
    record = "".join(_record_line(m, d) + "\n" for m, d in members.items()) + f"{record_name},,\n"

    path = directory / filename
    with zipfile.ZipFile(path, "w") as archive:
        for member, data in members.items():
            _zip_write(archive, member, data)
        if "RECORD" not in omit:
            _zip_write(archive, record_name, record.encode())
        for member, data in (extra_members or {}).items():
            _zip_write(archive, member, data)
    return path


def make_sdist(
    directory: Path,
    name: str,
    version: str,
    *,
    requires_dist: Sequence[str] = (),
    requires_python: str | None = None,
    summary: str = "A test package",
    metadata_version: str = "2.1",
    extra_metadata: str = "",
    pkg_info: bytes | None = None,
    top_level: str | None = None,
    omit_pkg_info: bool = False,
    extra_members: Mapping[str, bytes] | None = None,
    filename: str | None = None,
) -> Path:
    """Write a `.tar.gz` sdist into `directory` and return its path.

    One top-level directory `{underscored}-{version}/` (or `top_level`) holds PKG-INFO (unless
    `omit_pkg_info`, or replaced whole by `pkg_info`), a setuptools `pyproject.toml` and the package.
    `extra_members` map archive paths (relative to the archive root, not the top-level dir) to bytes.
    `filename` overrides the PEP 625 name `{underscored}-{version}.tar.gz`.
    """
    directory.mkdir(parents=True, exist_ok=True)
    stem = underscored(name)
    top = top_level if top_level is not None else f"{stem}-{version}"
    if pkg_info is None:
        pkg_info = core_metadata(
            name,
            version,
            requires_dist=requires_dist,
            requires_python=requires_python,
            summary=summary,
            metadata_version=metadata_version,
            extra_metadata=extra_metadata,
        )
    dependencies = ", ".join(f'"{req}"' for req in requires_dist)
    pyproject = (
        '[build-system]\nrequires = ["setuptools>=68"]\nbuild-backend = "setuptools.build_meta"\n\n'
        f'[project]\nname = "{name}"\nversion = "{version}"\ndependencies = [{dependencies}]\n'
        + (f'requires-python = "{requires_python}"\n' if requires_python else "")
    ).encode()
    members: dict[str, bytes] = {
        f"{top}/pyproject.toml": pyproject,
        f"{top}/{stem}/__init__.py": f'VERSION = "{version}"\n'.encode(),
    }
    if not omit_pkg_info:
        members[f"{top}/PKG-INFO"] = pkg_info
    members.update(extra_members or {})

    buffer = io.BytesIO()
    with tarfile.open(fileobj=buffer, mode="w", format=tarfile.PAX_FORMAT) as archive:
        for member in sorted(members):
            data = members[member]
            info = tarfile.TarInfo(member)
            info.size = len(data)
            info.mtime = _TAR_MTIME
            info.mode = 0o644
            archive.addfile(info, io.BytesIO(data))
    path = directory / (filename or f"{stem}-{version}.tar.gz")
    # mtime=0 in the gzip header keeps the bytes reproducible
    path.write_bytes(gzip.compress(buffer.getvalue(), mtime=0))
    return path


# RawMetadata key -> upload form field, as twine's _RAW_TO_PACKAGE_METADATA
_FORM_NAMES = {
    "platforms": "platform",
    "supported_platforms": "supported_platform",
    "license_files": "license_file",
}


def _read_core_metadata(path: Path) -> bytes:
    if path.name.endswith(".whl"):
        with zipfile.ZipFile(path) as archive:
            for member in archive.namelist():
                parts = member.split("/")
                if len(parts) == 2 and parts[0].endswith(".dist-info") and parts[1] == "METADATA":
                    return archive.read(member)
        raise ValueError(f"{path.name}: no METADATA")
    with tarfile.open(path, "r:gz") as archive:
        for info in archive.getmembers():
            parts = info.name.split("/")
            if len(parts) == 2 and parts[1] == "PKG-INFO" and info.isfile():
                extracted = archive.extractfile(info)
                assert extracted is not None
                return extracted.read()
    raise ValueError(f"{path.name}: no PKG-INFO")


def form_fields_for(path: Path) -> dict[str, list[str]]:
    """The multipart fields (except `content`) that twine would send when uploading `path`."""
    raw, _unparsed = parse_email(_read_core_metadata(path))
    if _older_than_2_4(raw.get("metadata_version", "0")):  # twine drops License-File below 2.4
        raw.pop("license_files", None)
    fields: dict[str, list[str]] = {}
    for key, value in raw.items():
        form_key = _FORM_NAMES.get(key, key)
        if key == "project_urls":
            assert isinstance(value, dict)
            fields[form_key] = [f"{label}, {url}" for label, url in value.items()]
        elif key == "keywords":
            assert isinstance(value, list)
            fields[form_key] = [", ".join(value)]
        elif isinstance(value, list):
            fields[form_key] = [str(item) for item in value]
        else:
            fields[form_key] = [str(value)]
    if "name" in fields:
        fields["name"] = [_safe_name(fields["name"][0])]
    if path.name.endswith(".whl"):
        filetype = "bdist_wheel"
        parts = path.name[: -len(".whl")].split("-")
        pyversion = parts[-3] if len(parts) >= 5 else "any"
    else:
        filetype, pyversion = "sdist", "source"
    content = path.read_bytes()
    fields["pyversion"] = [pyversion]
    fields["filetype"] = [filetype]
    fields["sha256_digest"] = [hashlib.sha256(content).hexdigest()]
    fields["blake2_256_digest"] = [hashlib.blake2b(content, digest_size=32).hexdigest()]
    fields[":action"] = ["file_upload"]
    fields["protocol_version"] = ["1"]
    return fields


def _older_than_2_4(metadata_version: str) -> bool:
    try:
        return Version(metadata_version) < Version("2.4")
    except InvalidVersion:
        return True


def _safe_name(name: str) -> str:
    # twine's _safe_name (from pkg_resources): runs of other characters become one '-'
    return re.sub("[^A-Za-z0-9.]+", "-", name)
