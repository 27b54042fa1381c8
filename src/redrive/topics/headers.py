"""Retry-topic headers, with Spring Kafka's names and encodings.

Spring Kafka writes ``retry_topic-attempts``, ``retry_topic-backoff-timestamp`` (epoch ms)
and ``retry_topic-original-timestamp`` (epoch ms) as Java ``BigInteger.toByteArray()``: the
shortest big-endian two's-complement form (a 4-byte int decodes the same way).
``retry_topic-attempts`` is the number of the *next* delivery attempt: 2 on the first retry
topic, and one more than the attempts made on a dead letter, as Spring writes it. On each
hop redrive also writes the dead-letter headers (``kafka_dlt-original-*`` naming the
record's first origin, and the last exception), replacing the previous ones.
"""

from __future__ import annotations

from collections.abc import Iterable
from dataclasses import dataclass

from redrive.message import Message
from redrive.recover import headers as dlt

ATTEMPTS = "retry_topic-attempts"
BACKOFF_TIMESTAMP = "retry_topic-backoff-timestamp"
ORIGINAL_TIMESTAMP = "retry_topic-original-timestamp"
RETRY_PREFIX = "retry_topic-"
BIG_INT_HEADERS = (ATTEMPTS, BACKOFF_TIMESTAMP, ORIGINAL_TIMESTAMP)


def big_int(n: int) -> bytes:
    """Java ``BigInteger.valueOf(n).toByteArray()``."""
    return n.to_bytes(n.bit_length() // 8 + 1, "big", signed=True)


def from_big_int(b: bytes) -> int:
    return int.from_bytes(b, "big", signed=True)


def decode(headers: Iterable[tuple[str, bytes | None]]) -> dict[str, int]:
    """The retry-topic headers as integers (last one wins; undecodable ones left out)."""
    out: dict[str, int] = {}
    for k, v in headers:
        if k in BIG_INT_HEADERS and v:
            out[k] = from_big_int(v)
    return out


@dataclass(frozen=True, slots=True)
class Origin:
    """Where a record first came from, before any retry topic."""

    topic: str
    partition: int
    offset: int
    timestamp: int
    timestamp_type: int


_TS_TYPES = {v: k for k, v in dlt.TIMESTAMP_TYPES.items()}


def origin_of(msg: Message) -> Origin:
    """The origin named by the record's dead-letter headers, else the record itself."""
    d = dlt.decode(msg.headers)
    topic = d.get(dlt.ORIGINAL_TOPIC)
    partition = d.get(dlt.ORIGINAL_PARTITION)
    offset = d.get(dlt.ORIGINAL_OFFSET)
    if not isinstance(topic, str) or not isinstance(partition, int) or offset is None:
        return Origin(msg.topic, msg.partition, msg.offset, msg.timestamp, msg.timestamp_type)
    return Origin(
        topic, partition, int(offset), int(d.get(dlt.ORIGINAL_TIMESTAMP, msg.timestamp)),
        _TS_TYPES.get(str(d.get(dlt.ORIGINAL_TIMESTAMP_TYPE)), 1),
    )  # fmt: skip


def due_ms(msg: Message) -> int | None:
    """When the record may be handled (epoch ms), or None when it carries no due time."""
    v = msg.header(BACKOFF_TIMESTAMP)
    return from_big_int(v) if v else None


def attempts_of(msg: Message) -> int | None:
    v = msg.header(ATTEMPTS)
    return from_big_int(v) if v else None


def due_ms_of(headers: Iterable[tuple[str, bytes | None]] | None) -> int | None:
    """The due time (epoch ms) in raw record headers, or None."""
    return decode(headers or ()).get(BACKOFF_TIMESTAMP)
