"""End to end: private file bodies in the bucket ([storage] objects, moto's S3 server), real twine
and pip against a `pyproxy serve` node: the upload lands in the bucket, the node's local copies
may be deleted while it runs, the bucket going down is a 503 (never a 404) for a file not
copied to the node while copied ones are served, and it recovers without a restart. A bucket
that does not answer at start-up is one line and exit 1.

The node is given a PostgreSQL database too, as [storage] requires both (the private records'
store on PostgreSQL is another module's; what is tested here is the bodies).
"""

from __future__ import annotations

import hashlib
import shutil
import subprocess
import urllib.request
import uuid
from pathlib import Path

from tests.dists import make_wheel, underscored
from tests.e2e.clients import (
    client_env,
    describe,
    file_entries,
    get,
    import_from_target,
    output,
    pip_install,
    twine_upload,
)
from tests.e2e.conftest import PyproxyServer, ServerFactory, pyproxy_command
from tests.servers.s3 import S3Server

RUN = uuid.uuid4().hex[:6]


def cluster_config(path: Path, pg_dsn: str, bucket: str, endpoint: str) -> Path:
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_text(
        "[storage]\n"
        f'database = "{pg_dsn}"\n'
        f'objects = "s3://{bucket}/pyproxy"\n'
        f's3_endpoint = "{endpoint}"\n'
        'node_url = "http://127.0.0.1:1"\n'
    )
    return path


def start_node(factory: ServerFactory, pg_dsn: str, bucket: str, endpoint: str) -> PyproxyServer:
    # ./pyproxy.toml in the server's working directory: read by `serve` and by the commands the
    # factory runs there before it (user add)
    cwd = factory.base / f"logs{len(factory.servers)}"
    cluster_config(cwd / "pyproxy.toml", pg_dsn, bucket, endpoint)
    return factory.start()


def copy_of(server: PyproxyServer, path: Path) -> Path:
    digest = hashlib.sha256(path.read_bytes()).hexdigest()
    return server.data_dir / "cache" / "copies" / digest[:2] / digest[2:4] / digest


def bucket_keys(endpoint: str, bucket: str) -> str:
    with urllib.request.urlopen(f"{endpoint}/{bucket}?list-type=2", timeout=10) as listing:
        return str(listing.read().decode())


def test_private_bodies_live_in_the_bucket(
    pyproxy_factory: ServerFactory, s3: S3Server, bucket: str, pg_dsn: str, tmp_path: Path
) -> None:
    server = start_node(pyproxy_factory, pg_dsn, bucket, s3.endpoint)
    assert server.user is not None and server.password is not None
    name = f"e2e-bucket-{RUN}"
    first = make_wheel(tmp_path / "dists", name, "1.0")
    twine_upload(server.upload_url, [first], server.user, server.password)
    digest = hashlib.sha256(first.read_bytes()).hexdigest()
    assert f"pyproxy/private/{digest[:2]}/{digest[2:4]}/{digest}" in bucket_keys(
        s3.endpoint, bucket
    )
    assert not any((server.data_dir / "private").glob("blobs/*/*/*"))  # not in data_dir

    shutil.rmtree(server.data_dir / "cache" / "copies")  # an operator frees the disk, live
    target = tmp_path / "target"
    proc = pip_install(server.simple_url, f"{name}==1.0", target=target)
    assert import_from_target(target, underscored(name)) == "1.0", describe(proc)
    assert copy_of(server, first).read_bytes() == first.read_bytes()  # copied again

    second = make_wheel(tmp_path / "dists", name, "2.0")
    twine_upload(server.upload_url, [second], server.user, server.password)
    copy_of(server, second).unlink()  # this node has no copy of the second
    entries = file_entries(server.simple_url, name)

    s3.stop()
    try:
        kept = get(entries[first.name]["url"])
        assert kept.status == 200 and kept.content == first.read_bytes(), kept
        missing = get(entries[second.name]["url"])
        assert missing.status == 503, missing
        assert "not copied to this node" in missing.body and f"s3://{bucket}" in missing.body
        third = make_wheel(tmp_path / "dists", name, "3.0")
        refused = twine_upload(server.upload_url, [third], server.user, server.password,
                               check=False)
        assert refused.returncode != 0 and "HTTPError: 503" in output(refused), describe(refused)
        assert third.name not in file_entries(server.simple_url, name)  # nothing recorded
    finally:
        s3.start()
    # moto restarted empty: the bucket is made again; the node recovers without a restart
    request = urllib.request.Request(f"{s3.endpoint}/{bucket}", method="PUT")
    urllib.request.urlopen(request, timeout=10).close()
    twine_upload(server.upload_url, [third], server.user, server.password)
    copy_of(server, third).unlink()
    fetched = get(file_entries(server.simple_url, name)[third.name]["url"])
    assert fetched.status == 200 and fetched.content == third.read_bytes(), fetched


def test_an_unreachable_bucket_stops_serve_with_one_line(
    s3: S3Server, bucket: str, pg_dsn: str, tmp_path: Path
) -> None:
    config = cluster_config(tmp_path / "cluster.toml", pg_dsn, bucket, "http://127.0.0.1:9")
    proc = subprocess.run(
        [*pyproxy_command(), "serve", "--config", str(config), "--data-dir", str(tmp_path / "d"),
         "--host", "127.0.0.1", "--port", "0", "--no-upstream", "--workers", "1"],
        capture_output=True, text=True, timeout=60, env=client_env(), stdin=subprocess.DEVNULL,
    )
    assert proc.returncode == 1, describe(proc)
    lines = proc.stderr.strip().splitlines()
    assert len(lines) == 1 and lines[0].startswith(f"pyproxy: bucket s3://{bucket}/pyproxy"), (
        describe(proc)
    )
    assert "listening" not in proc.stderr
