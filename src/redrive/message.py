"""The record handed to listeners, and topic-partition values.

Position: in redrive, as in Kafka, the *position* of a partition is the offset of the next
record to read. Committing position ``k`` means every record before ``k`` reached a final
outcome; the record at ``k`` is the first one a new owner will read.
"""

from __future__ import annotations

from collections.abc import Callable
from typing import Any, NamedTuple


class TopicPartition(NamedTuple):
    """A topic and a partition number."""

    topic: str
    partition: int

    def __str__(self) -> str:
        return f"{self.topic}[{self.partition}]"


Headers = tuple[tuple[str, bytes | None], ...]


class Message:
    """One Kafka record as a listener sees it.

    ``value`` and ``key`` are decoded by the listener's deserializers (bytes by default);
    ``raw_value`` and ``raw_key`` keep the bytes as they came from Kafka. ``attempt`` is 1 on
    first delivery and grows with every retry, also across rebalances for seek retries.
    ``tp`` is its ``TopicPartition``.
    """

    __slots__ = (
        "topic",
        "partition",
        "tp",
        "offset",
        "key",
        "value",
        "raw_key",
        "raw_value",
        "headers",
        "timestamp",
        "timestamp_type",
        "attempt",
        "error",
        "_ack",
    )

    def __init__(
        self,
        topic: str,
        partition: int,
        offset: int,
        key: Any = None,
        value: Any = None,
        *,
        raw_key: bytes | None = None,
        raw_value: bytes | None = None,
        headers: Headers = (),
        timestamp: int = 0,
        timestamp_type: int = 0,
        attempt: int = 1,
        tp: TopicPartition | None = None,
    ) -> None:
        self.topic = topic
        self.partition = partition
        # Built once: the loop looks it up several times per record (hot path).
        self.tp = tp if tp is not None else TopicPartition(topic, partition)
        self.offset = offset
        self.key = key
        self.value = value
        self.raw_key = raw_key
        self.raw_value = raw_value
        self.headers = headers
        self.timestamp = timestamp
        self.timestamp_type = timestamp_type
        self.attempt = attempt
        self.error: Exception | None = None  # set when the key or value could not be decoded
        self._ack: Callable[[Message], None] | None = None

    def header(self, name: str) -> bytes | None:
        """The value of the last header called ``name``, or None."""
        for k, v in reversed(self.headers):
            if k == name:
                return v
        return None

    def ack(self) -> None:
        """Mark this record as handled (commit policy ``Commit.manual()``).

        Under the other commit policies a handler that returns normally has handled the
        record, and ``ack`` does nothing. You may call it from any thread.
        """
        if self._ack is not None:
            self._ack(self)

    def __repr__(self) -> str:
        return (
            f"Message({self.topic}[{self.partition}]@{self.offset}, key={self.key!r}, "
            f"value={self.value!r}, attempt={self.attempt})"
        )
