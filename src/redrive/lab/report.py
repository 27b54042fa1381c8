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
from redrive.lab.story import tell
from redrive.lab.trace import Trace, build

CSP = "default-src 'none'; style-src 'unsafe-inline'; img-src data:"

_STYLE = """
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
p.story, p.facts { max-width: 960px; line-height: 1.45; }
p.facts { background: #f5f5f5; border-left: 3px solid #9e9e9e; padding: 6px 10px; }
.pass { color: #2e7d32; font-weight: bold; } .fail { color: #c62828; font-weight: bold; }
.badge.pass, .badge.fail { color: #fff; }
table { border-collapse: collapse; margin: 8px 16px 8px 0; font-size: 13px; }
td, th { border: 1px solid #ccc; padding: 3px 8px; text-align: left; vertical-align: top; }
th { background: #f5f5f5; }
.tables { display: flex; flex-wrap: wrap; align-items: flex-start; }
.diagram { border: 1px solid #eee; padding: 4px; overflow-x: auto; }
svg.sequence { display: block; width: 100%; height: auto; }
.legend { font-size: 12px; line-height: 1.8; max-width: 1100px; }
.legend span.kind { margin-right: 14px; white-space: nowrap; }
@media (max-width: 900px) {
  body { display: block; }
  nav.toc { height: auto; max-height: 35vh; z-index: 1; border-right: none;
    border-bottom: 1px solid #ddd; }
}
"""


def trace_of(result: Result) -> Trace:
    return build(result.events, result.names, result.alias)


def facts_of(result: Result) -> list[str]:
    """What happened in `result`'s run, told from its events."""
    return tell(result.events, result.names, result.alias)


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
        f"<tr><td>{escape(c.what)}</td><td>{escape(c.show(c.expected))}</td>"
        f"<td>{escape(c.show(c.observed))}</td>"
        f'<td class="{"pass" if c.ok else "fail"}">{"ok" if c.ok else "differs"}</td></tr>'
        for c in result.checks
    )
    facts = " ".join(escape(f) for f in facts_of(result))
    width, _ = svg.size(trace)
    return f"""
<section class="scenario" id="{escape(result.name)}" data-arrows="{len(trace.arrows)}"
 data-passed="{str(result.passed).lower()}">
<h2>{escape(result.heading)} <small>({escape(result.name)}, {escape(result.contract)},
{result.duration:.1f} s)</small></h2>
<p class="story">{escape(result.story)}</p>
<p class="facts"><strong>What happened in this run:</strong> {facts}</p>
{_verdict(result)}
<div class="diagram" style="max-width: {width}px">{svg.render(trace, ident=f"s{i}")}</div>
<div class="tables">
<table><tr><th>record</th><th>partition</th><th>offset</th><th>times handled</th>
<th>final outcome</th></tr>{rows}</table>
<table><tr><th>partition</th><th>committed position</th></tr>{committed}</table>
<table><tr><th>check</th><th>expected</th><th>observed</th><th></th></tr>{checks}</table>
</div>
</section>"""


def _legend() -> str:
    arrows = "".join(
        f'<span class="kind" style="color:{color}">&#8594; {escape(kind)}</span>'
        for kind, color in svg.COLORS.items()
    )
    return (
        f'<p class="legend">{arrows}<br>'
        f'<span style="color:{svg.LIGHT_COMMIT}">&#8594; commit that moved no position '
        "(an owner's window mark before its first record, an attempt-count mark, a clean "
        "hand-over at the same position): drawn lighter, reason in brackets</span><br>"
        f'<span><span style="background:{svg.WAIT_FILL}">&#8199;&#8199;</span> a wait '
        "(back-off, or a retry-topic record not due yet) on its client's lifeline, down to "
        "when it ended</span><br>"
        f"<span>Time runs downwards to scale: steps at the same moment are one row apart, "
        f"and each second of a pause adds {svg.PX_PER_S:g} px (its length is written in the "
        f"time column). A pause longer than {svg.CAP:g} s is drawn {svg.CAP:g} s tall "
        "between zig-zag lines that say how long it was.</span></p>"
    )


def html(results: Sequence[Result], *, servers: str = "", total: float = 0.0) -> str:
    """The whole report as one HTML string."""
    passed = sum(r.passed for r in results)
    toc = "".join(
        f'<li><a href="#{escape(r.name)}"><span class="badge {"pass" if r.passed else "fail"}">'
        f"{'PASS' if r.passed else 'FAIL'}</span><span>{escape(r.heading)}</span></a></li>"
        for r in results
    )
    summary = "".join(
        f'<tr><td><a href="#{escape(r.name)}">{escape(r.heading)}</a></td>'
        f"<td>{escape(r.contract)}</td><td>{r.duration:.1f} s</td>"
        f'<td class="{"pass" if r.passed else "fail"}">{"PASS" if r.passed else "FAIL"}</td></tr>'
        for r in results
    )
    when = datetime.now(UTC).strftime("%Y-%m-%d %H:%M UTC")
    sections = "".join(_section(i, r) for i, r in enumerate(results))
    return f"""<!DOCTYPE html>
<html lang="en"><head><meta charset="utf-8">
<meta name="viewport" content="width=device-width, initial-scale=1">
<meta http-equiv="Content-Security-Policy" content="{CSP}">
<title>redrive lab: {passed}/{len(results)} scenarios match the contract</title>
<style>{_STYLE}</style></head>
<body>
<nav class="toc" aria-label="scenarios"><h2><a href="#top">redrive lab</a></h2>
<div class="{"pass" if passed == len(results) else "fail"}">{passed} of {len(results)} match
the contract</div><ol>{toc}</ol></nav>
<main id="top">
<h1>redrive lab: {passed} of {len(results)} scenarios match the contract</h1>
<p>Run {when} against Kafka at {escape(servers)} in {total:.1f} s. Every diagram, and the
"what happened" text above it, is drawn from the events recorded in that run; time runs
downwards, in seconds since the scenario's first event. A committed position is the next
offset to read.</p>
<table><tr><th>scenario</th><th>contract</th><th>time</th><th>verdict</th></tr>{summary}</table>
{_legend()}
{sections}
</main>
</body></html>
"""


def as_json(results: Sequence[Result]) -> dict[str, Any]:
    """Recorded events and verdicts, for tooling."""
    return {
        "passed": all(r.passed for r in results),
        "scenarios": [
            {
                "name": r.name,
                "number": r.number,
                "title": r.title,
                "story": r.story,
                "what_happened": facts_of(r),
                "contract": r.contract,
                "passed": r.passed,
                "duration": r.duration,
                "error": r.error,
                "checks": [
                    {
                        "what": c.what,
                        "expected": _plain(c.expected),
                        "observed": _plain(c.observed),
                        "shown": [c.show(c.expected), c.show(c.observed)],
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
