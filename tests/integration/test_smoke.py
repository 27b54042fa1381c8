"""Smoke: a real broker carries 1,000 records through a consumer group with commits."""

from __future__ import annotations

from collections import Counter

import pytest
from confluent_kafka import Consumer

from redrive import admin

pytestmark = pytest.mark.integration


def test_thousand_records_through_a_group(kafka: str, make_topic, names) -> None:  # type: ignore[no-untyped-def]
    topic = make_topic("smoke", partitions=3)
    sent = admin.produce(kafka, topic, [(f"k{i}", f"v{i}") for i in range(1000)])
    group = names.group()
    consumer = Consumer(
        {"bootstrap.servers": kafka, "group.id": group, "auto.offset.reset": "earliest",
         "enable.auto.commit": False}
    )  # fmt: skip
    seen: Counter[str] = Counter()
    try:
        consumer.subscribe([topic])
        while sum(seen.values()) < 1000:
            batch = consumer.consume(200, 5.0)
            assert batch, "no records within 5 s"
            for m in batch:
                assert m.error() is None
                seen[m.value().decode()] += 1
            consumer.commit(asynchronous=False)
    finally:
        consumer.close()
    assert seen == Counter(f"v{i}" for i in range(1000))
    ends = admin.end_offsets(kafka, topic)
    assert sum(ends.values()) == 1000 == len(sent)
    assert admin.committed_offsets(kafka, group, topic) == ends
