"""pyproxy.formats.negotiate: Accept and ?format= -> representation (SIMPLE-API.md 0.1, B 7-13, 18, 19)."""

from __future__ import annotations

import pytest

from pyproxy.formats.negotiate import DEFAULT, Format, negotiate

V1_JSON = "application/vnd.pypi.simple.v1+json"
V1_HTML = "application/vnd.pypi.simple.v1+html"
LATEST_JSON = "application/vnd.pypi.simple.latest+json"
LATEST_HTML = "application/vnd.pypi.simple.latest+html"

# The Accept strings real clients send for project pages (SIMPLE-API.md section 0.1).
PIP = f"{V1_JSON}, {V1_HTML}; q=0.1, text/html; q=0.01"
UV = f"{V1_JSON}, {V1_HTML};q=0.2, text/html;q=0.01"
POETRY = f"{V1_JSON}, */*;q=0.1"
PDM = PIP  # unearth copies pip's header
MICROPIP = f"{V1_JSON}, */*;q=0.01"
RENOVATE = PIP
DEPENDABOT = "text/html"
PYPI_SIMPLE_ANY = f"{V1_JSON}, {V1_HTML}, text/html;q=0.01"
PYPI_SIMPLE_JSON_ONLY = V1_JSON
PYPI_SIMPLE_HTML_ONLY = f"{V1_HTML}, text/html;q=0.01"
PYPI_SIMPLE_JSON_PREFERRED = f"{V1_JSON}, {V1_HTML};q=0.5, text/html;q=0.01"
PYPI_SIMPLE_HTML_PREFERRED = f"{V1_HTML}, text/html;q=0.5, {V1_JSON};q=0.1"


@pytest.mark.parametrize(
    ("client", "accept", "expected"),
    [
        ("pip", PIP, Format.JSON),
        ("uv", UV, Format.JSON),
        ("poetry", POETRY, Format.JSON),
        ("pdm", PDM, Format.JSON),
        ("micropip", MICROPIP, Format.JSON),
        ("renovate", RENOVATE, Format.JSON),
        ("renovate retry after 406", None, Format.HTML),
        ("dependabot", DEPENDABOT, Format.HTML),
        ("pypi-simple ACCEPT_ANY", PYPI_SIMPLE_ANY, Format.JSON),
        ("pypi-simple ACCEPT_JSON_ONLY", PYPI_SIMPLE_JSON_ONLY, Format.JSON),
        ("pypi-simple ACCEPT_HTML_ONLY", PYPI_SIMPLE_HTML_ONLY, Format.HTML_V1),
        ("pypi-simple ACCEPT_JSON_PREFERRED", PYPI_SIMPLE_JSON_PREFERRED, Format.JSON),
        ("pypi-simple ACCEPT_HTML_PREFERRED", PYPI_SIMPLE_HTML_PREFERRED, Format.HTML_V1),
    ],
)
def test_real_clients(client: str, accept: str | None, expected: Format) -> None:
    assert negotiate(accept) is expected, client


# B.7: each type on its own gives exactly that type back
@pytest.mark.parametrize(
    ("accept", "expected", "content_type"),
    [
        (V1_JSON, Format.JSON, "application/vnd.pypi.simple.v1+json"),
        (V1_HTML, Format.HTML_V1, "application/vnd.pypi.simple.v1+html"),
        ("text/html", Format.HTML, "text/html; charset=utf-8"),
    ],
)
def test_each_type_alone(accept: str, expected: Format, content_type: str) -> None:
    chosen = negotiate(accept)
    assert chosen is expected
    assert chosen.content_type == content_type


@pytest.mark.parametrize("fmt", list(Format))
def test_content_types_are_exact(fmt: Format) -> None:
    # B.15/B.16: JSON and v1+html without parameters; text/html with exactly one charset
    assert "latest" not in fmt.content_type
    if fmt is Format.HTML:
        assert fmt.content_type == "text/html; charset=utf-8"
    else:
        assert ";" not in fmt.content_type
    assert fmt.is_json is (fmt is Format.JSON)


# B.8: no Accept is */*; answer text/html as the public index does
@pytest.mark.parametrize("accept", [None, "", "   ", ",", " , , "])
def test_no_accept_is_html(accept: str | None) -> None:
    assert negotiate(accept) is Format.HTML
    assert DEFAULT is Format.HTML


# B.9: q-values decide; order means nothing; q=0 excludes
@pytest.mark.parametrize(
    ("accept", "expected"),
    [
        (f"text/html, {V1_JSON};q=0.5", Format.HTML),
        (f"{V1_JSON};q=0.5, text/html", Format.HTML),
        (f"text/html;q=0.5, {V1_JSON}", Format.JSON),
        (f"{V1_JSON};q=0, text/html", Format.HTML),
        (f"text/html, {V1_JSON};q=0", Format.HTML),
        (f"{V1_JSON};q=0.0, {V1_HTML};q=0.001", Format.HTML_V1),
        (f"{V1_HTML};q=0.9, {V1_JSON};q=0.8", Format.HTML_V1),
        (f"{V1_JSON};q=0.3, {V1_HTML};q=0.2, text/html;q=0.1", Format.JSON),
        (f"text/html;q=1, {V1_HTML};q=0.999", Format.HTML),
        # q without spaces, with spaces, upper-case parameter name, extra parameters
        (f"{V1_JSON} ; q = 0.2 , text/html ; q = 0.3", Format.HTML),
        (f"{V1_JSON};Q=0, text/html", Format.HTML),
        (f"{V1_JSON}; charset=utf-8", Format.JSON),
        ("text/html;level=1;q=0.5", Format.HTML),
        # media types are case-insensitive
        ("Application/Vnd.PyPI.Simple.V1+JSON", Format.JSON),
        ("TEXT/HTML", Format.HTML),
    ],
)
def test_q_values(accept: str, expected: Format) -> None:
    assert negotiate(accept) is expected


# B.10: on a tie the most expressive format wins (JSON, then v1+html, then text/html)
@pytest.mark.parametrize(
    ("accept", "expected"),
    [
        (f"{V1_JSON}, {V1_HTML}", Format.JSON),
        (f"{V1_HTML}, {V1_JSON}", Format.JSON),
        (f"text/html, {V1_JSON}", Format.JSON),
        (f"{V1_JSON};q=0.5, text/html;q=0.5", Format.JSON),
        (f"text/html, {V1_HTML}", Format.HTML_V1),
        # q above 1 is clamped to 1: still a tie
        (f"text/html;q=5, {V1_JSON}", Format.JSON),
    ],
)
def test_ties_prefer_json(accept: str, expected: Format) -> None:
    assert negotiate(accept) is expected


# B.11: wildcards
@pytest.mark.parametrize(
    ("accept", "expected"),
    [
        ("application/*", Format.JSON),
        ("*/*", Format.HTML),
        ("*/*;q=0.1", Format.HTML),
        ("text/*", Format.HTML),
        (MICROPIP, Format.JSON),
        ("application/*;q=0.5, text/html", Format.HTML),
        # a specific range beats a wildcard for the same type (RFC 9110 12.5.1)
        (f"{V1_JSON};q=0, application/*", Format.HTML_V1),
        ("application/*;q=0.2, text/*;q=0.1", Format.JSON),
    ],
)
def test_wildcards(accept: str, expected: Format) -> None:
    assert negotiate(accept) is expected


def test_wildcard_with_json_excluded_never_gives_json() -> None:
    chosen = negotiate(f"*/*, {V1_JSON};q=0")
    assert chosen in (Format.HTML_V1, Format.HTML)


# B.12: "latest" answers with the concrete v1 type
@pytest.mark.parametrize(
    ("accept", "expected"),
    [
        (LATEST_JSON, Format.JSON),
        (LATEST_HTML, Format.HTML_V1),
        (f"{LATEST_HTML}, {LATEST_JSON};q=0.5", Format.HTML_V1),
    ],
)
def test_latest_is_v1(accept: str, expected: Format) -> None:
    chosen = negotiate(accept)
    assert chosen is expected
    assert "latest" not in chosen.content_type
    assert ".v1+" in chosen.content_type


# B.13 and B.19: nothing acceptable -> None (the web layer answers 406), never 300
@pytest.mark.parametrize(
    "accept",
    [
        "application/json",  # not an alias (PEP 691 FAQ)
        "application/xml",
        "image/png, application/json;q=0.5",
        "application/vnd.pypi.simple.v2+json",
        "application/vnd.pypi.simple.v1+xml",
        f"{V1_JSON};q=0, {V1_HTML};q=0, text/html;q=0",
        "*/*;q=0",
        "text/*;q=0, application/*;q=0",
    ],
)
def test_nothing_acceptable(accept: str) -> None:
    assert negotiate(accept) is None


# a garbled q makes that range unusable, not preferred
@pytest.mark.parametrize(
    ("accept", "expected"),
    [
        (f"{V1_JSON};q=abc, text/html;q=0.1", Format.HTML),
        (f"{V1_JSON};q=, text/html;q=0.1", Format.HTML),
        (f"{V1_JSON};q=1.0.0, {V1_HTML};q=0.5", Format.HTML_V1),
        (f"{V1_JSON};q=abc", None),
        (f"{V1_JSON};q=-1, text/html;q=0.1", Format.HTML),
        # float() accepts these, RFC 9110's qvalue grammar does not: garbage, so unusable
        (f"{V1_JSON};q=nan, text/html;q=0.1", Format.HTML),
        (f"text/html;q=0.1, {V1_JSON};q=nan", Format.HTML),
        (f"{V1_JSON};q=inf, text/html;q=0.5", Format.HTML),
        (f"{V1_JSON};q=1_0, text/html;q=0.5", Format.HTML),
    ],
)
def test_garbage_q(accept: str, expected: Format | None) -> None:
    assert negotiate(accept) is expected


# B.18: ?format= overrides Accept when supported; otherwise Accept decides
@pytest.mark.parametrize(
    ("format_param", "accept", "expected"),
    [
        (V1_JSON, "text/html", Format.JSON),
        (V1_JSON, None, Format.JSON),
        (V1_JSON, "application/xml", Format.JSON),
        (V1_HTML, PIP, Format.HTML_V1),
        ("text/html", PIP, Format.HTML),
        (LATEST_JSON, "text/html", Format.JSON),
        (LATEST_HTML, PIP, Format.HTML_V1),
        (" Application/Vnd.PyPI.Simple.V1+JSON ", "text/html", Format.JSON),
        # unsupported values fall back to Accept
        ("bogus", "text/html", Format.HTML),
        ("bogus", PIP, Format.JSON),
        ("bogus", None, Format.HTML),
        ("bogus", "application/xml", None),
        ("application/json", "text/html", Format.HTML),
        ("*/*", UV, Format.JSON),
        (f"{V1_JSON};q=0.5", "text/html", Format.HTML),  # one exact type, no parameters
        ("", "text/html", Format.HTML),
        (None, PIP, Format.JSON),
    ],
)
def test_format_parameter(format_param: str | None, accept: str | None, expected: Format | None) -> None:
    assert negotiate(accept, format_param) is expected
