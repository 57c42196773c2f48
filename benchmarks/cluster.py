"""The `cluster` system (issue #11): 2 pyproxy nodes sharing one PostgreSQL and one S3 bucket,
behind nginx round-robin, measured like any other pull-through cache.

PostgreSQL is Debian's, run as the postgres user (initdb -A trust, 127.0.0.1, a free port, fsync
off), and S3 is moto's server mode: both through the test suite's helpers (tests/servers/), each
stopped by its PID. Each node is `pyproxy serve --workers 1` with the [storage] settings in its
environment, so the cluster has as many workers as the `pyproxy-2w` system it is compared with.
A pyproxy that does not create its schema in the database has no [storage] support yet: the
system is then unavailable with that one line.
"""

from __future__ import annotations

import shutil
import signal
import time
from pathlib import Path

from benchmarks.measure import fetch
from benchmarks.servers import Nginx, Proc, Pyproxy, Server, Unavailable, clean_env, free_port, wait_http

NODES = 2
NO_STORAGE = "pyproxy has no [storage] support yet"


class Cluster(Server):
    name = "cluster"

    def __init__(self, work: Path) -> None:
        super().__init__(work)
        self.nodes: list[Pyproxy] = []
        self.postgres = None
        self.s3 = None
        self.dsn = ""

    def prepare(self, allow_install: bool) -> None:
        from tests.servers import postgres, s3

        for reason in (postgres.available(), s3.available()):
            if reason:
                raise Unavailable(reason)
        Nginx(self.work, self.work).prepare(allow_install)

    def version(self) -> str:
        return f"{NODES} pyproxy nodes (1 worker each) behind nginx, PostgreSQL, moto S3"

    def start(self, upstream_url: str) -> None:
        from tests.servers.postgres import PostgresServer
        from tests.servers.s3 import S3Server, credentials

        try:
            self.postgres = PostgresServer().start()
            dsn = self.postgres.new_database()
            self.s3 = S3Server().start()
            bucket = self.s3.new_bucket()
        except Exception as exc:  # any failure to set up is one line
            raise Unavailable(f"PostgreSQL or S3 did not start: {exc}") from None
        for index in range(1, NODES + 1):
            port = free_port()
            node = Pyproxy(self.work, 1, name=f"cluster-node{index}", port=port, env={
                "PYPROXY_STORAGE_DATABASE": dsn,
                "PYPROXY_STORAGE_OBJECTS": f"s3://{bucket}",
                "PYPROXY_STORAGE_S3_ENDPOINT": self.s3.endpoint,
                "PYPROXY_STORAGE_NODE_URL": f"http://127.0.0.1:{port}",
                **credentials(),
            })
            self.nodes.append(node)
            node.start(upstream_url)
        if not _has_schema(dsn):
            raise Unavailable(NO_STORAGE)
        self.dsn = dsn
        self._start_balancer()

    def _start_balancer(self) -> None:
        proc, self.index_url = start_balancer(self, [n.index_url for n in self.nodes])
        self.procs.append(proc)

    def settle(self, url: str) -> dict:
        """Every node serves `url` once, straight (its local copy: a node that has none reads
        the bucket or follows the leader), then no download is left in flight (the leader's
        copy into the bucket, which moto takes in at ~1 s of CPU per 63 MB, done): a warm load
        then measures the warm path, not the cold one's tail sharing the 2 cores."""
        started = time.monotonic()
        path = url.split("//", 1)[1].partition("/")[2]
        firsts = [fetch(f"http://{_host(node.index_url)}/{path}") for node in self.nodes]
        in_flight = _wait_no_download(self.dsn, patience=60.0)
        return {"node_first_get_ms": [round(got.total * 1000, 1) for got in firsts],
                "node_first_get_status": [got.status for got in firsts],
                "downloads_in_flight_after": in_flight,
                "settle_s": round(time.monotonic() - started, 3)}

    def pids(self) -> list[int]:
        """The nodes' (what the RSS rows count); not nginx's, PostgreSQL's or moto's."""
        return [pid for node in self.nodes for pid in node.pids()]

    def main_pid(self) -> int | None:
        return self.nodes[0].main_pid() if self.nodes else None

    def log_mark(self) -> list[int]:  # one mark per node
        return [node.log_mark() for node in self.nodes]

    def request_ms(self, since, path: str) -> list[float] | None:
        times = [node.request_ms(mark, path) or [] for node, mark in zip(self.nodes, since, strict=True)]
        return [t for node_times in times for t in node_times] or None

    def spread(self, since: list[int], path: str) -> list[int]:
        """Requests for `path` per node since the mark."""
        return [sum(1 for _, p, _, _ in node.requests(mark) if p == path)
                for node, mark in zip(self.nodes, since, strict=True)]

    def stop(self) -> None:
        for proc in self.procs:  # nginx: graceful, the master stops its workers
            proc.stop(sig=signal.SIGQUIT)
        for node in self.nodes:
            node.stop()
        for helper in (self.s3, self.postgres):
            if helper is not None:
                helper.close()

    def logs(self) -> list[Path]:
        return [*(log for node in self.nodes for log in node.logs()),
                *(proc.log for proc in self.procs)]


class BalancedNode(Pyproxy):
    """One node of as many workers as the cluster has, behind the same nginx: what the
    cluster's balancer hop costs on this machine, without the cluster (a column beside it)."""

    def __init__(self, work: Path) -> None:
        super().__init__(work, NODES, name="pyproxy-2w-lb")

    def version(self) -> str:
        return f"{super().version()}, behind the cluster's nginx"

    def start(self, upstream_url: str) -> None:
        super().start(upstream_url)
        proc, self.index_url = start_balancer(self, [self.index_url])
        self.procs.append(proc)  # after the node's: procs[0] stays the node (its access log)

    def pids(self) -> list[int]:
        """The node's (what the RSS rows count), as the cluster's."""
        return self.procs[0].pids() if self.procs else []

    def stop(self) -> None:
        for proc in self.procs[1:]:
            proc.stop(sig=signal.SIGQUIT)
        super().stop()


def start_balancer(server: Server, index_urls: list[str]) -> tuple[Proc, str]:
    """nginx round-robin over the servers of `index_urls`: its process and index URL."""
    prefix = server._fresh_dir("nginx")
    port = free_port()
    conf = prefix / "nginx.conf"
    nodes = "".join(f"        server {_host(url)};\n" for url in index_urls)
    conf.write_text(BALANCER_CONF.format(prefix=prefix, port=port, nodes=nodes))
    proc = Proc(f"{server.name}-nginx", [shutil.which("nginx") or "nginx", "-p", prefix, "-c",
                                         conf, "-e", prefix / "error.log"], server.log_dir,
                env=clean_env())
    proc.start()
    index_url = f"http://127.0.0.1:{port}/simple/"
    wait_http(index_url, proc)
    return proc, index_url


def _wait_no_download(dsn: str, patience: float) -> int:
    """Wait until the cluster names no download in flight (a leader's row goes once its copy
    is in the bucket); how many are left after `patience` seconds."""
    import psycopg

    deadline = time.monotonic() + patience
    with psycopg.connect(dsn, connect_timeout=10, autocommit=True) as conn:
        while True:
            row = conn.execute("SELECT count(*) FROM cache_inflight").fetchone()
            left = int(row[0]) if row else 0
            if not left or time.monotonic() > deadline:
                return left
            time.sleep(0.05)


def _has_schema(dsn: str) -> bool:
    import psycopg

    with psycopg.connect(dsn, connect_timeout=10) as conn:
        row = conn.execute("SELECT to_regclass('schema_versions') IS NOT NULL").fetchone()
    return bool(row and row[0])


def _host(index_url: str) -> str:
    return index_url.split("//", 1)[1].split("/", 1)[0]


# Round-robin over the nodes, unbuffered (a cold file streams to the client as the node gets it;
# nothing is spooled to nginx's disk), keep-alive to the nodes, the client's Host passed on so
# pages link through the balancer. Unbuffered, nginx relays through one proxy_buffer_size
# buffer: at the default 4-8 KB a 1.4 MB page takes ~350 reads and writes and the 63 MB wheel
# ~16,000, which made nginx's copying cost more CPU than the nodes' serving (measured: 1.6 ms of
# nginx per 5,000-file page, 85 ms per big file; 0.45 and 23 ms with 256 KB). `zone` makes the
# round-robin one for both nginx workers: with a turn of its own in each, the two connections of
# the big-file load often went to the same node at once (its one worker serving both) while the
# other idled: interleaved runs, cluster ÷ pyproxy-2w-lb ~0.81 without, ~0.94 with.
BALANCER_CONF = """\
daemon off;
worker_processes auto;
pid {prefix}/nginx.pid;
error_log {prefix}/error.log warn;
events {{ worker_connections 4096; }}
http {{
    access_log off;
    client_body_temp_path {prefix}/client_body;
    proxy_temp_path {prefix}/proxy;
    fastcgi_temp_path {prefix}/fastcgi;
    uwsgi_temp_path {prefix}/uwsgi;
    scgi_temp_path {prefix}/scgi;
    upstream nodes {{
        zone nodes 64k;
{nodes}        keepalive 64;
    }}
    server {{
        listen 127.0.0.1:{port};
        client_max_body_size 0;
        location / {{
            proxy_pass http://nodes;
            proxy_http_version 1.1;
            proxy_set_header Connection "";
            proxy_set_header Host $http_host;
            proxy_buffering off;
            proxy_buffer_size 256k;
            proxy_buffers 4 256k;
            proxy_busy_buffers_size 512k;
            proxy_request_buffering off;
            proxy_read_timeout 300s;
        }}
    }}
}}
"""
