"""The benchmark (benchmarks/run.py) starts, measures pyproxy on a tiny input, reports a peer it
cannot run as unavailable, prints its table, writes its JSON and leaves no process behind.

It asserts nothing about speed: the figures of a --quick run mean nothing; but every target it
reports must carry its figure and a verdict that agrees with it.
"""

from __future__ import annotations

import json
import re
import subprocess
import sys
from pathlib import Path
from typing import Any

from benchmarks.measure import parse_wrk
from tests.processes import processes_mentioning

REPO = Path(__file__).resolve().parent.parent

WRK_OUTPUT = """\
Running 5s test @ http://127.0.0.1:8080/simple/bench-small/
  1 threads and 10 connections
  Thread Stats   Avg      Stdev     Max   +/- Stdev
    Latency     1.21ms  300.00us   9.80ms   90.00%
    Req/Sec     8.30k   400.00     9.00k    70.00%
  Latency Distribution
     50%    1.10ms
     75%    1.30ms
     90%    1.50ms
     99%    2.78ms
  41500 requests in 5.00s, 120.50MB read
  Socket errors: connect 0, read 1, write 0, timeout 2
  Non-2xx or 3xx responses: 3
Requests/sec:   8300.00
Transfer/sec:     24.10MB
"""


def test_parse_wrk() -> None:
    load = parse_wrk(WRK_OUTPUT)
    assert (load.requests, load.seconds, load.rps) == (41500, 5.0, 8300.0)
    assert (load.p50_ms, load.p99_ms) == (1.10, 2.78)
    assert load.bytes_per_s == 24.10 * 1024**2
    assert load.errors == 6


# the targets pyproxy alone can be judged on (the others compare it with nginx, devpi or proxpi,
# which this run does not start)
MEASURED_ALONE = [
    "html: 5,000-file page costs",
    "json: 5,000-file page costs",
    "cold file TTFB",
    "cold file total",
    "50 concurrent cold requests",
    "peak RSS",
    "RSS flat while streaming",
    "warm 3 KB file p99",
]
VERDICT = re.compile(r"(\d+(?:\.\d+)?) ([≤≥<>]) (\d+(?:\.\d+)?)")


def _check_targets(rows: list[dict[str, Any]]) -> None:
    """Every target is named once, for pyproxy; one that needs a peer says so; every other one
    shows its figure and its limit, and its verdict is what they say."""
    names = [row["target"] for row in rows]
    assert all(names) and len(set(names)) == len(names), names
    assert {row["server"] for row in rows} == {"pyproxy"}
    for case in ("small_html", "small_json", "huge_html", "huge_json"):
        assert sum(name.startswith(f"{case} req/s") for name in names) == 2, (case, names)
    measured = [row for row in rows if row["met"] is not None]
    missing = [m for m in MEASURED_ALONE if not any(r["target"].startswith(m) for r in measured)]
    assert missing == [], f"not judged: {missing}"
    for row in rows:
        if row not in measured:
            assert row["detail"].startswith("not measured (needs "), row
            assert any(peer in row["target"] for peer in ("nginx", "devpi")), row
            continue
        assert any(row["target"].startswith(m) for m in MEASURED_ALONE), row
        if row["target"].startswith("50 concurrent cold requests"):
            # one worker coalesces the stampede into a single upstream request
            assert (row["met"], row["detail"]) == (True, "1 upstream request(s)"), row
            continue
        verdict = VERDICT.match(row["detail"])
        assert verdict, row
        value, sign, limit = float(verdict[1]), verdict[2], float(verdict[3])
        # uvloop's clock counts whole milliseconds: a quick request may take 0 ms at the server
        assert limit > 0 and (value > 0 or row["target"].startswith(("RSS flat", "warm 3 KB"))), row
        assert row["met"] is (value >= limit if sign in "≥<" else value <= limit), row


def test_quick_run(tmp_path: Path) -> None:
    work, out = tmp_path / "work", tmp_path / "numbers.json"
    proc = subprocess.run(
        [sys.executable, str(REPO / "benchmarks" / "run.py"), "--quick", "--only", "pyproxy,devpi",
         "--no-install", "--loadgen", "python", "--seconds", "0.5", "--latency-ms", "5",
         "--work-dir", str(work), "--json", str(out)],
        capture_output=True, text=True, timeout=120, cwd=REPO, stdin=subprocess.DEVNULL,
        check=False,
    )
    assert proc.returncode == 0, f"{proc.stdout}\n{proc.stderr}"[-4000:]
    assert "10-file page JSON req/s" in proc.stdout
    assert "issue #6 targets:" in proc.stdout
    assert f"numbers: {out}" in proc.stdout
    assert "devpi: unavailable: no virtual environment" in proc.stdout

    data = json.loads(out.read_text())
    assert set(data) == {"meta", "servers", "targets"}
    assert data["meta"]["quick"] is True and data["meta"]["loadgen"] == "python"
    assert data["servers"]["devpi"]["status"] == "unavailable"
    assert data["servers"]["direct"]["status"] == "ok"
    pyproxy = data["servers"]["pyproxy"]
    assert pyproxy["status"] == "ok", pyproxy
    assert set(pyproxy) >= {"cold", "stampede", "pip", "uv", "small_file", "big_file", "pages",
                            "rss"}
    for case in ("small_html", "small_json", "huge_html", "huge_json"):
        assert pyproxy["pages"][case]["status"] == 200
        assert pyproxy["pages"][case]["rps"] > 0
    assert pyproxy["cold"]["file_total_ms"] > 0
    assert pyproxy["stampede"]["statuses"] == {"200": 50}
    assert pyproxy["pip"]["cold_s"] > 0 and pyproxy["pip"]["warm_s"] > 0
    assert pyproxy["uv"]["warm_s"] > 0 and data["servers"]["direct"]["uv"]["cold_s"] > 0
    small = pyproxy["small_file"]
    assert small["rps"] > 0 and 2000 < small["bytes"] < 4000
    assert small["server_requests"] > 0 and small["server_p99_ms"] >= small["server_p50_ms"]
    assert pyproxy["rss"]["peak_total_mb"] > 0
    _check_targets(data["targets"])

    assert processes_mentioning(str(tmp_path)) == []
