"""The upload form's own limits through a real pyproxy: twine sends a long description as one
field, which aiohttp alone would cut at 1 MiB with a bare 413; a broken digest is a 400."""

from __future__ import annotations

import json
from pathlib import Path

from prometheus_client.parser import text_string_to_metric_families

from pyproxy.publish.rejections import MAX_FORM_BYTES
from tests.dists import core_metadata, form_fields_for, make_wheel
from tests.e2e.clients import describe, get, listed_filenames, output, raw_upload, twine_upload
from tests.e2e.conftest import PyproxyServer

MIB = 1024 * 1024


def long_description_wheel(directory: Path, name: str, length: int) -> Path:
    """A wheel whose METADATA carries a description of `length` bytes (twine sends it)."""
    metadata = core_metadata(name, "1.0") + b"\n" + b"d" * length
    return make_wheel(directory, name, "1.0", metadata=metadata)


def rejected_too_large(server: PyproxyServer) -> float:
    text = get(f"{server.url}/metrics").body
    return sum(
        sample.value
        for family in text_string_to_metric_families(text)
        for sample in family.samples
        if sample.name == "pyproxy_uploads_rejected_total"
        and sample.labels.get("reason") == "too_large"
    )


def test_twine_long_description_within_and_past_the_form_limit(
    pyproxy_server: PyproxyServer, tmp_path: Path
) -> None:
    server = pyproxy_server
    assert server.user is not None and server.password is not None
    # past aiohttp's 1 MiB and the 10 MiB core-metadata cap pyproxy had before
    within = long_description_wheel(tmp_path / "within", "long-desc", 12 * MIB)
    twine_upload(server.upload_url, [within], server.user, server.password)
    assert listed_filenames(server.simple_url, "long-desc") == [within.name]
    info = json.loads(get(f"{server.url}/pypi/long-desc/json").body)["info"]
    assert info["description"] == "d" * (12 * MIB)

    past = long_description_wheel(tmp_path / "past", "too-long", MAX_FORM_BYTES + 1)
    proc = twine_upload(server.upload_url, [past], server.user, server.password, check=False)
    message = (
        "Metadata too large. The upload form's fields (the description included) may hold at"
        " most 16 MiB together."
    )
    shown = " ".join(output(proc).split())  # twine wraps the body it prints
    assert proc.returncode != 0 and "HTTPError: 400" in shown, describe(proc)
    # not a bare "413" (the server's port may hold those digits)
    assert message in shown and "HTTPError: 413" not in shown, describe(proc)
    assert rejected_too_large(server) == 1
    assert listed_filenames(server.simple_url, "too-long") == []


def test_raw_upload_with_a_non_ascii_md5_digest_is_a_400(
    pyproxy_server: PyproxyServer, tmp_path: Path
) -> None:
    server = pyproxy_server
    wheel = make_wheel(tmp_path, "demo", "1.0")
    fields = {**form_fields_for(wheel), "md5_digest": ["\u00e9" * 32]}
    response = raw_upload(server.upload_url, wheel, server.user, server.password, fields=fields)
    message = "Invalid value for md5_digest. Error: Use a valid, hex-encoded, MD5 message digest."
    assert (response.status, response.reason, response.body) == (400, message, message + "\n")
    assert "Traceback" not in server.stderr_text()
