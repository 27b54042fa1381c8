"""Reading dead letters: the records of a dead-letter topic with their headers decoded.

Works for dead letters written by redrive and by Spring Kafka's dead-letter publisher (same
``kafka_dlt-*`` and ``retry_topic-*`` header names and encodings); ``redrive.headers``
decodes them.
"""

from __future__ import annotations

import datetime as dt
from collections.abc import Iterable
from dataclasses import dataclass, field
from typing import Any

import redrive.admin as admin
import redrive.headers as h
from redrive.errors import ClientError

RawHeaders = tuple[tuple[str, bytes | None], ...]


def iso(ms: int | None) -> str | None:
    """Epoch milliseconds as an ISO-8601 UTC time."""
    if ms is None or ms <= 0:
        return None
    return dt.datetime.fromtimestamp(ms / 1000, dt.UTC).isoformat(timespec="milliseconds")


def decode_headers(headers: Iterable[tuple[str, bytes | None]]) -> dict[str, Any]:
    """Every header decoded: dead-letter and retry-topic ones to their values (numbers for
    the binary ones), the others as text, or hex when they are not UTF-8."""
    return h.decode_all(headers)


@dataclass(frozen=True, slots=True)
class DeadLetterRecord:
    """One record of a dead-letter topic."""

    topic: str
    partition: int
    offset: int
    timestamp: int  # when it was dead-lettered (epoch ms)
    key: bytes | None
    value: bytes | None
    headers: RawHeaders
    decoded: dict[str, Any] = field(default_factory=dict)

    @property
    def origin_topic(self) -> str | None:
        v = self.decoded.get(h.DLT_ORIGINAL_TOPIC)
        return v if isinstance(v, str) else None

    @property
    def origin_partition(self) -> int | None:
        v = self.decoded.get(h.DLT_ORIGINAL_PARTITION)
        return v if isinstance(v, int) else None

    @property
    def origin_offset(self) -> int | None:
        v = self.decoded.get(h.DLT_ORIGINAL_OFFSET)
        return v if isinstance(v, int) else None

    @property
    def origin_timestamp(self) -> int | None:
        v = self.decoded.get(h.DLT_ORIGINAL_TIMESTAMP)
        return v if isinstance(v, int) else None

    @property
    def exception(self) -> str | None:
        """The exception's type: the cause's when the exception only wraps it (Spring's
        ListenerExecutionFailedException), else the exception's own."""
        return self.decoded.get(h.DLT_EXCEPTION_CAUSE_FQCN) or self.decoded.get(
            h.DLT_EXCEPTION_FQCN
        )

    @property
    def message(self) -> str | None:
        return self.decoded.get(h.DLT_EXCEPTION_MESSAGE)

    @property
    def attempts(self) -> int | None:
        """Attempts made: redrive's own header, else one less than Spring's next-attempt
        number ``retry_topic-attempts``."""
        if isinstance(self.decoded.get(h.REDRIVE_ATTEMPTS), int):
            return int(self.decoded[h.REDRIVE_ATTEMPTS])
        nxt = self.decoded.get(h.RETRY_ATTEMPTS)
        return nxt - 1 if isinstance(nxt, int) else None

    @property
    def interruptions(self) -> int:
        """Attempts that never reported an outcome (the process died while handling the
        record): 0 unless ``redrive_dlt-interruptions`` says otherwise."""
        v = self.decoded.get(h.REDRIVE_INTERRUPTIONS)
        return v if isinstance(v, int) else 0

    @property
    def replay_key(self) -> str:
        return f"{self.partition}:{self.offset}"

    def exception_matches(self, name: str) -> bool:
        """True when ``name`` is the full or simple name of the exception or its cause."""
        names = {
            self.decoded.get(h.DLT_EXCEPTION_FQCN),
            self.decoded.get(h.DLT_EXCEPTION_CAUSE_FQCN),
        }
        return any(n and (n == name or n.rsplit(".", 1)[-1] == name) for n in names)

    def summary(self) -> dict[str, Any]:
        return {
            "partition": self.partition,
            "offset": self.offset,
            "time": iso(self.timestamp),
            "origin": {
                "topic": self.origin_topic,
                "partition": self.origin_partition,
                "offset": self.origin_offset,
                "time": iso(self.origin_timestamp),
            },
            "exception": self.exception,
            "message": self.message,
            "attempts": self.attempts,
            "interruptions": self.interruptions,
            "consumer_group": self.decoded.get(h.DLT_ORIGINAL_CONSUMER_GROUP),
        }

    def full(self, preview: int = 2000) -> dict[str, Any]:
        return {
            **self.summary(),
            "topic": self.topic,
            "key": _preview(self.key, preview),
            "value": _preview(self.value, preview),
            "value_bytes": None if self.value is None else len(self.value),
            "headers": self.decoded,
        }


def _preview(b: bytes | None, limit: int) -> str | None:
    if b is None:
        return None
    try:
        text = b[:limit].decode("utf-8")
    except UnicodeDecodeError:
        return "0x" + b[:limit].hex() + ("..." if len(b) > limit else "")
    return text + ("..." if len(b) > limit else "")


def read(
    bootstrap_servers: admin.Servers, topic: str, timeout: float = 30.0
) -> list[DeadLetterRecord]:
    """Every record now in the dead-letter topic `topic`, by partition and offset."""
    if admin.topic_partitions(bootstrap_servers, topic) is None:
        raise ClientError(f"topic {topic!r} does not exist at {admin.address(bootstrap_servers)}")
    out = []
    for m in admin.read_all(bootstrap_servers, topic, timeout):
        headers: RawHeaders = tuple(m.headers() or ())
        out.append(
            DeadLetterRecord(
                topic, int(m.partition()), int(m.offset()), int(m.timestamp()[1]), m.key(),
                m.value(), headers, decode_headers(headers),
            )
        )  # fmt: skip
    return out
