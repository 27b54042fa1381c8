"""Concurrency for I/O-bound handlers (issue 7) against the real broker: per-key and
per-partition order, commits over the contiguous finished prefix only (C1), revocation
mid-flight (C5), and the in-flight bound."""

from __future__ import annotations

import asyncio
import random
import threading
import time
from collections import defaultdict

import pytest
from confluent_kafka import KafkaException

from redrive import App, BackOff, Message, Retry, admin
from redrive.events import Committed, DeadLettered, Event, Paused, Polled

from .helpers import FAST, running, wait_for

pytestmark = pytest.mark.integration


def committed(kafka: str, group: str, topic: str) -> dict[int, int | None]:
    """The group's committed positions; {} while the group coordinator is still loading."""
    try:
        return admin.committed_offsets(kafka, group, topic)
    except KafkaException:
        return {}


class CommitGuard:
    """A bus subscriber that checks, at the moment of every commit, that every record before
    the committed position of its partition reached a final outcome (C1)."""

    def __init__(self, topic: str) -> None:
        self.topic = topic
        self.final: dict[int, set[int]] = defaultdict(set)
        self.violations: list[str] = []
        self.lock = threading.Lock()

    def done(self, partition: int, offset: int) -> None:
        with self.lock:
            self.final[partition].add(offset)

    def __call__(self, event: Event) -> None:
        if isinstance(event, DeadLettered):
            self.done(event.tp.partition, event.offset)
        elif isinstance(event, Committed):
            with self.lock:
                for tp, pos in event.positions:
                    if tp.topic != self.topic:
                        continue
                    missing = set(range(pos)) - self.final[tp.partition]
                    if missing:
                        self.violations.append(f"p{tp.partition} committed {pos}, open {missing}")


def test_c1_key_order_and_contiguous_commits_with_slow_and_failing_handlers(
    kafka, make_topic, names
) -> None:
    topic = make_topic(partitions=3)
    dlt = topic + "-dlt"
    admin.create_topics(kafka, {dlt: 3})
    keys = [f"k{i}" for i in range(12)]
    records = [(keys[i % len(keys)], f"v{i}") for i in range(360)]
    admin.produce(kafka, topic, records)
    ends = admin.end_offsets(kafka, topic)
    group = names.group()
    app = App(kafka, group, kafka=FAST)
    guard = CommitGuard(topic)
    app.bus.subscribe(guard)
    by_key: dict[str, list[tuple[int, int]]] = defaultdict(list)
    failed_once: set[tuple[int, int]] = set()
    active = [0, 0]  # running now, most at once
    lock = threading.Lock()
    rng = random.Random(7)

    @app.listener(topic, concurrency=8, ordering="key", max_poll_records=50,
                  value_deserializer="str", key_deserializer="str",
                  retry=Retry(backoff=BackOff.fixed(0.05, max_attempts=3)))  # fmt: skip
    def handle(msg: Message) -> None:
        with lock:
            active[0] += 1
            active[1] = max(active[1], active[0])
            by_key[msg.key].append((msg.partition, msg.offset))
        try:
            time.sleep(rng.choice((0.0, 0.001, 0.01, 0.03)))
            n = int(msg.value[1:])
            if n % 97 == 0:
                raise ValueError(f"poison {n}")  # fatal: straight to the dead-letter topic
            if n % 13 == 0 and (msg.partition, msg.offset) not in failed_once:
                failed_once.add((msg.partition, msg.offset))
                raise RuntimeError(f"flaky {n}")  # retried in its lane, then succeeds
        finally:
            with lock:
                active[0] -= 1
        guard.done(msg.partition, msg.offset)

    with running(app):
        wait_for(lambda: committed(kafka, group, topic) == ends, timeout=90,
                 what="everything committed")  # fmt: skip
    assert guard.violations == []
    for key, seen in by_key.items():
        firsts = [o for i, (_, o) in enumerate(seen) if (seen[i - 1] if i else None) != seen[i]]
        assert firsts == sorted(firsts), f"{key} handled out of offset order: {seen}"
    assert active[1] > 1  # records really ran at once
    poison = sorted(int(v[1:]) for _, v in records if int(v[1:]) % 97 == 0)
    assert sorted(int(m.value()[1:]) for m in admin.read_all(kafka, dlt)) == poison
    assert failed_once  # some records failed and were retried before their commit


def test_partition_order_with_async_handler(kafka, make_topic, names) -> None:
    topic = make_topic(partitions=4)
    for p in range(4):
        admin.produce(kafka, topic, [f"{p}-{i}" for i in range(40)], partition=p)
    group = names.group()
    app = App(kafka, group, kafka=FAST)
    seen: dict[int, list[int]] = defaultdict(list)
    active = [0, 0]

    @app.listener(topic, concurrency=4, ordering="partition", max_poll_records=100)
    async def handle(msg: Message) -> None:
        active[0] += 1  # one event loop thread: no lock needed
        active[1] = max(active[1], active[0])
        seen[msg.partition].append(msg.offset)
        await asyncio.sleep(0.002)
        active[0] -= 1

    everything = dict.fromkeys(range(4), 40)
    with running(app):
        wait_for(lambda: committed(kafka, group, topic) == everything,
                 timeout=60, what="all committed")  # fmt: skip
    assert {p: offsets for p, offsets in seen.items()} == {p: list(range(40)) for p in range(4)}
    assert active[1] > 1


def test_c5_revocation_mid_flight_commits_only_finished_work(kafka, make_topic, names) -> None:
    topic = make_topic(partitions=2)
    for p in range(2):
        admin.produce(kafka, topic, [f"{p}-{i}" for i in range(6)], partition=p)
    group = names.group()
    release = threading.Event()
    handled_a: list[tuple[int, int]] = []
    handled_b: list[tuple[int, int]] = []

    a = App(kafka, group, kafka=FAST)

    @a.listener(topic, concurrency=4, ordering="partition", drain_timeout=1.0, name="a")
    def handle_a(msg: Message) -> None:
        if msg.offset == 2:  # offset 2 of each partition hangs until the test releases it
            release.wait(60)
        handled_a.append((msg.partition, msg.offset))

    b = App(kafka, group, kafka=FAST)

    @b.listener(topic, concurrency=4, ordering="partition", name="b")
    def handle_b(msg: Message) -> None:
        handled_b.append((msg.partition, msg.offset))

    try:
        with running(a) as rec_a:
            wait_for(lambda: committed(kafka, group, topic) == {0: 2, 1: 2},
                     what="a finished offsets 0 and 1 of both partitions")  # fmt: skip
            with running(b):
                wait_for(lambda: handled_b, timeout=60, what="b to get a partition")
                moved = handled_b[0][0]
                wait_for(lambda: committed(kafka, group, topic).get(moved) == 6,
                         timeout=60, what="b finishing the moved partition")  # fmt: skip
                release.set()
                wait_for(lambda: committed(kafka, group, topic) == {0: 6, 1: 6},
                         timeout=60, what="everything committed")  # fmt: skip
    finally:
        release.set()
    # b started the moved partition at the record a had not finished, not before it (C5)
    assert sorted(o for p, o in handled_b if p == moved)[0] == 2
    assert (moved, 0) not in handled_b and (moved, 1) not in handled_b
    # a never committed past the unfinished record of the partition it gave up
    a_positions = [pos for e in rec_a.of(Committed) for tp, pos in e.positions
                   if tp.partition == moved]  # fmt: skip
    assert a_positions and max(a_positions) == 2


def test_in_flight_records_are_bounded(kafka, make_topic, names) -> None:
    topic = make_topic(partitions=2)
    admin.produce(kafka, topic, [f"v{i}" for i in range(600)])
    group = names.group()
    app = App(kafka, group, kafka=FAST)
    release = threading.Event()
    handled: list[int] = []

    @app.listener(topic, concurrency=2, ordering="none", max_in_flight=30, max_poll_records=10)
    def handle(msg: Message) -> None:
        release.wait(60)
        handled.append(msg.offset)

    with running(app) as rec:
        try:
            wait_for(lambda: rec.of(Paused), what="partitions paused at the bound")
            time.sleep(1.0)  # polls go on while paused; none may hand over more records
            polled = sum(n for e in rec.of(Polled) for _, _, n in e.counts)
            assert handled == []
        finally:
            release.set()
        wait_for(lambda: len(handled) == 600, timeout=60, what="the backlog")
        wait_for(lambda: sum(v or 0 for v in committed(kafka, group, topic).values()) == 600)
    assert 30 <= polled <= 30 + 10 + 10, polled  # the bound + one poll (+ one fetched late)
