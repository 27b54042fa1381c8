"""Small Kafka chores shared by the CLI, the lab and tests: topics, producing, offsets."""

from __future__ import annotations

import time
from collections.abc import Callable, Generator, Iterable, Mapping, Sequence
from dataclasses import dataclass
from typing import Any, Literal

from confluent_kafka import (
    OFFSET_BEGINNING,
    OFFSET_END,
    Consumer,
    KafkaError,
    KafkaException,
    Producer,
)
from confluent_kafka import TopicPartition as KTopicPartition
from confluent_kafka.admin import (  # type: ignore[attr-defined]
    AdminClient,
    ConfigResource,
    ConfigSource,
    NewTopic,
)

from redrive.errors import ClientError, KafkaUnavailable
from redrive.message import TopicPartition
from redrive.observe.logs import kafka_logging

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
    # librdkafka's lines go to the `redrive.kafka` logger, repeats collapsed.
    return kafka_logging({**client_config(servers), **(extra or {})})


def check_reachable(bootstrap_servers: Servers, timeout: float = 10.0) -> None:
    """Raise KafkaUnavailable, naming the address and librdkafka's reason (connection
    refused, name not resolved, authentication failed), when no broker answers in time."""
    reasons: list[KafkaError] = []
    # Its log lines would say what the error says: only the error is kept (one line).
    admin = AdminClient(_quiet(bootstrap_servers, {"error_cb": reasons.append, "log_level": 0}))
    try:
        admin.list_topics(timeout=timeout)
    except KafkaException as exc:
        admin.poll(0)  # serves the queued error callbacks: the reason is in them
        why = next(
            (e.str() for e in reasons if e.code() != KafkaError._ALL_BROKERS_DOWN),
            exc.args[0].str() if exc.args else str(exc),
        )
        raise KafkaUnavailable(
            f"no Kafka broker answered at {address(bootstrap_servers)} within {timeout:g} s "
            f"({why}). Is the broker running? For a local one: `redrive broker up`."
        ) from None


def create_topics(
    bootstrap_servers: Servers,
    topics: Mapping[str, int] | Iterable[str],
    *,
    config: Mapping[str, str] | None = None,
    timeout: float = 30.0,
    replication_factor: int = -1,
    exist_ok: bool = True,
) -> list[str]:
    """Create topics (name -> partitions, or names with 1 partition) and wait for their
    leaders; return the names created. Existing ones are kept, or with ``exist_ok=False``
    raise ClientError naming them (the others are still created).

    ``replication_factor=-1``: the broker's default.
    """
    wanted = dict(topics) if isinstance(topics, Mapping) else {t: 1 for t in topics}
    admin = AdminClient(_quiet(bootstrap_servers))
    created, existing, refused = create_with(
        admin, wanted, timeout=timeout, config=config, replication_factor=replication_factor
    )
    if refused:
        name, why = next(iter(refused.items()))
        raise ClientError(f"could not create topic {name!r}: {why}")
    wait_for_leaders(admin, wanted, timeout)
    if existing and not exist_ok:
        names = ", ".join(map(repr, sorted(existing)))
        raise ClientError(
            (
                f"topic {names} already exists"
                if len(existing) == 1
                else f"topics {names} already exist"
            )
            + (f" (created {', '.join(map(repr, sorted(created)))})" if created else "")
        )
    return sorted(created)


def create_with(
    admin: AdminClient,
    plan: Mapping[str, int],
    *,
    timeout: float = 30.0,
    config: Mapping[str, str] | None = None,
    replication_factor: int = -1,
) -> tuple[list[str], list[str], dict[str, str]]:
    """Create the topics of `plan` (name -> partitions) with `admin`: the names created,
    those that existed already, and those the broker refused with its reason."""
    if not plan:
        return [], [], {}
    new = [
        NewTopic(name, num_partitions=n, replication_factor=replication_factor,
                 config=dict(config or {}))
        for name, n in plan.items()
    ]  # fmt: skip
    created: list[str] = []
    existing: list[str] = []
    refused: dict[str, str] = {}
    for name, fut in admin.create_topics(new, operation_timeout=timeout).items():
        try:
            fut.result(timeout)
            created.append(name)
        except KafkaException as exc:
            if exc.args[0].name() == "TOPIC_ALREADY_EXISTS":  # or created meanwhile: fine
                existing.append(name)
            else:
                refused[name] = exc.args[0].str()
    return created, existing, refused


def list_topics(
    bootstrap_servers: Servers, *, internal: bool = False, timeout: float = 10.0
) -> dict[str, int]:
    """Topic name -> partition count, sorted by name. Internal topics (whose names start
    with ``__``, such as ``__consumer_offsets``) only with `internal`."""
    admin = AdminClient(_quiet(bootstrap_servers))
    md = admin.list_topics(timeout=timeout)
    return {
        name: len(t.partitions)
        for name, t in sorted(md.topics.items())
        if t.error is None and (internal or not name.startswith("__"))
    }


@dataclass(frozen=True, slots=True)
class PartitionInfo:
    """One partition of a described topic: its leader and replicas (broker ids), and its
    first and end offsets (the end offset is the position of the next record written)."""

    partition: int
    leader: int
    replicas: tuple[int, ...]
    in_sync: tuple[int, ...]
    start_offset: int
    end_offset: int


@dataclass(frozen=True, slots=True)
class TopicInfo:
    """A described topic: its partitions and the settings that differ from the defaults,
    with where each comes from (``topic``: set on the topic; ``broker``: the broker's)."""

    name: str
    partitions: tuple[PartitionInfo, ...]
    configs: dict[str, tuple[str | None, str]]


# confluent-kafka reports a ConfigEntry's source as the int value of ConfigSource.
_SOURCES = {
    ConfigSource.DYNAMIC_TOPIC_CONFIG.value: "topic",
    ConfigSource.DYNAMIC_BROKER_CONFIG.value: "broker",
    ConfigSource.DYNAMIC_DEFAULT_BROKER_CONFIG.value: "broker default",
    ConfigSource.STATIC_BROKER_CONFIG.value: "broker file",
}


def describe_topic(bootstrap_servers: Servers, topic: str, timeout: float = 10.0) -> TopicInfo:
    """Partitions, leaders, offsets and non-default settings of `topic`; ClientError when
    it does not exist. Sensitive settings show as ``(sensitive)``."""
    admin = AdminClient(_quiet(bootstrap_servers))
    md = admin.list_topics(topic=topic, timeout=timeout)
    t = md.topics.get(topic)
    if t is None or t.error is not None:
        raise ClientError(f"topic {topic!r} does not exist")
    (fut,) = admin.describe_configs(
        [ConfigResource(ConfigResource.Type.TOPIC, topic)], request_timeout=timeout
    ).values()
    configs = {
        name: ("(sensitive)" if e.is_sensitive else e.value, _SOURCES.get(int(e.source), "other"))
        for name, e in sorted(fut.result(timeout).items())
        if not e.is_default and int(e.source) != ConfigSource.DEFAULT_CONFIG.value
    }
    consumer = Consumer(_quiet(bootstrap_servers, {"group.id": "redrive-peek"}))
    try:
        parts = []
        for p in sorted(t.partitions.values(), key=lambda p: p.id):
            low, high = consumer.get_watermark_offsets(
                KTopicPartition(topic, p.id), timeout=timeout
            )
            parts.append(PartitionInfo(p.id, p.leader, tuple(p.replicas), tuple(p.isrs), low, high))
    finally:
        consumer.close()
    return TopicInfo(topic, tuple(parts), configs)


def delete_topics(bootstrap_servers: Servers, topics: Sequence[str], timeout: float = 30.0) -> None:
    """Delete `topics`; ClientError naming those the broker refused (or that do not exist)."""
    admin = AdminClient(_quiet(bootstrap_servers))
    failed: list[str] = []
    deleted: list[str] = []
    for name, fut in admin.delete_topics(list(topics), operation_timeout=timeout).items():
        try:
            fut.result(timeout)
            deleted.append(repr(name))
        except KafkaException as exc:
            err = exc.args[0]
            why = "does not exist" if err.name() == "UNKNOWN_TOPIC_OR_PART" else err.str()
            failed.append(f"{name!r} {why}")
    if failed:
        raise ClientError(
            f"could not delete {'; '.join(failed)}"
            + (f" (deleted {', '.join(deleted)})" if deleted else "")
        )


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


Outgoing = tuple[str, bytes | None, bytes | None, Sequence[tuple[str, Any]] | None, int | None]
"""A record to send: topic, key, value, headers, partition (None: the partitioner's)."""


def send(
    settings: Mapping[str, Any], records: Iterable[Outgoing], timeout: float = 30.0
) -> list[tuple[int, int] | str]:
    """Send `records` with a producer made of `settings` and wait up to `timeout` seconds
    for the broker's acknowledgements; per record in order, (partition, offset) or why it
    was not acknowledged. The one bulk path: ``produce`` and ``redrive dlt replay`` use it."""
    producer = Producer(kafka_logging(settings))
    acks: list[tuple[int, int] | str] = []

    def report(i: int) -> Any:
        def on_delivery(err: Any, msg: Any) -> None:
            acks[i] = str(err) if err is not None else (msg.partition(), msg.offset())

        return on_delivery

    for i, (topic, key, value, headers, partition) in enumerate(records):
        acks.append(f"not acknowledged in {timeout:g} s")
        kwargs: dict[str, Any] = {"key": key, "value": value}
        if partition is not None:
            kwargs["partition"] = partition
        if headers:
            kwargs["headers"] = list(headers)
        while True:
            try:
                producer.produce(topic, on_delivery=report(i), **kwargs)
                break
            except BufferError:  # the local queue is full: let deliveries drain it
                producer.poll(0.1)
            except KafkaException as exc:
                acks[i] = str(exc.args[0] if exc.args else exc)
                break
        producer.poll(0)
    producer.flush(timeout)
    return acks


def produce(
    bootstrap_servers: Servers,
    topic: str,
    records: Iterable[Record],
    *,
    partition: int | None = None,
    headers: Sequence[tuple[str, bytes]] | None = None,
    timeout: float = 30.0,
    batch_each: bool = False,
) -> list[tuple[int, int]]:
    """Produce records (values, or (key, value) pairs) and wait up to `timeout` seconds for
    every acknowledgement. With `batch_each`, every record is a producer batch of its own
    (a share group hands whole batches to one member: records sent apart can be shared).

    Returns (partition, offset) of each record in order.
    """
    outgoing: list[Outgoing] = []
    for rec in records:
        key, value = rec if isinstance(rec, tuple) else (None, rec)
        outgoing.append((topic, _bytes(key), _bytes(value), headers, partition))
    # idempotence keeps the order when a batch is retried (many batches are in flight)
    extra: dict[str, Any] = (
        {"linger.ms": 0, "batch.num.messages": 1, "enable.idempotence": True}
        if batch_each
        else {"linger.ms": 5}
    )
    acks = send(_quiet(bootstrap_servers, extra), outgoing, timeout)
    done = [a for a in acks if isinstance(a, tuple)]
    if len(done) < len(acks):
        errors = sorted({a for a in acks if isinstance(a, str)})
        raise ClientError(
            f"producing to {topic!r} failed ({len(done)} of {len(acks)} acknowledged): "
            + ", ".join(errors)
        )
    return done


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


Isolation = Literal["read_committed", "read_uncommitted"]


def end_offsets(
    bootstrap_servers: Servers, topic: str, isolation: Isolation = "read_committed"
) -> dict[int, int]:
    """The end offset per partition of `topic` that a reader with `isolation` sees: the
    last stable offset under ``read_committed`` (the high watermark, unless a transaction
    is open in the partition), the high watermark under ``read_uncommitted``."""
    n = topic_partitions(bootstrap_servers, topic) or 0
    consumer = Consumer(
        _quiet(bootstrap_servers, {"group.id": "redrive-peek", "isolation.level": isolation})
    )
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


def read_as(
    bootstrap_servers: Servers, topic: str, isolation: Isolation, timeout: float = 30.0
) -> list[Any]:
    """Every record of `topic` that a reader with `isolation` sees now, partition by
    partition: a ``read_committed`` reader stops before an open transaction and skips
    aborted ones; a ``read_uncommitted`` reader sees them all (the output topics of
    ``Commit.transaction()`` listeners, whose end offsets count commit markers too)."""
    n = topic_partitions(bootstrap_servers, topic) or 0
    consumer = Consumer(
        _quiet(bootstrap_servers, {"group.id": "redrive-peek", "enable.auto.commit": False,
                                   "enable.partition.eof": True, "isolation.level": isolation})
    )  # fmt: skip
    out: list[Any] = []
    try:
        consumer.assign([KTopicPartition(topic, p, OFFSET_BEGINNING) for p in range(n)])
        at_end: set[int] = set()
        deadline = time.monotonic() + timeout
        while len(at_end) < n:
            if time.monotonic() > deadline:
                raise ClientError(f"reading {topic!r} ({isolation}) timed out after {timeout:g} s")
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


_RETRIED = {KafkaError._TRANSPORT, KafkaError._ALL_BROKERS_DOWN, KafkaError._PARTITION_EOF}

Start = Literal["beginning", "end"] | int


def tail(
    bootstrap_servers: Servers,
    topic: str,
    *,
    start: Start = "beginning",
    group_id: str | None = None,
    partitions: Sequence[int] | None = None,
    idle_timeout: float | None = None,
    stop: Callable[[], bool] = lambda: False,
) -> Generator[Any, None, None]:
    """Yield the records of `topic` (confluent-kafka messages) as they arrive.

    Without `group_id` the partitions are assigned (all, or `partitions`) at `start` and
    nothing is committed. With a group, the consumer subscribes; `start` applies where the
    group has no committed position (an offset: on every assigned partition), and the
    position after each record you have taken from the iterator is committed (at the
    latest when you close the iterator, which you should: ``closing(tail(...))``).
    Ends after `idle_timeout` seconds without a record, or when `stop()` is true;
    ClientError on a consumer error.

    >>> for m in tail("127.0.0.1:9092", "orders", start="end", idle_timeout=5):
    ...     print(m.offset(), m.value())
    """
    reset = "latest" if start == "end" else "earliest"
    settings: dict[str, Any] = {
        "group.id": group_id or "redrive-tail",
        "enable.auto.commit": group_id is not None,
        "enable.auto.offset.store": False,
        "auto.offset.reset": reset,
        "enable.partition.eof": False,
    }
    consumer = Consumer(_quiet(bootstrap_servers, settings))
    offset = OFFSET_BEGINNING if start == "beginning" else OFFSET_END if start == "end" else start
    try:
        if group_id is None:
            n = topic_partitions(bootstrap_servers, topic)
            if n is None:
                raise ClientError(f"topic {topic!r} does not exist")
            wanted = list(partitions) if partitions is not None else list(range(n))
            consumer.assign([KTopicPartition(topic, p, offset) for p in wanted])
        else:

            def on_assign(c: Any, assigned: list[KTopicPartition]) -> None:
                if isinstance(start, int):  # an explicit offset wins over the group's
                    for tp in assigned:
                        tp.offset = start
                    c.assign(assigned)

            consumer.subscribe([topic], on_assign=on_assign)
        idle_since = time.monotonic()
        while not stop():
            msg = consumer.poll(0.2)
            if msg is None:
                if idle_timeout is not None and time.monotonic() - idle_since >= idle_timeout:
                    return
                continue
            err = msg.error()
            if err is not None:
                # Connection trouble is retried by the client itself (and logged).
                if err.retriable() or err.code() in _RETRIED:
                    continue
                raise ClientError(f"consuming {topic!r} failed: {err.str()}")
            idle_since = time.monotonic()
            try:
                yield msg
            except GeneratorExit:  # the caller took this record and stopped
                if group_id is not None:
                    consumer.store_offsets(msg)
                raise
            if group_id is not None:
                consumer.store_offsets(msg)
    finally:
        consumer.close()  # with a group: commits the stored positions
