"""The Client protocol the loop talks to, and its confluent-kafka adapter.

librdkafka errors are mapped to redrive's errors here and nowhere else.
"""

from __future__ import annotations

import logging
from collections.abc import Callable, Mapping, Sequence
from typing import TYPE_CHECKING, Any, Protocol, TypeVar

from confluent_kafka import Consumer, KafkaError, KafkaException, Message
from confluent_kafka import TopicPartition as KTopicPartition

from redrive.errors import ClientError, CommitFailed, ConfigError, KafkaUnavailable
from redrive.message import RawRecord, TopicPartition
from redrive.observe.logs import kafka_logging

if TYPE_CHECKING:
    from redrive.consumer.producer import OutputProducer

T = TypeVar("T")

log = logging.getLogger("redrive.client")

RebalanceCallback = Callable[[list[TopicPartition]], None]
Positions = Mapping[TopicPartition, tuple[int, str | None]]

__all__ = ["Client", "ConfluentClient", "Positions", "RawRecord", "RebalanceCallback"]


class Client(Protocol):
    """A Kafka consumer as the loop needs it. ``ConfluentClient`` is the real one; tests use
    ``redrive.testing.FakeClient``."""

    def subscribe(
        self,
        topics: Sequence[str],
        on_assign: RebalanceCallback,
        on_revoke: RebalanceCallback,
        on_lost: RebalanceCallback,
    ) -> None: ...

    def poll(self, max_records: int, timeout: float) -> list[RawRecord]: ...

    def commit(self, positions: Positions) -> None:
        """Commit synchronously; raise ClientError on failure."""

    def commit_async(self, positions: Positions) -> None:
        """Ask for a commit and return at once; ``failed_commits`` reports a failure."""

    def failed_commits(self) -> list[TopicPartition]:
        """The partitions whose asynchronous commit failed since the last call (they are
        asked for again: a partition with no new records has no next commit to cover it)."""

    def store(self, positions: Positions) -> None:
        """Store positions for the client's background (interval) commit."""

    def committed(self, partitions: Sequence[TopicPartition]) -> Positions: ...
    def seek(self, tp: TopicPartition, offset: int) -> None: ...

    def outputs(self, kafka: Mapping[str, Any], transactional_id: str | None) -> OutputProducer:
        """The producer of the listener's outputs (``consumer/producer.py``); with a
        `transactional_id`, its transactions carry this consumer's positions (KIP-447)."""

    def pause(self, partitions: Sequence[TopicPartition]) -> None: ...
    def resume(self, partitions: Sequence[TopicPartition]) -> None: ...
    def close(self) -> None: ...


def _tps(partitions: Sequence[KTopicPartition]) -> list[TopicPartition]:
    return [TopicPartition(p.topic, p.partition) for p in partitions]


def _ktp(tp: TopicPartition, offset: int = -1001, metadata: str | None = None) -> KTopicPartition:
    if metadata is None:
        return KTopicPartition(tp.topic, tp.partition, offset)
    return KTopicPartition(tp.topic, tp.partition, offset, metadata)


_error = Message.error  # in C: a record's error, or None

# Errors librdkafka reports through poll that are informational or retried by the client.
_BENIGN = {KafkaError._PARTITION_EOF}


def make_consumer(config: Mapping[str, Any]) -> Consumer:
    """Build a confluent-kafka Consumer, turning a bad setting into a ConfigError."""
    return make_client(Consumer, config)


def make_client(factory: Callable[[dict[str, Any]], T], config: Mapping[str, Any]) -> T:
    """Build a confluent-kafka client with `factory` (its settings' log lines go through
    logging), turning a bad setting into a ConfigError naming it."""
    try:
        return factory(kafka_logging(config))
    except KafkaException as exc:
        err = exc.args[0]
        text = err.str() if hasattr(err, "str") else str(err)
        raise ConfigError(_setting_from(text), text) from None
    except (TypeError, ValueError) as exc:
        raise ConfigError(_setting_from(str(exc)), str(exc)) from None


def lag_of(stats: str) -> tuple[tuple[TopicPartition, int], ...]:
    """Each assigned partition's consumer lag from librdkafka's statistics JSON: its high
    watermark (last stable offset under ``read_committed``) less the group's committed
    position, or less the position fetched so far when nothing is committed yet."""
    import json

    out = []
    for topic, t in json.loads(stats).get("topics", {}).items():
        for p in t.get("partitions", {}).values():
            partition = p.get("partition", -1)
            if partition < 0 or p.get("fetch_state") in (None, "none", "stopped"):
                continue  # the internal UA partition, or one not assigned to us
            lag = p.get("consumer_lag", -1)
            if lag < 0:  # nothing committed yet: behind what this consumer has fetched
                hi, pos = p.get("hi_offset", -1), p.get("app_offset", -1)
                if hi < 0 or pos < 0:
                    continue
                lag = max(0, hi - pos)
            out.append((TopicPartition(topic, partition), lag))
    return tuple(out)


def _setting_from(text: str) -> str:
    import re

    match = re.search(r'property "([^"]+)"', text) or re.search(r"property: \"?([\w.]+)", text)
    return f"kafka:{match.group(1)}" if match else "kafka"


class ConfluentClient:
    """The Client over confluent-kafka's Consumer."""

    def __init__(
        self,
        config: Mapping[str, Any],
        *,
        on_lag: Callable[[tuple[tuple[TopicPartition, int], ...]], None] | None = None,
        lag_interval: float = 15.0,
    ) -> None:
        """``on_lag``: called (inside ``poll``) every ``lag_interval`` seconds with each
        assigned partition's lag, from librdkafka's statistics."""
        if on_lag is not None and "stats_cb" not in config:

            def on_stats(text: str) -> None:
                lags = lag_of(text)
                if lags:
                    on_lag(lags)

            interval_ms = max(1, int(lag_interval * 1000))
            config = {**config, "statistics.interval.ms": interval_ms, "stats_cb": on_stats}
        self._consumer = make_consumer({**config, "on_commit": self._on_commit})
        self._fatal: KafkaError | None = None
        self._failed: list[TopicPartition] = []  # asynchronous commits that failed

    def _on_commit(self, err: KafkaError | None, partitions: list[KTopicPartition]) -> None:
        """A commit's outcome (served inside poll, on the loop thread)."""
        failed = [p for p in partitions if err is not None or p.error is not None]
        if failed:
            why = err if err is not None else failed[0].error
            log.debug("commit of %d partition(s) failed: %s (asked again)", len(failed), why)
            self._failed.extend(TopicPartition(p.topic, p.partition) for p in failed)

    def failed_commits(self) -> list[TopicPartition]:
        failed, self._failed = self._failed, []
        return failed

    def check(self, timeout: float) -> None:
        """Raise KafkaUnavailable when no broker answers a metadata request in time."""
        try:
            self._consumer.list_topics(timeout=timeout)
        except KafkaException as exc:
            raise KafkaUnavailable(exc.args[0].str()) from None

    def subscribe(
        self,
        topics: Sequence[str],
        on_assign: RebalanceCallback,
        on_revoke: RebalanceCallback,
        on_lost: RebalanceCallback,
    ) -> None:
        # confluent-kafka performs the (incremental) assign/unassign itself after each
        # callback returns, for both eager and cooperative assignors.
        self._consumer.subscribe(
            list(topics),
            on_assign=lambda _c, parts: on_assign(_tps(parts)),
            on_revoke=lambda _c, parts: on_revoke(_tps(parts)),
            on_lost=lambda _c, parts: on_lost(_tps(parts)),
        )

    def poll(self, max_records: int, timeout: float) -> list[RawRecord]:
        # consume(n, timeout) blocks until n records or the full timeout, so a partial batch
        # would always cost `timeout`. Like Kafka's poll: take what is ready; if nothing is,
        # wait up to `timeout` for one record, then take what arrived with it.
        consume = self._consumer.consume
        try:
            records: list[Any] = consume(max_records, 0)
            if not records and timeout > 0:
                records = consume(1, timeout)
                if records and max_records > 1:
                    records += consume(max_records - 1, 0)
        except KafkaException as exc:
            raise ClientError(f"poll failed: {exc.args[0]}") from None
        if any(map(_error, records)):  # rare: filter only when an error is present
            return self._drop_errors(records)
        return records

    def _drop_errors(self, records: list[Any]) -> list[RawRecord]:
        kept = []
        for r in records:
            err = r.error()
            if err is None:
                kept.append(r)
            elif err.fatal():
                raise ClientError(f"fatal Kafka client error: {err.str()}")
            elif err.code() not in _BENIGN:
                log.warning("Kafka client reported: %s (%s)", err.str(), r.topic())
        return kept

    def commit(self, positions: Positions) -> None:
        offsets = [_ktp(tp, pos, meta) for tp, (pos, meta) in positions.items()]
        try:
            result = self._consumer.commit(offsets=offsets, asynchronous=False)
        except KafkaException as exc:
            err = exc.args[0]
            if err.code() == KafkaError._NO_OFFSET:
                return
            if err.fatal():
                raise ClientError(f"commit failed: {err.str()}") from None
            raise CommitFailed(f"commit failed: {err.str()}") from None
        for p in result or ():
            if p.error is not None:
                raise CommitFailed(f"commit of {p.topic}[{p.partition}] failed: {p.error.str()}")

    def commit_async(self, positions: Positions) -> None:
        offsets = [_ktp(tp, pos, meta) for tp, (pos, meta) in positions.items()]
        try:
            self._consumer.commit(offsets=offsets, asynchronous=True)
        except KafkaException as exc:  # e.g. a partition revoked meanwhile
            log.debug("asynchronous commit not sent: %s", exc.args[0])
            self._failed.extend(positions)

    def store(self, positions: Positions) -> None:
        offsets = [_ktp(tp, pos, meta) for tp, (pos, meta) in positions.items()]
        try:
            self._consumer.store_offsets(offsets=offsets)
        except KafkaException as exc:
            # Storing for a partition that was just revoked fails harmlessly.
            log.debug("store_offsets: %s", exc.args[0])

    def committed(self, partitions: Sequence[TopicPartition]) -> Positions:
        try:
            got = self._consumer.committed([_ktp(tp) for tp in partitions], timeout=10)
        except KafkaException as exc:
            raise ClientError(f"reading committed offsets failed: {exc.args[0]}") from None
        return {TopicPartition(p.topic, p.partition): (p.offset, p.metadata or None) for p in got}

    def seek(self, tp: TopicPartition, offset: int) -> None:
        try:
            self._consumer.seek(_ktp(tp, offset))
        except KafkaException as exc:
            raise ClientError(f"seek of {tp} to {offset} failed: {exc.args[0]}") from None

    def outputs(self, kafka: Mapping[str, Any], transactional_id: str | None) -> OutputProducer:
        from redrive.consumer.producer import KafkaOutputs

        return KafkaOutputs(kafka, transactional_id, self._consumer.consumer_group_metadata)

    def pause(self, partitions: Sequence[TopicPartition]) -> None:
        self._consumer.pause([_ktp(tp) for tp in partitions])

    def resume(self, partitions: Sequence[TopicPartition]) -> None:
        self._consumer.resume([_ktp(tp) for tp in partitions])

    def close(self) -> None:
        self._consumer.close()
