"""Small Kafka chores shared by the CLI, the lab and tests: topics, producing, offsets."""

from __future__ import annotations

import time
from collections.abc import Iterable, Mapping, Sequence
from typing import Any

from confluent_kafka import Consumer, KafkaException, Producer
from confluent_kafka import TopicPartition as KTopicPartition
from confluent_kafka.admin import AdminClient, NewTopic  # type: ignore[attr-defined]

from redrive.errors import ClientError, KafkaUnavailable
from redrive.message import TopicPartition

Record = tuple[bytes | str | None, bytes | str | None] | bytes | str


Servers = str | Mapping[str, Any]
"""A bootstrap address, or a full client configuration (security settings included) that
holds ``bootstrap.servers``."""


def client_config(servers: Servers) -> dict[str, Any]:
    """The client settings for `servers`."""
    if isinstance(servers, str):
        return {"bootstrap.servers": servers}
    return dict(servers)


def address(servers: Servers) -> str:
    """The bootstrap address alone (never the secrets of a configuration), for messages."""
    return servers if isinstance(servers, str) else str(servers.get("bootstrap.servers"))


def _quiet(servers: Servers, extra: Mapping[str, Any] | None = None) -> dict[str, Any]:
    return {"log_level": 0, **client_config(servers), **(extra or {})}


def check_reachable(bootstrap_servers: Servers, timeout: float = 10.0) -> None:
    """Raise KafkaUnavailable, naming the address, when no broker answers in time."""
    admin = AdminClient(_quiet(bootstrap_servers))
    try:
        admin.list_topics(timeout=timeout)
    except KafkaException as exc:
        raise KafkaUnavailable(
            f"no Kafka broker answered at {address(bootstrap_servers)} within {timeout:g} s "
            f"({exc.args[0].str() if exc.args else exc}). Is the broker running? For a local "
            "one: `redrive broker up`."
        ) from None


def create_topics(
    bootstrap_servers: Servers,
    topics: Mapping[str, int] | Iterable[str],
    *,
    config: Mapping[str, str] | None = None,
    timeout: float = 30.0,
) -> None:
    """Create topics (name -> partitions, or names with 1 partition); existing ones are kept."""
    wanted = dict(topics) if isinstance(topics, Mapping) else {t: 1 for t in topics}
    admin = AdminClient(_quiet(bootstrap_servers))
    new = [
        NewTopic(name, num_partitions=n, replication_factor=-1, config=dict(config or {}))
        for name, n in wanted.items()
    ]
    for name, fut in admin.create_topics(new, operation_timeout=timeout).items():
        try:
            fut.result(timeout)
        except KafkaException as exc:
            if exc.args[0].name() != "TOPIC_ALREADY_EXISTS":
                raise ClientError(f"could not create topic {name!r}: {exc.args[0].str()}") from None
    wait_for_leaders(admin, wanted, timeout)


def wait_for_leaders(admin: AdminClient, wanted: Mapping[str, int], timeout: float) -> None:
    """Wait until every topic in `wanted` has its partitions, each with a leader."""
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        md = admin.list_topics(timeout=timeout)
        if all(
            name in md.topics
            and md.topics[name].error is None
            and len(md.topics[name].partitions) >= n
            and all(p.leader >= 0 for p in md.topics[name].partitions.values())
            for name, n in wanted.items()
        ):
            return
        time.sleep(0.05)
    raise ClientError(f"topics {sorted(wanted)} had no leaders after {timeout:g} s")


def topic_partitions(bootstrap_servers: Servers, topic: str, timeout: float = 10.0) -> int | None:
    """The partition count of `topic`, or None when it does not exist."""
    admin = AdminClient(_quiet(bootstrap_servers))
    md = admin.list_topics(topic=topic, timeout=timeout)
    t = md.topics.get(topic)
    if t is None or t.error is not None:
        return None
    return len(t.partitions)


def _bytes(v: bytes | str | None) -> bytes | None:
    return v.encode() if isinstance(v, str) else v


def produce(
    bootstrap_servers: Servers,
    topic: str,
    records: Iterable[Record],
    *,
    partition: int | None = None,
    headers: Sequence[tuple[str, bytes]] | None = None,
) -> list[tuple[int, int]]:
    """Produce records (values, or (key, value) pairs) and wait for every acknowledgement.

    Returns (partition, offset) of each record in order.
    """
    producer = Producer(_quiet(bootstrap_servers, {"linger.ms": 5}))
    results: list[tuple[int, int] | None] = []
    errors: list[str] = []

    def report(i: int) -> Any:
        def on_delivery(err: Any, msg: Any) -> None:
            if err is not None:
                errors.append(str(err))
            else:
                results[i] = (msg.partition(), msg.offset())

        return on_delivery

    for i, rec in enumerate(records):
        key, value = rec if isinstance(rec, tuple) else (None, rec)
        results.append(None)
        kwargs: dict[str, Any] = {"key": _bytes(key), "value": _bytes(value)}
        if partition is not None:
            kwargs["partition"] = partition
        if headers:
            kwargs["headers"] = list(headers)
        while True:
            try:
                producer.produce(topic, on_delivery=report(i), **kwargs)
                break
            except BufferError:
                producer.poll(0.1)
        producer.poll(0)
    remaining = producer.flush(30)
    if remaining or errors:
        raise ClientError(f"producing to {topic!r} failed: {errors or f'{remaining} unsent'}")
    return [r for r in results if r is not None]


def committed_offsets(
    bootstrap_servers: Servers, group_id: str, topic: str, partitions: int | None = None
) -> dict[int, int | None]:
    """The group's committed position per partition of `topic` (None: nothing committed)."""
    n = partitions or topic_partitions(bootstrap_servers, topic) or 0
    consumer = Consumer(
        _quiet(bootstrap_servers, {"group.id": group_id,
                "enable.auto.commit": False})
    )  # fmt: skip
    try:
        got = consumer.committed([KTopicPartition(topic, p) for p in range(n)], timeout=10)
    finally:
        consumer.close()
    return {tp.partition: (tp.offset if tp.offset >= 0 else None) for tp in got}


def committed_metadata(bootstrap_servers: Servers, group_id: str, tp: TopicPartition) -> str | None:
    """The metadata string committed with the group's position of one partition."""
    consumer = Consumer(
        _quiet(bootstrap_servers, {"group.id": group_id,
                "enable.auto.commit": False})
    )  # fmt: skip
    try:
        (got,) = consumer.committed([KTopicPartition(tp.topic, tp.partition)], timeout=10)
    finally:
        consumer.close()
    return got.metadata or None


def end_offsets(bootstrap_servers: Servers, topic: str) -> dict[int, int]:
    """The end offset (high watermark) per partition of `topic`."""
    n = topic_partitions(bootstrap_servers, topic) or 0
    consumer = Consumer(_quiet(bootstrap_servers, {"group.id": "redrive-peek"}))
    try:
        return {
            p: consumer.get_watermark_offsets(KTopicPartition(topic, p), timeout=10)[1]
            for p in range(n)
        }
    finally:
        consumer.close()


def read_all(bootstrap_servers: Servers, topic: str, timeout: float = 10.0) -> list[Any]:
    """Every record now in `topic` (confluent-kafka messages), partition by partition."""
    ends = end_offsets(bootstrap_servers, topic)
    consumer = Consumer(
        _quiet(bootstrap_servers, {"group.id": "redrive-peek",
                "enable.auto.commit": False})
    )  # fmt: skip
    out: list[Any] = []
    try:
        todo = {p: end for p, end in ends.items() if end > 0}
        consumer.assign([KTopicPartition(topic, p, 0) for p in todo])
        deadline = time.monotonic() + timeout
        seen: dict[int, int] = {}
        while any(seen.get(p, -1) + 1 < end for p, end in todo.items()):
            if time.monotonic() > deadline:
                raise ClientError(f"reading {topic!r} timed out after {timeout:g} s")
            for m in consumer.consume(500, 0.2):
                if m.error() is None:
                    out.append(m)
                    seen[int(m.partition() or 0)] = int(m.offset() or 0)
    finally:
        consumer.close()
    out.sort(key=lambda m: (m.partition(), m.offset()))
    return out
