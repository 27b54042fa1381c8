"""The topics a listener needs at start-up: its own, its retry topics, its dead-letter topic.

``wanted_topics`` lists them for one listener, each with what to do when it is missing
(create it, fail, or wait for it); ``ensure_topics`` looks them up with one metadata request
and creates the missing ones in one go; ``TopicWatch`` keeps looking for the topics a
listener waits for, says so every ``REPORT_EVERY`` seconds, and creates what depends on them
once they appear.
"""

from __future__ import annotations

import logging
import threading
import time
from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from typing import Any, Literal

from confluent_kafka import KafkaException
from confluent_kafka.admin import AdminClient

from redrive.admin import create_with, wait_for_leaders
from redrive.errors import ConfigError
from redrive.observe.logs import kafka_logging
from redrive.publish import producer_settings
from redrive.recover.base import Recoverer
from redrive.recover.breaker import CircuitBreaker
from redrive.recover.dead_letter import DeadLetter
from redrive.topics.recoverer import ChainRecoverer

log = logging.getLogger("redrive.topics")

MissingTopics = Literal["wait", "fail", "create"]
"""What ``App.start()`` does about a missing topic: wait for it (consume it once it exists),
fail with ``ConfigError``, or create it."""

MISSING_TOPICS: tuple[MissingTopics, ...] = ("wait", "fail", "create")

CHECK_EVERY = 5.0
"""Seconds between two looks for the topics a listener waits for."""
REPORT_EVERY = 30.0
"""Seconds between two log lines saying that a listener still waits for a topic."""


@dataclass(frozen=True, slots=True)
class Wanted:
    """A topic a listener needs, and what to do when it is missing.

    ``like``: the topic whose partition count a created one copies (the listener's topic,
    for its retry and dead-letter topics); None: 1 partition. ``option`` and ``opt_in``
    name the setting that decided and its alternative, for the error message.
    """

    topic: str
    missing: MissingTopics
    option: str
    opt_in: str
    like: str | None = None


def wanted_topics(
    topics: Sequence[str], recoverer: Recoverer, missing: MissingTopics
) -> tuple[Wanted, ...]:
    """What a listener of `topics` with `recoverer` needs: its topics (``missing`` says
    what to do about a missing one), then its retry topics and its dead-letter topic, which
    are created unless their ``auto_create`` is off. The consumer of a retry-topic chain
    (whose topics its main listener already wants) needs nothing more."""
    if isinstance(recoverer, ChainRecoverer) and recoverer.sources != tuple(topics):
        return ()
    how = "missing_topics='create' (1 partition) or 'wait'"
    wanted = [Wanted(t, missing, "missing_topics", how) for t in topics]
    if isinstance(recoverer, ChainRecoverer):
        chain = recoverer.chain
        do: MissingTopics = "create" if chain.auto_create else "fail"
        for source in topics:
            for name in (*chain.retry_topics(source), chain.dlt(source)):
                wanted.append(Wanted(name, do, "retry_topics", "RetryTopics(auto_create=True)",
                                     like=source))  # fmt: skip
    while isinstance(recoverer, CircuitBreaker):
        recoverer = recoverer.recoverer
    if isinstance(recoverer, DeadLetter):
        do = "create" if recoverer.auto_create else "fail"
        for source in topics:
            dlt = recoverer.topic_for(source)
            if dlt is not None:  # a function's topics cannot be known in advance
                wanted.append(Wanted(dlt, do, "recoverer", "DeadLetter(auto_create=True)",
                                     like=source))  # fmt: skip
    return tuple(wanted)


def create_command(topic: str, partitions: int | None) -> str:
    """The command that creates `topic`; ``--partitions N`` when its count is yours to
    choose (the most consumers of a group that can share it)."""
    return f"redrive topics create {topic} --partitions {partitions or 'N'}"


def ensure_topics(
    settings: Mapping[str, Any], wanted: Sequence[Wanted], timeout: float = 30.0
) -> list[Wanted]:
    """Make sure every topic in `wanted` exists; return those still missing: the ones to
    wait for, and those to create that copy the partition count of one of them.

    Missing topics to create are created (retry and dead-letter topics with the partition
    count of their ``like`` topic, the most when several share one; replication factor: the
    broker's default). Raises ``ConfigError`` naming the missing topics to fail on, and
    those the broker refused (ACLs...), with the commands that create them.
    """
    if not wanted:
        return []
    admin = AdminClient(kafka_logging(producer_settings(settings)))
    try:
        try:
            md = admin.list_topics(timeout=timeout)
        except KafkaException as exc:
            raise ConfigError(wanted[0].option, f"cannot list topics: {exc.args[0]}") from None
        counts = {name: len(t.partitions) for name, t in md.topics.items() if t.error is None}
        plan: dict[str, int] = {}
        failing: list[Wanted] = []
        left: list[Wanted] = []
        for w in wanted:
            if w.topic in counts:
                continue
            if w.missing == "fail":
                failing.append(w)
                continue
            n = 1 if w.like is None else counts.get(w.like) or plan.get(w.like)
            if w.missing == "wait" or n is None:  # what it copies is not there yet
                left.append(w)
            else:
                plan[w.topic] = max(n, plan.get(w.topic, 0))
        if failing:
            first = failing[0]
            names = sorted({w.topic for w in failing})
            commands = "; ".join(create_command(w.topic, _count(w, counts, plan)) for w in failing)
            raise ConfigError(
                first.option,
                f"missing topics: {', '.join(names)}. Create them ({commands}) or pass "
                f"{first.opt_in}",
            )
        refused = _create(admin, plan, timeout)
        if refused:
            commands = "; ".join(create_command(t, plan[t]) for t in refused)
            raise ConfigError(
                next(w.option for w in wanted if w.topic in refused),
                f"missing topics could not be created: "
                f"{', '.join(f'{t} ({why})' for t, why in refused.items())}. Create them "
                f"({commands}) and start again",
            )
        if plan:
            wait_for_leaders(admin, plan, timeout)
            created = ", ".join(f"{t} ({n} partition(s))" for t, n in sorted(plan.items()))
            log.info("created missing topics: %s", created)
        return left
    finally:
        admin.poll(0)  # serves librdkafka's log lines
        del admin  # an error's traceback must not keep the client (and its threads) alive


def _count(w: Wanted, counts: Mapping[str, int], plan: Mapping[str, int]) -> int | None:
    if w.like is None:
        return None
    return counts.get(w.like) or plan.get(w.like)


def _create(admin: AdminClient, plan: Mapping[str, int], timeout: float) -> dict[str, str]:
    """Create the topics of `plan` (name -> partitions); return those refused, with why."""
    return create_with(admin, plan, timeout=timeout)[2]


@dataclass(frozen=True, slots=True)
class Waiting:
    """A listener that waits for some of its topics."""

    listener: str
    settings: Mapping[str, Any]
    wanted: tuple[Wanted, ...]
    left: tuple[Wanted, ...]

    @property
    def topics(self) -> list[str]:
        """The listener's own topics it waits for (not those that will follow them)."""
        return [w.topic for w in self.left if w.missing == "wait"]


class TopicWatch:
    """Looks every ``CHECK_EVERY`` seconds for the topics listeners wait for, in a thread
    of its own (``redrive:topics``), until all exist or ``stop()``.

    It says at once which topics are missing and how to create them, again every
    ``REPORT_EVERY`` seconds while they are, and when one appears; then it creates the
    retry and dead-letter topics that copy its partition count. The listener itself needs
    nothing: its client picks a topic up when it appears.
    """

    def __init__(self, waiting: Sequence[Waiting], timeout: float = CHECK_EVERY) -> None:
        self.waiting = list(waiting)
        self.timeout = timeout
        self._stop = threading.Event()
        self._thread = threading.Thread(target=self._run, name="redrive:topics", daemon=True)

    def start(self) -> None:
        for w in self.waiting:
            _report(w, "does not exist", "missing_topics='wait'")
        self._thread.start()

    def stop(self) -> None:
        """Stop looking (safe from any thread and from signal handlers)."""
        self._stop.set()

    def join(self, timeout: float | None = None) -> bool:
        """Wait for the thread to end; True when it has."""
        if self._thread.ident is not None:
            self._thread.join(timeout)
        return not self._thread.is_alive()

    def _run(self) -> None:
        began = time.monotonic()
        report_at = began + REPORT_EVERY
        while self.waiting and not self._stop.wait(CHECK_EVERY):
            still = []
            for w in self.waiting:
                try:
                    left = ensure_topics(w.settings, w.wanted, self.timeout)
                except Exception as exc:  # noqa: BLE001 - said, and tried again
                    log.error("listener %s: %s", w.listener, exc)
                    still.append(w)
                    continue
                appeared = sorted(set(w.topics) - {x.topic for x in left})
                if appeared:
                    log.info("listener %s: topic(s) %s exist now", w.listener, ", ".join(appeared))
                if left:
                    still.append(Waiting(w.listener, w.settings, w.wanted, tuple(left)))
            self.waiting = still
            if time.monotonic() >= report_at:
                report_at += REPORT_EVERY
                for w in self.waiting:
                    _report(w, f"still does not exist after {time.monotonic() - began:.0f} s",
                            "still waiting")  # fmt: skip


def _report(w: Waiting, what: str, how: str) -> None:
    for topic in w.topics:
        log.warning(
            "listener %s: topic %s %s (%s): it is consumed once it exists. Create it: %s",
            w.listener, topic, what, how, create_command(topic, None),
        )  # fmt: skip
