"""The lab's report as a reader sees it: values as a person writes them, the story told from
the events, time drawn to scale, lighter commits, numbering and the table of contents."""

from __future__ import annotations

import re

import pytest

from redrive import events as ev
from redrive.lab import report, svg, terminal
from redrive.lab.codec import LabNote
from redrive.lab.scenarios import SCENARIOS, Check, number
from redrive.lab.story import tell
from redrive.lab.trace import Note, build
from redrive.lab.values import plain
from redrive.message import TopicPartition
from tests.unit.test_lab_trace import DLT, NAMES, TP, alias, dead_letter_run, result_of

C = "consumer"


@pytest.mark.parametrize(
    ("value", "shown"),
    [
        ([b"m2"], "[m2]"),
        (b"\x00\x00\x00\x04", "0x00000004"),
        ({0: 3}, "{orders[0]: 3}"),
        ([{0: 3}, {0: 6}], "[{orders[0]: 3}, {orders[0]: 6}]"),
        ({0: None}, "{orders[0]: none}"),
        ([("consumer-1", 1)], "[(consumer-1, 1)]"),
        ({"a1": 1, "a2": 2}, "{a1: 1, a2: 2}"),
        (True, "yes"),
        ([], "[]"),
        (1.5, "1.5"),
    ],
)
def test_values_read_as_a_person_writes_them(value: object, shown: str) -> None:
    assert plain(value, partitions_of="orders") == shown


def test_check_tables_and_differences_show_plain_values() -> None:
    r = result_of(
        Check("dead letters", [b"m2"], [b"m2"]),
        Check("committed orders", {0: 3}, {0: None}, "orders"),
    )
    assert r.differences == [
        "committed orders: expected {orders[0]: 3}, observed {orders[0]: none}"
    ]
    page = report.html([r])
    assert "<td>[m2]</td>" in page and "{orders[0]: 3}" in page
    assert "b&#x27;m2&#x27;" not in page and "[b'" not in page


def test_the_story_is_told_from_the_events() -> None:
    story = tell(dead_letter_run(), NAMES, alias)
    assert story == [
        "1 poll ([m1..m3]).",
        "The lab creates orders-dlt at +13.00 s.",
        "m1, m3 were handled once and succeeded.",
        "m2 failed once (RuntimeError), waited 0.5 s, its dead-letter write failed once, then was"
        " dead-lettered to orders-dlt[0]@0.",
        "Committed orders[0]: 1 → 3 (2 commits, 2 moved a position).",
    ]


def test_the_story_counts_polls_retries_and_consumers_that_take_over() -> None:
    tp = TP
    c1, c2 = "consumer-1", "consumer-2"
    events: list[ev.Event] = [
        ev.Assigned(c1, (tp,), ts=0),
        ev.Polled(c1, ((tp, 0, 3),), ts=1),
        ev.Delivered(c1, ((tp, 0, 1),), ts=1),
        ev.Succeeded(c1, tp, 0, ts=1),
        ev.Delivered(c1, ((tp, 1, 1),), ts=1),
        LabNote(c1, "SIGKILL", ts=2),
        ev.Assigned(c2, (tp,), ts=8),
        ev.Polled(c2, ((tp, 0, 2),), ts=8),
        ev.Delivered(c2, ((tp, 0, 1),), ts=8),
        ev.Succeeded(c2, tp, 0, ts=8),
        ev.Delivered(c2, ((tp, 1, 1),), ts=8),
        ev.Failed(c2, tp, 1, 1, "RuntimeError", "x", ts=8),
        ev.BackingOff(c2, tp, 1, 1, 1.5, ts=8),
        ev.Delivered(c2, ((tp, 1, 2),), ts=9.5),
        ev.Failed(c2, tp, 1, 2, "RuntimeError", "x", ts=9.5),
        ev.BackingOff(c2, tp, 1, 2, 1.5, ts=9.5),
        ev.Delivered(c2, ((tp, 1, 3),), ts=11),
        ev.Succeeded(c2, tp, 1, ts=11),
        ev.Committed(c2, ((tp, 2),), ts=11),
    ]
    assert tell(events, NAMES, alias) == [
        "consumer-1: 1 poll ([m1..m3]); consumer-2: 1 poll ([m1, m2]).",
        "The lab: SIGKILL on consumer-1 at +2.00 s.",
        "consumer-2 was assigned orders[0] at +8.00 s.",
        "m1 was handled twice (consumer-1, consumer-2) and succeeded.",
        "m2 failed twice (RuntimeError; consumer-1 without an outcome, consumer-2 ×3), waited"
        " 2 × 1.5 s, then succeeded on attempt 3.",
        "Committed orders[0]: 2 (1 commit, 1 moved a position).",
    ]


def test_time_is_drawn_to_scale_and_long_pauses_are_compressed() -> None:
    events = [
        ev.Delivered(C, ((TP, 1, 1),), ts=100.0),
        ev.Failed(C, TP, 1, 1, "RuntimeError", "x", ts=100.0),
        ev.BackingOff(C, TP, 1, 1, 1.5, ts=100.0),
        ev.Delivered(C, ((TP, 1, 2),), ts=101.5),  # after a 1.5 s back-off
        ev.Failed(C, TP, 1, 2, "RuntimeError", "x", ts=101.5),
        ev.BackingOff(C, TP, 1, 2, 3.0, ts=101.5),
        ev.Delivered(C, ((TP, 1, 3),), ts=104.5),  # after 3 s
        ev.Succeeded(C, TP, 1, ts=104.5),
        ev.Committed(C, ((TP, 2),), ts=112.5),  # after 8 s: compressed
    ]
    trace = build(events, NAMES, alias)
    ys, gaps = svg.layout(trace.steps)
    rows = [ys[i + 1] - ys[i] for i in range(len(ys) - 1)]
    assert rows[0] == rows[1] == svg.ROW  # same moment: one row apart
    assert rows[2] == svg.ROW + 1.5 * svg.PX_PER_S  # proportional
    assert rows[5] == svg.ROW + 3.0 * svg.PX_PER_S  # twice as long, twice the space
    assert rows[7] == svg.ROW + svg.CAP * svg.PX_PER_S  # capped
    assert [(round(g.seconds, 2), g.compressed) for g in gaps] == [
        (1.5, False),
        (3.0, False),
        (8.0, True),
    ]
    drawn = svg.render(trace)
    assert drawn.count('class="gap compressed"') == 1 and "8.00 s without events" in drawn
    assert drawn.count('class="wait"') == 2  # each back-off is a bar down to the next attempt
    notes = [s for s in trace.steps if isinstance(s, Note)]
    assert [n.until for n in notes] == [1.5, 4.5]


def test_commits_that_move_no_position_are_drawn_lighter() -> None:
    trace = build(dead_letter_run(), NAMES, alias)
    commits = [(a.label, a.moved) for a in trace.arrows if a.kind == "commit"]
    assert commits == [("commit orders[0]=1 (attempt 2)", True), ("commit orders[0]=3", True)]
    events = [
        ev.Committed(C, ((TP, 0),), reason="window", ts=1),
        ev.Committed(C, ((TP, 3),), ts=2),
        ev.Committed(C, ((TP, 3),), reason="close", ts=3),
    ]
    trace = build(events, NAMES, alias)
    assert [(a.label, a.moved) for a in trace.arrows] == [
        ("commit orders[0]=0 (window)", False),
        ("commit orders[0]=3", True),
        ("commit orders[0]=3 (close)", False),
    ]
    drawn = svg.render(trace)
    assert drawn.count('data-moved="false"') == 2 and svg.LIGHT_COMMIT in drawn


def test_scenarios_are_numbered_in_the_order_of_the_list() -> None:
    assert [number(name) for name in SCENARIOS] == list(range(1, len(SCENARIOS) + 1))
    assert not any(re.match(r"\d", s.title) for s in SCENARIOS.values())
    r = result_of(Check("x", 1, 1))
    r.number = 7
    assert r.heading == "7. X"
    assert number("not-a-scenario") == 0


def test_report_has_a_sticky_table_of_contents_with_verdicts() -> None:
    good, bad = result_of(Check("x", 1, 1)), result_of(Check("x", 1, 2))
    good.name, good.number, bad.name, bad.number = "a", 1, "b", 2
    page = report.html([good, bad])
    toc = re.search(r'<nav class="toc".*?</nav>', page, re.S)
    assert toc is not None
    assert re.findall(r'href="#(\w)"><span class="badge (\w+)">', toc.group(0)) == [
        ("a", "pass"),
        ("b", "fail"),
    ]
    assert "position: sticky" in page
    assert "What happened in this run:</strong> 1 poll ([m1..m3])." in page


def test_each_diagram_fits_its_box() -> None:
    r = result_of(Check("x", 1, 1))
    page = report.html([r])
    width, _ = svg.size(report.trace_of(r))
    assert f'<div class="diagram" style="max-width: {width}px">' in page
    assert "svg.sequence { display: block; width: 100%; height: auto; }" in page


def test_terminal_says_what_happened_and_when_a_scenario_starts_and_ends() -> None:
    r = result_of(Check("x", 1, 1))
    r.number, r.duration = 4, 1.25
    text = terminal.render(r, report.trace_of(r))
    assert "what happened: 1 poll ([m1..m3])." in text
    assert terminal.finished(r) == "[4] x: PASS in 1.2 s"
    spec = SCENARIOS["dead-letter"]
    assert terminal.starting(spec, len(SCENARIOS)) == (
        f"[4/{len(SCENARIOS)}] dead-letter: {spec.title} ({spec.contract}) ..."
    )


def test_dead_letter_topic_alias_in_the_story() -> None:
    events = [
        ev.DeadLettered(C, TP, 1, DLT, 0, 5, 3, ts=1),
        ev.Committed(C, ((TopicPartition(DLT, 0), 0),), ts=2),
    ]
    assert "m2 reached no final outcome" not in " ".join(tell(events, NAMES, alias))
    assert "was dead-lettered to orders-dlt[0]@5" in " ".join(tell(events, NAMES, alias))
