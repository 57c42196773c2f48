"""A py-spy profile of pyproxy's warm page path (`run.py --profile`): where the time goes.

py-spy (from the machine's configured index, in its own venv under the work dir) samples the
worker while the load generator requests a page; the collapsed stacks are kept as
`WORK/profile-<case>.txt` (load them into speedscope, or `flamegraph.pl`) and summarised as the
functions with the most own time and the most time below them.
"""

from __future__ import annotations

import collections
import re
import subprocess
import time

from benchmarks import measure
from benchmarks.corpus import HUGE, SMALL
from benchmarks.servers import Server, Unavailable, ensure_venv

CASES = {"small_json": (SMALL, measure.JSON_ACCEPT), "huge_json": (HUGE, measure.JSON_ACCEPT),
         "small_html": (SMALL, measure.HTML_ACCEPT)}
TOP = 12


def profile_pages(server: Server, args, tool: str) -> dict:
    work = args.work_dir.resolve()
    try:
        bin_dir = ensure_venv(work / "venvs" / "tools", ["py-spy"], not args.no_install)
    except Unavailable as exc:
        return {"error": str(exc)}
    pid = server.main_pid()
    seconds = max(2, round(args.seconds))
    result = {}
    for case, (project, accept) in CASES.items():
        out = work / f"profile-{case}.txt"
        spy = subprocess.Popen(
            [bin_dir / "py-spy", "record", "--pid", str(pid), "--duration", str(seconds),
             "--rate", "200", "--format", "raw", "--output", out, "--nonblocking"],
            stdout=subprocess.DEVNULL, stderr=subprocess.PIPE, text=True,
        )
        try:
            time.sleep(0.5)  # attached before the load starts
            measure.run_load(server.page_url(project), accept, seconds=seconds,
                             connections=args.connections, tool=tool)
            _, err = spy.communicate(timeout=seconds + 30)
        finally:
            if spy.poll() is None:
                spy.kill()
                spy.wait()
        if spy.returncode != 0 or not out.exists():
            result[case] = {"error": f"py-spy exited {spy.returncode}: {err.strip()[-200:]}"}
            continue
        result[case] = {"stacks": str(out), **summarise(out.read_text())}
    return result


# the frames every sample of the main thread sits under: not worth listing as inclusive time
_STARTUP = ("<module> ", "main (", "cmd_serve (", "serve (", "_run_worker (", "Runner.run (",
            "run (", "run_until_complete (", "run_forever (", "_run_once (", "Handle._run (")
_LINE = re.compile(r"\s*\(([^()]*?):\d+\)$")


def _function(frame: str) -> str:
    """'render (pyproxy/formats/render.py:42)' -> 'render (pyproxy/formats/render.py)'."""
    return _LINE.sub(lambda m: f" ({_short(m.group(1))})", frame.strip())


def _short(path: str) -> str:
    for marker in ("site-packages/", "lib/python3"):
        if marker in path:
            return path.split(marker, 1)[1]
    return path.rsplit("/main/", 1)[-1]


def summarise(collapsed: str) -> dict:
    """Own and inclusive sample shares per function from py-spy's raw (collapsed) output."""
    own: collections.Counter[str] = collections.Counter()
    inclusive: collections.Counter[str] = collections.Counter()
    total = 0
    for line in collapsed.splitlines():
        stack, _, count = line.rpartition(" ")
        if not stack or not count.isdigit():
            continue
        n = int(count)
        frames = [_function(f) for f in stack.split(";") if f.strip()]
        frames = [f for f in frames if not f.startswith("process ")]  # py-spy's root frame
        if not frames:
            continue
        total += n
        own[frames[-1]] += n
        for function in set(frames):
            if not function.startswith(_STARTUP):
                inclusive[function] += n

    def top(counter: collections.Counter[str]) -> list[list]:
        return [[round(100 * n / total, 1), f] for f, n in counter.most_common(TOP)]

    if not total:
        return {"samples": 0}
    return {"samples": total, "top_own_pct": top(own), "top_inclusive_pct": top(inclusive)}
