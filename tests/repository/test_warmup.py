"""pyproxy.repository.warmup: bounded, deduplicated warm-up through a Repository.

The policy, overlay and routing over a real upstream are tested through the app in
tests/web/test_warmup.py; here a small in-process Repository stands in for the stack, to see
concurrency, budget, dedupe, failures and shutdown exactly."""

from __future__ import annotations

import asyncio
import json
from pathlib import Path

from prometheus_client.parser import text_string_to_metric_families

from pyproxy import metrics
from pyproxy.model import (
    DistFile,
    HeldBack,
    LocalFile,
    NormalizedName,
    NotFound,
    Origin,
    ProjectList,
    ProjectPage,
    normalize,
)
from pyproxy.policy import build_policy
from pyproxy.repository.warmup import Side, WarmUp
from pyproxy.stores.pages import PageStore
from tests.dists import core_metadata

AGENT = "pip/24.0 " + json.dumps({"python": "3.11.7", "implementation": {"name": "CPython"},
                                   "system": {"name": "Linux"}, "cpu": "x86_64"})


class Pages:
    """A Repository whose pages take `delay` seconds; counts and watches concurrency."""

    def __init__(self, delay: float = 0.0, failing: frozenset[str] = frozenset()) -> None:
        self.delay = delay
        self.failing = failing
        self.asked: list[str] = []
        self.running = 0
        self.most = 0

    async def list_projects(self) -> ProjectList:
        return ProjectList(())

    async def project_page(self, name: NormalizedName) -> ProjectPage:
        self.asked.append(name)
        self.running += 1
        self.most = max(self.most, self.running)
        try:
            await asyncio.sleep(self.delay)
        finally:
            self.running -= 1
        if name in self.failing:
            raise NotFound(name)
        wheel = DistFile(f"{name}-1.0-py3-none-any.whl", {}, origin=Origin.UPSTREAM, upstream_url="http://u/x")
        return ProjectPage.build(name, (wheel,))

    async def open_file(self, project: NormalizedName, filename: str) -> LocalFile:
        raise NotFound(filename)

    open_metadata = open_provenance = open_file


def metadata_file(tmp_path: Path, requires: list[str]) -> LocalFile:
    path = tmp_path / "app.metadata"
    path.write_bytes(core_metadata("app", "1.0", requires_dist=requires))
    return LocalFile(path, path.stat().st_size, "0" * 64, cache="hit")


def warm_up(tmp_path: Path, repository: Pages, *, private: set[str] = frozenset(), concurrency: int = 4,
            budget: int = 16, **policy: tuple[str, ...]) -> WarmUp:
    side = Side(PageStore(tmp_path / "pages"), 600.0, build_policy(**policy), offline=False)

    async def goes_upstream(name: NormalizedName) -> bool:
        return name not in private

    return WarmUp(repository, lambda _name: side, goes_upstream, concurrency=concurrency, budget=budget,
                  metadata=False)


async def serve(warm: WarmUp, local: LocalFile, filename: str = "app-1.0-py3-none-any.whl",
                agent: str | None = AGENT) -> None:
    async def local_of() -> LocalFile:
        return local

    warm.served(normalize("app"), filename, local_of, wheel=False, user_agent=agent)
    await warm.idle()


def value(metric: metrics._Metric, label: str) -> float:
    """The counter's value, as /metrics shows it."""
    body, _ = metrics.scrape("text/plain", lambda: [])
    for family in text_string_to_metric_families(body.decode()):
        for sample in family.samples:
            if sample.name == f"{metric.name}_total" and label in sample.labels.values():
                return float(sample.value)
    raise AssertionError(f"no {metric.name} {label}")


async def test_warms_each_dependency_once_within_the_concurrency(tmp_path: Path) -> None:
    repository = Pages(delay=0.05)
    warm = warm_up(tmp_path, repository, concurrency=2)
    deps = [f"dep{i}" for i in range(6)]
    started = value(metrics.WARMUP_STARTED, "page")
    await serve(warm, metadata_file(tmp_path, [*deps, "dep0>=1"]))
    assert sorted(repository.asked) == deps
    assert repository.most == 2
    assert value(metrics.WARMUP_STARTED, "page") - started == 6
    # the same file again, or another naming the same dependencies: nothing more is fetched
    await serve(warm, metadata_file(tmp_path, deps))
    await serve(warm, metadata_file(tmp_path, deps), filename="other-1.0.tar.gz")
    assert len(repository.asked) == 6


async def test_budget_bounds_the_pages_per_served_file(tmp_path: Path) -> None:
    repository = Pages()
    warm = warm_up(tmp_path, repository, budget=2)
    skipped = value(metrics.WARMUP_SKIPPED, "budget")
    await serve(warm, metadata_file(tmp_path, ["a", "b", "c", "d"]))
    assert repository.asked == ["a", "b"]
    assert value(metrics.WARMUP_SKIPPED, "budget") - skipped == 1


async def test_private_and_policy_refused_names_are_never_asked(tmp_path: Path) -> None:
    repository = Pages()
    warm = warm_up(tmp_path, repository, private={"secret"}, deny=("evil", "partly<2"))
    await serve(warm, metadata_file(tmp_path, ["secret", "evil", "partly", "fine"]))
    assert sorted(repository.asked) == ["fine", "partly"]  # a versioned deny still serves other versions
    curated = warm_up(tmp_path, Pages(), allow_only=("fine",))
    await serve(curated, metadata_file(tmp_path, ["other", "fine"]))
    assert curated.repository.asked == ["fine"]  # type: ignore[attr-defined]


async def test_used_and_wasted(tmp_path: Path) -> None:
    repository = Pages()
    warm = warm_up(tmp_path, repository)
    used, wasted = value(metrics.WARMUP_USED, "page"), value(metrics.WARMUP_WASTED, "page")
    await serve(warm, metadata_file(tmp_path, ["a", "b"]))
    warm.page_requested(normalize("a"))
    warm.page_requested(normalize("a"))  # counted once
    warm.page_requested(normalize("never-warmed"))
    assert value(metrics.WARMUP_USED, "page") - used == 1
    warm._ledger.warmed[normalize("b")] = ("page", 0.0)  # its TTL is over
    warm.page_requested(normalize("b"))
    assert value(metrics.WARMUP_WASTED, "page") - wasted == 1


async def test_failures_are_counted_and_contained(tmp_path: Path) -> None:
    repository = Pages(failing=frozenset({"gone"}))
    warm = warm_up(tmp_path, repository)
    failed = value(metrics.WARMUP_FAILED, "page")
    await serve(warm, metadata_file(tmp_path, ["gone", "fine"]))
    assert value(metrics.WARMUP_FAILED, "page") - failed == 1
    # a file that cannot be read warms nothing and raises nothing
    missing = LocalFile(tmp_path / "missing.metadata", 1, "0" * 64)
    await serve(warm, missing, filename="x-1.0.tar.gz")
    assert sorted(repository.asked) == ["fine", "gone"]


async def test_markers_without_an_agent_and_close_cancels(tmp_path: Path) -> None:
    repository = Pages(delay=30)
    warm = warm_up(tmp_path, repository)

    async def local_of() -> LocalFile:
        return metadata_file(tmp_path, ["plain", 'marked ; python_version >= "3"'])

    warm.served(normalize("app"), "app-1.0.tar.gz", local_of, wheel=False, user_agent="curl/8.0")
    for _ in range(50):
        await asyncio.sleep(0.01)
        if repository.asked:
            break
    assert repository.asked == ["plain"]
    await asyncio.wait_for(warm.close(), 2)  # cancelled, not waited for
    assert not warm._tasks


async def test_a_download_ahead_the_policy_refuses_is_skipped_not_failed(tmp_path: Path) -> None:
    class Holding(Pages):
        async def open_file(self, project: NormalizedName, filename: str) -> LocalFile:
            raise HeldBack(f"{filename} is held back")  # the page changed since pip read it

    warm = warm_up(tmp_path, Holding())
    skipped, failed = value(metrics.WARMUP_SKIPPED, "policy"), value(metrics.WARMUP_FAILED, "file")
    a, b = normalize("a"), normalize("b")
    warm.metadata_requested(a, "a-1.0-py3-none-any.whl", "pip1")
    warm.metadata_requested(b, "b-1.0-py3-none-any.whl", "pip1")
    warm.file_requested(a, "a-1.0-py3-none-any.whl", "pip1")  # pip's first: b is fetched ahead
    await warm.idle()
    assert value(metrics.WARMUP_SKIPPED, "policy") - skipped == 1
    assert value(metrics.WARMUP_FAILED, "file") - failed == 0
