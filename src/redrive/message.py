"""The record handed to listeners, and topic-partition values.

Position: in redrive, as in Kafka, the *position* of a partition is the offset of the next
record to read. Committing position ``k`` means every record before ``k`` reached a final
outcome; the record at ``k`` is the first one a new owner will read.
"""

from __future__ import annotations

from collections.abc import Callable
from typing import Any, NamedTuple, Protocol


class TopicPartition(NamedTuple):
    """A topic and a partition number."""

    topic: str
    partition: int

    def __str__(self) -> str:
        return f"{self.topic}[{self.partition}]"


Headers = tuple[tuple[str, bytes | None], ...]


class RawFields(Protocol):
    """The fields of a record as the client gives them (confluent-kafka's Message)."""

    def key(self) -> bytes | None: ...
    def value(self) -> bytes | None: ...
    def headers(self) -> list[tuple[str, bytes | None]] | None: ...
    def timestamp(self) -> tuple[int, int]: ...


class RawRecord(RawFields, Protocol):
    """What a poll returns: confluent-kafka's Message, or a fake with the same methods."""

    def topic(self) -> str: ...
    def partition(self) -> int: ...
    def offset(self) -> int: ...
    def error(self) -> Any: ...


_RAW: Any = object()  # Message._key / _value: the raw bytes, not decoded


class Message:
    """One Kafka record as a listener sees it.

    ``value`` and ``key`` are decoded by the listener's deserializers (bytes by default);
    ``raw_value`` and ``raw_key`` keep the bytes as they came from Kafka. ``attempt`` is 1 on
    first delivery and grows with every retry, also across rebalances for seek retries.
    ``tp`` is its ``TopicPartition``.

    A record from a poll wraps the client's own record without copying it: the fields a
    handler does not read (headers, timestamp, undecoded key and value) are never fetched.
    """

    __slots__ = ("tp", "offset", "attempt", "error", "_ack", "_raw", "_key", "_value",
                 "_headers")  # fmt: skip

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
        self.tp = tp if tp is not None else TopicPartition(topic, partition)
        self.offset = offset
        self.attempt = attempt
        self.error: Exception | None = None  # set when the key or value could not be decoded
        self._ack: Callable[[Message], None] | None = None
        self._raw: RawFields = _Fields(raw_key, raw_value, timestamp_type, timestamp)
        self._key = key
        self._value = value
        self._headers: Headers | None = headers

    @property
    def topic(self) -> str:
        return self.tp[0]

    @property
    def partition(self) -> int:
        return self.tp[1]

    @property
    def key(self) -> Any:
        key = self._key
        return self._raw.key() if key is _RAW else key

    @key.setter
    def key(self, key: Any) -> None:
        self._key = key

    @property
    def value(self) -> Any:
        value = self._value
        return self._raw.value() if value is _RAW else value

    @value.setter
    def value(self, value: Any) -> None:
        self._value = value

    @property
    def raw_key(self) -> bytes | None:
        return self._raw.key()

    @property
    def raw_value(self) -> bytes | None:
        return self._raw.value()

    @property
    def headers(self) -> Headers:
        headers = self._headers
        if headers is None:
            got = self._raw.headers()
            headers = self._headers = tuple(got) if got else ()
        return headers

    @property
    def timestamp(self) -> int:
        return self._raw.timestamp()[1]

    @property
    def timestamp_type(self) -> int:
        return self._raw.timestamp()[0]

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


class _Fields:
    """The raw fields of a message built by hand (``Message(...)``)."""

    __slots__ = ("_key", "_value", "_timestamp")

    def __init__(self, key: bytes | None, value: bytes | None, ts_type: int, ts: int) -> None:
        self._key = key
        self._value = value
        self._timestamp = (ts_type, ts)

    def key(self) -> bytes | None:
        return self._key

    def value(self) -> bytes | None:
        return self._value

    def headers(self) -> list[tuple[str, bytes | None]] | None:
        return None  # Message keeps the headers it was built with

    def timestamp(self) -> tuple[int, int]:
        return self._timestamp


def wrap(
    records: list[RawRecord], tp_of: Callable[[str, int], TopicPartition], *, one_topic: bool
) -> tuple[list[Message], dict[TopicPartition, list[int]]]:
    """The messages of one poll, each wrapping its record (hot path: no copy, no decoding,
    one ``TopicPartition`` per partition from `tp_of`), and their offsets per partition.
    `one_topic`: all records are of one topic, so a record's partition number alone tells
    whether its partition changed."""
    new = object.__new__
    out: list[Message] = []
    append = out.append
    runs: dict[TopicPartition, list[int]] = {}
    run: list[int] = []
    add = run.append
    topic: str | None = None
    partition = -1
    tp = TopicPartition("", -1)
    for raw in records:
        p = raw.partition()
        if p != partition or (not one_topic and raw.topic() != topic):
            topic, partition = raw.topic(), p
            tp = tp_of(topic, p)
            got = runs.get(tp)
            if got is None:
                got = runs[tp] = []
            add = got.append
        msg = new(Message)
        msg.tp = tp
        msg.offset = offset = raw.offset()
        msg.attempt = 1
        msg.error = None
        msg._ack = None
        msg._raw = raw
        msg._key = _RAW
        msg._value = _RAW
        msg._headers = None
        append(msg)
        add(offset)
    return out, runs
