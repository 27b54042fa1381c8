"""The publisher on a fake producer: settings, waiting for the acknowledgement, never a
second copy of an unacknowledged write, clear errors."""

from __future__ import annotations

import pytest

from redrive import Message, RecoveryFailed
from redrive.publish import Delivery, Publisher

from .fake_producer import Factory

SOURCE = Message("orders", 1, 7)
KAFKA = {"bootstrap.servers": "k:9092", "group.id": "g", "fetch.wait.max.ms": 50,
         "security.protocol": "SSL"}  # fmt: skip


def started(factory: Factory, **options: object) -> Publisher:
    publisher = Publisher(factory=factory, **options)  # type: ignore[arg-type]
    publisher.start(KAFKA)
    return publisher


def test_start_creates_an_idempotent_producer_from_the_listener_settings() -> None:
    factory = Factory()
    started(factory, overrides={"linger.ms": 5})
    assert factory.producer.settings == {
        "bootstrap.servers": "k:9092", "security.protocol": "SSL", "acks": "all",
        "enable.idempotence": True, "linger.ms": 5, "log_level": 3,
    }  # fmt: skip


def test_publishing_before_start_says_how_to_fix_it() -> None:
    with pytest.raises(RuntimeError, match=r"start\(kafka\)"):
        Publisher(factory=Factory()).publish(SOURCE, "orders-dlt", 1, b"k", b"v", [])


def test_publish_returns_once_acknowledged() -> None:
    factory = Factory(orders_dlt=2)
    publisher = started(factory)
    headers = [("a", b"1")]
    delivery = publisher.publish(SOURCE, "orders-dlt", 1, b"k", b"v", headers)
    assert delivery == Delivery("orders-dlt", 1, 0)
    (sent,) = factory.producer.sent
    assert (sent.topic, sent.partition, sent.key, sent.value, sent.headers) == (
        "orders-dlt", 1, b"k", b"v", headers
    )  # fmt: skip


def test_a_partition_the_topic_lacks_is_left_to_the_partitioner() -> None:
    factory = Factory(orders_dlt=1)
    publisher = started(factory)
    publisher.publish(SOURCE, "orders-dlt", 1, None, b"v", [])
    publisher.publish(Message("orders", 0, 8), "orders-dlt", None, None, b"v", [])
    assert [s.partition for s in factory.producer.sent] == [None, None]
    assert factory.producer.metadata_calls == 1  # the partition count is remembered


def test_a_missing_topic_is_named() -> None:
    publisher = started(Factory())
    with pytest.raises(RecoveryFailed, match=r"dead-letter topic 'orders-dlt' is not available"):
        publisher.publish(SOURCE, "orders-dlt", 1, None, b"v", [])
    with pytest.raises(RecoveryFailed, match=r"retry topic 'orders-retry-0' is not available"):
        publisher.publish(SOURCE, "orders-retry-0", 1, None, b"v", [], role="retry")


def test_an_unacknowledged_write_is_awaited_not_sent_twice() -> None:
    factory = Factory(orders_dlt=2)
    publisher = started(factory)
    factory.producer.hold = True
    with pytest.raises(RecoveryFailed, match="not acknowledged within 15 s"):
        publisher.publish(SOURCE, "orders-dlt", 1, None, b"v", [])
    factory.producer.hold = False
    assert publisher.publish(SOURCE, "orders-dlt", 1, None, b"v", []) == Delivery(
        "orders-dlt", 1, 0
    )
    assert len(factory.producer.sent) == 1
    publisher.publish(SOURCE, "orders-dlt", 1, None, b"v", [])  # acknowledged: a new write
    assert len(factory.producer.sent) == 2


def test_a_failed_write_raises_and_is_sent_again_next_time() -> None:
    factory = Factory(orders_dlt=2)
    publisher = started(factory)
    factory.producer.fail = "Broker: Not enough in-sync replicas"
    with pytest.raises(RecoveryFailed, match="write to 'orders-dlt' failed: Broker: Not enough"):
        publisher.publish(SOURCE, "orders-dlt", 1, None, b"v", [])
    factory.producer.fail = None
    publisher.publish(SOURCE, "orders-dlt", 1, None, b"v", [])
    assert len(factory.producer.sent) == 2
    assert factory.producer.metadata_calls == 2  # asked again after a failure


def test_a_full_queue_is_a_failed_write() -> None:
    factory = Factory(orders_dlt=2)
    publisher = started(factory)

    def full(topic: str, **kwargs: object) -> None:
        raise BufferError("Local: Queue full")

    factory.producer.produce = full  # type: ignore[method-assign]
    with pytest.raises(RecoveryFailed, match="Queue full"):
        publisher.publish(SOURCE, "orders-dlt", 1, None, b"v", [])


def test_close_flushes_and_a_later_publish_opens_a_new_producer() -> None:
    factory = Factory(orders_dlt=1)
    publisher = started(factory)
    publisher.close()
    assert factory.producer.flushes == 1
    publisher.publish(SOURCE, "orders-dlt", 0, None, b"v", [])
    assert len(factory.made) == 2
    publisher.close()
    publisher.close()  # twice is fine
