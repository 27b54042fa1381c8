"""The lab in the terminal: per scenario its set-up, what happened (told from the events), a
compact timeline and the verdict; a line when a scenario starts and one when it ends."""

from __future__ import annotations

import textwrap

from redrive.lab.scenarios import Result, Scenario, number
from redrive.lab.story import tell
from redrive.lab.trace import Arrow, Trace


def timeline(trace: Trace) -> list[str]:
    """One line per step: time, from -> to, label (notes in brackets on their lifeline)."""
    # Clients by their listener's name: the terminal is narrower than the report.
    label = {
        p.id: p.id.split(":", 1)[1] if p.kind == "client" else p.label for p in trace.participants
    }
    width = max((len(v) for v in label.values()), default=8)
    lines = []
    for s in trace.steps:
        if isinstance(s, Arrow):
            route = f"{label[s.src]:>{width}} -> {label[s.dst]:<{width}}"
            lines.append(f"  {s.t:6.2f}s  {route}  {s.label}")
        else:
            lines.append(f"  {s.t:6.2f}s  {label.get(s.at, ''):>{width}}    [{s.text}]")
    return lines


def starting(spec: Scenario, total: int) -> str:
    """``[3/10] exception: Exception at m2, thrown to the loop (F1) ...``"""
    n = number(spec.name)
    return f"[{n}/{total}] {spec.name}: {spec.title} ({spec.contract}) ..."


def finished(result: Result) -> str:
    """``[3/10] exception: PASS in 1.4 s``: printed as soon as the scenario ends."""
    verdict = "PASS" if result.passed else "FAIL"
    return f"[{result.number}] {result.name}: {verdict} in {result.duration:.1f} s"


def verdict_line(result: Result) -> str:
    if result.passed:
        return f"verdict: PASS, matches the contract ({result.contract})"
    return f"verdict: FAIL ({result.contract}): " + "; ".join(result.differences)


def render(result: Result, trace: Trace) -> str:
    out = [f"== {result.heading} [{result.name}] ({result.contract}, {result.duration:.1f} s)"]
    out += textwrap.wrap(result.story, 96, initial_indent="  ", subsequent_indent="  ")
    happened = " ".join(tell(result.events, result.names, result.alias))
    out += textwrap.wrap(
        "what happened: " + happened, 96, initial_indent="  ", subsequent_indent="    "
    )
    out.append("  timeline:")
    out += timeline(trace)
    for row in result.rows:
        out.append(f"  {row.name:>4}: handled {row.handled}x, {row.outcome}")
    for topic, positions in result.committed.items():
        shown = ", ".join(f"[{p}]={pos}" for p, pos in positions.items())
        out.append(f"  committed {result.alias(topic)}: {shown}")
    out.append(verdict_line(result))
    return "\n".join(out)
