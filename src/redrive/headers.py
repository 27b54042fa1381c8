"""The one header codec: every header name, encoder and decoder of dead letters, retry-topic
hops and replays, whoever reads or writes them.

Three families of names meet here:

- Spring Kafka's dead-letter family, ``kafka_dlt-*`` (its ``DeadLetterPublishingRecoverer``,
  ``KafkaHeaders.DLT_*``): where a record came from and why it failed.
  ``kafka_dlt-original-partition`` is a 4-byte big-endian int, ``-offset`` and ``-timestamp``
  are 8-byte big-endian longs, the rest UTF-8 text. A ``Family`` holds these names, so that
  another family of origin-and-cause headers (Spring's retry topics name them
  ``kafka_original-*`` and ``kafka_exception-*``) is written by the same encoder and read
  by the same decoder.
- Spring Kafka's retry-topic family, ``retry_topic-*`` (``RetryTopicHeaders``):
  ``retry_topic-attempts``, ``-backoff-timestamp`` and ``-original-timestamp`` (epoch ms) as
  Java ``BigInteger.toByteArray()``: the shortest big-endian two's-complement form (a 4-byte
  int decodes the same way). ``retry_topic-attempts`` is the number of the *next* delivery
  attempt: 2 on the first retry topic, one more than the attempts made on a dead letter.
- redrive's own: ``redrive_dlt-attempts`` (4-byte int), ``redrive_dlt-first-failure``
  (8-byte long, epoch ms), ``redrive_dlt-interruptions`` (4-byte int, only when attempts
  were interrupted: the process died while handling the record) and ``redrive_replay-of``
  (text, ``<dead-letter topic>/<partition>/<offset>`` a replayed record came from).

Read a record's headers with ``decode`` (the known ones, to Python values)::

    >>> decode([(REDRIVE_ATTEMPTS, b"\\x00\\x00\\x00\\x03"), (RETRY_ATTEMPTS, b"\\x04")])
    {'redrive_dlt-attempts': 3, 'retry_topic-attempts': 4}
"""

from __future__ import annotations

import struct
import traceback
from collections.abc import Iterable
from dataclasses import dataclass
from typing import Any

from redrive.message import Message

Headers = Iterable[tuple[str, bytes | None]]

# -- Spring's dead-letter family (kafka_dlt-*) --------------------------------------------
DLT_ORIGINAL_TOPIC = "kafka_dlt-original-topic"
DLT_ORIGINAL_PARTITION = "kafka_dlt-original-partition"  # 4-byte int
DLT_ORIGINAL_OFFSET = "kafka_dlt-original-offset"  # 8-byte long
DLT_ORIGINAL_TIMESTAMP = "kafka_dlt-original-timestamp"  # 8-byte long, epoch ms
DLT_ORIGINAL_TIMESTAMP_TYPE = "kafka_dlt-original-timestamp-type"
DLT_ORIGINAL_CONSUMER_GROUP = "kafka_dlt-original-consumer-group"
DLT_EXCEPTION_FQCN = "kafka_dlt-exception-fqcn"
DLT_EXCEPTION_CAUSE_FQCN = "kafka_dlt-exception-cause-fqcn"
DLT_EXCEPTION_MESSAGE = "kafka_dlt-exception-message"
DLT_EXCEPTION_STACKTRACE = "kafka_dlt-exception-stacktrace"

# -- Spring's retry-topic family (retry_topic-*), Java BigInteger bytes --------------------
RETRY_ATTEMPTS = "retry_topic-attempts"  # the number of the next attempt
RETRY_BACKOFF_TIMESTAMP = "retry_topic-backoff-timestamp"  # due time, epoch ms
RETRY_ORIGINAL_TIMESTAMP = "retry_topic-original-timestamp"  # epoch ms
RETRY_PREFIX = "retry_topic-"

# -- redrive's own ------------------------------------------------------------------------
REDRIVE_ATTEMPTS = "redrive_dlt-attempts"  # 4-byte int: attempts made
REDRIVE_FIRST_FAILURE = "redrive_dlt-first-failure"  # 8-byte long, epoch ms
REDRIVE_INTERRUPTIONS = "redrive_dlt-interruptions"  # 4-byte int, only when > 0
REPLAY_OF = "redrive_replay-of"
"""Header on a replayed record: ``<dead-letter topic>/<partition>/<offset>`` it came from."""

REPLACED_PREFIXES = ("kafka_dlt-", "redrive_dlt-")
"""Headers a dead-letter write replaces rather than piles up (a replayed record that fails
again gets fresh ones)."""

STACKTRACE_LIMIT = 8192
MESSAGE_LIMIT = 4096
TIMESTAMP_TYPES = {0: "NO_TIMESTAMP_TYPE", 1: "CreateTime", 2: "LogAppendTime"}
_TIMESTAMP_TYPE_CODES = {v: k for k, v in TIMESTAMP_TYPES.items()}


@dataclass(frozen=True, slots=True)
class Family:
    """The names one publisher gives a record's origin and cause (Spring has two sets)."""

    original_topic: str
    original_partition: str  # 4-byte int
    original_offset: str  # 8-byte long
    original_timestamp: str  # 8-byte long
    original_timestamp_type: str
    original_consumer_group: str
    exception_fqcn: str
    exception_cause_fqcn: str
    exception_message: str
    exception_stacktrace: str


DLT = Family(
    DLT_ORIGINAL_TOPIC, DLT_ORIGINAL_PARTITION, DLT_ORIGINAL_OFFSET, DLT_ORIGINAL_TIMESTAMP,
    DLT_ORIGINAL_TIMESTAMP_TYPE, DLT_ORIGINAL_CONSUMER_GROUP, DLT_EXCEPTION_FQCN,
    DLT_EXCEPTION_CAUSE_FQCN, DLT_EXCEPTION_MESSAGE, DLT_EXCEPTION_STACKTRACE,
)  # fmt: skip
"""Spring's dead-letter family, ``kafka_dlt-*``: what redrive writes today."""

FAMILIES: tuple[Family, ...] = (DLT,)
"""Every origin-and-cause family ``decode`` and ``origin_of`` read, the preferred first."""

_INT = frozenset(
    {REDRIVE_ATTEMPTS, REDRIVE_INTERRUPTIONS, *(f.original_partition for f in FAMILIES)}
)
_LONG = frozenset(
    {
        REDRIVE_FIRST_FAILURE,
        *(n for f in FAMILIES for n in (f.original_offset, f.original_timestamp)),
    }
)
_BIG_INT = frozenset({RETRY_ATTEMPTS, RETRY_BACKOFF_TIMESTAMP, RETRY_ORIGINAL_TIMESTAMP})
_TEXT_PREFIXES = (*REPLACED_PREFIXES, REPLAY_OF)


# -- encodings ----------------------------------------------------------------------------


def int32(n: int) -> bytes:
    """Java ``int``: 4 bytes, big-endian."""
    return struct.pack(">i", n)


def int64(n: int) -> bytes:
    """Java ``long``: 8 bytes, big-endian."""
    return struct.pack(">q", n)


def big_int(n: int) -> bytes:
    """Java ``BigInteger.valueOf(n).toByteArray()``."""
    return n.to_bytes(n.bit_length() // 8 + 1, "big", signed=True)


def from_big_int(b: bytes) -> int:
    return int.from_bytes(b, "big", signed=True)


# -- exceptions ---------------------------------------------------------------------------


def fqcn(exc_type: type[BaseException]) -> str:
    module = exc_type.__module__
    return exc_type.__qualname__ if module == "builtins" else f"{module}.{exc_type.__qualname__}"


def _name(exc: BaseException) -> str:
    # An exception standing for one seen by another process carries that one's type name.
    name = getattr(exc, "fqcn", None)
    return name if isinstance(name, str) and name else fqcn(type(exc))


def root_cause(exc: BaseException) -> BaseException:
    seen = {id(exc)}
    while True:
        nxt = exc.__cause__ or (None if exc.__suppress_context__ else exc.__context__)
        if nxt is None or id(nxt) in seen:
            return exc
        seen.add(id(nxt))
        exc = nxt


def stacktrace(exc: BaseException, limit: int = STACKTRACE_LIMIT) -> str:
    # Long lines (huge exception messages) are cut first, so the frames and the exception
    # types survive the overall cap.
    line_limit = max(limit // 8, 80)
    text = "".join(
        line if len(line) <= line_limit else f"{line[:line_limit]}...(truncated)\n"
        for chunk in traceback.format_exception(exc)
        for line in chunk.splitlines(keepends=True)
    )
    if len(text) > limit:  # keep the end: the innermost frames and the message
        text = "...(truncated)\n" + text[-(limit - 16) :]
    return text


# -- writing ------------------------------------------------------------------------------


def dead_letter_headers(
    *,
    topic: str,
    partition: int,
    offset: int,
    timestamp: int,
    timestamp_type: int,
    group_id: str,
    exc: BaseException,
    attempts: int,
    first_failure: float,
    interruptions: int = 0,
    original: Headers = (),
    family: Family = DLT,
) -> list[tuple[str, bytes]]:
    """The headers of a dead letter (or a retry hop): the ``original`` ones less old
    dead-letter headers, then origin and cause in ``family``'s names, then redrive's own.

    ``first_failure`` is in epoch seconds; ``interruptions`` is written only when > 0."""
    kept = [
        (k, v if v is not None else b"") for k, v in original if not k.startswith(REPLACED_PREFIXES)
    ]
    cause = root_cause(exc)
    out = [
        *kept,
        (family.original_topic, topic.encode()),
        (family.original_partition, int32(partition)),
        (family.original_offset, int64(offset)),
        (family.original_timestamp, int64(timestamp)),
        (
            family.original_timestamp_type,
            TIMESTAMP_TYPES.get(timestamp_type, "CreateTime").encode(),
        ),
        (family.original_consumer_group, group_id.encode()),
        (family.exception_fqcn, _name(exc).encode()),
        (family.exception_cause_fqcn, _name(cause).encode()),
        (family.exception_message, str(exc).encode()[:MESSAGE_LIMIT]),
        (family.exception_stacktrace, stacktrace(exc).encode()),
        (REDRIVE_ATTEMPTS, int32(attempts)),
        (REDRIVE_FIRST_FAILURE, int64(int(first_failure * 1000))),
    ]
    if interruptions > 0:
        out.append((REDRIVE_INTERRUPTIONS, int32(interruptions)))
    return out


def retry_headers(
    *, next_attempt: int, original_timestamp: int, due_ms: int | None
) -> list[tuple[str, bytes]]:
    """The ``retry_topic-*`` headers of a hop: the number the next attempt has (as Spring
    counts), the origin's timestamp, and when the record is due (epoch ms; None on a dead
    letter)."""
    out = [
        (RETRY_ATTEMPTS, big_int(next_attempt)),
        (RETRY_ORIGINAL_TIMESTAMP, big_int(original_timestamp)),
    ]
    if due_ms is not None:
        out.append((RETRY_BACKOFF_TIMESTAMP, big_int(due_ms)))
    return out


def replay_marker(topic: str, partition: int, offset: int) -> tuple[str, bytes]:
    """The ``redrive_replay-of`` header of a record replayed from a dead letter."""
    return (REPLAY_OF, f"{topic}/{partition}/{offset}".encode())


# -- reading ------------------------------------------------------------------------------


def decode(headers: Headers) -> dict[str, Any]:
    """The dead-letter, retry-topic and redrive headers among `headers` as Python values
    (ints for the binary ones, text for the others; last one wins). Other headers, and
    binary ones of the wrong size, are left out or kept as text."""
    out: dict[str, Any] = {}
    for k, v in headers:
        if v is None:
            continue
        if k in _BIG_INT:
            if v:
                out[k] = from_big_int(v)
        elif k in _INT and len(v) == 4:
            out[k] = struct.unpack(">i", v)[0]
        elif k in _LONG and len(v) == 8:
            out[k] = struct.unpack(">q", v)[0]
        elif k.startswith(_TEXT_PREFIXES):
            out[k] = v.decode("utf-8", errors="replace")
    return out


def decode_all(headers: Headers) -> dict[str, Any]:
    """Every header: the known ones as ``decode`` gives them, the others as text, or hex
    (``0x...``) when they are not UTF-8, or None."""
    headers = list(headers)
    out: dict[str, Any] = {}
    for k, v in headers:
        if v is None:
            out[k] = None
            continue
        try:
            out[k] = v.decode("utf-8")
        except UnicodeDecodeError:
            out[k] = "0x" + v.hex()
    out.update(decode(headers))
    return out


@dataclass(frozen=True, slots=True)
class Origin:
    """Where a record first came from, before any retry topic."""

    topic: str
    partition: int
    offset: int
    timestamp: int
    timestamp_type: int

    @classmethod
    def of(cls, msg: Message) -> Origin:
        """The record itself as an origin."""
        return cls(msg.topic, msg.partition, msg.offset, msg.timestamp, msg.timestamp_type)


def origin_of(msg: Message) -> Origin:
    """The origin named by the record's origin headers (any family), else the record itself."""
    d = decode(msg.headers)
    for f in FAMILIES:
        topic = d.get(f.original_topic)
        partition = d.get(f.original_partition)
        offset = d.get(f.original_offset)
        if isinstance(topic, str) and isinstance(partition, int) and isinstance(offset, int):
            return Origin(
                topic, partition, offset, int(d.get(f.original_timestamp, msg.timestamp)),
                _TIMESTAMP_TYPE_CODES.get(str(d.get(f.original_timestamp_type)), 1),
            )  # fmt: skip
    return Origin.of(msg)


def due_ms(msg: Message) -> int | None:
    """When the record may be handled (epoch ms), or None when it carries no due time."""
    v = msg.header(RETRY_BACKOFF_TIMESTAMP)
    return from_big_int(v) if v else None


def attempts_of(msg: Message) -> int | None:
    """``retry_topic-attempts``: the number of this delivery attempt of a retry-topic record."""
    v = msg.header(RETRY_ATTEMPTS)
    return from_big_int(v) if v else None


def first_failure_of(msg: Message) -> float | None:
    """``redrive_dlt-first-failure`` in epoch seconds, or None."""
    v = decode(msg.headers).get(REDRIVE_FIRST_FAILURE)
    return v / 1000 if isinstance(v, int) else None
