"""End to end: real uv against a cold pyproxy whose upstream offers no `.metadata`, so uv reads
each wheel's metadata with a HEAD and range requests (web/cold.py, repository/misses.py).

Counted: uv's requests per wheel at pyproxy (from its access log), and upstream's requests and
bytes per wheel (full downloads and ranged reads, from the fake upstream).
"""

from __future__ import annotations

import random
import re
import uuid
from collections import Counter
from pathlib import Path

import pytest

from tests.dists import make_wheel, underscored
from tests.e2e.clients import describe, installed, uv_pip_install
from tests.fake_upstream import FakeUpstream

RUN = uuid.uuid4().hex[:6]


def pname(stem: str) -> str:
    return f"rg-{stem}-{RUN}"


def padded_wheel(directory: Path, name: str, version: str, *, padding: int, **options) -> Path:
    """A wheel with a module of `padding` bytes of incompressible text (a real wheel's bulk),
    so its tail is far from its head."""
    text = random.Random(name + version).randbytes(padding // 2).hex()
    modules = {f"{underscored(name)}/__init__.py": f"VERSION = {version!r}\n",
               f"{underscored(name)}/blob.py": f"DATA = {text!r}\n"}
    return make_wheel(directory, name, version, modules=modules, **options)


@pytest.mark.parametrize(("formats", "ranges"), [("json", True), ("json", False), ("html", True)])
def test_uv_reads_cold_wheels_metadata_in_ranges(fake_factory, pyproxy_factory, tmp_path, formats, ranges,
                                                 record_property):
    fake: FakeUpstream = fake_factory(formats)
    fake.serve_ranges = ranges
    app, lib, base = pname("app"), pname("lib"), pname("base")
    wheels = [
        (base, padded_wheel(tmp_path, base, "1.0", padding=3_000_000)),
        (lib, padded_wheel(tmp_path, lib, "1.0", padding=3_000_000, requires_dist=[base])),
        (app, make_wheel(tmp_path, app, "1.0", requires_dist=[lib])),
    ]
    for project, wheel in wheels:
        fake.add_file(project, wheel.name, wheel.read_bytes())  # no .metadata
    sizes = {wheel.name: wheel.stat().st_size for _p, wheel in wheels}
    server = pyproxy_factory.start(user=None, extra_args=["--upstream", fake.index_url])
    fake.reset_counters()

    target = tmp_path / "uv"
    proc = uv_pip_install(server.simple_url, app, target=target)
    assert installed(target) == {underscored(n): "1.0" for n in (app, lib, base)}, describe(proc)

    at_pyproxy: dict[str, Counter] = {name: Counter() for name in sizes}
    for record in server.access_records():
        match = re.search(r"/files/[^/]+/([^/]+\.whl)$", record["path"])
        if match and match.group(1) in at_pyproxy:
            at_pyproxy[match.group(1)][f"{record['method']} {record['status']}"] += 1
    ranged: Counter = Counter(path.rsplit("/", 1)[1] for path, _spec in fake.ranged)
    upstream_bytes = 0
    for name, size in sizes.items():
        path = fake.file_path(wheel_project(wheels, name), name)
        answers = fake.count(path, "GET")
        # without ranges every answer is the whole file: one is kept as the download (a range
        # request's too), another (two workers asking at once) is dropped unread: 0 bytes
        full = answers - ranged[name] if ranges else min(answers, 1)
        assert ranges or answers <= 2, answers
        range_bytes = sum(_length(spec, size) for p, spec in fake.ranged if p == path and ranges)
        upstream_bytes += full * size + range_bytes
        line = (f"[{formats}, upstream ranges {ranges}] {name} ({size} bytes): at pyproxy"
                f" {dict(at_pyproxy[name])}; upstream {full} full + {ranged[name]} ranged"
                f" ({range_bytes} bytes)")
        print(line)
        assert full == 1, line  # one upstream download per file, whatever uv asked
        requests = at_pyproxy[name]
        assert requests["HEAD 200"] <= 1, line
        assert requests["GET 206"] <= 2, line  # the goal: the metadata in two small requests
        assert requests["GET 200"] <= 1, line
    record_property(f"upstream_bytes_{formats}_{ranges}", upstream_bytes)
    record_property(f"pyproxy_file_requests_{formats}_{ranges}",
                    {name: dict(c) for name, c in at_pyproxy.items()})
    print(f"upstream bytes for {len(sizes)} wheels of {sum(sizes.values())} bytes: {upstream_bytes}")


def wheel_project(wheels: list[tuple[str, Path]], filename: str) -> str:
    return next(project for project, wheel in wheels if wheel.name == filename)


def _length(spec: str, size: int) -> int:
    first, _, last = spec.removeprefix("bytes=").partition("-")
    if not first:
        return min(int(last), size)
    return min(int(last) if last else size - 1, size - 1) - int(first) + 1
