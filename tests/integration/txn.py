"""Reading output topics of transactional listeners in tests, as ``read_committed`` and
``read_uncommitted`` readers see them."""

from __future__ import annotations

import time
from typing import Any, Literal

from confluent_kafka import OFFSET_BEGINNING, Consumer, KafkaError
from confluent_kafka import TopicPartition as KTopicPartition

from redrive import admin

Isolation = Literal["read_committed", "read_uncommitted"]


def read(kafka: str, topic: str, isolation: Isolation = "read_committed",
         timeout: float = 30.0) -> list[Any]:  # fmt: skip
    """Every record of `topic` a reader with `isolation` sees now, partition by partition.
    A ``read_committed`` reader stops at an open transaction (the last stable offset)."""
    n = admin.topic_partitions(kafka, topic) or 0
    consumer = Consumer(
        {
            "bootstrap.servers": kafka,
            "group.id": "redrive-txn-peek",
            "enable.auto.commit": False,
            "enable.partition.eof": True,
            "isolation.level": isolation,
            "log_level": 3,
        }
    )
    out: list[Any] = []
    try:
        consumer.assign([KTopicPartition(topic, p, OFFSET_BEGINNING) for p in range(n)])
        at_end: set[int] = set()
        deadline = time.monotonic() + timeout
        while len(at_end) < n:
            if time.monotonic() > deadline:
                raise AssertionError(f"reading {topic!r} ({isolation}) timed out")
            for m in consumer.consume(1000, 0.2):
                err = m.error()
                if err is None:
                    out.append(m)
                elif err.code() == KafkaError._PARTITION_EOF:
                    at_end.add(int(m.partition() or 0))
    finally:
        consumer.close()
    out.sort(key=lambda m: (m.partition(), m.offset()))
    return out


def values(records: list[Any]) -> list[bytes]:
    return [r.value() for r in records]
