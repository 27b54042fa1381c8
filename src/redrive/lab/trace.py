"""Recorded events -> a sequence diagram: participants (lifelines) and steps (arrows, notes).

The trace is exact: one step per event (two for a poll, which asks and receives, and for a
dead-letter write, which is written and acknowledged), in the order the bus delivered them.
Participants, left to right: the inbound topics (one lifeline per partition when a topic
has several), one Kafka client per consumer, the listener, the group's consumer offsets,
then dead-letter and retry topics.

A commit that moves no position (an owner's window mark, an attempt-count mark, a clean
hand-over at the same position) is an arrow with ``moved=False``: drawn lighter.
"""

from __future__ import annotations

import json
from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass, field

import redrive.events as ev
from redrive.lab.codec import LabNote
from redrive.message import TopicPartition

LISTENER = "listener"
OFFSETS = "offsets"

Names = Mapping[tuple[str, int, int], str]
"""(topic, partition, offset) -> a short name of the record (``m2``)."""


@dataclass(frozen=True, slots=True)
class Participant:
    id: str
    label: str
    kind: str
    """``topic``, ``client``, ``listener``, ``offsets``, ``dlt`` or ``retry``."""


@dataclass(frozen=True, slots=True)
class Arrow:
    t: float
    """Seconds since the first event of the trace."""
    src: str
    dst: str
    label: str
    kind: str
    """poll, records, handle, ok, exception, commit, seek, pause, resume, dead-letter, ack,
    dead-letter-failed, retry-hop, acknowledge (a share listener's accept, release or
    reject, drawn to the record's topic)."""
    moved: bool = True
    """False for a commit that moved no position (drawn lighter)."""

    @property
    def dashed(self) -> bool:
        return self.kind in ("records", "ok", "exception", "ack")


@dataclass(frozen=True, slots=True)
class Note:
    t: float
    at: str
    text: str
    kind: str
    """started, back-off, assigned, revoked, lost, stopped, skipped, lab."""
    until: float | None = None
    """For a wait (back-off, not due yet): when it ends, in seconds since the first event."""


Step = Arrow | Note


@dataclass(frozen=True, slots=True)
class Trace:
    participants: tuple[Participant, ...]
    steps: tuple[Step, ...]
    duration: float = 0.0
    names: Mapping[tuple[str, int, int], str] = field(default_factory=dict)

    @property
    def arrows(self) -> list[Arrow]:
        return [s for s in self.steps if isinstance(s, Arrow)]

    def index(self, participant_id: str) -> int:
        for i, p in enumerate(self.participants):
            if p.id == participant_id:
                return i
        raise KeyError(participant_id)


class _Builder:
    def __init__(self, names: Names, alias: Callable[[str], str]) -> None:
        self.names = names
        self.alias = alias
        self.topics: dict[str, Participant] = {}
        self.clients: dict[str, Participant] = {}
        self.sinks: dict[str, Participant] = {}
        self.steps: list[Step] = []
        self.used_listener = False
        self.used_offsets = False
        self.t0 = 0.0
        self.destinations: dict[str, str] = {}
        """Topics records are sent to (retry topics, dead-letter topics) -> their kind."""
        self.split: dict[str, tuple[int, ...]] = {}
        """Inbound topics with several partitions -> their partitions (a lifeline each)."""
        self.positions: dict[TopicPartition, int] = {}
        """The last committed position of each partition (a fresh group starts at 0)."""

    # -- naming ---------------------------------------------------------------------------

    def rec(self, tp: TopicPartition, offset: int) -> str:
        name = self.names.get((tp.topic, tp.partition, offset))
        return name or f"{self.alias(tp.topic)}[{tp.partition}]@{offset}"

    def recs(self, items: Sequence[tuple[TopicPartition, int]]) -> str:
        """``m1, m2, m3``; more than three as a range per partition: ``b1..b3, a1..a3``."""
        if len(items) <= 3:
            return ", ".join(self.rec(tp, o) for tp, o in items)
        runs: dict[TopicPartition, list[int]] = {}
        for tp, o in items:
            runs.setdefault(tp, []).append(o)
        return ", ".join(
            self.rec(tp, offs[0])
            if len(offs) == 1
            else f"{self.rec(tp, offs[0])}..{self.rec(tp, offs[-1])}"
            for tp, offs in runs.items()
        )

    def part(self, tp: TopicPartition) -> str:
        return f"{self.alias(tp.topic)}[{tp.partition}]"

    # -- participants ---------------------------------------------------------------------

    def topic(self, name: str, partition: int | None = None) -> str:
        """The lifeline of topic `name`, or of its `partition` when the topic has several
        (without a partition: its first)."""
        if name in self.destinations:  # a retry topic read by the retry consumer: one lifeline
            return self.sink(name, self.destinations[name])
        if name in self.split:
            for p in self.split[name]:
                key = f"{name}[{p}]"
                if key not in self.topics:
                    label = f"{self.alias(name)}[{p}]"
                    self.topics[key] = Participant(f"topic:{key}", label, "topic")
            p = self.split[name][0] if partition is None else partition
            return self.topics[f"{name}[{p}]"].id
        if name not in self.topics:
            self.topics[name] = Participant(f"topic:{name}", self.alias(name), "topic")
        return self.topics[name].id

    def tp(self, tp: TopicPartition) -> str:
        return self.topic(tp.topic, tp.partition)

    def client(self, listener: str) -> str:
        if listener not in self.clients:
            self.clients[listener] = Participant(
                f"client:{listener}", f"Kafka client ({listener})", "client"
            )
        return self.clients[listener].id

    def sink(self, name: str, kind: str) -> str:
        if name not in self.sinks:
            self.sinks[name] = Participant(f"{kind}:{name}", self.alias(name), kind)
        return self.sinks[name].id

    def listener(self) -> str:
        self.used_listener = True
        return LISTENER

    def offsets(self) -> str:
        self.used_offsets = True
        return OFFSETS

    # -- steps ----------------------------------------------------------------------------

    def arrow(self, e: ev.Event, src: str, dst: str, label: str, kind: str) -> None:
        self.steps.append(Arrow(round(e.ts - self.t0, 3), src, dst, label, kind))

    def note(self, e: ev.Event, at: str, text: str, kind: str, until: float | None = None) -> None:
        end = None if until is None else round(until - self.t0, 3)
        self.steps.append(Note(round(e.ts - self.t0, 3), at, text, kind, end))

    def add(self, e: ev.Event, dead_letter_topic: Mapping[tuple[TopicPartition, int], str]) -> None:
        client = self.client(e.listener) if not isinstance(e, LabNote) else ""
        if isinstance(e, ev.Polled):
            # One request for every assigned partition: drawn to the leftmost lifeline it
            # reads, so it crosses all of them; then the records of each lifeline.
            by_line: dict[str, list[tuple[TopicPartition, int]]] = {}
            for tp, first, n in e.counts:
                by_line.setdefault(self.tp(tp), []).extend((tp, first + i) for i in range(n))
            order = [p.id for p in self.participants()]
            far = min(by_line, key=lambda line: order.index(line) if line in order else 0)
            self.arrow(e, client, far, "poll", "poll")
            for line, items in by_line.items():
                self.arrow(e, line, client, f"records {self.recs(items)}", "records")
        elif isinstance(e, ev.Delivered):
            items = [(tp, o) for tp, o, _ in e.records]
            attempt = max(a for _, _, a in e.records)
            label = (
                f"handle {self.recs(items)}" if len(items) == 1 else f"handle [{self.recs(items)}]"
            )
            if attempt > 1:
                label += f" (attempt {attempt})"
            self.arrow(e, client, self.listener(), label, "handle")
        elif isinstance(e, ev.Succeeded):
            self.arrow(e, self.listener(), client, f"ok {self.rec(e.tp, e.offset)}", "ok")
        elif isinstance(e, ev.Failed):
            label = f"{e.error_type} at {self.rec(e.tp, e.offset)}"
            self.arrow(
                e, self.listener(), client, label + (" (fatal)" if e.fatal else ""), "exception"
            )
        elif isinstance(e, ev.BackingOff):
            self.note(e, client, f"back-off {e.delay:.2f} s ({self.rec(e.tp, e.offset)})",
                      "back-off", e.ts + e.delay)  # fmt: skip
        elif isinstance(e, ev.NotDue):
            wait = e.due - e.ts
            self.note(e, client, f"{self.rec(e.tp, e.offset)} not due yet: wait {wait:.2f} s",
                      "back-off", e.due)  # fmt: skip
        elif isinstance(e, ev.Paused):
            for tp in e.partitions:
                self.arrow(e, client, self.tp(tp), f"pause [{tp.partition}]", "pause")
        elif isinstance(e, ev.Resumed):
            for tp in e.partitions:
                self.arrow(e, client, self.tp(tp), f"resume [{tp.partition}]", "resume")
        elif isinstance(e, ev.Seeked):
            name = self.names.get((e.tp.topic, e.tp.partition, e.offset))
            label = f"seek [{e.tp.partition}] to {e.offset}" + (f" ({name})" if name else "")
            self.arrow(e, client, self.tp(e.tp), label, "seek")
        elif isinstance(e, ev.Committed):
            moved = any(self.positions.get(tp, 0) != pos for tp, pos in e.positions)
            self.positions.update(dict(e.positions))
            label = commit_label(e, self.part)
            if not moved and "(attempt" not in label and e.reason not in ("poll", "record"):
                label += f" ({e.reason})"
            self.steps.append(
                Arrow(round(e.ts - self.t0, 3), client, self.offsets(), label, "commit", moved)
            )
        elif isinstance(e, ev.DeadLettered):
            dlt = self.sink(e.topic, "dlt")
            self.arrow(e, client, dlt, f"dead-letter {self.rec(e.tp, e.offset)}", "dead-letter")
            self.arrow(e, dlt, client, f"ack [{e.partition}]@{e.dlt_offset}", "ack")
        elif isinstance(e, ev.RecoveryRetrying):
            where = dead_letter_topic.get((e.tp, e.offset))
            if where is None:
                self.note(e, client, f"recovery of {self.rec(e.tp, e.offset)} failed", "lab")
            else:
                self.arrow(
                    e,
                    client,
                    self.sink(where, "dlt"),
                    f"dead-letter {self.rec(e.tp, e.offset)} failed",
                    "dead-letter-failed",
                )
        elif isinstance(e, ev.RetryHop):
            self.arrow(
                e,
                client,
                self.sink(e.topic, "retry"),
                f"retry hop {self.rec(e.tp, e.offset)} (attempt {e.attempt})",
                "retry-hop",
            )
        elif isinstance(e, ev.Acknowledged):
            label = f"{e.outcome} {self.rec(e.tp, e.offset)}"
            if e.outcome != "accept":
                label += f" (delivery {e.delivery})"
            self.arrow(e, client, self.tp(e.tp), label, "acknowledge")
        elif isinstance(e, ev.Assigned | ev.Revoked | ev.Lost):
            parts = ", ".join(self.part(tp) for tp in e.partitions)
            if parts or isinstance(e, ev.Lost):
                self.note(e, client, f"{e.kind.lower()} {parts}".strip(), e.kind.lower())
        elif isinstance(e, ev.Skipped):
            self.note(e, client, f"skipped {self.rec(e.tp, e.offset)}", "skipped")
        elif isinstance(e, ev.Aborted):
            back = ", ".join(f"{self.part(tp)} to {self.rec(tp, pos)}" for tp, pos in e.rewound)
            text = "transaction aborted" + (f", rewound {back}" if back else "")
            self.note(e, client, text, "lost")
        elif isinstance(e, ev.Stopped):
            self.note(e, client, "stopped", "stopped")
        elif isinstance(e, LabNote):
            at = self.client(e.listener) if e.listener in self.clients else ""
            self.note(e, at, e.text, "lab")

    def participants(self) -> tuple[Participant, ...]:
        middle: list[Participant] = []
        if self.used_listener:
            middle.append(Participant(LISTENER, "listener", "listener"))
        if self.used_offsets:
            middle.append(Participant(OFFSETS, "consumer offsets", "offsets"))
        return (*self.topics.values(), *self.clients.values(), *middle, *self.sinks.values())


def commit_label(e: ev.Committed, part: Callable[[TopicPartition], str] = str) -> str:
    """``commit orders[0]=3`` (positions: the next offset to read), with the attempt count
    when the commit carries a failing record's attempt state."""
    meta = dict(e.metadata)
    parts = []
    for tp, pos in e.positions:
        text = f"{part(tp)}={pos}"
        attempts = _attempts(meta.get(tp))
        if attempts is not None:
            text += f" (attempt {attempts})"
        parts.append(text)
    return "commit " + ", ".join(parts)


def _attempts(metadata: str | None) -> int | None:
    if not metadata:
        return None
    try:
        data = json.loads(metadata)
    except ValueError:
        return None
    return int(data["attempts"]) if isinstance(data, dict) and "attempts" in data else None


def _partitions(events: Sequence[ev.Event]) -> dict[str, set[int]]:
    """Every partition each topic shows up with in `events`."""
    found: dict[str, set[int]] = {}

    def add(tp: TopicPartition) -> None:
        found.setdefault(tp.topic, set()).add(tp.partition)

    for e in events:
        if isinstance(e, ev.Assigned | ev.Revoked | ev.Lost | ev.Paused | ev.Resumed):
            for tp in e.partitions:
                add(tp)
        elif isinstance(e, ev.Polled | ev.Delivered):
            for tp, _, _ in e.counts if isinstance(e, ev.Polled) else e.records:
                add(tp)
        elif isinstance(e, ev.Committed):
            for tp, _ in e.positions:
                add(tp)
        elif hasattr(e, "tp") and isinstance(e.tp, TopicPartition):
            add(e.tp)
    return found


def build(
    events: Sequence[ev.Event],
    names: Names | None = None,
    alias: Callable[[str], str] = lambda topic: topic,
) -> Trace:
    """The sequence diagram of `events` (in the order given). `names` gives records short
    names (``m2``); `alias` gives topics short names."""
    b = _Builder(names or {}, alias)
    if events:
        b.t0 = events[0].ts
    # A failed dead-letter write is drawn towards the topic a later write of it reached.
    dead_letter_topic = {
        (e.tp, e.offset): e.topic for e in events if isinstance(e, ev.DeadLettered)
    }
    # Retry and dead-letter topics are drawn on the right, also when a consumer reads them.
    b.destinations = {e.topic: "retry" for e in events if isinstance(e, ev.RetryHop)}
    b.destinations.update({t: "dlt" for t in dead_letter_topic.values()})
    b.split = {
        topic: tuple(sorted(ps))
        for topic, ps in _partitions(events).items()
        if len(ps) > 1 and topic not in b.destinations
    }
    for e in events:
        if isinstance(e, ev.Started):
            for topic in e.topics:
                b.topic(topic)
            b.note(e, b.client(e.listener), "started, joining the group", "started")
            continue
        b.add(e, dead_letter_topic)
    # Notes the lab made before the consumer it names existed are drawn on the first client.
    first_client = next(iter(b.clients.values())).id if b.clients else ""
    steps = tuple(
        Note(s.t, s.at or first_client, s.text, s.kind, s.until) if isinstance(s, Note) else s
        for s in b.steps
    )
    duration = round(events[-1].ts - b.t0, 3) if events else 0.0
    return Trace(b.participants(), steps, duration, dict(names or {}))
