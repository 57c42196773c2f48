"""What the warm-up (repository/warmup.py) asks about the upstream that serves a name, and its
per-trigger budget of upstream requests."""

from __future__ import annotations

import time
from dataclasses import dataclass

from pyproxy import metrics
from pyproxy.model import NormalizedName
from pyproxy.policy import Policy
from pyproxy.stores.pages import PageCache

__all__ = ["Budget", "Side"]


@dataclass(frozen=True)
class Side:
    """The upstream that serves a name, as far as the warm-up asks about it."""

    pages: PageCache
    page_ttl: float
    policy: Policy
    offline: bool

    def fresh(self, name: NormalizedName) -> bool:
        known = self.pages.known(name)
        return known is not None and time.time() - known.fetched_at < self.page_ttl

    def refuses(self, name: NormalizedName) -> bool:
        """[policy] never serves the project: not in allow_only, or denied as a whole."""
        return not self.policy.project(name).served or any(
            rule.names(name) and not rule.specifier for rule in self.policy.deny
        )


class Budget:
    def __init__(self, left: int) -> None:
        self.left = left

    def take(self) -> bool:
        if self.left <= 0:
            metrics.WARMUP_SKIPPED.labels("budget").inc()
            return False
        self.left -= 1
        return True
