"""A chaos run told three ways: the terminal verdict, ``--json``, and an HTML page in the
lab's style (``redrive.drawing``) with the charts a person reads at a glance: records
handled over time with the faults marked, lag per partition, repeats over time, retries and
dead letters."""

from __future__ import annotations

from collections import Counter
from collections.abc import Sequence
from dataclasses import asdict, dataclass
from datetime import UTC, datetime
from html import escape
from typing import Any

from redrive.chaos.plan import MODES
from redrive.chaos.run import Fault, Run
from redrive.chaos.verdict import EXACTLY_ONCE_RULE, Verdict
from redrive.drawing import charts, page

FAULT_COLORS = {
    "evicted": "#5d4037",
    "refused": "#00838f",
    "kill": "#c62828",
    "term": "#ef6c00",
    "broker-term": "#6a1b9a",
    "broker-kill": "#6a1b9a",
}
FAULT_NAMES = {
    "evicted": "evicted (partitions lost)",
    "refused": "revocation commit refused",
    "kill": "SIGKILL",
    "term": "SIGTERM",
    "broker-term": "broker restart (SIGTERM)",
    "broker-kill": "broker restart (SIGKILL)",
}
BUCKETS = 240  # bars across a chart
CHARTS = ("handled", "lag", "repeats", "retries")
"""The charts of a run, in page order (``data-chart`` of each SVG)."""

_STYLE = """
svg.chart { display: block; width: 100%; height: auto; margin: 6px 0 14px; }
.charts { max-width: 980px; }
p.about { max-width: 960px; line-height: 1.45; }
td.num { text-align: right; font-variant-numeric: tabular-nums; }
"""


@dataclass(frozen=True, slots=True)
class Result:
    run: Run
    verdict: Verdict

    @property
    def anchor(self) -> str:
        return f"{self.run.plan.mode}-{self.run.plan.seed}"


# -- terminal ----------------------------------------------------------------------------


def terminal(run: Run, v: Verdict) -> str:
    f = v.figures
    lines = [
        "",
        f"chaos {run.plan.mode}: {'PASS' if v.passed else 'FAIL'} in {f['seconds']:.1f} s "
        f"(seed {run.plan.seed})",
        f"  rule: {v.rule}",
        f"  {f['records']:,} records ({f['transient']:,} transient, {f['poison']:,} poison) "
        f"over {f['partitions']} partitions, {f['consumers']} consumers",
        f"  faults: {f['kills']} SIGKILL, {f['terms']} SIGTERM, {f['broker_restarts']} broker "
        f"restart(s); {f['consumer_starts']} consumer starts",
    ]
    if "outputs" in f:  # the exactly-once rule
        lines += [
            f"  {run.out} (read_committed): {f['outputs']:,} outputs, "
            f"{f['outputs_more_than_once']:,} records more than once; a read_uncommitted "
            f"reader sees {f['outputs_read_uncommitted']:,} outputs, "
            f"{f['duplicates_read_uncommitted']:,} of them duplicates",
            f"  handler runs beyond one per record (ledger, not judged): "
            f"{f['handler_runs_beyond_one_per_record']:,} ({f['extra_handlings']:,} successful "
            f"re-runs, at most {f['most_handlings_of_one_record']} runs of one record); "
            f"dead-lettered again: {f['extra_dead_letters']:,}",
        ]
    else:
        lines += [
            f"  handled more than once: {f['handled_more_than_once']:,} records "
            f"({f['extra_handlings']:,} extra handlings, at most "
            f"{f['most_handlings_of_one_record']} of one record); dead-lettered again: "
            f"{f['extra_dead_letters']:,}",
            f"  repeats explained by a fault: {f['repeats_explained']:,}, unexplained: "
            f"{f['repeats_unexplained']:,} (at most {f['most_repeats_per_fault']:,} per fault)",
        ]
    width = max(len(c.what) for c in v.checks)
    for c in v.checks:
        mark = "ok" if c.ok else "FAIL"
        lines.append(
            f"  {c.what:<{width}}  expected {c.expected:>7}  observed {c.observed:<22} {mark}"
        )
    for r in v.unexplained[:10]:
        lines.append(
            f"  unexplained: record {r.ident} {r.what} again at "
            f"{r.t - run.began:.2f} s (first at {r.first - run.began:.2f} s)"
        )
    for text in v.bad_headers[:5] + [f"lost: record {i}" for i in v.lost[:10]]:
        lines.append(f"  {text}")
    return "\n".join(lines)


# -- JSON --------------------------------------------------------------------------------


def as_json(results: Sequence[Result], *, command: str = "") -> dict[str, Any]:
    return {
        "passed": all(r.verdict.passed for r in results),
        "command": command,
        "runs": [_run_json(r) for r in results],
    }


def _run_json(r: Result) -> dict[str, Any]:
    run, v = r.run, r.verdict
    return {
        "mode": run.plan.mode,
        "topic": run.topic,
        "group": run.group,
        "plan": asdict(run.plan),
        "rule": v.rule,
        "passed": v.passed,
        "figures": v.figures,
        "checks": [asdict(c) for c in v.checks],
        "faults": [{**asdict(f), "at": round(f.t - run.began, 3)} for f in run.faults],
        "lost": v.lost,
        "dead_lettered_not_poison": v.misdirected,
        "bad_headers": v.bad_headers,
        "repeats": [
            {
                "id": x.ident,
                "what": x.what,
                "at": round(x.t - run.began, 3),
                "first_at": round(x.first - run.began, 3),
                "explained_by": None
                if x.fault is None
                else {
                    "kind": x.fault.kind,
                    "at": round(x.fault.t - run.began, 3),
                    "pid": x.fault.pid,
                },
            }
            for x in v.repeats
        ],
    }


# -- HTML --------------------------------------------------------------------------------


def markers(run: Run) -> list[charts.Marker]:
    out = []
    for f in run.faults:
        at = f.t - run.began
        name = FAULT_NAMES[f.kind]
        label = name if f.broker else f"{name} pid {f.pid}"
        out.append(
            charts.Marker(
                at,
                f.kind,
                f"{label} at {at:.1f} s",
                FAULT_COLORS[f.kind],
                f.until - run.began if f.until else None,
            )
        )
    return out


def _buckets(times: Sequence[float], span: float, size: float) -> list[tuple[float, float]]:
    counts = Counter(int(t // size) for t in times)
    return [(i * size, float(counts.get(i, 0))) for i in range(int(span // size) + 1)]


def _cumulative(times: Sequence[float], span: float, size: float) -> list[tuple[float, float]]:
    total = 0.0
    out = [(0.0, 0.0)]
    for t, n in _buckets(times, span, size):
        total += n
        out.append((min(t + size, span), total))
    return out


def figures_of(r: Result) -> list[str]:
    """The four charts of a run."""
    run, v = r.run, r.verdict
    span = max(run.ended - run.began, 1.0)
    size = max(span / BUCKETS, 0.25)
    marks = markers(run)
    first_ok: dict[int, float] = {}
    fails: list[float] = []
    for h in run.handlings:
        if h.ok:
            if h.ident not in first_ok or h.t < first_ok[h.ident]:
                first_ok[h.ident] = h.t
        else:
            fails.append(h.t - run.began)
    handled = sorted(t - run.began for t in first_ok.values())
    dead = sorted(d.timestamp / 1000 - run.began for d in run.dead_letters)
    lag_series = []
    for tp in sorted({tp for s in run.samples for tp in s.ends}):
        pts = [
            (s.t - run.began, float(s.ends[tp] - (s.committed.get(tp) or 0)))
            for s in run.samples
            if tp in s.ends and s.t <= run.ended
        ]
        label = f"{'retry' if tp[0] != run.topic else 'p'}[{tp[1]}]"
        lag_series.append(charts.Series(label, pts))
    handled_series = [charts.Series("records handled", _cumulative(handled, span, size), "#1f4e99")]
    explained = [x.t - run.began for x in v.repeats if x.explained]
    unexplained = [x.t - run.began for x in v.repeats if not x.explained]
    repeat_series = [
        charts.Series("explained by a fault", _cumulative(explained, span, size), "#2e7d32"),
        charts.Series("unexplained", _cumulative(unexplained, span, size), "#c62828"),
    ]
    repeats_title = "Repeats over time (handled or dead-lettered again)"
    if v.rule == EXACTLY_ONCE_RULE:  # judged by the output topic; the ledger's repeats are not
        first_out: dict[int, float] = {}
        for w in run.outputs:
            first_out[w.ident] = min(w.t, first_out.get(w.ident, w.t))
        outputs = sorted(t - run.began for t in first_out.values())
        handled_series.append(
            charts.Series(
                f"outputs in {run.out} (read_committed)",
                _cumulative(outputs, span, size),
                "#2e7d32",
            )
        )
        reruns = [x.t - run.began for x in v.reruns]
        repeat_series = [
            charts.Series("handler re-runs (ledger, not judged)", _cumulative(reruns, span, size),
                          "#2e7d32"),
            charts.Series("second copies in the output or dead-letter topic (fail)",
                          _cumulative(unexplained, span, size), "#c62828"),
        ]  # fmt: skip
        repeats_title = "Handler re-runs and second copies in Kafka over time"
    return [
        charts.chart(
            "handled",
            "Records handled (first success) over time, faults marked",
            handled_series,
            x_max=span,
            markers=marks,
            y_label="records",
        ),
        charts.chart(
            "lag",
            "Lag per partition (end offset - committed position)",
            lag_series,
            x_max=span,
            markers=marks,
            y_label="records",
        ),
        charts.chart(
            "repeats",
            repeats_title,
            repeat_series,
            x_max=span,
            markers=marks,
            y_label="repeats",
        ),
        charts.chart(
            "retries",
            f"Failed attempts and dead letters per {size:.2g} s",
            [
                charts.Series(
                    "failed attempts", _buckets(fails, span, size), "#ef6c00", bars=True, width=size
                ),
                charts.Series(
                    "dead letters", _buckets(dead, span, size), "#6a1b9a", bars=True, width=size
                ),
            ],
            x_max=span,
            markers=marks,
            y_label="per interval",
        ),
    ]


def _section(r: Result) -> str:
    run, v = r.run, r.verdict
    f = v.figures
    checks = "".join(
        f"<tr><td>{escape(c.what)}</td><td class='num'>{escape(c.expected)}</td>"
        f"<td class='num'>{escape(c.observed)}</td>"
        f'<td class="{"pass" if c.ok else "fail"}">{"ok" if c.ok else "FAIL"}</td></tr>'
        for c in v.checks
    )
    rows = [
        ("records", f["records"]),
        ("transient", f["transient"]),
        ("poison", f["poison"]),
        ("handlings (all attempts)", f["handlings"]),
        ("failed attempts", f["failed_attempts"]),
        ("SIGKILLs", f["kills"]),
        ("SIGTERMs", f["terms"]),
        ("broker restarts", f["broker_restarts"]),
        ("consumer starts", f["consumer_starts"]),
        ("records handled more than once", f["handled_more_than_once"]),
        ("extra handlings", f["extra_handlings"]),
        ("most handlings of one record", f["most_handlings_of_one_record"]),
        ("dead letters", f["dead_letters"]),
        ("poison dead-lettered exactly once", f["poison_dead_lettered_once"]),
        ("dead-lettered again", f["extra_dead_letters"]),
        ("most repeats explained by one fault", f["most_repeats_per_fault"]),
        ("seconds", f["seconds"]),
    ]
    if v.rule == EXACTLY_ONCE_RULE:
        rows[-2:-1] = [
            ("handler runs beyond one per record (not judged)",
             f["handler_runs_beyond_one_per_record"]),
            (f"outputs in {run.out} (read_committed)", f["outputs"]),
            ("records output more than once", f["outputs_more_than_once"]),
            ("outputs a read_uncommitted reader sees", f["outputs_read_uncommitted"]),
            ("duplicates a read_uncommitted reader sees", f["duplicates_read_uncommitted"]),
        ]  # fmt: skip
    figures = "".join(
        f"<tr><td>{escape(k)}</td><td class='num'>{val:,}</td></tr>"
        if isinstance(val, int)
        else f"<tr><td>{escape(k)}</td><td class='num'>{val}</td></tr>"
        for k, val in rows
    )
    per_fault = Counter(x.fault for x in v.repeats if x.fault is not None)
    faults = "".join(
        f"<tr><td class='num'>{x.t - run.began:.1f} s</td><td>{escape(FAULT_NAMES[x.kind])}</td>"
        f"<td>{_process(x)}</td>"
        f"<td class='num'>{f'{x.end - x.t:.1f} s' if x.broker else ''}</td>"
        f"<td class='num'>{per_fault.get(x, 0):,}</td></tr>"
        for x in sorted(run.faults, key=lambda x: x.t)
    )
    odd = (
        "".join(
            f"<li>record {x.ident} {escape(x.what)} again at {x.t - run.began:.2f} s (first at "
            f"{x.first - run.began:.2f} s)</li>"
            for x in v.unexplained[:100]
        )
        + "".join(f"<li>lost: record {i}</li>" for i in v.lost[:100])
        + "".join(f"<li>{escape(b)}</li>" for b in v.bad_headers[:100])
    )
    problems = f"<ul class='problems'>{odd}</ul>" if odd else ""
    promise = (
        "every output and dead letter in Kafka exactly once"
        if v.rule == EXACTLY_ONCE_RULE
        else "every repeat explained"
    )
    verdict = (
        f'<p class="verdict pass">PASS: nothing lost, {promise}</p>'
        if v.passed
        else '<p class="verdict fail">FAIL</p>'
    )
    return f"""
<section class="run" id="{escape(r.anchor)}" data-passed="{str(v.passed).lower()}"
 data-faults="{len(run.faults)}">
<h2>{escape(run.plan.mode)}: {escape(MODES.get(run.plan.mode, ""))} <small>(seed
{run.plan.seed}, {f["seconds"]:.1f} s)</small></h2>
<p class="about">{f["records"]:,} records over {f["partitions"]} partitions, consumed by
{f["consumers"]} <code>redrive run</code> processes in group {escape(run.group)}, against
Kafka at {escape(run.servers)}; {len(run.faults)} faults on the schedule of seed
{run.plan.seed}. Rule: {escape(v.rule)}.</p>
{verdict}{problems}
<div class="charts">{"".join(figures_of(r))}</div>
<div class="tables">
<table><tr><th>check</th><th>expected</th><th>observed</th><th></th></tr>{checks}</table>
<table><tr><th>figure</th><th>value</th></tr>{figures}</table>
<table><tr><th>time</th><th>fault</th><th>process</th><th>down</th><th>repeats it
explains</th></tr>{faults}</table>
</div>
</section>"""


def html(results: Sequence[Result], *, command: str = "", total: float = 0.0) -> str:
    passed = sum(r.verdict.passed for r in results)
    summary = "".join(
        f'<tr><td><a href="#{escape(r.anchor)}">{escape(r.run.plan.mode)}</a></td>'
        f"<td class='num'>{r.verdict.figures['records']:,}</td>"
        f"<td class='num'>{r.verdict.figures['kills']}</td>"
        f"<td class='num'>{r.verdict.figures['broker_restarts']}</td>"
        f"<td class='num'>{r.verdict.figures['lost']:,}</td>"
        f"<td class='num'>{r.verdict.figures['handled_more_than_once']:,}</td>"
        f"<td class='num'>{r.verdict.figures['repeats_unexplained']:,}</td>"
        f"<td class='num'>{r.verdict.figures['seconds']:.1f} s</td>"
        f'<td class="{"pass" if r.verdict.passed else "fail"}">'
        f"{'PASS' if r.verdict.passed else 'FAIL'}</td></tr>"
        for r in results
    )
    when = datetime.now(UTC).strftime("%Y-%m-%d %H:%M UTC")
    legend = " ".join(
        f'<span style="color:{FAULT_COLORS[k]}">&#9474; {escape(FAULT_NAMES[k])}</span>'
        for k in ("kill", "term", "broker-kill", "evicted", "refused")
    )
    body = f"""<h1>redrive chaos: {passed} of {len(results)} runs pass</h1>
<p class="about">Run {when}{f" with <code>{escape(command)}</code>" if command else ""} in
{total:.1f} s. Consumers were SIGKILLed and SIGTERMed and the broker was restarted while
they worked; each consumer wrote a ledger line for every handling before its handler
returned, and the dead-letter topic was read back at the end. A run passes when nothing is
lost, only poison records are dead-lettered, every repeat (a record handled, or
dead-lettered, again) is explained by a fault that hit before the record was committed (a
SIGKILL, a broker restart, or an eviction or refused revocation commit the consumer
reported and the driver caused), and the group has committed everything. An exactly-once
run is judged by what it wrote to Kafka instead: every output and dead letter exactly once to a
<code>read_committed</code> reader (its handler's re-runs are counted, not judged). Faults
on the charts:
{legend} (a band: the broker was down).</p>
<table><tr><th>mode</th><th>records</th><th>SIGKILLs</th><th>broker restarts</th>
<th>lost</th><th>handled more than once</th><th>unexplained</th><th>time</th>
<th>verdict</th></tr>{summary}</table>
{"".join(_section(r) for r in results)}"""
    nav = page.toc(
        "redrive chaos",
        f"{passed} of {len(results)} pass",
        passed == len(results),
        [(r.anchor, r.run.plan.mode, r.verdict.passed) for r in results],
    )
    return page.document(f"redrive chaos: {passed}/{len(results)} runs pass", nav, body, _STYLE)


def _process(f: Fault) -> str:
    if f.broker:
        return ""
    if f.kind in ("evicted", "refused"):
        lost = ", ".join(f"{t}[{p}]" for t, p in f.partitions)
        return f"pid {f.pid}: {'lost' if f.kind == 'evicted' else 'gave up'} {escape(lost)}"
    return f"consumer {f.slot} (pid {f.pid})"
