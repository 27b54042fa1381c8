"""The lab's trace -> diagram layout, the SVG, the verdict and the event codec (no broker)."""

from __future__ import annotations

import json
import re

import pytest

from redrive import events as ev
from redrive.lab import report, svg, terminal
from redrive.lab.codec import LabNote, from_dict, to_dict
from redrive.lab.scenarios import Check, Result, Row, rows
from redrive.lab.trace import LISTENER, OFFSETS, Arrow, Note, build, commit_label
from redrive.message import TopicPartition

T = "lab-x-orders-abc123"
DLT = f"{T}-dlt"
TP = TopicPartition(T, 0)
NAMES = {(T, 0, i): f"m{i + 1}" for i in range(3)}
META = json.dumps({"redrive": 1, "offset": 1, "attempts": 2, "first_failure": 1.0})


def alias(topic: str) -> str:
    return {T: "orders", DLT: "orders-dlt"}.get(topic, topic)


def dead_letter_run() -> list[ev.Event]:
    """m1 ok, m2 fails twice (seek retry), its dead-letter write fails once, then succeeds."""
    t = iter(range(100, 200))
    c = "consumer"
    return [
        ev.Started(c, "g", (T,), ts=next(t)),
        ev.Assigned(c, (TP,), ts=next(t)),
        ev.Polled(c, ((TP, 0, 3),), ts=next(t)),
        ev.Delivered(c, ((TP, 0, 1),), ts=next(t)),
        ev.Succeeded(c, TP, 0, ts=next(t)),
        ev.Delivered(c, ((TP, 1, 1),), ts=next(t)),
        ev.Failed(c, TP, 1, 1, "RuntimeError", "boom", ts=next(t)),
        ev.Committed(c, ((TP, 1),), ((TP, META),), "attempt", ts=next(t)),
        ev.BackingOff(c, TP, 1, 1, 0.5, ts=next(t)),
        ev.Paused(c, (TP,), 9.0, ts=next(t)),
        ev.Seeked(c, TP, 1, ts=next(t)),
        ev.Resumed(c, (TP,), ts=next(t)),
        ev.RecoveryRetrying(c, TP, 1, "dead-letter topic missing", ts=next(t)),
        LabNote(c, "lab creates orders-dlt", ts=next(t)),
        ev.DeadLettered(c, TP, 1, DLT, 0, 0, 2, ts=next(t)),
        ev.Delivered(c, ((TP, 2, 1),), ts=next(t)),
        ev.Succeeded(c, TP, 2, ts=next(t)),
        ev.Committed(c, ((TP, 3),), ts=next(t)),
        ev.Stopped(c, ts=next(t)),
    ]


def test_participants_in_order_topic_client_listener_offsets_dead_letter() -> None:
    trace = build(dead_letter_run(), NAMES, alias)
    assert [(p.id, p.label) for p in trace.participants] == [
        (f"topic:{T}", "orders"),
        ("client:consumer", "Kafka client (consumer)"),
        (LISTENER, "listener"),
        (OFFSETS, "consumer offsets"),
        (f"dlt:{DLT}", "orders-dlt"),
    ]


def test_arrows_follow_the_events_in_order() -> None:
    trace = build(dead_letter_run(), NAMES, alias)
    assert [(a.kind, a.label) for a in trace.arrows] == [
        ("poll", "poll"),
        ("records", "records m1, m2, m3"),
        ("handle", "handle m1"),
        ("ok", "ok m1"),
        ("handle", "handle m2"),
        ("exception", "RuntimeError at m2"),
        ("commit", "commit orders[0]=1 (attempt 2)"),
        ("pause", "pause [0]"),
        ("seek", "seek [0] to 1 (m2)"),
        ("resume", "resume [0]"),
        ("dead-letter-failed", "dead-letter m2 failed"),
        ("dead-letter", "dead-letter m2"),
        ("ack", "ack [0]@0"),
        ("handle", "handle m3"),
        ("ok", "ok m3"),
        ("commit", "commit orders[0]=3"),
    ]
    client, topic = "client:consumer", f"topic:{T}"
    directions = {a.kind: (a.src, a.dst) for a in trace.arrows}
    assert directions["poll"] == (client, topic)
    assert directions["records"] == (topic, client)
    assert directions["handle"] == (client, LISTENER)
    assert directions["exception"] == (LISTENER, client)
    assert directions["commit"] == (client, OFFSETS)
    assert directions["dead-letter-failed"] == (client, f"dlt:{DLT}")  # the topic it later reached
    assert directions["ack"] == (f"dlt:{DLT}", client)
    assert [a.t for a in trace.arrows] == sorted(a.t for a in trace.arrows)


def test_notes_sit_on_the_client_lifeline() -> None:
    trace = build(dead_letter_run(), NAMES, alias)
    notes = [(n.kind, n.text, n.at) for n in trace.steps if isinstance(n, Note)]
    assert notes == [
        ("started", "started, joining the group", "client:consumer"),
        ("assigned", "assigned orders[0]", "client:consumer"),
        ("back-off", "back-off 0.50 s (m2)", "client:consumer"),
        ("lab", "lab creates orders-dlt", "client:consumer"),
        ("stopped", "stopped", "client:consumer"),
    ]
    assert trace.steps[0].t == 0.0 and trace.duration == 18.0


def test_commit_label_lists_each_partition_and_position() -> None:
    a, b = TopicPartition("orders", 0), TopicPartition("payments", 2)
    e = ev.Committed("c", ((a, 3), (b, 17)))
    assert commit_label(e) == "commit orders[0]=3, payments[2]=17"
    meta = json.dumps({"redrive": 1, "offset": 17, "attempts": 4, "first_failure": 0})
    assert commit_label(ev.Committed("c", ((b, 17),), ((b, meta),))) == (
        "commit payments[2]=17 (attempt 4)"
    )


def test_two_consumers_get_two_client_lifelines_and_batches_one_arrow() -> None:
    tp1 = TopicPartition(T, 1)
    events = [
        ev.Polled("consumer-1", ((TP, 0, 2), (tp1, 5, 1)), ts=1),
        ev.Delivered("consumer-1", ((TP, 0, 1), (TP, 1, 1), (tp1, 5, 1)), ts=2),
        LabNote("consumer-1", "SIGKILL", ts=3),
        ev.Assigned("consumer-2", (TP, tp1), ts=4),
        ev.Delivered("consumer-2", ((TP, 0, 2),), ts=5),
    ]
    trace = build(events, NAMES, alias)
    assert [p.id for p in trace.participants] == [
        f"topic:{T}[0]",  # a lifeline per partition: the topic has two
        f"topic:{T}[1]",
        "client:consumer-1",
        "client:consumer-2",
        LISTENER,
    ]
    assert [p.label for p in trace.participants][:2] == ["orders[0]", "orders[1]"]
    assert [(a.label, a.src, a.dst) for a in trace.arrows] == [
        ("poll", "client:consumer-1", f"topic:{T}[0]"),  # crosses every lifeline it reads
        ("records m1, m2", f"topic:{T}[0]", "client:consumer-1"),
        ("records orders[1]@5", f"topic:{T}[1]", "client:consumer-1"),
        ("handle [m1, m2, orders[1]@5]", "client:consumer-1", LISTENER),
        ("handle m1 (attempt 2)", "client:consumer-2", LISTENER),
    ]


def test_more_than_three_records_are_shown_as_a_range_per_partition() -> None:
    a, b = TopicPartition("orders", 0), TopicPartition("orders", 1)
    names = {("orders", 0, i): f"a{i + 1}" for i in range(3)}
    names |= {("orders", 1, i): f"b{i + 1}" for i in range(3)}
    names |= {("payments", 0, i): f"p{i + 1}" for i in range(3)}
    p = TopicPartition("payments", 0)
    polled = ev.Polled("c", ((b, 0, 3), (a, 0, 3), (p, 0, 3)), ts=1)
    assert [x.label for x in build([polled], names).arrows] == [
        "poll",
        "records b1, b2, b3",  # one arrow per partition's lifeline
        "records a1, a2, a3",
        "records p1, p2, p3",
    ]
    delivered = ev.Delivered("c", tuple((x, o, 1) for x in (a, b) for o in range(3)), ts=2)
    assert build([delivered], names).arrows[0].label == "handle [a1..a3, b1..b3]"


def test_a_topic_with_one_partition_keeps_one_lifeline_and_several_get_one_each() -> None:
    a, b = TopicPartition("orders", 0), TopicPartition("orders", 1)
    p = TopicPartition("payments", 0)
    events = [
        ev.Started("c", "g", ("orders", "payments"), ts=0),
        ev.Assigned("c", (a, b, p), ts=1),
        ev.Paused("c", (b,), 9.0, ts=2),
        ev.Seeked("c", b, 4, ts=3),
    ]
    trace = build(events)
    assert [p.id for p in trace.participants if p.kind == "topic"] == [
        "topic:orders[0]",
        "topic:orders[1]",
        "topic:payments",
    ]
    assert [(x.kind, x.dst) for x in trace.arrows] == [
        ("pause", "topic:orders[1]"),
        ("seek", "topic:orders[1]"),
    ]


def test_a_retry_topic_is_one_lifeline_on_the_right_also_when_it_is_read() -> None:
    retry = f"{T}-retry-0"
    rtp = TopicPartition(retry, 0)
    events = [
        ev.Started("consumer", "g", (T,), ts=1),
        ev.Started("consumer-retry", "g-retry", (retry,), ts=1),
        ev.Delivered("consumer", ((TP, 1, 1),), ts=2),
        ev.Failed("consumer", TP, 1, 1, "RuntimeError", "boom", ts=3),
        ev.RetryHop("consumer", TP, 1, retry, 2, 9.5, ts=4),
        ev.Polled("consumer-retry", ((rtp, 0, 1),), ts=5),
        ev.Delivered("consumer-retry", ((rtp, 0, 2),), ts=6),
        ev.Succeeded("consumer-retry", rtp, 0, ts=7),
        ev.Committed("consumer-retry", ((rtp, 1),), ts=8),
    ]
    names = {**NAMES, (retry, 0, 0): "m2"}
    trace = build(events, names, lambda t: "orders-retry-0" if t == retry else alias(t))
    assert [(p.id, p.kind) for p in trace.participants] == [
        (f"topic:{T}", "topic"),
        ("client:consumer", "client"),
        ("client:consumer-retry", "client"),
        (LISTENER, "listener"),
        (OFFSETS, "offsets"),
        (f"retry:{retry}", "retry"),
    ]
    hop, poll, records = trace.arrows[2:5]
    assert (hop.kind, hop.label, hop.dst) == (
        "retry-hop",
        "retry hop m2 (attempt 2)",
        f"retry:{retry}",
    )
    assert (poll.src, poll.dst) == ("client:consumer-retry", f"retry:{retry}")
    assert (records.label, records.src) == ("records m2", f"retry:{retry}")
    assert trace.arrows[-1].label == "commit orders-retry-0[0]=1"
    assert [p.label for p in trace.participants][-1] == "orders-retry-0"


def test_a_record_not_due_yet_is_drawn_as_a_wait_not_a_handling() -> None:
    events = [
        ev.NotDue("c", TP, 1, 2.93, ts=2),  # the loop never handed it over
        ev.Delivered("c", ((TP, 1, 2),), ts=3),
        ev.Failed("c", TP, 1, 2, "RuntimeError", "boom", ts=4),
        ev.BackingOff("c", TP, 1, 2, 1.0, ts=5),
    ]
    steps = build(events, NAMES).steps
    notes = [s.text for s in steps if isinstance(s, Note)]
    assert notes == ["m2 not due yet: wait 0.93 s", "back-off 1.00 s (m2)"]
    assert [s.label for s in steps if isinstance(s, Arrow) and s.kind == "handle"] == [
        "handle m2 (attempt 2)"
    ]


def test_svg_has_one_group_per_arrow_and_unique_markers() -> None:
    trace = build(dead_letter_run(), NAMES, alias)
    drawn = svg.render(trace, ident="s7")
    assert drawn.count('class="arrow"') == len(trace.arrows) == 16
    assert drawn.count('class="note"') == len(trace.steps) - len(trace.arrows)
    assert drawn.count('class="participant"') == len(trace.participants)
    assert set(re.findall(r'marker-end="url\(#([^)]+)\)"', drawn)) <= set(
        re.findall(r'<marker id="([^"]+)"', drawn)
    )
    assert all(m.startswith("s7-") for m in re.findall(r'<marker id="([^"]+)"', drawn))
    width, height = (int(v) for v in re.search(r'width="(\d+)" height="(\d+)"', drawn).groups())  # type: ignore[union-attr]
    assert width > 5 * svg.COLUMN and height > len(trace.steps) * svg.ROW
    assert "commit orders[0]=1 (attempt 2)" in drawn


def test_svg_breaks_a_long_client_name_into_two_lines() -> None:
    drawn = svg.render(build([ev.Stopped("consumer-retry", ts=1)]))
    assert '>Kafka client<tspan x="' in drawn and ">(consumer-retry)</tspan>" in drawn


def test_svg_escapes_text() -> None:
    events = [ev.Failed("c<1>", TP, 0, 1, "Bad<Error>", "x & y", ts=1)]
    drawn = svg.render(build(events))
    assert "Bad&lt;Error&gt;" in drawn and "<Error>" not in drawn


def result_of(*checks: Check) -> Result:
    r = Result("x", "X", "C1", "story", events=dead_letter_run(), checks=list(checks))
    r.names = dict(NAMES)
    r.aliases = {T: "orders", DLT: "orders-dlt"}
    r.committed = {T: {0: 3}}
    r.rows = rows(r)
    return r


def test_verdict_passes_only_when_every_check_matches() -> None:
    good = result_of(Check("committed", {0: 3}, {0: 3}))
    bad = result_of(Check("committed", {0: 3}, {0: 3}), Check("handled", ["m1"], ["m1", "m1"]))
    assert good.passed and not bad.passed
    assert bad.differences == ["handled: expected [m1], observed [m1, m1]"]
    assert not result_of().passed  # no check at all proves nothing
    crashed = result_of(Check("committed", 1, 1))
    crashed.error = "LabFailure: timed out"
    assert not crashed.passed and crashed.differences[0] == "LabFailure: timed out"
    assert terminal.verdict_line(bad).startswith("verdict: FAIL (C1): handled: expected")


def test_rows_count_handling_and_final_outcome() -> None:
    assert result_of().rows == [
        Row("m1", T, 0, 0, 1, "handled"),
        Row("m2", T, 0, 1, 1, "dead-lettered to orders-dlt[0]@0"),
        Row("m3", T, 0, 2, 1, "handled"),
    ]


def test_report_is_self_contained_and_json_round_trips() -> None:
    r = result_of(Check("dead letters", [b"m2"], [b"m2"]))
    page = report.html([r], servers="127.0.0.1:9092", total=1.0)
    assert "Content-Security-Policy" in page and "default-src 'none'" in page
    assert not re.search(r'(src|href)="(https?:)?//', page)
    assert "<script" not in page
    assert page.count('class="arrow"') == len(report.trace_of(r).arrows)
    data = json.loads(json.dumps(report.as_json([r])))
    assert data["passed"] is True
    assert data["scenarios"][0]["checks"][0]["observed"] == ["m2"]
    assert [from_dict(e) for e in data["scenarios"][0]["events"]] == r.events


@pytest.mark.parametrize("event", dead_letter_run(), ids=lambda e: e.kind)
def test_codec_round_trip_keeps_the_class(event: ev.Event) -> None:
    back = from_dict(json.loads(json.dumps(to_dict(event))))
    assert back == event and type(back) is type(event)


def test_codec_rejects_unknown_kinds() -> None:
    with pytest.raises(ValueError, match="unknown event kind 'Nope'"):
        from_dict({"kind": "Nope", "listener": "x", "ts": 1.0})


def test_terminal_timeline_has_one_line_per_step() -> None:
    trace = build(dead_letter_run(), NAMES, alias)
    lines = terminal.timeline(trace)
    assert len(lines) == len(trace.steps)
    assert any("consumer -> consumer offsets  commit orders[0]=3" in line for line in lines)
    assert isinstance(trace.steps[2], Arrow)
