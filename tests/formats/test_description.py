"""Long descriptions as safe HTML (pyproxy/formats/description.py)."""

from __future__ import annotations

from markupsafe import Markup

from pyproxy.formats.description import render_description


def test_markdown_is_rendered_and_sanitised() -> None:
    html = render_description(
        "# Title\n\n<script>alert(1)</script>\n\n<img src=x onerror=alert(2)>\n\n"
        "<a href=\"javascript:alert(3)\">x</a>\n",
        "text/markdown; charset=UTF-8; variant=GFM",
    )
    assert isinstance(html, Markup)
    assert '<h1 id="user-content-title">' in html
    assert "<script" not in html and "onerror" not in html and "javascript:" not in html


def test_commonmark_variant() -> None:
    assert "<em>x</em>" in render_description("*x*", "text/markdown; variant=CommonMark")


def test_rst_is_the_default() -> None:
    html = render_description("Title\n=====\n\nSome **bold** text.\n", None)
    assert "<strong>bold</strong>" in html and "Title" in html


def test_invalid_rst_falls_back_to_escaped_text() -> None:
    text = "Broken\n===\n\n.. raw:: html\n\n   <script>x()</script>\n"
    html = render_description(text, "text/x-rst")
    assert html.startswith('<pre class="plain-description">')
    assert "&lt;script&gt;x()&lt;/script&gt;" in html and "<script" not in html


def test_plain_text_is_escaped() -> None:
    html = render_description("a <b>c</b>\nnext", "text/plain")
    assert "&lt;b&gt;c&lt;/b&gt;" in html and "<br>" in html


def test_unknown_type_falls_back_to_escaped_text() -> None:
    html = render_description("<i>hi</i>", "application/x-weird")
    assert html == '<pre class="plain-description">&lt;i&gt;hi&lt;/i&gt;</pre>'
