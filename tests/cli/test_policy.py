"""`pyproxy policy check`, run in-process through cli.main() against a fake upstream."""

from __future__ import annotations

from collections.abc import Callable, Iterator
from datetime import UTC, datetime, timedelta
from pathlib import Path

import pytest

from pyproxy.cli import main as cli
from pyproxy.policy import format_moment
from pyproxy.stores.private import PrivateStore
from tests.cli.test_main import add_private
from tests.fake_upstream import FakeUpstream

NOW = datetime.now(UTC)
DAY = timedelta(days=1)

Run = Callable[..., tuple[int, str, str]]


@pytest.fixture(scope="module")
def upstream() -> Iterator[FakeUpstream]:
    with FakeUpstream.running_in_thread(formats="json") as fake:
        fake.add_file("Foo", "foo-1.0.tar.gz", b"one", upload_time=NOW - 30 * DAY)
        fake.add_file("foo", "foo-2.0.tar.gz", b"two", upload_time=NOW - 2 * DAY)
        fake.add_file("foo", "foo-2.0-py3-none-any.whl", b"wheel", upload_time=NOW - 9 * DAY)
        fake.add_file("certifi", "certifi-2026.1.1.tar.gz", b"c", upload_time=NOW - DAY)
        fake.add_file("evil-pkg", "evil_pkg-1.0.tar.gz", b"e", upload_time=NOW - 99 * DAY)
        fake.add_file("mine", "mine-1.0.tar.gz", b"m", upload_time=NOW - 99 * DAY)
        yield fake


@pytest.fixture
def run(isolated_cwd: Path, tmp_path: Path, upstream: FakeUpstream,
        capsys: pytest.CaptureFixture[str]) -> Run:
    def run(*args: str, policy: str = "", url: str | None = None) -> tuple[int, str, str]:
        config = tmp_path / "pyproxy.toml"
        config.write_text(f'[upstream]\nurl = "{url or upstream.index_url}"\n'
                          f"[policy]\n{policy}\n")
        code = cli.main(["policy", "check", *args, "--config", str(config),
                         "--data-dir", str(tmp_path / "data")])
        captured = capsys.readouterr()
        assert "Traceback" not in captured.err
        return code, captured.out, captured.err

    return run


COOLDOWN = 'min_age = "7d"\nexempt = ["certifi"]\ndeny = ["evil-pkg"]\n'


def test_every_file_with_its_rule(run: Run) -> None:
    code, out, _ = run("Foo", policy=COOLDOWN)
    assert code == 0
    lines = out.splitlines()
    assert lines[0] == (
        "[policy] min_age = '7d', exempt = ['certifi'], deny = ['evil-pkg'],"
        " missing_upload_time = 'first-seen'"
    )
    uploaded = format_moment(NOW - 2 * DAY)
    available = format_moment(NOW - 2 * DAY + 7 * DAY)
    assert f"  foo-1.0.tar.gz            served: uploaded {format_moment(NOW - 30 * DAY)}" in lines
    assert (
        f'  foo-2.0.tar.gz            held back by [policy] min_age = "7d": uploaded {uploaded};'
        f" available from {available}"
    ) in lines
    assert lines[-1] == "foo: 1 of 3 upstream files held back"


def test_a_version_narrows_the_list(run: Run) -> None:
    code, out, _ = run("foo==2.0", policy=COOLDOWN)
    assert code == 0
    assert "foo-1.0.tar.gz" not in out and out.count("foo-2.0") == 2
    code, _, err = run("foo==9.9", policy=COOLDOWN)
    assert (code, err) == (1, "pyproxy: upstream lists no file of foo==9.9\n")


@pytest.mark.parametrize(
    ("project", "said"),
    [
        ("certifi", 'served (exempt "certifi")'),
        ("evil-pkg", 'held back by [policy] deny "evil-pkg"; not available while that rule stands'),
    ],
)
def test_exempt_and_deny(run: Run, project: str, said: str) -> None:
    code, out, _ = run(project, policy=COOLDOWN)
    assert code == 0 and said in out


def test_allow_only(run: Run) -> None:
    code, out, _ = run("foo", policy='allow_only = ["certifi"]')
    assert code == 0
    assert out.splitlines()[-1] == (
        "foo: not served from upstream (404): held back by [policy] allow_only: 'foo' is not"
        " listed; not available while that rule stands"
    )


def test_no_rule(run: Run) -> None:
    code, out, _ = run("foo")
    assert code == 0
    assert out.splitlines()[0] == "[policy] no rule is set"
    assert out.splitlines()[-1] == "foo: 0 of 3 upstream files held back"


def test_a_private_project_is_never_held_back(run: Run, tmp_path: Path) -> None:
    store = PrivateStore(tmp_path / "data" / "private")
    try:
        add_private(store, "mine-1.0.tar.gz")
    finally:
        store.close()
    code, out, _ = run("mine", policy=COOLDOWN)
    assert code == 0
    assert out.splitlines()[-1] == (
        "mine is a private project: only its private files are served, and [policy] never holds"
        " them back"
    )


def test_errors_are_one_line(run: Run) -> None:
    code, _, err = run("no-such-project", policy=COOLDOWN)
    assert code == 1 and err.startswith("pyproxy: upstream has no project 'no-such-project'")
    code, _, err = run("foo", policy=COOLDOWN, url="http://127.0.0.1:9/simple/")
    assert code == 1 and err.startswith("pyproxy: upstream index unavailable")
    assert err.count("\n") == 1
    code, _, err = run("foo", policy='min_age = "soon"')
    assert code == 2 and "policy.min_age: 'soon' is not a duration" in err
