"""A throwaway S3-compatible server for the tests: moto's server mode, which enforces conditional
writes (a second `If-None-Match: *` PUT gets 412), in a process of its own on 127.0.0.1 and a
free port, stopped by its PID. `stop()` and `start()` again are the "bucket down" fault tests;
moto keeps its objects in memory, so a restart loses them (say so where it matters). A watchdog
(tests/servers/watchdog.py) stops the server if pytest dies first.
"""

from __future__ import annotations

import os
import signal
import subprocess
import sys
import time
import urllib.error
import urllib.request
import uuid
from pathlib import Path

from tests.servers.postgres import free_port
from tests.servers.watchdog import Watchdog

ACCESS_KEY = "testing"
SECRET_KEY = "testing"
REGION = "us-east-1"


def credentials() -> dict[str, str]:
    """The environment a pyproxy process (or obstore) needs to reach the server."""
    return {
        "AWS_ACCESS_KEY_ID": ACCESS_KEY,
        "AWS_SECRET_ACCESS_KEY": SECRET_KEY,
        "AWS_REGION": REGION,
        "AWS_DEFAULT_REGION": REGION,
    }


def available() -> str | None:
    moto_server = Path(sys.executable).with_name("moto_server")
    return None if moto_server.exists() else "moto[server] is not installed (the test extra)"


class S3Server:
    def __init__(self) -> None:
        self.port = free_port()
        self.proc: subprocess.Popen[bytes] | None = None
        self._watchdog = Watchdog(match=" ".join(self._command()), first_signal=signal.SIGTERM)

    @property
    def endpoint(self) -> str:
        return f"http://127.0.0.1:{self.port}"

    @property
    def pid(self) -> int | None:
        return self.proc.pid if self.proc is not None and self.proc.poll() is None else None

    def _command(self) -> list[str]:
        moto_server = Path(sys.executable).with_name("moto_server")
        return [str(moto_server), "-H", "127.0.0.1", "-p", str(self.port)]

    def start(self) -> S3Server:
        self.proc = subprocess.Popen(
            self._command(),
            stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL, stdin=subprocess.DEVNULL,
            env={**os.environ, **credentials()}, start_new_session=True,
        )
        deadline = time.monotonic() + 20
        while True:
            try:
                urllib.request.urlopen(f"{self.endpoint}/moto-api/", timeout=1).close()
                return self
            except (urllib.error.URLError, OSError):
                if self.proc.poll() is not None or time.monotonic() > deadline:
                    raise RuntimeError("moto_server did not start") from None
                time.sleep(0.05)

    def stop(self) -> None:
        if self.proc is not None and self.proc.poll() is None:
            os.kill(self.proc.pid, signal.SIGTERM)
            try:
                self.proc.wait(10)
            except subprocess.TimeoutExpired:
                os.kill(self.proc.pid, signal.SIGKILL)
                self.proc.wait()
        self.proc = None

    def new_bucket(self) -> str:
        """A new empty bucket; its name."""
        name = f"t-{uuid.uuid4().hex[:12]}"
        request = urllib.request.Request(f"{self.endpoint}/{name}", method="PUT")
        urllib.request.urlopen(request, timeout=10).close()
        return name

    def close(self) -> None:
        self.stop()
        self._watchdog.close()
