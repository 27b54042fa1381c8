"""The header codec: Spring's encodings, redrive's own headers, round trips (no broker)."""

from __future__ import annotations

import struct

import pytest

from redrive import Message
from redrive import headers as h


class OrderRejected(Exception):
    pass


def failed() -> BaseException:
    try:
        try:
            {}["sku"]
        except KeyError as cause:
            raise OrderRejected("order rejected") from cause
    except OrderRejected as exc:
        return exc
    raise AssertionError("unreachable")


def letter(**overrides: object) -> list[tuple[str, bytes]]:
    args: dict[str, object] = {
        "topic": "orders", "partition": 3, "offset": 42, "timestamp": 1_700_000_000_123,
        "timestamp_type": 1, "group_id": "billing", "exc": failed(), "attempts": 4,
        "first_failure": 1_700_000_001.5,
    }  # fmt: skip
    return h.dead_letter_headers(**{**args, **overrides})  # type: ignore[arg-type]


def test_dead_letter_headers_use_springs_names_and_binary_encodings() -> None:
    raw = dict(letter())
    assert raw[h.DLT_ORIGINAL_TOPIC] == b"orders"
    assert raw[h.DLT_ORIGINAL_PARTITION] == b"\x00\x00\x00\x03"  # 4-byte big-endian int
    assert raw[h.DLT_ORIGINAL_OFFSET] == b"\x00" * 7 + b"\x2a"  # 8-byte big-endian long
    assert raw[h.DLT_ORIGINAL_TIMESTAMP] == struct.pack(">q", 1_700_000_000_123)
    assert raw[h.DLT_ORIGINAL_TIMESTAMP_TYPE] == b"CreateTime"
    assert raw[h.DLT_ORIGINAL_CONSUMER_GROUP] == b"billing"
    assert raw[h.DLT_EXCEPTION_FQCN] == f"{__name__}.OrderRejected".encode()
    # Spring's cause header names the listener's own exception (Spring takes its wrapper off);
    # redrive wraps nothing, so it names the same type. The root cause is redrive's own.
    assert raw[h.DLT_EXCEPTION_CAUSE_FQCN] == f"{__name__}.OrderRejected".encode()
    assert raw[h.REDRIVE_ROOT_CAUSE_FQCN] == b"KeyError"
    assert raw[h.REDRIVE_ROOT_CAUSE_MESSAGE] == b"'sku'"
    assert raw[h.DLT_EXCEPTION_MESSAGE] == b"order rejected"
    assert b"OrderRejected: order rejected" in raw[h.DLT_EXCEPTION_STACKTRACE]
    assert raw[h.REDRIVE_ATTEMPTS] == struct.pack(">i", 4)
    assert raw[h.REDRIVE_FIRST_FAILURE] == struct.pack(">q", 1_700_000_001_500)


def test_the_names_are_springs_and_redrives() -> None:
    assert [k for k, _ in letter()] == [
        "kafka_dlt-original-topic", "kafka_dlt-original-partition", "kafka_dlt-original-offset",
        "kafka_dlt-original-timestamp", "kafka_dlt-original-timestamp-type",
        "kafka_dlt-original-consumer-group", "kafka_dlt-exception-fqcn",
        "kafka_dlt-exception-cause-fqcn", "kafka_dlt-exception-message",
        "kafka_dlt-exception-stacktrace", "redrive_dlt-attempts", "redrive_dlt-first-failure",
        "redrive_dlt-root-cause-fqcn", "redrive_dlt-root-cause-message",
    ]  # fmt: skip
    assert (h.RETRY_ATTEMPTS, h.RETRY_BACKOFF_TIMESTAMP, h.RETRY_ORIGINAL_TIMESTAMP) == (
        "retry_topic-attempts", "retry_topic-backoff-timestamp", "retry_topic-original-timestamp"
    )  # fmt: skip
    assert h.REPLAY_OF == "redrive_replay-of"


def test_interruptions_are_written_only_when_there_were_some() -> None:
    assert h.REDRIVE_INTERRUPTIONS not in dict(letter(interruptions=0))
    raw = dict(letter(interruptions=2))
    assert raw[h.REDRIVE_INTERRUPTIONS] == b"\x00\x00\x00\x02"
    assert h.decode(raw.items())[h.REDRIVE_INTERRUPTIONS] == 2


def test_a_dead_letter_round_trips_through_decode() -> None:
    d = h.decode(letter(interruptions=1))
    assert d[h.DLT_ORIGINAL_TOPIC] == "orders"
    assert d[h.DLT_ORIGINAL_PARTITION] == 3
    assert d[h.DLT_ORIGINAL_OFFSET] == 42
    assert d[h.DLT_ORIGINAL_TIMESTAMP] == 1_700_000_000_123
    assert d[h.DLT_ORIGINAL_TIMESTAMP_TYPE] == "CreateTime"
    assert d[h.REDRIVE_ATTEMPTS] == 4
    assert d[h.REDRIVE_FIRST_FAILURE] == 1_700_000_001_500
    assert d[h.REDRIVE_INTERRUPTIONS] == 1


def test_old_dead_letter_headers_are_replaced_and_others_kept_in_order() -> None:
    first = letter(original=[("trace-id", b"t-1"), ("empty", None)])
    again = letter(offset=7, attempts=1, original=first)
    names = [k for k, _ in again]
    assert names[:2] == ["trace-id", "empty"]
    assert all(names.count(k) == 1 for k in names)
    assert dict(again)["empty"] == b""
    assert h.decode(again)[h.DLT_ORIGINAL_OFFSET] == 7


def test_long_messages_and_stack_traces_are_capped() -> None:
    raw = dict(letter(exc=ValueError("x" * 20_000)))
    assert len(raw[h.DLT_EXCEPTION_MESSAGE]) == h.MESSAGE_LIMIT
    assert len(raw[h.DLT_EXCEPTION_STACKTRACE]) <= h.STACKTRACE_LIMIT


def test_retry_headers_are_written_as_spring_4_1_writes_them() -> None:
    hop = h.retry_headers(next_attempt=2, original_timestamp=1_700_000_000_123, due_ms=128)
    assert hop == [
        ("retry_topic-attempts", b"\x00\x00\x00\x02"),  # a 4-byte int
        # the timestamps as Java BigInteger.toByteArray()
        ("retry_topic-original-timestamp", bytes.fromhex("018bcfe5687b")),
        ("retry_topic-backoff-timestamp", b"\x00\x80"),
    ]
    assert h.decode(hop) == {
        h.RETRY_ATTEMPTS: 2, h.RETRY_ORIGINAL_TIMESTAMP: 1_700_000_000_123,
        h.RETRY_BACKOFF_TIMESTAMP: 128,
    }  # fmt: skip
    assert [k for k, _ in h.retry_headers(next_attempt=5, original_timestamp=1, due_ms=None)] == [
        h.RETRY_ATTEMPTS, h.RETRY_ORIGINAL_TIMESTAMP,
    ]  # fmt: skip


@pytest.mark.parametrize(
    ("raw", "value"),
    [
        ((h.DLT_ORIGINAL_PARTITION, b"\x01"), "\x01"),  # wrong size: kept as text
        ((h.REDRIVE_ATTEMPTS, None), None),  # no value: left out
        (("other", b"x"), None),  # not ours: left out
        ((h.REPLAY_OF, b"orders-dlt/0/5"), "orders-dlt/0/5"),
    ],
)
def test_decode_leaves_what_it_cannot_read(raw: tuple[str, bytes | None], value: object) -> None:
    assert h.decode([raw]).get(raw[0]) == value


def test_decode_all_keeps_every_header_readable() -> None:
    d = h.decode_all([("trace", b"t-1"), ("blob", b"\xff\x00"), ("none", None), *letter()])
    assert d["trace"] == "t-1" and d["blob"] == "0xff00" and d["none"] is None
    assert d[h.DLT_ORIGINAL_PARTITION] == 3


def test_origin_of_a_hop_is_its_first_topic() -> None:
    on_retry = Message(
        "orders-retry-1", 0, 9, headers=tuple(letter()), timestamp=5, timestamp_type=2
    )
    assert h.origin_of(on_retry) == h.Origin("orders", 3, 42, 1_700_000_000_123, 1)
    plain = Message("orders", 1, 2, timestamp=5, timestamp_type=2)
    assert h.origin_of(plain) == h.Origin("orders", 1, 2, 5, 2) == h.Origin.of(plain)


def test_record_accessors() -> None:
    msg = Message(
        "orders-retry-0", 0, 0,
        headers=(*letter(), *h.retry_headers(next_attempt=3, original_timestamp=1, due_ms=99)),
    )  # fmt: skip
    assert h.due_ms(msg) == 99
    assert h.attempts_of(msg) == 3
    assert h.first_failure_of(msg) == 1_700_000_001.5
    bare = Message("orders", 0, 0)
    assert h.due_ms(bare) is h.attempts_of(bare) is h.first_failure_of(bare) is None


def test_replay_marker() -> None:
    assert h.replay_marker("orders-dlt", 2, 17) == ("redrive_replay-of", b"orders-dlt/2/17")


def test_the_chain_family_has_springs_retry_topic_names() -> None:
    hop = letter(family=h.CHAIN)
    assert [k for k, _ in hop][:10] == [
        "kafka_original-topic", "kafka_original-partition", "kafka_original-offset",
        "kafka_original-timestamp", "kafka_original-timestamp-type",
        "kafka_dlt-original-consumer-group",  # KafkaHeaders.ORIGINAL_CONSUMER_GROUP
        "kafka_exception-fqcn", "kafka_exception-cause-fqcn", "kafka_exception-message",
        "kafka_exception-stacktrace",
    ]  # fmt: skip
    raw = dict(hop)
    assert raw[h.ORIGINAL_PARTITION] == b"\x00\x00\x00\x03"
    assert raw[h.ORIGINAL_OFFSET] == struct.pack(">q", 42)
    assert not any(k.startswith(("kafka_dlt-original-t", "kafka_dlt-exc")) for k in raw)
    d = h.decode(hop)
    assert (d[h.ORIGINAL_TOPIC], d[h.ORIGINAL_PARTITION], d[h.ORIGINAL_OFFSET]) == (
        "orders", 3, 42
    )  # fmt: skip
    on_retry = Message("orders-retry-1", 0, 9, headers=tuple(hop), timestamp=5)
    assert h.origin_of(on_retry) == h.Origin("orders", 3, 42, 1_700_000_000_123, 1)


@pytest.mark.parametrize(("first", "then"), [(h.DLT, h.CHAIN), (h.CHAIN, h.DLT)])
def test_a_record_that_goes_round_again_carries_one_current_family(
    first: h.Family, then: h.Family
) -> None:
    again = letter(
        offset=7, exc=ValueError("again"), family=then,
        original=[("trace-id", b"t"), *letter(family=first)],
    )  # fmt: skip
    names = [k for k, _ in again]
    assert all(names.count(k) == 1 for k in names)
    assert first.original_topic not in names and first.exception_fqcn not in names
    assert h.REDRIVE_ROOT_CAUSE_FQCN not in names  # the new exception has no cause
    d = h.decode(again)
    assert d[then.original_offset] == 7 and d[then.exception_message] == "again"
    assert names[0] == "trace-id"


@pytest.mark.parametrize(
    ("raw", "attempts"),
    [
        (b"\x00\x00\x00\xc8", 200),  # Spring 4.1: a 4-byte int
        (b"\x02", 2),  # one byte (BigInteger of a small number, or an old byte cast)
        (b"\xc8", 200),  # one byte, read unsigned as Spring 4.1 reads it
        (b"\x00\xc8", 200),  # BigInteger.valueOf(200).toByteArray()
        (b"\x7f", 127),
        (b"\x00\x80", 128),
        (bytes.fromhex("00000000000000c8"), 200),  # a long
    ],
)
def test_attempts_are_read_in_every_form_spring_has_written(raw: bytes, attempts: int) -> None:
    assert h.decode([(h.RETRY_ATTEMPTS, raw)])[h.RETRY_ATTEMPTS] == attempts
    assert h.attempts_of(Message("t-retry-0", 0, 0, headers=((h.RETRY_ATTEMPTS, raw),))) == (
        attempts
    )  # fmt: skip


def test_attempts_from_128_on_are_four_bytes() -> None:
    hop = dict(h.retry_headers(next_attempt=200, original_timestamp=1, due_ms=2))
    assert hop[h.RETRY_ATTEMPTS] == b"\x00\x00\x00\xc8"
    assert hop[h.RETRY_BACKOFF_TIMESTAMP] == b"\x02"  # BigInteger, as Spring writes it
    assert h.from_big_int(bytes.fromhex("00c8")) == 200


SPRING_LEFE = "org.springframework.kafka.listener.ListenerExecutionFailedException"
JAVA_TRACE = f"""{SPRING_LEFE}: Listener method 'x' threw exception
\tat org.springframework.kafka.listener.Foo.bar(Foo.java:1)
Caused by: java.lang.IllegalStateException: order 42 is broken
\tat com.example.Listener.on(Listener.java:9)
\t... 5 more
Caused by: java.io.IOException: disk on fire
\t... 7 more
"""


def spring_letter(family: h.Family, *, trace: str = JAVA_TRACE) -> dict[str, object]:
    return h.decode(
        [
            (family.exception_fqcn, SPRING_LEFE.encode()),
            (family.exception_cause_fqcn, b"java.lang.IllegalStateException"),
            (family.exception_message,
             b"Listener method 'x' threw exception; order 42 is broken"),
            (family.exception_stacktrace, trace.encode()),
        ]
    )  # fmt: skip


@pytest.mark.parametrize("family", [h.DLT, h.CHAIN])
def test_a_spring_failure_is_the_listeners_exception_with_its_root_cause(
    family: h.Family,
) -> None:
    f = h.failure_in(spring_letter(family))
    assert (f.exception, f.message) == ("java.lang.IllegalStateException", "order 42 is broken")
    assert (f.cause, f.cause_message) == ("java.io.IOException", "disk on fire")
    assert {"java.lang.IllegalStateException", "java.io.IOException", SPRING_LEFE} <= f.names
    plain = h.failure_in(spring_letter(family, trace=JAVA_TRACE.split("Caused by: java.io")[0]))
    assert plain.exception == "java.lang.IllegalStateException" and plain.cause is None


def test_a_redrive_failure_pairs_each_type_with_its_own_message() -> None:
    f = h.failure_in(h.decode(letter()))
    assert (f.exception, f.message) == (f"{__name__}.OrderRejected", "order rejected")
    assert (f.cause, f.cause_message) == ("KeyError", "'sku'")
    no_cause = h.failure_in(h.decode(letter(exc=ValueError("bad"))))
    assert (no_cause.exception, no_cause.message, no_cause.cause) == ("ValueError", "bad", None)
    # Dead letters of older redrive versions carry the root cause in the cause header.
    old = h.decode(
        [(h.DLT_EXCEPTION_FQCN, b"ValueError"), (h.DLT_EXCEPTION_CAUSE_FQCN, b"KeyError"),
         (h.DLT_EXCEPTION_MESSAGE, b"bad value")]
    )  # fmt: skip
    assert (h.failure_in(old).exception, h.failure_in(old).cause) == ("ValueError", "KeyError")
    assert h.failure_in({}) == h.Failure(None, None, None, None, frozenset())
