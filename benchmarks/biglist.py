"""The full project list case (issue #13): a cold `GET /simple/` of a million synthetic names
through pyproxy, with the worker's RSS sampled and a prober timing a small warm page meanwhile.

The list is generated once under the work dir (`project-list-<N>/index.{html,json}` and their
`.gz`, shaped like the public index's: root-relative links, `_last-serial` per project) and
served by a fake upstream started with `--project-list`. The corpus' own projects come first, so
the prober's page (`bench-small`) is a project of the list.
"""

from __future__ import annotations

import gzip
import http.client
import json
import random
import threading
import time
import urllib.parse
from pathlib import Path

from benchmarks.measure import Fetch, RssSampler, fetch, percentile

FULL_NAMES = 1_000_000
QUICK_NAMES = 20_000
FORMAT_VERSION = 1  # bump when the generated documents change
_SYLLABLES = ["py", "lib", "data", "ml", "tor", "net", "web", "flow", "kit", "io", "ax", "zen",
              "core", "fast", "api", "cli", "db", "sql", "aws", "test", "ng", "ops", "geo", "viz"]


def names(count: int, first: list[str]) -> list[str]:
    """`first`, then synthetic unique names up to `count` (about as long as real ones)."""
    rng = random.Random(13)
    made = list(first)
    for i in range(count - len(first)):
        word = "".join(rng.choice(_SYLLABLES) for _ in range(rng.randint(1, 3)))
        made.append(f"{word}-{i:x}")
    return made


def build(work: Path, count: int, first: list[str]) -> Path:
    """The directory holding the list documents, generated now unless already there."""
    directory = work / f"project-list-{count}"
    stamp = directory / "list.json"
    wanted = {"format": FORMAT_VERSION, "count": count, "first": first}
    if stamp.exists() and json.loads(stamp.read_text()) == wanted:
        return directory
    directory.mkdir(parents=True, exist_ok=True)
    stamp.unlink(missing_ok=True)
    listed = names(count, first)
    head = ('<!DOCTYPE html>\n<html>\n  <head>\n    <meta name="pypi:repository-version" '
            'content="1.1">\n    <title>Simple index</title>\n  </head>\n  <body>\n')
    html = "".join([head, *(f'    <a href="/simple/{n}/">{n}</a>\n' for n in listed),
                    "  </body>\n</html>\n"]).encode()
    document = {"meta": {"_last-serial": 30_000_000, "api-version": "1.1"},
                "projects": [{"_last-serial": 30_000_000 - i, "name": n}
                             for i, n in enumerate(listed)]}
    for name, data in (("index.html", html), ("index.json", json.dumps(document).encode())):
        (directory / name).write_bytes(data)
        (directory / (name + ".gz")).write_bytes(gzip.compress(data, 6, mtime=0))
    stamp.write_text(json.dumps(wanted))
    return directory


class Prober(threading.Thread):
    """GETs `url` over one keep-alive connection, one after another with `pause` between them,
    until stopped: the latency of every request (seconds) and the failures."""

    def __init__(self, url: str, accept: str, pause: float = 0.005) -> None:
        super().__init__(name="prober", daemon=True)
        self.url, self.accept, self.pause = url, accept, pause
        self.latencies: list[float] = []
        self.failures = 0
        self._halt = threading.Event()

    def run(self) -> None:
        parts = urllib.parse.urlsplit(self.url)
        conn: http.client.HTTPConnection | None = None
        while not self._halt.is_set():
            conn = conn or http.client.HTTPConnection(parts.hostname, parts.port, timeout=30)
            start = time.perf_counter()
            try:
                conn.request("GET", parts.path, headers={"Accept": self.accept})
                response = conn.getresponse()
                response.read()
                if response.status != 200:
                    self.failures += 1
            except (OSError, http.client.HTTPException):
                self.failures += 1
                conn.close()
                conn = None
                continue
            self.latencies.append(time.perf_counter() - start)
            self._halt.wait(self.pause)
        if conn is not None:
            conn.close()

    def stop(self) -> None:
        self._halt.set()
        self.join(60)


def cold_list(index_url: str, accept: str, rss: RssSampler, probe_url: str,
              probe_accept: str, settle: float = 1.0) -> dict:
    """One GET of the full list (pip's Accept-Encoding) while the prober runs; then, after
    `settle` seconds, the RSS left behind. Then a second GET of it (warm)."""
    before = rss.now()
    prober = Prober(probe_url, probe_accept)
    prober.start()
    time.sleep(0.1)  # the prober's baseline
    with rss.window() as window:
        got: Fetch = fetch(index_url, accept, headers={"Accept-Encoding": "gzip"})
    time.sleep(0.1)
    prober.stop()
    time.sleep(settle)
    after = rss.now()
    warm = fetch(index_url, accept, headers={"Accept-Encoding": "gzip"})
    ms = [t * 1e3 for t in prober.latencies]
    return {
        "status": got.status or got.error,
        "content_type": got.content_type,
        "content_encoding": got.content_encoding,
        "bytes": got.size,
        "total_s": round(got.total, 3),
        "warm_total_s": round(warm.total, 3),
        "rss_before_mb": round(before / 1024, 1),
        "rss_peak_growth_mb": round(window.growth_mib, 1),
        "rss_kept_mb": round(max(0, after - before) / 1024, 1),
        "probes": len(ms),
        "probe_failures": prober.failures,
        "probe_max_ms": round(max(ms), 1) if ms else None,
        "probe_p99_ms": round(percentile(ms, 0.99) or 0, 1) if ms else None,
        "probe_p50_ms": round(percentile(ms, 0.50) or 0, 1) if ms else None,
    }
