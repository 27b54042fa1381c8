"""Dead letters against a real broker: Spring-compatible headers (D1, D2), confirmed writes
before the commit (D3), batch isolation (F3), undecodable records (F4), circuit breaker."""

from __future__ import annotations

import logging
import struct
import time
from typing import Any

import pytest

from redrive import (
    App,
    BackOff,
    CircuitBreaker,
    DeadLetter,
    ListenerStopped,
    Message,
    Retry,
    admin,
)
from redrive import headers as h
from redrive.events import DeadLettered, RecoveryRetrying, Stopped

from .dlt import dead_letters, header_values, raw_headers
from .helpers import FAST, running, wait_for

pytestmark = pytest.mark.integration

NO_RETRY = Retry(backoff=BackOff.none())


def late_dlt() -> DeadLetter:
    """To ``<topic>-dlt``, named by a function: start cannot know it, so does not create it."""
    return DeadLetter(topic=lambda msg: f"{msg.topic}-dlt")


class OrderRejected(Exception):
    pass


def test_d1_d2_headers_field_by_field_and_no_pile_up_after_replay(kafka, make_topic, names) -> None:
    topic = make_topic(partitions=2)
    dlt = f"{topic}-dlt"
    admin.create_topics(kafka, {dlt: 2})
    admin.produce(kafka, topic, [("k-1", "v-1")], partition=1,
                  headers=[("trace-id", b"abc")])  # fmt: skip
    (source,) = admin.read_all(kafka, topic)
    group = names.group()
    app = App(kafka, group, kafka=FAST)
    calls: list[bytes] = []

    @app.listener(topic)  # default retry: KeyError in the cause chain is fatal
    def handle(msg: Message) -> None:
        calls.append(msg.value)
        try:
            {}["sku-42"]
        except KeyError as exc:
            raise OrderRejected("order rejected: " + "x" * 20_000) from exc

    before = time.time()
    with running(app):
        wait_for(lambda: admin.committed_offsets(kafka, group, topic) == {0: None, 1: 1})
    after = time.time()
    (dead,) = dead_letters(kafka, dlt)
    assert calls == [b"v-1"]
    # D1: same partition, key, value and original headers kept
    assert (dead.partition(), dead.key(), dead.value()) == (1, b"k-1", b"v-1")
    raw = dict(raw_headers(dead))
    assert raw["trace-id"] == b"abc"
    # D2: Spring Kafka's names and binary encodings
    assert raw[h.DLT_ORIGINAL_TOPIC] == topic.encode()
    assert raw[h.DLT_ORIGINAL_PARTITION] == struct.pack(">i", 1)  # 4-byte big-endian int
    assert raw[h.DLT_ORIGINAL_OFFSET] == struct.pack(">q", 0)  # 8-byte big-endian long
    assert raw[h.DLT_ORIGINAL_TIMESTAMP] == struct.pack(">q", source.timestamp()[1])
    assert raw[h.DLT_ORIGINAL_TIMESTAMP_TYPE] == b"CreateTime"
    assert raw[h.DLT_ORIGINAL_CONSUMER_GROUP] == group.encode()
    assert raw[h.DLT_EXCEPTION_FQCN] == f"{__name__}.OrderRejected".encode()
    # as Spring's: the listener's exception (Spring takes only its own wrapper off)
    assert raw[h.DLT_EXCEPTION_CAUSE_FQCN] == f"{__name__}.OrderRejected".encode()
    assert raw[h.REDRIVE_ROOT_CAUSE_FQCN] == b"KeyError"
    assert raw[h.DLT_EXCEPTION_MESSAGE].startswith(b"order rejected: xxx")
    assert len(raw[h.DLT_EXCEPTION_MESSAGE]) == 4096  # capped
    trace = raw[h.DLT_EXCEPTION_STACKTRACE]
    assert len(trace) < h.STACKTRACE_LIMIT  # capped: the long message line is cut
    assert b"KeyError: 'sku-42'" in trace and b"in handle" in trace  # frames and cause kept
    assert f"{__name__}.OrderRejected: order rejected: xxx".encode() in trace
    # redrive's own: attempts (4-byte int) and first failure (8-byte long, epoch ms)
    assert struct.unpack(">i", raw[h.REDRIVE_ATTEMPTS]) == (1,)
    (first_failure,) = struct.unpack(">q", raw[h.REDRIVE_FIRST_FAILURE])
    assert int(before * 1000) <= first_failure <= int(after * 1000)

    # A replay: the dead letter goes back to its origin (headers and all) and fails again.
    admin.produce(kafka, topic, [(dead.key(), dead.value())], partition=1,
                  headers=raw_headers(dead))  # fmt: skip
    app2 = App(kafka, group, kafka=FAST)
    app2.listener(topic)(handle)
    with running(app2):
        wait_for(lambda: admin.committed_offsets(kafka, group, topic) == {0: None, 1: 2})
    first, again = dead_letters(kafka, dlt)
    names_again = [k for k, _ in raw_headers(again)]
    for name in (h.DLT_ORIGINAL_TOPIC, h.DLT_ORIGINAL_OFFSET, h.DLT_EXCEPTION_FQCN, h.DLT_EXCEPTION_STACKTRACE,
                 h.REDRIVE_ATTEMPTS, h.REDRIVE_FIRST_FAILURE, "trace-id"):  # fmt: skip
        assert names_again.count(name) == 1, name
    assert len(names_again) == len(raw_headers(first))
    assert header_values(again)[h.DLT_ORIGINAL_OFFSET] == 1  # the replayed record's offset


def test_d3_dead_letter_write_failing_keeps_the_record_until_it_succeeds(
    kafka, make_topic, names, caplog
) -> None:
    """The dead-letter topic is missing: a function names it, so start does not create it
    (and topic auto-creation is off on the test broker)."""
    topic = make_topic()
    admin.produce(kafka, topic, ["ok", "poison", "after"])
    group = names.group()
    app = App(kafka, group, kafka=FAST)
    calls: list[str] = []
    retry = Retry(backoff=BackOff.none(), recovery=BackOff.fixed(0.3, max_attempts=None))

    @app.listener(topic, value_deserializer="str", retry=retry, recoverer=late_dlt())
    def handle(msg: Message) -> None:
        calls.append(msg.value)
        if msg.value == "poison":
            raise ConnectionError("cannot store the order")

    with caplog.at_level(logging.ERROR, logger="redrive"), running(app) as rec:
        wait_for(lambda: len(rec.of(RecoveryRetrying)) >= 3, what="recovery retried")
        assert admin.committed_offsets(kafka, group, topic) == {0: 1}  # "poison" uncommitted
        assert calls == ["ok", "poison"]  # the partition waits at it; no handler re-run
        admin.create_topics(kafka, {f"{topic}-dlt": 1})
        wait_for(lambda: admin.committed_offsets(kafka, group, topic) == {0: 3})
    assert calls == ["ok", "poison", "after"]
    (dead,) = dead_letters(kafka, f"{topic}-dlt")
    assert dead.value() == b"poison"
    assert header_values(dead)[h.DLT_EXCEPTION_FQCN] == "ConnectionError"  # the handler's error
    assert header_values(dead)[h.DLT_EXCEPTION_MESSAGE] == "cannot store the order"
    assert len(rec.of(DeadLettered)) == 1
    why = [r.getMessage() for r in caplog.records if "recovering" in r.getMessage()]
    assert why and "is not available" in why[0] and f"{topic}-dlt" in why[0]


def test_f3_batch_poison_record_isolated_and_dead_lettered_alone(kafka, make_topic, names) -> None:
    topic = make_topic()
    admin.create_topics(kafka, {f"{topic}-dlt": 1})
    values = [f"m{i}" for i in range(1, 7)]
    admin.produce(kafka, topic, values)
    group = names.group()
    app = App(kafka, group, kafka=FAST)
    calls: list[list[str]] = []

    @app.batch_listener(topic, max_poll_records=6, value_deserializer="str",
                        retry=Retry(backoff=BackOff.fixed(0.2, max_attempts=2)))  # fmt: skip
    def handle(batch: list[Message]) -> None:
        calls.append([m.value for m in batch])
        if any(m.value == "m3" for m in batch):
            raise ConnectionError("one record of the batch is bad; which one is not said")

    with running(app):
        wait_for(lambda: admin.committed_offsets(kafka, group, topic) == {0: 6})
    (dead,) = dead_letters(kafka, f"{topic}-dlt")
    assert dead.value() == b"m3"
    succeeded_last = {v for c in calls if "m3" not in c for v in c}
    assert succeeded_last == set(values) - {"m3"}  # every other record handled and committed
    handled = sum(len(c) for c in calls)
    extra = len(calls) - 1
    print(f"batch isolation: {len(calls)} handler calls ({extra} extra), {handled} records "
          f"handed over for 6 records: {calls}")  # fmt: skip
    # The whole batch twice (two attempts), then one record at a time.
    assert calls[:2] == [values, values] or sum(1 for c in calls if len(c) > 1) >= 2
    assert [c for c in calls if len(c) == 1][-6:] == [[v] for v in values]


@pytest.mark.parametrize("batch", [False, True])
def test_f4_undecodable_json_is_dead_lettered_raw_and_never_handled(
    kafka, make_topic, names, batch
) -> None:
    topic = make_topic()
    admin.create_topics(kafka, {f"{topic}-dlt": 1})
    admin.produce(kafka, topic, [b'{"n": 1}', b"{not json \xff", b'{"n": 3}'])
    group = names.group()
    app = App(kafka, group, kafka=FAST)
    handled: list[object] = []

    def handle(arg: Message | list[Message]) -> None:
        handled.extend(m.value for m in (arg if isinstance(arg, list) else [arg]))

    register = app.batch_listener if batch else app.listener
    register(topic, value_deserializer="json")(handle)
    with running(app) as rec:
        wait_for(lambda: admin.committed_offsets(kafka, group, topic) == {0: 3})
    assert handled == [{"n": 1}, {"n": 3}]
    (dead,) = dead_letters(kafka, f"{topic}-dlt")
    assert dead.value() == b"{not json \xff"  # the raw bytes
    values = header_values(dead)
    assert values[h.DLT_EXCEPTION_FQCN] == "redrive.errors.DeserializationError"
    assert values[h.DLT_EXCEPTION_CAUSE_FQCN] == "redrive.errors.DeserializationError"
    assert values[h.REDRIVE_ROOT_CAUSE_FQCN] in (
        "json.decoder.JSONDecodeError",
        "UnicodeDecodeError",
    )
    assert values[h.REDRIVE_ATTEMPTS] == 1
    assert len(rec.of(DeadLettered)) == 1  # no loop


def test_circuit_breaker_trips_with_a_clear_error(kafka, make_topic, names) -> None:
    topic = make_topic()
    admin.create_topics(kafka, {f"{topic}-dlt": 1})
    values = ["ok", "bad", "bad", "ok", "bad", "bad", "bad", "ok"]
    admin.produce(kafka, topic, values)
    group = names.group()
    app = App(kafka, group, kafka=FAST)
    handled: list[int] = []

    @app.listener(topic, value_deserializer="str", retry=NO_RETRY,
                  recoverer=CircuitBreaker(DeadLetter(), in_a_row=3))  # fmt: skip
    def handle(msg: Message) -> None:
        handled.append(msg.offset)
        if msg.value == "bad":
            raise ConnectionError(f"cannot handle record {msg.offset}")

    recorder = None
    with pytest.raises(ListenerStopped) as info:  # raised by join, on the way out
        with running(app) as rec:
            recorder = rec
            wait_for(lambda: bool(rec.of(Stopped)), what="the breaker to stop the listener")
    assert recorder is not None
    text = str(info.value)
    assert "circuit breaker" in text and "3 records in a row failed" in text
    assert f"{topic}[0]@6" in text and "uncommitted" in text
    assert handled == [0, 1, 2, 3, 4, 5, 6]  # nothing after the record that tripped it
    dead = dead_letters(kafka, f"{topic}-dlt")  # offsets 1, 2 (then "ok" resets), 4, 5
    assert [header_values(m)[h.DLT_ORIGINAL_OFFSET] for m in dead] == [1, 2, 4, 5]
    assert admin.committed_offsets(kafka, group, topic) == {0: 6}  # stays at the tripper


def test_d3_batch_listener_retries_only_the_recovery_while_the_write_fails(
    kafka, make_topic, names
) -> None:
    """Batch isolation found the poison record but its dead-letter topic is missing: the
    batch handler is not called again; only the write is retried until it succeeds."""
    topic = make_topic()
    admin.produce(kafka, topic, ["m1", "poison", "m3", "m4"])
    group = names.group()
    app = App(kafka, group, kafka=FAST)
    calls: list[list[str]] = []
    retry = Retry(backoff=BackOff.none(), recovery=BackOff.fixed(0.3, max_attempts=None))

    @app.batch_listener(
        topic, max_poll_records=4, value_deserializer="str", retry=retry, recoverer=late_dlt()
    )
    def handle(batch: list[Message]) -> None:
        calls.append([m.value for m in batch])
        if "poison" in calls[-1]:
            raise ConnectionError("a record of the batch cannot be stored")

    with running(app) as rec:
        wait_for(lambda: len(rec.of(RecoveryRetrying)) >= 3, what="recovery retried")
        assert admin.committed_offsets(kafka, group, topic) == {0: 1}
        isolated = list(calls)
        admin.create_topics(kafka, {f"{topic}-dlt": 1})
        wait_for(lambda: admin.committed_offsets(kafka, group, topic) == {0: 4})
    assert isolated[-2:] == [["m1"], ["poison"]]  # found by isolation, then only the write
    assert calls == [*isolated, ["m3", "m4"]]
    assert [m.value() for m in dead_letters(kafka, f"{topic}-dlt")] == [b"poison"]


def test_d3_unacknowledged_dead_letter_is_awaited_not_written_twice(
    kafka, make_topic, names
) -> None:
    """A dead-letter write whose acknowledgement has not come back in time is not sent again
    on the next try: the next try waits for that same write."""
    topic = make_topic()
    admin.create_topics(kafka, {f"{topic}-dlt": 1})
    admin.produce(kafka, topic, ["first", "second"])
    group = names.group()
    app = App(kafka, group, kafka=FAST)
    publisher = DeadLetter()
    retry = Retry(backoff=BackOff.none(), recovery=BackOff.fixed(0.3, max_attempts=None))

    class FirstFlushSeesNoAck:
        """The producer, except that its first flush returns before any acknowledgement
        is served: the write is in flight, its report not yet seen (deterministically)."""

        def __init__(self, producer: Any) -> None:
            self.producer, self.flushes = producer, 0

        def __getattr__(self, name: str) -> Any:
            return getattr(self.producer, name)

        def flush(self, timeout: float) -> int:
            self.flushes += 1
            return 1 if self.flushes == 1 else int(self.producer.flush(timeout))

    @app.listener(topic, value_deserializer="str", retry=retry, recoverer=publisher)
    def handle(msg: Message) -> None:
        inner = publisher.publisher
        if msg.value == "second" and not isinstance(inner._producer, FirstFlushSeesNoAck):
            inner._producer = FirstFlushSeesNoAck(inner._producer)  # type: ignore[assignment]
        raise ConnectionError(f"cannot store {msg.value}")

    with running(app) as rec:
        wait_for(lambda: admin.committed_offsets(kafka, group, topic) == {0: 2})
    assert [e.offset for e in rec.of(RecoveryRetrying)][:1] == [1]  # not acknowledged in time
    assert [m.value() for m in dead_letters(kafka, f"{topic}-dlt")] == [b"first", b"second"]
    assert [e.offset for e in rec.of(DeadLettered)] == [0, 1]
