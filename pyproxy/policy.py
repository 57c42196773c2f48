"""Which rule of `[policy]` applies to an upstream file at a given time. Pure: no I/O, no clock.

The rules, in the order they are applied:

1. `allow_only` (curated mode): a project no entry names is not served from upstream at all;
   an entry with a specifier ("requests>=2") serves only the versions it admits.
2. `deny`: a matching file is never served (`exempt` does not lift it).
3. `exempt` (break-glass): a matching file is not held back by the time rules below.
4. `not_after`: a file uploaded after the cutoff is held back while the cutoff stands.
5. `min_age`: a file younger than this is held back until it is old enough.

The time rules read the file's upstream upload time. Without one, `missing_upload_time` says:
"first-seen" (use when pyproxy first saw the file), "deny" (hold it back) or "allow" (the time
rules do not apply to it). A file's version is what pip reads from its filename with the
project's name (model.ProjectPage reads it so: "foo-2.0-1.tar.gz" of foo is 2.0.post1). A file
whose version cannot be told (named for another project, or no valid version after the name) is
matched by `deny` (fail closed) and by no `exempt` or versioned `allow_only` entry.
"""

from __future__ import annotations

import enum
import math
import re
from collections.abc import Iterable
from dataclasses import dataclass
from datetime import UTC, datetime, timedelta

from packaging.requirements import InvalidRequirement, Requirement
from packaging.specifiers import SpecifierSet
from packaging.utils import NormalizedName, canonicalize_name
from packaging.version import InvalidVersion, Version

__all__ = [
    "MISSING_UPLOAD_TIME",
    "Decision",
    "Policy",
    "Reason",
    "Rule",
    "build_policy",
    "format_moment",
    "parse_duration",
    "parse_moment",
    "parse_rule",
    "split_rules",
]

MISSING_UPLOAD_TIME = ("first-seen", "deny", "allow")


class Reason(enum.Enum):
    """Why a file is held back; the values are the setting names (and the metrics' labels)."""

    ALLOW_ONLY = "allow_only"
    DENY = "deny"
    NOT_AFTER = "not_after"
    MIN_AGE = "min_age"
    MISSING_UPLOAD_TIME = "missing_upload_time"


# ---- reading the settings ------------------------------------------------------------------

_UNITS = {
    "s": 1, "sec": 1, "second": 1, "seconds": 1,
    "m": 60, "min": 60, "minute": 60, "minutes": 60,
    "h": 3600, "hour": 3600, "hours": 3600,
    "d": 86400, "day": 86400, "days": 86400,
    "w": 604800, "week": 604800, "weeks": 604800,
}
# min_age: a century; more is no cooldown but a typo (and past the calendar's end, from upload
# times to when a held file is available)
MAX_DURATION = timedelta(days=36500)
_DURATION_PART = re.compile(r"\s*(\d+(?:\.\d+)?)\s*([a-z]+)\s*")


def parse_duration(text: str) -> timedelta | None:
    """"7d", "36h", "1w", "1d12h", "90 minutes" -> a timedelta; "" -> None (the rule is off)."""
    if not text.strip():
        return None
    total, position, lowered = 0.0, 0, text.lower()
    while position < len(lowered):
        match = _DURATION_PART.match(lowered, position)
        if match is None or match.group(2) not in _UNITS:
            raise ValueError(f"{text!r} is not a duration such as \"7d\", \"36h\" or \"1w\"")
        total += float(match.group(1)) * _UNITS[match.group(2)]
        position = match.end()
    if total > MAX_DURATION.total_seconds():  # an upload time plus it must still be a date
        raise ValueError(f"{text!r} is longer than {MAX_DURATION.days}d, the longest duration")
    return timedelta(seconds=total)


def parse_moment(text: str) -> datetime | None:
    """An RFC 3339 time with its offset ("2026-11-20T00:00:00Z"), or a date meaning midnight
    UTC ("2026-11-20"); "" -> None. A time without an offset is refused: whose midnight?"""
    text = text.strip()
    if not text:
        return None
    try:
        moment = datetime.fromisoformat(text)
    except ValueError:
        raise ValueError(
            f"{text!r} is not a time such as \"2026-11-20T00:00:00Z\" or a date \"2026-11-20\""
        ) from None
    if moment.tzinfo is None:
        if len(text) > 10:  # a date and time without an offset
            raise ValueError(f"{text!r} has no time zone: end it with \"Z\" (UTC) or \"+01:00\"")
        moment = moment.replace(tzinfo=UTC)
    try:
        return moment.astimezone(UTC)
    except OverflowError:  # "9999-12-31T23:00:00-05:00" is past the last day Python counts
        raise ValueError(f"{text!r} is not a time between the years 1 and 9999 in UTC") from None


@dataclass(frozen=True, slots=True)
class Rule:
    """One list entry: a project name, optionally with a PEP 440 specifier."""

    text: str  # as configured, for messages
    name: NormalizedName
    specifier: SpecifierSet

    def names(self, project: NormalizedName) -> bool:
        return project == self.name

    def matches(self, project: NormalizedName, version: str | None, *, unknown: bool) -> bool:
        """Whether this entry covers `version` of `project`; `unknown` is the answer for a
        version that cannot be told (or parsed)."""
        if project != self.name:
            return False
        if not self.specifier:
            return True
        if version is None:
            return unknown
        try:
            parsed = Version(version)
        except InvalidVersion:
            return unknown
        return self.specifier.contains(parsed, prereleases=True)


def parse_rule(text: str) -> Rule:
    """"certifi", "mypkg==2.1.0", "urllib3<1.26.5" -> a Rule; ValueError for anything else
    (extras, markers, URLs: they say nothing about which files a project has)."""
    try:
        requirement = Requirement(text)
    except InvalidRequirement as exc:
        why = str(exc).splitlines()[0]  # packaging adds lines that point at the column
        raise ValueError(f"{text!r} is not a name or a PEP 508 specifier: {why}") from None
    if requirement.extras or requirement.marker is not None or requirement.url:
        raise ValueError(f"{text!r}: only a name and version specifiers are allowed in a rule")
    return Rule(text.strip(), canonicalize_name(requirement.name), requirement.specifier)


def split_rules(text: str) -> list[str]:
    """A comma-separated list of rules from the environment; a comma inside a specifier
    ("urllib3>=1,<2") does not start a new rule, because the part after it starts with an
    operator rather than a name."""
    rules: list[str] = []
    for part in (p.strip() for p in text.split(",")):
        if not part:
            continue
        if rules and part[0] in "<>=!~":
            rules[-1] += "," + part
        else:
            rules.append(part)
    return rules


def format_moment(moment: datetime) -> str:
    """UTC to the second, rounded up: a client that retries at that time is not early."""
    seconds = math.ceil(moment.timestamp())
    return datetime.fromtimestamp(seconds, UTC).strftime("%Y-%m-%dT%H:%M:%SZ")


# ---- the decision --------------------------------------------------------------------------


@dataclass(frozen=True, slots=True)
class Decision:
    """What the policy makes of one file (or project): served, or held back and until when."""

    served: bool
    reason: Reason | None = None  # why it is held back; None when served
    rule: str = ""  # the setting that decided, as configured: 'min_age = "7d"', 'exempt "certifi"'
    basis: str = ""  # the time the rule read: "uploaded 2026-…Z", "first seen by pyproxy …"
    available_at: datetime | None = None  # when a min_age hold ends; None: while the rule stands

    def describe(self) -> str:
        """One line: served or held back, by what, and until when."""
        basis = f": {self.basis}" if self.basis else ""
        if self.served:
            return f"served ({self.rule}{basis})" if self.rule else f"served{basis}"
        if self.available_at is not None:
            until = f"available from {format_moment(self.available_at)}"
        else:
            until = "not available while that rule stands"
        return f"held back by [policy] {self.rule}{basis}; {until}"


SERVED = Decision(served=True)


@dataclass(frozen=True)
class Policy:
    """`[policy]`, read. One per upstream: a per-upstream override is a `dataclasses.replace`."""

    min_age: timedelta | None = None
    not_after: datetime | None = None
    exempt: tuple[Rule, ...] = ()
    deny: tuple[Rule, ...] = ()
    allow_only: tuple[Rule, ...] = ()  # empty: every project (curated mode is off)
    missing_upload_time: str = "first-seen"

    @property
    def holds_by_time(self) -> bool:
        return bool(self.min_age) or self.not_after is not None

    @property
    def active(self) -> bool:
        """Whether any rule can hold a file back (else pages pass through untouched)."""
        return self.holds_by_time or bool(self.deny) or bool(self.allow_only)

    def project(self, name: NormalizedName) -> Decision:
        """Whether upstream is asked for this project at all (curated mode)."""
        if not self.allow_only or any(rule.names(name) for rule in self.allow_only):
            return SERVED
        return Decision(
            served=False, reason=Reason.ALLOW_ONLY, rule="allow_only",
            basis=f"{name!r} is not listed",
        )

    def decide(
        self,
        name: NormalizedName,
        version: str | None,
        upload_time: datetime | None,
        first_seen: datetime | None,
        now: datetime,
    ) -> Decision:
        """The rule that applies to one upstream file of `name` at `now`. `first_seen` is read
        only when upstream gives no upload time."""
        if self.allow_only:
            listed = [rule for rule in self.allow_only if rule.names(name)]
            if not listed:
                return self.project(name)
            if not any(rule.matches(name, version, unknown=False) for rule in listed):
                texts = ", ".join(f'"{rule.text}"' for rule in listed)
                return Decision(
                    served=False, reason=Reason.ALLOW_ONLY, rule=f"allow_only {texts}",
                    basis=f"version {version or '(unknown)'} is not admitted",
                )
        for rule in self.deny:
            if rule.matches(name, version, unknown=True):
                return Decision(served=False, reason=Reason.DENY, rule=f'deny "{rule.text}"')
        if not self.holds_by_time:
            return SERVED
        for rule in self.exempt:
            if rule.matches(name, version, unknown=False):
                return Decision(served=True, rule=f'exempt "{rule.text}"')
        return self._by_time(upload_time, first_seen, now)

    def _by_time(
        self, upload_time: datetime | None, first_seen: datetime | None, now: datetime
    ) -> Decision:
        if upload_time is not None:
            moment, basis = upload_time, f"uploaded {format_moment(upload_time)}"
        elif self.missing_upload_time == "allow":
            return Decision(
                served=True, rule='missing_upload_time = "allow"',
                basis="upstream gives no upload time",
            )
        elif self.missing_upload_time == "deny":
            return Decision(
                served=False, reason=Reason.MISSING_UPLOAD_TIME,
                rule='missing_upload_time = "deny"', basis="upstream gives no upload time",
            )
        else:
            moment = first_seen or now
            basis = f"upstream gives no upload time; first seen by pyproxy {format_moment(moment)}"
        if self.not_after is not None and moment > self.not_after:
            return Decision(
                served=False, reason=Reason.NOT_AFTER,
                rule=f'not_after = "{format_moment(self.not_after)}"', basis=basis,
            )
        if self.min_age and now < moment + self.min_age:
            return Decision(
                served=False, reason=Reason.MIN_AGE, rule=f'min_age = "{_duration(self.min_age)}"',
                basis=basis, available_at=moment + self.min_age,
            )
        return Decision(served=True, basis=basis)


def _duration(delta: timedelta) -> str:
    seconds = delta.total_seconds()
    for unit, size in (("d", 86400), ("h", 3600), ("m", 60)):
        if seconds >= size and seconds % size == 0:
            return f"{int(seconds // size)}{unit}"
    return f"{seconds:g}s"


def build_policy(
    *,
    min_age: str = "",
    not_after: str = "",
    exempt: Iterable[str] = (),
    deny: Iterable[str] = (),
    allow_only: Iterable[str] = (),
    missing_upload_time: str = "first-seen",
) -> Policy:
    """A Policy from the settings' texts; ValueError naming the bad value."""
    if missing_upload_time not in MISSING_UPLOAD_TIME:
        raise ValueError(f"{missing_upload_time!r} is not one of {', '.join(MISSING_UPLOAD_TIME)}")
    return Policy(
        min_age=parse_duration(min_age),
        not_after=parse_moment(not_after),
        exempt=_rules(exempt),
        deny=_rules(deny),
        allow_only=_rules(allow_only),
        missing_upload_time=missing_upload_time,
    )


def _rules(texts: Iterable[str]) -> tuple[Rule, ...]:
    return tuple(parse_rule(text) for text in texts)

