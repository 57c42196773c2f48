"""The goals of issue #13 (cold installs, uv's requests, the full project list, the default
workers) and of issue #11 (the cluster), judged on one run's results, each as a ratio or a figure
of that run."""

from __future__ import annotations

from benchmarks.report import PAGE_CASES, RSS_FLAT_MB, _at_least, _at_most, _get, _ok, _ratio, _rps

COLD_WARM_MAX = 1.3
UV_NGINX_MAX = 1.1
PAGES_NGINX_MIN = 0.4
LIST_RSS_MAX_MB = 50.0
LIST_STALL_MAX_MS = 50.0
UV_PER_WHEEL_MAX = 2.0  # the wheel's .metadata and the wheel
CLUSTER_MIN = 0.9
CLUSTER_TTFB_OVER_LATENCY_MS = 20.0  # 70 ms with the default 50 ms upstream
FLAVORS = {"normal": "full upstream", "html_only": "HTML-only upstream"}
BALANCED = "pyproxy-2w-lb"  # benchmarks.cluster.BalancedNode


def goals(results: dict) -> list[dict]:
    rows: list[dict] = []
    if "issue13" in results:
        rows += _issue13(results)
    if _ok(results, "cluster"):
        rows += _issue11(results)
    return rows


def _row(issue: int, target: str, verdict: tuple[bool | None, str], prefix: str = "") -> dict:
    met, detail = verdict
    return {"issue": issue, "target": target, "met": met,
            "detail": f"{prefix}{detail}" if met is not None else detail}


def _issue13(results: dict) -> list[dict]:
    case = results["issue13"]
    rows = []
    for flavor, label in FLAVORS.items():
        for client in ("pip", "uv"):
            cold, warm = _get(case, flavor, client, "cold_s"), _get(case, flavor, client, "warm_s")
            lower, trips = (_get(case, flavor, client, key) for key in ("lower_bound_s",
                                                                         "round_trips"))
            verdict = _at_most(_ratio(cold, warm), COLD_WARM_MAX, "not run")
            if lower and cold and warm:  # how close to the physics it is
                verdict = (verdict[0], f"{verdict[1]}; bound {lower:.2f} s (warm + {trips} "
                                       f"round trips) = {lower / warm:.2f} × warm, cold ÷ bound "
                                       f"{cold / lower:.2f}")
            rows.append(_row(13, f"{client} install cold ÷ warm ≤ {COLD_WARM_MAX:g} ({label})",
                             verdict, f"{cold:.2f} s ÷ {warm:.2f} s = " if cold and warm else ""))
        asked = _get(case, flavor, "uv", "cold_requests") or {}
        parts = ", ".join(f"{k} {v}" for k, v in asked.items() if k not in ("per_wheel",))
        rows.append(_row(13, f"uv requests per cold wheel ≤ {UV_PER_WHEEL_MAX:g}, .metadata + "
                             f"wheel ({label})",
                         _at_most(asked.get("per_wheel"), UV_PER_WHEEL_MAX, "access log"),
                         f"{parts}: "))
    if case.get("installs_only"):  # run.py --only installs: nothing else was measured
        return rows
    uv, nginx = _get(case, "normal", "uv", "warm_s"), _nginx(results, "uv", "warm_s")
    rows.append(_row(13, f"warm uv install ≤ {UV_NGINX_MAX:g} × nginx (default workers)",
                     _at_most(_ratio(uv, nginx), UV_NGINX_MAX, "needs nginx"),
                     f"{uv:.2f} s ÷ {nginx:.2f} s = " if uv and nginx else ""))
    workers = case.get("workers")
    for page in PAGE_CASES:
        mine = _get(case, "pages", page, "rps") if _get(case, "pages", page, "status") == 200 \
            else None
        theirs = _rps(results, "nginx", page)
        rows.append(_row(13, f"{page} req/s with the default {workers} workers ≥ "
                             f"{PAGES_NGINX_MIN:g} × nginx",
                         _at_least(_ratio(mine, theirs), PAGES_NGINX_MIN, "needs nginx"),
                         f"{mine:.0f} ÷ {theirs:.0f} = " if mine and theirs else ""))
        rows += _ceiling(results, page, mine, theirs, workers)
    names = _get(case, "project_list", "names") or 0
    for fmt in ("html", "json"):
        got = _get(case, "project_list", fmt) or {}
        label = f"cold /simple/ {fmt.upper()} of {names:,} names"
        rows.append(_row(13, f"{label}: worker peak RSS growth ≤ {LIST_RSS_MAX_MB:g} MB",
                         _at_most(got.get("rss_peak_growth_mb"), LIST_RSS_MAX_MB, "list case")))
        rows.append(_row(13, f"{label}: RSS returned (kept ≤ {RSS_FLAT_MB:g} MB)",
                         _at_most(got.get("rss_kept_mb"), RSS_FLAT_MB, "list case")))
        rows.append(_row(13, f"{label}: small page worst latency ≤ {LIST_STALL_MAX_MS:g} ms",
                         _at_most(got.get("probe_max_ms"), LIST_STALL_MAX_MS, "list case"),
                         f"{got.get('probes')} probes, p99 {got.get('probe_p99_ms')} ms, max "
                         if got.get("probes") else ""))
    return rows


def _ceiling(results: dict, page: str, mine: float | None, nginx: float | None,
             workers: int | None) -> list[dict]:
    """Not goals: the same page served by bare aiohttp with as many processes (the
    framework's own ceiling here), against nginx and against pyproxy."""
    bare = _rps(results, "aiohttp", page) if _ok(results, "aiohttp") else None
    if bare is None:
        return []
    rows = [(f"{page} req/s: bare aiohttp ({workers} processes, static) ÷ nginx",
             _ratio(bare, nginx)),
            (f"{page} req/s: pyproxy ({workers} workers) ÷ bare aiohttp", _ratio(mine, bare))]
    return [{"issue": 13, "info": True, "met": None, "target": target,
             "detail": "not measured" if ratio is None else f"{ratio:.2f}"}
            for target, ratio in rows]


def _nginx(results: dict, *path: str) -> float | None:
    return _get(results["servers"]["nginx"], *path) if _ok(results, "nginx") else None


def _issue11(results: dict) -> list[dict]:
    cluster = results["servers"]["cluster"]
    one = results["servers"].get("pyproxy-2w") if _ok(results, "pyproxy-2w") else None
    rows = []
    for page in PAGE_CASES:
        rows.append(_row(11, f"{page} req/s ≥ {CLUSTER_MIN:g} × one node of 2 workers",
                         _at_least(_ratio(_rps(results, "cluster", page),
                                          _rps(results, "pyproxy-2w", page)),
                                   CLUSTER_MIN, "needs pyproxy-2w")))
    rows.append(_row(11, f"big file warm MB/s ≥ {CLUSTER_MIN:g} × one node of 2 workers",
                     _at_least(_ratio(_get(cluster, "big_file", "warm_mb_per_s"),
                                      _get(one, "big_file", "warm_mb_per_s")),
                               CLUSTER_MIN, "needs pyproxy-2w")))
    hits = _get(cluster, "stampede", "upstream_file_requests")
    spread = _get(cluster, "stampede", "per_node")
    rows.append({"issue": 11, "target": "50 concurrent cold requests over both nodes → 1 "
                 "upstream request", "met": None if hits is None else hits == 1,
                 "detail": "not measured" if hits is None
                 else f"{hits} upstream request(s), per node {spread}"})
    limit = (_get(results, "meta", "latency_ms") or 0.0) + CLUSTER_TTFB_OVER_LATENCY_MS
    rows.append(_row(11, f"cold file TTFB ≤ latency + 20 ms ({limit:g} ms)",
                     _at_most(_get(cluster, "cold", "file_ttfb_ms"), limit, "cold file")))
    return rows + _balanced(results)


def _balanced(results: dict) -> list[dict]:
    """Not goals: the cluster against one node of as many workers behind the same nginx, so
    that the cluster's own cost shows apart from the balancer's hop on this machine."""
    if not _ok(results, BALANCED):
        return []
    cluster, one = results["servers"]["cluster"], results["servers"][BALANCED]
    ratios = [(f"{page} req/s", _ratio(_rps(results, "cluster", page), _rps(results, BALANCED, page)))
              for page in PAGE_CASES]
    for label, path in (("big file warm MB/s", ("big_file", "warm_mb_per_s")),
                        ("cold file TTFB", ("cold", "file_ttfb_ms"))):
        ratios.append((label, _ratio(_get(cluster, *path), _get(one, *path))))
    return [{"issue": 11, "info": True, "met": None,
             "target": f"{label}: cluster ÷ one node of 2 workers behind the same nginx",
             "detail": "not measured" if ratio is None else f"{ratio:.2f}"}
            for label, ratio in ratios]


def lines(rows: list[dict], results: dict) -> list[str]:
    text = []
    case = results.get("issue13") or {}
    for issue, title in ((13, f"issue #13 goals (pyproxy with its default workers, "
                               f"{case.get('workers')} here; cold = fresh data dir, median of "
                               f"{case.get('cold_repeats')}):"),
                         (11, "issue #11 goals (cluster):")):
        mine = [r for r in rows if r["issue"] == issue]
        if not mine:
            continue
        text += ["", title]
        for r in mine:
            mark = "info  " if r.get("info") else {True: "met   ", False: "MISSED",
                                                    None: "n/a   "}[r["met"]]
            text.append(f"  {mark} {r['target']}: {r['detail']}")
    for flavor in FLAVORS:
        if _get(case, flavor, "error"):
            text.append(f"  issue #13 {flavor}: {case[flavor]['error']}")
        for client in ("pip", "uv"):
            if _get(case, flavor, client, "error"):
                text.append(f"  issue #13 {flavor} {client}: {case[flavor][client]['error']}")
    if _get(case, "project_list", "error"):
        text.append(f"  issue #13 project list: {case['project_list']['error']}")
    return text
