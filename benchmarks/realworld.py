"""Issue #13's install cases: cold against warm `pip install` and `uv pip install` of the
requirement set through a pyproxy with its default workers, in front of the normal fake upstream
and of the HTML-only one (no `.metadata`, no ranges), and what uv asks pyproxy for per wheel.

Cold means a fresh pyproxy (new data dir) for every cold run; the warm runs follow the first
cold run on the same server. uv's requests are read from pyproxy's access log, the upstream's
by kind from its counters.

Beside each cold time stands its physical lower bound: however fast pyproxy is, a cold install
waits for the upstream round trips that depend on each other. The set is DEPTH levels deep
(bench-app, then its libraries; bench-huge's chain is shorter), and each level costs
ROUND_TRIPS_PER_LEVEL upstream round trips before the next level's names are known: its page,
then its `.metadata` (the HTML-only upstream: its page, then the whole wheel, the only source
of its metadata). The normal upstream then needs one more for the wheels (all in parallel); the
HTML-only one already has them. So `lower_bound_s` = the warm time (the client's own work) +
those round trips × the upstream latency (transfer on loopback is negligible at these sizes).
"""

from __future__ import annotations

import collections
import urllib.parse
from collections.abc import Callable
from pathlib import Path

from benchmarks import corpus, measure
from benchmarks.servers import Pyproxy, Upstream

METADATA_SUFFIX = ".metadata"
DEPTH = 2  # bench-app -> bench-lib-N, bench-small (corpus.py)
ROUND_TRIPS_PER_LEVEL = 2  # the page, then the .metadata (HTML-only: then the whole wheel)
DOWNLOAD_ROUND_TRIPS = {"normal": 1, "html_only": 0}  # the wheels, once resolved


def round_trips(flavor: str) -> int:
    """Upstream round trips on a cold install's critical path, however fast pyproxy is."""
    return DEPTH * ROUND_TRIPS_PER_LEVEL + DOWNLOAD_ROUND_TRIPS[flavor]


def bound(entry: dict, flavor: str, latency_s: float) -> dict:
    """The lower bound of the cold time and how cold compares with warm and with it."""
    warm, cold = entry.get("warm_s"), entry.get("cold_s")
    if warm is None:
        return {}
    trips = round_trips(flavor)
    lower = warm + trips * latency_s
    out = {"round_trips": trips, "lower_bound_s": round(lower, 3),
           "lower_bound_ratio": round(lower / warm, 2)}
    if cold is not None:
        out.update(cold_warm=round(cold / warm, 2), cold_bound=round(cold / lower, 2))
    return out


def uv_requests(logged: list[tuple[str, str, int, str]], index_path: str) -> dict:
    """What uv asked for, from (method, path, status, agent) rows: pages, and per wheel the
    `.metadata` GETs, HEADs, range GETs (206) and whole GETs; `per_wheel` is all file requests
    ÷ wheels. Requests of other agents (the benchmark's own) are left out."""
    kinds: collections.Counter[str] = collections.Counter()
    wheels: set[str] = set()
    for method, path, status, agent in logged:
        if not agent.startswith("uv/"):
            continue
        if path.startswith(index_path):
            kinds["pages"] += 1
            continue
        name = urllib.parse.unquote(path.rsplit("/", 1)[-1])
        base = name.removesuffix(METADATA_SUFFIX)
        if not base.endswith(".whl"):
            kinds["other"] += 1
            continue
        wheels.add(base)
        if name.endswith(METADATA_SUFFIX):
            kinds["metadata"] += 1
        elif method == "HEAD":
            kinds["head"] += 1
        elif status == 206:
            kinds["range"] += 1
        else:
            kinds["whole"] += 1
    files = sum(kinds[k] for k in ("metadata", "head", "range", "whole"))
    return {"wheels": len(wheels), **dict(kinds),
            "per_wheel": round(files / len(wheels), 2) if wheels else None}


def _seconds(runs: list[measure.PipRun]) -> tuple[list[float], str]:
    errors = [r.error for r in runs if r.error]
    return [round(r.seconds, 3) for r in runs if r.seconds is not None], (errors[0] if errors
                                                                          else "")


def installs(make: Callable[[str], Pyproxy], upstream: Upstream, *, clients: tuple[str, ...],
             cold_reps: int, uv_reps: int, pip_reps: int, work: Path, flavor: str = "normal",
             latency_s: float = 0.05, on_warm: Callable[[Pyproxy], dict] | None = None) -> dict:
    """Per client: a fresh server (`make(label)`), a cold run (uv's requests counted), then the
    warm runs on it (uv: the best of `uv_reps`, pip: the median of `pip_reps`), then more fresh
    servers for the other cold runs (the median counts). `on_warm(server)` runs on the first
    uv server once it is warm; its result is returned as `warm_server`. `flavor` (normal or
    html_only) and `latency_s` give the lower bound (see the module's text)."""
    result: dict = {}
    reqs = corpus.PIP_REQUIREMENTS
    for client in clients:
        install = measure.uv_install if client == "uv" else measure.pip_install
        target = work / f"{client}-target"
        cold: list[measure.PipRun] = []
        warm: list[measure.PipRun] = []
        entry: dict = {}
        for rep in range(cold_reps):
            server = make(f"{client}-{rep + 1}")
            try:
                server.start(upstream.index_url)
                mark, kinds_before = server.log_mark(), upstream.kinds()
                cold.append(install(server.index_url, reqs, target))
                if rep == 0:
                    after = upstream.kinds()
                    entry["cold_upstream_requests"] = {
                        k: after.get(k, 0) - kinds_before.get(k, 0) for k in after
                        if after.get(k, 0) != kinds_before.get(k, 0)}
                    if client == "uv":
                        path = urllib.parse.urlsplit(server.index_url).path
                        entry["cold_requests"] = uv_requests(server.requests(mark), path)
                    reps = uv_reps if client == "uv" else pip_reps
                    warm = [install(server.index_url, reqs, target) for _ in range(reps)]
                    if on_warm is not None and client == "uv":
                        result["warm_server"] = on_warm(server)
            finally:
                server.stop()
        cold_s, cold_error = _seconds(cold)
        warm_s, warm_error = _seconds(warm)
        entry.update(cold_samples_s=cold_s, warm_samples_s=warm_s,
                     cold_s=measure.median(cold_s),
                     # uv runs are short, so a busy machine shows: the best counts for uv
                     warm_s=(min(warm_s, default=None) if client == "uv"
                             else measure.median(warm_s)))
        entry.update(bound(entry, flavor, latency_s))
        if cold_error or warm_error:
            entry["error"] = cold_error or warm_error
        result[client] = entry
    return result
