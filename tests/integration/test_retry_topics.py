"""Non-blocking retry topics (R4) against a real broker: the main partition flows while a
failed record waits in `<topic>-retry-<n>`, it is never handled before its due time, and it
ends in `<topic>-dlt` with complete headers when it never succeeds."""

from __future__ import annotations

import statistics
import threading
import time

import pytest

from redrive import App, ConfigError, Message, RetryTopics, admin
from redrive import headers as h
from redrive.events import DeadLettered, RetryHop

from .helpers import FAST, running, wait_for

pytestmark = pytest.mark.integration


class NotCreatedYet(Exception):
    """An update arrived before the create it depends on."""


class Poison(Exception):
    """Fails every time."""


def _now_ms() -> float:
    return time.time() * 1000


def _names(kafka: str, topic: str) -> list[str]:
    return [m.value().decode() for m in admin.read_all(kafka, topic)]


def test_r4_update_before_create_succeeds_through_the_chain_d5(kafka, make_topic, names) -> None:
    topic = make_topic()
    admin.produce(kafka, topic, ["update:1", "update:2", "create:1", "create:2"])
    group = names.group()
    app = App(kafka, group, kafka=FAST)
    created: set[str] = set()
    updated: list[str] = []
    calls: list[tuple[str, str, int]] = []
    lock = threading.Lock()

    @app.listener(topic, value_deserializer="str", retry_topics=RetryTopics((0.5, 1.0, 2.0)))
    def handle(msg: Message) -> None:
        kind, ident = msg.value.split(":")
        with lock:
            calls.append((msg.topic, msg.value, msg.attempt))
            if kind == "create":
                created.add(ident)
            elif ident not in created:
                raise NotCreatedYet(f"order {ident} not created yet")
            else:
                updated.append(ident)

    retry_topics = [f"{topic}-retry-{n}" for n in range(3)]

    def retries_committed() -> bool:
        return all(
            admin.committed_offsets(kafka, group + "-retry", t) == {0: end or None}
            for t in retry_topics
            for end in admin.end_offsets(kafka, t).values()
        )

    with running(app):
        wait_for(
            lambda: (
                sorted(updated) == ["1", "2"]
                and admin.committed_offsets(kafka, group, topic) == {0: 4}
                and retries_committed()
            ),
            what="updates applied from the retry topics and everything committed",
        )
    # the main partition flowed: the creates were handled right after the failed updates
    assert [(v, a) for t, v, a in calls if t == topic] == [
        ("update:1", 1), ("update:2", 1), ("create:1", 1), ("create:2", 1)
    ]  # fmt: skip
    retried = [(t, v) for t, v, _ in calls if t != topic]
    assert {v for _, v in retried} == {"update:1", "update:2"}
    assert {t for t, _ in retried} <= set(retry_topics)
    assert "update:1" in _names(kafka, f"{topic}-retry-0")
    assert admin.end_offsets(kafka, f"{topic}-dlt") == {0: 0}  # the dead-letter topic stays empty


def test_r4_exhaustion_never_early_then_dead_lettered_once_d6(kafka, make_topic, names) -> None:
    topic = make_topic(partitions=2)
    admin.produce(kafka, topic, [("k", "poison")], partition=1, headers=[("trace-id", b"t-42")])
    group = names.group()
    delays = (0.3, 0.6, 1.0)
    app = App(kafka, group, kafka=FAST)
    handled: list[tuple[float, int | None, str, int]] = []  # (at ms, due ms, topic, attempt)

    @app.listener(topic, value_deserializer="str", retry_topics=RetryTopics(delays))
    def handle(msg: Message) -> None:
        handled.append((_now_ms(), h.due_ms(msg), msg.topic, msg.attempt))
        raise Poison("never works")

    with running(app) as rec:
        wait_for(
            lambda: (
                len(rec.of(DeadLettered)) == 1
                and admin.committed_offsets(kafka, group + "-retry", f"{topic}-retry-2")
                == {0: None, 1: 1}
            ),
            what="the poison record dead-lettered and every hop committed",
        )
    # once per attempt, in chain order
    assert [(t, a) for _, _, t, a in handled] == [
        (topic, 1), (f"{topic}-retry-0", 2), (f"{topic}-retry-1", 3), (f"{topic}-retry-2", 4)
    ]  # fmt: skip
    lateness = []
    for (prev_at, _, _, _), (at, due, _, _), delay in zip(
        handled[:-1], handled[1:], delays, strict=True
    ):
        assert due is not None
        assert due >= prev_at + delay * 1000 - 1  # due after the delay of its hop
        assert at >= due  # never handled before its due time (R4)
        lateness.append(at - due)
    print(  # the measured lateness of each retry behind its due time
        f"\nretry lateness ms: {[round(x, 1) for x in lateness]} "
        f"median={statistics.median(lateness):.1f} max={max(lateness):.1f}"
    )
    (dead,) = admin.read_all(kafka, f"{topic}-dlt")
    assert dead.partition() == 1 and dead.key() == b"k" and dead.value() == b"poison"
    names_seen = [k for k, _ in dead.headers()]
    assert len(names_seen) == len(set(names_seen))  # replaced on each hop, never piled up
    d = h.decode(dead.headers())
    # Spring's retry-topic family on the chain's dead letter, as Spring's chain writes it
    assert h.DLT_ORIGINAL_TOPIC not in d and h.DLT_EXCEPTION_FQCN not in d
    assert d[h.ORIGINAL_TOPIC] == topic  # the origin, not the last retry topic
    assert d[h.ORIGINAL_PARTITION] == 1 and d[h.ORIGINAL_OFFSET] == 0
    assert d[h.ORIGINAL_CONSUMER_GROUP] == group
    assert d[h.EXCEPTION_FQCN].endswith("test_retry_topics.Poison")
    assert d[h.EXCEPTION_MESSAGE] == "never works"
    assert "Poison: never works" in d[h.EXCEPTION_STACKTRACE]
    assert d[h.REDRIVE_ATTEMPTS] == 4
    assert d[h.RETRY_ATTEMPTS] == 5  # Spring's convention: the number the next attempt would have
    (original,) = admin.read_all(kafka, topic)
    assert d[h.RETRY_ORIGINAL_TIMESTAMP] == d[h.ORIGINAL_TIMESTAMP] == original.timestamp()[1]
    assert dict(dead.headers())["trace-id"] == b"t-42"  # the record's own headers are kept


def test_r4_main_partition_flows_past_a_failed_record(kafka, make_topic, names) -> None:
    topic = make_topic()
    admin.produce(kafka, topic, ["bad", "good"])
    group = names.group()
    app = App(kafka, group, kafka=FAST)
    handled: dict[str, float] = {}

    @app.listener(topic, value_deserializer="str", retry_topics=RetryTopics((30.0,)))
    def handle(msg: Message) -> None:
        handled.setdefault(f"{msg.value}@{msg.topic}", _now_ms())
        if msg.value == "bad":
            raise RuntimeError("bad")

    with running(app) as rec:
        wait_for(
            lambda: (
                f"good@{topic}" in handled
                and admin.committed_offsets(kafka, group, topic) == {0: 2}
                and len(rec.of(RetryHop)) == 1
            ),
            what="good handled and the main partition committed past bad",
        )
    (waiting,) = admin.read_all(kafka, f"{topic}-retry")
    due = h.decode(waiting.headers()).get(h.RETRY_BACKOFF_TIMESTAMP)
    assert handled[f"good@{topic}"] < due  # handled before bad's first retry was due
    assert f"bad@{topic}-retry" not in handled  # and bad was not handed over early
    # the retry consumer commits nothing past a record that is not due (C1)
    assert admin.committed_offsets(kafka, group + "-retry", f"{topic}-retry")[0] in (None, 0)


def test_r4_total_retry_time_cap_dead_letters_without_further_attempts(
    kafka, make_topic, names
) -> None:
    topic = make_topic()
    admin.produce(kafka, topic, ["late"])
    group = names.group()
    app = App(kafka, group, kafka=FAST)
    handled: list[str] = []

    # a third attempt would be due 5 s after the second: past the 2 s cap
    @app.listener(topic, retry_topics=RetryTopics((0.3, 5.0), max_total=2.0))
    def handle(msg: Message) -> None:
        handled.append(msg.topic)
        raise RuntimeError("still failing")

    with running(app) as rec:
        wait_for(lambda: len(rec.of(DeadLettered)) == 1, what="dead letter")
        wait_for(
            lambda: admin.committed_offsets(kafka, group + "-retry", f"{topic}-retry-0") == {0: 1}
        )
    assert handled == [topic, f"{topic}-retry-0"]
    assert admin.end_offsets(kafka, f"{topic}-retry-1") == {0: 0}  # no further attempt
    (dead,) = admin.read_all(kafka, f"{topic}-dlt")
    assert h.decode(dead.headers())[h.REDRIVE_ATTEMPTS] == 2


def test_r4_batch_listener_sends_only_failing_records_to_retry(kafka, make_topic, names) -> None:
    topic = make_topic()
    admin.produce(kafka, topic, ["ok1", "bad1", "ok2", "bad2", "ok3"])
    group = names.group()
    app = App(kafka, group, kafka=FAST)
    done: list[tuple[str, str]] = []

    @app.batch_listener(topic, value_deserializer="str", retry_topics=RetryTopics((0.3,)))
    def handle(batch: list[Message]) -> None:
        if any(m.value.startswith("bad") and m.topic == topic for m in batch):
            raise RuntimeError("a bad record in the batch")  # names no record
        done.extend((m.topic, m.value) for m in batch)

    with running(app):
        wait_for(
            lambda: (
                admin.committed_offsets(kafka, group, topic) == {0: 5}
                and admin.committed_offsets(kafka, group + "-retry", f"{topic}-retry") == {0: 2}
            ),
            what="main and retry topic committed",
        )
    assert _names(kafka, f"{topic}-retry") == ["bad1", "bad2"]  # only the failing records
    assert sorted(v for t, v in done if t == topic) == ["ok1", "ok2", "ok3"]
    assert sorted(v for t, v in done if t == f"{topic}-retry") == ["bad1", "bad2"]
    assert len(done) == 5  # each record succeeded exactly once
    assert admin.end_offsets(kafka, f"{topic}-dlt") == {0: 0}


def test_r4_missing_retry_topics_are_a_startup_error(kafka, make_topic, names) -> None:
    topic = make_topic()
    app = App(kafka, names.group(), kafka=FAST)

    @app.listener(topic, retry_topics=RetryTopics((1.0, 2.0), auto_create=False))
    def handle(msg: Message) -> None: ...

    with pytest.raises(ConfigError) as err:
        app.start()
    for missing in (f"{topic}-retry-0", f"{topic}-retry-1", f"{topic}-dlt"):
        assert missing in str(err.value)
    assert not app._threads


def test_r4_batch_retry_consumer_isolation_never_hands_over_early(kafka, make_topic, names) -> None:
    topic = make_topic()
    retry = f"{topic}-retry"
    admin.create_topics(kafka, {retry: 1, f"{topic}-dlt": 1})
    now = int(_now_ms())
    for value, due in (("r1", now), ("r2", now + 3000)):  # r2 is due 3 s after r1
        admin.produce(
            kafka, retry, [value], headers=[(h.RETRY_ATTEMPTS, h.big_int(2)),
                                            (h.RETRY_BACKOFF_TIMESTAMP, h.big_int(due))],
        )  # fmt: skip
    group = names.group()
    app = App(kafka, group, kafka=FAST)
    calls: list[tuple[list[str], float]] = []

    @app.batch_listener(topic, value_deserializer="str", retry_topics=RetryTopics((0.2,)))
    def handle(batch: list[Message]) -> None:
        calls.append(([m.value for m in batch], _now_ms()))
        if any(m.value == "r1" for m in batch):
            raise RuntimeError("r1 fails again")  # names no record: isolate one by one

    with running(app):
        wait_for(
            lambda: admin.committed_offsets(kafka, group + "-retry", retry) == {0: 2},
            what="r1 dead-lettered and r2 handled",
        )
    # r2 was offered only once due: never with r1, never dead-lettered by r1's failure
    assert [v for v, _ in calls] == [["r1"], ["r1"], ["r2"]]
    assert calls[-1][1] >= now + 3000
    assert _names(kafka, f"{topic}-dlt") == ["r1"]
