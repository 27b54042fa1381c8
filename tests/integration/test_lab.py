"""The lab against the real broker: every scenario's verdict, the CLI, and the HTML report
in a real headless browser (Debian's chromium; `make test` installs it when missing)."""

from __future__ import annotations

import html
import json
import re
import struct
from collections.abc import Iterator
from pathlib import Path

import pytest

from redrive.lab import report
from redrive.lab.cli import run_lab
from redrive.lab.scenarios import SCENARIOS, Lab, Result, run, scenario, select
from redrive.lab.trace import Note, build

from .browser import browse, page_requests

pytestmark = pytest.mark.integration


@pytest.fixture(scope="module")
def lab_run(
    kafka: str, tmp_path_factory: pytest.TempPathFactory
) -> Iterator[tuple[list[Result], Path]]:
    """Every scenario once (shared by the tests below), and the report of that run."""
    results = [run(spec, kafka) for spec in select([])]
    path = tmp_path_factory.mktemp("lab") / "report.html"
    path.write_text(report.html(results, servers=kafka, total=0.0), encoding="utf-8")
    yield results, path


@pytest.mark.parametrize("name", list(SCENARIOS))
def test_scenario_matches_the_contract(lab_run: tuple[list[Result], Path], name: str) -> None:
    (result,) = [r for r in lab_run[0] if r.name == name]
    assert result.passed, "\n".join(result.differences)
    assert result.events and result.rows and result.committed


def test_the_lab_draws_every_scenario_from_its_own_events(
    lab_run: tuple[list[Result], Path],
) -> None:
    results, _ = lab_run
    for r in results:
        trace = build(r.events, r.names, r.alias)
        kinds = {a.kind for a in trace.arrows}
        # share groups acknowledge records where consumer groups commit positions
        settle = "acknowledge" if r.name.startswith("share-") else "commit"
        assert {"poll", "records", "handle", "ok", settle} <= kinds, r.name
        listeners = {e.listener for e in r.events if e.listener}
        assert len([p for p in trace.participants if p.kind == "client"]) == len(listeners)
    by_name = {r.name: build(r.events, r.names, r.alias) for r in results}
    assert "exception" in {a.kind for a in by_name["exception"].arrows}
    assert "dead-letter-failed" in {a.kind for a in by_name["dead-letter-fails"].arrows}
    assert "SIGKILL" in [s.text for s in by_name["crash"].steps if isinstance(s, Note)]


# -- the command ---------------------------------------------------------------------------


def _args(*names: str, report_path: Path, as_json: bool = False) -> object:
    import argparse

    return argparse.Namespace(scenarios=list(names), report=str(report_path), json=as_json,
                              list=False, verbose=False)  # fmt: skip


def test_lab_command_json_and_report(
    kafka: str, tmp_path: Path, monkeypatch: pytest.MonkeyPatch, capsys: pytest.CaptureFixture[str]
) -> None:
    monkeypatch.setenv("REDRIVE_BOOTSTRAP_SERVERS", kafka)
    path = tmp_path / "r.html"
    assert run_lab(_args("dead-letter", report_path=path, as_json=True)) == 0  # type: ignore[arg-type]
    out = capsys.readouterr()
    data = json.loads(out.out)
    assert data["passed"] is True and [s["name"] for s in data["scenarios"]] == ["dead-letter"]
    kinds = [e["kind"] for e in data["scenarios"][0]["events"]]
    assert "DeadLettered" in kinds and kinds.index("DeadLettered") < len(kinds) - 1
    assert "verdict: PASS" in out.err and f"report: {path.resolve()}" in out.err
    assert 'class="scenario" id="dead-letter"' in path.read_text()


def test_lab_command_fails_when_a_verdict_fails(
    kafka: str, tmp_path: Path, monkeypatch: pytest.MonkeyPatch, capsys: pytest.CaptureFixture[str]
) -> None:
    monkeypatch.setenv("REDRIVE_BOOTSTRAP_SERVERS", kafka)
    monkeypatch.setattr("redrive.lab.scenarios.SCENARIOS", dict(SCENARIOS))

    @scenario("wrong", "A wrong expectation", contract="C2", story="Expects too much.")
    def wrong(lab: Lab) -> None:
        topic = lab.topic("orders", ["m1"])
        lab.check_committed(topic, {0: 1})

    assert run_lab(_args("wrong", report_path=tmp_path / "r.html")) == 1  # type: ignore[arg-type]
    out = capsys.readouterr().out
    n = len(SCENARIOS) + 1
    assert f"[{n}/{n}] wrong: A wrong expectation (C2) ..." in out  # before it runs
    assert "verdict: FAIL (C2): committed orders: expected {orders[0]: 1}, observed" in out
    assert "observed {orders[0]: none}" in out and f"[{n}] wrong: FAIL in" in out
    assert "0/1 scenarios match the contract" in out
    assert run_lab(_args("nope", report_path=tmp_path / "r.html")) == 2  # type: ignore[arg-type]
    assert "unknown scenario 'nope'" in capsys.readouterr().err


# -- the report in a real browser --------------------------------------------------------------

MEASURE = """<script>
const page = document.documentElement.clientWidth;
const out = [...document.querySelectorAll('section.scenario')].map(s => {
  const box = s.querySelector('svg.sequence').getBoundingClientRect();
  const div = s.querySelector('.diagram');
  const style = getComputedStyle(div);
  const inner = div.clientWidth - parseFloat(style.paddingLeft) - parseFloat(style.paddingRight);
  return {name: s.id, width: box.width, height: box.height, inner: inner,
          natural: Number(s.querySelector('svg.sequence').getAttribute('width')),
          scrolls: div.scrollWidth > div.clientWidth,
          right: div.getBoundingClientRect().right, page: page,
          toc: document.querySelectorAll('nav.toc a[href="#' + s.id + '"]').length,
          arrows: s.querySelectorAll('svg.sequence g.arrow').length,
          declared: Number(s.dataset.arrows)};
});
const pre = document.createElement('pre'); pre.id = 'measure';
pre.textContent = JSON.stringify(out); document.body.appendChild(pre);
</script>"""


def test_report_in_a_headless_browser(lab_run: tuple[list[Result], Path], tmp_path: Path) -> None:
    results, path = lab_run
    expected = {r.name: len(build(r.events, r.names, r.alias).arrows) for r in results}

    shot = tmp_path / "report.png"
    browse(tmp_path, path.as_uri(), f"--screenshot={shot}", "--window-size=1400,1800")
    png = shot.read_bytes()
    assert png[:8] == b"\x89PNG\r\n\x1a\n" and struct.unpack(">II", png[16:24]) == (1400, 1800)
    assert len(png) > 20_000  # a drawn page, not a blank one

    # Sizes and arrows as the browser lays them out: a copy with a measuring script.
    page = path.read_text()
    measured_copy = tmp_path / "measure.html"
    measured_copy.write_text(
        page.replace(report.CSP, report.CSP + "; script-src 'unsafe-inline'").replace(
            "</body>", MEASURE + "</body>"
        )
    )
    # Every diagram fits its box, at a desktop width and at a narrow one (TOC on top).
    widest = max(int(m) for m in re.findall(r'<svg [^>]*class="sequence" width="(\d+)"', page))
    assert widest > 1400 - 230  # the check below means something: one diagram must shrink
    for window in ("1400,1800", "800,1200"):
        dom = browse(tmp_path, measured_copy.as_uri(), "--dump-dom",
                     "--virtual-time-budget=5000", f"--window-size={window}")  # fmt: skip
        found = re.search(r'<pre id="measure">(.*?)</pre>', dom, re.S)
        assert found, dom[-2000:]
        measured = {m["name"]: m for m in json.loads(html.unescape(found.group(1)))}
        assert set(measured) == set(expected)
        for name, m in measured.items():
            assert m["width"] > 0 and m["height"] > 0, (window, name)
            assert m["width"] <= m["inner"] + 0.5, (window, name, m)  # no overflow
            assert not m["scrolls"] and m["right"] <= m["page"] + 0.5, (window, name, m)
            assert m["width"] <= m["natural"] + 0.5, (window, name, m)  # never blown up
            assert m["toc"] == 1, (window, name)  # a link in the table of contents
            assert m["arrows"] == m["declared"] == expected[name], (window, name)


def test_report_makes_no_network_request(
    lab_run: tuple[list[Result], Path], tmp_path: Path
) -> None:
    _, path = lab_run
    # The detector sees a page's request (a control page without the report's policy) ...
    control = tmp_path / "control.html"
    control.write_text('<!DOCTYPE html><img src="http://127.0.0.1:9/probe.png">')
    log = tmp_path / "control-net.json"
    browse(tmp_path, control.as_uri(), f"--log-net-log={log}", "--dump-dom")
    assert "http://127.0.0.1:9/probe.png" in page_requests(log)
    # ... and the report makes none.
    log = tmp_path / "report-net.json"
    browse(tmp_path, path.as_uri(), f"--log-net-log={log}", "--dump-dom")
    assert page_requests(log) == []
