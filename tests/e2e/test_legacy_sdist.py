"""An sdist built by setuptools before 69.3 (`my-pkg-1.0.tar.gz`, not PEP 625's
`my_pkg-1.0.tar.gz`) goes up with twine and comes back down with pip, under the name it had.

The builder is a throwaway venv holding the setuptools that `python3.11 -m venv` ships
(ensurepip's bundled 65.5.0), made once per session; `build` itself comes from this test
environment through a .pth line placed after the venv's own site-packages.
"""

from __future__ import annotations

import ensurepip
import os
import sys
import sysconfig
import zipfile
from pathlib import Path

import pytest
from packaging.version import Version

from tests.e2e.clients import (
    describe,
    import_from_target,
    listed_filenames,
    pip_install,
    run,
    twine_upload,
)
from tests.e2e.conftest import ServerFactory

OLD_SETUPTOOLS = "65.5.0"


def _bundled_setuptools() -> Path | None:
    """ensurepip's own setuptools wheel when it is older than 69 (Python 3.11 ships 65.5.0)."""
    bundled = Path(ensurepip.__file__).parent / "_bundled"
    for wheel in sorted(bundled.glob("setuptools-*.whl")):
        if Version(wheel.name.split("-")[1]) < Version("69"):
            return wheel
    return None


@pytest.fixture(scope="session")
def old_setuptools_python(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """The python of a venv whose setuptools is older than 69."""
    venv = tmp_path_factory.mktemp("setuptools65") / "venv"
    run([sys.executable, "-m", "venv", "--without-pip", venv])
    python = venv / "bin" / "python"
    proc = run([python, "-c", "import sysconfig; print(sysconfig.get_path('purelib'))"])
    site = Path(proc.stdout.strip())
    wheel = _bundled_setuptools()
    if wheel is not None:
        with zipfile.ZipFile(wheel) as archive:  # a pure wheel: unpacking it installs it
            archive.extractall(site)
    else:  # a Python whose ensurepip has no setuptools: the configured package index has it
        run([sys.executable, "-m", "pip", "install", "--quiet", "--no-deps", "--target", site,
             f"setuptools=={OLD_SETUPTOOLS}"], env=dict(os.environ))
    # `build` and its dependencies from here, after the venv's own setuptools on sys.path
    (site / "zz_test_environment.pth").write_text(sysconfig.get_path("purelib") + "\n")
    proc = run([python, "-c", "import setuptools, build; print(setuptools.__version__)"])
    assert Version(proc.stdout.strip()) < Version("69"), describe(proc)
    return python


def test_twine_uploads_and_pip_installs_a_legacy_named_sdist(
    old_setuptools_python: Path, pyproxy_factory: ServerFactory, tmp_path: Path
) -> None:
    project = tmp_path / "my-pkg"
    (project / "my_pkg").mkdir(parents=True)
    (project / "my_pkg" / "__init__.py").write_text('VERSION = "1.0"\n')
    (project / "pyproject.toml").write_text(
        '[build-system]\nrequires = ["setuptools"]\nbuild-backend = "setuptools.build_meta"\n\n'
        '[project]\nname = "my-pkg"\nversion = "1.0"\n\n'
        '[tool.setuptools]\npackages = ["my_pkg"]\n'
    )
    run([old_setuptools_python, "-m", "build", "--sdist", "--no-isolation", "--outdir",
         tmp_path / "dist", project], cwd=project)
    (sdist,) = (tmp_path / "dist").iterdir()
    assert sdist.name == "my-pkg-1.0.tar.gz", "the builder is no longer an old setuptools"

    server = pyproxy_factory.start()
    assert server.user is not None and server.password is not None
    twine_upload(server.upload_url, [sdist], server.user, server.password)
    assert listed_filenames(server.simple_url, "my-pkg") == ["my-pkg-1.0.tar.gz"]

    target = tmp_path / "target"
    # the sdist is built again on install, by this environment's setuptools: no index needed
    pip_install(server.simple_url, "my-pkg==1.0", target=target,
                extra_args=["--no-build-isolation"])
    assert import_from_target(target, "my_pkg") == "1.0"
    assert server.requests("GET", r"^/files/my-pkg/my-pkg-1\.0\.tar\.gz$", 200, agent="pip/") == 1

