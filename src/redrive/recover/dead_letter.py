"""The dead-letter publisher (D1..D3): write, wait for the broker's acknowledgement, then let
the loop commit."""

from __future__ import annotations

from collections.abc import Callable
from typing import Any

from redrive.events import DeadLettered
from redrive.headers import dead_letter_headers
from redrive.message import Message
from redrive.publish import Publisher
from redrive.recover.base import Context, ListenerContext, Recoverer


class DeadLetter(Recoverer):
    """Publish failed records to a dead-letter topic.

    ``topic`` defaults to ``<source topic>-dlt``; it may also be a function of the message.
    The record goes to the same partition number as its source when the dead-letter topic
    has it, else the producer's partitioner picks one. Key, value and headers are kept;
    the ``kafka_dlt-*`` headers (the family Spring's ``DeadLetterPublishingRecoverer``
    writes) say where it came from and why, in place of any origin or exception headers
    of either family the record already carried. ``recover`` returns only
    after the broker acknowledged the write; when the write fails it raises, and the loop
    leaves the source record uncommitted and tries again later (D3). Under
    ``Commit.transaction()`` the write goes into the listener's transaction instead, with the
    positions of the records before it (T1). ``producer``: settings
    of the dead-letter producer that win over those derived from the listener's.

    ``App.start()`` creates a missing dead-letter topic (``<source>-dlt`` or the fixed
    name) with the source topic's partition count; with ``auto_create=False``, or when the
    broker refuses, it raises ``ConfigError`` naming the topic and the command that creates
    it. A function's topics cannot be known in advance: create them yourself.
    """

    def __init__(
        self,
        topic: str | Callable[[Message], str] | None = None,
        *,
        same_partition: bool = True,
        timeout: float = 15.0,
        producer: dict[str, Any] | None = None,
        auto_create: bool = True,
    ) -> None:
        self.topic = topic
        self.auto_create = auto_create
        self.same_partition = same_partition
        self.publisher = Publisher(timeout=timeout, overrides=producer)

    def topic_for(self, source: str) -> str | None:
        """The dead-letter topic of the records of `source`; None when a function picks it
        record by record (then it cannot be known before a record fails)."""
        return None if callable(self.topic) else self._fixed(source)

    def destination(self, msg: Message) -> str:
        return self.topic(msg) if callable(self.topic) else self._fixed(msg.topic)

    def _fixed(self, source: str) -> str:
        return f"{source}-dlt" if self.topic is None or callable(self.topic) else self.topic

    def start(self, listener: ListenerContext) -> None:
        """Create the producer now: an idempotent producer first asks the broker for its id,
        which would otherwise delay the first dead letter."""
        self.publisher.start(listener.kafka)

    def recover(self, msg: Message, exc: BaseException, ctx: Context) -> None:
        headers = dead_letter_headers(
            topic=msg.topic, partition=msg.partition, offset=msg.offset,
            timestamp=msg.timestamp, timestamp_type=msg.timestamp_type,
            group_id=ctx.group_id, exc=exc, attempts=ctx.attempts,
            first_failure=ctx.first_failure, interruptions=ctx.interruptions,
            original=msg.headers,
        )  # fmt: skip
        publisher = ctx.publisher or self.publisher  # a transaction's, when there is one
        written = publisher.publish(
            msg, self.destination(msg), msg.partition if self.same_partition else None,
            msg.raw_key, msg.raw_value, headers,
        )  # fmt: skip
        if ctx.bus:
            ctx.bus.emit(
                DeadLettered(
                    ctx.listener, msg.tp, msg.offset, written.topic, written.partition,
                    written.offset, ctx.attempts,
                )
            )  # fmt: skip

    def describe(self) -> str:
        where = (
            "<topic>-dlt" if self.topic is None else "a function" if callable(self.topic)
            else self.topic
        )  # fmt: skip
        return f"dead letter to {where} (broker-confirmed before commit)"

    def close(self) -> None:
        self.publisher.close()
