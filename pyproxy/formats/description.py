"""A package's long description as safe HTML, as the public index renders it: readme_renderer
picks the markup by Description-Content-Type and sanitises the result with nh3."""

from __future__ import annotations

import functools
import logging
from email.message import EmailMessage

from markupsafe import Markup, escape
from readme_renderer import markdown, rst, txt

log = logging.getLogger("pyproxy.description")

# the core metadata default when Description-Content-Type is absent
DEFAULT_CONTENT_TYPE = "text/x-rst"


def _parse_content_type(value: str | None) -> tuple[str, dict[str, str]]:
    message = EmailMessage()
    message["Content-Type"] = value or DEFAULT_CONTENT_TYPE
    params = {str(k).lower(): str(v) for k, v in message["Content-Type"].params.items()}
    return message.get_content_type(), params


def _render(text: str, content_type: str, params: dict[str, str]) -> str | None:
    if content_type == "text/plain":
        return txt.render(text)
    if content_type == "text/markdown":
        return markdown.render(text, variant=params.get("variant", "GFM"))
    if content_type == "text/x-rst":
        return rst.render(text)
    return None


@functools.lru_cache(maxsize=64)  # descriptions of immutable files: render each once
def render_description(text: str, content_type: str | None) -> Markup:
    """Sanitised HTML of `text`; if it cannot be rendered (unknown type, invalid markup), the
    text itself, escaped, in a <pre>."""
    kind, params = _parse_content_type(content_type)
    try:
        html = _render(text, kind, params)
    except Exception:  # a renderer bug must not take the page down
        log.warning("rendering a %s description failed", kind, exc_info=True)
        html = None
    if html is None:
        return Markup('<pre class="plain-description">{}</pre>').format(escape(text))
    # readme_renderer's output has been through nh3: the one place raw HTML is trusted
    return Markup(html)
