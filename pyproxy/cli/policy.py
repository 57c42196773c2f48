"""`pyproxy policy check NAME[==VERSION]`: which `[policy]` rule applies to which upstream file.

It reads the page as the server would (the cached copy while it is fresh, else upstream; only
the cache when offline) and decides through the server's own code (repository/policy.py), so
what it prints is what a client gets now. Safe to run beside a running server.
"""

from __future__ import annotations

import argparse
import asyncio
import sys
from collections.abc import Callable
from typing import Any

from packaging.requirements import InvalidRequirement, Requirement
from packaging.version import InvalidVersion, Version

from pyproxy.model import NotFound, Unavailable, normalize
from pyproxy.settings import Settings

Command = Callable[..., argparse.ArgumentParser]
LoadSettings = Callable[[argparse.Namespace], Settings]

_SETTINGS = (
    ("min_age", "policy_min_age"), ("not_after", "policy_not_after"),
    ("exempt", "policy_exempt"), ("deny", "policy_deny"), ("allow_only", "policy_allow_only"),
    ("missing_upload_time", "policy_missing_upload_time"),
)


class CheckError(Exception):
    """What cannot be checked; one line, exit status 1."""


def rules_in_force(settings: Settings) -> str:
    """The [policy] settings that are set, as they would be written in pyproxy.toml."""
    shown = []
    for key, field in _SETTINGS:
        value = getattr(settings, field)
        if isinstance(value, tuple):
            if value:
                shown.append(f"{key} = [{', '.join(repr(v) for v in value)}]")
        elif value and field != "policy_missing_upload_time":
            shown.append(f"{key} = {value!r}")
    if shown:
        shown.append(f"missing_upload_time = {settings.policy_missing_upload_time!r}")
    return "[policy] " + ", ".join(shown) if shown else "[policy] no rule is set"


def _wanted(text: str) -> Requirement:
    try:
        requirement = Requirement(text)
    except InvalidRequirement:
        raise argparse.ArgumentTypeError(f"{text!r} is not NAME or NAME==VERSION") from None
    if requirement.extras or requirement.marker is not None or requirement.url:
        raise argparse.ArgumentTypeError(f"{text!r} is not NAME or NAME==VERSION")
    return requirement


def _admits(requirement: Requirement, version: str | None) -> bool:
    if not requirement.specifier:
        return True
    try:
        return version is not None and requirement.specifier.contains(
            Version(version), prereleases=True
        )
    except InvalidVersion:
        return False


async def check(settings: Settings, requirement: Requirement) -> list[str]:
    """The lines `policy check` prints."""
    from pyproxy.compose import build_services  # the same stack the server builds

    name = normalize(requirement.name)
    services = build_services(settings)
    try:
        lines = [rules_in_force(settings)]
        merged = name in {normalize(n) for n in settings.merge}
        if services.catalog.has_project(name):
            if not merged:
                return [*lines, f"{name} is a private project: only its private files are"
                                " served, and [policy] never holds them back"]
            lines.append(f"{name} is private and merged: its private files are never held back;"
                         " its upstream files:")
        policed = services.policy_for(name)
        if policed is None:
            return [*lines, f"{name}: no upstream is configured, so [policy] has nothing to do"]
        try:
            project, decided = await policed.explain(name)
        except NotFound as exc:
            raise CheckError(f"upstream has no project {name!r} ({exc})") from None
        except Unavailable as exc:
            raise CheckError(str(exc)) from None
        if not project.served:
            return [*lines, f"{name}: not served from upstream (404): {project.describe()}"]
        shown = [(dist, d) for dist, d in decided if _admits(requirement, dist.version)]
        if not shown:
            raise CheckError(f"upstream lists no file of {requirement}")
        width = max(len(dist.filename) for dist, _ in shown)
        lines += [f"  {dist.filename:<{width}}  {d.describe()}" for dist, d in shown]
        held = sum(1 for _, d in shown if not d.served)
        lines.append(f"{name}: {held} of {len(shown)} upstream files held back")
        return lines
    finally:
        await services.close()


def cmd_check(args: argparse.Namespace, settings: Settings) -> int:
    try:
        lines = asyncio.run(check(settings, args.requirement))
    except CheckError as exc:
        print(f"pyproxy: {exc}", file=sys.stderr)
        return 1
    print("\n".join(lines))
    return 0


def add_parsers(commands: Any, command: Command, settings: LoadSettings) -> None:
    policy = commands.add_parser(
        "policy", help="what [policy] holds back (safe while serving)",
        description="what [policy] holds back (safe while serving)",
    )
    sub = policy.add_subparsers(dest="policy_command", required=True, metavar="COMMAND")
    check_parser = command(
        "check", lambda args: cmd_check(args, settings(args)),
        "which rule applies to which upstream file of a project, now", sub,
    )
    check_parser.add_argument("requirement", type=_wanted, metavar="NAME[==VERSION]",
                              help="a project, or a release of it (any PEP 440 specifier)")
