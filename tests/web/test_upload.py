"""The legacy upload endpoint over real HTTP: the contract twine and uv publish rely on
(UPLOAD.md A1-A45, SIMPLE-API.md H 69 and L 86-94). The validation messages themselves are
tested in tests/test_upload.py; here: status codes, reason phrases, auth, idempotency, storage.
"""

from __future__ import annotations

import asyncio
import base64
import hashlib
import json
import random
from pathlib import Path
from typing import Any

import pytest
from aiohttp import encode_basic_auth
from aiohttp.test_utils import TestClient
from packaging.utils import canonicalize_name
from prometheus_client.parser import text_string_to_metric_families

from pyproxy.publish.rejections import MAX_FORM_BYTES
from pyproxy.web.context import Services
from tests.conftest import PASSWORD, USER, MakeClient, StartFake, upload
from tests.dists import form_fields_for, make_sdist, make_wheel
from tests.fake_upstream import FakeUpstream

JSON = "application/vnd.pypi.simple.v1+json"
MIB = 1024 * 1024


# ------------------------------------------------------------------------------- helpers


@pytest.fixture
def dists(tmp_path: Path) -> Path:
    return tmp_path / "dists"


def wheel(directory: Path, name: str = "demo", version: str = "1.0", **kwargs) -> Path:
    return make_wheel(directory, name, version, **kwargs)


def big_wheel(directory: Path, name: str, size: int) -> Path:
    """A wheel of roughly `size` bytes: base64-like random text compresses to about 3/4."""
    text = base64.b64encode(random.Random(size).randbytes(size + 1024)).decode()
    path = make_wheel(directory, name, "1.0", modules={f"{name}/blob.py": f"DATA = {text!r}\n"})
    assert path.stat().st_size > size
    return path


async def project_json(client: TestClient, name: str) -> dict | None:
    response = await client.get(f"/simple/{name}/", headers={"Accept": JSON})
    if response.status == 404:
        return None
    assert response.status == 200
    return json.loads(await response.read())


async def filenames(client: TestClient, name: str) -> list[str]:
    document = await project_json(client, name)
    return [] if document is None else [entry["filename"] for entry in document["files"]]


def stored_files(services: Services) -> list[Path]:
    return sorted(p for p in services.private.files.blobs.rglob("*") if p.is_file())


def leftovers(services: Services) -> list[Path]:
    return sorted(p for p in services.private.files.tmp.rglob("*") if p.is_file())


async def assert_rejected(response, status: int, starts_with: str) -> str:
    """The message is the reason phrase (one line, what twine prints) and the body."""
    body = await response.text()
    assert response.status == status, (response.status, response.reason, body)
    assert response.reason is not None and response.reason.startswith(starts_with), response.reason
    assert body.startswith(starts_with), body
    assert "\n" not in response.reason and "\r" not in response.reason
    assert body.strip() == response.reason  # A43: the same text in both
    return response.reason


# ------------------------------------------------------------------- success and routing


async def test_upload_wheel_and_sdist_then_listed_at_once(client: TestClient, services: Services, dists: Path) -> None:
    """A44, A45, 93: 200; the files are on the simple page at once with sha256, size,
    upload-time, requires-python and (wheel only) core-metadata."""
    w = wheel(dists, "Demo_Pkg", "1.0", requires_python=">=3.9", filename="demo_pkg-1.0-py3-none-any.whl")
    s = make_sdist(dists, "Demo_Pkg", "1.0", requires_python=">=3.9")
    assert await project_json(client, "demo-pkg") is None
    for path in (w, s):
        response = await upload(client, path)
        assert response.status == 200, await response.text()
    document = await project_json(client, "demo-pkg")
    assert document is not None
    by_name = {entry["filename"]: entry for entry in document["files"]}
    assert set(by_name) == {w.name, s.name}
    for path in (w, s):
        entry = by_name[path.name]
        data = path.read_bytes()
        assert entry["hashes"]["sha256"] == hashlib.sha256(data).hexdigest()
        assert entry["size"] == len(data)
        assert entry["upload-time"].endswith("Z")
        assert entry["requires-python"] == ">=3.9"
    assert "core-metadata" in by_name[w.name]
    assert "core-metadata" not in by_name[s.name]
    html = await (await client.get("/simple/demo-pkg/", headers={"Accept": "text/html"})).text()
    assert f">{w.name}</a>" in html and f">{s.name}</a>" in html
    root = json.loads(await (await client.get("/simple/", headers={"Accept": JSON})).read())
    assert "demo-pkg" in {canonicalize_name(p["name"]) for p in root["projects"]}
    assert leftovers(services) == []


@pytest.mark.parametrize("url", ["/legacy/", "/legacy", "/"])
async def test_a3_every_upload_url_accepts_without_redirect(client: TestClient, dists: Path, url: str) -> None:
    """A3, 91: twine raises RedirectDetected on any 3xx."""
    response = await upload(client, wheel(dists), url=url)
    assert response.status == 200, (response.status, await response.text())
    assert await filenames(client, "demo") == ["demo-1.0-py3-none-any.whl"]


async def test_a1_action_in_query_string(client: TestClient, dists: Path) -> None:
    response = await upload(client, wheel(dists), url="/legacy/?:action=file_upload", **{":action": None})
    assert response.status == 200, await response.text()


async def test_a2_protocol_version_defaults_to_1(client: TestClient, dists: Path) -> None:
    response = await upload(client, wheel(dists), protocol_version=None)
    assert response.status == 200, await response.text()


# ------------------------------------------------------------------------------------ auth


async def test_a9_h69_no_credentials_401_with_basic_challenge(
    client: TestClient, services: Services, dists: Path
) -> None:
    response = await upload(client, wheel(dists), user=None)
    assert response.status == 401
    challenge = response.headers.get("WWW-Authenticate", "")
    assert challenge.lower().startswith("basic realm=")
    assert await filenames(client, "demo") == []
    assert stored_files(services) == [] and leftovers(services) == []


@pytest.mark.parametrize(
    ("user", "password"),
    [(USER, "wrong-password"), ("mallory", PASSWORD), ("__token__", "pyproxy-nonsense")],
)
async def test_a10_bad_credentials_403(
    client: TestClient, services: Services, dists: Path, user: str, password: str
) -> None:
    response = await upload(client, wheel(dists), user=user, password=password)
    await assert_rejected(response, 403, "")
    assert await filenames(client, "demo") == []
    assert stored_files(services) == [] and leftovers(services) == []


@pytest.mark.parametrize("decorate", [lambda t: t, lambda t: t + "\n", lambda t: f"  {t}  "])
async def test_a10_token_auth(client: TestClient, services: Services, dists: Path, decorate) -> None:
    """twine sends __token__:<token>; surrounding whitespace is stripped (pasted tokens)."""
    token = services.users.create_token(USER)
    response = await upload(client, wheel(dists), user="__token__", password=decorate(token))
    assert response.status == 200, await response.text()
    services.users.revoke_token(token)
    again = await upload(client, wheel(dists, version="2.0"), user="__token__", password=token)
    assert again.status == 403


async def test_a11_other_users_project_403_until_granted(client: TestClient, services: Services, dists: Path) -> None:
    services.users.add_user("bob", "bobpassword")
    assert (
        await upload(client, wheel(dists, "Shared.Thing", filename="shared_thing-1.0-py3-none-any.whl"))
    ).status == 200
    blobs_before = stored_files(services)
    # bob, under another spelling of the same name, is refused and the message names the project
    attempt = wheel(dists / "bob", "SHARED_thing", "1.1", filename="shared_thing-1.1-py3-none-any.whl")
    response = await upload(client, attempt, user="bob", password="bobpassword")
    reason = await assert_rejected(response, 403, "The user 'bob' isn't allowed to upload to project")
    assert "shared-thing" in reason
    assert await filenames(client, "shared-thing") == ["shared_thing-1.0-py3-none-any.whl"]
    assert stored_files(services) == blobs_before and leftovers(services) == []
    services.private.grant(canonicalize_name("shared-thing"), "bob")
    response = await upload(client, attempt, user="bob", password="bobpassword")
    assert response.status == 200, await response.text()
    assert len(await filenames(client, "shared-thing")) == 2


# --------------------------------------------------------------------- duplicates (A37-A41)


async def test_a37_identical_reupload_is_200_and_changes_nothing(
    client: TestClient, services: Services, dists: Path
) -> None:
    path = wheel(dists)
    assert (await upload(client, path)).status == 200
    document = await project_json(client, "demo")
    blobs = stored_files(services)
    response = await upload(client, path)
    assert response.status == 200, await response.text()
    assert await project_json(client, "demo") == document  # same upload-time: nothing changed
    assert stored_files(services) == blobs
    assert leftovers(services) == []


async def test_a37_concurrent_identical_uploads(client: TestClient, services: Services, dists: Path) -> None:
    """twine retries a whole upload on a 5xx: two identical uploads racing both get 200."""
    path = wheel(dists)
    responses = await asyncio.gather(*(upload(client, path) for _ in range(3)))
    assert [r.status for r in responses] == [200, 200, 200]
    assert await filenames(client, "demo") == [path.name]
    assert leftovers(services) == []


async def test_a38_same_filename_other_bytes_400_file_already_exists(
    client: TestClient, services: Services, dists: Path
) -> None:
    first = wheel(dists / "a")
    second = wheel(dists / "b", summary="different bytes, same name")
    assert first.name == second.name and first.read_bytes() != second.read_bytes()
    assert (await upload(client, first)).status == 200
    blobs = stored_files(services)
    response = await upload(client, second)
    reason = await assert_rejected(response, 400, "File already exists")
    assert "already exist" in reason.lower()  # what twine --skip-existing looks for
    assert stored_files(services) == blobs and leftovers(services) == []
    served = await client.get(f"/files/demo/{first.name}")
    assert await served.read() == first.read_bytes()


async def test_a39_same_bytes_other_filename_400(client: TestClient, dists: Path) -> None:
    first = wheel(dists)
    assert (await upload(client, first)).status == 200
    other_name = "demo-1.0-py2.py3-none-any.whl"
    response = await upload(client, first, filename=other_name, pyversion="py2.py3")
    await assert_rejected(response, 400, "File already exists")
    assert await filenames(client, "demo") == [first.name]


async def test_a40_second_sdist_for_a_release_400(client: TestClient, dists: Path) -> None:
    """A second sdist of a release, under the first one's filename or not: either message tells
    twine it exists."""
    first = make_sdist(dists / "a", "demo", "1.0")
    second = make_sdist(dists / "b", "demo", "1.0", summary="another sdist")
    assert (await upload(client, first)).status == 200
    response = await upload(client, second)
    assert response.status == 400
    assert response.reason is not None
    assert response.reason.startswith(("File already exists", "Only one sdist may be uploaded per release."))
    assert await filenames(client, "demo") == [first.name]


async def test_a41_yank_and_remove_then_reupload(client: TestClient, services: Services, dists: Path) -> None:
    """Yanks and removals through the store show on the page at once; a removed filename can
    never be uploaded again, whatever its bytes."""
    one = wheel(dists, version="1.0")
    two = wheel(dists, version="2.0")
    for path in (one, two):
        assert (await upload(client, path)).status == 200
    services.private.yank(canonicalize_name("demo"), "1.0", "broken")
    by_name = {e["filename"]: e for e in (await project_json(client, "demo"))["files"]}  # type: ignore[index]
    assert by_name[one.name]["yanked"] == "broken"
    assert "yanked" not in by_name[two.name]

    services.private.remove(canonicalize_name("demo"), "1.0", forget_name=False)
    document = await project_json(client, "demo")
    assert document is not None
    assert [e["filename"] for e in document["files"]] == [two.name]
    assert "1.0" not in document["versions"]
    assert (await client.get(f"/files/demo/{one.name}")).status == 404

    response = await upload(client, one)
    await assert_rejected(response, 400, "This filename was previously used")
    rebuilt = wheel(dists / "rebuilt", version="1.0", summary="rebuilt")
    response = await upload(client, rebuilt)
    await assert_rejected(response, 400, "This filename was previously used")
    assert leftovers(services) == []


# ------------------------------------------------------------------- legacy sdist names (A29)


async def test_legacy_sdist_name_is_stored_and_served_as_uploaded(
    client: TestClient, services: Services, dists: Path
) -> None:
    """setuptools before 69.3 writes `my-pkg-1.0.tar.gz`: kept as uploaded, on every page."""
    legacy = make_sdist(dists, "my-pkg", "1.0", filename="my-pkg-1.0.tar.gz")
    response = await upload(client, legacy)
    assert response.status == 200, (response.status, response.reason, await response.text())
    document = await project_json(client, "my-pkg")
    assert document is not None
    assert [e["filename"] for e in document["files"]] == ["my-pkg-1.0.tar.gz"]
    assert document["versions"] == ["1.0"]
    served = await client.get(f"/files/my-pkg/{legacy.name}")
    assert served.status == 200 and await served.read() == legacy.read_bytes()
    legacy_json = json.loads(await (await client.get("/pypi/my-pkg/json")).read())
    assert [f["filename"] for f in legacy_json["releases"]["1.0"]] == [legacy.name]
    assert (await upload(client, legacy)).status == 200  # identical re-upload
    assert leftovers(services) == []


async def test_legacy_and_pep_625_spellings_are_one_release(
    client: TestClient, services: Services, dists: Path
) -> None:
    """A release has one sdist whichever way its name is spelled, also after it was removed."""
    legacy = make_sdist(dists / "a", "my-pkg", "1.0", filename="my-pkg-1.0.tar.gz")
    other = make_sdist(dists / "b", "my-pkg", "1.0", summary="rebuilt")
    assert other.name == "my_pkg-1.0.tar.gz"
    assert (await upload(client, legacy)).status == 200
    await assert_rejected(await upload(client, other), 400, "Only one sdist may be uploaded per release.")
    response = await upload(client, legacy, filename="My.Pkg-1.0.tar.gz")  # same bytes
    await assert_rejected(response, 400, "File already exists ('my-pkg-1.0.tar.gz'")

    services.private.remove(canonicalize_name("my-pkg"), "1.0", forget_name=False)
    expected = (
        "The sdist of this release was previously uploaded as 'my-pkg-1.0.tar.gz' and has since"
        " been deleted. Use a different version."
    )
    assert await assert_rejected(await upload(client, other), 400, expected) == expected
    await assert_rejected(await upload(client, legacy), 400, "This filename was previously used")
    assert await filenames(client, "my-pkg") == []
    assert leftovers(services) == []


# ----------------------------------------------------------------------- form and protocol


async def test_a2_unknown_protocol_version(client: TestClient, services: Services, dists: Path) -> None:
    response = await upload(client, wheel(dists), protocol_version="2")
    assert await assert_rejected(response, 400, "Unknown protocol version.") == "Unknown protocol version."
    assert stored_files(services) == [] and leftovers(services) == []


@pytest.mark.parametrize("field", ["summary", "version", "sha256_digest"])
async def test_a6_text_field_as_file_part(client: TestClient, services: Services, dists: Path, field: str) -> None:
    response = await upload(client, wheel(dists), file_parts={field: ("x.txt", b"1.0")})
    expected = f"{field}: Should not be a tuple."
    assert await assert_rejected(response, 400, expected) == expected
    assert stored_files(services) == [] and leftovers(services) == []


async def test_a22_missing_file(client: TestClient, services: Services, dists: Path) -> None:
    response = await upload(client, wheel(dists), content=False)
    expected = "Upload payload does not have a file."
    assert await assert_rejected(response, 400, expected) == expected
    assert await filenames(client, "demo") == []


async def test_not_multipart_400(client: TestClient, dists: Path) -> None:
    from aiohttp import encode_basic_auth

    response = await client.post(
        "/legacy/", data={":action": "file_upload"}, headers={"Authorization": encode_basic_auth(USER, PASSWORD)}
    )
    assert response.status == 400


@pytest.mark.parametrize("body", [
    b"--x\r\nno colon in this header line\r\n\r\nvalue\r\n--x--\r\n",
    b"--x\r\n--x--\r\n",
])
async def test_malformed_multipart_part_is_a_400_not_a_traceback(
    client: TestClient, services: Services, body: bytes, caplog: pytest.LogCaptureFixture
) -> None:
    from aiohttp import encode_basic_auth

    response = await client.post(
        "/legacy/", data=body,
        headers={"Authorization": encode_basic_auth(USER, PASSWORD),
                 "Content-Type": "multipart/form-data; boundary=x"},
    )
    assert response.status == 400, await response.text()
    assert "Traceback" not in caplog.text
    assert leftovers(services) == []


# ------------------------------------------------------------------------------ sizes (A8)


async def test_a8_body_over_one_mib_is_accepted(client: TestClient, dists: Path) -> None:
    """aiohttp's default client_max_size (1 MiB) must not apply to uploads."""
    path = big_wheel(dists, "bigpkg", 3 * MIB // 2)
    response = await upload(client, path)
    assert response.status == 200, (response.status, await response.text())
    served = await client.get(f"/files/bigpkg/{path.name}")
    assert await served.read() == path.read_bytes()


async def test_a8_over_the_configured_limit(make_client, dists: Path) -> None:
    client, services = await make_client(max_upload_size=MIB)
    path = big_wheel(dists, "bigpkg", 3 * MIB // 2)
    response = await upload(client, path)
    reason = await assert_rejected(response, 400, "File too large.")
    assert "1 MB" in reason or "1 MiB" in reason or str(MIB) in reason
    assert await filenames(client, "bigpkg") == []
    assert stored_files(services) == [] and leftovers(services) == []
    # and the server is still fine afterwards
    small = wheel(dists)
    assert (await upload(client, small)).status == 200


async def test_a8_small_limit_message_states_the_real_limit(make_client, dists: Path) -> None:
    """A limit below 1 MiB must not be shown as "0 MB" (the uploader learns nothing)."""
    client, _services = await make_client(max_upload_size=500)
    response = await upload(client, wheel(dists))
    reason = await assert_rejected(response, 400, "File too large.")
    assert " 0 MB" not in reason, reason


async def test_wheel_with_a_second_dist_info_is_refused(
    client: TestClient, services: Services, dists: Path
) -> None:
    """A wheel smuggling another project's metadata: pip would refuse it, so pyproxy does."""
    path = wheel(dists, extra_members={
        "requests-99.0.dist-info/METADATA": b"Metadata-Version: 2.1\nName: requests\nVersion: 99.0\n",
        "requests-99.0.dist-info/WHEEL": b"Wheel-Version: 1.0\n",
    })
    expected = (
        f"Wheel '{path.name}' has more than one .dist-info directory ('demo-1.0.dist-info',"
        " 'requests-99.0.dist-info'); installers take only wheels with exactly one."
    )
    assert await assert_rejected(await upload(client, path), 400, expected) == expected
    assert stored_files(services) == [] and leftovers(services) == []
    assert await project_json(client, "demo") is None


# ------------------------------------------------------------- the form's own limits


async def rejections(client: TestClient) -> dict[str, float]:
    """pyproxy_uploads_rejected_total by reason, as /metrics shows it."""
    text = await (await client.get("/metrics")).text()
    return {
        sample.labels["reason"]: sample.value
        for family in text_string_to_metric_families(text)
        for sample in family.samples
        if sample.name == "pyproxy_uploads_rejected_total"
    }


def field_bytes(path: Path, **overrides: str) -> int:
    """What the form fields `upload(client, path, **overrides)` sends cost against the limit."""
    fields = {**form_fields_for(path), **{key: [value] for key, value in overrides.items()}}
    return sum(len(value.encode()) for values in fields.values() for value in values)


async def test_long_description_up_to_the_form_limit_is_accepted(
    client: TestClient, services: Services, dists: Path
) -> None:
    """aiohttp would stop a field at its client_max_size (1 MiB) with a bare 413."""
    path = wheel(dists)
    description = "d" * (MAX_FORM_BYTES - field_bytes(path, description=""))
    assert field_bytes(path, description=description) == MAX_FORM_BYTES
    response = await upload(client, path, description=description)
    assert response.status == 200, (response.status, response.reason)
    assert services.private.file_fields(path.name)["description"] == [description]  # type: ignore[index]


async def test_form_past_the_limit_gets_pyproxys_message_and_metric(
    client: TestClient, services: Services, dists: Path
) -> None:
    path = wheel(dists)
    description = "d" * (MAX_FORM_BYTES - field_bytes(path, description="") + 1)
    before = await rejections(client)
    response = await upload(client, path, description=description)
    expected = (
        "Metadata too large. The upload form's fields (the description included) may hold at"
        " most 16 MiB together."
    )
    assert await assert_rejected(response, 400, expected) == expected
    after = await rejections(client)
    assert after.get("too_large", 0) - before.get("too_large", 0) == 1
    assert stored_files(services) == [] and leftovers(services) == []
    assert (await upload(client, path)).status == 200


async def test_non_ascii_md5_digest_is_a_400(client: TestClient, services: Services, dists: Path) -> None:
    response = await upload(client, wheel(dists), md5_digest="\u00e9" * 32)
    expected = "Invalid value for md5_digest. Error: Use a valid, hex-encoded, MD5 message digest."
    assert await assert_rejected(response, 400, expected) == expected
    assert leftovers(services) == []


def _one_field_body(headers: str, value: bytes) -> bytes:
    return (
        b"--x\r\nContent-Disposition: form-data; name=\"summary\"\r\n" + headers.encode()
        + b"\r\n" + value + b"\r\n--x--\r\n"
    )


@pytest.mark.parametrize(
    ("body", "message"),
    [
        (
            _one_field_body("Content-Type: text/plain; charset=utf-8\r\n", b"caf\xe9"),
            "Malformed multipart body: the field 'summary' is not text in 'utf-8'.",
        ),
        (
            _one_field_body("Content-Type: text/plain; charset=no-such-charset\r\n", b"x"),
            "Malformed multipart body: the field 'summary' is not text in 'no-such-charset'.",
        ),
        (
            _one_field_body("Content-Transfer-Encoding: x-rot13\r\n", b"x"),
            "Malformed multipart body: unknown content transfer encoding: x-rot13",
        ),
    ],
)
async def test_undecodable_field_is_a_400_not_a_500(
    client: TestClient, services: Services, body: bytes, message: str
) -> None:
    response = await client.post(
        "/legacy/", data=body,
        headers={"Authorization": encode_basic_auth(USER, PASSWORD),
                 "Content-Type": "multipart/form-data; boundary=x"},
    )
    assert await assert_rejected(response, 400, message) == message
    assert leftovers(services) == []


# ------------------------------------------------ malformed uploads: a 400, never a 500


def raw_form(path: Path, filename: bytes | None = None, content: bytes | None = None,
             boundary: str = "x") -> bytes:
    """The body twine sends for `path`, written byte by byte (a part's filename as given);
    the digests are those of `content` (default: the file's bytes)."""
    data = path.read_bytes() if content is None else content
    fields = {
        **form_fields_for(path), ":action": ["file_upload"], "protocol_version": ["1"],
        "sha256_digest": [hashlib.sha256(data).hexdigest()],
        "md5_digest": [hashlib.md5(data).hexdigest()],
    }
    fields.pop("blake2_256_digest", None)
    body = b""
    for key, values in fields.items():
        for value in values:
            body += (f"--{boundary}\r\nContent-Disposition: form-data; name=\"{key}\"\r\n\r\n"
                     f"{value}\r\n").encode()
    body += (f"--{boundary}\r\nContent-Disposition: form-data; name=\"content\"; filename=\""
             .encode() + (filename or path.name.encode()) + b"\"\r\n"
             b"Content-Type: application/octet-stream\r\n\r\n" + data + b"\r\n")
    return body + f"--{boundary}--\r\n".encode()


async def post_raw(client: TestClient, body: bytes, **headers: str):
    return await client.post(
        "/legacy/", data=body,
        headers={"Authorization": encode_basic_auth(USER, PASSWORD),
                 "Content-Type": "multipart/form-data; boundary=x", **headers},
    )


def assert_handled(services: Services, caplog: pytest.LogCaptureFixture) -> None:
    """Nothing stored, no temp file left, and no traceback (aiohttp's nor pyproxy's) logged."""
    assert stored_files(services) == [] and leftovers(services) == []
    assert services.private.list_projects().names == ()
    assert "Traceback" not in caplog.text and "nhandled" not in caplog.text


async def test_filename_that_is_not_utf8_is_a_400(
    client: TestClient, services: Services, dists: Path, caplog: pytest.LogCaptureFixture
) -> None:
    """aiohttp keeps the byte as a lone surrogate, which no store can write."""
    body = raw_form(wheel(dists), filename=b"demo-1.0-py3-none-\xff.whl")
    expected = "Cannot upload a file whose name is not valid UTF-8."
    assert await assert_rejected(await post_raw(client, body), 400, expected) == expected
    assert_handled(services, caplog)


async def test_version_past_the_int_digit_limit_is_a_400(
    client: TestClient, services: Services, dists: Path, caplog: pytest.LogCaptureFixture
) -> None:
    """5000 digits: int() refuses more than 4300, and packaging lets its ValueError through."""
    response = await upload(client, wheel(dists), version="9" * 5000)
    reason = await assert_rejected(response, 400, f"'{'9' * 30}...{'9' * 30}' is invalid for 'version'")
    assert "more than 4300 digits" in reason
    assert_handled(services, caplog)


@pytest.mark.parametrize("keep", [60, 200])
async def test_truncated_sdist_is_a_400(
    client: TestClient, services: Services, dists: Path, caplog: pytest.LogCaptureFixture,
    keep: int,
) -> None:
    path = make_sdist(dists, "demo", "1.0", extra_members={"demo-1.0/data.bin": bytes(range(256)) * 40})
    body = raw_form(path, content=path.read_bytes()[:keep])
    expected = "Invalid distribution file. tar archive not accepted: The archive is truncated or corrupt."
    assert await assert_rejected(await post_raw(client, body), 400, expected) == expected
    assert_handled(services, caplog)


UNDECODABLE = (
    "Malformed request body: it could not be decoded as its Content-Encoding 'gzip' says."
    " Send the upload without Content-Encoding."
)


@pytest.mark.parametrize(
    ("corrupt", "expected"),
    [
        ("not-gzip-at-all", UNDECODABLE),
        ("corrupt-inside", UNDECODABLE),  # noticed once the file part is being received
        ("truncated", "Malformed multipart body: Reading after EOF"),  # decodes, then ends
    ],
)
async def test_body_whose_content_encoding_does_not_decode_is_a_400(
    client: TestClient, services: Services, dists: Path, caplog: pytest.LogCaptureFixture,
    corrupt: str, expected: str,
) -> None:
    """aiohttp decodes a Content-Encoding of the whole body as it is read: broken data is a
    RequestPayloadError, which must not become a 500 nor leave the temp file behind."""
    import gzip

    path = big_wheel(dists, "demo", 256 * 1024)
    compressed = gzip.compress(raw_form(path), mtime=0)
    middle = len(compressed) // 2
    body = {
        "not-gzip-at-all": b"garbage",
        "corrupt-inside": compressed[:middle] + bytes(2000) + compressed[middle + 2000 :],
        "truncated": compressed[:middle],
    }[corrupt]
    response = await post_raw(client, body, **{"Content-Encoding": "gzip"})
    assert await assert_rejected(response, 400, expected) == expected
    await asyncio.sleep(0.05)  # what aiohttp does after the response would be logged by now
    assert_handled(services, caplog)
    # a well-formed gzip body is decoded and accepted as before
    response = await post_raw(client, gzip.compress(raw_form(path)), **{"Content-Encoding": "gzip"})
    assert response.status == 200, await response.text()


# --------------------------------------------------------------- rejections leave nothing


REJECTIONS = {
    "bad-digest": dict(sha256_digest="0" * 64),
    "bad-archive": dict(content=b"this is not a zip file at all" * 10),
    "protocol": dict(protocol_version="2"),
    "bad-password": dict(password="nope-nope"),
    "no-credentials": dict(user=None),
    "wrong-filename": dict(filename="other-1.0-py3-none-any.whl"),
}


@pytest.mark.parametrize("kind", sorted(REJECTIONS))
async def test_rejected_upload_leaves_nothing(client: TestClient, services: Services, dists: Path, kind: str) -> None:
    response = await upload(client, wheel(dists), **REJECTIONS[kind])
    assert 400 <= response.status < 500, (response.status, await response.text())
    assert stored_files(services) == []
    assert leftovers(services) == []
    assert services.private.list_projects().names == ()
    assert await project_json(client, "demo") is None
    # a later good upload of the same file is not blocked by the failed one
    assert (await upload(client, wheel(dists))).status == 200


# ------------------------------------------------------------ names upstream has (issue 14)

ROOT_PASSWORD = "root-password"


async def _with_upstream(
    make_client: MakeClient, fake: FakeUpstream, **settings: Any
) -> tuple[TestClient, Services]:
    client, services = await make_client(upstream_url=fake.index_url, **settings)
    services.users.add_user("root", ROOT_PASSWORD, admin=True)
    return client, services


async def test_first_upload_of_a_name_upstream_has_is_403_until_reserved(
    make_client: MakeClient, fake: FakeUpstream, dists: Path
) -> None:
    fake.add_file("requests", "requests-2.0-py3-none-any.whl", b"upstream's requests")
    client, services = await _with_upstream(make_client, fake)
    response = await upload(client, wheel(dists, "requests", "1.0"))
    reason = await assert_rejected(
        response, 403, "The name 'requests' is a project on the upstream index"
    )
    assert reason.endswith("An admin can make it private with: pyproxy reserve requests")
    # only the project list was asked for: the name itself never went upstream
    assert fake.requests == [("GET", "/simple/")]
    assert stored_files(services) == [] and leftovers(services) == []
    assert await filenames(client, "requests") == ["requests-2.0-py3-none-any.whl"]

    services.private.reserve(canonicalize_name("requests"), "requests")  # pyproxy reserve
    response = await upload(client, wheel(dists, "requests", "1.0"))
    assert response.status == 200, await response.text()
    assert await filenames(client, "requests") == ["requests-1.0-py3-none-any.whl"]
    assert services.private.roles(canonicalize_name("requests")) == [(USER, "owner")]


async def test_admins_upload_a_name_upstream_has_directly(
    make_client: MakeClient, fake: FakeUpstream, dists: Path
) -> None:
    fake.add_file("requests", "requests-2.0-py3-none-any.whl", b"upstream's requests")
    client, _services = await _with_upstream(make_client, fake)
    path = wheel(dists, "requests", "1.0")
    response = await upload(client, path, user="root", password=ROOT_PASSWORD)
    assert response.status == 200, await response.text()
    assert await filenames(client, "requests") == ["requests-1.0-py3-none-any.whl"]
    assert fake.count("/simple/") == 0  # nothing to ask for an admin


async def test_new_names_are_checked_against_one_cached_project_list(
    make_client: MakeClient, fake_upstream: StartFake, dists: Path
) -> None:
    fake = await fake_upstream(formats="html")
    fake.add_file("requests", "requests-2.0-py3-none-any.whl", b"upstream's requests")
    client, _services = await _with_upstream(make_client, fake)
    for name in ("ours-one", "ours-two", "ours-three"):
        response = await upload(client, wheel(dists, name, "1.0"))
        assert response.status == 200, await response.text()
    assert fake.requests == [("GET", "/simple/")]


async def test_without_upstreams_list_a_new_name_is_503(
    make_client: MakeClient, fake: FakeUpstream, dists: Path
) -> None:
    client, services = await _with_upstream(make_client, fake)
    fake.fail_status = 500
    response = await upload(client, wheel(dists, "brand-new", "1.0"))
    reason = await assert_rejected(
        response, 503, "Cannot tell whether 'brand-new' is a project on the upstream index"
    )
    assert reason.endswith("pyproxy reserve brand-new")
    assert stored_files(services) == [] and leftovers(services) == []
    fake.fail_status = None
    response = await upload(client, wheel(dists, "brand-new", "1.0"))
    assert response.status == 200, await response.text()


async def test_a_reserved_prefix_needs_an_admin_and_never_reaches_upstream(
    make_client: MakeClient, fake: FakeUpstream, dists: Path
) -> None:
    client, services = await _with_upstream(make_client, fake, reserved_prefixes=("acme-",))
    response = await upload(client, wheel(dists, "Acme_Widgets", "1.0"))
    reason = await assert_rejected(
        response, 403, "The name 'acme-widgets' is under a reserved prefix"
    )
    assert reason.endswith("pyproxy reserve acme-widgets")
    path = wheel(dists, "Acme_Widgets", "1.0")
    response = await upload(client, path, user="root", password=ROOT_PASSWORD)
    assert response.status == 200, await response.text()
    # the admin who uploaded first owns it; others need a grant, as for any private project
    assert services.private.roles(canonicalize_name("acme-widgets")) == [("root", "owner")]
    response = await upload(client, wheel(dists, "Acme_Widgets", "1.1"))
    await assert_rejected(response, 403, "The user 'alice' isn't allowed to upload")
    services.private.grant(canonicalize_name("acme-widgets"), USER)
    response = await upload(client, wheel(dists, "Acme_Widgets", "1.1"))
    assert response.status == 200, await response.text()
    assert fake.requests == []
