"""pyproxy.policy: reading the [policy] values, and which rule applies to a file at a time."""

from __future__ import annotations

from datetime import UTC, datetime, timedelta

import pytest

from pyproxy.model import DistFile, ProjectPage, normalize
from pyproxy.policy import (
    Decision,
    Policy,
    Reason,
    build_policy,
    format_moment,
    parse_duration,
    parse_moment,
    parse_rule,
    split_rules,
)

NOW = datetime(2026, 11, 21, 12, 0, 0, tzinfo=UTC)
DAY = timedelta(days=1)


# ---- reading the settings ----


@pytest.mark.parametrize(
    ("text", "expected"),
    [
        ("", None),
        ("  ", None),
        ("7d", timedelta(days=7)),
        ("0d", timedelta(0)),
        ("36h", timedelta(hours=36)),
        ("1w", timedelta(weeks=1)),
        ("1d12h", timedelta(days=1, hours=12)),
        ("1.5d", timedelta(hours=36)),
        ("90 minutes", timedelta(minutes=90)),
        ("2 days 3 hours", timedelta(days=2, hours=3)),
        ("3600s", timedelta(hours=1)),
        ("7D", timedelta(days=7)),
    ],
)
def test_parse_duration(text: str, expected: timedelta | None) -> None:
    assert parse_duration(text) == expected


@pytest.mark.parametrize("text", ["7", "d", "7x", "seven days", "-1d", "7d!", "P7D"])
def test_parse_duration_refuses(text: str) -> None:
    with pytest.raises(ValueError, match="is not a duration such as"):
        parse_duration(text)


@pytest.mark.parametrize("text", ["99999999999999999999d", "36501d", "5215w", "9" * 400 + "s"])
def test_parse_duration_refuses_more_than_a_century(text: str) -> None:
    # timedelta stops at 999999999 days, and an upload time plus a min_age must be a date
    with pytest.raises(ValueError, match="is longer than 36500d, the longest duration"):
        parse_duration(text)
    assert parse_duration("36500d") == timedelta(days=36500)


@pytest.mark.parametrize(
    ("text", "expected"),
    [
        ("", None),
        ("2026-11-20T00:00:00Z", datetime(2026, 11, 20, tzinfo=UTC)),
        ("2026-11-20T01:30:00+01:30", datetime(2026, 11, 20, tzinfo=UTC)),
        ("2026-11-20", datetime(2026, 11, 20, tzinfo=UTC)),  # a date: midnight UTC
    ],
)
def test_parse_moment(text: str, expected: datetime | None) -> None:
    moment = parse_moment(text)
    assert moment == expected
    assert moment is None or moment.tzinfo is UTC


@pytest.mark.parametrize(
    ("text", "said"),
    [
        ("2026-11-20T00:00:00", "has no time zone"),
        ("2026-11-20 10:00", "has no time zone"),
        ("tomorrow", "is not a time such as"),
        ("2026-02-30", "is not a time such as"),
        # past the calendar's ends once in UTC
        ("9999-12-31T23:00:00-05:00", "is not a time between the years 1 and 9999"),
        ("0001-01-01T00:30:00+01:00", "is not a time between the years 1 and 9999"),
    ],
)
def test_parse_moment_refuses(text: str, said: str) -> None:
    with pytest.raises(ValueError, match=said):
        parse_moment(text)


@pytest.mark.parametrize(
    ("text", "name", "specifier"),
    [
        ("certifi", "certifi", ""),
        ("Foo_Bar", "foo-bar", ""),
        ("mypkg==2.1.0", "mypkg", "==2.1.0"),
        ("urllib3 < 1.26.5", "urllib3", "<1.26.5"),
        ("a>=1,<2", "a", "<2,>=1"),
    ],
)
def test_parse_rule(text: str, name: str, specifier: str) -> None:
    rule = parse_rule(text)
    assert (rule.name, str(rule.specifier)) == (name, specifier)
    assert rule.text == text.strip()


@pytest.mark.parametrize(
    "text", ["", "==1.0", "foo[bar]", "foo; python_version<'3'", "foo @ https://x.invalid/f.whl"]
)
def test_parse_rule_refuses(text: str) -> None:
    with pytest.raises(ValueError) as caught:
        parse_rule(text)
    assert repr(text) in str(caught.value) and "\n" not in str(caught.value)


@pytest.mark.parametrize(
    ("text", "expected"),
    [
        ("", []),
        ("certifi, mypkg==2.1.0", ["certifi", "mypkg==2.1.0"]),
        ("urllib3>=1,<1.26.5,evil", ["urllib3>=1,<1.26.5", "evil"]),
        (" a , , b ", ["a", "b"]),
        ("a!=1.0,~=1.2", ["a!=1.0,~=1.2"]),
    ],
)
def test_split_rules(text: str, expected: list[str]) -> None:
    assert split_rules(text) == expected


def test_format_moment_rounds_up_to_the_second() -> None:
    assert format_moment(datetime(2026, 1, 1, 0, 0, 0, 1, tzinfo=UTC)) == "2026-01-01T00:00:01Z"
    assert format_moment(datetime(2026, 1, 1, tzinfo=UTC)) == "2026-01-01T00:00:00Z"


def test_build_policy_refuses_an_unknown_missing_upload_time() -> None:
    with pytest.raises(ValueError, match="first-seen, deny, allow"):
        build_policy(missing_upload_time="first_seen")


def test_no_rule_is_no_policy() -> None:
    assert not build_policy().active
    assert not build_policy(min_age="0d", missing_upload_time="deny").active
    assert build_policy(min_age="1h").active and build_policy(deny=["x"]).active
    assert build_policy(not_after="2026-01-01").active and build_policy(allow_only=["x"]).active


# ---- the decision ----

COOLDOWN = build_policy(min_age="7d", exempt=["certifi", "mypkg==2.1.0"])
CUTOFF = build_policy(not_after="2026-11-20T00:00:00Z")
BOTH = build_policy(min_age="7d", not_after="2026-11-01T00:00:00Z")
LISTS = build_policy(
    min_age="7d", deny=["evil-pkg", "urllib3<1.26.5"], exempt=["evil-pkg", "urllib3"],
    allow_only=["urllib3", "requests>=2", "evil-pkg", "certifi"],
)


def decide(
    policy: Policy, name: str, version: str | None, uploaded: datetime | None,
    first_seen: datetime | None = None,
) -> Decision:
    return policy.decide(normalize(name), version, uploaded, first_seen, NOW)


@pytest.mark.parametrize(
    ("policy", "name", "version", "uploaded", "reason", "available_at"),
    [
        # min_age: held until old enough, to the microsecond
        (COOLDOWN, "foo", "1.0", NOW - 8 * DAY, None, None),
        (COOLDOWN, "foo", "1.0", NOW - 7 * DAY, None, None),  # exactly old enough
        (COOLDOWN, "foo", "2.0", NOW - 6 * DAY, Reason.MIN_AGE, NOW + DAY),
        (COOLDOWN, "foo", "2.0", NOW + DAY, Reason.MIN_AGE, NOW + 8 * DAY),  # clock skew
        # exempt: a name covers every version, a specifier only its own
        (COOLDOWN, "Certifi", "2026.11.20", NOW - DAY, None, None),
        (COOLDOWN, "mypkg", "2.1.0", NOW - DAY, None, None),
        (COOLDOWN, "mypkg", "2.1", NOW - DAY, None, None),  # the same version to PEP 440
        (COOLDOWN, "mypkg", "2.2.0", NOW - DAY, Reason.MIN_AGE, NOW + 6 * DAY),
        (COOLDOWN, "mypkg", None, NOW - DAY, Reason.MIN_AGE, NOW + 6 * DAY),  # untold: no match
        # not_after: after the cutoff, while it stands, whatever the age
        (CUTOFF, "foo", "1.0", datetime(2026, 11, 19, tzinfo=UTC), None, None),
        (CUTOFF, "foo", "1.0", datetime(2026, 11, 20, tzinfo=UTC), None, None),  # at the cutoff
        (CUTOFF, "foo", "1.1", datetime(2026, 11, 20, 0, 0, 1, tzinfo=UTC), Reason.NOT_AFTER, None),
        # both: the cutoff is what keeps a young file held back
        (BOTH, "foo", "3.0", NOW - DAY, Reason.NOT_AFTER, None),
        (BOTH, "foo", "2.0", datetime(2026, 10, 30, tzinfo=UTC), None, None),
        # deny beats exempt; allow_only beats everything
        (LISTS, "evil-pkg", "1.0", NOW - 100 * DAY, Reason.DENY, None),
        (LISTS, "urllib3", "1.26.4", NOW - 100 * DAY, Reason.DENY, None),
        (LISTS, "urllib3", "1.26.5", NOW - DAY, None, None),  # not denied, and exempt
        (LISTS, "urllib3", "1.26.4rc1", NOW - 100 * DAY, Reason.DENY, None),  # pre-releases too
        # PEP 440: "<1.26.5" does not admit pre-releases of 1.26.5 itself
        (LISTS, "urllib3", "1.26.5rc1", NOW - 100 * DAY, None, None),
        (LISTS, "urllib3", None, NOW - 100 * DAY, Reason.DENY, None),  # untold: fail closed
        (LISTS, "urllib3", "not-a-version", NOW - 100 * DAY, Reason.DENY, None),
        (LISTS, "requests", "2.31.0", NOW - 100 * DAY, None, None),
        (LISTS, "requests", "1.2.3", NOW - 100 * DAY, Reason.ALLOW_ONLY, None),
        (LISTS, "requests", None, NOW - 100 * DAY, Reason.ALLOW_ONLY, None),
        (LISTS, "flask", "3.0", NOW - 100 * DAY, Reason.ALLOW_ONLY, None),
        (LISTS, "certifi", "1.0", NOW - DAY, Reason.MIN_AGE, NOW + 6 * DAY),
    ],
)
def test_which_rule_applies(
    policy: Policy, name: str, version: str | None, uploaded: datetime | None,
    reason: Reason | None, available_at: datetime | None,
) -> None:
    decision = decide(policy, name, version, uploaded)
    assert decision.served is (reason is None)
    assert decision.reason is reason
    assert decision.available_at == available_at


@pytest.mark.parametrize(
    ("mode", "first_seen", "reason", "available_at"),
    [
        ("first-seen", NOW - 8 * DAY, None, None),
        ("first-seen", NOW - 2 * DAY, Reason.MIN_AGE, NOW + 5 * DAY),
        ("first-seen", None, Reason.MIN_AGE, NOW + 7 * DAY),  # never seen: seen now
        ("deny", NOW - 100 * DAY, Reason.MISSING_UPLOAD_TIME, None),
        ("allow", NOW, None, None),
    ],
)
def test_missing_upload_time(
    mode: str, first_seen: datetime | None, reason: Reason | None, available_at: datetime | None
) -> None:
    policy = build_policy(min_age="7d", missing_upload_time=mode)
    decision = decide(policy, "torch", "2.9.0+cu128", None, first_seen)
    assert (decision.served, decision.reason, decision.available_at) == (
        reason is None, reason, available_at
    )


def test_first_seen_is_read_only_without_an_upload_time() -> None:
    policy = build_policy(min_age="7d")
    decision = decide(policy, "foo", "1.0", NOW - 30 * DAY, first_seen=NOW)
    assert decision.served and decision.basis.startswith("uploaded ")


def test_first_seen_meets_the_cutoff_too() -> None:
    policy = build_policy(not_after="2026-11-20", missing_upload_time="first-seen")
    assert decide(policy, "foo", "1.0", None, datetime(2026, 11, 19, tzinfo=UTC)).served
    assert decide(policy, "foo", "1.0", None, NOW).reason is Reason.NOT_AFTER


def test_missing_upload_time_matters_only_to_a_time_rule() -> None:
    assert decide(build_policy(missing_upload_time="deny"), "foo", "1.0", None).served
    held = decide(build_policy(deny=["foo"], missing_upload_time="allow"), "foo", "1.0", None)
    assert held.reason is Reason.DENY


def test_allow_only_decides_projects() -> None:
    policy = build_policy(allow_only=["Requests>=2", "certifi"])
    assert policy.project(normalize("requests")).served
    assert policy.project(normalize("certifi")).served
    refused = policy.project(normalize("flask"))
    assert not refused.served and refused.reason is Reason.ALLOW_ONLY
    assert build_policy().project(normalize("anything")).served


# ---- on a page's files: the version pip reads, with the project's name ----


def on_page(name: str, *filenames: str) -> dict[str, str | None]:
    """Each file's version as its page has it (what repository/policy.py hands to decide)."""
    page = ProjectPage.build(normalize(name), tuple(DistFile(filename=f, hashes={}) for f in filenames))
    return {dist.filename: dist.version for dist in page.files}


# "foo-2.0-1.tar.gz" is 2.0.post1 to pip and uv; read as "1" it slipped past every specifier
SDISTS = ("foo-2.0-1.tar.gz", "foo-2.0-1.tar.bz2", "foo-2.0-1.zip")
OTHER = "bar-1.0.tar.gz"  # another project's name on foo's page: no version of foo's


@pytest.mark.parametrize("filename", SDISTS)
def test_deny_with_a_specifier_holds_a_post_release_spelled_with_a_dash(filename: str) -> None:
    policy = build_policy(deny=["foo>=2"])
    version = on_page("foo", filename)[filename]
    assert decide(policy, "foo", version, NOW - 100 * DAY).reason is Reason.DENY


@pytest.mark.parametrize("filename", SDISTS)
def test_allow_only_with_a_specifier_refuses_it(filename: str) -> None:
    policy = build_policy(allow_only=["foo<2"])
    version = on_page("foo", filename)[filename]
    decision = decide(policy, "foo", version, NOW - 100 * DAY)
    assert decision.reason is Reason.ALLOW_ONLY and "version 2.0.post1 is not admitted" in decision.basis


def test_exempt_with_equals_exempts_the_version_pip_reads() -> None:
    policy = build_policy(min_age="7d", exempt=["foo==1"])
    versions = on_page("foo", "foo-2.0-1.tar.gz", "foo-1-2.tar.gz")
    assert decide(policy, "foo", versions["foo-2.0-1.tar.gz"], NOW - DAY).reason is Reason.MIN_AGE
    # the same name under project foo is 1.post2, not 2
    assert versions["foo-1-2.tar.gz"] == "1.post2"
    exempt_post = build_policy(min_age="7d", exempt=["foo==1.post2"])
    assert decide(exempt_post, "foo", versions["foo-1-2.tar.gz"], NOW - DAY).served


def test_a_file_of_another_name_fails_closed() -> None:
    version = on_page("foo", OTHER)[OTHER]
    assert version is None
    young, old = NOW - DAY, NOW - 100 * DAY
    assert decide(build_policy(deny=["foo>=2"]), "foo", version, old).reason is Reason.DENY
    assert decide(build_policy(allow_only=["foo<2"]), "foo", version, old).reason is Reason.ALLOW_ONLY
    assert decide(build_policy(min_age="7d", exempt=["foo==1.0"]), "foo", version, young).reason \
        is Reason.MIN_AGE
    assert decide(build_policy(min_age="7d"), "foo", version, young).reason is Reason.MIN_AGE


# ---- what the messages say ----


@pytest.mark.parametrize(
    ("policy", "name", "version", "uploaded", "first_seen", "described"),
    [
        (COOLDOWN, "foo", "2.0", NOW - 6 * DAY, None,
         'held back by [policy] min_age = "7d": uploaded 2026-11-15T12:00:00Z;'
         " available from 2026-11-22T12:00:00Z"),
        (build_policy(min_age="36h"), "foo", "2.0", NOW, None,
         'held back by [policy] min_age = "36h": uploaded 2026-11-21T12:00:00Z;'
         " available from 2026-11-23T00:00:00Z"),
        (CUTOFF, "foo", "2.0", NOW, None,
         'held back by [policy] not_after = "2026-11-20T00:00:00Z": uploaded'
         " 2026-11-21T12:00:00Z; not available while that rule stands"),
        (LISTS, "urllib3", "1.0", NOW - 100 * DAY, None,
         'held back by [policy] deny "urllib3<1.26.5"; not available while that rule stands'),
        (LISTS, "requests", "1.0", NOW - 100 * DAY, None,
         'held back by [policy] allow_only "requests>=2": version 1.0 is not admitted;'
         " not available while that rule stands"),
        (build_policy(min_age="7d"), "torch", "2.0", None, NOW - DAY,
         'held back by [policy] min_age = "7d": upstream gives no upload time; first seen by'
         " pyproxy 2026-11-20T12:00:00Z; available from 2026-11-27T12:00:00Z"),
        (build_policy(min_age="7d", missing_upload_time="deny"), "torch", "2.0", None, None,
         'held back by [policy] missing_upload_time = "deny": upstream gives no upload time;'
         " not available while that rule stands"),
        (COOLDOWN, "certifi", "1.0", NOW, None, 'served (exempt "certifi")'),
        (COOLDOWN, "foo", "1.0", NOW - 30 * DAY, None, "served: uploaded 2026-10-22T12:00:00Z"),
        (build_policy(), "foo", "1.0", None, None, "served"),
    ],
)
def test_descriptions(
    policy: Policy, name: str, version: str, uploaded: datetime | None,
    first_seen: datetime | None, described: str,
) -> None:
    assert decide(policy, name, version, uploaded, first_seen).describe() == described
