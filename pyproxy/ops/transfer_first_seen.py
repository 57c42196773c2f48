"""First-seen times in an export (`policy/first_seen.jsonl`): when pyproxy first saw each
upstream file that carries no upload time (stores/first_seen.py).

They travel with every export, cache or not: the `[policy]` cooldown reads them, and a
deployment moved without them would hold back again, for `min_age`, every such file its builds
already use. Import keeps a time the target has recorded (it may already be in use) and adds
the others.
"""

from __future__ import annotations

import math
from collections.abc import Iterator
from pathlib import Path

from pyproxy.model import normalize
from pyproxy.ops.transfer_format import Report, read_jsonl, write_jsonl
from pyproxy.stores.first_seen import FirstSeen

FIRST_SEEN = Path("policy") / "first_seen.jsonl"


def export_first_seen(store: FirstSeen, target: Path, report: Report) -> None:
    (target / FIRST_SEEN).parent.mkdir(parents=True, exist_ok=True)
    report.copied = write_jsonl(
        target / FIRST_SEEN,
        ({"project": project, "filename": filename, "seen": seen}
         for project, filename, seen in store.export_times()),
    )


def import_first_seen(store: FirstSeen, source: Path, report: Report) -> None:
    usable = [0]
    added = store.import_times(_rows(source, report, usable))  # streamed, in batches
    report.copied += added
    report.skipped += usable[0] - added


def _rows(source: Path, report: Report, usable: list[int]) -> Iterator[tuple[str, str, float]]:
    for record in read_jsonl(source / FIRST_SEEN):
        project, filename, seen = record.get("project"), record.get("filename"), record.get("seen")
        what = f"first-seen time of {project!r} {filename!r}"
        if not (isinstance(project, str) and project and normalize(project) == project):
            report.fail(what, "unusable record: the project is not a normalized name")
        elif not (isinstance(filename, str) and filename and "/" not in filename):
            report.fail(what, "unusable record: not a file name")
        elif (isinstance(seen, bool) or not isinstance(seen, (int, float))
              or not math.isfinite(seen) or seen <= 0):
            report.fail(what, "unusable record: seen is not a time in seconds")
        else:
            usable[0] += 1
            yield project, filename, float(seen)
