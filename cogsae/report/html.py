"""Self-contained, safe HTML from the report's markdown (figures inlined, no user script)."""

from __future__ import annotations

import base64
import html
import re
from pathlib import Path
from typing import Any

from cogsae._io import write_text

_CSS = """
body{font-family:system-ui,sans-serif;max-width:1100px;margin:2em auto;padding:0 1em;color:#222}
table{border-collapse:collapse;font-size:0.85em;margin:1em 0}
th,td{border:1px solid #ccc;padding:3px 7px;text-align:right}
th{background:#f3f3f3} td:first-child,td:nth-child(2){text-align:left}
img{max-width:100%;border:1px solid #eee;margin:0.5em 0}
h2{border-bottom:2px solid #1b9e77;padding-bottom:3px}
"""

_SAFE_SCHEMES = ("", "http", "https", "mailto")


def render_html(markdown_text: str, directory: Path, title: str) -> str:
    """Self-contained HTML: markdown rendered, figures inlined as base64 data URIs.

    The markdown holds user text (names, description, concept, levels, corpus examples),
    so raw HTML in it is shown as text, never interpreted, and links or images may only
    point to http(s), mailto or relative addresses (no ``javascript:`` URLs).
    """
    body = _safe_markdown().convert(markdown_text)

    def inline(match: re.Match[str]) -> str:
        path = directory / match.group(1)
        if not path.is_file() or directory.resolve() not in path.resolve().parents:
            return match.group(0)
        data = base64.b64encode(path.read_bytes()).decode()
        return f'src="data:image/png;base64,{data}"'

    body = re.sub(r'src="(figures/[^"]+\.png)"', inline, body)
    return (
        f"<!doctype html><html><head><meta charset='utf-8'><title>{html.escape(title)}</title>"
        f"<style>{_CSS}</style></head><body>{body}</body></html>\n"
    )


def write_pages(directory: Path, markdown_text: str, title: str) -> Path:
    """Write ``markdown_text`` as report.md and report.html (`render_html`) in ``directory``;
    returns the path of report.html."""
    write_text(directory / "report.md", markdown_text)
    write_text(directory / "report.html", render_html(markdown_text, directory, title))
    return directory / "report.html"


def _safe_markdown() -> Any:
    """A Markdown converter (tables) that escapes raw HTML and drops unsafe link targets."""
    import markdown
    from markdown.treeprocessors import Treeprocessor

    class SafeLinks(Treeprocessor):
        def run(self, root: Any) -> None:
            for element in root.iter():
                for attribute in ("href", "src"):
                    target = element.get(attribute)
                    if target is not None and _scheme(target) not in _SAFE_SCHEMES:
                        del element.attrib[attribute]

    md = markdown.Markdown(extensions=["tables"])
    md.preprocessors.deregister("html_block")
    md.inlinePatterns.deregister("html")
    md.treeprocessors.register(SafeLinks(md), "safe_links", 0)
    return md


def _scheme(url: str) -> str:
    """The scheme of ``url``, lower case, ignoring the whitespace and control characters
    that browsers ignore inside a scheme (so a tab cannot hide "javascript:")."""
    cleaned = re.sub(r"[\x00-\x20]", "", url)
    match = re.match(r"([A-Za-z][A-Za-z0-9+.-]*):", cleaned)
    return match.group(1).lower() if match else ""
