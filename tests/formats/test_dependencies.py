"""pyproxy.formats.dependencies: which dependencies and which file a client would ask for."""

from __future__ import annotations

import io
import json
import zipfile
from pathlib import Path

import pytest
from packaging.specifiers import SpecifierSet

from pyproxy.formats.dependencies import MAX_METADATA, best_candidate, dependencies, wheel_metadata
from pyproxy.formats.linehaul import ClientEnvironment, client_environment
from pyproxy.model import DistFile, Origin, ProjectPage, normalize
from tests.dists import core_metadata, make_wheel


def agent(python: str = "3.11.7", system: str = "Linux", cpu: str = "x86_64", glibc: str | None = "2.36") -> str:
    data = {"python": python, "implementation": {"name": "CPython", "version": python},
            "system": {"name": system, "release": "6.1.0"}, "cpu": cpu}
    if glibc:
        data["distro"] = {"libc": {"lib": "glibc", "version": glibc}}
    return "pip/24.0 " + json.dumps(data)


def env(**kwargs: str | None) -> ClientEnvironment:
    found = client_environment(agent(**kwargs))  # type: ignore[arg-type]
    assert found is not None
    return found


LINUX = env()


def names(metadata: bytes, environment: ClientEnvironment | None = LINUX) -> dict[str, str]:
    return {d.name: str(d.specifier) for d in dependencies(metadata, environment)}


def test_unconditional_dependencies_with_their_specifiers() -> None:
    metadata = core_metadata("app", "1.0", requires_dist=["Lib_One>=1.0", "base", "lib-one<3"])
    assert names(metadata) == {"lib-one": "<3,>=1.0", "base": ""}


def test_markers_are_evaluated_for_the_client() -> None:
    metadata = core_metadata("app", "1.0", requires_dist=[
        'old ; python_version < "3.8"', 'new ; python_version >= "3.8"', 'win ; sys_platform == "win32"',
        'linux ; sys_platform == "linux" and platform_machine == "x86_64"', 'cpy ; implementation_name == "cpython"',
    ])
    assert set(names(metadata)) == {"new", "linux", "cpy"}
    windows = env(system="Windows", cpu="AMD64", glibc=None)
    assert set(names(metadata, windows)) == {"new", "win", "cpy"}


def test_extras_are_never_asked_for() -> None:
    metadata = core_metadata("app", "1.0", requires_dist=[
        'docs ; extra == "docs"', 'both ; python_version >= "3" and extra == "test"', 'notx ; extra != "x"',
    ])
    assert set(names(metadata)) == {"notx"}


def test_a_marker_on_what_the_client_did_not_state_is_left_out() -> None:
    metadata = core_metadata("app", "1.0", requires_dist=[
        'a ; platform_version == "#1 SMP"', 'b ; platform_version != "#1 SMP"',
        'c ; platform_version != "#1 SMP" or python_version >= "3"',
        'd ; python_version >= "3" and platform_machine == "x86_64"',
    ])
    assert set(names(metadata)) == {"d"}


def test_without_an_environment_only_unconditional_dependencies() -> None:
    metadata = core_metadata("app", "1.0", requires_dist=['plain', 'marked ; python_version >= "3"'])
    assert set(names(metadata, None)) == {"plain"}


def test_own_name_urls_and_garbage_are_left_out() -> None:
    metadata = core_metadata("My.App", "1.0", requires_dist=[
        "my-app[extra]", "direct @ https://example.com/direct-1.0.tar.gz", "not a requirement ][", "ok",
    ])
    assert set(names(metadata)) == {"ok"}
    assert dependencies(b"\xff\xfe garbage", LINUX) == []


# ---- best_candidate ----


def dist(filename: str, *, yanked: bool = False, requires_python: str | None = None,
         metadata: bool = True) -> DistFile:
    return DistFile(filename, {"sha256": "0" * 64}, yanked=yanked, requires_python=requires_python,
                    core_metadata=metadata, origin=Origin.UPSTREAM, upstream_url=f"http://u/{filename}")


def page(*files: DistFile) -> ProjectPage:
    return ProjectPage.build(normalize("lib"), files)


def pick(p: ProjectPage, specifier: str = "", environment: ClientEnvironment = LINUX) -> str | None:
    chosen = best_candidate(p, SpecifierSet(specifier), environment)
    return None if chosen is None else chosen.filename


def test_newest_admitted_not_yanked_python_ok() -> None:
    p = page(dist("lib-1.0-py3-none-any.whl"), dist("lib-2.0-py3-none-any.whl"),
             dist("lib-3.0-py3-none-any.whl", yanked=True), dist("lib-2.5-py3-none-any.whl", requires_python=">=3.12"),
             dist("lib-2.1-py3-none-any.whl", requires_python="not a specifier"))
    assert pick(p) == "lib-2.1-py3-none-any.whl"
    assert pick(p, "<2.1") == "lib-2.0-py3-none-any.whl"
    assert pick(p, ">=4") is None


def test_numbers_too_long_for_int_are_read_as_unreadable() -> None:
    huge = "9" * 5000  # an upstream page's: int() refuses more than 4300 digits
    p = page(dist("lib-1.0-py3-none-any.whl"), dist("lib-1.1-py3-none-any.whl", requires_python=f">={huge}"))
    assert pick(p) == "lib-1.1-py3-none-any.whl"  # as pip: a requires-python it cannot read is ignored


def test_prereleases_only_when_nothing_final_is_admitted() -> None:
    p = page(dist("lib-1.0-py3-none-any.whl"), dist("lib-2.0b1-py3-none-any.whl"))
    assert pick(p) == "lib-1.0-py3-none-any.whl"
    assert pick(p, ">1.0") == "lib-2.0b1-py3-none-any.whl"


def test_the_wheel_that_suits_the_client_best_else_the_sdist() -> None:
    files = (dist("lib-1.0.tar.gz"), dist("lib-1.0-py3-none-any.whl"),
             dist("lib-1.0-cp311-cp311-manylinux_2_17_x86_64.manylinux2014_x86_64.whl"),
             dist("lib-1.0-cp311-cp311-win_amd64.whl"), dist("lib-1.0-cp312-cp312-manylinux_2_17_x86_64.whl"))
    assert pick(page(*files)) == "lib-1.0-cp311-cp311-manylinux_2_17_x86_64.manylinux2014_x86_64.whl"
    windows = env(system="Windows", cpu="AMD64", glibc=None)
    assert pick(page(*files), environment=windows) == "lib-1.0-cp311-cp311-win_amd64.whl"
    assert pick(page(files[0], files[3])) == "lib-1.0.tar.gz"
    # a newer version without a file for the client is not picked (pip would not)
    newer = dist("lib-2.0-cp311-cp311-manylinux_2_40_x86_64.whl")
    assert pick(page(*files, newer)) == "lib-1.0-cp311-cp311-manylinux_2_17_x86_64.manylinux2014_x86_64.whl"


def test_unknown_platform_picks_nothing_it_cannot_be_sure_of() -> None:
    musl = env(glibc=None)
    platform_only = (dist("lib-1.0-py3-none-any.whl"), dist("lib-2.0-cp311-cp311-manylinux_2_17_x86_64.whl"))
    assert pick(page(*platform_only), environment=musl) is None  # 2.0 may well be what it takes
    assert pick(page(dist("lib-2.0-py3-none-any.whl"), platform_only[1]), environment=musl) == (
        "lib-2.0-py3-none-any.whl")


def test_build_tags_odd_sdists_and_broken_names() -> None:
    assert pick(page(dist("lib-1.0-1-py3-none-any.whl"))) == "lib-1.0-1-py3-none-any.whl"
    assert pick(page(dist("lib-1.0.zip"), dist("lib-2.0.tar.bz2"))) == "lib-1.0.zip"
    broken = (dist("lib-2.0-x-y.whl"), dist("lib-3.0-bad.tar.gz"), dist("lib-1.0-py3-none-any.whl"))
    assert pick(page(*broken)) == "lib-1.0-py3-none-any.whl"


def test_a_candidate_without_metadata_is_none() -> None:
    assert pick(page(dist("lib-1.0-py3-none-any.whl", metadata=False))) is None
    assert pick(page(dist("lib-1.0-py3.11.egg"), dist("notawheel.whl"))) is None


# ---- wheel_metadata ----


def test_wheel_metadata_reads_the_one_dist_info(tmp_path: Path) -> None:
    metadata = core_metadata("lib", "1.0", requires_dist=["base"])
    wheel = make_wheel(tmp_path, "lib", "1.0", metadata=metadata)
    assert wheel_metadata(str(wheel)) == metadata
    assert wheel_metadata(wheel.read_bytes()) == metadata


@pytest.mark.parametrize("members", [
    {"a-1.dist-info/METADATA": b"x", "b-1.dist-info/METADATA": b"y"},  # two: pip refuses it too
    {"nested/a-1.dist-info/METADATA": b"x"},
    {"a-1.dist-info/METADATA": b"x" * (MAX_METADATA + 1)},
])
def test_wheel_metadata_none_when_not_exactly_one_small_one(members: dict[str, bytes]) -> None:
    buffer = io.BytesIO()
    with zipfile.ZipFile(buffer, "w") as archive:
        for name, data in members.items():
            archive.writestr(name, data)
    assert wheel_metadata(buffer.getvalue()) is None


def test_not_a_zip_raises() -> None:
    with pytest.raises(zipfile.BadZipFile):
        wheel_metadata(b"not a zip")
