"""Produce a record and wait for the broker's acknowledgement: the one way redrive writes
records on behalf of a listener (dead letters, retry-topic hops).

A recoverer returns only after the broker acknowledged its write, so the loop never commits
a source offset whose record is not safely elsewhere (D3)::

    publisher = Publisher()
    publisher.start(listener_settings)                 # creates the idempotent producer
    delivery = publisher.publish(msg, "orders-dlt", 3, key, value, headers)
    publisher.close()

A write that was sent but not acknowledged in time may still arrive. ``publish`` remembers
it by source record: the next call for the same source record waits for that write instead
of sending a second copy.
"""

from __future__ import annotations

import threading
from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass
from typing import Any

from confluent_kafka import KafkaException, Producer

from redrive.errors import RecoveryFailed
from redrive.headers import with_trace
from redrive.message import Message
from redrive.observe.logs import kafka_logging
from redrive.observe.tracing import current_headers

# Settings that only the consumer understands; everything else (bootstrap, security) is
# shared with the producers redrive creates for a listener.
_CONSUMER_ONLY = (
    "group.", "auto.", "enable.auto", "enable.partition.eof", "partition.assignment",
    "session.timeout", "heartbeat", "max.poll", "fetch.", "isolation.level",
    "queued.", "check.crcs", "allow.auto", "group.protocol", "client.rack",
    "enable.auto.offset.store", "consume.",
)  # fmt: skip

PRODUCER_DEFAULTS: Mapping[str, Any] = {
    "acks": "all",
    "enable.idempotence": True,
    "linger.ms": 0,  # one record at a time, waited for: do not hold it back
    "log_level": 3,
}


def producer_settings(kafka: Mapping[str, Any] | Any) -> dict[str, Any]:
    """The consumer settings `kafka` less those only a consumer understands."""
    return {k: v for k, v in dict(kafka).items() if not str(k).startswith(_CONSUMER_ONLY)}


@dataclass(frozen=True, slots=True)
class Delivery:
    """Where the broker stored a published record."""

    topic: str
    partition: int
    offset: int


Header = tuple[str, bytes | None]
_Source = tuple[str, int, int]


@dataclass(slots=True)
class _Write:
    topic: str
    done: bool = False
    error: Any = None
    partition: int = -1
    offset: int = -1


def produce(
    producer: Producer,
    topic: str,
    key: bytes | None,
    value: bytes | None,
    headers: list[Header] | None,
    partition: int | None,
    timeout: float,
    *,
    on_delivery: Callable[[Any, Any], None] | None = None,
) -> None:
    """``producer.produce`` of one record; when the local queue is full (``BufferError``),
    deliveries are let drain (up to `timeout`) and it is tried once more. Kafka's refusal
    (``KafkaException``) and a queue still full are the caller's to name."""
    kwargs: dict[str, Any] = {}
    if partition is not None:
        kwargs["partition"] = partition
    if headers is not None:
        kwargs["headers"] = headers
    if on_delivery is not None:
        kwargs["on_delivery"] = on_delivery
    try:
        producer.produce(topic, value=value, key=key, **kwargs)
    except BufferError:
        producer.flush(timeout)
        producer.produce(topic, value=value, key=key, **kwargs)


class Publisher:
    """An idempotent producer (``acks=all``) that writes one record at a time and waits for
    the broker's acknowledgement.

    ``timeout``: seconds to wait for metadata and for each acknowledgement. ``overrides``:
    producer settings that win over those derived from the listener's. ``factory``: makes
    the producer from its settings (a test may pass a fake). Safe to share between threads:
    one write at a time.
    """

    def __init__(
        self,
        *,
        timeout: float = 15.0,
        overrides: Mapping[str, Any] | None = None,
        factory: Callable[[dict[str, Any]], Producer] = lambda s: Producer(kafka_logging(s)),
    ) -> None:
        self.timeout = timeout
        self.overrides = dict(overrides or {})
        self._factory = factory
        self._settings: dict[str, Any] | None = None
        self._producer: Producer | None = None
        self._partitions: dict[str, int] = {}
        self._pending: dict[_Source, _Write] = {}  # source record -> write not yet acknowledged
        self._lock = threading.Lock()

    def start(self, kafka: Mapping[str, Any]) -> None:
        """Create the producer from the listener's client settings `kafka`, now rather than
        at the first write: an idempotent producer first asks the broker for its id."""
        with self._lock:
            if self._settings is None:
                self._settings = {**producer_settings(kafka), **PRODUCER_DEFAULTS, **self.overrides}
            self._producer_now()

    def _producer_now(self) -> Producer:
        if self._producer is None:
            if self._settings is None:
                raise RuntimeError(
                    "Publisher.start(kafka) was not called: start it with the listener's "
                    "client settings before publishing"
                )
            self._producer = self._factory(dict(self._settings))
        return self._producer

    def partitions(self, topic: str, role: str = "destination") -> int:
        """The partition count of `topic` (asked once, then remembered); raises
        ``RecoveryFailed`` when the topic is missing."""
        with self._lock:
            return self._partition_count(self._producer_now(), topic, role)

    def _partition_count(self, producer: Producer, topic: str, role: str) -> int:
        if topic not in self._partitions:
            try:
                md = producer.list_topics(topic=topic, timeout=self.timeout)
            except KafkaException as exc:
                raise RecoveryFailed(f"{role} topic {topic!r}: {exc.args[0]}") from None
            t = md.topics.get(topic)
            if t is None or t.error is not None:
                reason = t.error.str() if t is not None and t.error is not None else "missing"
                raise RecoveryFailed(
                    f"{role} topic {topic!r} is not available ({reason}); create it "
                    "(e.g. with the source topic's partition count) and the record will be "
                    "written on the next try"
                )
            self._partitions[topic] = len(t.partitions)
        return self._partitions[topic]

    def publish(
        self,
        source: Message,
        topic: str,
        partition: int | None,
        key: bytes | None,
        value: bytes | None,
        headers: Sequence[Header],
        *,
        role: str = "dead-letter",
    ) -> Delivery:
        """Write one record on behalf of the record `source` and wait until the broker
        acknowledged it.

        ``partition`` None, or one the topic does not have, lets the producer's partitioner
        choose. ``role`` names the topic in error messages ("dead-letter", "retry"). Raises
        ``RecoveryFailed`` when the topic is missing, the write fails, or it is not
        acknowledged within ``timeout`` (then the next call for `source` waits for that same
        write instead of sending a second copy, and the returned ``Delivery`` is that write's).
        """
        key_of: _Source = (source.topic, source.partition, source.offset)
        with self._lock:
            producer = self._producer_now()
            write = self._pending.get(key_of)
            if write is None:  # not written yet (or the last write failed for sure)
                count = self._partition_count(producer, topic, role)
                if partition is not None and not 0 <= partition < count:
                    partition = None
                headers = with_trace(headers, current_headers())  # the span being recovered
                write = self._produce(producer, topic, partition, key, value, headers, role)
                self._pending[key_of] = write
            # else: a write that was not acknowledged in time may still be delivered; wait
            # for it rather than writing a second copy.
            producer.flush(self.timeout)
            if not write.done:
                raise RecoveryFailed(
                    f"{role} write to {write.topic!r} not acknowledged within {self.timeout:g} s"
                )
            del self._pending[key_of]
            if write.error is not None:
                self._partitions.pop(write.topic, None)
                raise RecoveryFailed(f"{role} write to {write.topic!r} failed: {write.error}")
            return Delivery(write.topic, write.partition, write.offset)

    def _produce(
        self,
        producer: Producer,
        topic: str,
        partition: int | None,
        key: bytes | None,
        value: bytes | None,
        headers: Sequence[Header],
        role: str,
    ) -> _Write:
        write = _Write(topic)

        def on_delivery(err: Any, produced: Any) -> None:
            write.error = err
            if err is None:
                write.partition = produced.partition()
                write.offset = produced.offset()
            write.done = True

        try:
            produce(producer, topic, key, value, list(headers), partition, self.timeout,
                    on_delivery=on_delivery)  # fmt: skip
        except (KafkaException, BufferError) as err:
            self._partitions.pop(topic, None)
            raise RecoveryFailed(f"{role} write to {topic!r} failed: {err}") from None
        return write

    @property
    def unsettled(self) -> bool:
        """A write was sent but ``publish`` gave up waiting for its acknowledgement: it may
        still be delivered (in a transaction: it is in the open one)."""
        return bool(self._pending)

    def forget(self) -> None:
        """The writes not acknowledged are gone (their transaction was aborted): the next
        ``publish`` for their records writes them again."""
        with self._lock:
            self._pending.clear()

    def close(self) -> None:
        """Wait for what is in flight (up to ``timeout``) and drop the producer; a later
        ``publish`` creates a new one with the same settings."""
        with self._lock:
            if self._producer is not None:
                self._producer.flush(self.timeout)
                self._producer = None
