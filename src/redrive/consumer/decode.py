"""From what a poll returns to the ``Message`` a handler sees (keys and values decoded)."""

from __future__ import annotations

from redrive.consumer.offsets import Runs
from redrive.errors import DeserializationError
from redrive.message import Message, RawRecord, TopicPartition, wrap
from redrive.serde import Deserializer


class Decoder:
    """Builds messages; one ``TopicPartition`` per partition, not one per record. Without
    deserializers a message's key and value are the record's bytes, read when asked for."""

    def __init__(
        self, key: Deserializer | None, value: Deserializer | None, *, one_topic: bool = False
    ) -> None:
        self.key = key
        self.value = value
        self.decodes = key is not None or value is not None
        """False: no message this decoder builds has an ``error``."""
        self._one_topic = one_topic
        self._tps: dict[tuple[str, int], TopicPartition] = {}

    def tp(self, topic: str, partition: int) -> TopicPartition:
        tp = self._tps.get((topic, partition))
        if tp is None:
            tp = self._tps[(topic, partition)] = TopicPartition(topic, partition)
        return tp

    def __call__(self, record: RawRecord) -> Message:
        """The message of one record."""
        return self.poll([record])[0][0]

    def poll(self, records: list[RawRecord]) -> tuple[list[Message], Runs]:
        """The messages of one poll, and their offsets per partition."""
        msgs, runs = wrap(records, self.tp, one_topic=self._one_topic)
        if self.decodes:
            for msg in msgs:
                self._decode(msg)
        return msgs, runs

    def _decode(self, msg: Message) -> None:
        try:
            if self.key is not None:
                msg.key = self.key(msg.raw_key)
            if self.value is not None:
                msg.value = self.value(msg.raw_value)
        except Exception as exc:
            err = DeserializationError(
                f"{msg.topic}[{msg.partition}]@{msg.offset} could not be decoded: "
                f"{type(exc).__name__}: {exc}"
            )
            err.__cause__ = exc
            msg.error = err
