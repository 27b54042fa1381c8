"""A stand-in for confluent-kafka's Producer, enough for ``redrive.publish.Publisher``."""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Any


class _Error:
    def __init__(self, text: str) -> None:
        self.text = text

    def str(self) -> str:
        return self.text

    def __str__(self) -> str:
        return self.text


@dataclass
class _Topic:
    partitions: dict[int, object]
    error: _Error | None = None


@dataclass
class _Metadata:
    topics: dict[str, _Topic]


class _Produced:
    def __init__(self, partition: int, offset: int) -> None:
        self._partition, self._offset = partition, offset

    def partition(self) -> int:
        return self._partition

    def offset(self) -> int:
        return self._offset


@dataclass
class Sent:
    topic: str
    partition: int | None
    key: bytes | None
    value: bytes | None
    headers: list[tuple[str, bytes | None]]


@dataclass
class FakeProducer:
    """Topics and their partition counts; every record sent; acknowledgements served on
    ``flush`` unless ``hold`` (then the write stays in flight) or ``fail`` (then it fails)."""

    topics: dict[str, int]
    settings: dict[str, Any] = field(default_factory=dict)
    sent: list[Sent] = field(default_factory=list)
    hold: bool = False
    fail: str | None = None
    metadata_calls: int = 0
    flushes: int = 0
    _in_flight: list[tuple[Sent, Any]] = field(default_factory=list)

    def list_topics(self, topic: str | None = None, timeout: float = -1) -> _Metadata:
        self.metadata_calls += 1
        if topic is not None and topic not in self.topics:
            return _Metadata({topic: _Topic({}, _Error("Broker: Unknown topic or partition"))})
        return _Metadata({t: _Topic(dict.fromkeys(range(n))) for t, n in self.topics.items()})

    def produce(self, topic: str, **kwargs: Any) -> None:
        sent = Sent(
            topic, kwargs.get("partition"), kwargs["key"], kwargs["value"], kwargs["headers"]
        )
        self.sent.append(sent)
        self._in_flight.append((sent, kwargs["on_delivery"]))

    def flush(self, timeout: float = -1) -> int:
        self.flushes += 1
        if self.hold:
            return len(self._in_flight)
        for sent, on_delivery in self._in_flight:
            if self.fail is not None:
                on_delivery(_Error(self.fail), None)
            else:
                offset = sum(1 for s in self.sent if s.topic == sent.topic) - 1
                on_delivery(None, _Produced(sent.partition or 0, offset))
        self._in_flight.clear()
        return 0


class Factory:
    """Makes FakeProducers over the same topics and remembers them."""

    def __init__(self, **topics: int) -> None:
        self.topics = {k.replace("_", "-"): v for k, v in topics.items()}
        self.made: list[FakeProducer] = []

    def __call__(self, settings: dict[str, Any]) -> Any:
        self.made.append(FakeProducer(self.topics, settings))
        return self.made[-1]

    @property
    def producer(self) -> FakeProducer:
        return self.made[-1]
