"""Scenarios 1-6 of DESIGN.md section 1 against a real broker (C1-C6, F1-F3).

Records are produced before the consumer starts and max_poll_records=3, so each poll of one
partition returns three records: m1, m2, m3 are offsets 0, 1, 2.
"""

from __future__ import annotations

import pytest

from redrive import App, BackOff, BatchFailed, Message, Retry, admin
from redrive.events import Committed, Failed, Polled

from .helpers import FAST, commits, running, wait_for

pytestmark = pytest.mark.integration

NO_RETRY_REWIND = Retry(backoff=BackOff.fixed(0.0, max_attempts=None))


def test_scenario1_success_commits_after_the_batch_c2(kafka, make_topic, names) -> None:
    topic = make_topic()
    admin.produce(kafka, topic, [f"m{i}" for i in range(1, 7)])
    group = names.group()
    app = App(kafka, group, kafka=FAST)
    seen: list[tuple[str, list[dict[int, int]]]] = []

    @app.listener(topic, max_poll_records=3, value_deserializer="str")
    def handle(msg: Message) -> None:
        seen.append((msg.value, commits(rec)))

    with running(app) as rec:
        wait_for(lambda: len(seen) == 6 and admin.committed_offsets(kafka, group, topic) == {0: 6})
    assert [v for v, _ in seen] == ["m1", "m2", "m3", "m4", "m5", "m6"]
    # nothing committed while m1..m3 were handled; position 3 committed before m4
    assert [c for _, c in seen[:3]] == [[], [], []]
    assert seen[3][1] == [{0: 3}]
    assert commits(rec)[:2] == [{0: 3}, {0: 6}]


def test_scenario3_exception_commits_prefix_and_rewinds_f1(kafka, make_topic, names) -> None:
    topic = make_topic()
    admin.produce(kafka, topic, [f"m{i}" for i in range(1, 7)])
    group = names.group()
    app = App(kafka, group, kafka=FAST)
    seen: list[str] = []

    @app.listener(topic, max_poll_records=3, value_deserializer="str", retry=NO_RETRY_REWIND)
    def handle(msg: Message) -> None:
        seen.append(msg.value)
        if msg.value == "m2" and seen.count("m2") == 1:
            raise RuntimeError("m2 fails once")

    with running(app) as rec:
        wait_for(lambda: admin.committed_offsets(kafka, group, topic) == {0: 6})
    assert seen == ["m1", "m2", "m2", "m3", "m4", "m5", "m6"]
    polls = [[(tp.partition, first, n) for tp, first, n in e.counts] for e in rec.of(Polled)]
    assert polls[:2] == [[(0, 0, 3)], [(0, 1, 3)]]  # the next poll starts at m2: m2, m3, m4
    assert commits(rec)[0] == {0: 1}  # m1 committed before the retry


def test_scenario4_error_handled_in_listener_is_success_f2(kafka, make_topic, names) -> None:
    topic = make_topic()
    admin.produce(kafka, topic, [f"m{i}" for i in range(1, 4)])
    group = names.group()
    app = App(kafka, group, kafka=FAST)
    seen: list[str] = []
    dead: list[str] = []

    @app.listener(topic, max_poll_records=3, value_deserializer="str")
    def handle(msg: Message) -> None:
        seen.append(msg.value)
        try:
            if msg.value == "m2":
                raise RuntimeError("bad m2")
        except RuntimeError:
            dead.append(msg.value)  # e.g. the listener sends it somewhere itself

    with running(app) as rec:
        wait_for(lambda: admin.committed_offsets(kafka, group, topic) == {0: 3})
    assert seen == ["m1", "m2", "m3"]
    assert dead == ["m2"]
    assert not rec.of(Failed)
    assert commits(rec) == [{0: 3}]


def test_scenario5_failure_on_one_partition_leaves_others_alone_c6(
    kafka, make_topic, names
) -> None:
    orders = make_topic("orders", partitions=2)
    payments = make_topic("payments")
    admin.produce(kafka, orders, ["a1", "a2", "a3"], partition=0)
    admin.produce(kafka, orders, ["b1", "b2", "b3"], partition=1)
    admin.produce(kafka, payments, ["p1", "p2", "p3"])
    group = names.group()
    app = App(kafka, group, kafka=FAST)
    seen: list[str] = []
    release = {"a2": False}

    @app.listener([orders, payments], max_poll_records=9, value_deserializer="str",
                  retry=Retry(backoff=BackOff.fixed(1.0, max_attempts=None)))  # fmt: skip
    def handle(msg: Message) -> None:
        seen.append(msg.value)
        if msg.value == "a2" and not release["a2"]:
            raise RuntimeError("a2 not yet")

    with running(app) as rec:
        wait_for(
            lambda: (
                admin.committed_offsets(kafka, group, orders) == {0: 1, 1: 3}
                and admin.committed_offsets(kafka, group, payments) == {0: 3}
            ),
            what="other partitions committed while a2 waits",
        )
        assert {"b1", "b2", "b3", "p1", "p2", "p3"} <= set(seen)
        assert "a3" not in seen  # the failed partition is held at a2
        release["a2"] = True
        wait_for(lambda: admin.committed_offsets(kafka, group, orders) == {0: 3, 1: 3})
    assert [v for v in seen if v.startswith("a")][-2:] == ["a2", "a3"]
    assert seen.count("b1") == seen.count("p1") == 1  # nothing of the others repeated
    # every commit that touched orders[0] before the release stopped at a2
    for e in rec.of(Committed):
        for tp, pos in e.positions:
            assert not (tp.topic == orders and tp.partition == 0 and pos > 1 and "a3" not in seen)


def test_scenario6_batch_listener_whole_batch_and_index_f3(kafka, make_topic, names) -> None:
    topic = make_topic()
    admin.produce(kafka, topic, [f"m{i}" for i in range(1, 7)])
    group = names.group()
    app = App(kafka, group, kafka=FAST)
    calls: list[list[str]] = []

    @app.batch_listener(topic, max_poll_records=3, value_deserializer="str",
                        retry=Retry(backoff=BackOff.fixed(0.0, max_attempts=None)))  # fmt: skip
    def handle(batch: list[Message]) -> None:
        values = [m.value for m in batch]
        calls.append(values)
        if values[0] == "m1" and len(calls) == 1:
            raise RuntimeError("no index: whole batch again")
        if "m5" in values and sum("m5" in c for c in calls) == 1:
            raise BatchFailed(index=values.index("m5"))

    with running(app) as rec:
        wait_for(lambda: admin.committed_offsets(kafka, group, topic) == {0: 6})
    assert calls[:2] == [["m1", "m2", "m3"], ["m1", "m2", "m3"]]
    assert calls[2] == ["m4", "m5", "m6"]
    assert calls[3][0] == "m5"  # retry starts at the named record
    assert {0: 4} in commits(rec)  # m4 (before the named record) committed on its own
    handled = [v for c in calls for v in c]
    assert handled.count("m4") == 1 and handled.count("m1") == 2
