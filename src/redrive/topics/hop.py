"""Moving a failed record along its retry-topic chain, and handing it over when it is due.

``ChainRecoverer`` is the recoverer of a listener with retry topics: instead of writing the
failed record to the dead-letter topic it publishes it to the next retry topic, due after
that topic's delay, and only the last step (or a fatal error, or the total time cap) goes to
``<topic>-dlt``. Each write is confirmed by the broker before the loop commits the source
offset (the ``DeadLetter`` publisher does the writing), so a record is never lost between
hops.

``retry_listener`` is the consumer of the retry topics: the same handler, with due times
on, so the loop's failure engine never hands a record over before it is due (it pauses the
partition until then, without committing it and without counting an attempt).
"""

from __future__ import annotations

import logging
import threading
import time
from collections.abc import Mapping, Sequence
from dataclasses import replace
from typing import Any

from confluent_kafka import KafkaException
from confluent_kafka.admin import AdminClient, NewTopic  # type: ignore[attr-defined]

from redrive.admin import wait_for_leaders
from redrive.errors import ConfigError
from redrive.events import DeadLettered, Event, EventBus, RetryHop
from redrive.listener import ListenerSpec
from redrive.message import Message
from redrive.recover.base import Context
from redrive.recover.dead_letter import DeadLetter, producer_settings
from redrive.recover.headers import FIRST_FAILURE
from redrive.topics import headers as rt
from redrive.topics.chain import RetryTopics

log = logging.getLogger("redrive.topics")


class ChainRecoverer:
    """Recoverer that sends a failed record to the next retry topic, or finally the DLT.

    ``sources`` are the listener's own topics; ``group_id`` is named in the dead-letter
    headers as the consumer group that failed the record.
    """

    def __init__(
        self,
        chain: RetryTopics,
        sources: Sequence[str],
        group_id: str,
        *,
        timeout: float = 15.0,
    ) -> None:
        self.chain = chain
        self.sources = tuple(sources)
        self.group_id = group_id
        self._source_of = {t: s for s in self.sources for t in chain.retry_topics(s)}
        self._next = ""
        self._lock = threading.Lock()
        self._publisher = DeadLetter(topic=lambda _msg: self._next, timeout=timeout)

    def source_of(self, msg: Message) -> str:
        """The listener topic a record (from that topic or one of its retry topics) belongs to."""
        if msg.topic in self.sources:
            return msg.topic
        return self._source_of.get(msg.topic) or rt.origin_of(msg).topic

    def recover(self, msg: Message, exc: BaseException, ctx: Context) -> None:
        chain = self.chain
        now = time.time()
        from_source = msg.topic in self.sources
        source = self.source_of(msg)
        origin = (
            rt.Origin(msg.topic, msg.partition, msg.offset, msg.timestamp, msg.timestamp_type)
            if from_source
            else rt.origin_of(msg)
        )
        attempt = 1 if from_source else (rt.attempts_of(msg) or 2)  # the one that just failed
        first = msg.header(FIRST_FAILURE) if not from_source else None
        first_failure = rt.from_big_int(first) / 1000 if first else ctx.first_failure
        index = attempt - 1  # next retry: delays[index]
        delay = chain.delays[index] if index < len(chain.delays) else None
        if chain.classifier.is_fatal(exc):
            why = "fatal error"
            delay = None
        elif delay is None:
            why = f"retries exhausted after {attempt} attempts"
        elif chain.max_total is not None and now + delay - first_failure > chain.max_total:
            why = f"total retry time {chain.max_total:g} s used up"
            delay = None
        original_ts = rt.decode(msg.headers).get(rt.ORIGINAL_TIMESTAMP, origin.timestamp)
        kept = tuple((k, v) for k, v in msg.headers if not k.startswith(rt.RETRY_PREFIX))
        hop: tuple[tuple[str, bytes | None], ...] = (
            (rt.ATTEMPTS, rt.big_int(attempt + 1)),  # as Spring: the next attempt's number
            (rt.ORIGINAL_TIMESTAMP, rt.big_int(original_ts)),
        )
        if delay is None:
            dest = chain.dlt(source)
        else:
            dest = chain.topic_for(source, index)
            due = int((now + delay) * 1000)
            hop += ((rt.BACKOFF_TIMESTAMP, rt.big_int(due)),)
        # The publisher writes the origin (not the retry topic) into the kafka_dlt-* headers.
        out = Message(
            origin.topic, origin.partition, origin.offset, raw_key=msg.raw_key,
            raw_value=msg.raw_value, headers=kept + hop, timestamp=origin.timestamp,
            timestamp_type=origin.timestamp_type,
        )  # fmt: skip
        written: list[Event] = []
        quiet = EventBus()
        quiet.subscribe(written.append)
        with self._lock:  # the destination travels through self._next: one hop at a time
            self._next = dest
            self._publisher.recover(
                out, exc,
                Context(ctx.listener, self.group_id, attempt, first_failure, quiet, ctx.kafka),
            )  # fmt: skip
        if delay is None:
            log.info(
                "%s: %s[%d]@%d dead-lettered to %s (%s): %s: %s",
                ctx.listener, msg.topic, msg.partition, msg.offset, dest, why,
                type(exc).__name__, exc,
            )  # fmt: skip
        if ctx.bus:
            for e in written:
                if isinstance(e, DeadLettered) and delay is None:
                    ctx.bus.emit(
                        DeadLettered(ctx.listener, msg.tp, msg.offset, e.topic, e.partition,
                                     e.dlt_offset, attempt)
                    )  # fmt: skip
            if delay is not None:
                ctx.bus.emit(
                    RetryHop(ctx.listener, msg.tp, msg.offset, dest, attempt + 1, due / 1000)
                )

    def prepare(self, kafka: Mapping[str, Any]) -> None:
        self._publisher.prepare(kafka)

    def close(self) -> None:
        self._publisher.close()


def ensure_topics(
    settings: dict[str, Any], chain: RetryTopics, sources: Sequence[str], timeout: float = 30.0
) -> None:
    """Make sure every retry topic and dead-letter topic of `sources` exists.

    Missing ones are created with the source topic's partition count when
    ``chain.auto_create``; otherwise, or when the broker refuses, raise ``ConfigError``
    naming the missing topics.
    """
    admin = AdminClient({**producer_settings(settings), "log_level": 0})
    try:
        md = admin.list_topics(timeout=timeout)
    except KafkaException as exc:
        raise ConfigError("retry_topics", f"cannot list topics: {exc.args[0]}") from None

    def exists(name: str) -> bool:
        t = md.topics.get(name)
        return t is not None and t.error is None

    wanted: dict[str, int] = {}
    for source in sources:
        if not exists(source):
            continue  # the source topic itself is the user's business (auto-creation, later)
        n = len(md.topics[source].partitions)
        for name in (*chain.retry_topics(source), chain.dlt(source)):
            if not exists(name):
                wanted[name] = n
    if not wanted:
        return
    missing = ", ".join(sorted(wanted))
    if not chain.auto_create:
        raise ConfigError(
            "retry_topics",
            f"missing topics: {missing}. Create them (with the source topic's partition "
            "count) or pass RetryTopics(auto_create=True)",
        )
    futures = admin.create_topics(
        [NewTopic(t, num_partitions=n, replication_factor=-1) for t, n in wanted.items()],
        operation_timeout=timeout,
    )
    refused = []
    for name, fut in futures.items():
        try:
            fut.result(timeout)
        except KafkaException as exc:
            if exc.args[0].name() != "TOPIC_ALREADY_EXISTS":
                refused.append(f"{name} ({exc.args[0].str()})")
    if refused:
        raise ConfigError(
            "retry_topics",
            f"missing topics could not be created: {', '.join(refused)}. Create them (with the "
            "source topic's partition count) and start again",
        )
    wait_for_leaders(admin, wanted, timeout)
    log.info("created retry/dead-letter topics: %s", missing)


def retry_listener(spec: ListenerSpec, chain: RetryTopics) -> ListenerSpec:
    """The listener that consumes `spec`'s retry topics: same handler, due times on,
    its own group (``<group><suffix>``), the same chain for the next hop."""
    group = spec.group_id + chain.group_suffix
    return replace(
        spec,
        name=spec.name + chain.group_suffix,
        topics=tuple(t for s in spec.topics for t in chain.retry_topics(s)),
        group_id=group,
        due_times=True,  # no record is handed over before its due time (R4)
        # one record at a time: a record not yet due pauses its partition (R4) rather than
        # holding a worker asleep
        concurrency=1,
        recoverer=ChainRecoverer(chain, spec.topics, spec.group_id),
        # librdkafka keeps one fetch per broker in flight; while the broker holds a long
        # poll for empty partitions, a partition resumed at its due time waits for it. A
        # short wait keeps retries close to their due time (unless you set your own).
        kafka={"fetch.wait.max.ms": 50, **spec.kafka, "group.id": group},
    )
