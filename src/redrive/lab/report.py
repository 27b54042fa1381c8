"""The lab's HTML report: one self-contained file (inline CSS and SVG, no script, and a
Content-Security-Policy that forbids any fetch)."""

from __future__ import annotations

import json
from collections.abc import Sequence
from datetime import UTC, datetime
from html import escape
from typing import Any

from redrive.drawing import page
from redrive.lab import svg
from redrive.lab.codec import to_dict
from redrive.lab.scenarios import Result
from redrive.lab.story import tell
from redrive.lab.trace import Trace, build

CSP = page.CSP

_STYLE = """
p.story, p.facts { max-width: 960px; line-height: 1.45; }
p.facts { background: #f5f5f5; border-left: 3px solid #9e9e9e; padding: 6px 10px; }
.diagram { border: 1px solid #eee; padding: 4px; overflow-x: auto; }
svg.sequence { display: block; width: 100%; height: auto; }
.legend { font-size: 12px; line-height: 1.8; max-width: 1100px; }
.legend span.kind { margin-right: 14px; white-space: nowrap; }
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
    summary = "".join(
        f'<tr><td><a href="#{escape(r.name)}">{escape(r.heading)}</a></td>'
        f"<td>{escape(r.contract)}</td><td>{r.duration:.1f} s</td>"
        f'<td class="{"pass" if r.passed else "fail"}">{"PASS" if r.passed else "FAIL"}</td></tr>'
        for r in results
    )
    when = datetime.now(UTC).strftime("%Y-%m-%d %H:%M UTC")
    sections = "".join(_section(i, r) for i, r in enumerate(results))
    nav = page.toc(
        "redrive lab",
        f"{passed} of {len(results)} match the contract",
        passed == len(results),
        [(r.name, r.heading, r.passed) for r in results],
    )
    body = f"""<h1>redrive lab: {passed} of {len(results)} scenarios match the contract</h1>
<p>Run {when} against Kafka at {escape(servers)} in {total:.1f} s. Every diagram, and the
"what happened" text above it, is drawn from the events recorded in that run; time runs
downwards, in seconds since the scenario's first event. A committed position is the next
offset to read.</p>
<table><tr><th>scenario</th><th>contract</th><th>time</th><th>verdict</th></tr>{summary}</table>
{_legend()}
{sections}"""
    title = f"redrive lab: {passed}/{len(results)} scenarios match the contract"
    return page.document(title, nav, body, _STYLE)


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
