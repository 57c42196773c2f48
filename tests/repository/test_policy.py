"""pyproxy.repository.policy: `[policy]` over an upstream repository, at response time.

The upstream here is `Pages`, a Repository holding model pages in memory (what the policy
wrapper reads is the model; the HTTP side is tested in tests/e2e/test_policy.py), and the
clock is the test's, so a hold can be watched ending.
"""

from __future__ import annotations

import asyncio
import dataclasses
import re
from collections.abc import AsyncIterator, Iterator
from datetime import UTC, datetime, timedelta
from pathlib import Path

import pytest
from prometheus_client.parser import text_string_to_metric_families

from pyproxy import metrics
from pyproxy.model import (
    DistFile,
    FileSource,
    HeldBack,
    NormalizedName,
    NotFound,
    Origin,
    ProjectList,
    ProjectPage,
    StreamedFile,
    normalize,
)
from pyproxy.policy import Policy, Reason, build_policy
from pyproxy.repository.policy import PolicyRepository, filter_page
from pyproxy.stores.first_seen import FirstSeenStore

NOW = datetime(2026, 11, 21, 12, 0, tzinfo=UTC).timestamp()
DAY = 86400.0


def at(seconds: float) -> datetime:
    return datetime.fromtimestamp(seconds, UTC)


def dist(filename: str, uploaded: float | None, *, metadata: bool = True) -> DistFile:
    return DistFile(
        filename=filename, hashes={"sha256": "ab" * 32}, size=10,
        upload_time=None if uploaded is None else at(uploaded),
        core_metadata={"sha256": "cd" * 32} if metadata and filename.endswith(".whl") else False,
        origin=Origin.UPSTREAM, upstream_url=f"http://127.0.0.1:9/files/{filename}",
    )


def page(name: str, *files: DistFile, revision: str = "u1",
         versions: tuple[str, ...] = ()) -> ProjectPage:
    return ProjectPage.build(normalize(name), files, extra_versions=versions, revision=revision)


async def _chunks() -> AsyncIterator[bytes]:
    yield b"body"


class Pages:
    """An upstream Repository of model pages; counts what it is asked."""

    def __init__(self, *pages: ProjectPage) -> None:
        self.pages = {p.name: p for p in pages}
        self.asked: list[tuple[str, str]] = []

    async def list_projects(self) -> ProjectList:
        return ProjectList(tuple(self.pages), revision="list1")

    async def project_page(self, name: NormalizedName) -> ProjectPage:
        self.asked.append(("page", name))
        if name not in self.pages:
            raise NotFound(f"no {name}")
        return self.pages[name]

    async def open_file(self, project: NormalizedName, filename: str) -> FileSource:
        self.asked.append(("file", filename))
        return StreamedFile(_chunks(), 4, None)

    async def open_metadata(self, project: NormalizedName, filename: str) -> FileSource:
        self.asked.append(("metadata", filename))
        return StreamedFile(_chunks(), 4, None)


class Clock:
    def __init__(self, now: float = NOW) -> None:
        self.now = now

    def __call__(self) -> float:
        return self.now


@pytest.fixture
def clock() -> Clock:
    return Clock()


@pytest.fixture
def first_seen(tmp_path: Path) -> Iterator[FirstSeenStore]:
    store = FirstSeenStore(tmp_path / "first-seen.sqlite3")
    yield store
    store.close()


def wrap(upstream: Pages, policy: Policy, clock: Clock,
         first_seen: FirstSeenStore | None = None) -> PolicyRepository:
    return PolicyRepository(upstream, policy, first_seen, clock=clock)


FOO = page(
    "foo",
    dist("foo-1.0-py3-none-any.whl", NOW - 30 * DAY),
    dist("foo-1.0.tar.gz", NOW - 30 * DAY),
    dist("foo-2.0-py3-none-any.whl", NOW - 10 * DAY),
    dist("foo-2.0.tar.gz", NOW - 2 * DAY),  # a late sdist: 2.0 stays, with its wheel
    dist("foo-3.0-py3-none-any.whl", NOW - 3 * DAY),
    dist("foo-3.0.tar.gz", NOW - 1 * DAY),
    versions=("0.9", "1.0", "2.0", "3.0"),  # 0.9 has no files at all: it stays listed
)
COOLDOWN = build_policy(min_age="7d")


def filenames(listed: ProjectPage) -> list[str]:
    return [d.filename for d in listed.files]


# ---- pages ----


async def test_no_rule_passes_the_page_through(clock: Clock) -> None:
    repository = wrap(Pages(FOO), build_policy(), clock)
    assert await repository.project_page(normalize("foo")) is FOO


async def test_young_files_leave_the_page_and_versions_are_recomputed(clock: Clock) -> None:
    repository = wrap(Pages(FOO), COOLDOWN, clock)
    served = await repository.project_page(normalize("foo"))
    assert filenames(served) == [
        "foo-1.0-py3-none-any.whl", "foo-1.0.tar.gz", "foo-2.0-py3-none-any.whl"
    ]
    assert served.versions == ("0.9", "1.0", "2.0")  # 3.0 has no file left
    # what stays is as upstream said it, .metadata and upload time included
    assert served.files[0] is FOO.files[0]
    assert served.revision != FOO.revision and served.revision.startswith(FOO.revision)
    assert served.status == FOO.status


async def test_a_hold_ends_on_time_and_the_revision_moves_with_it(clock: Clock) -> None:
    upstream = Pages(FOO)
    repository = wrap(upstream, COOLDOWN, clock)
    name = normalize("foo")
    before = await repository.project_page(name)
    assert await repository.project_page(name) is before  # kept until a hold ends
    clock.now = NOW + 4 * DAY - 1  # foo-3.0 wheel: uploaded 3 days ago, 7 days' hold
    assert await repository.project_page(name) is before
    clock.now = NOW + 4 * DAY
    after = await repository.project_page(name)
    assert "foo-3.0-py3-none-any.whl" in filenames(after)
    assert "3.0" in after.versions
    assert after.revision != before.revision  # a rendered-page cache renders it again
    clock.now = NOW + 6 * DAY  # the last hold (foo-3.0.tar.gz) ends
    final = await repository.project_page(name)
    assert filenames(final) == filenames(FOO)
    assert final is FOO and final.revision == FOO.revision


async def test_a_new_upstream_revision_is_filtered_again(clock: Clock) -> None:
    upstream = Pages(FOO)
    repository = wrap(upstream, COOLDOWN, clock)
    name = normalize("foo")
    await repository.project_page(name)
    upstream.pages[name] = page("foo", dist("foo-1.0.tar.gz", NOW - 30 * DAY), revision="u2")
    served = await repository.project_page(name)
    assert filenames(served) == ["foo-1.0.tar.gz"] and served.revision == "u2"


async def test_an_uncached_upstream_page_gives_an_uncached_filtered_page(clock: Clock) -> None:
    unrevised = dataclasses.replace(FOO, revision="")
    served = await wrap(Pages(unrevised), COOLDOWN, clock).project_page(normalize("foo"))
    assert served.revision == "" and len(served.files) == 3


def test_filter_page_says_when_to_look_again() -> None:
    filtered = filter_page(COOLDOWN, FOO, {}, NOW)
    assert set(filtered.held) == {
        "foo-2.0.tar.gz", "foo-3.0-py3-none-any.whl", "foo-3.0.tar.gz"
    }
    assert filtered.valid_until == NOW + 4 * DAY  # the earliest hold to end
    assert dict(filtered.hidden) == {"min_age": 3}
    never = filter_page(build_policy(deny=["foo"]), FOO, {}, NOW)
    assert never.valid_until == float("inf") and not never.page.files
    assert never.page.versions == ("0.9",)


# ---- direct requests ----


async def test_held_files_and_their_metadata_are_refused(clock: Clock) -> None:
    upstream = Pages(FOO)
    repository = wrap(upstream, COOLDOWN, clock)
    name = normalize("foo")
    with pytest.raises(HeldBack) as caught:
        await repository.open_file(name, "foo-3.0-py3-none-any.whl")
    assert str(caught.value) == (
        'foo-3.0-py3-none-any.whl is held back by [policy] min_age = "7d": uploaded'
        " 2026-11-18T12:00:00Z; available from 2026-11-25T12:00:00Z"
    )
    with pytest.raises(HeldBack) as caught:
        await repository.open_metadata(name, "foo-3.0-py3-none-any.whl")
    assert str(caught.value).startswith("foo-3.0-py3-none-any.whl.metadata is held back by")
    assert ("file", "foo-3.0-py3-none-any.whl") not in upstream.asked
    assert ("metadata", "foo-3.0-py3-none-any.whl") not in upstream.asked
    # what is served goes through to upstream
    await repository.open_file(name, "foo-1.0.tar.gz")
    await repository.open_metadata(name, "foo-2.0-py3-none-any.whl")
    assert ("file", "foo-1.0.tar.gz") in upstream.asked
    assert ("metadata", "foo-2.0-py3-none-any.whl") in upstream.asked
    # a filename the page does not list is upstream's to refuse (404)
    await repository.open_file(name, "foo-9.9.tar.gz")
    assert ("file", "foo-9.9.tar.gz") in upstream.asked


async def test_deny_empties_the_page_and_refuses_the_files(clock: Clock) -> None:
    repository = wrap(Pages(FOO), build_policy(deny=["foo<2"]), clock)
    name = normalize("foo")
    served = await repository.project_page(name)
    assert [d.version for d in served.files] == ["2.0", "2.0", "3.0", "3.0"]
    assert served.versions == ("0.9", "2.0", "3.0")
    with pytest.raises(HeldBack, match=r'held back by \[policy\] deny "foo<2"; not available'):
        await repository.open_file(name, "foo-1.0.tar.gz")


# ---- curated mode ----


async def test_allow_only_serves_only_the_listed_projects(
    clock: Clock, caplog: pytest.LogCaptureFixture
) -> None:
    bar = page("bar", dist("bar-1.0.tar.gz", NOW - 30 * DAY))
    upstream = Pages(FOO, bar)
    repository = wrap(upstream, build_policy(allow_only=["Foo>=2"]), clock)
    listed = await repository.list_projects()
    assert list(listed.entries()) == [("foo", "foo")]
    assert listed.has(normalize("foo")) and not listed.has(normalize("bar"))
    with caplog.at_level("INFO", logger="pyproxy.policy"), pytest.raises(NotFound):
        await repository.project_page(normalize("bar"))
    assert "bar is not served from upstream: [policy] allow_only does not list it" in caplog.text
    with pytest.raises(NotFound):
        await repository.open_file(normalize("bar"), "bar-1.0.tar.gz")
    assert not [asked for asked in upstream.asked if "bar" in asked[1]]  # never asked upstream
    served = await repository.project_page(normalize("foo"))
    assert {d.version for d in served.files} == {"2.0", "3.0"}
    admitted = re.escape('allow_only "Foo>=2": version 1.0 is not admitted')
    with pytest.raises(HeldBack, match=admitted):
        await repository.open_file(normalize("foo"), "foo-1.0.tar.gz")


async def test_without_allow_only_the_project_list_is_upstream_s(clock: Clock) -> None:
    upstream = Pages(FOO)
    listed = await wrap(upstream, COOLDOWN, clock).list_projects()
    assert listed == await upstream.list_projects()


# ---- files without an upload time ----

UNDATED = page(
    "torch", dist("torch-1.0-py3-none-any.whl", None), dist("torch-2.0-py3-none-any.whl", None)
)


async def test_first_seen_counts_from_the_first_sighting(
    clock: Clock, first_seen: FirstSeenStore, tmp_path: Path
) -> None:
    await first_seen.times("torch", ["torch-1.0-py3-none-any.whl"], NOW - 30 * DAY)
    repository = wrap(Pages(UNDATED), COOLDOWN, clock, first_seen)
    name = normalize("torch")
    served = await repository.project_page(name)
    assert filenames(served) == ["torch-1.0-py3-none-any.whl"]
    assert served.files[0].upload_time is None  # never shown as an upload time
    with pytest.raises(HeldBack, match="first seen by pyproxy 2026-11-21T12:00:00Z; available"
                                       " from 2026-11-28T12:00:00Z"):
        await repository.open_file(name, "torch-2.0-py3-none-any.whl")
    # a restart (a new wrapper, the same store) keeps the first sighting's time
    clock.now = NOW + 7 * DAY
    again = FirstSeenStore(tmp_path / "first-seen.sqlite3")
    try:
        restarted = wrap(Pages(UNDATED), COOLDOWN, clock, again)
        assert filenames(await restarted.project_page(name)) == filenames(UNDATED)
    finally:
        again.close()


async def test_sightings_are_kept_with_no_rule_in_force(
    clock: Clock, first_seen: FirstSeenStore
) -> None:
    repository = wrap(Pages(UNDATED, FOO), build_policy(), clock, first_seen)
    await repository.project_page(normalize("torch"))
    await repository.project_page(normalize("foo"))  # every file has an upload time
    # recorded after the page is out, not while it is built; `settled` records them now
    assert first_seen.record("torch", [], 0.0) == {}
    clock.now = NOW + 60
    await repository.settled()
    assert first_seen.record("torch", [], 0.0) == {
        "torch-1.0-py3-none-any.whl": NOW, "torch-2.0-py3-none-any.whl": NOW
    }
    assert first_seen.record("foo", [], 0.0) == {}


async def test_sightings_are_recorded_soon_without_being_asked(
    clock: Clock, first_seen: FirstSeenStore
) -> None:
    repository = wrap(Pages(UNDATED), build_policy(), clock, first_seen)
    await repository.project_page(normalize("torch"))
    deadline = asyncio.get_running_loop().time() + 5
    while not first_seen.record("torch", [], 0.0):
        assert asyncio.get_running_loop().time() < deadline, "never recorded"
        await asyncio.sleep(0.05)
    assert set(first_seen.record("torch", [], 0.0).values()) == {NOW}


@pytest.mark.parametrize(
    ("mode", "served"),
    [("deny", []), ("allow", ["torch-1.0-py3-none-any.whl", "torch-2.0-py3-none-any.whl"])],
)
async def test_missing_upload_time_deny_or_allow(
    clock: Clock, first_seen: FirstSeenStore, mode: str, served: list[str]
) -> None:
    policy = build_policy(min_age="7d", missing_upload_time=mode)
    repository = wrap(Pages(UNDATED), policy, clock, first_seen)
    assert filenames(await repository.project_page(normalize("torch"))) == served


# ---- explaining, and counting ----


async def test_explain_gives_every_file_its_decision(clock: Clock) -> None:
    policy = build_policy(min_age="7d", exempt=["foo==3.0"])
    project, decided = await wrap(Pages(FOO), policy, clock).explain(normalize("foo"))
    assert project.served
    by_name = {d.filename: decision for d, decision in decided}
    assert list(by_name) == filenames(FOO)
    assert by_name["foo-2.0.tar.gz"].reason is Reason.MIN_AGE
    assert by_name["foo-3.0.tar.gz"].rule == 'exempt "foo==3.0"'
    refused, none = await wrap(Pages(FOO), build_policy(allow_only=["bar"]), clock).explain(
        normalize("foo")
    )
    assert not refused.served and none == []


def counter(name: str, reason: str) -> float:
    body, _ = metrics.scrape("text/plain", lambda: [])
    for family in text_string_to_metric_families(body.decode()):
        for sample in family.samples:
            if sample.name == f"{name}_total" and sample.labels == {"reason": reason}:
                return float(sample.value)
    raise AssertionError(f"no {name} {reason}")


async def test_held_back_files_are_counted_by_reason(clock: Clock) -> None:
    repository = wrap(Pages(FOO), COOLDOWN, clock)
    hidden = counter("pyproxy_policy_hidden_files", "min_age")
    refused = counter("pyproxy_policy_refused_requests", "min_age")
    await repository.project_page(normalize("foo"))
    await repository.project_page(normalize("foo"))
    assert counter("pyproxy_policy_hidden_files", "min_age") == hidden + 6  # 3 per page served
    with pytest.raises(HeldBack):
        await repository.open_file(normalize("foo"), "foo-3.0.tar.gz")
    assert counter("pyproxy_policy_refused_requests", "min_age") == refused + 1
    curated = wrap(Pages(FOO), build_policy(allow_only=["bar"]), clock)
    before = counter("pyproxy_policy_refused_requests", "allow_only")
    with pytest.raises(NotFound):
        await curated.project_page(normalize("foo"))
    assert counter("pyproxy_policy_refused_requests", "allow_only") == before + 1


def test_per_upstream_overrides_are_a_replace() -> None:
    """What several upstreams build on: one Policy per upstream, e.g. no cooldown for one."""
    relaxed = dataclasses.replace(COOLDOWN, min_age=timedelta(0))
    assert not relaxed.active
    assert filter_page(relaxed, FOO, {}, NOW).page is FOO
