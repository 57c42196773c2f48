"""pyproxy.formats.render: hand-built ProjectPages as PEP 503 HTML and PEP 691 JSON, read back by pip."""

from __future__ import annotations

import io
import re
from datetime import UTC, datetime, timedelta, timezone
from html.parser import HTMLParser
from urllib.parse import quote, unquote, urlsplit

import orjson
import pytest
from packaging.specifiers import SpecifierSet
from pip._internal.index.collector import HTMLLinkParser, IndexContent, parse_links
from pip._internal.models.link import Link

from pyproxy.formats.negotiate import Format
from pyproxy.formats.render import (
    API_VERSION,
    format_upload_time,
    render_project,
    render_project_html,
    render_project_json,
    write_index,
)
from pyproxy.model import DistFile, ProjectList, ProjectPage, ProjectStatus, normalize

BASE = "http://127.0.0.1:8080"
PAGE_URL = f"{BASE}/simple/foo/"
SHA = "a" * 64
SHA_B = "b" * 64
MD5 = "c" * 32
META_SHA = "d" * 64
WHEEL = "foo-1.0-py3-none-any.whl"
SDIST = "foo-1.0.tar.gz"


def file_url(dist: DistFile) -> str:
    return f"{BASE}/files/foo/{quote(dist.filename)}"


def page(*files: DistFile, status: ProjectStatus | None = None, name: str = "foo") -> ProjectPage:
    return ProjectPage.build(normalize(name), tuple(files), status=status)


def dist(filename: str = WHEEL, **fields: object) -> DistFile:
    fields.setdefault("hashes", {"sha256": SHA})
    return DistFile(filename=filename, **fields)  # type: ignore[arg-type]


# ---- small parsers ----


class _Anchors(HTMLParser):
    def __init__(self) -> None:
        super().__init__(convert_charrefs=True)
        self.anchors: list[tuple[dict[str, str | None], str]] = []
        self.metas: dict[str, str | None] = {}
        self.doctype = ""
        self._open: dict[str, str | None] | None = None
        self._text = ""

    def handle_decl(self, decl: str) -> None:
        self.doctype = decl

    def handle_starttag(self, tag: str, attrs: list[tuple[str, str | None]]) -> None:
        if tag == "a":
            self._open, self._text = dict(attrs), ""
        elif tag == "meta":
            attributes = dict(attrs)
            self.metas[attributes["name"] or ""] = attributes.get("content")

    def handle_data(self, data: str) -> None:
        if self._open is not None:
            self._text += data

    def handle_endtag(self, tag: str) -> None:
        if tag == "a" and self._open is not None:
            self.anchors.append((self._open, self._text))
            self._open = None


def parse_html(body: bytes) -> _Anchors:
    parser = _Anchors()
    parser.feed(body.decode("utf-8"))
    parser.close()
    return parser


def pip_links(body: bytes, fmt: Format) -> list[Link]:
    # cache_link_parsing=False: pip memoises parsed pages by URL, and every page here has one URL
    content = IndexContent(body, fmt.content_type, "utf-8", PAGE_URL, cache_link_parsing=False)
    return list(parse_links(content))


def pip_link(dist_file: DistFile, fmt: Format) -> Link:
    (link,) = pip_links(render_project(page(dist_file), fmt, file_url), fmt)
    return link


def html_anchor(dist_file: DistFile) -> dict[str, str | None]:
    ((attributes, text),) = parse_html(render_project_html(page(dist_file), file_url)).anchors
    assert text == dist_file.filename
    return attributes


def json_file(dist_file: DistFile) -> dict[str, object]:
    (entry,) = orjson.loads(render_project_json(page(dist_file), file_url))["files"]
    return entry


HTML_FORMATS = [Format.HTML, Format.HTML_V1]
ALL_FORMATS = [Format.JSON, Format.HTML, Format.HTML_V1]


# ---- the page as a whole ----


def test_html_page_structure() -> None:
    body = render_project_html(page(dist(), dist(SDIST, hashes={"sha256": SHA_B})), file_url)
    parsed = parse_html(body)
    assert parsed.doctype.lower() == "doctype html"
    assert parsed.metas["pypi:repository-version"] == API_VERSION == "1.4"
    assert parsed.metas["pypi:project-status"] == "active"
    assert "pypi:project-status-reason" not in parsed.metas
    assert [text for _, text in parsed.anchors] == [WHEEL, SDIST]
    assert b"<base" not in body
    assert b'data-core-metadata="false"' not in body
    # meta tags are in <head>
    head, _, _ = body.partition(b"</head>")
    assert b"pypi:repository-version" in head and b"pypi:project-status" in head


def test_json_page_structure() -> None:
    document = orjson.loads(render_project_json(page(dist(), dist(SDIST, hashes={"sha256": SHA_B})), file_url))
    assert document["meta"] == {"api-version": "1.4"}
    assert document["name"] == "foo"
    assert document["versions"] == ["1.0"]
    assert [f["filename"] for f in document["files"]] == [WHEEL, SDIST]
    assert document["project-status"] == {"status": "active"}
    for entry in document["files"]:
        assert "dist-info-metadata" not in entry
        assert "data-dist-info-metadata" not in entry
        assert isinstance(entry["hashes"], dict)


def test_json_name_is_normalized_and_versions_unique() -> None:
    files = (
        DistFile("Foo_Bar-1.0-py3-none-any.whl", {"sha256": SHA}),
        DistFile("foo_bar-1.0.tar.gz", {"sha256": SHA_B}),
        DistFile("foo_bar-2.0.tar.gz", {"sha256": "e" * 64}),
    )
    built = ProjectPage.build(normalize("Foo_Bar"), files, extra_versions=("0.9",))
    document = orjson.loads(render_project_json(built, file_url))
    assert document["name"] == "foo-bar"
    assert document["versions"] == ["0.9", "1.0", "2.0"]
    assert len(set(document["versions"])) == len(document["versions"])


def test_empty_page() -> None:
    html = parse_html(render_project_html(page(), file_url))
    assert html.anchors == []
    document = orjson.loads(render_project_json(page(), file_url))
    assert document["files"] == [] and document["versions"] == []


@pytest.mark.parametrize("fmt", ALL_FORMATS)
def test_render_project_dispatches_on_format(fmt: Format) -> None:
    body = render_project(page(dist()), fmt, file_url)
    if fmt is Format.JSON:
        assert orjson.loads(body)["files"][0]["filename"] == WHEEL
    else:
        assert body.startswith(b"<!DOCTYPE html>")


@pytest.mark.parametrize("fmt", ALL_FORMATS)
def test_write_index_streams_relative_links(fmt: Format) -> None:
    """Ordered as given (by normalised name), each linked relative to the list's own URL, as
    upstream indexes link them: the same bytes serve every origin."""
    projects = ProjectList(("Foo_Bar", "baz", "a<b"))
    out = io.BytesIO()
    write_index(projects.entries(), fmt, out)
    body = out.getvalue()
    if fmt is Format.JSON:
        document = orjson.loads(body)
        assert document == {
            "meta": {"api-version": "1.4"},
            "projects": [{"name": "a<b"}, {"name": "baz"}, {"name": "Foo_Bar"}],
        }
    else:
        parsed = parse_html(body)
        assert parsed.metas["pypi:repository-version"] == "1.4"
        assert [(a["href"], text) for a, text in parsed.anchors] == [
            ("a%3Cb/", "a<b"), ("baz/", "baz"), ("foo-bar/", "Foo_Bar"),
        ]
        assert b"a<b" not in body  # escaped
        # pip resolves them against the list's URL
        links = [str(link.url) for link in parse_links(
            IndexContent(body, "text/html", None, f"{BASE}/simple/", cache_link_parsing=False))]
        assert links == [f"{BASE}/simple/a%3Cb/", f"{BASE}/simple/baz/", f"{BASE}/simple/foo-bar/"]


@pytest.mark.parametrize("fmt", [Format.JSON, Format.HTML])
def test_write_index_of_nothing_is_a_valid_list(fmt: Format) -> None:
    out = io.BytesIO()
    write_index(iter(()), fmt, out)
    if fmt is Format.JSON:
        assert orjson.loads(out.getvalue())["projects"] == []
    else:
        assert parse_html(out.getvalue()).anchors == []


# ---- requires-python ----


@pytest.mark.parametrize("spec", [">=3.8,<4", ">=3.8, !=3.9.*", "<4&>3", '"quoted"', ">=3.10'"])
def test_requires_python_escaping(spec: str) -> None:
    body = render_project_html(page(dist(requires_python=spec)), file_url)
    raw = re.search(rb'data-requires-python="([^"]*)"', body)
    assert raw is not None
    assert b"<" not in raw.group(1) and b">" not in raw.group(1) and b'"' not in raw.group(1)
    assert html_anchor(dist(requires_python=spec))["data-requires-python"] == spec
    assert json_file(dist(requires_python=spec))["requires-python"] == spec  # JSON: no escaping


def test_requires_python_exact_html() -> None:
    body = render_project_html(page(dist(requires_python=">=3.8,<4")), file_url)
    assert b'data-requires-python="&gt;=3.8,&lt;4"' in body


@pytest.mark.parametrize("fmt", ALL_FORMATS)
def test_pip_reads_requires_python(fmt: Format) -> None:
    link = pip_link(dist(requires_python=">=3.8,<4"), fmt)
    assert link.requires_python == ">=3.8,<4"
    assert SpecifierSet(link.requires_python) == SpecifierSet(">=3.8,<4")


@pytest.mark.parametrize("fmt", ALL_FORMATS)
def test_no_requires_python(fmt: Format) -> None:
    assert "data-requires-python" not in html_anchor(dist())
    assert "requires-python" not in json_file(dist()) or json_file(dist())["requires-python"] is None
    assert pip_link(dist(), fmt).requires_python is None


# ---- yanked ----


@pytest.mark.parametrize(
    ("yanked", "reason", "html_value", "json_value"),
    [
        (True, "", "", True),
        (True, "broken build", "broken build", "broken build"),
        (True, 'bad <script>"x"</script> & more', 'bad <script>"x"</script> & more',
         'bad <script>"x"</script> & more'),
    ],
)
def test_yanked(yanked: bool, reason: str, html_value: str, json_value: object) -> None:
    file = dist(yanked=yanked, yanked_reason=reason)
    body = render_project_html(page(file), file_url)
    assert re.search(rb'data-yanked="[^"<>]*"', body), body  # always quoted, never bare
    assert b"<script>" not in body
    assert html_anchor(file)["data-yanked"] == html_value
    assert json_file(file)["yanked"] == json_value
    if json_value is True:
        assert json_file(file)["yanked"] is True  # "" would read as not yanked to pip


def test_not_yanked() -> None:
    assert "data-yanked" not in html_anchor(dist())
    assert json_file(dist()).get("yanked", False) is False
    # a stale reason on an un-yanked file is not shown
    unyanked = dist(yanked=False, yanked_reason="old")
    assert "data-yanked" not in html_anchor(unyanked)
    assert json_file(unyanked).get("yanked", False) is False


@pytest.mark.parametrize("fmt", ALL_FORMATS)
@pytest.mark.parametrize(("reason", "pip_reason"), [("", ""), ("broken build", "broken build")])
def test_pip_reads_yanked(fmt: Format, reason: str, pip_reason: str) -> None:
    link = pip_link(dist(yanked=True, yanked_reason=reason), fmt)
    assert link.is_yanked
    assert link.yanked_reason == pip_reason


@pytest.mark.parametrize("fmt", ALL_FORMATS)
def test_pip_reads_not_yanked(fmt: Format) -> None:
    assert not pip_link(dist(), fmt).is_yanked


# ---- core metadata (PEP 658 / 714) ----


def test_core_metadata_absent() -> None:
    anchor = html_anchor(dist(core_metadata=False))
    assert "data-core-metadata" not in anchor and "data-dist-info-metadata" not in anchor
    assert "core-metadata" not in json_file(dist(core_metadata=False))
    body = render_project(page(dist(core_metadata=False)), Format.HTML, file_url)
    assert b"false" not in body


def test_core_metadata_true() -> None:
    anchor = html_anchor(dist(core_metadata=True))
    assert anchor["data-core-metadata"] == "true"
    assert anchor["data-dist-info-metadata"] == anchor["data-core-metadata"]
    assert json_file(dist(core_metadata=True))["core-metadata"] is True


@pytest.mark.parametrize(
    ("hashes", "html_value"),
    [
        ({"sha256": META_SHA}, f"sha256={META_SHA}"),
        ({"md5": MD5, "sha256": META_SHA}, f"sha256={META_SHA}"),  # sha256 preferred
        ({"md5": MD5}, f"md5={MD5}"),
    ],
)
def test_core_metadata_hash(hashes: dict[str, str], html_value: str) -> None:
    anchor = html_anchor(dist(core_metadata=hashes))
    assert anchor["data-core-metadata"] == html_value
    assert anchor["data-dist-info-metadata"] == html_value
    entry = json_file(dist(core_metadata=hashes))
    assert entry["core-metadata"] == hashes
    assert "dist-info-metadata" not in entry


def test_core_metadata_json_hashes_known_algorithms_only() -> None:
    # the same rule as a file's "hashes": a key a client does not know is never sent
    entry = json_file(dist(core_metadata={"sha256": META_SHA, "blake2b_256": "1" * 64}))
    assert entry["core-metadata"] == {"sha256": META_SHA}
    # with no known algorithm left the metadata is still offered, as in HTML ("true")
    unknown = dist(core_metadata={"weird": "x"})
    assert html_anchor(unknown)["data-core-metadata"] == "true"
    assert json_file(unknown)["core-metadata"] in (True, {})


@pytest.mark.parametrize("fmt", ALL_FORMATS)
def test_pip_reads_core_metadata(fmt: Format) -> None:
    assert pip_link(dist(core_metadata=False), fmt).metadata_link() is None
    with_hash = pip_link(dist(core_metadata={"sha256": META_SHA}), fmt).metadata_link()
    assert with_hash is not None
    assert with_hash.url == f"{BASE}/files/foo/{WHEEL}.metadata"
    assert with_hash.as_hashes().is_hash_allowed("sha256", META_SHA)
    without_hash = pip_link(dist(core_metadata=True), fmt).metadata_link()
    assert without_hash is not None and not without_hash.has_hash


# ---- hashes: fragment and JSON ----


@pytest.mark.parametrize(
    ("hashes", "fragment"),
    [
        ({"sha256": SHA}, f"sha256={SHA}"),
        ({"md5": MD5, "sha256": SHA}, f"sha256={SHA}"),
        ({"sha512": "f" * 128, "sha256": SHA}, f"sha256={SHA}"),
        ({"sha384": "e" * 96, "md5": MD5}, f"sha384={'e' * 96}"),
        ({"md5": MD5}, f"md5={MD5}"),
        ({"blake2b_256": "1" * 64}, ""),
        ({"sha1": "2" * 40}, ""),
        ({"weird": "3" * 10}, ""),
        ({}, ""),
    ],
)
def test_fragment_choice(hashes: dict[str, str], fragment: str) -> None:
    href = html_anchor(dist(hashes=hashes))["href"]
    assert href is not None
    assert urlsplit(href).fragment == fragment
    assert href.count("#") == (1 if fragment else 0)


def test_sha256_fragment_form() -> None:
    href = html_anchor(dist())["href"]
    assert href is not None
    assert re.fullmatch(r"sha256=[0-9a-f]{64}", urlsplit(href).fragment)


@pytest.mark.parametrize(
    ("hashes", "expected"),
    [
        ({"sha256": SHA}, {"sha256": SHA}),
        ({"sha256": SHA, "md5": MD5, "blake2b": "9" * 128}, {"sha256": SHA, "md5": MD5, "blake2b": "9" * 128}),
        ({"sha256": SHA, "blake2b_256": "1" * 64, "weird": "x"}, {"sha256": SHA}),
        ({"weird": "x"}, {}),
        ({}, {}),
    ],
)
def test_json_hashes_known_algorithms_only(hashes: dict[str, str], expected: dict[str, str]) -> None:
    entry = json_file(dist(hashes=hashes))
    assert entry["hashes"] == expected  # present even when empty


@pytest.mark.parametrize("fmt", ALL_FORMATS)
def test_pip_reads_the_hash(fmt: Format) -> None:
    link = pip_link(dist(hashes={"md5": MD5, "sha256": SHA}), fmt)
    assert link.as_hashes().is_hash_allowed("sha256", SHA)
    assert link.url_without_fragment == f"{BASE}/files/foo/{WHEEL}"


# ---- upload-time ----

UPLOAD_TIME = re.compile(r"^\d{4}-\d\d-\d\dT\d\d:\d\d:\d\d(\.\d{1,6})?Z$")


@pytest.mark.parametrize(
    ("moment", "expected"),
    [
        (datetime(2024, 1, 2, 3, 4, 5, tzinfo=UTC), "2024-01-02T03:04:05.000000Z"),
        (datetime(2024, 1, 2, 3, 4, 5, 123456, tzinfo=UTC), "2024-01-02T03:04:05.123456Z"),
        (datetime(2024, 1, 2, 5, 4, 5, tzinfo=timezone(timedelta(hours=2))), "2024-01-02T03:04:05.000000Z"),
        (datetime(2024, 1, 1, 23, 30, tzinfo=timezone(timedelta(hours=-1))), "2024-01-02T00:30:00.000000Z"),
    ],
)
def test_upload_time_format(moment: datetime, expected: str) -> None:
    assert format_upload_time(moment) == expected
    assert UPLOAD_TIME.match(expected)
    entry = json_file(dist(upload_time=moment))
    assert entry["upload-time"] == expected


def test_upload_time_absent() -> None:
    assert "upload-time" not in json_file(dist())


def test_pip_reads_upload_time() -> None:
    moment = datetime(2024, 1, 2, 3, 4, 5, tzinfo=UTC)
    link = pip_link(dist(upload_time=moment), Format.JSON)
    assert link.upload_time == moment
    assert link.upload_time.tzinfo is not None


def test_size() -> None:
    assert json_file(dist(size=1234))["size"] == 1234
    assert json_file(dist(size=0))["size"] == 0


# ---- project status (PEP 792) ----


@pytest.mark.parametrize("status", ["active", "archived", "deprecated", "quarantined"])
@pytest.mark.parametrize("reason", [None, "moved to bar <https://x>"])
def test_project_status(status: str, reason: str | None) -> None:
    marker = ProjectStatus(status, reason)
    html = parse_html(render_project_html(page(dist(), status=marker), file_url))
    assert html.metas["pypi:project-status"] == status
    assert html.metas.get("pypi:project-status-reason") == reason
    document = orjson.loads(render_project_json(page(dist(), status=marker), file_url))
    expected = {"status": status} if reason is None else {"status": status, "reason": reason}
    assert document["project-status"] == expected
    offered = 0 if status == "quarantined" else 1
    assert len(html.anchors) == offered
    assert len(document["files"]) == offered


@pytest.mark.parametrize("fmt", ALL_FORMATS)
def test_quarantined_offers_nothing_to_pip(fmt: Format) -> None:
    quarantined = page(dist(), dist(SDIST, hashes={"sha256": SHA_B}),
                       status=ProjectStatus("quarantined", "malware"))
    body = render_project(quarantined, fmt, file_url)
    assert pip_links(body, fmt) == []
    assert WHEEL.encode() not in body and SDIST.encode() not in body


# ---- file URLs ----


@pytest.mark.parametrize(
    "filename",
    [WHEEL, SDIST, "foo-1.0+local.1-py3-none-any.whl", "foo-1.0-cp312-cp312-manylinux_2_17_x86_64.whl"],
)
def test_file_urls(filename: str) -> None:
    file = dist(filename)
    anchor = html_anchor(file)
    href = anchor["href"]
    assert href is not None
    assert href.split("#", 1)[0] == file_url(file)
    parts = urlsplit(href)
    assert parts.query == ""
    assert unquote(parts.path.rsplit("/", 1)[1]) == filename
    entry = json_file(file)
    assert entry["url"] == file_url(file)  # no fragment in JSON
    assert urlsplit(str(entry["url"])).scheme == "http"
    for fmt in ALL_FORMATS:
        assert pip_link(file, fmt).filename == filename


def test_href_is_attribute_escaped() -> None:
    def odd_url(dist_file: DistFile) -> str:
        return f'{BASE}/files/foo/{dist_file.filename}?a=1&b="2"'

    body = render_project_html(page(dist()), odd_url)
    assert b'&b="2"' not in body
    ((attributes, _),) = parse_html(body).anchors
    assert attributes["href"] == f'{BASE}/files/foo/{WHEEL}?a=1&b="2"#sha256={SHA}'


def test_pip_html_parser_sees_no_base() -> None:
    parser = HTMLLinkParser(PAGE_URL)
    parser.feed(render_project_html(page(dist()), file_url).decode())
    assert parser.base_url is None
    assert len(parser.anchors) == 1


# ---- PEP 740 provenance ----


def provenance_url(dist_file: DistFile) -> str | None:
    return f"{BASE}/integrity/foo/{dist_file.version}/{dist_file.filename}/provenance"


@pytest.mark.parametrize("fmt", [Format.JSON, Format.HTML])
def test_provenance_is_pyproxy_own_url(fmt: Format) -> None:
    attested = dist(provenance=True, provenance_url="http://127.0.0.1:9/upstream/provenance")
    body = render_project(page(attested), fmt, file_url, provenance_url)
    expected = f"{BASE}/integrity/foo/1.0/{WHEEL}/provenance"
    if fmt is Format.JSON:
        (entry,) = orjson.loads(body)["files"]
        assert entry["provenance"] == expected
    else:
        ((attributes, _text),) = parse_html(body).anchors
        assert attributes["data-provenance"] == expected
    assert b"127.0.0.1:9" not in body  # never the upstream's URL
    link = pip_links(body, fmt)[0]  # pip still reads the page
    assert link.filename == WHEEL


@pytest.mark.parametrize("fmt", [Format.JSON, Format.HTML])
def test_no_provenance_without_one_or_without_a_url(fmt: Format) -> None:
    for body in (
        render_project(page(dist()), fmt, file_url, provenance_url),
        render_project(page(dist(provenance=True)), fmt, file_url),  # no URL for it given
        render_project(page(dist(provenance=True)), fmt, file_url, lambda d: None),
    ):
        assert b"provenance" not in body
