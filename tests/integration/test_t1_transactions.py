"""T1: consume, transform and produce exactly once, in Kafka transactions, on the real broker.

A ``read_committed`` reader of the output topic sees every output once, whatever fails or is
killed; what aborted transactions held is visible to ``read_uncommitted`` readers only.
"""

from __future__ import annotations

import os
import random
import signal
import subprocess
import sys
import threading
import time
from collections import Counter, defaultdict
from pathlib import Path

import pytest

from redrive import App, BackOff, Commit, Message, Output, ProducerFenced, Retry, admin
from redrive import headers as h
from redrive.consumer.producer import KafkaOutputs
from redrive.events import Aborted, Failed

from .dlt import header_values
from .helpers import running, wait_for
from .txn import read, values

pytestmark = pytest.mark.integration

FAST = {"session.timeout.ms": 6000, "heartbeat.interval.ms": 500}
CHILD = Path(__file__).with_name("txn_child.py")


def done(kafka: str, group: str, topic: str) -> bool:
    ends = admin.end_offsets(kafka, topic)
    return admin.committed_offsets(kafka, group, topic) == ends


def test_t1_a_transient_failure_mid_poll_shows_nothing_of_the_poll_until_the_retry_succeeds(
    kafka, make_topic, names
) -> None:
    topic, out = make_topic(), make_topic("out")
    admin.produce(kafka, topic, [f"m{i}" for i in range(10)])
    app = App(kafka, names.group(), kafka=FAST)
    failed_once = threading.Event()
    go_on = threading.Event()

    @app.listener(topic, commit=Commit.transaction(),
                  retry=Retry.seek(BackOff.fixed(0.2, max_attempts=3)))  # fmt: skip
    def transform(msg: Message) -> Output:
        if msg.value == b"m6" and not failed_once.is_set():
            # once the outputs of m0..m5 reached the broker (in the open transaction)
            wait_for(lambda: len(read(kafka, out, "read_uncommitted")) == 6, what="outputs")
            failed_once.set()
            raise ConnectionError("downstream unavailable")
        if failed_once.is_set():
            go_on.wait(30)  # hold the retry until the test has looked
        return Output(out, key=msg.raw_key, value=msg.raw_value)

    with running(app) as recorder:
        try:
            wait_for(lambda: recorder.of(Aborted), timeout=30, what="the abort")
            assert values(read(kafka, out)) == []  # m0..m5 were written, then aborted
            aborted = values(read(kafka, out, "read_uncommitted"))
            assert aborted == [f"m{i}".encode() for i in range(6)]
        finally:
            go_on.set()
        wait_for(lambda: done(kafka, app.group_id or "", topic), timeout=30, what="the commit")
    assert [f.offset for f in recorder.of(Failed)] == [6]
    assert values(read(kafka, out)) == [f"m{i}".encode() for i in range(10)]  # each once
    # read_uncommitted also sees the aborted first try of m0..m5
    assert len(read(kafka, out, "read_uncommitted")) == 16


def test_t1_sigkilled_consumers_leave_each_output_once_and_the_poison_record_once(
    kafka, make_topic, names, tmp_path
) -> None:
    """20,000 records over 6 partitions through two consumer processes that are SIGKILLed
    at random moments and restarted; one poison record."""
    topic, out = make_topic(partitions=6), make_topic("out", partitions=6)
    admin.create_topics(kafka, {f"{topic}-dlt": 6})
    group = names.group()
    keys = 60
    records = [(f"k{i % keys}", f"{i}") for i in range(20_000)]
    records[7_777] = ("k37", "poison")
    admin.produce(kafka, topic, records)
    rng = random.Random(16)
    children: dict[int, subprocess.Popen[bytes]] = {}
    logs = tmp_path / "children.log"

    def start(slot: int) -> None:
        argv = [sys.executable, str(CHILD), kafka, topic, group, out, str(slot)]
        with open(logs, "ab") as log:
            children[slot] = subprocess.Popen(argv, stdout=log, stderr=log)

    kills = 0
    try:
        for slot in (0, 1):
            start(slot)
        wait_for(lambda: len(read(kafka, out, "read_uncommitted")) > 500, timeout=60,
                 what="the first outputs")  # fmt: skip
        for _ in range(4):
            threading.Event().wait(rng.uniform(0.2, 1.2))
            slot = rng.choice((0, 1))
            os.kill(children[slot].pid, signal.SIGKILL)
            children[slot].wait(30)
            kills += 1
            start(slot)
        wait_for(lambda: done(kafka, group, topic), timeout=120, what="every record committed")
    finally:
        for child in children.values():
            if child.poll() is None:
                child.send_signal(signal.SIGTERM)
        for child in children.values():
            try:
                child.wait(30)
            except subprocess.TimeoutExpired:
                child.kill()
                child.wait(30)
    committed = read(kafka, out)
    seen = Counter(values(committed))
    expected = [f"out-{v}".encode() for _, v in records if v != "poison"]
    assert sorted(seen) == sorted(expected)
    assert max(seen.values()) == 1  # each output exactly once
    by_key: dict[bytes, list[int]] = defaultdict(list)
    for r in committed:
        by_key[r.key()].append(int(r.value()[4:]))
    assert all(v == sorted(v) for v in by_key.values())  # in order per key
    (dead,) = read(kafka, f"{topic}-dlt")
    assert dead.value() == b"poison"
    assert header_values(dead)[h.DLT_EXCEPTION_FQCN] == "ValueError"
    uncommitted = Counter(values(read(kafka, out, "read_uncommitted")))
    duplicates = sum(n - 1 for n in uncommitted.values())
    print(f"\nT1 SIGKILL: {len(records)} records, {kills} kills, {len(seen)} outputs seen once "
          f"by read_committed, {duplicates} duplicates seen by read_uncommitted")  # fmt: skip
    assert duplicates > 0  # kills landed inside transactions: their outputs were aborted


def test_t1_a_second_consumer_joining_mid_transaction_causes_no_duplicate_and_no_loss(
    kafka, make_topic, names
) -> None:
    topic, out = make_topic(partitions=4), make_topic("out", partitions=4)
    admin.produce(kafka, topic, [(f"k{i % 8}", f"{i}") for i in range(3000)])
    group = names.group()
    apps = [App(kafka, group, kafka=FAST) for _ in range(2)]
    inside = threading.Event()

    for app in apps:

        @app.listener(topic, commit=Commit.transaction(), max_poll_records=200)
        def transform(msg: Message) -> Output:
            inside.set()
            threading.Event().wait(0.001)
            return Output(out, key=msg.raw_key, value=msg.raw_value)

    with running(apps[0]) as first:
        wait_for(inside.is_set, timeout=30, what="the first transaction")
        with running(apps[1]) as second:
            wait_for(lambda: done(kafka, group, topic), timeout=60, what="every record committed")
    handled_by_both = all(
        any(e.kind == "Committed" and e.reason == "poll" for e in r.events) for r in (first, second)
    )
    assert handled_by_both  # the second consumer took partitions over mid-stream
    seen = Counter(values(read(kafka, out)))
    assert sorted(seen) == sorted(f"{i}".encode() for i in range(3000))
    assert max(seen.values()) == 1


def test_t1_a_fenced_producer_stops_its_listener_and_the_other_instance_carries_on(
    kafka, make_topic, names
) -> None:
    topic, out = make_topic(partitions=2), make_topic("out", partitions=2)
    group = names.group()
    admin.produce(kafka, topic, [f"{i}" for i in range(200)])
    apps = [App(kafka, group, kafka=FAST) for _ in range(2)]
    for app in apps:

        @app.listener(topic, commit=Commit.transaction(transactional_id="billing"))
        def transform(msg: Message) -> Output:
            return Output(out, key=msg.raw_key, value=msg.raw_value)

    first, second = apps
    first.start()
    try:
        wait_for(lambda: done(kafka, group, topic), timeout=30, what="the first records")
        with running(second):  # same transactional id: its producer fences the first's
            admin.produce(kafka, topic, [f"{i}" for i in range(200, 400)])
            wait_for(lambda: done(kafka, group, topic), timeout=60, what="every record committed")
    finally:
        first.stop()
        with pytest.raises(ProducerFenced, match="fenced") as err:
            first.join(30)
    assert "another producer with the same transactional.id" in str(err.value)
    seen = Counter(values(read(kafka, out)))
    assert sorted(seen) == sorted(f"{i}".encode() for i in range(400))
    assert max(seen.values()) == 1


def test_t1_retry_topic_hops_are_written_in_the_transaction(kafka, make_topic, names) -> None:
    from redrive import RetryTopics

    topic, out = make_topic(), make_topic("out")
    admin.produce(kafka, topic, ["a", "late", "c"])
    group = names.group()
    app = App(kafka, group, kafka=FAST)
    tries: list[str] = []

    @app.listener(topic, commit=Commit.transaction(), retry_topics=RetryTopics((0.2,)),
                  missing_topics="create")  # fmt: skip
    def transform(msg: Message) -> Output:
        tries.append(msg.topic)
        if msg.value == b"late" and msg.topic == topic:
            raise LookupError("not created yet")
        return Output(out, value=msg.raw_value)

    with running(app):
        wait_for(lambda: len(read(kafka, out)) == 3, timeout=60, what="three outputs")
        wait_for(lambda: done(kafka, group, topic), timeout=30, what="the main commit")
    assert sorted(values(read(kafka, out))) == [b"a", b"c", b"late"]
    assert values(read(kafka, f"{topic}-retry")) == [b"late"]  # one hop, committed once
    assert tries.count(f"{topic}-retry") == 1


def test_t1_a_consumer_that_lost_its_partitions_cannot_commit_its_stale_transaction(
    kafka, make_topic, names
) -> None:
    """The first consumer is stuck in a handler past max.poll.interval.ms: the group moves
    its partition to the second, which handles everything. When the first comes back, its
    transaction carries the old generation (KIP-447) and is refused."""
    topic, out = make_topic(), make_topic("out")
    admin.produce(kafka, topic, [f"m{i}" for i in range(10)])
    group = names.group()
    slow = {"session.timeout.ms": 3000, "heartbeat.interval.ms": 500, "max.poll.interval.ms": 3000}
    stuck, free = threading.Event(), threading.Event()
    first, second = App(kafka, group, kafka=slow), App(kafka, group, kafka=FAST)

    @first.listener(topic, commit=Commit.transaction(), max_poll_records=10, name="first")
    def transform_first(msg: Message) -> Output:
        if not stuck.is_set():
            stuck.set()
            free.wait(30)
        return Output(out, value=msg.raw_value)

    @second.listener(topic, commit=Commit.transaction(), name="second")
    def transform_second(msg: Message) -> Output:
        return Output(out, value=msg.raw_value)

    with running(first) as recorder:
        wait_for(stuck.is_set, what="the first consumer stuck in its handler")
        with running(second):
            wait_for(lambda: done(kafka, group, topic), timeout=60, what="the second's commit")
            free.set()
            wait_for(lambda: recorder.of(Aborted), timeout=30, what="the stale transaction")
    seen = Counter(values(read(kafka, out)))
    assert sorted(seen) == sorted(f"m{i}".encode() for i in range(10))
    assert max(seen.values()) == 1
    assert len(read(kafka, out, "read_uncommitted")) >= 11  # the first's aborted outputs


def test_t1_an_abort_just_after_a_commit_keeps_the_producer(kafka, make_topic, names) -> None:
    """A handler that writes an output and fails right after the previous poll committed:
    the abort comes while librdkafka is still adding the output's partition to the new
    transaction (the coordinator is completing the last one). It must abort, not turn the
    producer fatal (INVALID_TXN_STATE, found by `redrive chaos --mode exactly-once`)."""
    out = make_topic("out")
    outputs = KafkaOutputs({"bootstrap.servers": kafka}, names.group("txn"), lambda: None)
    outputs.start()
    try:
        for _ in range(10):
            outputs.send(Output(out, value=b"kept"))
            outputs.commit({})
            outputs.send(Output(out, value=b"aborted"))
            time.sleep(0.001)  # the partition's registration is sent, not yet answered
            outputs.abort()
    finally:
        outputs.close()
    assert values(read(kafka, out)) == [b"kept"] * 10
