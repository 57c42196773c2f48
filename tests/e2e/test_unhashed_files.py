"""End to end: a file upstream lists without a sha256 (an HTML page without `#sha256=`) comes
back damaged but with a consistent Content-Length: a byte flipped inside a wheel's member, a
`.tar.gz` cut short. pyproxy cannot match a hash, so only the check of the whole archive stands
between the damage and a permanent, `immutable` cache hit. A body of unknown size goes out as it
comes, so the damage found at its end aborts the answer (never a complete 200; a client retries
as after any cut connection). Nothing is kept, and the file is served once upstream sends it
whole."""

from __future__ import annotations

import http.client
import io
import struct
import uuid
import zipfile
from collections.abc import Callable
from pathlib import Path

import pytest

from tests.dists import make_sdist, make_wheel
from tests.e2e.clients import RawResponse, raw_request
from tests.e2e.conftest import FakeFactory, ServerFactory

RUN = uuid.uuid4().hex[:6]


def flip_in_a_member(wheel: bytes) -> bytes:
    """One byte flipped in the middle of the largest member's data: the directory still
    parses, so only decompressing the member shows it."""
    archive = zipfile.ZipFile(io.BytesIO(wheel))
    info = max(archive.infolist(), key=lambda i: i.compress_size)
    name_length, extra_length = struct.unpack_from("<HH", wheel, info.header_offset + 26)
    at = info.header_offset + 30 + name_length + extra_length + info.compress_size // 2
    return wheel[:at] + bytes([wheel[at] ^ 0x01]) + wheel[at + 1 :]


def get(url: str) -> RawResponse | None:
    """The answer, or None for one aborted part-way (a chunked body cut off)."""
    try:
        return raw_request("GET", url)
    except http.client.IncompleteRead:
        return None


def cut_short(sdist: bytes) -> bytes:
    return sdist[:-100]  # served with a Content-Length of what is sent: no framing error


@pytest.mark.parametrize(
    ("kind", "damage"), [("wheel", flip_in_a_member), ("sdist", cut_short)]
)
def test_a_damaged_unhashed_file_is_refused_and_not_cached(
    fake_factory: FakeFactory, pyproxy_factory: ServerFactory, tmp_path: Path,
    kind: str, damage: Callable[[bytes], bytes],
) -> None:
    fake = fake_factory("html")
    project = f"uh-{kind}-{RUN}"
    make = make_wheel if kind == "wheel" else make_sdist
    path = make(tmp_path / "dists", project, "1.0")
    good = path.read_bytes()
    fake.add_file(project, path.name, damage(good), listed_hash=False)
    server = pyproxy_factory.start(user=None, extra_args=["--upstream", fake.index_url])
    url = f"{server.url}/files/{project}/{path.name}"
    upstream_path = fake.file_path(project, path.name)

    for attempt in (1, 2):  # downloaded again each time: nothing of it was kept
        answer = get(url)
        assert answer is None or answer.status >= 500, answer  # never the damaged body, whole
        assert fake.count(upstream_path) == attempt
    refusals = [line for line in server.stderr_text().splitlines()
                if "WARNING pyproxy.blobcache: " in line and "nothing cached" in line
                and "is not a well-formed file of its kind: " in line]
    assert len(refusals) == 2, refusals

    fake.add_file(project, path.name, good, listed_hash=False)  # upstream recovers
    fixed = get(url)
    assert fixed is not None and (fixed.status, fixed.content) == (200, good), fixed
    again = get(url)
    assert again is not None and (again.status, again.content) == (200, good), again
    assert again.headers["x-pyproxy-cache"] == "hit"
    assert fake.count(upstream_path) == 3
