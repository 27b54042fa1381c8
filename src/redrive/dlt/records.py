"""Reading dead letters: the records of a dead-letter topic with their headers decoded.

Works for dead letters (and retry hops) written by redrive and by Spring Kafka, in either
family of origin and exception headers: ``kafka_dlt-*`` (Spring's dead-letter publisher,
redrive's ``DeadLetter``) and ``kafka_original-*`` / ``kafka_exception-*`` (Spring's
retry-topic chain, redrive's retry topics); ``redrive.headers`` decodes them.
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
    def origin(self) -> h.Origin | None:
        """Where the record first came from (either family), or None when no header says."""
        return h.origin_in(self.decoded)

    @property
    def origin_topic(self) -> str | None:
        return o.topic if (o := self.origin) else None

    @property
    def origin_partition(self) -> int | None:
        return o.partition if (o := self.origin) else None

    @property
    def origin_offset(self) -> int | None:
        return o.offset if (o := self.origin) else None

    @property
    def origin_timestamp(self) -> int | None:
        o = self.origin
        return o.timestamp if o is not None and o.timestamp >= 0 else None

    @property
    def failure(self) -> h.Failure:
        return h.failure_in(self.decoded)

    @property
    def exception(self) -> str | None:
        """The type of the exception the listener threw (Spring's
        ListenerExecutionFailedException taken off)."""
        return self.failure.exception

    @property
    def message(self) -> str | None:
        """That exception's own message."""
        return self.failure.message

    @property
    def cause(self) -> str | None:
        """The type of the root of its cause chain, or None when it has no cause."""
        return self.failure.cause

    @property
    def attempts(self) -> int | None:
        """Attempts made: redrive's own header, else one less than Spring's next-attempt
        number ``retry_topic-attempts``."""
        if isinstance(self.decoded.get(h.REDRIVE_ATTEMPTS), int):
            return int(self.decoded[h.REDRIVE_ATTEMPTS])
        nxt = self.decoded.get(h.RETRY_ATTEMPTS)
        return nxt - 1 if isinstance(nxt, int) else None

    @property
    def due(self) -> int | None:
        """``retry_topic-backoff-timestamp``: when a retry hop is due (epoch ms), or None."""
        v = self.decoded.get(h.RETRY_BACKOFF_TIMESTAMP)
        return v if isinstance(v, int) else None

    @property
    def interruptions(self) -> int:
        """Attempts that never reported an outcome (the process died while handling the
        record): 0 unless ``redrive_dlt-interruptions`` says otherwise."""
        v = self.decoded.get(h.REDRIVE_INTERRUPTIONS)
        return v if isinstance(v, int) else 0

    @property
    def replay_key(self) -> str:
        return f"{self.partition}:{self.offset}"

    @property
    def origin_key(self) -> tuple[str | None, str, int, int] | None:
        """The consumer group and the origin record (topic, partition, offset): dead letters
        with the same one are copies of one record (a consumer killed between the
        dead-letter write and its commit makes the next owner write it again). Two groups
        failing on the same record wrote two dead letters, not copies."""
        o = self.origin
        if o is None:
            return None
        group = self.decoded.get(h.DLT_ORIGINAL_CONSUMER_GROUP)
        return (group if isinstance(group, str) else None, o.topic, o.partition, o.offset)

    def exception_matches(self, name: str) -> bool:
        """True when ``name`` is the full or simple name of the exception, its root cause or
        a wrapper around it."""
        return any(n == name or n.rsplit(".", 1)[-1] == name for n in self.failure.names)

    def summary(self) -> dict[str, Any]:
        failure = self.failure
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
            "exception": failure.exception,
            "message": failure.message,
            "cause": failure.cause,
            "cause_message": failure.cause_message,
            "attempts": self.attempts,
            "due": iso(self.due),
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


def copies(records: Iterable[DeadLetterRecord]) -> dict[str, str]:
    """The copies among `records`: ``replay_key`` of each copy -> that of the first dead
    letter (the earliest written) of the same origin record."""
    first: dict[tuple[str | None, str, int, int], DeadLetterRecord] = {}
    out: dict[str, str] = {}
    for r in sorted(records, key=lambda r: (r.timestamp, r.partition, r.offset)):
        key = r.origin_key
        if key is None:
            continue
        if key in first:
            out[r.replay_key] = first[key].replay_key
        else:
            first[key] = r
    return out


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
    """Every record now in the dead-letter topic `topic`, by partition and offset, as a
    ``read_committed`` reader sees it: the dead letters of aborted transactions are not
    there, and reading stops before a transaction still open (``Commit.transaction()``)."""
    if admin.topic_partitions(bootstrap_servers, topic) is None:
        raise ClientError(f"topic {topic!r} does not exist at {admin.address(bootstrap_servers)}")
    out = []
    # Not read_all: a transactional topic's last offset may be a commit marker, which no
    # reader ever receives; read_as stops at each partition's end (its last stable offset).
    for m in admin.read_as(bootstrap_servers, topic, "read_committed", timeout):
        headers: RawHeaders = tuple(m.headers() or ())
        out.append(
            DeadLetterRecord(
                topic, int(m.partition()), int(m.offset()), int(m.timestamp()[1]), m.key(),
                m.value(), headers, decode_headers(headers),
            )
        )  # fmt: skip
    return out
