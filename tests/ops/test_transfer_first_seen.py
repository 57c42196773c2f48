"""First-seen times travel with every export, so a moved deployment's cooldown does not start
again for files its builds already use (ops/transfer_first_seen.py)."""

from __future__ import annotations

from pathlib import Path

import orjson
import pytest

from pyproxy.model import NormalizedName
from pyproxy.ops.transfer_first_seen import FIRST_SEEN
from pyproxy.stores.first_seen import FirstSeenStore
from tests.conftest import MakeClient
from tests.fake_upstream import FakeUpstream
from tests.ops.cli import run
from tests.servers.s3 import S3Server

WHEELS = ("lib-1.0-py3-none-any.whl", "lib-2.0-py3-none-any.whl")


@pytest.fixture(autouse=True)
def _isolated(isolated_cwd: Path) -> None:
    """No ./pyproxy.toml and no PYPROXY_* variables reach the commands."""




async def _box_that_saw(make_client: MakeClient, tmp_path: Path) -> dict[str, float]:
    """A data dir (tmp_path/source) that saw lib's page from an upstream giving no upload
    times: the first-seen time of each file."""
    async with FakeUpstream(formats="html") as fake:
        for filename in WHEELS:
            fake.add_file("lib", filename, filename.encode())
        client, services = await make_client(data_dir=tmp_path / "source",
                                             upstream_url=fake.index_url)
        assert (await client.get("/simple/lib/")).status == 200
        policed = services.policy_for(NormalizedName("lib"))
        assert policed is not None
        await policed.settled()  # the times are recorded while the page is served
    store = FirstSeenStore(tmp_path / "source" / "first-seen.sqlite3")
    try:
        times = store.record("lib", [], 0.0)
    finally:
        store.close()
    assert sorted(times) == sorted(WHEELS)
    return times


def _times(data_dir: Path) -> dict[str, float]:
    store = FirstSeenStore(data_dir / "first-seen.sqlite3")
    try:
        return store.record("lib", [], 0.0)  # nothing new: reads what is recorded
    finally:
        store.close()


async def test_first_seen_times_move_to_a_new_data_dir_and_are_kept_there(
    make_client: MakeClient, tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    seen = await _box_that_saw(make_client, tmp_path)
    code, out, err = await run(capsys, "export", str(tmp_path / "e"), "--data-dir", str(tmp_path / "source"))
    assert code == 0, err
    assert "first-seen times: 2 exported" in out
    manifest = orjson.loads((tmp_path / "e" / "pyproxy-export.json").read_bytes())
    assert manifest["first_seen"] == 2

    target = tmp_path / "target"
    earlier = FirstSeenStore(target / "first-seen.sqlite3")  # the target saw one file already
    earlier.record("lib", [WHEELS[0]], 1000.0)
    earlier.close()
    code, out, err = await run(capsys, "import", str(tmp_path / "e"), "--data-dir", str(target))
    assert code == 0, err
    assert "first-seen times: 1 imported, 1 already there" in out
    # the target's own time is kept (it may be in use); the other comes from the export
    assert _times(target) == {WHEELS[0]: 1000.0, WHEELS[1]: seen[WHEELS[1]]}


async def test_unusable_first_seen_records_are_named_and_the_others_imported(
    make_client: MakeClient, tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    seen = await _box_that_saw(make_client, tmp_path)
    assert (await run(capsys, "export", str(tmp_path / "e"), "--data-dir", str(tmp_path / "source")))[0] == 0
    path = tmp_path / "e" / FIRST_SEEN
    path.write_bytes(path.read_bytes() + b"".join(orjson.dumps(r) + b"\n" for r in (
        {"project": "Not.Normal", "filename": "x.whl", "seen": 1.0},
        {"project": "lib", "filename": "../escape.whl", "seen": 1.0},
        {"project": "lib", "filename": "lib-3.0-py3-none-any.whl", "seen": "yesterday"},
        {"project": "lib", "filename": "lib-4.0-py3-none-any.whl", "seen": float("inf")},
    )))
    code, out, err = await run(capsys, "import", str(tmp_path / "e"), "--data-dir", str(tmp_path / "t"))
    assert code == 1
    assert "first-seen times: 2 imported" in out
    assert err.count("failed: first-seen time of") == 4
    assert "the project is not a normalized name" in err and "not a file name" in err
    assert _times(tmp_path / "t") == seen


async def test_first_seen_times_move_into_a_cluster_and_back(
    make_client: MakeClient, tmp_path: Path, capsys: pytest.CaptureFixture[str], pg_dsn: str,
    s3: S3Server, bucket: str,
) -> None:
    import psycopg

    seen = await _box_that_saw(make_client, tmp_path)
    config = tmp_path / "cluster.toml"
    config.write_text(f'[storage]\ndatabase = "{pg_dsn}"\nobjects = "s3://{bucket}"\n'
                      f's3_endpoint = "{s3.endpoint}"\nnode_url = "http://127.0.0.1:8080"\n')
    node = ["--data-dir", str(tmp_path / "node"), "--config", str(config)]
    assert (await run(capsys, "export", str(tmp_path / "box"), "--data-dir", str(tmp_path / "source")))[0] == 0
    code, out, err = await run(capsys, "import", str(tmp_path / "box"), *node)
    assert code == 0 and "first-seen times: 2 imported" in out, err
    with psycopg.connect(pg_dsn) as conn:
        rows = conn.execute("SELECT filename, seen FROM first_seen WHERE project = 'lib'").fetchall()
    assert dict(rows) == seen
    assert not (tmp_path / "node" / "first-seen.sqlite3").exists()  # in the database only

    code, out, err = await run(capsys, "export", str(tmp_path / "cluster"), *node)
    assert code == 0 and "first-seen times: 2 exported" in out, err
    assert (await run(capsys, "import", str(tmp_path / "cluster"), "--data-dir", str(tmp_path / "t")))[0] == 0
    assert _times(tmp_path / "t") == seen
