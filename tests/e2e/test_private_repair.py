"""End to end: a private body damaged (same length, other bytes) or lost where it is kept, on a
cluster of two `pyproxy serve` nodes (real PostgreSQL, moto's bucket) and on one box.

- an identical `twine upload` of the original file writes the body back (and is still "nothing
  to do" when the body is fine);
- the node that holds a good local copy puts the bucket's object back when it serves it;
- `pyproxy cache verify` names each bad private file, removes none, exits 1 (and a node with a
  good copy puts it back);
- `pyproxy export` names a private file it cannot read, exports the others, exits 1, and leaves
  no manifest that `pyproxy import` would take for a complete export.
"""

from __future__ import annotations

import contextlib
import hashlib
import io
import sys
import uuid
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path

import obstore
import pytest
from obstore.store import S3Store

from pyproxy.cli.main import main
from tests.dists import make_wheel
from tests.e2e.clients import file_entries, get, twine_upload
from tests.e2e.conftest import PyproxyServer, ServerFactory
from tests.e2e.test_cluster_nodes import add_users
from tests.servers.postgres import PostgresServer, free_port
from tests.servers.s3 import S3Server
from tests.servers.s3 import credentials as s3_credentials
from tests.waiting import wait_until

pytestmark = pytest.mark.e2e

USER, PASSWORD = "carol", "repair-carol-pw"
PREFIX = "nodes"


def command(config: Path | None, data_dir: Path, *args: str) -> tuple[int, str, str]:
    """`pyproxy ARGS` in this process: (exit status, stdout, stderr)."""
    out, err = io.StringIO(), io.StringIO()
    saved = sys.stdin
    sys.stdin = io.StringIO("")
    configured = ["--config", str(config)] if config is not None else []
    try:
        with contextlib.redirect_stdout(out), contextlib.redirect_stderr(err):
            status = main([*args, *configured, "--data-dir", str(data_dir)])
    finally:
        sys.stdin = saved
    return status, out.getvalue(), err.getvalue()


def sha(path: Path) -> str:
    return hashlib.sha256(path.read_bytes()).hexdigest()


@dataclass
class Cluster:
    a: PyproxyServer
    b: PyproxyServer
    configs: tuple[Path, Path]
    s3: S3Server
    bucket: str
    base: Path

    def store(self) -> S3Store:
        """The bucket as any S3 client sees it (not through pyproxy)."""
        return S3Store(self.bucket, endpoint=self.s3.endpoint, region="us-east-1",
                       client_options={"allow_http": True}, **_keys())

    @staticmethod
    def key(wheel: Path) -> str:
        digest = sha(wheel)
        return f"{PREFIX}/private/{digest[:2]}/{digest[2:4]}/{digest}"

    def damage(self, wheel: Path) -> None:
        """The object's bytes replaced by as many others (a bad restore)."""
        obstore.put(self.store(), self.key(wheel), bytes(255 - b for b in wheel.read_bytes()))

    def lose(self, wheel: Path) -> None:
        obstore.delete(self.store(), self.key(wheel))

    def in_bucket(self, wheel: Path) -> bytes | None:
        try:
            return bytes(obstore.get(self.store(), self.key(wheel)).bytes())
        except FileNotFoundError:
            return None


def _keys() -> dict[str, str]:
    keys = s3_credentials()
    return {"access_key_id": keys["AWS_ACCESS_KEY_ID"],
            "secret_access_key": keys["AWS_SECRET_ACCESS_KEY"]}


def copy_of(node: PyproxyServer, wheel: Path) -> Path:
    digest = sha(wheel)
    return node.data_dir / "cache" / "copies" / digest[:2] / digest[2:4] / digest


@pytest.fixture(scope="module")
def cluster(
    postgres: PostgresServer, s3: S3Server, module_pyproxy_factory: ServerFactory,
    tmp_path_factory: pytest.TempPathFactory,
) -> Iterator[Cluster]:
    base = tmp_path_factory.mktemp("repair")
    if postgres.pid is None:
        postgres.start()
    if s3.pid is None:
        s3.start()
    dsn = postgres.new_database()
    bucket = s3.new_bucket()
    with pytest.MonkeyPatch.context() as env:
        for key, value in s3_credentials().items():
            env.setenv(key, value)
        ports = free_port(), free_port()
        configs = []
        for name, port in zip("ab", ports, strict=True):
            config = base / f"{name}.toml"
            config.write_text(
                f'[storage]\ndatabase = "{dsn}"\nobjects = "s3://{bucket}/{PREFIX}"\n'
                f's3_endpoint = "{s3.endpoint}"\nnode_url = "http://127.0.0.1:{port}"\n'
            )
            configs.append(config)
        add_users(configs[0], base / "data-a", (USER, PASSWORD, False))
        a, b = (
            module_pyproxy_factory.start(
                base / f"data-{name}", user=None, create_user=False,
                extra_args=["--config", str(config), "--port", str(port)],
            )
            for name, config, port in zip("ab", configs, ports, strict=True)
        )
        yield Cluster(a, b, (configs[0], configs[1]), s3, bucket, base)


def uploaded(cluster: Cluster, node: PyproxyServer, version: str) -> Path:
    """A new project's wheel, uploaded with twine through `node` (which keeps a local copy)."""
    wheel = make_wheel(cluster.base / "dists", f"repair-{uuid.uuid4().hex[:8]}", version)
    twine_upload(node.upload_url, [wheel], USER, PASSWORD)
    return wheel


def url_on(node: PyproxyServer, wheel: Path) -> str:
    project = wheel.name.split("-")[0].replace("_", "-")
    return str(file_entries(node.simple_url, project)[wheel.name]["url"])


def test_an_identical_twine_upload_writes_a_damaged_or_lost_body_back(cluster: Cluster) -> None:
    wheel = uploaded(cluster, cluster.a, "1.0")
    cluster.damage(wheel)
    broken = get(url_on(cluster.b, wheel))  # b has no copy: it reads the bucket's object
    assert broken.status == 503 and "damaged" in broken.body, broken

    again = twine_upload(cluster.b.upload_url, [wheel], USER, PASSWORD)
    assert again.returncode == 0
    assert cluster.in_bucket(wheel) == wheel.read_bytes()
    served = get(url_on(cluster.b, wheel))
    assert served.status == 200 and served.content == wheel.read_bytes(), served
    assert "repaired private file" in cluster.b.stderr_text()

    cluster.lose(wheel)  # a lost bucket, or a bad restore
    copy_of(cluster.b, wheel).unlink()
    assert get(url_on(cluster.b, wheel)).status == 503
    twine_upload(cluster.a.upload_url, [wheel], USER, PASSWORD)
    assert cluster.in_bucket(wheel) == wheel.read_bytes()
    assert get(url_on(cluster.b, wheel)).content == wheel.read_bytes()

    # the body fine: still nothing to do
    before = cluster.a.stderr_text().count("repaired private file")
    twine_upload(cluster.a.upload_url, [wheel], USER, PASSWORD)
    assert cluster.a.stderr_text().count("repaired private file") == before


def test_the_node_with_a_good_local_copy_puts_the_bucket_object_back(cluster: Cluster) -> None:
    wheel = uploaded(cluster, cluster.a, "1.0")  # a keeps the upload as its local copy
    cluster.damage(wheel)
    assert get(url_on(cluster.b, wheel)).status == 503
    # a serves its copy, and checks the bucket's object behind it (in the background)
    served = get(url_on(cluster.a, wheel))
    assert served.status == 200 and served.content == wheel.read_bytes()
    wait_until(lambda: cluster.in_bucket(wheel) == wheel.read_bytes(), 20,
               "a to put its copy back in the bucket")
    fixed = get(url_on(cluster.b, wheel))
    assert fixed.status == 200 and fixed.content == wheel.read_bytes(), fixed
    assert "putting it back from this node's local copy" in cluster.a.stderr_text()


def test_cache_verify_names_bad_private_bodies_and_removes_none(cluster: Cluster) -> None:
    damaged = uploaded(cluster, cluster.a, "1.0")
    lost = uploaded(cluster, cluster.a, "1.0")
    cluster.damage(damaged)
    cluster.lose(lost)
    # a machine with no copies (b's data dir holds none of these)
    status, out, err = command(cluster.configs[1], cluster.b.data_dir, "cache", "verify")
    assert status == 1, (out, err)
    project = damaged.name.split("-")[0].replace("_", "-")
    assert f"damaged private file {project} {damaged.name}: the bucket's object has sha256" in out
    assert f"{lost.name}: its body is missing from the bucket" in out
    assert cluster.in_bucket(damaged) not in (None, damaged.read_bytes())  # nothing removed
    # on a, whose local copies are good, they are put back
    status, out, err = command(cluster.configs[0], cluster.a.data_dir, "cache", "verify")
    assert status == 1, (out, err)
    assert f"repaired private file {project} {damaged.name}" in out
    assert cluster.in_bucket(damaged) == damaged.read_bytes()
    assert cluster.in_bucket(lost) == lost.read_bytes()
    status, out, err = command(cluster.configs[1], cluster.b.data_dir, "cache", "verify")
    assert status == 0, (out, err)
    assert "0 damaged" in out.splitlines()[-1]


def test_export_names_an_unreadable_private_file_and_exports_the_others(
    cluster: Cluster, tmp_path: Path
) -> None:
    good = uploaded(cluster, cluster.a, "1.0")
    bad = uploaded(cluster, cluster.a, "1.0")
    cluster.damage(bad)
    target = tmp_path / "export"
    status, out, err = command(cluster.configs[1], tmp_path / "elsewhere", "export", str(target))
    assert status == 1, (out, err)
    assert f"failed: {bad.name}: not exported: the bucket's copy of private file" in err, err
    assert "incomplete" in err
    assert (target / "private" / "files" / good.name).read_bytes() == good.read_bytes()
    assert not (target / "private" / "files" / bad.name).exists()
    assert not (target / "pyproxy-export.json").exists()
    assert bad.name in (target / "pyproxy-export.incomplete.json").read_text()
    refused = command(None, tmp_path / "imported", "import", str(target))
    assert refused[0] == 1 and "not a complete pyproxy export" in refused[2], refused
    cluster.lose(bad)  # not in the way of the other tests' verify
    twine_upload(cluster.a.upload_url, [bad], USER, PASSWORD)


# ------------------------------------------------------------------------------------ one box


def body_of(server: PyproxyServer, wheel: Path) -> Path:
    digest = sha(wheel)
    return server.data_dir / "private" / "blobs" / digest[:2] / digest[2:4] / digest


def test_one_box_repairs_by_reupload_and_reports_by_verify_and_export(
    pyproxy_factory: ServerFactory, tmp_path: Path
) -> None:
    server = pyproxy_factory.start()
    assert server.user is not None and server.password is not None
    damaged = make_wheel(tmp_path / "dists", f"box-{uuid.uuid4().hex[:8]}", "1.0")
    lost = make_wheel(tmp_path / "dists", f"box-{uuid.uuid4().hex[:8]}", "1.0")
    twine_upload(server.upload_url, [damaged, lost], server.user, server.password)
    body_of(server, damaged).write_bytes(bytes(255 - b for b in damaged.read_bytes()))
    body_of(server, lost).unlink()

    verified = server.cli("cache", "verify", check=False)
    assert verified.returncode == 1, verified
    project = damaged.name.split("-")[0].replace("_", "-")
    assert (f"damaged private file {project} {damaged.name}: its body on disk has sha256"
            in verified.stdout), verified.stdout
    assert f"{lost.name}: its body is missing from the data directory" in verified.stdout
    assert body_of(server, damaged).exists()  # reported, never removed

    target = tmp_path / "export"
    exported = server.cli("export", str(target), check=False)
    assert exported.returncode == 1
    assert f"failed: {damaged.name}: not exported: its body is damaged" in exported.stderr
    assert f"failed: {lost.name}: not exported: its body is missing" in exported.stderr
    assert not (target / "pyproxy-export.json").exists()

    twine_upload(server.upload_url, [damaged, lost], server.user, server.password)
    for wheel in (damaged, lost):
        assert body_of(server, wheel).read_bytes() == wheel.read_bytes()
        served = get(url_on(server, wheel))
        assert served.status == 200 and served.content == wheel.read_bytes()
    assert server.cli("cache", "verify", check=False).returncode == 0
