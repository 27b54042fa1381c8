"""`redrive chaos` at CI size against its own broker (it restarts it, so not the session's),
the restart of that broker, and the chaos report in headless Chromium."""

from __future__ import annotations

import contextlib
import html
import io
import json
import re
import struct
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest
from confluent_kafka import Consumer
from confluent_kafka import TopicPartition as KTopicPartition

from redrive import TopicPartition, admin
from redrive import headers as h
from redrive.broker import LocalKafka
from redrive.broker.local import QUICK_RESTART
from redrive.chaos.cli import run_chaos
from redrive.chaos.report import CHARTS
from redrive.cli import build_parser
from redrive.drawing import page

from .browser import browse, page_requests
from .txn import read

pytestmark = pytest.mark.integration


@pytest.fixture(scope="module")
def broker() -> Iterator[LocalKafka]:
    """A broker of this module's own, which its tests stop and start."""
    with LocalKafka(settings=QUICK_RESTART) as kafka:
        yield kafka


def test_broker_restart_keeps_records_and_committed_offsets(broker: LocalKafka) -> None:
    servers = broker.bootstrap_servers
    admin.create_topics(servers, {"restarted": 2})
    admin.produce(servers, "restarted", [(f"k{i}", f"v{i}") for i in range(50)])
    consumer = Consumer({"bootstrap.servers": servers, "group.id": "g", "log_level": 0})
    try:
        consumer.commit(offsets=[KTopicPartition("restarted", 0, 7, "meta-0"),
                                 KTopicPartition("restarted", 1, 3)], asynchronous=False)  # fmt: skip
    finally:
        consumer.close()
    port, data = broker.port, broker.data_dir
    for kill in (False, True):  # SIGTERM, then SIGKILL (an unclean stop)
        broker.restart(kill=kill)
        assert (broker.port, broker.data_dir) == (port, data)
        values = sorted(m.value().decode() for m in admin.read_all(servers, "restarted", 60))
        assert values == sorted(f"v{i}" for i in range(50)), kill
        assert admin.committed_offsets(servers, "g", "restarted") == {0: 7, 1: 3}
        assert admin.committed_metadata(servers, "g", TopicPartition("restarted", 0)) == "meta-0"


@pytest.fixture(scope="module")
def chaos_run(broker: LocalKafka, tmp_path_factory: pytest.TempPathFactory) -> dict[str, Any]:
    """The CI-size run: 20,000 records, consumers SIGKILLed, one broker restart."""
    folder = tmp_path_factory.mktemp("chaos")
    report = folder / "chaos.html"
    argv = ["chaos", "--records", "20000", "--partitions", "3", "--consumers", "3",
            "--kill-every", "8", "--broker-restarts", "1", "--seed", "7", "--json",
            "--report", str(report), "--workdir", str(folder / "work")]  # fmt: skip
    args = build_parser().parse_args(argv)
    out = io.StringIO()
    with contextlib.redirect_stdout(out):
        code = run_chaos(args, broker=broker)
    return {"code": code, "json": json.loads(out.getvalue()), "report": report,
            "work": folder / "work", "servers": broker.bootstrap_servers}  # fmt: skip


def test_the_topics_and_the_group_agree_without_the_tool(chaos_run: dict[str, Any]) -> None:
    """Checks of the run's outcome that do not use chaos's own ledger, figures or reader."""
    (run,) = chaos_run["json"]["runs"]
    servers, topic = chaos_run["servers"], run["topic"]
    produced = {m.value().decode(): (m.partition(), m.offset())
                for m in admin.read_all(servers, topic, 60)}  # fmt: skip
    assert len(produced) == 20000
    poison = {v.split(":")[0]: at for v, at in produced.items() if v.split(":")[1] in ("pf", "pr")}
    assert poison
    origins: dict[str, set[tuple[int, int]]] = {}
    for m in admin.read_all(servers, f"{topic}-dlt", 60):
        got = dict(m.headers() or [])
        assert got[h.DLT_ORIGINAL_TOPIC] == topic.encode()
        where = (struct.unpack(">i", got[h.DLT_ORIGINAL_PARTITION])[0],
                 struct.unpack(">q", got[h.DLT_ORIGINAL_OFFSET])[0])  # fmt: skip
        origins.setdefault(m.value().decode().split(":")[0], set()).add(where)
    assert origins == {ident: {at} for ident, at in poison.items()}  # each poison id, no other
    ends = admin.end_offsets(servers, topic)
    assert admin.committed_offsets(servers, run["group"], topic) == ends


def test_nothing_lost_and_every_duplicate_explained(chaos_run: dict[str, Any]) -> None:
    data = chaos_run["json"]
    (run,) = data["runs"]
    f = run["figures"]
    assert chaos_run["code"] == 0 and data["passed"] and run["passed"], run["checks"]
    assert f["records"] == 20000 and f["lost"] == 0 and f["final_lag"] == 0
    assert f["kills"] >= 1 and f["broker_restarts"] == 1
    # every poison record dead-lettered; a second copy (killed between the broker's
    # acknowledgement and the commit) is a repeat, explained like the others below
    assert f["poison"] > 0 and f["dead_letters"] - f["extra_dead_letters"] == f["poison"]
    assert f["dead_lettered_not_poison"] == 0
    # every record was handled: successes = records handled once + the extra handlings
    assert f["successes"] == f["records"] - f["poison"] + f["extra_handlings"]
    assert f["failed_attempts"] >= f["transient"]  # each transient record failed first
    assert all(r["explained_by"] is not None for r in run["repeats"])
    assert {x["kind"] for x in run["faults"]} >= {"kill", "broker-term"}


def test_the_ledger_is_written_by_the_consumer_processes(chaos_run: dict[str, Any]) -> None:
    (run,) = chaos_run["json"]["runs"]
    ledgers = list((chaos_run["work"]).glob("*/ledger/ledger-*.txt"))
    killed = {x["pid"] for x in run["faults"] if x["kind"] == "kill"}
    writers = {int(p.stem.removeprefix("ledger-")) for p in ledgers}
    assert len(writers) >= 3 and killed & writers  # the killed ones wrote too
    lines = [ln for p in ledgers for ln in p.read_text().splitlines()]
    assert len([ln for ln in lines if " lost " not in ln]) == run["figures"]["handlings"]


def test_exactly_once_through_sigkills_each_output_and_dead_letter_once(
    broker: LocalKafka, tmp_path: Path
) -> None:
    """The exactly-once mode, small: 5,000 records, two consumers, a SIGKILL every ~6 s. The
    output topic and the dead-letter topic, read here as a read_committed reader sees them,
    hold every record once, while the handler ran many records more than once."""
    report = tmp_path / "eos.html"
    argv = ["chaos", "--mode", "exactly-once", "--records", "5000", "--partitions", "3",
            "--consumers", "2", "--kill-every", "6", "--term-share", "0",
            "--broker-restarts", "0", "--seed", "14", "--json", "--report", str(report)]  # fmt: skip
    out = io.StringIO()
    with contextlib.redirect_stdout(out):
        code = run_chaos(build_parser().parse_args(argv), broker=broker)
    data = json.loads(out.getvalue())
    (run,) = data["runs"]
    f = run["figures"]
    assert code == 0 and run["passed"], run["checks"]
    assert run["rule"].startswith("exactly-once") and f["kills"] >= 1
    servers, topic = broker.bootstrap_servers, run["topic"]
    kinds = {v.split(":")[0]: v.split(":")[1]
             for v in (m.value().decode() for m in admin.read_all(servers, topic, 60))}  # fmt: skip
    healthy = sorted(i for i, k in kinds.items() if k not in ("pf", "pr"))
    poison = sorted(i for i, k in kinds.items() if k in ("pf", "pr"))
    assert len(kinds) == 5000 and poison
    outputs = [m.value().decode().split(":")[0] for m in read(servers, f"{topic}-out")]
    assert sorted(outputs) == healthy  # each once
    dead = [m.value().decode().split(":")[0] for m in read(servers, f"{topic}-dlt")]
    assert sorted(dead) == poison  # each once
    # what the transactions hid: the handler ran again after aborts and kills, and a
    # read_uncommitted reader sees those runs' outputs
    assert f["extra_handlings"] > 0 and f["duplicates_read_uncommitted"] > 0
    assert len(read(servers, f"{topic}-out", "read_uncommitted")) > len(outputs)
    charts = re.findall(r'data-chart="(\w+)"', report.read_text())
    assert charts == list(CHARTS)


def test_chaos_report_in_a_headless_browser(chaos_run: dict[str, Any], tmp_path: Path) -> None:
    path: Path = chaos_run["report"]
    (run,) = chaos_run["json"]["runs"]
    shot = tmp_path / "chaos.png"
    browse(tmp_path, path.as_uri(), f"--screenshot={shot}", "--window-size=1400,1800")
    png = shot.read_bytes()
    assert png[:8] == b"\x89PNG\r\n\x1a\n" and struct.unpack(">II", png[16:24]) == (1400, 1800)
    assert len(png) > 20_000  # a drawn page, not a blank one

    text = path.read_text()
    measured_copy = tmp_path / "measure.html"
    measured_copy.write_text(text.replace(page.CSP, page.CSP + "; script-src 'unsafe-inline'")
                             .replace("</body>", MEASURE + "</body>"))  # fmt: skip
    for window in ("1400,1800", "800,1200"):
        dom = browse(tmp_path, measured_copy.as_uri(), "--dump-dom",
                     "--virtual-time-budget=5000", f"--window-size={window}")  # fmt: skip
        found = re.search(r'<pre id="measure">(.*?)</pre>', dom, re.S)
        assert found, dom[-2000:]
        charts = json.loads(html.unescape(found.group(1)))
        assert [c["name"] for c in charts] == list(CHARTS), window
        for c in charts:
            assert 0 < c["width"] <= c["inner"] + 0.5, (window, c)  # fits its box
            assert c["right"] <= c["page"] + 0.5, (window, c)
            assert c["markers"] == len(run["faults"]), (window, c)  # every fault marked
            assert c["series"] >= 1, (window, c)
            assert c["toc"] == 1
    log = tmp_path / "net.json"
    browse(tmp_path, path.as_uri(), f"--log-net-log={log}", "--dump-dom")
    assert page_requests(log) == []


MEASURE = """<script>
const page = document.documentElement.clientWidth;
const out = [...document.querySelectorAll('section.run svg.chart')].map(svg => {
  const box = svg.getBoundingClientRect();
  const div = svg.parentElement;
  const style = getComputedStyle(div);
  const section = svg.closest('section.run');
  return {name: svg.dataset.chart, width: box.width, right: box.right, page: page,
          inner: div.clientWidth - parseFloat(style.paddingLeft) - parseFloat(style.paddingRight),
          markers: svg.querySelectorAll('g.marker').length,
          series: svg.querySelectorAll('g.series').length,
          toc: document.querySelectorAll('nav.toc a[href="#' + section.id + '"]').length};
});
const pre = document.createElement('pre'); pre.id = 'measure';
pre.textContent = JSON.stringify(out); document.body.appendChild(pre);
</script>"""
