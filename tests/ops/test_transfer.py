"""`pyproxy export` / `pyproxy import`: private packages (and the cache) moved between data
directories through a portable directory, each file checked on the way in."""

from __future__ import annotations

import hashlib
import json
from pathlib import Path
from typing import Any

import orjson
import pytest
from aiohttp import encode_basic_auth
from aiohttp.test_utils import TestClient

from pyproxy.cli import main as cli
from pyproxy.ops import transfer
from pyproxy.stores.private import PrivateStore
from pyproxy.web.context import SERVICES
from tests.attestations import attest
from tests.conftest import PASSWORD, USER, MakeClient, upload
from tests.dists import make_sdist, make_wheel
from tests.fake_upstream import FakeUpstream
from tests.ops.cli import run
from tests.servers.s3 import S3Server

JSON = "application/vnd.pypi.simple.v1+json"
AUTH = {"Authorization": encode_basic_auth(USER, PASSWORD)}  # the owner of the restricted project


@pytest.fixture(autouse=True)
def _isolated(isolated_cwd: Path) -> None:
    """No ./pyproxy.toml and no PYPROXY_* variables reach the commands."""




async def _page(client: TestClient, project: str) -> dict[str, Any]:
    response = await client.get(f"/simple/{project}/", headers={"Accept": JSON, **AUTH})
    assert response.status == 200, await response.text()
    page = orjson.loads(await response.read())
    for dist in page["files"]:  # the two apps differ only in their port
        dist["url"] = dist["url"].split("/files/", 1)[1]
    return page


async def _filled(make_client: MakeClient, tmp_path: Path) -> tuple[TestClient, Path]:
    """A data dir with a wheel, an sdist, a yanked release and a name reserved without files."""
    data = tmp_path / "source"
    client, _ = await make_client(data_dir=data)
    dists = tmp_path / "dists"
    for path in (
        make_wheel(dists, "Acme.Widgets", "1.0", requires_python=">=3.8"),
        make_sdist(dists, "Acme.Widgets", "1.0"),
        make_wheel(dists, "Acme.Widgets", "2.0"),
        make_wheel(dists, "gone", "1.0"),
    ):
        response = await upload(client, path)
        assert response.status == 200, await response.text()
    code = cli.main(["yank", "acme-widgets", "2.0", "--reason", "broken", "--data-dir", str(data)])
    assert code == 0
    assert cli.main(["remove", "gone", "--data-dir", str(data)]) == 0
    assert client.app is not None
    client.app[SERVICES].users.add_user("bob", "bob's password")
    assert cli.main(["restrict", "acme-widgets", "--data-dir", str(data)]) == 0
    assert cli.main(["grant", "acme-widgets", "bob", "--read", "--data-dir", str(data)]) == 0
    return client, data


async def test_export_then_import_gives_identical_private_pages(
    make_client: MakeClient, tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    source_client, source = await _filled(make_client, tmp_path)
    capsys.readouterr()
    code, out, _ = await run(capsys, "export", str(tmp_path / "export"), "--data-dir", str(source))
    assert code == 0 and "private files: 3 exported" in out

    target = tmp_path / "target"
    code, out, err = await run(capsys, "import", str(tmp_path / "export"), "--data-dir", str(target))
    assert code == 0, err
    assert "private files: 3 imported" in out and "reserved 2 private names" in out

    stores = [PrivateStore(d / "private") for d in (source, target)]
    try:  # restrictions and roles travel too: an import never widens who may read
        exported = [transfer.exported_projects(store) for store in stores]
    finally:
        for store in stores:
            store.close()
    assert exported[1] == exported[0]
    assert {"user": "bob", "role": "reader"} in exported[1][0]["roles"]
    assert exported[1][0]["restricted"] is True

    target_client, _ = await make_client(data_dir=target)
    before, after = await _page(source_client, "acme-widgets"), await _page(target_client, "acme-widgets")
    assert after["files"] == before["files"]  # same hashes, sizes, upload times, yanks, metadata
    assert after["versions"] == before["versions"]
    assert any(f.get("yanked") == "broken" for f in after["files"])
    for dist in before["files"]:
        name = dist["filename"]
        old = await (await source_client.get(f"/files/acme-widgets/{name}", headers=AUTH)).read()
        new = await (await target_client.get(f"/files/acme-widgets/{name}", headers=AUTH)).read()
        assert old == new
        if dist.get("core-metadata"):
            meta = await target_client.get(f"/files/acme-widgets/{name}.metadata", headers=AUTH)
            assert meta.status == 200
    # the removed project's name stays reserved: upstream may not take it
    gone = await target_client.get("/simple/gone/", headers={"Accept": JSON})
    assert gone.status == 200 and orjson.loads(await gone.read())["files"] == []

    code, out, _ = await run(capsys, "import", str(tmp_path / "export"), "--data-dir", str(target))
    assert code == 0 and "private files: 0 imported (0 bytes), 3 already there" in out


async def test_import_checks_every_file_as_an_upload_would(
    make_client: MakeClient, tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    _, source = await _filled(make_client, tmp_path)
    export = tmp_path / "export"
    assert cli.main(["export", str(export), "--data-dir", str(source)]) == 0
    victim = export / "private" / "files" / "Acme_Widgets-2.0-py3-none-any.whl"
    data = bytearray(victim.read_bytes())
    data[len(data) // 2] ^= 0xFF  # same length, other bytes
    victim.write_bytes(bytes(data))
    records = (export / "private" / "files.jsonl").read_bytes().splitlines()
    evil = orjson.loads(records[0])
    evil["filename"] = "../../escape.whl"
    (export / "private" / "files.jsonl").write_bytes(b"\n".join([*records, orjson.dumps(evil)]))
    capsys.readouterr()

    target = tmp_path / "target"
    code, out, err = await run(capsys, "import", str(export), "--data-dir", str(target))
    assert code == 1
    assert "private files: 2 imported" in out and "2 failed" in out
    assert "failed: Acme_Widgets-2.0-py3-none-any.whl: The digest supplied does not match" in err
    assert "failed: ../../escape.whl:" in err
    assert not (tmp_path / "escape.whl").exists()
    assert list((target / "private" / "tmp").iterdir()) == [], "no partial file left behind"


async def test_attestations_travel_and_are_checked_again_on_import(
    make_client: MakeClient, tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    source = tmp_path / "source"
    source_client, _ = await make_client(data_dir=source)
    dists = tmp_path / "dists"
    attested, forged = make_wheel(dists, "attested", "1.0"), make_wheel(dists, "attested", "2.0")
    for wheel in (attested, forged):
        sha256 = hashlib.sha256(wheel.read_bytes()).hexdigest()
        attestations = json.dumps([json.loads(attest(wheel.name, sha256).model_dump_json())])
        assert (await upload(source_client, wheel, attestations=attestations)).status == 200
    plain = make_wheel(dists, "attested", "3.0")
    assert (await upload(source_client, plain)).status == 200
    export = tmp_path / "export"
    assert cli.main(["export", str(export), "--data-dir", str(source)]) == 0
    # the 2.0 record now carries the 1.0 file's attestation: it names another file
    records = [orjson.loads(line) for line in (export / "private" / "files.jsonl").read_bytes().splitlines()]
    by_name = {record["filename"]: record for record in records}
    assert by_name[plain.name]["attestations"] is None
    by_name[forged.name]["attestations"] = by_name[attested.name]["attestations"]
    (export / "private" / "files.jsonl").write_bytes(b"\n".join(orjson.dumps(r) for r in records))
    capsys.readouterr()

    target = tmp_path / "target"
    code, out, err = await run(capsys, "import", str(export), "--data-dir", str(target))
    assert code == 1 and "private files: 2 imported" in out and "1 failed" in out
    assert f"failed: {forged.name}: Invalid attestations supplied during upload" in err
    target_client, _ = await make_client(data_dir=target)
    path = f"/integrity/attested/1.0/{attested.name}/provenance"
    before, after = await source_client.get(path), await target_client.get(path)
    assert before.status == after.status == 200
    assert await after.read() == await before.read()  # the same provenance object, rebuilt
    assert (await target_client.get(f"/integrity/attested/3.0/{plain.name}/provenance")).status == 404


async def test_export_refuses_a_non_empty_directory_and_import_an_incomplete_one(
    make_client: MakeClient, tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    _, source = await _filled(make_client, tmp_path)
    (tmp_path / "busy").mkdir()
    (tmp_path / "busy" / "x").write_text("x")
    capsys.readouterr()
    code, _, err = await run(capsys, "export", str(tmp_path / "busy"), "--data-dir", str(source))
    assert code == 1 and err.strip() == f"pyproxy: {tmp_path / 'busy'} exists and is not an empty directory"
    code, _, err = await run(capsys, "import", str(tmp_path / "busy"), "--data-dir", str(tmp_path / "t"))
    assert code == 1 and "is not a complete pyproxy export" in err
    code, _, err = await run(capsys, "export", str(tmp_path / "e"), "--data-dir", str(tmp_path / "nothing"))
    assert code == 1 and "no private store" in err


async def test_include_cache_carries_upstream_files_to_an_offline_mirror(
    make_client: MakeClient, tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    async with FakeUpstream(formats="json") as fake:
        fake.add_file("lib", "lib-1.0-py3-none-any.whl", b"lib one", metadata=b"Name: lib\n")
        fake.add_file("lib", "lib-2.0-py3-none-any.whl", b"lib two")
        source = tmp_path / "source"
        client, _ = await make_client(data_dir=source, upstream_url=fake.index_url)
        assert (await client.get("/simple/lib/")).status == 200
        for path in ("/files/lib/lib-1.0-py3-none-any.whl", "/files/lib/lib-1.0-py3-none-any.whl.metadata"):
            response = await client.get(path)
            assert response.status == 200
            await response.read()
        upstream_url = fake.index_url
    capsys.readouterr()
    code, out, _ = await run(capsys, "export", str(tmp_path / "export"), "--include-cache",
                       "--data-dir", str(source))
    assert code == 0 and "cached files: 2 exported" in out and "cached pages: 1 exported" in out

    target = tmp_path / "target"
    code, out, err = await run(capsys, "import", str(tmp_path / "export"), "--data-dir", str(target))
    assert code == 0, err
    assert "cached files: 2 imported" in out and "cached pages: 1 imported" in out

    offline, _ = await make_client(data_dir=target, upstream_url=upstream_url, offline=True)
    page = await _page(offline, "lib")
    assert [f["filename"] for f in page["files"]] == ["lib-1.0-py3-none-any.whl"]
    body = await (await offline.get("/files/lib/lib-1.0-py3-none-any.whl")).read()
    assert body == b"lib one"

    code, out, _ = await run(capsys, "import", str(tmp_path / "export"), "--data-dir", str(target))
    assert code == 0 and "2 already there" in out and "cached pages: 0 imported (0 bytes), 1 already there" in out


async def test_a_damaged_cached_file_is_refused_on_import(
    make_client: MakeClient, tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    async with FakeUpstream(formats="json") as fake:
        fake.add_file("lib", "lib-1.0-py3-none-any.whl", b"lib one")
        source = tmp_path / "source"
        client, _ = await make_client(data_dir=source, upstream_url=fake.index_url)
        await (await client.get("/files/lib/lib-1.0-py3-none-any.whl")).read()
    assert cli.main(["export", str(tmp_path / "export"), "--include-cache", "--data-dir", str(source)]) == 0
    (body,) = (tmp_path / "export" / "cache" / "files").iterdir()
    body.write_bytes(b"lib 0ne")
    capsys.readouterr()
    code, out, err = await run(capsys, "import", str(tmp_path / "export"), "--data-dir", str(tmp_path / "t"))
    assert code == 1 and "cached files: 0 imported" in out and "sha256" in err


async def test_cached_records_whose_key_name_or_sha256_disagree_are_refused(
    make_client: MakeClient, tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    """A tampered export cannot poison the target's cache: a record's key, body name and sha256
    must agree with each other and with the body, or nothing of it is written."""
    from pyproxy.ops import cacheops
    from pyproxy.ops.transfer_format import key_name as _key_name

    async with FakeUpstream(formats="json") as fake:
        good = fake.add_file("lib", "lib-1.0-py3-none-any.whl", b"lib one")
        source = tmp_path / "source"
        client, _ = await make_client(data_dir=source, upstream_url=fake.index_url)
        await (await client.get("/files/lib/lib-1.0-py3-none-any.whl")).read()
    export = tmp_path / "export"
    assert cli.main(["export", str(export), "--include-cache", "--data-dir", str(source)]) == 0
    files = export / "cache" / "files"
    (record,) = [orjson.loads(line) for line in (export / "cache" / "files.jsonl").read_bytes().splitlines()]
    assert record["key"] == record["sha256"] == good.sha256

    evil = b"evil bytes served as lib one"
    evil_sha = hashlib.sha256(evil).hexdigest()
    (files / _key_name("x")).write_bytes(evil)  # any body name: the checks come first
    url_key = "url:" + "0" * 64
    tampered = [
        # the evil body under the good file's key: its own sha256 would pass the body check
        {**record, "sha256": evil_sha, "size": len(evil), "file": _key_name("x")},
        # a body exported for another key, served under a key that names no sha256
        {**record, "key": url_key},
        {**record, "key": "whatever", "file": _key_name("whatever")},
        {**record, "key": good.sha256.upper(), "sha256": good.sha256.upper()},
        record,  # and the untouched record still comes in
    ]
    (export / "cache" / "files.jsonl").write_bytes(b"\n".join(orjson.dumps(r) for r in tampered))
    capsys.readouterr()

    target = tmp_path / "target"
    code, out, err = await run(capsys, "import", str(export), "--data-dir", str(target))
    assert code == 1 and "cached files: 1 imported (7 bytes), 4 failed" in out, out
    assert f"failed: cached {good.sha256}: the key names sha256 {good.sha256}, the record says {evil_sha}" in err
    assert (
        f"failed: cached {url_key}: the record's body '{_key_name(good.sha256)}'"
        " is not the one exported for this key"
    ) in err
    assert "failed: cached whatever: not a cache key pyproxy makes" in err
    assert f"failed: cached {good.sha256.upper()}: sha256 '{good.sha256.upper()}' is not a lowercase hex sha256" in err

    blobs = cacheops.open_blobs(target, 1 << 30)
    try:
        assert [entry.key for entry in blobs.entries()] == [good.sha256]
        hit = blobs.lookup(good.sha256)
        assert hit is not None and hit.path.read_bytes() == b"lib one"
    finally:
        await blobs.aclose()
    _, blob_dir = cacheops.cache_dirs(target)
    assert not [p for p in blob_dir.rglob("*") if p.is_file() and p.suffix == ".part"]


async def _box_that_fetched(make_client: MakeClient, tmp_path: Path, filename: str, wheel: bytes
                            ) -> tuple[Path, str]:
    """A data dir that fetched the page of `lib` and its one file: (data dir, upstream URL)."""
    async with FakeUpstream(formats="json") as fake:
        fake.add_file("lib", filename, wheel)
        source = tmp_path / "source"
        client, _ = await make_client(data_dir=source, upstream_url=fake.index_url)
        assert (await client.get("/simple/lib/")).status == 200
        fetched = await client.get(f"/files/lib/{filename}")
        assert fetched.status == 200 and await fetched.read() == wheel
        return source, fake.index_url


def _node_args(tmp_path: Path, pg_dsn: str, s3: S3Server, bucket: str) -> list[str]:
    """A cluster node's command-line: its data dir and its [storage] configuration."""
    config = tmp_path / "cluster.toml"
    config.write_text(f'[storage]\ndatabase = "{pg_dsn}"\nobjects = "s3://{bucket}"\n'
                      f's3_endpoint = "{s3.endpoint}"\nnode_url = "http://127.0.0.1:8080"\n')
    return ["--data-dir", str(tmp_path / "node"), "--config", str(config)]


async def test_cached_pages_and_files_move_from_a_data_dir_into_a_cluster_and_back(
    make_client: MakeClient, tmp_path: Path, capsys: pytest.CaptureFixture[str], pg_dsn: str,
    s3: S3Server, bucket: str,
) -> None:
    """export --include-cache / import between a single box and a cluster, both ways: the pages
    and files a box fetched are the cluster's shared copies (PostgreSQL rows, bucket objects),
    and back again into an offline box."""
    import psycopg

    from pyproxy.stores.objects import Bucket
    from pyproxy.stores.pg.database import Database
    from pyproxy.stores.pg.pages import ClusterPageStore

    wheel = b"lib one, a wheel's bytes"
    sha256 = hashlib.sha256(wheel).hexdigest()
    source, upstream_url = await _box_that_fetched(make_client, tmp_path, "lib-1.0-py3-none-any.whl",
                                                   wheel)
    node = _node_args(tmp_path, pg_dsn, s3, bucket)
    assert (await run(capsys, "export", str(tmp_path / "box"), "--include-cache",
                      "--data-dir", str(source)))[0] == 0
    code, out, err = await run(capsys, "import", str(tmp_path / "box"), *node)
    assert code == 0, err
    assert "cached pages: 1 imported" in out and "cached files: 1 imported" in out
    database = Database(pg_dsn)
    try:
        shared = ClusterPageStore(database, None, "", tmp_path / "look").load("lib")
    finally:
        database.close()
    assert shared is not None and b"lib-1.0-py3-none-any.whl" in shared.body
    assert not (tmp_path / "node" / "cache" / "pages").exists()  # in the database only
    with psycopg.connect(pg_dsn) as conn:
        assert conn.execute("SELECT sha256, size FROM cache_blobs WHERE key = %s",
                            (sha256,)).fetchall() == [(sha256, len(wheel))]
    objects = Bucket(f"s3://{bucket}", endpoint=s3.endpoint)
    assert objects.size(f"cache/{sha256}") == len(wheel)
    code, out, _ = await run(capsys, "import", str(tmp_path / "box"), *node)
    assert code == 0 and "cached files: 0 imported (0 bytes), 1 already there" in out

    code, out, err = await run(capsys, "export", str(tmp_path / "cluster"), "--include-cache", *node)
    assert code == 0 and "cached pages: 1 exported" in out and "cached files: 1 exported" in out, err
    target = tmp_path / "target"
    assert (await run(capsys, "import", str(tmp_path / "cluster"), "--data-dir", str(target)))[0] == 0
    offline, _ = await make_client(data_dir=target, upstream_url=upstream_url, offline=True)
    response = await offline.get("/simple/lib/", headers={"Accept": JSON})
    assert response.status == 200  # the page and its file came back from the cluster
    assert [f["filename"] for f in orjson.loads(await response.read())["files"]] == [
        "lib-1.0-py3-none-any.whl"]
    body = await offline.get("/files/lib/lib-1.0-py3-none-any.whl")
    assert body.status == 200 and await body.read() == wheel


async def test_a_damaged_cached_file_is_refused_on_import_into_a_cluster(
    make_client: MakeClient, tmp_path: Path, capsys: pytest.CaptureFixture[str], pg_dsn: str,
    s3: S3Server, bucket: str,
) -> None:
    import psycopg

    from pyproxy.stores.objects import Bucket

    wheel = b"lib two, a wheel's bytes"
    sha256 = hashlib.sha256(wheel).hexdigest()
    source, _ = await _box_that_fetched(make_client, tmp_path, "lib-2.0-py3-none-any.whl", wheel)
    export = tmp_path / "box"
    assert cli.main(["export", str(export), "--include-cache", "--data-dir", str(source)]) == 0
    (body,) = (export / "cache" / "files").iterdir()
    body.write_bytes(b"X" + body.read_bytes()[1:])  # same length, other bytes
    capsys.readouterr()
    code, out, err = await run(capsys, "import", str(export), *_node_args(tmp_path, pg_dsn, s3, bucket))
    assert code == 1 and "cached files: 0 imported (0 bytes), 1 failed" in out
    assert f"failed: cached {sha256}:" in err
    with psycopg.connect(pg_dsn) as conn:
        assert conn.execute("SELECT 1 FROM cache_blobs WHERE key = %s", (sha256,)).fetchall() == []
    assert [key for key, _ in Bucket(f"s3://{bucket}", endpoint=s3.endpoint).keys("cache/")] == []
