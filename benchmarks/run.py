"""pyproxy side by side with nginx (static files), devpi-server and proxpi: one command.

    .venv/bin/python benchmarks/run.py [--quick] [--only pyproxy,nginx,...] [--latency-ms 50]
                                       [--json out.json] [--profile]

Prepares its inputs under benchmarks/.work/ (see benchmarks/README.md), prints one table and
writes every number as JSON. Stops every process it started, also on Ctrl-C or failure.
"""

from __future__ import annotations

import argparse
import json
import os
import platform
import signal
import sys
import time
import traceback
import urllib.parse
from contextlib import contextmanager
from datetime import UTC, datetime
from pathlib import Path

HERE = Path(__file__).resolve().parent
REPO = HERE.parent
# run as a script: import this directory as the `benchmarks` package, not as loose modules
if sys.path and Path(sys.path[0]).resolve() == HERE:
    sys.path.pop(0)
if str(REPO) not in sys.path:
    sys.path.insert(0, str(REPO))

from benchmarks import biglist, corpus, goals, measure, pyspy, realworld, report, servers
from benchmarks.cluster import BalancedNode, Cluster
from benchmarks.corpus import BIG, HUGE, META, METADATA_SUFFIX, SMALL, STAMPEDE, Corpus
from benchmarks.measure import HTML_ACCEPT, JSON_ACCEPT, PIP_ACCEPT, RssSampler, fetch
from benchmarks.servers import Server, Unavailable, Upstream

ALL = ["pyproxy", "pyproxy-2w", "nginx", "aiohttp", "devpi", "proxpi", "cluster",
       "pyproxy-2w-lb"]
INSTALLS = "installs"  # issue #13's install cases alone: no server rows, no project list
STAMPEDE_CLIENTS = 50
SMALL_FILE_CLIENTS = 32  # about as many requests as uv keeps in flight


def parse_args(argv: list[str] | None) -> argparse.Namespace:
    parser = argparse.ArgumentParser(description="pyproxy benchmark, side by side with its peers")
    parser.add_argument("--quick", action="store_true",
                        help="tiny inputs and 1 s loads: a smoke run, not a measurement")
    parser.add_argument("--only", default=",".join(ALL),
                        help=f"comma-separated servers (default: {','.join(ALL)}); the direct "
                             "upstream reference always runs, pyproxy brings issue #13's "
                             f"cases, cluster brings pyproxy-2w-lb; '{INSTALLS}': only issue "
                             "#13's cold and warm installs")
    parser.add_argument("--clients", default="uv,pip",
                        help="issue #13's installs: uv, pip or both (default; uv only with "
                             "--quick)")
    parser.add_argument("--latency-ms", type=float, default=50.0,
                        help="delay of every upstream answer (default 50)")
    parser.add_argument("--seconds", type=float, help="length of each load run (default 3; 1 "
                                                      "with --quick)")
    parser.add_argument("--repeats", type=int, help="load runs per case, the best one counts "
                                                    "(default 2; 1 with --quick)")
    parser.add_argument("--cold-repeats", type=int,
                        help="issue #13: cold installs per client and upstream, each on a fresh "
                             "pyproxy, the median counts (default 2; 1 with --quick)")
    parser.add_argument("--connections", type=int, default=10,
                        help="concurrent keep-alive connections of a page load (default 10)")
    parser.add_argument("--loadgen", choices=["auto", "wrk", "python"], default="auto",
                        help="auto: wrk when installed (or installable), else python")
    parser.add_argument("--no-install", action="store_true",
                        help="never apt-get or pip install; what is missing is unavailable")
    parser.add_argument("--profile", action="store_true",
                        help="also py-spy the warm page path of pyproxy (1 worker)")
    parser.add_argument("--case", choices=["project-list"],
                        help="run only this issue #13 case (with pyproxy) and print its JSON")
    parser.add_argument("--work-dir", type=Path, default=HERE / ".work")
    parser.add_argument("--json", type=Path, help="where to write the numbers "
                                                  "(default: WORK/results.json)")
    args = parser.parse_args(argv)
    args.only = [name.strip() for name in args.only.split(",") if name.strip()]
    if "cluster" in args.only and "pyproxy-2w-lb" not in args.only:
        args.only.append("pyproxy-2w-lb")  # what the cluster's balancer costs, beside it
    unknown = sorted(set(args.only) - {*ALL, INSTALLS})
    if unknown:
        parser.error(f"unknown server(s) {', '.join(unknown)}; choose from "
                     f"{', '.join([*ALL, INSTALLS])}")
    args.clients = tuple(c.strip() for c in args.clients.split(",") if c.strip())
    if not args.clients or set(args.clients) - {"uv", "pip"}:
        parser.error("--clients takes uv, pip or uv,pip")
    if args.seconds is None:
        args.seconds = 1.0 if args.quick else 3.0
    if args.repeats is None:
        args.repeats = 1 if args.quick else 2
    if args.cold_repeats is None:
        args.cold_repeats = 1 if args.quick else 2
    return args


def say(message: str) -> None:
    print(f"[bench {time.strftime('%H:%M:%S')}] {message}", file=sys.stderr, flush=True)


def _raise_interrupt(signum: int, _frame: object) -> None:
    raise KeyboardInterrupt(f"signal {signum}")


@contextmanager
def _shielded():
    """A second Ctrl-C waits until the processes are stopped, then interrupts."""
    signals = {signal.SIGINT, signal.SIGTERM}
    signal.pthread_sigmask(signal.SIG_BLOCK, signals)
    try:
        yield
    finally:
        signal.pthread_sigmask(signal.SIG_UNBLOCK, signals)


def main(argv: list[str] | None = None) -> int:
    args = parse_args(argv)
    work = args.work_dir.resolve()
    work.mkdir(parents=True, exist_ok=True)
    # also SIGINT: a shell starts background jobs with it ignored, and Ctrl-C must still clean up
    signal.signal(signal.SIGTERM, _raise_interrupt)
    signal.signal(signal.SIGINT, _raise_interrupt)
    started = time.monotonic()
    results: dict = {"meta": {}, "servers": {}}
    upstreams: list[Upstream] = []
    try:
        small = args.quick or args.case is not None  # a case needs only the small projects
        sizes = corpus.QUICK if small else corpus.FULL
        say(f"corpus ({'quick' if small else 'full'}) under {work}")
        data = corpus.build(work / ("corpus-quick" if small else "corpus"), sizes)
        if args.case == "project-list":
            print(json.dumps(_case(lambda: full_list(args, work, data, upstreams)), indent=2))
            return 0
        tool = _load_tool(args)
        candidates = _servers(args, work, data)
        for server in candidates:  # install everything before measuring anything
            try:
                server.prepare(not args.no_install)
            except Unavailable as exc:
                server.unavailable = str(exc)
        upstream = Upstream(work, data.root, args.latency_ms)
        upstreams.append(upstream)
        upstream.start()
        results["meta"] = _meta(args, data, tool)
        only_installs = args.only == [INSTALLS]
        direct = servers.Direct(work, upstream)
        for server in [] if only_installs else [direct, *candidates]:
            results["servers"][server.name] = bench_server(server, args, data, upstream, tool)
        if "pyproxy" in args.only or INSTALLS in args.only:
            results["issue13"] = bench_issue13(args, work, data, upstream, upstreams, tool,
                                               installs_only=only_installs)
    except KeyboardInterrupt:
        say("interrupted: stopping everything")
        return 130
    finally:
        with _shielded():
            for origin in upstreams:
                origin.stop()
    results["meta"]["seconds"] = round(time.monotonic() - started, 1)
    results["targets"] = report.targets(results)
    results["goals"] = goals.goals(results)
    out = (args.json or work / "results.json").resolve()
    out.parent.mkdir(parents=True, exist_ok=True)
    out.write_text(json.dumps(results, indent=2) + "\n")
    print(report.table(results))
    for line in goals.lines(results["goals"], results):
        print(line)
    print(f"\nnumbers: {out}")
    return 0


def _load_tool(args: argparse.Namespace) -> str:
    if args.loadgen == "python":
        return "python"
    if not measure.wrk_available():
        reason = servers.ensure_apt({"wrk": "wrk"}, not args.no_install)
        if reason:
            if args.loadgen == "wrk":
                raise SystemExit(f"benchmark: {reason}")
            say(f"{reason}: using the python load generator")
            return "python"
    return "wrk"


def _servers(args: argparse.Namespace, work: Path, data: Corpus) -> list[Server]:
    made = {
        "pyproxy": lambda: servers.Pyproxy(work, 1),
        "pyproxy-2w": lambda: servers.Pyproxy(work, 2),
        "nginx": lambda: servers.Nginx(work, data.root),
        "aiohttp": lambda: servers.StaticAiohttp(work, data.root, servers.default_workers()),
        "devpi": lambda: servers.Devpi(work),
        "proxpi": lambda: servers.Proxpi(work),
        "cluster": lambda: Cluster(work),
        "pyproxy-2w-lb": lambda: BalancedNode(work),
    }
    chosen = []
    for name in ALL:  # a fixed order, whatever --only says
        if name in args.only:
            chosen.append(made[name]())
    return chosen


def _meta(args: argparse.Namespace, data: Corpus, tool: str) -> dict:
    return {
        "date": datetime.now(UTC).isoformat(timespec="seconds"),
        "quick": args.quick,
        "latency_ms": args.latency_ms,
        "loadgen": tool,
        "load_seconds": args.seconds,
        "load_repeats": args.repeats,
        "connections": args.connections,
        "cpus": os.cpu_count(),
        "machine": platform.platform(),
        "corpus": {
            "small_files": data.small_files,
            "huge_files": len(data.files[HUGE]),
            "big_file_bytes": (data.root / "files" / BIG / data.big_filename).stat().st_size,
            "cold_file_bytes": data.sizes.cold_bytes,
            "pip_requirements": corpus.PIP_REQUIREMENTS,
            "pip_projects": 2 + data.sizes.libs + 1,
        },
    }


# ---- issue #13's cases ----------------------------------------------------------------------------

def bench_issue13(args: argparse.Namespace, work: Path, data: Corpus, upstream: Upstream,
                  upstreams: list[Upstream], tool: str, *, installs_only: bool = False) -> dict:
    """Cold and warm installs in front of the normal and the HTML-only upstream, and the warm
    pages, on pyproxy with its default workers; the full project list on 1 worker (the prober
    must share the worker that builds the list). `installs_only`: the installs alone."""
    result: dict = {"workers": servers.default_workers(), "cold_repeats": args.cold_repeats,
                    "latency_ms": args.latency_ms}
    # --quick (the suite's smoke run): uv only, pip's runs take seconds each
    reps = {"clients": ("uv",) if args.quick else args.clients, "cold_reps": args.cold_repeats,
            "uv_reps": 1 if args.quick else 5, "pip_reps": 3,
            "latency_s": args.latency_ms / 1e3}

    def installs(flavor: str, flags: list[str]) -> dict:
        origin = upstream
        if flags:
            origin = Upstream(work, data.root, args.latency_ms, name=f"upstream-{flavor}",
                              flags=flags)
            upstreams.append(origin)
            origin.start()
        say(f"issue 13: cold and warm {' and '.join(reps['clients'])} installs, {flavor} "
            "upstream")
        on_warm = (lambda server: pages(server, args, tool)) if (
            flavor == "normal" and not installs_only) else None
        return realworld.installs(
            lambda label: servers.Pyproxy(work, None, name=f"pyproxy-auto-{flavor}-{label}"),
            origin, work=work, on_warm=on_warm, flavor=flavor, **reps)

    for flavor, flags in (("normal", []), ("html_only", ["--html-only"])):
        result[flavor] = _case(lambda f=flavor, g=flags: installs(f, g))
    if "warm_server" in result["normal"]:
        result["pages"] = result["normal"].pop("warm_server")
    if installs_only:
        return {**result, "installs_only": True}

    result["project_list"] = _case(lambda: full_list(args, work, data, upstreams))
    return result


def full_list(args: argparse.Namespace, work: Path, data: Corpus,
              upstreams: list[Upstream]) -> dict:
    count = biglist.QUICK_NAMES if args.quick else biglist.FULL_NAMES
    say(f"issue 13: cold /simple/ of {count:,} names (generated once)")
    listing = biglist.build(work, count, sorted(data.files))
    lister = Upstream(work, data.root, args.latency_ms, name="upstream-list",
                      flags=["--project-list", str(listing)])
    upstreams.append(lister)
    lister.start()
    return {"names": count, **project_list(work, lister)}


def _case(run) -> dict:
    """run(), or what went wrong with it."""
    try:
        return run()
    except Unavailable as exc:
        return {"error": str(exc)}
    except Exception as exc:
        traceback.print_exc()
        return {"error": f"{type(exc).__name__}: {exc}"}


def project_list(work: Path, lister: Upstream) -> dict:
    server = servers.Pyproxy(work, 1, name="pyproxy-list")
    try:
        server.start(lister.index_url)
        probe_url = server.page_url(SMALL)
        for _ in range(2):  # the probed page is warm
            got = fetch(probe_url, HTML_ACCEPT)
            if got.status != 200:
                raise RuntimeError(f"GET {probe_url}: {got.status or got.error}")
        result: dict = {}
        with RssSampler(server.pids) as rss:
            for fmt, accept in (("html", HTML_ACCEPT), ("json", JSON_ACCEPT)):
                result[fmt] = biglist.cold_list(server.index_url, accept, rss, probe_url,
                                                HTML_ACCEPT)
        result["rss_peak_mb"] = rss.summary()["peak_per_process_mb"]
        return result
    finally:
        with _shielded():
            server.stop()


# ---- one server ---------------------------------------------------------------------------------

def bench_server(server: Server, args: argparse.Namespace, data: Corpus, upstream: Upstream,
                 tool: str) -> dict:
    result: dict = {"kind": server.kind}
    if server.unavailable:
        say(f"{server.name}: unavailable: {server.unavailable}")
        return {**result, "status": "unavailable", "reason": server.unavailable}
    say(f"{server.name}: starting")
    try:
        server.start(upstream.index_url)
        result["version"] = server.version()
        result["status"] = "ok"
        with RssSampler(server.pids) as rss:
            rss.mark("start")
            if server.kind != "static":
                say(f"{server.name}: cold page and file")
                result["cold"] = cold_requests(server, data, upstream)
                rss.mark("cold")
            if server.kind == "proxy":
                say(f"{server.name}: {STAMPEDE_CLIENTS} concurrent cold requests for one file")
                result["stampede"] = stampede(server, data, upstream)
                rss.mark("stampede")
            say(f"{server.name}: pip install")
            result["pip"] = pip_installs(server, args, data)
            rss.mark("pip")
            say(f"{server.name}: uv pip install")
            result["uv"] = uv_installs(server, args)
            rss.mark("uv")
            if server.kind != "direct":
                say(f"{server.name}: warm small file, {SMALL_FILE_CLIENTS} clients ({tool})")
                result["small_file"] = small_file(server, args, data, tool)
                rss.mark("small_file")
                say(f"{server.name}: big file")
                result["big_file"] = big_file(server, args, data, rss, tool)
                rss.mark("big_file")
                say(f"{server.name}: warm pages ({tool})")
                result["pages"] = pages(server, args, tool)
                rss.mark("pages")
                if args.profile and server.name == "pyproxy":
                    say(f"{server.name}: profiling the warm page path with py-spy")
                    result["profile"] = pyspy.profile_pages(server, args, tool)
        if server.kind != "direct":
            result["rss"] = {**rss.summary(), **result.get("big_file", {}).pop("rss", {})}
    except Unavailable as exc:
        result.update(status="unavailable", reason=str(exc))
    except Exception as exc:
        traceback.print_exc()
        result.update(status="failed", reason=f"{type(exc).__name__}: {exc}")
    finally:
        with _shielded():
            server.stop()
        if result.get("status") != "ok":
            say(f"{server.name}: {result['status']}: {result.get('reason')}; logs: "
                f"{', '.join(str(p) for p in server.logs())}")
    return result


def _ms(seconds: float | None) -> float | None:
    return None if seconds is None else round(seconds * 1e3, 2)


def _page_and_file_url(server: Server, project: str, filename: str) -> tuple[measure.Fetch, str]:
    page = fetch(server.page_url(project), PIP_ACCEPT, keep_body=True)
    if page.status != 200:
        raise RuntimeError(f"GET {page.url}: {page.status or page.error}")
    url = measure.file_url(page, filename)
    if url is None:
        raise RuntimeError(f"{page.url} does not list {filename}")
    return page, url


def _expect_file(got: measure.Fetch, size: int) -> None:
    if got.status != 200 or got.size != size:
        raise RuntimeError(f"GET {got.url}: status {got.status or got.error}, {got.size} of "
                           f"{size} bytes")


def cold_requests(server: Server, data: Corpus, upstream: Upstream) -> dict:
    """Page, then file, of a project the server has never seen; medians over the cold projects."""
    samples = []
    for project in data.sizes.cold_projects:
        filename = data.only_file(project)
        before = sum(upstream.counts().values())
        page, url = _page_and_file_url(server, project, filename)
        got = fetch(url)
        _expect_file(got, (data.root / "files" / project / filename).stat().st_size)
        samples.append({
            "page_ttfb_ms": _ms(page.ttfb), "page_total_ms": _ms(page.total),
            "file_ttfb_ms": _ms(got.ttfb), "file_total_ms": _ms(got.total),
            "upstream_requests": sum(upstream.counts().values()) - before,
        })
    summary = {key: measure.median([s[key] for s in samples]) for key in samples[0]}
    return {**summary, "samples": samples}


def stampede(server: Server, data: Corpus, upstream: Upstream) -> dict:
    filename = data.only_file(STAMPEDE)
    _, url = _page_and_file_url(server, STAMPEDE, filename)
    path = f"/files/{STAMPEDE}/{filename}"
    before = upstream.counts()
    mark = server.log_mark()
    start = time.perf_counter()
    outcome = measure.stampede(url, STAMPEDE_CLIENTS)
    elapsed = time.perf_counter() - start
    after = upstream.counts()
    result = {
        "clients": STAMPEDE_CLIENTS,
        "statuses": outcome,
        "upstream_file_requests": after.get(path, 0) - before.get(path, 0),
        "upstream_requests": sum(after.values()) - sum(before.values()),
        "seconds": round(elapsed, 3),
    }
    if isinstance(server, Cluster):  # how the balancer spread them over the nodes
        result["per_node"] = server.spread(mark, urllib.parse.unquote(
            urllib.parse.urlsplit(url).path))
    return result


def pip_installs(server: Server, args: argparse.Namespace, data: Corpus) -> dict:
    target = args.work_dir.resolve() / "pip-target"
    reqs = corpus.PIP_REQUIREMENTS
    result: dict = {}
    if server.kind != "static":  # nginx has no cold state
        run = measure.pip_install(server.index_url, reqs, target)
        result["cold_s"] = None if run.seconds is None else round(run.seconds, 3)
        if run.error:
            result["error"] = run.error
            return result
    if server.kind != "direct":  # the upstream has no warm state
        reps = 1 if args.quick else 3
        runs = [measure.pip_install(server.index_url, reqs, target) for _ in range(reps)]
        errors = [r.error for r in runs if r.error]
        if errors:
            result["error"] = errors[0]
        times = [r.seconds for r in runs if r.seconds is not None]
        result["warm_samples_s"] = [round(t, 3) for t in times]
        median = measure.median(times)
        result["warm_s"] = None if median is None else round(median, 3)
    return result


def uv_installs(server: Server, args: argparse.Namespace) -> dict:
    """uv after pip has warmed the server with the same set (the direct upstream: one run). uv
    keeps no cache of its own between runs, so every run asks the server for everything. A run
    takes well under a second, so a busy machine shows: the best of 5 counts, median beside."""
    target = args.work_dir.resolve() / "uv-target"
    reps = 1 if args.quick or server.kind == "direct" else 5
    runs = [measure.uv_install(server.index_url, corpus.PIP_REQUIREMENTS, target)
            for _ in range(reps)]
    result: dict = {}
    errors = [r.error for r in runs if r.error]
    if errors:
        result["error"] = errors[0]
    times = [r.seconds for r in runs if r.seconds is not None]
    if times:
        key = "cold_s" if server.kind == "direct" else "warm_s"
        result[key] = round(min(times), 3)
        result["median_s"] = round(measure.median(times), 3)
        result["samples_s"] = [round(t, 3) for t in times]
    return result


def small_file(server: Server, args: argparse.Namespace, data: Corpus, tool: str) -> dict:
    """A warm `.metadata` of ~3 KB under SMALL_FILE_CLIENTS keep-alive clients: latency at the
    client (the load generator) and, where the server logs it, at the server."""
    size = data.metadata_file().stat().st_size
    try:
        _, url = _page_and_file_url(server, META, data.only_file(META))
        url += METADATA_SUFFIX
        warm_retries = _until_served(url, size)
    except RuntimeError as exc:
        return {"bytes": size, "note": str(exc)}
    settled = server.settle(url)
    path = urllib.parse.unquote(urllib.parse.urlsplit(url).path)
    runs = []
    for _ in range(args.repeats):
        mark = server.log_mark()
        load = measure.run_load(url, None, seconds=args.seconds, connections=SMALL_FILE_CLIENTS,
                                tool=tool)
        run = load.as_dict()
        times = server.request_ms(mark, path)
        if times:
            run.update(server_requests=len(times),
                       server_p50_ms=measure.percentile(times, 0.50),
                       server_p99_ms=measure.percentile(times, 0.99))
        runs.append(run)
    best = max(runs, key=lambda run: run["rps"])
    return {**best, "bytes": size, "clients": SMALL_FILE_CLIENTS, "warm_retries": warm_retries,
            "runs_rps": [round(run["rps"], 1) for run in runs],
            "runs_server_p99_ms": [run.get("server_p99_ms") for run in runs],
            **({"settle": settled} if settled else {})}


def big_file(server: Server, args: argparse.Namespace, data: Corpus, rss: RssSampler,
             tool: str) -> dict:
    size = (data.root / "files" / BIG / data.big_filename).stat().st_size
    _, url = _page_and_file_url(server, BIG, data.big_filename)
    with rss.window() as cold_window:
        first = fetch(url)  # through the proxy from upstream (nginx: from disk)
    _expect_file(first, size)
    warm_retries = _until_served(url, size)  # some peers need a moment to commit the file
    settled = server.settle(url)
    with rss.window() as warm_window:
        load = _best_load(args, url, None, connections=2, tool=tool)
    return {
        "bytes": size,
        "warm_retries": warm_retries,
        "first_ttfb_ms": _ms(first.ttfb),
        "first_total_s": round(first.total, 3),
        "warm_mb_per_s": round(load["bytes_per_s"] / 1e6, 1),
        "warm_load": load,
        **({"settle": settled} if settled else {}),
        "rss": {
            "stream_first_growth_mb": round(cold_window.growth_mib, 1),
            "stream_warm_growth_mb": round(warm_window.growth_mib, 1),
        },
    }


def _until_served(url: str, size: int, patience: float = 15.0) -> int:
    """GET until the whole file comes back (not counted as a measurement); the failed tries."""
    deadline = time.monotonic() + patience
    failures = 0
    while True:
        got = fetch(url)
        try:
            _expect_file(got, size)
            return failures
        except RuntimeError:
            failures += 1
            if time.monotonic() > deadline:
                raise
            time.sleep(0.5)


def _best_load(args: argparse.Namespace, url: str, accept: str | None, **kwargs) -> dict:
    """The run with the most requests/s of `--repeats` (a shared machine only ever slows a run
    down), with every run's req/s beside it."""
    runs = [measure.run_load(url, accept, seconds=args.seconds, **kwargs)
            for _ in range(args.repeats)]
    best = max(runs, key=lambda load: load.rps)
    return {**best.as_dict(), "runs_rps": [round(load.rps, 1) for load in runs]}


PAGE_CASES = [  # (key, project, Accept, gzip): the targets use the identity-encoded cases
    ("small_html", SMALL, HTML_ACCEPT, False), ("small_json", SMALL, JSON_ACCEPT, False),
    ("huge_html", HUGE, HTML_ACCEPT, False), ("huge_json", HUGE, JSON_ACCEPT, False),
    ("huge_html_gzip", HUGE, HTML_ACCEPT, True), ("huge_json_gzip", HUGE, JSON_ACCEPT, True),
]


def pages(server: Server, args: argparse.Namespace, tool: str) -> dict:
    result = {}
    for key, project, accept, gzip in PAGE_CASES:
        url = server.page_url(project)
        headers = {"Accept-Encoding": "gzip"} if gzip else {}
        probe = fetch(url, accept, headers=headers)
        entry: dict = {"status": probe.status, "content_type": probe.content_type,
                       "content_encoding": probe.content_encoding, "bytes": probe.size}
        if probe.status != 200:
            entry["note"] = f"GET {url}: {probe.status or probe.error}"
        else:
            if accept == JSON_ACCEPT and "json" not in probe.content_type:
                entry["note"] = f"answered {probe.content_type} to a JSON Accept"
            elif gzip and probe.content_encoding != "gzip":
                entry["note"] = "not compressed for a client accepting gzip"
            load = _best_load(args, url, accept, connections=args.connections, tool=tool,
                              headers=headers)
            entry.update(load)
        result[key] = entry
    return result


if __name__ == "__main__":
    sys.exit(main())
