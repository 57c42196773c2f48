"""`[policy]` over one upstream repository: release cooldown, deny and allow lists.

Filtered when a response is made, never when a page is fetched, so the page cache keeps what
upstream said and a changed rule takes effect with a restart, without a cache rebuild. It sits
below `PrivateWins`, so private files are never held back; an upstream file of a merged project
is.

A held-back file leaves the page (HTML and JSON alike, so `.metadata` links with it); a version
left without files leaves `versions`; the legacy JSON API and the web pages read the same page.
A direct request for it is refused with `HeldBack` (403), whose message names the rule and when
the file becomes available. A project that `allow_only` does not list is NotFound (404), and
upstream is not asked for it.

Rendered-page caches key on the page's revision. A filtered page's revision is the upstream
revision plus a digest of the held-back filenames, and the filtered page is kept only until the
earliest hold on it ends (a float compared per request): the first request after that
recomputes it, the file is back, and the revision has changed with it.

Files without an upstream upload time get a first-seen time (stores/first_seen.py) whether or
not a rule needs it, so a cooldown switched on later has their history.
"""

from __future__ import annotations

import asyncio
import contextlib
import hashlib
import logging
import math
import time
from collections.abc import Callable, Mapping
from dataclasses import dataclass
from datetime import UTC, datetime

from packaging.utils import canonicalize_version

from pyproxy import metrics
from pyproxy.lru import BoundedLRU
from pyproxy.model import (
    DistFile,
    FileSource,
    HeldBack,
    NormalizedName,
    NotFound,
    OpenedFile,
    ProjectList,
    ProjectPage,
    Repository,
)
from pyproxy.policy import Decision, Policy, build_policy
from pyproxy.project_lists import filtered
from pyproxy.settings import Settings
from pyproxy.stores.first_seen import FirstSeen

__all__ = ["Filtered", "PolicyRepository", "decisions", "filter_page", "policy_from_settings"]

log = logging.getLogger("pyproxy.policy")

_PAGES = 4096
_NEVER = math.inf
# first-seen times no rule reads yet are recorded this long after the page that brought them,
# not while it is rendered and sent (a cold page of thousands of undated files)
_RECORD_AFTER = 0.5


def policy_from_settings(settings: Settings) -> Policy:
    """The `[policy]` section as a Policy (config.py has already checked every value)."""
    return build_policy(
        min_age=settings.policy_min_age,
        not_after=settings.policy_not_after,
        exempt=settings.policy_exempt,
        deny=settings.policy_deny,
        allow_only=settings.policy_allow_only,
        missing_upload_time=settings.policy_missing_upload_time,
    )


@dataclass(frozen=True, slots=True)
class Filtered:
    """A page as the policy lets it out, and what it held back."""

    source: str  # the revision of the upstream page it was made from
    page: ProjectPage
    held: Mapping[str, Decision]  # filename -> why it is held back
    valid_until: float  # seconds since the epoch: when the earliest hold ends
    hidden: tuple[tuple[str, int], ...] = ()  # (reason, files), for the metrics


def _moment(seconds: float) -> datetime:
    return datetime.fromtimestamp(seconds, UTC)


def decisions(
    policy: Policy, page: ProjectPage, first_seen: Mapping[str, float], now: float
) -> list[tuple[DistFile, Decision]]:
    """Every file of an upstream page with what the policy makes of it at `now`."""
    moment = _moment(now)
    decided = []
    for dist in page.files:
        seen = first_seen.get(dist.filename)
        decision = policy.decide(
            page.name, dist.version, dist.upload_time,
            None if seen is None else _moment(seen), moment,
        )
        decided.append((dist, decision))
    return decided


def filter_page(
    policy: Policy, page: ProjectPage, first_seen: Mapping[str, float], now: float
) -> Filtered:
    """The page without the files the policy holds back at `now`. Pure."""
    if not policy.active:
        return Filtered(page.revision, page, {}, _NEVER)
    kept: list[DistFile] = []
    held: dict[str, Decision] = {}
    held_versions: set[str | None] = set()
    for dist, decision in decisions(policy, page, first_seen, now):
        if decision.served:
            kept.append(dist)
        else:
            held[dist.filename] = decision
            held_versions.add(_canonical(dist.version))
    if not held:
        return Filtered(page.revision, page, {}, _NEVER)
    valid_until = min(
        (d.available_at.timestamp() for d in held.values() if d.available_at is not None),
        default=_NEVER,
    )
    # a version whose files are all held back is not offered either (PEP 700 `versions`)
    gone = held_versions - {_canonical(d.version) for d in kept}
    versions = tuple(v for v in page.versions if _canonical(v) not in gone)
    revision = ""
    if page.revision:
        digest = hashlib.blake2b("\n".join(sorted(held)).encode(), digest_size=8).hexdigest()
        revision = f"{page.revision}~p{digest}"
    counts: dict[str, int] = {}
    for decision in held.values():
        assert decision.reason is not None
        counts[decision.reason.value] = counts.get(decision.reason.value, 0) + 1
    filtered = ProjectPage.build(
        page.name, tuple(kept), extra_versions=versions, status=page.status, revision=revision
    )
    return Filtered(page.revision, filtered, held, valid_until, tuple(sorted(counts.items())))


def _canonical(version: str | None) -> str | None:
    return None if version is None else canonicalize_version(version)


class PolicyRepository:
    """An upstream Repository as `policy` lets it out."""

    def __init__(
        self,
        upstream: Repository,
        policy: Policy,
        first_seen: FirstSeen | None = None,
        *,
        clock: Callable[[], float] = time.time,
    ) -> None:
        self.upstream = upstream
        self.policy = policy
        self.first_seen = first_seen
        self._clock = clock
        self._pages: BoundedLRU[NormalizedName, Filtered] = BoundedLRU(_PAGES)
        self._list: tuple[str, ProjectList] | None = None
        self._recording: set[asyncio.Task[None]] = set()
        self._hurry = asyncio.Event()  # set: record those waiting now (see `settled`)

    # ---- the Repository ----

    async def list_projects(self) -> ProjectList:
        projects = await self.upstream.list_projects()
        if not self.policy.allow_only:
            return projects
        if self._list is None or self._list[0] != projects.revision or not projects.revision:
            revision = f"{projects.revision}~a" if projects.revision else ""
            served = filtered(projects, lambda name: self.policy.project(name).served, revision)
            self._list = (projects.revision, served)
        return self._list[1]

    async def project_page(self, name: NormalizedName) -> ProjectPage:
        filtered = await self._filtered(name)
        for reason, count in filtered.hidden:
            metrics.POLICY_HIDDEN.labels(reason).inc(count)
        return filtered.page

    async def open_file(self, project: NormalizedName, filename: str) -> OpenedFile:
        await self._refuse_held(project, filename, filename)
        return await self.upstream.open_file(project, filename)

    async def open_metadata(self, project: NormalizedName, filename: str) -> FileSource:
        await self._refuse_held(project, filename, filename + ".metadata")
        return await self.upstream.open_metadata(project, filename)

    async def open_provenance(self, project: NormalizedName, filename: str) -> FileSource:
        await self._refuse_held(project, filename, filename + ".provenance")
        return await self.upstream.open_provenance(project, filename)

    # ---- for `pyproxy policy check` ----

    async def explain(
        self, name: NormalizedName
    ) -> tuple[Decision, list[tuple[DistFile, Decision]]]:
        """Whether upstream is asked for `name`, and if so every file of its upstream page with
        what the policy makes of it now (the same decisions the server makes)."""
        project = self.policy.project(name)
        if not project.served:
            return project, []
        page = await self.upstream.project_page(name)
        now = self._clock()
        return project, decisions(self.policy, page, await self._first_seen(page, now), now)

    # ---- filtering ----

    async def _refuse_held(self, project: NormalizedName, filename: str, asked: str) -> None:
        if not self.policy.active:
            return
        decision = await self._held(project, filename)
        if decision is not None:
            assert decision.reason is not None
            metrics.POLICY_REFUSED.labels(decision.reason.value).inc()
            raise HeldBack(f"{asked} is {decision.describe()}")

    async def _held(self, project: NormalizedName, filename: str) -> Decision | None:
        """Why the file is held back, or None. A file once served stays served (holds only
        end), so the last filtered page answers without asking upstream for its page again
        (the upstream repository looks the file up on it anyway)."""
        known = self._pages.get(project)
        if known is not None:
            if known.page.file(filename) is not None:
                return None
            held = known.held.get(filename)
            if held is not None and self._clock() < known.valid_until:
                return held
        return (await self._filtered(project)).held.get(filename)

    async def _filtered(self, name: NormalizedName) -> Filtered:
        if not self.policy.project(name).served:
            log.info("%s is not served from upstream: [policy] allow_only does not list it", name)
            metrics.POLICY_REFUSED.labels("allow_only").inc()
            raise NotFound(f"{name!r} is not in [policy] allow_only, so upstream is not asked")
        page = await self.upstream.project_page(name)
        now = self._clock()
        known = self._pages.get(name)
        # the warm path: the same upstream page, and no hold on it has ended since
        fresh = known is not None and known.source == page.revision and now < known.valid_until
        if fresh and page.revision:
            assert known is not None
            return known
        times = await self._first_seen(page, now, wait=False)
        filtered = filter_page(self.policy, page, times, now)
        self._pages.put(name, filtered)
        return filtered

    async def _first_seen(
        self, page: ProjectPage, now: float, *, wait: bool = True
    ) -> Mapping[str, float]:
        undated = [dist.filename for dist in page.files if dist.upload_time is None]
        if not undated or self.first_seen is None:
            return {}
        if not wait and not self.policy.active:
            # no rule reads them now: recorded (for a cooldown switched on later) after the
            # page is served, not before
            task = asyncio.get_running_loop().create_task(self._record(page.name, undated, now))
            self._recording.add(task)
            task.add_done_callback(self._recording.discard)
            return {}
        return await self.first_seen.times(page.name, undated, now)

    async def _record(self, name: NormalizedName, undated: list[str], now: float) -> None:
        assert self.first_seen is not None
        with contextlib.suppress(TimeoutError):
            await asyncio.wait_for(self._hurry.wait(), _RECORD_AFTER)
        try:
            await self.first_seen.times(name, undated, now)
        except Exception as exc:
            log.warning("the first-seen times of %s were not recorded: %s", name, exc)

    async def settled(self) -> None:
        """Until the first-seen times waiting to be recorded are, recorded now (before the
        store closes, and for tests)."""
        self._hurry.set()
        try:
            while self._recording:
                await asyncio.gather(*self._recording, return_exceptions=True)
        finally:
            self._hurry.clear()

