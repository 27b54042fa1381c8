"""The frame of a redrive HTML report: one self-contained file (inline CSS and SVG, no
script) with a Content-Security-Policy that forbids any fetch, a sticky table of contents
on the left, and the look every report shares."""

from __future__ import annotations

from html import escape

CSP = "default-src 'none'; style-src 'unsafe-inline'; img-src data:"

STYLE = """
html { scroll-padding-top: 12px; }
body { font-family: sans-serif; margin: 0; color: #212121; display: grid;
  grid-template-columns: 230px minmax(0, 1fr); }
nav.toc { position: sticky; top: 0; align-self: start; height: 100vh; overflow-y: auto;
  box-sizing: border-box; padding: 14px 12px; background: #fafafa;
  border-right: 1px solid #ddd; font-size: 13px; }
nav.toc h2 { font-size: 15px; margin: 0 0 4px; border: none; padding: 0; }
nav.toc h2 a { color: #212121; text-decoration: none; }
nav.toc ol { list-style: none; padding: 0; margin: 10px 0; }
nav.toc li { margin: 2px 0; }
nav.toc a { display: flex; gap: 6px; padding: 3px 4px; border-radius: 3px;
  color: #212121; text-decoration: none; }
nav.toc a:hover { background: #eeeeee; }
nav.toc .badge { flex: none; width: 38px; text-align: center; font-size: 11px;
  border-radius: 3px; color: #fff; padding: 1px 0; height: 15px; }
.badge.pass { background: #2e7d32; } .badge.fail { background: #c62828; }
main { min-width: 0; max-width: 1650px; padding: 4px 20px 48px; }
h1 { font-size: 22px; } h2 { font-size: 18px; margin-top: 36px; border-top: 1px solid #ddd;
  padding-top: 16px; }
.pass { color: #2e7d32; font-weight: bold; } .fail { color: #c62828; font-weight: bold; }
.badge.pass, .badge.fail { color: #fff; }
table { border-collapse: collapse; margin: 8px 16px 8px 0; font-size: 13px; }
td, th { border: 1px solid #ccc; padding: 3px 8px; text-align: left; vertical-align: top; }
th { background: #f5f5f5; }
.tables { display: flex; flex-wrap: wrap; align-items: flex-start; }
@media (max-width: 900px) {
  body { display: block; }
  nav.toc { height: auto; max-height: 35vh; z-index: 1; border-right: none;
    border-bottom: 1px solid #ddd; }
}
"""


def badge(passed: bool) -> str:
    return (
        f'<span class="badge {"pass" if passed else "fail"}">{"PASS" if passed else "FAIL"}</span>'
    )


def toc(heading: str, summary: str, all_passed: bool, entries: list[tuple[str, str, bool]]) -> str:
    """The table of contents: `entries` are (anchor, label, passed)."""
    items = "".join(
        f'<li><a href="#{escape(anchor)}">{badge(ok)}<span>{escape(label)}</span></a></li>'
        for anchor, label, ok in entries
    )
    return (
        f'<nav class="toc" aria-label="sections"><h2><a href="#top">{escape(heading)}</a></h2>'
        f'<div class="{"pass" if all_passed else "fail"}">{escape(summary)}</div>'
        f"<ol>{items}</ol></nav>"
    )


def document(title: str, nav: str, body: str, style: str = "") -> str:
    """A whole report page: `nav` from ``toc``, `body` the main column's HTML."""
    return f"""<!DOCTYPE html>
<html lang="en"><head><meta charset="utf-8">
<meta name="viewport" content="width=device-width, initial-scale=1">
<meta http-equiv="Content-Security-Policy" content="{CSP}">
<title>{escape(title)}</title>
<style>{STYLE}{style}</style></head>
<body>
{nav}
<main id="top">
{body}
</main>
</body></html>
"""
