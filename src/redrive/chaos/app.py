"""The App that ``redrive chaos`` runs in each consumer process: ``redrive run
redrive.chaos.app:app``, configured by the environment the chaos command sets.

    REDRIVE_CHAOS_TOPIC   the topic of the run (its dead-letter topic: <topic>-dlt)
    REDRIVE_CHAOS_GROUP   the consumer group
    REDRIVE_CHAOS_LEDGER  the folder of the ledger files
    REDRIVE_CHAOS_MODE    record | batch | concurrency | retry-topics | exactly-once
    REDRIVE_CHAOS_SLOT    the consumer's slot (0 .. C-1; a restarted consumer keeps its slot)

The handler decides from the record's kind (``redrive.chaos.plan``) and the attempt redrive
hands over, writes one ledger line per handling, then returns or raises. In the
exactly-once mode it also returns an ``Output`` to ``<topic>-out`` (the record's key and
value), committed with the record's position in one Kafka transaction; the ledger line stays
a side effect outside Kafka, written again whenever the handler runs again.
"""

from __future__ import annotations

import os
import time
from collections.abc import Callable
from pathlib import Path

from redrive import (
    App,
    BackOff,
    BatchFailed,
    Commit,
    DeadLetter,
    Message,
    Output,
    Retry,
    RetryTopics,
)
from redrive.chaos.ledger import Writer, line, lost_line
from redrive.chaos.plan import MODES, POISON, output_topic, parse
from redrive.events import CommitRetrying, Event, Lost

SESSION = {"session.timeout.ms": 6000, "heartbeat.interval.ms": 1000, "fetch.wait.max.ms": 100}
"""A SIGKILLed consumer's partitions move after 6 s (the broker's default is 45 s)."""
RETRY = Retry.seek(BackOff.fixed(0.05, max_attempts=3))
"""Transient records fail at most twice: 3 attempts are enough; poison ones use them up."""
RETRY_TOPICS = RetryTopics((0.1, 0.1))
"""Two hops through one reused ``<topic>-retry`` topic, then ``<topic>-dlt``."""
TRANSACTIONS = {"transaction.timeout.ms": 10_000}
"""The exactly-once mode's producer. A killed consumer's open transaction is aborted when
the consumer started in its slot fences it (same transactional id); one that nothing fences
(the broker down, the slot not restarted yet) is aborted when it times out, and until then
``read_committed`` readers and the partitions' next owner wait at it. Kafka's 60 s would
stall a partition for a minute; a poll here (50 records) takes well under a second, so 10 s
still leaves a wide margin on a loaded machine."""


class Poisoned(ConnectionError):
    """A poison record's retryable failure: retried until the retries are over."""


def outcome(msg: Message) -> tuple[int, Exception | None]:
    """The record's id, and the error its handling raises (None: it succeeds)."""
    ident, kind = parse(msg.raw_value or b"")
    if kind == "pf":
        return ident, ValueError(f"poison record {ident} (fatal)")
    if kind in POISON:
        return ident, Poisoned(f"poison record {ident} (attempt {msg.attempt})")
    if (kind == "t1" and msg.attempt < 2) or (kind == "t2" and msg.attempt < 3):
        return ident, ConnectionError(f"transient failure of {ident} (attempt {msg.attempt})")
    return ident, None


def _entry(msg: Message, ident: int, ok: bool) -> str:
    return line(time.time(), ident, msg.attempt, ok, msg.topic, msg.partition, msg.offset)


def build(topic: str, group: str, ledger: Path, mode: str, slot: int = 0) -> App:
    """The App of one consumer process (`slot`: which of the run's consumers it is)."""
    if mode not in MODES:
        raise ValueError(f"unknown chaos mode {mode!r}: one of {', '.join(MODES)}")
    app = App(group_id=group, kafka=SESSION)
    writer = Writer(ledger)

    def on_event(event: Event) -> None:
        if isinstance(event, Lost):  # evicted: these partitions moved without a hand-over
            now = time.time()
            writer.write("".join(lost_line(now, tp.topic, tp.partition) for tp in event.partitions))
        elif isinstance(event, CommitRetrying) and event.reason == "revoke":
            now = time.time()  # given up in a rebalance, their commit refused by Kafka
            writer.write("".join(lost_line(now, tp.topic, tp.partition, "refused")
                                 for tp, _ in event.positions))  # fmt: skip

    app.bus.subscribe(on_event)

    def handle(msg: Message) -> None:
        ident, error = outcome(msg)
        writer.write(_entry(msg, ident, error is None))
        if error is not None:
            raise error

    def transform(msg: Message) -> Output:
        handle(msg)
        return Output(output_topic(topic), key=msg.raw_key, value=msg.raw_value)

    def handle_batch(batch: list[Message]) -> None:
        lines = []
        for i, msg in enumerate(batch):
            ident, error = outcome(msg)
            lines.append(_entry(msg, ident, error is None))
            if error is not None:
                writer.write("".join(lines))
                raise BatchFailed(index=i) from error
        writer.write("".join(lines))

    listeners: dict[str, Callable[[], object]] = {
        "record": lambda: app.listener(topic, retry=RETRY, recoverer=DeadLetter())(handle),
        "batch": lambda: app.batch_listener(topic, retry=RETRY, recoverer=DeadLetter())(
            handle_batch
        ),
        "concurrency": lambda: app.listener(
            topic, retry=RETRY, recoverer=DeadLetter(), concurrency=4, ordering="key"
        )(handle),
        "retry-topics": lambda: app.listener(topic, retry_topics=RETRY_TOPICS)(handle),
        "exactly-once": lambda: app.listener(
            topic,
            retry=RETRY,
            recoverer=DeadLetter(),
            # One transactional id per slot, as a deployment gives one per instance (a pod
            # name): the consumer started in a killed one's slot fences it and aborts its
            # open transaction at once, instead of leaving it to time out.
            commit=Commit.transaction(transactional_id=f"{group}-slot-{slot}"),
            kafka=TRANSACTIONS,
            # A failure aborts its whole poll, which is then handled again: with 1.2% of
            # the records failing, a poll of 500 nearly always holds a failure (a 20,000-record
            # run re-ran the handler 96,118 times, 87 s); polls of 50 re-ran it 9,383 times (54 s).
            max_poll_records=50,
        )(transform),
    }
    listeners[mode]()
    return app


def __getattr__(name: str) -> App:
    """``app``, built when ``redrive run`` asks for it (importing this module builds none)."""
    if name != "app":
        raise AttributeError(name)
    env = os.environ
    try:
        return build(
            env["REDRIVE_CHAOS_TOPIC"],
            env["REDRIVE_CHAOS_GROUP"],
            Path(env["REDRIVE_CHAOS_LEDGER"]),
            env["REDRIVE_CHAOS_MODE"],
            int(env.get("REDRIVE_CHAOS_SLOT", "0")),
        )
    except KeyError as exc:
        raise RuntimeError(
            f"redrive.chaos.app is run by `redrive chaos`, which sets {exc.args[0]}"
        ) from None
