"""Share groups (KIP-932, S1) against the real broker: members sharing one partition, a
released record redelivered to the other member with its delivery count, a poison record
dead-lettered then rejected at the limit, a SIGKILLed member's records back after the lock.
"""

from __future__ import annotations

import struct
import threading
import time
from collections import Counter
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from pathlib import Path

import pytest

from redrive import admin
from redrive.app import App
from redrive.errors import BatchFailed, ShareGroupsUnavailable
from redrive.events import Acknowledged, Delivered, Recorder, Started
from redrive.headers import DLT_ORIGINAL_OFFSET, REDRIVE_ATTEMPTS
from redrive.lab.child import Child
from redrive.message import Message
from redrive.retry.classify import Classifier
from redrive.retry.policy import Retry
from redrive.share import ShareGroup

pytestmark = pytest.mark.integration


def wait_for(check: Callable[[], bool], what: str, timeout: float = 60.0) -> None:
    deadline = time.monotonic() + timeout
    while not check():
        assert time.monotonic() < deadline, f"timed out waiting for {what}"
        time.sleep(0.02)


@contextmanager
def running(*apps: App) -> Iterator[None]:
    for app in apps:
        app.start()
    try:
        yield
    finally:
        for app in apps:
            app.stop()
        for app in apps:
            app.join(60)


def deliveries(rec: Recorder, offset: int) -> list[tuple[str, int]]:
    """(member, delivery count) of each hand-over of the record at `offset`."""
    return [(e.listener, a) for e in rec.of(Delivered) for _, o, a in e.records if o == offset]


def accepted(rec: Recorder) -> Counter[int]:
    return Counter(e.offset for e in rec.of(Acknowledged) if e.outcome == "accept")


def test_s1_two_members_share_one_partition_and_a_released_record_goes_to_the_other(
    kafka: str, make_topic: Callable[..., str], names: object
) -> None:
    topic = make_topic("jobs")
    group = f"share-{topic}"
    values = [f"r{i}" for i in range(30)]
    rec = Recorder()
    apps = []
    failed_in: list[str] = []

    for member in ("member-a", "member-b"):
        app = App(kafka, group)
        app.bus.subscribe(rec)

        @app.share_listener(topic, name=member, max_poll_records=5, value_deserializer="str")
        def handle(msg: Message, app: App = app, member: str = member) -> None:
            time.sleep(0.05)
            if msg.value == "r0":  # held until the other member works on the partition too
                wait_for(lambda: len({e.listener for e in rec.of(Delivered)}) == 2,
                         "both members handling records")  # fmt: skip
            if msg.value == "r20" and msg.attempt == 1:
                failed_in.append(member)
                app.stop()  # this member leaves: its release must reach the other one
                raise ConnectionError("downstream unavailable")

        apps.append(app)
    with running(*apps):
        admin.produce(kafka, topic, values, batch_each=True)
        wait_for(lambda: len(accepted(rec)) == len(values), "every record accepted")
    counts = accepted(rec)
    assert set(counts) == set(range(30)) and set(counts.values()) == {1}, counts
    members = Counter(e.listener for e in rec.of(Delivered))
    assert members["member-a"] > 0 and members["member-b"] > 0, members
    other = "member-b" if failed_in == ["member-a"] else "member-a"
    assert deliveries(rec, 20) == [(failed_in[0], 1), (other, 2)]
    releases = [(e.listener, e.delivery) for e in rec.of(Acknowledged)
                if e.offset == 20 and e.outcome == "release"]  # fmt: skip
    assert releases == [(failed_in[0], 1)]


def test_s1_poison_record_dead_lettered_then_rejected_one_delivery_before_the_limit(
    kafka: str, make_topic: Callable[..., str]
) -> None:
    topic = make_topic("jobs")
    dlt = f"{topic}-dlt"
    values = ["ok1", "poison", "ok2", "fatal", "ok3"]
    rec = Recorder()
    app = App(kafka, f"share-{topic}")
    app.bus.subscribe(rec)

    @app.share_listener(
        topic, value_deserializer="str", share_group=ShareGroup(delivery_limit=3),
        retry=Retry(classifier=Classifier(retryable=(ConnectionError,))),
    )  # fmt: skip
    def handle(msg: Message) -> None:
        if msg.value == "poison":
            raise ConnectionError("downstream unavailable")
        if msg.value == "fatal":
            raise KeyError("no such customer")

    with running(app):
        admin.produce(kafka, topic, values)
        wait_for(lambda: len(admin.read_all(kafka, dlt)) == 2, "two dead letters")
        wait_for(lambda: len([e for e in rec.of(Acknowledged) if e.outcome == "reject"]) == 2,
                 "two rejects")  # fmt: skip
    assert [a for _, a in deliveries(rec, 1)] == [1, 2]  # limit 3: dead-lettered at 2
    assert [a for _, a in deliveries(rec, 3)] == [1]  # fatal: at once
    acks = [(e.offset, e.outcome, e.delivery) for e in rec.of(Acknowledged)]
    assert sorted(acks) == [(0, "accept", 1), (1, "reject", 2), (1, "release", 1),
                            (2, "accept", 1), (3, "reject", 1), (4, "accept", 1)]  # fmt: skip
    letters = {m.value().decode(): dict(m.headers()) for m in admin.read_all(kafka, dlt)}
    assert set(letters) == {"poison", "fatal"}
    poison = letters["poison"]
    assert struct.unpack(">q", poison[DLT_ORIGINAL_OFFSET])[0] == 1
    assert poison["kafka_dlt-exception-fqcn"] == b"ConnectionError"
    assert poison["kafka_dlt-original-consumer-group"] == f"share-{topic}".encode()
    assert struct.unpack(">i", poison[REDRIVE_ATTEMPTS])[0] == 2
    assert letters["fatal"]["kafka_dlt-exception-fqcn"] == b"KeyError"


@pytest.mark.parametrize("how", ["SIGKILL", "SIGSTOP"])
def test_s1_records_held_by_a_dead_or_frozen_member_come_back_and_nothing_is_lost(
    kafka: str, make_topic: Callable[..., str], tmp_path: Path, how: str
) -> None:
    """SIGKILL: the broker releases the dead member's records when its connection closes.
    SIGSTOP: the member keeps its connection and its locks; the records come back when
    their acquisition lock (2 s here) expires, not before."""
    topic = make_topic("jobs")
    group = f"share-{topic}"
    values = [f"r{i}" for i in range(8)]
    admin.produce(kafka, topic, values)
    lock_duration = 2.0
    kwargs = {"servers": kafka, "group": group, "name": "member-a", "topic": topic,
              "hold": "r2", "lock_duration": lock_duration}  # fmt: skip
    rec = Recorder()
    seen: list[tuple[str, int, float]] = []
    lock = threading.Lock()
    with Child("redrive.lab.share:holding_member", kwargs, tmp_path, name="a") as child:
        wait_for(lambda: any(o == 2 for e in child.events() if isinstance(e, Delivered)
                             for _, o, _ in e.records), "r2 held by member-a")  # fmt: skip
        # the records were acquired during the member's poll, after it started (its Polled
        # event comes after the acquisition, so it is no lower bound)
        acquired = min(e.ts for e in child.events() if isinstance(e, Started))
        (child.kill if how == "SIGKILL" else child.freeze)()
        held = [o for e in child.events() if isinstance(e, Delivered) for _, o, _ in e.records]
        app = App(kafka, group)
        app.bus.subscribe(rec)

        @app.share_listener(topic, value_deserializer="str", name="member-b")
        def handle(msg: Message) -> None:
            with lock:
                seen.append((msg.value, msg.attempt, time.time()))

        with running(app):
            wait_for(lambda: len(accepted(rec)) == len(values), "every record accepted")
    assert held == [0, 1, 2]  # member-a handled r0, r1, then held r2
    attempts = {v: a for v, a, _ in seen}
    assert sorted(attempts) == sorted(values)  # nothing lost
    # member-a had acquired all 8 (one producer batch is acquired whole, beyond its
    # max_poll_records): every one comes back, delivered for the second time
    assert [attempts[f"r{i}"] for i in range(8)] == [2] * 8
    if how == "SIGSTOP":
        assert min(t for _, _, t in seen) >= acquired + lock_duration


def test_s1_a_broker_without_share_groups_is_named_at_start(
    make_topic: Callable[..., str],
) -> None:
    from redrive.broker import LocalKafka

    with LocalKafka(features={"share.version": 0}) as broker:
        admin.create_topics(broker.bootstrap_servers, {"jobs": 1})
        app = App(broker.bootstrap_servers, "workers")

        @app.share_listener("jobs")
        def handle(msg: Message) -> None:
            pass

        with pytest.raises(ShareGroupsUnavailable, match="does not offer share groups"):
            app.run(handle_signals=False)


def test_the_readme_share_group_example_runs_as_written(
    kafka: str, monkeypatch: pytest.MonkeyPatch
) -> None:
    readme = (Path(__file__).parents[2] / "README.md").read_text()
    start = readme.index("## Share groups (Queues for Kafka)")
    source = readme[start:].split("```python\n", 1)[1].split("```", 1)[0]
    admin.create_topics(kafka, {"images": 1})
    offsets = admin.produce(kafka, "images", ["a.png", "broken.png", "b.png"], batch_each=True)
    monkeypatch.setenv("REDRIVE_BOOTSTRAP_SERVERS", kafka)
    rec = Recorder()

    def bounded_run(self: App) -> None:
        self.bus.subscribe(rec)
        with running(self):
            wait_for(lambda: len(rec.of(Acknowledged)) >= 5, "3 answers and 2 releases")
            wait_for(lambda: len(admin.read_all(kafka, "images-dlt")) == 1, "a dead letter")

    monkeypatch.setattr(App, "run", bounded_run)
    namespace: dict[str, object] = {"__name__": "__main__"}
    exec(compile(source, "README.md", "exec"), namespace)
    assert sorted(namespace["done"]) == ["a.png", "b.png"]  # type: ignore[call-overload]
    broken = [(e.outcome, e.delivery) for e in rec.of(Acknowledged) if e.offset == offsets[1][1]]
    assert broken == [("release", 1), ("release", 2), ("reject", 3)]  # limit 4: 3 handlings


def test_s1_a_handler_slower_than_the_lock_loses_its_records_to_the_other_member(
    kafka: str, make_topic: Callable[..., str]
) -> None:
    topic = make_topic("jobs")
    rec = Recorder()
    app = App(kafka, f"share-{topic}")
    app.bus.subscribe(rec)

    @app.share_listener(topic, name="m", consumers=2, value_deserializer="str",
                        share_group=ShareGroup(lock_duration=1.0))  # fmt: skip
    def handle(msg: Message) -> None:
        if msg.value == "slow" and msg.attempt == 1:  # slow past the 1 s lock: the broker
            wait_for(lambda: len(deliveries(rec, 0)) == 2, "the other member to get it")

    with running(app):
        admin.produce(kafka, topic, ["slow", "next"])  # one batch: one member gets both
        wait_for(lambda: {e.offset for e in rec.of(Acknowledged)} == {0, 1}, "both answered")
        wait_for(lambda: len(rec.of(Delivered)) == 3, "the slow member to finish")
    slow, other = deliveries(rec, 0)
    assert slow[1] == 1 and other == ("m#2" if slow[0] == "m#1" else "m#1", 2)
    assert deliveries(rec, 1) == [other]  # not handed over by the slow member: lock expired
    answers = [(e.listener, e.offset, e.outcome, e.delivery) for e in rec.of(Acknowledged)]
    assert sorted(answers) == [(other[0], 0, "accept", 2), (other[0], 1, "accept", 2)]


def test_s1_batch_listener_named_and_unnamed_failures_spend_only_the_failing_delivery(
    kafka: str, make_topic: Callable[..., str]
) -> None:
    topic = make_topic("jobs")
    rec = Recorder()
    app = App(kafka, f"share-{topic}")
    app.bus.subscribe(rec)
    batches: list[list[tuple[str, int]]] = []

    @app.share_batch_listener(topic, name="m", max_poll_records=5, value_deserializer="str")
    def handle(batch: list[Message]) -> None:
        batches.append([(m.value, m.attempt) for m in batch])
        for i, m in enumerate(batch):
            if m.value == "b3" and m.attempt == 1:
                raise BatchFailed(index=i) from ConnectionError("b3: downstream unavailable")
        if len(batch) > 1 and batch[-1].value == "b5":
            raise RuntimeError("the batch failed somewhere")  # names no record

    with running(app):
        admin.produce(kafka, topic, ["b1", "b2", "b3", "b4", "b5"])  # one poll of 5
        wait_for(lambda: len(accepted(rec)) == 5, "every record accepted")
    assert batches == [
        [("b1", 1), ("b2", 1), ("b3", 1), ("b4", 1), ("b5", 1)],
        [("b4", 1), ("b5", 1)],  # the rest, handed over again in the same delivery
        [("b4", 1)], [("b5", 1)],  # a failure naming no record: one at a time
        [("b3", 2)],  # the released record, delivered again
    ]  # fmt: skip
    answers = sorted((e.offset, e.outcome, e.delivery) for e in rec.of(Acknowledged))
    assert answers == [(0, "accept", 1), (1, "accept", 1), (2, "accept", 2), (2, "release", 1),
                       (3, "accept", 1), (4, "accept", 1)]  # fmt: skip


def test_c4_sigterm_finishes_the_record_answers_and_releases_the_rest(
    kafka: str, make_topic: Callable[..., str], tmp_path: Path
) -> None:
    topic = make_topic("jobs")
    group = f"share-{topic}"
    values = [f"r{i}" for i in range(10)]
    admin.produce(kafka, topic, values)  # one batch: member-a acquires them all
    kwargs = {"servers": kafka, "group": group, "name": "member-a", "topic": topic,
              "delay": 0.2}  # fmt: skip
    with Child("redrive.lab.share:slow_member", kwargs, tmp_path, name="a") as child:
        wait_for(lambda: len([e for e in child.events() if isinstance(e, Delivered)]) >= 2,
                 "member-a handling records")  # fmt: skip
        assert child.stop(30) == 0
        events = child.events()
    by_a = [o for e in events if isinstance(e, Delivered) for _, o, _ in e.records]
    answered = {e.offset: (e.outcome, e.delivery) for e in events if isinstance(e, Acknowledged)}
    assert {o for o, (outcome, _) in answered.items() if outcome == "accept"} == set(by_a)
    assert {o for o, (outcome, _) in answered.items() if outcome == "release"} == (
        set(range(10)) - set(by_a)
    )
    rec = Recorder()
    app = App(kafka, group)
    app.bus.subscribe(rec)
    app.share_listener(topic, name="member-b")(lambda msg: None)
    with running(app):
        wait_for(lambda: len(accepted(rec)) == 10 - len(by_a), "the released records")
    by_b = {o: a for e in rec.of(Delivered) for _, o, a in e.records}
    assert set(by_b) == set(range(10)) - set(by_a)  # nothing handled twice, nothing lost
    assert set(by_b.values()) == {2}


def test_s1_a_delivery_limit_lowered_while_running_is_applied_before_the_broker_archives(
    kafka: str, make_topic: Callable[..., str]
) -> None:
    from redrive.share.group import apply

    topic = make_topic("jobs")
    group = f"share-{topic}"
    rec = Recorder()
    app = App(kafka, group)
    app.bus.subscribe(rec)

    @app.share_listener(
        topic, value_deserializer="str",
        share_group=ShareGroup(delivery_limit=5, lock_duration=2.0),
        retry=Retry(classifier=Classifier(retryable=(ConnectionError,))),
    )  # fmt: skip
    def handle(msg: Message) -> None:
        raise ConnectionError("downstream unavailable")

    with running(app):
        apply({"bootstrap.servers": kafka}, group, ShareGroup(delivery_limit=3))  # another deploy
        wait_for(lambda: app.loops[0].limit == 3, "the lowered limit read again")
        admin.produce(kafka, topic, ["poison"])
        wait_for(lambda: len(admin.read_all(kafka, f"{topic}-dlt")) == 1, "a dead letter")
        wait_for(lambda: any(e.outcome == "reject" for e in rec.of(Acknowledged)), "a reject")
    assert [a for _, a in deliveries(rec, 0)] == [1, 2]  # limit 3: dead-lettered at 2
    (letter,) = admin.read_all(kafka, f"{topic}-dlt")
    assert struct.unpack(">i", dict(letter.headers())[REDRIVE_ATTEMPTS])[0] == 2
