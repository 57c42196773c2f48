"""The web pages in a real headless browser: Debian's `chromium`, driven by Playwright for Python.

A person opens the landing page, searches, opens a project page and reads it; on a phone-sized
viewport nothing scrolls sideways. Playwright's own browser downloads are never used
(`playwright install` is not needed): the system chromium is launched by path.
"""

from __future__ import annotations

import re
import shutil
from collections.abc import Iterator
from pathlib import Path

import pytest

from tests.dists import make_wheel
from tests.e2e.clients import twine_upload
from tests.e2e.conftest import PyproxyServer

CHROMIUM = "/usr/bin/chromium"
CHROMIUM_ARGS = [
    "--headless", "--no-sandbox", "--disable-gpu", "--disable-quic", "--no-first-run",
    "--disable-background-networking", "--disable-component-update", "--disable-sync",
]
TIMEOUT_MS = 15_000
PROJECT = "Browser_Demo"  # twine sends "Browser-Demo"; normalised "browser-demo"
README = """\
# Widget manual

How to use the *demo* widgets.

<script>window.pwned = true; alert("readme")</script>

<img src="missing.png" onerror="window.pwned = true">
"""


@pytest.fixture(scope="module")
def browser() -> Iterator[object]:
    if not Path(CHROMIUM).exists():
        found = shutil.which("chromium") or shutil.which("chromium-browser")
        pytest.fail(
            f"the browser test needs Debian's chromium at {CHROMIUM}"
            + (f" (found {found} instead)" if found else "")
            + ": install it with `apt-get install -y chromium` (as root)."
            " Do not run `playwright install`: the system browser is used.",
            pytrace=False,
        )
    try:
        from playwright.sync_api import sync_playwright
    except ImportError:
        pytest.fail("Playwright for Python is missing: pip install -e '.[test]'", pytrace=False)
    with sync_playwright() as playwright:
        launched = playwright.chromium.launch(executable_path=CHROMIUM, args=CHROMIUM_ARGS)
        try:
            yield launched
        finally:
            launched.close()


@pytest.fixture(scope="module")
def published(pyproxy_server: PyproxyServer, tmp_path_factory: pytest.TempPathFactory) -> dict[str, Path]:
    """Two releases of one private project, uploaded with twine; the newer one has a README."""
    directory = tmp_path_factory.mktemp("browser-dists")
    wheels = {
        "1.0": make_wheel(directory, PROJECT, "1.0", summary="Demo widgets"),
        "1.1": make_wheel(
            directory, PROJECT, "1.1", requires_python=">=3.9", summary="Demo widgets for browsers",
            extra_metadata="Description-Content-Type: text/markdown\n\n" + README,
        ),
    }
    assert pyproxy_server.user and pyproxy_server.password
    twine_upload(pyproxy_server.upload_url, wheels.values(), pyproxy_server.user,
                 pyproxy_server.password)
    return wheels


def _new_page(browser, **context_options):  # type: ignore[no-untyped-def]
    context = browser.new_context(**context_options)
    page = context.new_page()
    page.set_default_timeout(TIMEOUT_MS)
    dialogs: list[str] = []
    page.on("dialog", lambda dialog: (dialogs.append(dialog.message), dialog.dismiss()))
    return context, page, dialogs


def _visible_text(page) -> str:  # type: ignore[no-untyped-def]
    return re.sub(r"\s+", " ", page.inner_text("body"))


def test_search_and_read_a_project_page(
    browser, pyproxy_server: PyproxyServer, published: dict[str, Path]  # type: ignore[no-untyped-def]
) -> None:
    context, page, dialogs = _new_page(browser, viewport={"width": 1280, "height": 800})
    try:
        page.goto(pyproxy_server.url + "/")
        landing = _visible_text(page)
        assert f"index-url = {pyproxy_server.url}/simple/" in landing
        assert f'url = "{pyproxy_server.url}/simple/"' in landing
        assert f"repository = {pyproxy_server.url}/legacy/" in landing
        assert "private packages only" in landing
        assert "1 private project" in landing

        box = page.get_by_role("searchbox", name="Project name")
        box.fill("demo")
        box.press("Enter")
        page.wait_for_url(re.compile(r"/search\?q=demo$"))
        assert "Private projects matching “demo”" in _visible_text(page)

        page.get_by_role("link", name="Browser-Demo").click()
        page.wait_for_url(f"{pyproxy_server.url}/project/browser-demo/")
        heading = page.get_by_role("heading", level=1).first.inner_text()
        assert "Browser-Demo" in heading and "1.1" in heading
        text = _visible_text(page)
        assert "Demo widgets for browsers" in text  # the summary of 1.1
        assert published["1.1"].name in text
        assert "Requires-Python >=3.9" in text
        # the newest release is open, older ones fold away: 1.0's file is present but hidden
        assert page.get_by_role("link", name=published["1.1"].name).is_visible()
        assert not page.get_by_role("link", name=published["1.0"].name).is_visible()
        page.locator("summary", has_text="1.0").click()
        assert page.get_by_role("link", name=published["1.0"].name).is_visible()
        link = page.get_by_role("link", name=published["1.1"].name).get_attribute("href")
        assert link == f"{pyproxy_server.url}/files/browser-demo/{published['1.1'].name}"

        # the README, rendered: a heading and emphasis; its script and handler never ran
        assert page.get_by_role("heading", name="Widget manual").is_visible()
        assert page.locator(".description em", has_text="demo").is_visible()
        assert page.evaluate("() => window.pwned") is None
        assert dialogs == []
        assert page.locator("script").count() == 0

        # a search for an exact private name goes straight to the project
        page.goto(pyproxy_server.url + "/")
        page.get_by_role("searchbox", name="Project name").fill("browser.demo")
        page.get_by_role("button", name="Search").click()
        page.wait_for_url(f"{pyproxy_server.url}/project/browser-demo/")
    finally:
        context.close()


def test_pages_fit_a_phone(
    browser, pyproxy_server: PyproxyServer, published: dict[str, Path]  # type: ignore[no-untyped-def]
) -> None:
    context, page, _dialogs = _new_page(
        browser, viewport={"width": 390, "height": 844}, device_scale_factor=3, is_mobile=True,
        has_touch=True,
    )
    try:
        for path in ("/", "/search?q=demo", "/projects/", "/project/browser-demo/",
                     "/project/no-such-project/"):
            page.goto(pyproxy_server.url + path)
            width = page.evaluate(
                "() => ({inner: window.innerWidth, scroll: document.documentElement.scrollWidth,"
                " body: document.body.scrollWidth,"
                " font: parseFloat(getComputedStyle(document.body).fontSize)})"
            )
            # the viewport meta works (no 980 px desktop layout) and nothing scrolls sideways
            assert width["inner"] == 390, (path, width)
            assert width["scroll"] <= width["inner"] and width["body"] <= width["inner"], (path, width)
            assert width["font"] >= 16, (path, width)
        # the long filename and hash wrap instead of widening the page
        assert page.get_by_role("heading", level=1).is_visible()
        page.goto(pyproxy_server.url + "/project/browser-demo/")
        assert page.get_by_role("link", name=published["1.1"].name).is_visible()
        box = page.locator(".hash code").first.bounding_box()
        assert box is not None and box["x"] + box["width"] <= 390
    finally:
        context.close()
