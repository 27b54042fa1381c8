"""From what a poll returns to the ``Message`` a handler sees (keys and values decoded)."""

from __future__ import annotations

from redrive.consumer.client import RawRecord
from redrive.errors import DeserializationError
from redrive.message import Message, TopicPartition
from redrive.serde import Deserializer


class Decoder:
    """Builds messages; one ``TopicPartition`` per partition, not one per record."""

    def __init__(self, key: Deserializer | None, value: Deserializer | None) -> None:
        self.key = key
        self.value = value
        self._decode = key is not None or value is not None
        self._tps: dict[str, dict[int, TopicPartition]] = {}

    def __call__(self, raw: RawRecord) -> Message:
        key = raw.key()
        value = raw.value()
        ts_type, ts = raw.timestamp()
        headers = raw.headers()
        topic = raw.topic()
        partition = raw.partition()
        tps = self._tps.get(topic)
        tp = tps.get(partition) if tps is not None else None
        if tp is None:
            tp = self._tps.setdefault(topic, {}).setdefault(
                partition, TopicPartition(topic, partition)
            )
        msg = Message(
            topic, partition, raw.offset(), key, value,
            raw_key=key, raw_value=value, headers=tuple(headers) if headers else (),
            timestamp=ts, timestamp_type=ts_type, tp=tp,
        )  # fmt: skip
        if self._decode:
            try:
                if self.key is not None:
                    msg.key = self.key(key)
                if self.value is not None:
                    msg.value = self.value(value)
            except Exception as exc:
                err = DeserializationError(
                    f"{msg.topic}[{msg.partition}]@{msg.offset} could not be decoded: "
                    f"{type(exc).__name__}: {exc}"
                )
                err.__cause__ = exc
                msg.error = err
        return msg
