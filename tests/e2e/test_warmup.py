"""End to end: a cold `pip install` and `uv pip install` through pyproxy find the pages (and the
.metadata) of the dependencies warmed while they read their dependents' .metadata."""

from __future__ import annotations

import uuid
from pathlib import Path

import pytest
from packaging.utils import canonicalize_name
from prometheus_client.parser import text_string_to_metric_families

from tests.dists import core_metadata, make_wheel
from tests.e2e.clients import get, installed, pip_install, uv_pip_install
from tests.e2e.conftest import FakeFactory, ServerFactory
from tests.fake_upstream import FakeUpstream

RUN = uuid.uuid4().hex[:6]


def metric(url: str, name: str, **labels: str) -> float:
    response = get(f"{url}/metrics")
    for family in text_string_to_metric_families(response.body):
        for sample in family.samples:
            if sample.name == name and sample.labels == labels:
                return sample.value
    raise AssertionError(f"no {name} {labels}")


def publish(fake: FakeUpstream, directory: Path, name: str, requires: list[str]) -> None:
    wheel = make_wheel(directory, name, "1.0", requires_dist=requires)
    fake.add_file(name, wheel.name, wheel.read_bytes(),
                  metadata=core_metadata(name, "1.0", requires_dist=requires))


@pytest.mark.parametrize("installer", ["pip", "uv"])
def test_a_cold_install_finds_the_dependencies_warm(
    installer: str, pyproxy_factory: ServerFactory, fake_factory: FakeFactory, tmp_path: Path,
) -> None:
    fake = fake_factory("json")
    app, base = f"wu-app-{RUN}", f"wu-base-{RUN}"
    libs = [f"wu-lib{i}-{RUN}" for i in range(4)]
    publish(fake, tmp_path / "dists", app, [*libs, f'{base} ; python_version >= "3"'])
    for lib in libs:
        publish(fake, tmp_path / "dists", lib, [base])
    publish(fake, tmp_path / "dists", base, [])
    server = pyproxy_factory.start(user=None, extra_args=["--upstream", fake.index_url])
    install = pip_install if installer == "pip" else uv_pip_install
    target = tmp_path / "target"
    install(server.simple_url, app, target=target)
    assert {canonicalize_name(name) for name in installed(target)} >= {app, base, *libs}
    # every dependency page was fetched once, by the warm-up, and then asked for by the client
    for name in (base, *libs):
        assert fake.count(fake.page_path(name)) == 1, name
    started = metric(server.url, "pyproxy_warmup_started_total", kind="page")
    used = metric(server.url, "pyproxy_warmup_used_total", kind="page")
    assert started == 5 and used == 5, (started, used)
    assert metric(server.url, "pyproxy_warmup_failed_total", kind="page") == 0
    # the agent told pyproxy the client's Python: the libs' .metadata were warmed too, and used
    assert metric(server.url, "pyproxy_warmup_used_total", kind="metadata") >= 4
