"""Moving a failed record along its retry-topic chain (R4).

``ChainRecoverer`` is the recoverer of a listener with retry topics: instead of writing the
failed record to the dead-letter topic it publishes it to the next retry topic, due after
that topic's delay, and only the last step (or a fatal error, or the total time cap) goes to
``<topic>-dlt``. Each write is confirmed by the broker before the loop commits the source
offset, so a record is never lost between hops.

Hops and the chain's dead letter carry the headers Spring's retry-topic chain writes
(``redrive.headers.CHAIN``: ``kafka_original-*``, ``kafka_exception-*``, and
``retry_topic-attempts`` as a 4-byte int), so Spring and redrive consumers share the topics;
the origin and the attempt count of a record a Spring chain put on the topic are honoured.
"""

from __future__ import annotations

import logging
import time
from collections.abc import Sequence

import redrive.headers as h
from redrive.events import DeadLettered, RetryHop
from redrive.message import Message
from redrive.publish import Publisher
from redrive.recover.base import Context, ListenerContext, Recoverer
from redrive.topics.chain import RetryTopics

log = logging.getLogger("redrive.topics")


class ChainRecoverer(Recoverer):
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
        self.publisher = Publisher(timeout=timeout)

    def source_of(self, msg: Message) -> str:
        """The listener topic a record (from that topic or one of its retry topics) belongs to."""
        if msg.topic in self.sources:
            return msg.topic
        return self._source_of.get(msg.topic) or h.origin_of(msg).topic

    def start(self, listener: ListenerContext) -> None:
        self.publisher.start(listener.kafka)

    def recover(self, msg: Message, exc: BaseException, ctx: Context) -> None:
        chain = self.chain
        now = time.time()
        from_source = msg.topic in self.sources
        source = self.source_of(msg)
        origin = h.Origin.of(msg) if from_source else h.origin_of(msg)
        attempt = 1 if from_source else (h.attempts_of(msg) or 2)  # the one that just failed
        earlier = None if from_source else h.first_failure_of(msg)
        first_failure = ctx.first_failure if earlier is None else earlier
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
        if delay is None:
            dest, due = chain.dlt(source), None
        else:
            dest, due = chain.topic_for(source, index), int((now + delay) * 1000)
        original_ts = h.decode(msg.headers).get(h.RETRY_ORIGINAL_TIMESTAMP, origin.timestamp)
        kept = [(k, v) for k, v in msg.headers if not k.startswith(h.RETRY_PREFIX)]
        hop = h.retry_headers(next_attempt=attempt + 1, original_timestamp=original_ts, due_ms=due)
        # The origin (not the retry topic) goes into the kafka_original-* headers, as Spring's
        # chain writes them; whatever family the record carried before is replaced.
        headers = h.dead_letter_headers(
            topic=origin.topic, partition=origin.partition, offset=origin.offset,
            timestamp=origin.timestamp, timestamp_type=origin.timestamp_type,
            group_id=self.group_id, exc=exc, attempts=attempt, first_failure=first_failure,
            interruptions=ctx.interruptions, original=[*kept, *hop], family=h.CHAIN,
        )  # fmt: skip
        publisher = ctx.publisher or self.publisher  # a transaction's, when there is one
        written = publisher.publish(
            msg, dest, origin.partition, msg.raw_key, msg.raw_value, headers,
            role="retry" if due is not None else "dead-letter",
        )  # fmt: skip
        if due is None:
            log.info(
                "%s: %s[%d]@%d dead-lettered to %s (%s): %s: %s",
                ctx.listener, msg.topic, msg.partition, msg.offset, dest, why,
                type(exc).__name__, exc,
            )  # fmt: skip
        if not ctx.bus:
            return
        if due is None:
            ctx.bus.emit(
                DeadLettered(ctx.listener, msg.tp, msg.offset, written.topic, written.partition,
                             written.offset, attempt)
            )  # fmt: skip
        else:
            ctx.bus.emit(RetryHop(ctx.listener, msg.tp, msg.offset, dest, attempt + 1, due / 1000))

    def describe(self) -> str:
        delays = ", ".join(f"{d:g}s" for d in self.chain.delays)
        return f"retry topics ({delays}), then <topic>-dlt (broker-confirmed before commit)"

    def close(self) -> None:
        self.publisher.close()
