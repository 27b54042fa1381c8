"""The dead-letter publisher (D1..D3): write, wait for the broker's acknowledgement, then let
the loop commit."""

from __future__ import annotations

import threading
from collections.abc import Callable, Mapping
from typing import Any

from confluent_kafka import KafkaException, Producer

from redrive.errors import RecoveryFailed
from redrive.events import DeadLettered
from redrive.message import Message
from redrive.recover.base import Context
from redrive.recover.headers import dead_letter_headers

# Producer settings that only the consumer understands; everything else (bootstrap, security)
# is shared with the dead-letter producer.
_CONSUMER_ONLY = (
    "group.", "auto.", "enable.auto", "enable.partition.eof", "partition.assignment",
    "session.timeout", "heartbeat", "max.poll", "fetch.", "isolation.level",
    "queued.", "check.crcs", "allow.auto", "group.protocol", "client.rack",
    "enable.auto.offset.store", "consume.",
)  # fmt: skip


def producer_settings(kafka: dict[str, Any] | Any) -> dict[str, Any]:
    return {k: v for k, v in dict(kafka).items() if not str(k).startswith(_CONSUMER_ONLY)}


class DeadLetter:
    """Publish failed records to a dead-letter topic.

    ``topic`` defaults to ``<source topic>-dlt``; it may also be a function of the message.
    The record goes to the same partition number as its source when the dead-letter topic
    has it, else the producer's partitioner picks one. Key, value and headers are kept;
    the ``kafka_dlt-*`` headers say where it came from and why. ``recover`` returns only
    after the broker acknowledged the write; when the write fails it raises, and the loop
    leaves the source record uncommitted and tries again later (D3).
    """

    def __init__(
        self,
        topic: str | Callable[[Message], str] | None = None,
        *,
        same_partition: bool = True,
        timeout: float = 15.0,
        producer: dict[str, Any] | None = None,
    ) -> None:
        self.topic = topic
        self.same_partition = same_partition
        self.timeout = timeout
        self.producer_overrides = dict(producer or {})
        self._producer: Producer | None = None
        self._partitions: dict[str, int] = {}
        # source record -> delivery result of a dead-letter write not yet acknowledged
        self._pending: dict[tuple[str, int, int], dict[str, Any]] = {}
        self._lock = threading.Lock()

    def destination(self, msg: Message) -> str:
        if self.topic is None:
            return f"{msg.topic}-dlt"
        return self.topic(msg) if callable(self.topic) else self.topic

    def prepare(self, kafka: Mapping[str, Any]) -> None:
        """Create the producer when the listener starts: an idempotent producer first asks
        the broker for its id, which would otherwise delay the first dead letter."""
        with self._lock:
            self._producer_with(kafka)

    def _producer_for(self, ctx: Context) -> Producer:
        return self._producer_with(ctx.kafka)

    def _producer_with(self, kafka: Mapping[str, Any]) -> Producer:
        if self._producer is None:
            settings = {
                **producer_settings(kafka),
                "acks": "all",
                "enable.idempotence": True,
                "linger.ms": 0,
                "log_level": 3,
                **self.producer_overrides,
            }
            self._producer = Producer(settings)
        return self._producer

    def _partition_count(self, producer: Producer, topic: str) -> int | None:
        if topic not in self._partitions:
            try:
                md = producer.list_topics(topic=topic, timeout=self.timeout)
            except KafkaException as exc:
                raise RecoveryFailed(f"dead-letter topic {topic!r}: {exc.args[0]}") from None
            t = md.topics.get(topic)
            if t is None or t.error is not None:
                reason = t.error.str() if t is not None and t.error is not None else "missing"
                raise RecoveryFailed(
                    f"dead-letter topic {topic!r} is not available ({reason}); create it "
                    "(e.g. with the source topic's partition count) and the record will be "
                    "dead-lettered on the next try"
                )
            self._partitions[topic] = len(t.partitions)
        return self._partitions[topic]

    def recover(self, msg: Message, exc: BaseException, ctx: Context) -> None:
        topic = self.destination(msg)
        source = (msg.topic, msg.partition, msg.offset)
        with self._lock:
            producer = self._producer_for(ctx)
            result = self._pending.get(source)
            if result is None:  # not written yet (or the last write failed for sure)
                result = self._produce(producer, topic, msg, exc, ctx)
                self._pending[source] = result
            # else: a write that was not acknowledged in time may still be delivered; wait
            # for it rather than writing a second dead letter.
            producer.flush(self.timeout)
            if "err" not in result:
                raise RecoveryFailed(
                    f"dead-letter write to {topic!r} not acknowledged within {self.timeout:g} s"
                )
            del self._pending[source]
            if result["err"] is not None:
                self._partitions.pop(topic, None)
                raise RecoveryFailed(f"dead-letter write to {topic!r} failed: {result['err']}")
        if ctx.bus:
            ctx.bus.emit(
                DeadLettered(
                    ctx.listener, msg.tp, msg.offset, topic, result["partition"],
                    result["offset"], ctx.attempts,
                )
            )  # fmt: skip

    def _produce(
        self, producer: Producer, topic: str, msg: Message, exc: BaseException, ctx: Context
    ) -> dict[str, Any]:
        count = self._partition_count(producer, topic)
        headers: list[tuple[str, str | bytes | None]] = dead_letter_headers(  # type: ignore[assignment]
            topic=msg.topic, partition=msg.partition, offset=msg.offset,
            timestamp=msg.timestamp, timestamp_type=msg.timestamp_type,
            group_id=ctx.group_id, exc=exc, attempts=ctx.attempts,
            first_failure=ctx.first_failure, original=msg.headers,
        )  # fmt: skip
        result: dict[str, Any] = {}

        def on_delivery(err: Any, produced: Any) -> None:
            result["err"] = err
            if err is None:
                result["partition"] = produced.partition()
                result["offset"] = produced.offset()

        kwargs: dict[str, Any] = {}
        if self.same_partition and count is not None and msg.partition < count:
            kwargs["partition"] = msg.partition
        try:
            producer.produce(
                topic, key=msg.raw_key, value=msg.raw_value, headers=headers,
                on_delivery=on_delivery, **kwargs,
            )  # fmt: skip
        except (KafkaException, BufferError) as err:
            self._partitions.pop(topic, None)
            raise RecoveryFailed(f"dead-letter write to {topic!r} failed: {err}") from None
        return result

    def describe(self) -> str:
        where = (
            "<topic>-dlt" if self.topic is None else "a function" if callable(self.topic)
            else self.topic
        )  # fmt: skip
        return f"dead letter to {where} (broker-confirmed before commit)"

    def close(self) -> None:
        if self._producer is not None:
            self._producer.flush(self.timeout)
            self._producer = None
