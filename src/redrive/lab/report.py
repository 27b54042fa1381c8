"""The lab's HTML report: one self-contained file (inline CSS and SVG, no script, and a
Content-Security-Policy that forbids any fetch)."""

from __future__ import annotations

import json
from collections.abc import Sequence
from datetime import UTC, datetime
from html import escape
from typing import Any

from redrive.lab import svg
from redrive.lab.codec import to_dict
from redrive.lab.scenarios import Result
from redrive.lab.trace import Trace, build

CSP = "default-src 'none'; style-src 'unsafe-inline'; img-src data:"

_STYLE = """
body { font-family: sans-serif; margin: 24px; color: #212121; max-width: 1900px; }
h1 { font-size: 22px; } h2 { font-size: 18px; margin-top: 40px; border-top: 1px solid #ddd;
padding-top: 16px; }
p.story { max-width: 900px; line-height: 1.4; }
.pass { color: #2e7d32; font-weight: bold; } .fail { color: #c62828; font-weight: bold; }
table { border-collapse: collapse; margin: 8px 16px 8px 0; font-size: 13px; }
td, th { border: 1px solid #ccc; padding: 3px 8px; text-align: left; }
th { background: #f5f5f5; }
.tables { display: flex; flex-wrap: wrap; align-items: flex-start; }
.diagram { overflow-x: auto; border: 1px solid #eee; padding: 4px; }
.legend span { margin-right: 14px; font-size: 12px; }
"""


def trace_of(result: Result) -> Trace:
    return build(result.events, result.names, result.alias)


def _verdict(result: Result) -> str:
    if result.passed:
        return f'<p class="verdict pass">PASS: matches the contract ({escape(result.contract)})</p>'
    items = "".join(f"<li>{escape(d)}</li>" for d in result.differences)
    return f'<div class="verdict fail">FAIL ({escape(result.contract)})<ul>{items}</ul></div>'


def _section(i: int, result: Result) -> str:
    trace = trace_of(result)
    rows = "".join(
        f"<tr><td>{escape(r.name)}</td><td>{escape(result.alias(r.topic))}[{r.partition}]</td>"
        f"<td>{r.offset}</td><td>{r.handled}</td><td>{escape(r.outcome)}</td></tr>"
        for r in result.rows
    )
    committed = "".join(
        f"<tr><td>{escape(result.alias(t))}[{p}]</td><td>{'-' if pos is None else pos}</td></tr>"
        for t, positions in result.committed.items()
        for p, pos in positions.items()
    )
    checks = "".join(
        f"<tr><td>{escape(c.what)}</td><td>{escape(repr(c.expected))}</td>"
        f"<td>{escape(repr(c.observed))}</td>"
        f'<td class="{"pass" if c.ok else "fail"}">{"ok" if c.ok else "differs"}</td></tr>'
        for c in result.checks
    )
    return f"""
<section class="scenario" id="{escape(result.name)}" data-arrows="{len(trace.arrows)}"
 data-passed="{str(result.passed).lower()}">
<h2>{escape(result.title)} <small>({escape(result.name)}, {escape(result.contract)},
{result.duration:.1f} s)</small></h2>
<p class="story">{escape(result.story)}</p>
{_verdict(result)}
<div class="diagram">{svg.render(trace, ident=f"s{i}")}</div>
<div class="tables">
<table><tr><th>record</th><th>partition</th><th>offset</th><th>times handled</th>
<th>final outcome</th></tr>{rows}</table>
<table><tr><th>partition</th><th>committed position</th></tr>{committed}</table>
<table><tr><th>check</th><th>expected</th><th>observed</th><th></th></tr>{checks}</table>
</div>
</section>"""


def html(results: Sequence[Result], *, servers: str = "", total: float = 0.0) -> str:
    """The whole report as one HTML string."""
    passed = sum(r.passed for r in results)
    summary = "".join(
        f'<tr><td><a href="#{escape(r.name)}">{escape(r.title)}</a></td>'
        f"<td>{escape(r.contract)}</td><td>{r.duration:.1f} s</td>"
        f'<td class="{"pass" if r.passed else "fail"}">{"PASS" if r.passed else "FAIL"}</td></tr>'
        for r in results
    )
    legend = "".join(
        f'<span style="color:{color}">&#8594; {escape(kind)}</span>'
        for kind, color in svg.COLORS.items()
    )
    when = datetime.now(UTC).strftime("%Y-%m-%d %H:%M UTC")
    sections = "".join(_section(i, r) for i, r in enumerate(results))
    return f"""<!DOCTYPE html>
<html lang="en"><head><meta charset="utf-8">
<meta http-equiv="Content-Security-Policy" content="{CSP}">
<title>redrive lab: {passed}/{len(results)} scenarios match the contract</title>
<style>{_STYLE}</style></head>
<body>
<h1>redrive lab: {passed} of {len(results)} scenarios match the contract</h1>
<p>Run {when} against Kafka at {escape(servers)} in {total:.1f} s. Every diagram is drawn
from the events recorded in that run; time runs downwards, in seconds since the scenario's
first consumer started. A committed position is the next offset to read.</p>
<table><tr><th>scenario</th><th>contract</th><th>time</th><th>verdict</th></tr>{summary}</table>
<p class="legend">{legend}</p>
{sections}
</body></html>
"""


def as_json(results: Sequence[Result]) -> dict[str, Any]:
    """Recorded events and verdicts, for tooling."""
    return {
        "passed": all(r.passed for r in results),
        "scenarios": [
            {
                "name": r.name,
                "title": r.title,
                "contract": r.contract,
                "passed": r.passed,
                "duration": r.duration,
                "error": r.error,
                "checks": [
                    {
                        "what": c.what,
                        "expected": _plain(c.expected),
                        "observed": _plain(c.observed),
                        "ok": c.ok,
                    }
                    for c in r.checks
                ],
                "committed": r.committed,
                "records": [
                    {
                        "name": w.name,
                        "topic": w.topic,
                        "partition": w.partition,
                        "offset": w.offset,
                        "handled": w.handled,
                        "outcome": w.outcome,
                    }
                    for w in r.rows
                ],
                "events": [to_dict(e) for e in r.events],
            }
            for r in results
        ],
    }


def _plain(value: Any) -> Any:
    """JSON-safe form of a check value (bytes as text, other oddities as repr)."""
    try:
        json.dumps(value)
        return value
    except TypeError:
        if isinstance(value, bytes):
            return value.decode("utf-8", "replace")
        if isinstance(value, list | tuple):
            return [_plain(v) for v in value]
        if isinstance(value, dict):
            return {str(k): _plain(v) for k, v in value.items()}
        return repr(value)
