"""The printed table and the issue's targets, from the results dictionary that run.py writes."""

from __future__ import annotations

from collections.abc import Callable

ORDER = ["pyproxy", "pyproxy-2w", "nginx", "aiohttp", "devpi", "proxpi", "cluster",
         "pyproxy-2w-lb", "direct"]
PYPROXIES = {"pyproxy": "1w", "pyproxy-2w": "2w"}
PEERS = ["nginx", "devpi", "proxpi"]
PAGE_CASES = ["small_html", "small_json", "huge_html", "huge_json"]
RSS_PER_WORKER_MB = 100.0
RSS_FLAT_MB = 16.0  # "flat": the big file (60 MB) streams with less growth than this


def _get(data: dict | None, *path: str):
    for key in path:
        if not isinstance(data, dict):
            return None
        data = data.get(key)
    return data


def _server(results: dict, name: str) -> dict | None:
    return results.get("servers", {}).get(name)


def _ok(results: dict, name: str) -> bool:
    entry = _server(results, name)
    return entry is not None and entry.get("status") in ("ok", "failed")


# ---- targets ------------------------------------------------------------------------------------

def _at_least(value: float | None, limit: float, what: str) -> tuple[bool | None, str]:
    if value is None:
        return None, f"not measured ({what})"
    if value >= limit:
        return True, f"{value:.2f} ≥ {limit:g}"
    if not value:
        return False, f"{value:.2f} < {limit:g}"
    return False, (f"{value:.2f} < {limit:g}: missed by {_pct(1 - value / limit)} "
                   f"(needs ×{limit / value:.2f})")


def _at_most(value: float | None, limit: float, what: str) -> tuple[bool | None, str]:
    if value is None:
        return None, f"not measured ({what})"
    if value <= limit:
        return True, f"{value:.2f} ≤ {limit:g}"
    return False, f"{value:.2f} > {limit:g}: missed by {_pct(value / limit - 1)}"


def _pct(fraction: float) -> str:
    return f"{fraction:.1%}" if fraction < 0.1 else f"{fraction:.0%}"


def _ratio(a: float | None, b: float | None) -> float | None:
    if a is None or b is None or b == 0:
        return None
    return a / b


def _rps(results: dict, name: str, case: str) -> float | None:
    if not _ok(results, name) or _get(_server(results, name), "pages", case, "status") != 200:
        return None
    return _get(_server(results, name), "pages", case, "rps") or None


def targets(results: dict) -> list[dict]:
    rows: list[dict] = []
    latency = _get(results, "meta", "latency_ms") or 0.0

    def add(target: str, server: str, verdict: tuple[bool | None, str]) -> None:
        rows.append({"target": target, "server": server, "met": verdict[0], "detail": verdict[1]})

    for name in PYPROXIES:
        if not _ok(results, name):
            continue
        me = _server(results, name)
        for case in PAGE_CASES:
            add(f"{case} req/s ≥ 0.5 × nginx", name,
                _at_least(_ratio(_rps(results, name, case), _rps(results, "nginx", case)), 0.5,
                          "needs nginx"))
            peers = [r for p in ("devpi", "proxpi") if (r := _rps(results, p, case)) is not None]
            add(f"{case} req/s ≥ 3 × faster of devpi/proxpi", name,
                _at_least(_ratio(_rps(results, name, case), max(peers, default=None)), 3.0,
                          "needs devpi or proxpi"))
        for fmt in ("html", "json"):
            cost = _ratio(_rps(results, name, f"small_{fmt}"), _rps(results, name, f"huge_{fmt}"))
            add(f"{fmt}: 5,000-file page costs ≤ 2 × 10-file page", name,
                _at_most(cost, 2.0, "page loads"))
        add("big file warm throughput ≥ 0.8 × nginx", name,
            _at_least(_ratio(_get(me, "big_file", "warm_mb_per_s"),
                             _get(_server(results, "nginx"), "big_file", "warm_mb_per_s")
                             if _ok(results, "nginx") else None), 0.8, "needs nginx"))
        ttfb = _get(me, "cold", "file_ttfb_ms")
        add(f"cold file TTFB ≤ latency + 20 ms ({latency + 20:g} ms)", name,
            _at_most(ttfb, latency + 20, "cold file"))
        add("cold file total ≤ 1.1 × direct from upstream", name,
            _at_most(_ratio(_get(me, "cold", "file_total_ms"),
                            _get(_server(results, "direct"), "cold", "file_total_ms")), 1.1,
                     "cold file"))
        hits = _get(me, "stampede", "upstream_file_requests")
        add("50 concurrent cold requests → 1 upstream request", name,
            (None, "not measured") if hits is None
            else (hits == 1, f"{hits} upstream request(s)"
                  + ("" if hits == 1 else f": {hits - 1} too many")))
        add("warm pip install ≤ 1.05 × nginx", name,
            _at_most(_ratio(_get(me, "pip", "warm_s"),
                            _get(_server(results, "nginx"), "pip", "warm_s")
                            if _ok(results, "nginx") else None), 1.05, "needs nginx"))
        add("warm uv pip install ≤ 1.1 × nginx (issue #13)", name,
            _at_most(_ratio(_get(me, "uv", "warm_s"),
                            _get(_server(results, "nginx"), "uv", "warm_s")
                            if _ok(results, "nginx") else None), 1.1, "needs nginx"))
        add("warm 3 KB file p99 ≤ 2 ms at the server (access log, whole ms), 32 clients"
            " (issue #13)", name,
            _at_most(_get(me, "small_file", "server_p99_ms"), 2.0, "access log"))
        add(f"peak RSS ≤ {RSS_PER_WORKER_MB:g} MB per worker", name,
            _at_most(_get(me, "rss", "peak_per_process_mb"), RSS_PER_WORKER_MB, "rss"))
        growth = [g for g in (_get(me, "rss", "stream_first_growth_mb"),
                              _get(me, "rss", "stream_warm_growth_mb")) if g is not None]
        add(f"RSS flat while streaming the big file (growth ≤ {RSS_FLAT_MB:g} MB)", name,
            _at_most(max(growth, default=None), RSS_FLAT_MB, "rss"))
    return rows


# ---- the table ----------------------------------------------------------------------------------

Row = tuple[str, str, Callable[[dict], float | None], str]  # label, better, getter, format


def _page_rows(corpus: dict) -> list[Row]:
    rows: list[Row] = []
    for case in [*PAGE_CASES, "huge_html_gzip", "huge_json_gzip"]:
        size, fmt, *gzip = case.split("_")
        files = corpus.get("small_files" if size == "small" else "huge_files", "?")
        label = f"{files:,}-file page {fmt.upper()}{' gzip' if gzip else ''}"
        rows.append((f"{label} req/s", "hi", lambda s, c=case: _page(s, c, "rps"), "{:.0f}"))
        rows.append((f"{label} p99 ms", "lo", lambda s, c=case: _page(s, c, "p99_ms"), "{:.2f}"))
    return rows


def _page(entry: dict, case: str, key: str) -> float | None:
    page = _get(entry, "pages", case)
    if not page or page.get("status") != 200:
        return None
    return page.get(key)


ROWS: list[Row] = [
    ("big file warm MB/s", "hi", lambda s: _get(s, "big_file", "warm_mb_per_s"), "{:.0f}"),
    ("big file first download s", "lo", lambda s: _get(s, "big_file", "first_total_s"), "{:.3f}"),
    ("cold page TTFB ms", "lo", lambda s: _get(s, "cold", "page_ttfb_ms"), "{:.1f}"),
    ("cold page total ms", "lo", lambda s: _get(s, "cold", "page_total_ms"), "{:.1f}"),
    ("cold file TTFB ms", "lo", lambda s: _get(s, "cold", "file_ttfb_ms"), "{:.1f}"),
    ("cold file total ms", "lo", lambda s: _get(s, "cold", "file_total_ms"), "{:.1f}"),
    ("cold page+file upstream requests", "lo", lambda s: _get(s, "cold", "upstream_requests"),
     "{:.0f}"),
    ("50 cold requests: upstream requests", "lo",
     lambda s: _get(s, "stampede", "upstream_file_requests"), "{:.0f}"),
    ("pip install cold s", "lo", lambda s: _get(s, "pip", "cold_s"), "{:.2f}"),
    ("pip install warm s", "lo", lambda s: _get(s, "pip", "warm_s"), "{:.2f}"),
    ("uv pip install warm s, best (direct: cold)", "lo",
     lambda s: _get(s, "uv", "warm_s") or _get(s, "uv", "cold_s"), "{:.2f}"),
    ("warm 3 KB file, 32 clients req/s", "hi", lambda s: _get(s, "small_file", "rps"), "{:.0f}"),
    ("warm 3 KB file p50 ms (client)", "lo", lambda s: _get(s, "small_file", "p50_ms"), "{:.2f}"),
    ("warm 3 KB file p99 ms (client)", "lo", lambda s: _get(s, "small_file", "p99_ms"), "{:.2f}"),
    ("warm 3 KB file p50 ms (server)", "lo", lambda s: _get(s, "small_file", "server_p50_ms"),
     "{:.2f}"),
    ("warm 3 KB file p99 ms (server)", "lo", lambda s: _get(s, "small_file", "server_p99_ms"),
     "{:.2f}"),
    ("peak RSS, all processes MB", "lo", lambda s: _get(s, "rss", "peak_total_mb"), "{:.1f}"),
    ("peak RSS, one process MB", "lo", lambda s: _get(s, "rss", "peak_per_process_mb"), "{:.1f}"),
    ("RSS growth streaming big file MB", "lo",
     lambda s: _max(_get(s, "rss", "stream_first_growth_mb"),
                    _get(s, "rss", "stream_warm_growth_mb")), "{:.1f}"),
]


def _max(*values: float | None) -> float | None:
    present = [v for v in values if v is not None]
    return max(present) if present else None


def table(results: dict) -> str:
    servers = [name for name in ORDER if name in results.get("servers", {})]
    ratio_columns = [(p, peer) for p in PYPROXIES if p in servers for peer in PEERS
                     if peer in servers]
    header = ["metric", "better", *servers,
              *[f"{PYPROXIES[p]}÷{peer}" for p, peer in ratio_columns]]
    lines: list[list[str]] = [header]
    status = ["status", ""]
    for name in servers:
        status.append(results["servers"][name].get("status", "?"))
    lines.append(status + [""] * len(ratio_columns))
    meta = results.get("meta", {})
    corpus = meta.get("corpus", {})
    for label, better, getter, fmt in [*_page_rows(corpus), *ROWS]:
        values = {name: getter(results["servers"][name]) for name in servers}
        if all(v is None for v in values.values()):
            continue
        cells = [label, better]
        cells += ["—" if values[n] is None else fmt.format(values[n]) for n in servers]
        for p, peer in ratio_columns:
            ratio = _ratio(values.get(p), values.get(peer))
            cells.append("—" if ratio is None else f"{ratio:.2f}")
        lines.append(cells)
    widths = [max(len(row[i]) for row in lines) for i in range(len(header))]
    text = []
    text.append(
        "pyproxy benchmark"
        f"{' (QUICK: tiny inputs, not a measurement)' if meta.get('quick') else ''}"
        f" — upstream latency {meta.get('latency_ms', '?'):g} ms, load: {meta.get('loadgen')} "
        f"{meta.get('connections')} connections, best of {meta.get('load_repeats')} × "
        f"{meta.get('load_seconds')} s, "
        f"pages of {corpus.get('small_files')} and {corpus.get('huge_files')} files, "
        f"big file {corpus.get('big_file_bytes', 0) / 1e6:.0f} MB, {meta.get('cpus')} CPUs"
    )
    if meta.get("loadgen") == "python":
        text.append("NOTE: wrk not available: req/s and p99 come from the python load generator "
                    "(far below what the servers can do; compare only within this run)")
    for i, row in enumerate(lines):
        text.append("  ".join(cell.rjust(widths[j]) if j >= 2 else cell.ljust(widths[j])
                              for j, cell in enumerate(row)))
        if i == 0:
            text.append("  ".join("-" * w for w in widths))
    text.append("better: hi = higher is better, lo = lower is better; "
                "1w/2w = pyproxy with 1 / 2 workers, ratio = pyproxy ÷ peer")
    text.extend(_notes(results, servers))
    verdicts = results.get("targets") or targets(results)
    if verdicts:
        text.append("")
        text.append("issue #6 targets:")
        for v in verdicts:
            mark = {True: "met   ", False: "MISSED", None: "n/a   "}[v["met"]]
            text.append(f"  {mark} {v['server']:<11} {v['target']}: {v['detail']}")
    return "\n".join(text)


def _notes(results: dict, servers: list[str]) -> list[str]:
    notes = []
    for name in servers:
        entry = results["servers"][name]
        if entry.get("version"):
            notes.append(f"  {name}: {entry['version']}")
        if entry.get("status") != "ok":
            notes.append(f"  {name}: {entry.get('status')}: {entry.get('reason')}")
        for case, page in (entry.get("pages") or {}).items():
            if page.get("note"):
                notes.append(f"  {name} {case}: {page['note']}")
            if page.get("errors"):
                notes.append(f"  {name} {case}: {page['errors']} failed requests under load")
        for client in ("pip", "uv"):
            if _get(entry, client, "error"):
                notes.append(f"  {name} {client}: {entry[client]['error']}")
        if _get(entry, "small_file", "note"):
            notes.append(f"  {name} warm small file: {entry['small_file']['note']}")
        if _get(entry, "small_file", "errors"):
            notes.append(f"  {name} warm small file: {entry['small_file']['errors']} failed "
                         "requests under load")
        if _get(entry, "big_file", "warm_retries"):
            notes.append(f"  {name}: right after its first download the big file failed "
                         f"{entry['big_file']['warm_retries']} more time(s) before it was served")
        statuses = _get(entry, "stampede", "statuses")
        if statuses and set(statuses) != {"200"}:
            notes.append(f"  {name} 50 cold requests answered: {statuses}")
        for case, prof in (entry.get("profile") or {}).items():
            if prof.get("top_own_pct"):
                own = ", ".join(f"{pct}% {fn}" for pct, fn in prof["top_own_pct"][:5])
                notes.append(f"  {name} profile {case} (own time): {own}")
            elif prof.get("error"):
                notes.append(f"  {name} profile {case}: {prof['error']}")
    return notes
