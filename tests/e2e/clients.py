"""Run real clients (pip, uv, twine) against a pyproxy on 127.0.0.1, isolated from this machine.

This machine's own pip configuration (PIP_* variables, a global pip.conf with find-links and
extra-index-url) would otherwise satisfy installs without ever touching pyproxy, so every client
runs with `client_env()`: no PIP_*/UV_*/TWINE_* variables, no proxies, PIP_CONFIG_FILE=/dev/null,
UV_NO_CONFIG=1. pip additionally gets `--isolated`, uv `--no-config`; both get no cache and a fresh
`--target`.

Every runner returns the `CompletedProcess`; with `check=True` (the default) a non-zero exit raises
AssertionError whose message holds the command, exit code, stdout and stderr. For expected
failures pass `check=False` and put `describe(proc)` in your own assertion message.
"""

from __future__ import annotations

import base64
import http.client
import json
import os
import socket
import subprocess
import sys
import urllib.parse
import uuid
from collections.abc import Iterable, Mapping, Sequence
from dataclasses import dataclass, field
from pathlib import Path

BIN_DIR = Path(sys.executable).parent
UV = BIN_DIR / "uv"
TWINE = BIN_DIR / "twine"

CLIENT_TIMEOUT = 120

_DROP_PREFIXES = ("PIP_", "UV_", "TWINE_", "PYPROXY_")
_DROP_NAMES = {"HTTP_PROXY", "HTTPS_PROXY", "ALL_PROXY", "NO_PROXY", "PYTHONPATH", "PYTHONHOME",
               "VIRTUAL_ENV", "CONDA_PREFIX"}

SIMPLE_JSON = "application/vnd.pypi.simple.v1+json"
SIMPLE_HTML = "application/vnd.pypi.simple.v1+html"


def client_env(extra: Mapping[str, str] | None = None) -> dict[str, str]:
    """os.environ minus every PIP_*/UV_*/TWINE_*/PYPROXY_* and proxy variable (any case), plus the
    isolation settings. Also used for the pyproxy subprocesses themselves."""
    env = {
        key: value
        for key, value in os.environ.items()
        if not key.upper().startswith(_DROP_PREFIXES) and key.upper() not in _DROP_NAMES
    }
    env.update(
        PIP_CONFIG_FILE=os.devnull,
        PIP_NO_INPUT="1",
        NO_PROXY="127.0.0.1,localhost",
        no_proxy="127.0.0.1,localhost",
        UV_NO_CONFIG="1",
        UV_PYTHON_DOWNLOADS="never",
        # twine/keyring must never prompt or poke a desktop keyring
        PYTHON_KEYRING_BACKEND="keyring.backends.null.Keyring",
        PYTHONDONTWRITEBYTECODE="1",
        # clients wrap their messages to the terminal's width: never mid-phrase in a test
        COLUMNS="10000",
    )
    if extra:
        env.update(extra)
    return env


def describe(proc: subprocess.CompletedProcess) -> str:
    """Command, exit code and both output streams, for assertion messages."""
    cmd = " ".join(str(part) for part in proc.args) if isinstance(proc.args, list) else proc.args
    return (
        f"\n$ {cmd}\nexit code {proc.returncode}\n"
        f"--- stdout ---\n{proc.stdout}\n--- stderr ---\n{proc.stderr}\n--------------"
    )


def output(proc: subprocess.CompletedProcess) -> str:
    return f"{proc.stdout}\n{proc.stderr}"


def run(
    cmd: Sequence[str | os.PathLike],
    *,
    env: Mapping[str, str] | None = None,
    check: bool = True,
    input: str | None = None,
    timeout: float = CLIENT_TIMEOUT,
    cwd: str | os.PathLike | None = None,
) -> subprocess.CompletedProcess:
    proc = subprocess.run(
        [str(part) for part in cmd],
        env=dict(env) if env is not None else client_env(),
        input=input,
        capture_output=True,
        text=True,
        timeout=timeout,
        cwd=cwd,
        stdin=None if input is not None else subprocess.DEVNULL,
    )
    if check:
        assert proc.returncode == 0, f"command failed:{describe(proc)}"
    return proc


def pip_install(
    index_url: str,
    *reqs: str,
    target: Path,
    extra_args: Sequence[str] = (),
    check: bool = True,
) -> subprocess.CompletedProcess:
    """`python -m pip install --isolated --no-cache-dir ... --index-url URL --target DIR reqs`."""
    return run(
        [
            sys.executable, "-m", "pip", "install",
            "--isolated", "--no-cache-dir", "--disable-pip-version-check", "--no-input",
            "--index-url", index_url,
            "--target", str(target),
            *extra_args,
            *reqs,
        ],
        check=check,
    )


def uv_pip_install(
    index_url: str,
    *reqs: str,
    target: Path,
    extra_args: Sequence[str] = (),
    check: bool = True,
) -> subprocess.CompletedProcess:
    """`uv pip install --no-config --no-cache --python sys.executable --default-index URL
    --target DIR reqs`."""
    return run(
        [
            UV, "pip", "install",
            "--no-config", "--no-cache", "--no-progress",
            "--python", sys.executable,
            "--default-index", index_url,
            "--target", str(target),
            *extra_args,
            *reqs,
        ],
        check=check,
    )


def twine_upload(
    url: str,
    files: Iterable[Path],
    user: str,
    password: str,
    *,
    extra_args: Sequence[str] = (),
    check: bool = True,
) -> subprocess.CompletedProcess:
    return run(
        [
            TWINE, "upload",
            "--non-interactive", "--disable-progress-bar",
            "--repository-url", url,
            "-u", user, "-p", password,
            *extra_args,
            *[str(f) for f in files],
        ],
        check=check,
    )


def uv_publish(
    publish_url: str,
    files: Iterable[Path],
    user: str,
    password: str,
    *,
    check_url: str | None = None,
    extra_args: Sequence[str] = (),
    check: bool = True,
) -> subprocess.CompletedProcess:
    cmd: list[str | os.PathLike] = [
        UV, "publish", "--no-config", "--no-cache", "--no-progress",
        "--trusted-publishing", "never", "--keyring-provider", "disabled",
        "--publish-url", publish_url,
        "--username", user, "--password", password,
    ]
    if check_url is not None:
        cmd += ["--check-url", check_url]
    cmd += [*extra_args, *[str(f) for f in files]]
    return run(cmd, check=check)


def installed(target: Path) -> dict[str, str]:
    """{distribution name as in the dist-info directory: version} found in a --target dir."""
    found = {}
    for entry in target.glob("*.dist-info"):
        name, _, version = entry.name.removesuffix(".dist-info").rpartition("-")
        found[name] = version
    return found


def import_from_target(target: Path, module: str, attribute: str = "VERSION") -> str:
    """Import `module` with PYTHONPATH=target in a fresh interpreter; return `module.attribute`.
    Also asserts the module really came from `target`."""
    code = (
        "import json, sys, importlib; m = importlib.import_module(sys.argv[1]); "
        "print(json.dumps([str(getattr(m, sys.argv[2])), m.__file__]))"
    )
    proc = run(
        [sys.executable, "-s", "-c", code, module, attribute],
        env=client_env({"PYTHONPATH": str(target)}),
        cwd=target,
    )
    value, filename = json.loads(proc.stdout.strip().splitlines()[-1])
    assert Path(filename).resolve().is_relative_to(target.resolve()), (
        f"{module} was imported from {filename}, not from {target}"
    )
    return value


# ---------------------------------------------------------------------------------------------
# Raw HTTP (no client library): exact status, reason phrase and body


@dataclass
class RawResponse:
    status: int
    reason: str
    body: str
    headers: dict[str, str] = field(default_factory=dict)
    content: bytes = b""

    def __str__(self) -> str:
        return f"{self.status} {self.reason!r} body={self.body[:2000]!r}"


def basic_auth(user: str, password: str) -> str:
    return "Basic " + base64.b64encode(f"{user}:{password}".encode()).decode()


def encode_multipart(
    fields: Mapping[str, Sequence[str]], filename: str, content: bytes
) -> tuple[bytes, str]:
    """A multipart/form-data body in twine's order: metadata fields, then `content`."""
    boundary = "pyproxy-e2e-" + uuid.uuid4().hex
    parts: list[bytes] = []
    for name, values in fields.items():
        for value in values:
            parts.append(
                f'--{boundary}\r\nContent-Disposition: form-data; name="{name}"\r\n\r\n'.encode()
                + value.encode("utf-8")
                + b"\r\n"
            )
    parts.append(
        (
            f"--{boundary}\r\nContent-Disposition: form-data; name=\"content\"; "
            f'filename="{filename}"\r\nContent-Type: application/octet-stream\r\n\r\n'
        ).encode()
        + content
        + b"\r\n"
    )
    parts.append(f"--{boundary}--\r\n".encode())
    return b"".join(parts), f"multipart/form-data; boundary={boundary}"


def upload_request(
    upload_url: str,
    path: Path,
    user: str | None,
    password: str | None,
    *,
    content: bytes | None = None,
    fields: Mapping[str, Sequence[str]] | None = None,
) -> tuple[bytes, dict[str, str]]:
    """Body and headers of the POST twine would send for `path` (or for other `content` under
    path's name; digests are recomputed for the bytes actually sent)."""
    from tests.dists import form_fields_for

    data = path.read_bytes() if content is None else content
    form = dict(form_fields_for(path)) if fields is None else dict(fields)
    if fields is None and content is not None:
        import hashlib

        form["sha256_digest"] = [hashlib.sha256(data).hexdigest()]
        form["blake2_256_digest"] = [hashlib.blake2b(data, digest_size=32).hexdigest()]
    body, content_type = encode_multipart(form, path.name, data)
    headers = {"Content-Type": content_type, "Content-Length": str(len(body)),
               "User-Agent": "pyproxy-e2e"}
    if user is not None:
        headers["Authorization"] = basic_auth(user, password or "")
    return body, headers


def raw_request(
    method: str,
    url: str,
    *,
    body: bytes | None = None,
    headers: Mapping[str, str] | None = None,
    timeout: float = 30,
) -> RawResponse:
    parts = urllib.parse.urlsplit(url)
    assert parts.scheme == "http" and parts.hostname == "127.0.0.1", url
    conn = http.client.HTTPConnection(parts.hostname, parts.port, timeout=timeout)
    try:
        path = parts.path or "/"
        if parts.query:
            path += "?" + parts.query
        conn.request(method, path, body=body, headers=dict(headers or {}))
        resp = conn.getresponse()
        data = resp.read()
        return RawResponse(
            status=resp.status,
            reason=resp.reason,
            body=data.decode("utf-8", "replace"),
            headers={k.lower(): v for k, v in resp.getheaders()},
            content=data,
        )
    finally:
        conn.close()


def raw_upload(
    upload_url: str,
    path: Path,
    user: str | None,
    password: str | None,
    *,
    content: bytes | None = None,
    fields: Mapping[str, Sequence[str]] | None = None,
    timeout: float = 30,
) -> RawResponse:
    """POST `path` (or `content` under its filename) as twine would; return status/reason/body."""
    body, headers = upload_request(upload_url, path, user, password, content=content,
                                   fields=fields)
    return raw_request("POST", upload_url, body=body, headers=headers, timeout=timeout)


def start_partial_upload(
    upload_url: str, path: Path, user: str, password: str, *, fraction: float = 0.5
) -> socket.socket:
    """Send the request line, headers (with the full Content-Length) and `fraction` of the body,
    then return the still-open socket: the server is left in the middle of the upload."""
    body, headers = upload_request(upload_url, path, user, password)
    parts = urllib.parse.urlsplit(upload_url)
    sock = socket.create_connection((parts.hostname, parts.port), timeout=30)
    head = f"POST {parts.path or '/'} HTTP/1.1\r\nHost: {parts.netloc}\r\n"
    head += "".join(f"{k}: {v}\r\n" for k, v in headers.items()) + "\r\n"
    sock.sendall(head.encode() + body[: int(len(body) * fraction)])
    return sock


def partial_upload_file_bytes(
    upload_url: str, path: Path, user: str, password: str, *, fraction: float = 0.5
) -> int:
    """How many bytes of the file itself `start_partial_upload` sends (the fields go first)."""
    body, _ = upload_request(upload_url, path, user, password)
    return max(0, int(len(body) * fraction) - body.index(path.read_bytes()))


def get(url: str, accept: str | None = None, timeout: float = 30) -> RawResponse:
    return raw_request("GET", url, headers={"Accept": accept} if accept else {}, timeout=timeout)


def project_json(simple_url: str, project: str) -> dict:
    """The PEP 691 JSON project page."""
    resp = get(f"{simple_url.rstrip('/')}/{project}/", accept=SIMPLE_JSON)
    assert resp.status == 200, f"GET JSON page of {project}: {resp}"
    assert resp.headers.get("content-type", "").split(";")[0].strip() == SIMPLE_JSON, resp.headers
    return json.loads(resp.body)


def file_entries(simple_url: str, project: str) -> dict[str, dict]:
    """filename -> file entry of the JSON page, with "url" made absolute."""
    page_url = f"{simple_url.rstrip('/')}/{project}/"
    entries = {}
    for entry in project_json(simple_url, project)["files"]:
        entries[entry["filename"]] = {**entry, "url": urllib.parse.urljoin(page_url, entry["url"])}
    return entries


def listed_filenames(simple_url: str, project: str) -> list[str]:
    """Filenames on the JSON project page, duplicates kept (empty list on 404)."""
    resp = get(f"{simple_url.rstrip('/')}/{project}/", accept=SIMPLE_JSON)
    if resp.status == 404:
        return []
    assert resp.status == 200, f"GET JSON page of {project}: {resp}"
    return [f["filename"] for f in json.loads(resp.body)["files"]]


__all__ = [
    "SIMPLE_HTML",
    "SIMPLE_JSON",
    "TWINE",
    "UV",
    "RawResponse",
    "basic_auth",
    "client_env",
    "describe",
    "encode_multipart",
    "file_entries",
    "get",
    "import_from_target",
    "installed",
    "listed_filenames",
    "output",
    "partial_upload_file_bytes",
    "pip_install",
    "project_json",
    "raw_request",
    "raw_upload",
    "run",
    "start_partial_upload",
    "twine_upload",
    "upload_request",
    "uv_pip_install",
    "uv_publish",
]
