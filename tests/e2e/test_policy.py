"""End to end: `[policy]` (cooldown, cutoff, exempt, deny, allow_only, missing upload times)
with real pip and uv against `pyproxy serve` and a fake upstream whose files were uploaded at
times relative to now; and upload times passed through exactly.

One server per configuration, shared by the module's tests: "cooldown" (min_age with exempt
and deny), "curated" (not_after with allow_only), and one per missing_upload_time mode in front
of an HTML-only upstream.
"""

from __future__ import annotations

import json
import sys
import uuid
import zipfile
from collections.abc import Callable
from datetime import UTC, datetime, timedelta
from pathlib import Path
from urllib.parse import quote

import pytest

from pyproxy.datadir import DataDir
from pyproxy.policy import format_moment
from pyproxy.stores.first_seen import FirstSeenStore
from tests.dists import make_sdist, make_wheel
from tests.e2e.clients import (
    SIMPLE_HTML,
    SIMPLE_JSON,
    describe,
    file_entries,
    get,
    installed,
    output,
    pip_install,
    run,
    uv_pip_install,
)
from tests.e2e.conftest import FakeFactory, PyproxyServer, ServerFactory
from tests.fake_upstream import FakeUpstream

RUN = uuid.uuid4().hex[:6]
NOW = datetime.now(UTC).replace(microsecond=123456)
DAY = timedelta(days=1)


def pname(stem: str) -> str:
    return f"po-{stem}-{RUN}"


A, B, C, D, E = (pname(s) for s in ("aged", "named", "pinned", "denied", "ranged"))
F, G, H = (pname(s) for s in ("cutoff", "unlisted", "listed"))
X = pname("undated")

# project -> (version, age) of its wheels
DATED = {
    A: [("1.0", 30), ("2.0", 10), ("3.0", 1)],  # min_age 7d: 2.0
    B: [("1.0", 30), ("2.0", 1)],  # exempt by name: 2.0
    C: [("1.0", 30), ("2.0", 2), ("3.0", 1)],  # exempt ==2.0: 2.0
    D: [("1.0", 30)],  # denied by name
    E: [("1.0", 30), ("2.0", 20)],  # deny <2
    F: [("1.0", 20), ("2.0", 8)],  # not_after 10 days ago: 1.0
    G: [("1.0", 30)],  # not in allow_only
    H: [("1.0", 30)],  # in allow_only
}


def wheel_name(project: str, version: str) -> str:
    return f"{project.replace('-', '_')}-{version}-py3-none-any.whl"


def uploaded(project: str, version: str) -> datetime:
    return NOW - dict(DATED[project])[version] * DAY


def _publish(fake: FakeUpstream, directory: Path, project: str, version: str,
             upload_time: datetime | None) -> None:
    wheel = make_wheel(directory, project, version, filename=wheel_name(project, version))
    with zipfile.ZipFile(wheel) as archive:
        member = next(n for n in archive.namelist() if n.endswith(".dist-info/METADATA"))
        metadata = archive.read(member)
    fake.add_file(project, wheel.name, wheel.read_bytes(), metadata=metadata,
                  upload_time=upload_time)


@pytest.fixture(scope="module")
def dated(module_fake_factory: FakeFactory, tmp_path_factory: pytest.TempPathFactory
          ) -> FakeUpstream:
    fake = module_fake_factory("json")
    directory = tmp_path_factory.mktemp("dists")
    for project, releases in DATED.items():
        for version, _age in releases:
            _publish(fake, directory, project, version, uploaded(project, version))
    return fake


@pytest.fixture(scope="module")
def undated(module_fake_factory: FakeFactory, tmp_path_factory: pytest.TempPathFactory
            ) -> FakeUpstream:
    fake = module_fake_factory("html")  # HTML carries no upload time
    directory = tmp_path_factory.mktemp("undated")
    for version in ("1.0", "2.0"):
        _publish(fake, directory, X, version, None)
    return fake


Start = Callable[..., PyproxyServer]


@pytest.fixture(scope="module")
def start(module_pyproxy_factory: ServerFactory, tmp_path_factory: pytest.TempPathFactory
          ) -> Start:
    def start(fake: FakeUpstream, policy: str, *, data_dir: Path | None = None) -> PyproxyServer:
        config = tmp_path_factory.mktemp("config") / "pyproxy.toml"
        config.write_text(f"[policy]\n{policy}\n")
        return module_pyproxy_factory.start(
            data_dir, user=None, extra_args=["--upstream", fake.index_url, "--config", str(config)]
        )

    return start


@pytest.fixture(scope="module")
def cooldown(start: Start, dated: FakeUpstream) -> PyproxyServer:
    return start(dated, f'min_age = "7d"\nexempt = ["{B}", "{C}==2.0"]\n'
                        f'deny = ["{D}", "{E}<2"]\n')


@pytest.fixture(scope="module")
def curated(start: Start, dated: FakeUpstream) -> PyproxyServer:
    cutoff = format_moment(NOW - 10 * DAY)
    return start(dated, f'not_after = "{cutoff}"\nallow_only = ["{F}", "{H}"]\n')


def file_url(server: PyproxyServer, project: str, filename: str) -> str:
    return f"{server.url}/files/{project}/{quote(filename)}"


def refused(server: PyproxyServer, project: str, filename: str) -> str:
    """The 403 message of a held-back file; its .metadata must answer the same way."""
    answer = get(file_url(server, project, filename))
    assert answer.status == 403, answer
    metadata = get(file_url(server, project, filename) + ".metadata")
    assert metadata.status == 403, metadata
    assert metadata.body == answer.body.replace(filename, filename + ".metadata", 1)
    return answer.body.strip()


# ---- the cooldown: min_age, exempt, deny ----


def test_pip_and_uv_install_the_newest_release_old_enough(cooldown: PyproxyServer,
                                                          tmp_path: Path) -> None:
    expected = {A.replace("-", "_"): "2.0", B.replace("-", "_"): "2.0",
                C.replace("-", "_"): "2.0", E.replace("-", "_"): "2.0"}
    pip_install(cooldown.simple_url, A, B, C, E, target=tmp_path / "pip")
    assert installed(tmp_path / "pip") == expected
    uv_pip_install(cooldown.simple_url, A, B, C, E, target=tmp_path / "uv")
    assert installed(tmp_path / "uv") == expected


def test_a_held_back_file_answers_403_with_its_release_time(cooldown: PyproxyServer) -> None:
    message = refused(cooldown, A, wheel_name(A, "3.0"))
    assert message == (
        f'Forbidden: {wheel_name(A, "3.0")} is held back by [policy] min_age = "7d": uploaded'
        f' {format_moment(uploaded(A, "3.0"))}; available from'
        f' {format_moment(uploaded(A, "3.0") + 7 * DAY)}'
    )
    # one page for every client: HTML, JSON and its versions, the legacy JSON API, the web page
    entries = file_entries(cooldown.simple_url, A)
    assert sorted(entries) == [wheel_name(A, "1.0"), wheel_name(A, "2.0")]
    page = json.loads(get(f"{cooldown.simple_url}{A}/", accept=SIMPLE_JSON).body)
    assert page["versions"] == ["1.0", "2.0"]
    html = get(f"{cooldown.simple_url}{A}/", accept=SIMPLE_HTML).body
    assert wheel_name(A, "2.0") in html and wheel_name(A, "3.0") not in html
    legacy = json.loads(get(f"{cooldown.url}/pypi/{A}/json").body)
    assert legacy["info"]["version"] == "2.0" and sorted(legacy["releases"]) == ["1.0", "2.0"]
    assert get(f"{cooldown.url}/pypi/{A}/3.0/json").status == 404
    web_page = get(f"{cooldown.url}/project/{A}/").body
    assert wheel_name(A, "2.0") in web_page and wheel_name(A, "3.0") not in web_page
    # an exempt release is served; the one after it is not
    assert get(file_url(cooldown, C, wheel_name(C, "2.0"))).status == 200
    assert "min_age" in refused(cooldown, C, wheel_name(C, "3.0"))


def test_deny_hides_files_with_pip_and_uv(cooldown: PyproxyServer, tmp_path: Path) -> None:
    proc = pip_install(cooldown.simple_url, D, target=tmp_path / "pip", check=False)
    assert proc.returncode != 0 and "No matching distribution" in output(proc), describe(proc)
    proc = uv_pip_install(cooldown.simple_url, f"{E}<2", target=tmp_path / "uv", check=False)
    assert proc.returncode != 0 and f"{E}<2" in output(proc), describe(proc)
    assert refused(cooldown, D, wheel_name(D, "1.0")) == (
        f'Forbidden: {wheel_name(D, "1.0")} is held back by [policy] deny "{D}"; not available'
        " while that rule stands"
    )
    assert f'deny "{E}<2"' in refused(cooldown, E, wheel_name(E, "1.0"))
    page = get(f"{cooldown.simple_url}{D}/", accept=SIMPLE_JSON)
    assert page.status == 200 and json.loads(page.body)["files"] == []  # no fall-through


def test_uv_exclude_newer_and_pip_uploaded_prior_to_still_work(cooldown: PyproxyServer,
                                                               tmp_path: Path) -> None:
    before = (NOW - 20 * DAY).strftime("%Y-%m-%dT%H:%M:%SZ")  # only A 1.0 is older
    uv_pip_install(cooldown.simple_url, A, target=tmp_path / "uv",
                   extra_args=["--exclude-newer", before])
    assert installed(tmp_path / "uv") == {A.replace("-", "_"): "1.0"}
    pip_install(cooldown.simple_url, A, target=tmp_path / "pip",
                extra_args=["--uploaded-prior-to", before])
    assert installed(tmp_path / "pip") == {A.replace("-", "_"): "1.0"}


def test_upload_times_are_upstream_s_exactly_and_stay(cooldown: PyproxyServer) -> None:
    filename = wheel_name(A, "1.0")
    exact = uploaded(A, "1.0").strftime("%Y-%m-%dT%H:%M:%S.%fZ")

    def shown() -> tuple[str, str, str]:
        entry = file_entries(cooldown.simple_url, A)[filename]
        legacy = json.loads(get(f"{cooldown.url}/pypi/{A}/1.0/json").body)["urls"][0]
        web_page = get(f"{cooldown.url}/project/{A}/").body
        time_tag = f'datetime="{uploaded(A, "1.0").isoformat(timespec="seconds")}"'
        return entry["upload-time"], legacy["upload_time_iso_8601"], str(time_tag in web_page)

    before = shown()
    assert before == (exact, exact, "True")
    assert get(file_url(cooldown, A, filename)).status == 200  # now it is cached
    assert shown() == before  # a cache time never replaces the upload time


def test_metrics_count_what_is_held_back(cooldown: PyproxyServer) -> None:
    refused(cooldown, A, wheel_name(A, "3.0"))
    get(f"{cooldown.simple_url}{A}/", accept=SIMPLE_JSON)
    text = get(f"{cooldown.url}/metrics").body
    values = {
        line.split(" ")[0]: float(line.split(" ")[1])
        for line in text.splitlines() if line.startswith("pyproxy_policy_")
    }
    assert values['pyproxy_policy_hidden_files_total{reason="min_age"}'] >= 1
    assert values['pyproxy_policy_refused_requests_total{reason="min_age"}'] >= 2
    assert 'pyproxy_policy_refused_requests_total{reason="not_after"}' in values


# ---- the cutoff and curated mode ----


def test_not_after_holds_back_what_came_later(curated: PyproxyServer, tmp_path: Path) -> None:
    pip_install(curated.simple_url, F, target=tmp_path / "pip")
    assert installed(tmp_path / "pip") == {F.replace("-", "_"): "1.0"}
    uv_pip_install(curated.simple_url, F, target=tmp_path / "uv")
    assert installed(tmp_path / "uv") == {F.replace("-", "_"): "1.0"}
    assert refused(curated, F, wheel_name(F, "2.0")) == (
        f'Forbidden: {wheel_name(F, "2.0")} is held back by [policy] not_after ='
        f' "{format_moment(NOW - 10 * DAY)}": uploaded {format_moment(uploaded(F, "2.0"))};'
        " not available while that rule stands"
    )


def test_allow_only_serves_only_the_listed_names(curated: PyproxyServer, dated: FakeUpstream,
                                                 tmp_path: Path) -> None:
    dated.reset_counters()
    proc = pip_install(curated.simple_url, G, target=tmp_path / "pip", check=False)
    assert proc.returncode != 0, describe(proc)
    proc = uv_pip_install(curated.simple_url, G, target=tmp_path / "uv", check=False)
    assert proc.returncode != 0, describe(proc)
    assert dated.count(dated.page_path(G)) == 0  # upstream is never asked for it
    answer = get(f"{curated.simple_url}{G}/")
    assert answer.status == 404
    assert "is not in [policy] allow_only" in answer.body
    assert f"{G} is not served from upstream: [policy] allow_only does not list it" in (
        curated.stderr_text()
    )
    uv_pip_install(curated.simple_url, H, target=tmp_path / "uv-listed")
    assert installed(tmp_path / "uv-listed") == {H.replace("-", "_"): "1.0"}
    listed = {p["name"] for p in json.loads(
        get(curated.simple_url, accept=SIMPLE_JSON).body)["projects"]}
    assert F in listed and H in listed and G not in listed


# ---- an upstream without upload times ----


def _seen_long_ago(data_dir: Path, filename: str) -> None:
    """A first sighting 30 days ago, as a server running then would have recorded it."""
    store = FirstSeenStore(DataDir(data_dir).first_seen)
    try:
        store.record(X, [filename], (NOW - 30 * DAY).timestamp())
    finally:
        store.close()


@pytest.mark.parametrize("mode", ["first-seen", "deny", "allow"])
def test_missing_upload_time(mode: str, start: Start, undated: FakeUpstream,
                             tmp_path: Path) -> None:
    data_dir = tmp_path / "data"
    _seen_long_ago(data_dir, wheel_name(X, "1.0"))
    server = start(undated, f'min_age = "7d"\nmissing_upload_time = "{mode}"\n',
                   data_dir=data_dir)
    client = pip_install if mode != "deny" else uv_pip_install
    proc = client(server.simple_url, X, target=tmp_path / "target", check=mode != "deny")
    entries = file_entries(server.simple_url, X)
    # a first sighting is never shown as an upload time
    assert all("upload-time" not in entry for entry in entries.values())
    if mode == "first-seen":
        assert installed(tmp_path / "target") == {X.replace("-", "_"): "1.0"}
        assert "upstream gives no upload time; first seen by pyproxy" in (
            refused(server, X, wheel_name(X, "2.0"))
        )
    elif mode == "deny":
        assert proc.returncode != 0, describe(proc)
        assert entries == {}
        assert 'missing_upload_time = "deny"' in refused(server, X, wheel_name(X, "1.0"))
    else:
        assert installed(tmp_path / "target") == {X.replace("-", "_"): "2.0"}
    server.stop()


# ---- an sdist whose version has a '-': "P-2.0-1.tar.gz" is P 2.0.post1 to pip ----

DASHED = pname("dashed")  # a '-' in the project's name too, as in the names of old sdists
DASHED_OLD, DASHED_POST = f"{DASHED}-1.0.tar.gz", f"{DASHED}-2.0-1.tar.gz"


@pytest.fixture(scope="module")
def dashed(module_fake_factory: FakeFactory, module_pyproxy_factory: ServerFactory,
           tmp_path_factory: pytest.TempPathFactory) -> tuple[PyproxyServer, list[str]]:
    """A server denying DASHED>=2, and the arguments `pyproxy policy check` needs for it."""
    # HTML: `versions` are then pyproxy's own, from the filenames (the fake's JSON would list
    # packaging's parse_sdist_filename reading, "1", as an upstream-declared version)
    fake = module_fake_factory("html")
    directory = tmp_path_factory.mktemp("dashed")
    for version, filename in (("1.0", DASHED_OLD), ("2.0.post1", DASHED_POST)):
        sdist = make_sdist(directory, DASHED, version, filename=filename)
        fake.add_file(DASHED, sdist.name, sdist.read_bytes())
    config = tmp_path_factory.mktemp("config") / "pyproxy.toml"
    config.write_text(f'[upstream]\nurl = "{fake.index_url}"\n[policy]\ndeny = ["{DASHED}>=2"]\n')
    args = ["--config", str(config)]
    server = module_pyproxy_factory.start(None, user=None, extra_args=["--upstream", fake.index_url, *args])
    return server, args


def pip_download(index_url: str, requirement: str, dest: Path) -> tuple[int, list[str]]:
    """pip's exit code and what it saved; the sdist's metadata is prepared with this venv's
    setuptools (--no-build-isolation: the index has no build dependencies)."""
    proc = run([sys.executable, "-m", "pip", "download", "--isolated", "--no-cache-dir",
                "--disable-pip-version-check", "--no-input", "--no-deps", "--no-build-isolation",
                "--index-url", index_url, "--dest", str(dest), requirement], check=False)
    return proc.returncode, sorted(p.name for p in dest.iterdir()) if dest.exists() else []


def test_deny_reads_an_sdists_version_as_pip_does(dashed: tuple[PyproxyServer, list[str]],
                                                 tmp_path: Path) -> None:
    server, args = dashed
    # read as "1" (what follows the last '-'), it passed "DASHED>=2" (200)
    assert f'deny "{DASHED}>=2"' in refused(server, DASHED, DASHED_POST)
    page = json.loads(get(f"{server.simple_url}{DASHED}/", accept=SIMPLE_JSON).body)
    assert [f["filename"] for f in page["files"]] == [DASHED_OLD] and page["versions"] == ["1.0"]
    assert DASHED_POST not in get(f"{server.simple_url}{DASHED}/", accept=SIMPLE_HTML).body
    # real pip: the newest it can have is 1.0, and 2.0.post1 it cannot have at all
    assert pip_download(server.simple_url, DASHED, tmp_path / "newest") == (0, [DASHED_OLD])
    assert pip_download(server.simple_url, f"{DASHED}==2.0.post1", tmp_path / "post")[0] != 0
    checked = server.cli("policy", "check", DASHED, *args).stdout
    assert f"{DASHED}: 1 of 2 upstream files held back" in checked
