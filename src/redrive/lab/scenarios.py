"""The lab's scenarios: each sets up fresh topics and a fresh group, runs consumers against a
real broker, and checks what users observe against the contract (DESIGN.md sections 1-2).

Adding a scenario is one function::

    @scenario("success", "Success", contract="C2", story="...")
    def success(lab: Lab) -> None:
        topic = lab.topic("orders", ["m1", "m2", "m3"])
        app = lab.app()
        ...
        lab.check_committed(topic, {0: 3})

A scenario reads only the event bus (through ``lab``) and the broker (committed positions,
topic contents). ``run`` records the events, builds the per-record table and the verdict.
The `story` is the scenario's set-up and what the contract promises; what happened in a run
is told from its events (``redrive.lab.story``), never written in advance. Scenarios are
numbered in the order they are registered (``redrive lab --list``).
"""

from __future__ import annotations

import struct
import tempfile
import time
import uuid
from collections.abc import Callable, Iterator, Mapping, Sequence
from contextlib import contextmanager
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import redrive.admin as admin
from redrive.app import App
from redrive.errors import BatchFailed, ClientError
from redrive.events import (
    Acknowledged,
    Assigned,
    BackingOff,
    Committed,
    DeadLettered,
    Delivered,
    Event,
    Failed,
    Lost,
    Polled,
    Recorder,
    RecoveryRetrying,
    RetryHop,
    Revoked,
    Skipped,
    Stopped,
    Succeeded,
)
from redrive.headers import DLT_ORIGINAL_OFFSET, REDRIVE_ATTEMPTS, due_ms
from redrive.lab.child import Child
from redrive.lab.codec import LabNote
from redrive.lab.values import plain
from redrive.message import Message, TopicPartition
from redrive.recover.dead_letter import DeadLetter
from redrive.retry.backoff import BackOff
from redrive.retry.policy import Retry
from redrive.share.group import ShareGroup
from redrive.topics import RetryTopics

FAST = {"session.timeout.ms": 6000, "heartbeat.interval.ms": 500}
"""Short sessions: a dead consumer is noticed in seconds, not the default 45 s."""


class LabFailure(Exception):
    """A scenario could not reach the state it waits for (the verdict says what)."""


@dataclass(frozen=True, slots=True)
class Check:
    what: str
    expected: Any
    observed: Any
    partitions_of: str | None = None
    """The short name of the topic whose partitions are the integer keys of dict values."""

    @property
    def ok(self) -> bool:
        return bool(self.expected == self.observed)

    def show(self, value: Any) -> str:
        """`value` (the expected or observed one) as a person writes it."""
        return plain(value, partitions_of=self.partitions_of)


@dataclass(frozen=True, slots=True)
class Row:
    """One record of the run: how often it was handed to the handler, and how it ended."""

    name: str
    topic: str
    partition: int
    offset: int
    handled: int
    outcome: str


@dataclass
class Result:
    name: str
    title: str
    contract: str
    story: str
    events: list[Event] = field(default_factory=list)
    checks: list[Check] = field(default_factory=list)
    rows: list[Row] = field(default_factory=list)
    committed: dict[str, dict[int, int | None]] = field(default_factory=dict)
    names: dict[tuple[str, int, int], str] = field(default_factory=dict)
    aliases: dict[str, str] = field(default_factory=dict)
    duration: float = 0.0
    error: str | None = None
    number: int = 0
    """The scenario's place in the lab (1 for the first of ``--list``); 0 when unregistered."""

    @property
    def heading(self) -> str:
        """``3. Exception at m2, thrown to the loop``."""
        return f"{self.number}. {self.title}" if self.number else self.title

    @property
    def passed(self) -> bool:
        return self.error is None and bool(self.checks) and all(c.ok for c in self.checks)

    @property
    def differences(self) -> list[str]:
        out = [
            f"{c.what}: expected {c.show(c.expected)}, observed {c.show(c.observed)}"
            for c in self.checks
            if not c.ok
        ]
        if self.error:
            out.insert(0, self.error)
        return out

    def alias(self, topic: str) -> str:
        return self.aliases.get(topic, topic)


@dataclass(frozen=True, slots=True)
class Scenario:
    name: str
    title: str
    contract: str
    story: str
    body: Callable[[Lab], None]


SCENARIOS: dict[str, Scenario] = {}


def scenario(
    name: str, title: str, *, contract: str, story: str
) -> Callable[[Callable[[Lab], None]], Callable[[Lab], None]]:
    """Register a scenario under `name` (the order of registration is the lab's order)."""

    def register(body: Callable[[Lab], None]) -> Callable[[Lab], None]:
        if name in SCENARIOS:
            raise ValueError(f"scenario {name!r} is registered twice")
        SCENARIOS[name] = Scenario(name, title, contract, " ".join(story.split()), body)
        return body

    return register


class Lab:
    """What a scenario works with: fresh names, topics, Apps wired to the recorder, checks."""

    def __init__(self, servers: str, result: Result, workdir: Path) -> None:
        self.servers = servers
        self.result = result
        self.workdir = workdir
        self.recorder = Recorder()
        self.run_id = uuid.uuid4().hex[:6]
        self.group = f"lab-{result.name}-{self.run_id}"
        self.apps: list[App] = []
        self.inbound: list[str] = []

    # -- set-up ---------------------------------------------------------------------------

    def topic(
        self,
        label: str,
        values: Sequence[str] = (),
        *,
        partitions: int = 1,
        per_partition: Mapping[int, Sequence[str]] | None = None,
        batch_each: bool = False,
    ) -> str:
        """Create a fresh topic (shown as `label`) and produce `values` to partition 0, or
        `per_partition` values to each partition; values become the records' names. With
        `batch_each`, one producer batch per record (so share-group members can share them)."""
        name = f"lab-{self.result.name}-{label}-{self.run_id}"
        admin.create_topics(self.servers, {name: partitions})
        self.result.aliases[name] = label
        self.inbound.append(name)
        for p, vals in (per_partition or ({0: values} if values else {})).items():
            for (part, offset), v in zip(
                admin.produce(self.servers, name, list(vals), partition=p, batch_each=batch_each),
                vals,
                strict=True,
            ):
                self.result.names[(name, part, offset)] = v
        return name

    def dead_letter_topic(self, topic: str, partitions: int = 1) -> str:
        name = f"{topic}-dlt"
        admin.create_topics(self.servers, {name: partitions})
        self.result.aliases[name] = f"{self.result.alias(topic)}-dlt"
        return name

    def app(self, **kafka: Any) -> App:
        """An App on the scenario's group whose events the lab records."""
        app = App(self.servers, self.group, kafka={**FAST, **kafka})
        app.bus.subscribe(self.recorder)
        self.apps.append(app)
        return app

    def share_app(self) -> App:
        """An App for share listeners on the scenario's group, recorded like ``app()``."""
        app = App(self.servers, self.group)
        app.bus.subscribe(self.recorder)
        self.apps.append(app)
        return app

    def acknowledged(self, outcome: str = "accept") -> dict[str, list[int]]:
        """Record name -> the delivery counts at which it was acknowledged with `outcome`."""
        out: dict[str, list[int]] = {}
        for e in self.events(Acknowledged):
            if e.outcome == outcome:
                out.setdefault(self.name(e.tp, e.offset), []).append(e.delivery)
        return out

    def deliveries(self) -> dict[str, list[tuple[str, int]]]:
        """Record name -> (listener, attempt) of each hand-over, in order."""
        out: dict[str, list[tuple[str, int]]] = {}
        for e in self.events(Delivered):
            for tp, o, attempt in e.records:
                out.setdefault(self.name(tp, o), []).append((e.listener, attempt))
        return out

    @contextmanager
    def running(self, app: App) -> Iterator[App]:
        """Run `app` in background threads; always stop it."""
        app.start()
        try:
            yield app
        finally:
            app.stop()
            app.join(60)

    @contextmanager
    def child(self, name: str, factory: str, **kwargs: Any) -> Iterator[Child]:
        """An App in a child process (see ``redrive.lab.child``); its events join the run's
        events when the block ends, and it is always killed."""
        child = Child(
            factory,
            {"servers": self.servers, "group": self.group, "name": name, **kwargs},
            self.workdir,
            name=name,
        )
        try:
            with child:
                yield child
        finally:
            for e in child.events():
                self.recorder(e)

    def note(self, text: str, listener: str = "") -> None:
        """A step the lab itself took, drawn in the diagram."""
        self.recorder(LabNote(listener, text))

    # -- observing ------------------------------------------------------------------------

    def wait(self, check: Callable[[], bool], what: str, timeout: float = 60.0) -> None:
        deadline = time.monotonic() + timeout
        while not check():
            if time.monotonic() > deadline:
                raise LabFailure(f"timed out after {timeout:g} s waiting for {what}")
            time.sleep(0.02)

    def events(self, kind: type[Event] | tuple[type[Event], ...] = Event) -> list[Any]:
        return [e for e in list(self.recorder.events) if isinstance(e, kind)]

    def commits(self, topic: str) -> list[dict[int, int]]:
        """Positions of `topic` in each recorded commit that moved one, in order. Commits
        that only write metadata (the owner's window, attempt marks, a clean hand-over at
        the same position) are left out; the diagrams draw them all."""
        out = []
        last: dict[int, int] = {}
        for e in self.events(Committed):
            got = {
                tp.partition: pos
                for tp, pos in e.positions
                if tp.topic == topic and last.get(tp.partition, 0) != pos
            }
            if got:
                last.update(got)
                out.append(got)
        return out

    def last_commit(self, topic: str) -> dict[int, int]:
        """The latest recorded position of each partition of `topic`."""
        merged: dict[int, int] = {}
        for c in self.commits(topic):
            merged.update(c)
        return merged

    def committed(self, topic: str, group: str | None = None) -> dict[int, int | None]:
        """The group's (or `group`'s) committed positions, read from the broker; also shown
        in the report's table of committed positions."""
        positions = admin.committed_offsets(self.servers, group or self.group, topic)
        self.result.committed[topic] = positions
        return positions

    def name_records(self, topic: str) -> None:
        """Name the records now in `topic` by their values (records copied to retry topics)."""
        for m in admin.read_all(self.servers, topic):
            self.result.names[(topic, m.partition(), m.offset())] = m.value().decode()

    def dead_letters(self, topic: str) -> list[Any]:
        return admin.read_all(self.servers, topic)

    def name(self, tp: TopicPartition, offset: int) -> str:
        return self.result.names.get((tp.topic, tp.partition, offset), f"{tp}@{offset}")

    def handled(self, listener: str | None = None) -> list[str]:
        """Names of the records handed to the handler, in order (batches flattened)."""
        return [
            self.name(tp, o)
            for e in self.events(Delivered)
            if listener is None or e.listener == listener
            for tp, o, _ in e.records
        ]

    # -- verdict --------------------------------------------------------------------------

    def check(self, what: str, expected: Any, observed: Any, *, topic: str | None = None) -> None:
        """Compare; with `topic`, integer dict keys are shown as its partitions
        (``{orders[0]: 3}``)."""
        label = None if topic is None else self.result.alias(topic)
        self.result.checks.append(Check(what, expected, observed, label))

    def check_committed(
        self, topic: str, expected: Mapping[int, int | None], *, group: str | None = None
    ) -> None:
        """The committed positions of `topic` (read from the broker) are `expected`."""
        what = f"committed {self.result.alias(topic)}" + (" (group -retry)" if group else "")
        self.check(what, dict(expected), self.committed(topic, group), topic=topic)


def run(spec: Scenario, servers: str, *, workdir: Path | None = None) -> Result:
    """Run one scenario on fresh topics and a fresh group; never raises for a failed run."""
    result = Result(spec.name, spec.title, spec.contract, spec.story)
    result.number = number(spec.name)
    started = time.monotonic()
    with tempfile.TemporaryDirectory(prefix=f"redrive-lab-{spec.name}-") as tmp:
        lab = Lab(servers, result, workdir or Path(tmp))
        try:
            spec.body(lab)
        except Exception as exc:  # the verdict reports it; the next scenario still runs
            result.error = f"{type(exc).__name__}: {exc}"
        finally:
            for app in lab.apps:
                app.stop()
    result.duration = round(time.monotonic() - started, 2)
    result.events = sorted(lab.recorder.events, key=lambda e: e.ts)
    for topic in lab.inbound:
        if topic not in result.committed:
            try:
                lab.committed(topic)
            except Exception as exc:  # noqa: BLE001 - reported, not fatal
                result.error = result.error or f"reading committed positions: {exc}"
    result.rows = rows(result)
    return result


def number(name: str) -> int:
    """The place of scenario `name` in the lab, from 1 (0 for an unregistered one)."""
    order = list(SCENARIOS)
    return order.index(name) + 1 if name in order else 0


def _long(header: bytes | None) -> int | bytes | None:
    """An 8-byte big-endian header as the number it encodes (anything else as it is)."""
    return struct.unpack(">q", header)[0] if header and len(header) == 8 else header


def _int(header: bytes | None) -> int | bytes | None:
    """A 4-byte big-endian header as the number it encodes (anything else as it is)."""
    return struct.unpack(">i", header)[0] if header and len(header) == 4 else header


def rows(result: Result) -> list[Row]:
    """Per record: times handed to the handler, and its final outcome."""
    handled: dict[tuple[str, int, int], int] = {}
    outcome: dict[tuple[str, int, int], str] = {}
    for e in result.events:
        if isinstance(e, Delivered):
            for tp, o, _ in e.records:
                key = (tp.topic, tp.partition, o)
                handled[key] = handled.get(key, 0) + 1
        elif isinstance(e, Succeeded):
            outcome[(e.tp.topic, e.tp.partition, e.offset)] = "handled"
        elif isinstance(e, Failed):
            outcome[(e.tp.topic, e.tp.partition, e.offset)] = f"failed ({e.error_type})"
        elif isinstance(e, DeadLettered):
            outcome[(e.tp.topic, e.tp.partition, e.offset)] = (
                f"dead-lettered to {result.alias(e.topic)}[{e.partition}]@{e.dlt_offset}"
            )
        elif isinstance(e, RetryHop):
            outcome[(e.tp.topic, e.tp.partition, e.offset)] = (
                f"moved to {result.alias(e.topic)} (attempt {e.attempt} due at +"
                f"{e.due - result.events[0].ts:.2f} s)"
            )
        elif isinstance(e, RecoveryRetrying):
            outcome[(e.tp.topic, e.tp.partition, e.offset)] = "dead-letter write failed"
        elif isinstance(e, Skipped):
            outcome[(e.tp.topic, e.tp.partition, e.offset)] = "skipped"
        elif isinstance(e, Acknowledged):
            key = (e.tp.topic, e.tp.partition, e.offset)
            if e.outcome == "release":
                outcome[key] = f"released at delivery {e.delivery}"
            elif e.outcome == "reject":
                outcome[key] = f"{outcome.get(key, '-')}, then rejected"
            else:
                outcome[key] = f"accepted at delivery {e.delivery}"
    return [
        Row(name, topic, p, o, handled.get((topic, p, o), 0), outcome.get((topic, p, o), "-"))
        for (topic, p, o), name in sorted(result.names.items())
    ]


# -- the scenarios ----------------------------------------------------------------------------

M = [f"m{i}" for i in range(1, 7)]


@scenario(
    "success",
    "Success: commit after the batch",
    contract="C2",
    story="""orders[0] holds m1..m6; the listener takes up to 3 records per poll and handles
    every record without error. The contract: a poll's position is committed only when all
    of its records are done, and the next poll starts after them.""",
)
def success(lab: Lab) -> None:
    topic = lab.topic("orders", M)
    app = lab.app()
    commits_seen: list[list[dict[int, int]]] = []

    @app.listener(topic, max_poll_records=3, name="consumer")
    def handle(msg: Message) -> None:
        commits_seen.append(lab.commits(topic))

    with lab.running(app):
        lab.wait(lambda: lab.last_commit(topic) == {0: 6}, "position 6 committed")
    lab.check("records handled, in order", M, lab.handled())
    lab.check(
        "commits made while m1, m2, m3 were handled", [[], [], []], commits_seen[:3], topic=topic
    )
    lab.check("commits, in order", [{0: 3}, {0: 6}], lab.commits(topic), topic=topic)
    lab.check_committed(topic, {0: 6})


def crash_app(servers: str, group: str, name: str, topic: str) -> App:
    """The crash scenario's consumer (built in a child process): m2 takes forever."""
    app = App(servers, group, kafka={**FAST, "max.poll.interval.ms": 6000})

    @app.listener(topic, max_poll_records=3, value_deserializer="str", name=name)
    def handle(msg: Message) -> None:
        if msg.value == "m2":
            time.sleep(60)  # the lab kills the process meanwhile

    return app


@scenario(
    "crash",
    "Consumer dies at m2 (SIGKILL)",
    contract="C3",
    story="""orders[0] holds m1..m3. consumer-1 runs in a child process, 3 records per poll;
    its handler blocks at m2, and the lab kills the process with SIGKILL while m2 is in the
    handler. Then consumer-2 joins the same group. The contract: nothing is lost, and what is
    handled again is bounded by what was handled since the last commit (at-least-once).""",
)
def crash(lab: Lab) -> None:
    topic = lab.topic("orders", M[:3])
    with lab.child("consumer-1", "redrive.lab.scenarios:crash_app", topic=topic) as child:

        def m2_delivered() -> bool:
            if not child.alive():
                raise LabFailure(f"the child consumer exited early: {child.log_tail()}")
            return any(isinstance(e, Delivered) and e.records[0][1] == 1 for e in child.events())

        lab.wait(m2_delivered, "m2 handed to the handler in the child process")
        lab.note("SIGKILL", "consumer-1")
        child.kill()
    lab.check("committed when the consumer died", {0: 0}, lab.committed(topic), topic=topic)
    app = lab.app()

    @app.listener(topic, max_poll_records=3, name="consumer-2")
    def handle(msg: Message) -> None:
        pass

    with lab.running(app):
        lab.wait(lambda: lab.last_commit(topic) == {0: 3}, "position 3 committed by the new owner")
    lab.check("handled by consumer-1 before it died", ["m1", "m2"], lab.handled("consumer-1"))
    lab.check("handled by the new owner", ["m1", "m2", "m3"], lab.handled("consumer-2"))
    lab.check_committed(topic, {0: 3})


@scenario(
    "exception",
    "Exception at m2, thrown to the loop",
    contract="F1",
    story="""orders[0] holds m1..m4, 3 per poll; the handler raises once at m2, with no
    back-off and no recoverer. The contract: m1 is committed (position 1) and m2 is not, the
    next poll starts at m2, and what m2 did before it threw happens again.""",
)
def exception(lab: Lab) -> None:
    topic = lab.topic("orders", M[:4])
    app = lab.app()
    failed: list[str] = []

    @app.listener(
        topic,
        max_poll_records=3,
        value_deserializer="str",
        name="consumer",
        retry=Retry(backoff=BackOff.fixed(0.0, max_attempts=None)),
    )
    def handle(msg: Message) -> None:
        if msg.value == "m2" and not failed:
            failed.append(msg.value)
            raise RuntimeError("m2 failed")

    with lab.running(app):
        lab.wait(lambda: lab.last_commit(topic) == {0: 4}, "position 4 committed")
    lab.check("records handled", ["m1", "m2", "m2", "m3", "m4"], lab.handled())
    lab.check("first commit", [{0: 1}], lab.commits(topic)[:1], topic=topic)
    polls = [[(lab.name(tp, first), n) for tp, first, n in e.counts] for e in lab.events(Polled)]
    lab.check("polls (first record, count)", [[("m1", 3)], [("m2", 3)]], polls[:2])
    lab.check_committed(topic, {0: 4})


@scenario(
    "dead-letter",
    "Exception at m2, dead-lettered",
    contract="F2, D1, D3",
    story="""orders[0] holds m1..m3; the handler raises at m2, no retry is configured, and the
    recoverer is the dead-letter publisher. The contract: m2 is written to orders-dlt with its
    origin in kafka_dlt-* headers, the broker acknowledges that write before m2's offset is
    committed, and the batch goes on without repeating anything.""",
)
def dead_letter(lab: Lab) -> None:
    topic = lab.topic("orders", M[:3])
    dlt = lab.dead_letter_topic(topic)
    app = lab.app()

    @app.listener(
        topic,
        max_poll_records=3,
        value_deserializer="str",
        name="consumer",
        retry=Retry.none(),
        recoverer=DeadLetter(),
    )
    def handle(msg: Message) -> None:
        if msg.value == "m2":
            raise RuntimeError("m2 cannot be handled")

    with lab.running(app):
        lab.wait(lambda: lab.last_commit(topic) == {0: 3}, "position 3 committed")
    lab.check("records handled", ["m1", "m2", "m3"], lab.handled())
    letters = lab.dead_letters(dlt)
    lab.check("dead-letter topic values", [b"m2"], [m.value() for m in letters])
    origin = [dict(m.headers() or []).get(DLT_ORIGINAL_OFFSET) for m in letters]
    lab.check("kafka_dlt-original-offset (8-byte long)", [1], [_long(h) for h in origin])
    events = lab.events()
    acked = next(i for i, e in enumerate(events) if isinstance(e, DeadLettered))
    past = next(
        i
        for i, e in enumerate(events)
        if isinstance(e, Committed) and any(pos > 1 for tp, pos in e.positions if tp.topic == topic)
    )
    lab.check("dead-letter acknowledged before the commit past m2", True, acked < past)
    lab.check_committed(topic, {0: 3})


@scenario(
    "partitions",
    "Several topics and partitions",
    contract="C6",
    story="""orders has two partitions (a1..a3 in orders[0], b1..b3 in orders[1]) and payments
    one (p1..p3); one listener reads both topics, up to 9 records per poll. a2 fails on its
    first attempt and is retried after 1.5 s. The contract: each partition is tracked and
    committed on its own; the failure on orders[0] does not block, rewind or commit anything
    of another partition.""",
)
def partitions(lab: Lab) -> None:
    orders = lab.topic(
        "orders", partitions=2, per_partition={0: ["a1", "a2", "a3"], 1: ["b1", "b2", "b3"]}
    )
    payments = lab.topic("payments", ["p1", "p2", "p3"])
    app = lab.app()
    failed: list[str] = []

    @app.listener(
        [orders, payments],
        max_poll_records=9,
        value_deserializer="str",
        name="consumer",
        retry=Retry(backoff=BackOff.fixed(1.5, max_attempts=None)),
    )
    def handle(msg: Message) -> None:
        if msg.value == "a2" and not failed:
            failed.append(msg.value)
            raise RuntimeError("a2 failed")

    with lab.running(app):
        lab.wait(
            lambda: lab.last_commit(orders) == {0: 3, 1: 3} and lab.last_commit(payments) == {0: 3},
            "every partition committed",
        )
    handled = lab.handled()
    lab.check(
        "times each record was handled",
        {"a1": 1, "a2": 2, "a3": 1, "b1": 1, "b2": 1, "b3": 1, "p1": 1, "p2": 1, "p3": 1},
        {v: handled.count(v) for v in sorted(set(handled))},
    )
    retry_at = next(
        i
        for i, e in enumerate(lab.events())
        if isinstance(e, Delivered)
        and lab.name(e.records[0][0], e.records[0][1]) == "a2"
        and e.records[0][2] == 2
    )
    before: dict[str, int] = {}
    for e in lab.events()[:retry_at]:
        if isinstance(e, Committed):
            for tp, pos in e.positions:
                before[f"{lab.result.alias(tp.topic)}[{tp.partition}]"] = pos
    lab.check(
        "committed before a2 was retried",
        {"orders[0]": 1, "orders[1]": 3, "payments[0]": 3},
        before,
    )
    lab.check_committed(orders, {0: 3, 1: 3})
    lab.check_committed(payments, {0: 3})


@scenario(
    "batch",
    "Batch listener, without and with an index",
    contract="F3",
    story="""orders[0] holds m1..m6; the listener receives each poll (up to 3 records) as one
    list. The batch starting at m1 fails the first time without saying where; the first
    batch containing m5 fails naming it (BatchFailed(index=...)). The contract: without an
    index the whole batch is retried; with one, the records before it are committed and the
    retry starts at it.""",
)
def batch(lab: Lab) -> None:
    topic = lab.topic("orders", M)
    app = lab.app()
    calls: list[list[str]] = []

    @app.batch_listener(
        topic,
        max_poll_records=3,
        value_deserializer="str",
        name="consumer",
        retry=Retry(backoff=BackOff.fixed(0.0, max_attempts=None)),
    )
    def handle(records: list[Message]) -> None:
        values = [m.value for m in records]
        calls.append(values)
        if values[0] == "m1" and len(calls) == 1:
            raise RuntimeError("batch failed")
        if "m5" in values and sum("m5" in c for c in calls) == 1:
            raise BatchFailed(index=values.index("m5"))

    with lab.running(app):
        lab.wait(lambda: lab.last_commit(topic) == {0: 6}, "position 6 committed")
    lab.check("batches handed to the listener", [M[:3], M[:3], M[3:], M[4:]], calls)
    commits = lab.commits(topic)
    # While the first batch waits for its retry nothing is finished: a commit made then may
    # only say position 0.
    first_ok = commits.index({0: 3}) if {0: 3} in commits else len(commits)
    lab.check(
        "positions committed before the first batch succeeded",
        [],
        [c for c in commits[:first_ok] if c != {0: 0}],
        topic=topic,
    )
    # Before the retry of m5 its attempt count is committed at position 4 again (R3): the
    # same position twice in a row is one step.
    later = [
        c for i, c in enumerate(commits[first_ok:]) if i == 0 or c != commits[first_ok + i - 1]
    ]
    lab.check("positions committed from then on", [{0: 3}, {0: 4}, {0: 6}], later, topic=topic)
    lab.check_committed(topic, {0: 6})


@scenario(
    "stateless-retry",
    "Stateless retry longer than max.poll.interval.ms",
    contract="R2",
    story="""orders[0] holds m1..m3; m2 fails on attempts 1 to 3 and is retried in place (the
    loop keeps the record) with a fixed 2.5 s back-off: 7.5 s of waiting, while
    max.poll.interval.ms is 6 s. The contract: the partition is paused while it waits and the
    loop keeps polling, so the consumer is never evicted and m1 is not handled again.""",
)
def stateless_retry(lab: Lab) -> None:
    topic = lab.topic("orders", M[:3])
    app = lab.app(**{"max.poll.interval.ms": 6000})
    attempts: list[int] = []

    @app.listener(
        topic,
        max_poll_records=3,
        value_deserializer="str",
        name="consumer",
        retry=Retry.in_place(BackOff.fixed(2.5, max_attempts=5)),
    )
    def handle(msg: Message) -> None:
        if msg.value == "m2":
            attempts.append(msg.attempt)
            if msg.attempt < 4:
                raise RuntimeError(f"m2 attempt {msg.attempt} failed")

    with lab.running(app):
        lab.wait(lambda: lab.last_commit(topic) == {0: 3}, "position 3 committed")
    waited = sum(e.delay for e in lab.events(BackingOff))
    lab.check("time waited exceeds max.poll.interval.ms (6 s)", True, waited > 6.0)
    lab.check("attempts of m2", [1, 2, 3, 4], attempts)
    lab.check("records handled", ["m1", "m2", "m2", "m2", "m2", "m3"], lab.handled())
    events = lab.events()
    done = max(i for i, e in enumerate(events) if isinstance(e, Succeeded))
    lab.check(
        "rebalances until m3 succeeded (an eviction would revoke or lose orders[0])",
        ["Assigned"],
        [
            e.kind
            for e in events[:done]
            if isinstance(e, Assigned | Revoked | Lost) and e.partitions
        ],
    )
    lab.check_committed(topic, {0: 3})


@scenario(
    "stateful-retry",
    "Stateful retry across a rebalance",
    contract="R3, D2",
    story="""orders[0] holds m1..m3; m2 always fails. Seek retry allows 4 attempts, 1 s
    apart, then dead-letters. consumer-1 leaves the group right after its second attempt at
    m2; then consumer-2 joins. The contract: the attempt count is kept in the commit metadata
    of m2's position, so consumer-2 continues it (attempts 3 and 4) and m2 reaches orders-dlt
    with 4 attempts recorded.""",
)
def stateful_retry(lab: Lab) -> None:
    topic = lab.topic("orders", M[:3])
    dlt = lab.dead_letter_topic(topic)
    seen: list[tuple[str, int]] = []

    def consumer(name: str, leave_after: int | None = None) -> App:
        app = lab.app()

        @app.listener(
            topic,
            max_poll_records=3,
            value_deserializer="str",
            name=name,
            retry=Retry.seek(BackOff.fixed(1.0, max_attempts=4)),
        )
        def handle(msg: Message) -> None:
            if msg.value == "m2":
                seen.append((name, msg.attempt))
                if msg.attempt == leave_after:
                    app.stop()  # leave the group right after this attempt: no race with a third
                raise RuntimeError("m2 is poison")

        return app

    with lab.running(consumer("consumer-1", leave_after=2)):
        lab.wait(lambda: bool(lab.events(Stopped)), "consumer-1 to leave the group")
    with lab.running(consumer("consumer-2")):
        lab.wait(lambda: lab.last_commit(topic).get(0) == 3, "position 3 committed")
    lab.check(
        "attempts of m2 (consumer, attempt)",
        [("consumer-1", 1), ("consumer-1", 2), ("consumer-2", 3), ("consumer-2", 4)],
        seen,
    )
    letters = lab.dead_letters(dlt)
    lab.check("dead-letter topic values", [b"m2"], [m.value() for m in letters])
    lab.check(
        "redrive_dlt-attempts (4-byte int)",
        [4],
        [_int(dict(m.headers() or []).get(REDRIVE_ATTEMPTS)) for m in letters],
    )
    lab.check_committed(topic, {0: 3})


@scenario(
    "dead-letter-fails",
    "A dead-letter write fails, then succeeds",
    contract="D3",
    story="""orders[0] holds m1..m3; m2 fails and goes to the dead-letter publisher, but
    orders-dlt does not exist at first (named by a function, start does not create it; topic
    auto-creation is off), and recovery is retried
    every 1 s. Once a write has failed, the lab creates orders-dlt. The contract: nothing is
    committed past m2 until a write is acknowledged, m2 is not handled again, and nothing
    is lost.""",
)
def dead_letter_fails(lab: Lab) -> None:
    topic = lab.topic("orders", M[:3])
    app = lab.app()

    @app.listener(
        topic,
        max_poll_records=3,
        value_deserializer="str",
        name="consumer",
        retry=Retry(backoff=BackOff.none(), recovery=BackOff.fixed(1.0)),
        # named by a function, orders-dlt is not created at start: it stays missing
        recoverer=DeadLetter(topic=lambda msg: f"{msg.topic}-dlt"),
    )
    def handle(msg: Message) -> None:
        if msg.value == "m2":
            raise RuntimeError("m2 cannot be handled")

    with lab.running(app):
        lab.wait(lambda: bool(lab.events(RecoveryRetrying)), "the dead-letter write to fail")
        lab.note(f"lab creates {lab.result.alias(topic)}-dlt", "consumer")
        dlt = lab.dead_letter_topic(topic)
        lab.wait(lambda: lab.last_commit(topic) == {0: 3}, "position 3 committed")
    written = next(i for i, e in enumerate(lab.events()) if isinstance(e, DeadLettered))
    before = [
        pos
        for e in lab.events()[:written]
        if isinstance(e, Committed)
        for tp, pos in e.positions
        if tp.topic == topic
    ]
    lab.check(
        "highest position committed before the write was acknowledged", 1, max(before, default=None)
    )
    lab.check(
        "records handled (m2 once: only the write is retried)", ["m1", "m2", "m3"], lab.handled()
    )
    lab.check("dead-letter topic values", [b"m2"], [m.value() for m in lab.dead_letters(dlt)])
    lab.check_committed(topic, {0: 3})


@scenario(
    "retry-topics",
    "Non-blocking retry through retry topics to the dead-letter topic",
    contract="R4, D1",
    story="""orders[0] holds m1..m3; m2 always fails. The listener uses retry topics
    orders-retry-0 (0.5 s delay) and orders-retry-1 (1 s delay), then orders-dlt; the retry
    topics are read by a second consumer, consumer-retry (group <group>-retry). The contract:
    orders keeps flowing while m2 waits, no attempt runs before its due time, and each hop is
    acknowledged before its source offset is committed.""",
)
def retry_topics(lab: Lab) -> None:
    topic = lab.topic("orders", M[:3])
    dlt = lab.dead_letter_topic(topic)
    retries = [f"{topic}-retry-{n}" for n in range(2)]
    for n, t in enumerate(retries):
        lab.result.aliases[t] = f"orders-retry-{n}"
    app = lab.app()
    seen: list[tuple[str, str, int]] = []
    early: list[str] = []

    @app.listener(topic, max_poll_records=3, value_deserializer="str", name="consumer",
                  retry_topics=RetryTopics((0.5, 1.0)))  # fmt: skip
    def handle(msg: Message) -> None:
        seen.append((lab.result.alias(msg.topic), msg.value, msg.attempt))
        due = due_ms(msg)
        if due is not None and time.time() * 1000 < due:
            early.append(f"{msg.value}@{lab.result.alias(msg.topic)}")
        if msg.value == "m2":
            raise RuntimeError("m2 is poison")

    with lab.running(app):
        lab.wait(
            lambda: (
                bool(lab.events(DeadLettered))
                and lab.last_commit(topic) == {0: 3}
                and lab.last_commit(retries[1]) == {0: 1}
            ),
            "m2 dead-lettered and every hop committed",
        )
    for t in retries:
        lab.name_records(t)
    lab.check(
        "handled (topic, record, attempt)",
        [("orders", "m1", 1), ("orders", "m2", 1), ("orders", "m3", 1),
         ("orders-retry-0", "m2", 2), ("orders-retry-1", "m2", 3)],
        seen,
    )  # fmt: skip
    lab.check("attempts handled before their due time", [], early)
    letters = lab.dead_letters(dlt)
    lab.check("dead-letter topic values", [b"m2"], [m.value() for m in letters])
    lab.check(
        "redrive_dlt-attempts (4-byte int)", [3],
        [_int(dict(m.headers() or []).get(REDRIVE_ATTEMPTS)) for m in letters],
    )  # fmt: skip
    lab.check_committed(topic, {0: 3})
    for t in retries:
        lab.check_committed(t, {0: 1}, group=lab.group + "-retry")


@scenario(
    "transaction",
    "Consume, transform, produce in a transaction",
    contract="T1",
    story="""orders[0] holds m1..m4, 4 per poll; the listener commits in Kafka transactions
    (Commit.transaction()) and turns each record into an output on invoices. m3 fails once
    (a 0.5 s back-off), after the outputs of m1 and m2 reached the broker inside the open
    transaction. The contract: the transaction is aborted, a read_committed reader of
    invoices sees nothing of the poll until the retry succeeds, then each output exactly
    once; the aborted outputs are visible to read_uncommitted readers only.""",
)
def transaction(lab: Lab) -> None:
    from redrive.consumer.commit import Commit
    from redrive.events import Aborted
    from redrive.outputs import Output

    topic = lab.topic("orders", M[:4])
    out = lab.topic("invoices")
    app = lab.app()
    failed: list[str] = []
    seen: dict[str, list[str]] = {}

    def look(when: str) -> None:
        isolations: tuple[admin.Isolation, ...] = ("read_committed", "read_uncommitted")
        for isolation in isolations:
            got = [m.value().decode() for m in _read(lab.servers, out, isolation)]
            seen[f"{when}, {isolation}"] = got
            lab.note(f"{isolation} reader of invoices sees: {', '.join(got) or 'nothing'}")

    @app.listener(topic, max_poll_records=4, value_deserializer="str", name="consumer",
                  commit=Commit.transaction(),
                  retry=Retry.seek(BackOff.fixed(0.5, max_attempts=3)))  # fmt: skip
    def handle(msg: Message) -> Output:
        if msg.value == "m3" and not failed:
            lab.wait(lambda: len(_read(lab.servers, out, "read_uncommitted")) == 2,
                     "the outputs of m1 and m2 in the open transaction")  # fmt: skip
            look("before the failure")
            failed.append(msg.value)
            raise ConnectionError("invoice service unavailable")
        if failed and msg.value == "m1":
            look("after the abort")
        return Output(out, key=msg.raw_key, value=f"invoice-{msg.value}")

    with lab.running(app):
        lab.wait(lambda: lab.last_commit(topic) == {0: 4}, "position 4 committed")
    look("after the commit")
    invoices = [f"invoice-{m}" for m in M[:4]]
    lab.check("records handled", ["m1", "m2", "m3", "m1", "m2", "m3", "m4"], lab.handled())
    lab.check("transactions aborted", 1, len(lab.events(Aborted)))
    lab.check("read_committed before the failure", [], seen["before the failure, read_committed"])
    lab.check("read_committed after the abort", [], seen["after the abort, read_committed"])
    lab.check("read_committed at the end (each once)", invoices,
              seen["after the commit, read_committed"])  # fmt: skip
    everything = ["invoice-m1", "invoice-m2", *invoices]  # the aborted outputs too
    lab.check("read_uncommitted at the end", everything, seen["after the commit, read_uncommitted"])
    lab.check("commits, in order", [{0: 4}], lab.commits(topic), topic=topic)
    lab.check_committed(topic, {0: 4})


def _read(servers: str, topic: str, isolation: admin.Isolation) -> list[Any]:
    try:
        return admin.read_as(servers, topic, isolation)
    except ClientError as exc:
        raise LabFailure(str(exc)) from None


# -- share groups (KIP-932, S1) ---------------------------------------------------------------

S = [f"s{i}" for i in range(1, 13)]


@scenario(
    "share-members",
    "Share group: two members on one partition",
    contract="S1",
    story="""jobs has ONE partition holding s1..s12, each written as a producer batch of its
    own; two members of one share group (member#1, member#2) take up to 3 records per poll
    and need 50 ms per record; the member that gets s1 holds it until the other member has
    a record too (so the run does not depend on which member joins first). A consumer
    group would give the partition to one member; the contract: the broker hands every
    record to exactly one member, both members get work, and each record is accepted once.""",
)
def share_members(lab: Lab) -> None:
    topic = lab.topic("jobs", S, batch_each=True)
    app = lab.share_app()

    def both_busy() -> bool:
        return len({e.listener for e in lab.events(Delivered)}) == 2

    @app.share_listener(topic, name="member", consumers=2, max_poll_records=3)
    def handle(msg: Message) -> None:
        time.sleep(0.05)
        if msg.value == b"s1":
            lab.wait(both_busy, "the other member to get a record of the same partition")

    with lab.running(app):
        lab.wait(lambda: len(lab.acknowledged()) == len(S), "every record accepted")
    accepted = lab.acknowledged()
    lab.check("records accepted, with their delivery counts", {n: [1] for n in S}, accepted)
    by_member = {who for runs in lab.deliveries().values() for who, _ in runs}
    lab.check("members that handled records", {"member#1", "member#2"}, by_member)


def _leave_on_failure(app: App, failed: list[str], name: str) -> Callable[[Message], None]:
    def handle(msg: Message) -> None:
        time.sleep(0.05)
        if msg.value == b"s4" and msg.attempt == 1:
            failed.append(name)
            app.stop()  # leave: its release can only reach the other member
            raise ConnectionError("payment service unavailable")

    return handle


@scenario(
    "share-release",
    "Share group: a released record goes to the other member",
    contract="S1",
    story="""jobs[0] holds s1..s6 (a producer batch each); member-a and member-b share it.
    Whichever member gets s4 first fails with ConnectionError (retryable) and then stops. The
    contract: the failed record is released, not lost; the broker delivers it again to the
    other member with delivery count 2 (msg.attempt), and every record ends accepted once.""",
)
def share_release(lab: Lab) -> None:
    topic = lab.topic("jobs", S[:6], batch_each=True)
    failed: list[str] = []
    apps = []
    for name in ("member-a", "member-b"):
        app = lab.share_app()
        app.share_listener(topic, name=name, max_poll_records=2)(
            _leave_on_failure(app, failed, name)
        )
        apps.append(app)
    with lab.running(apps[0]), lab.running(apps[1]):
        lab.wait(lambda: len(lab.acknowledged()) == 6, "every record accepted")
    first = failed[0] if failed else "?"
    other = "member-b" if first == "member-a" else "member-a"
    lab.check("deliveries of s4 (member, delivery count)", [(first, 1), (other, 2)],
              lab.deliveries().get("s4"))  # fmt: skip
    lab.check("s4 released", {"s4": [1]}, lab.acknowledged("release"))
    lab.check("records accepted once", {n: 1 for n in S[:6]},
              {n: len(d) for n, d in lab.acknowledged().items()})  # fmt: skip


@scenario(
    "share-poison",
    "Share group: a poison record dead-lettered, then rejected",
    contract="S1, D2, D3",
    story="""jobs[0] holds s1..s3; the share group's delivery limit is 3; s2 always fails
    with ConnectionError (retryable). The contract: a failing record is released while it
    has deliveries left; one delivery before the limit it is dead-lettered and, only once
    the broker confirmed the dead letter, rejected (a record interrupted at the limit itself
    would be archived by the broker without one). msg.attempt is the delivery count.""",
)
def share_poison(lab: Lab) -> None:
    topic = lab.topic("jobs", S[:3])
    dlt = lab.dead_letter_topic(topic)
    app = lab.share_app()

    @app.share_listener(topic, name="member", share_group=ShareGroup(delivery_limit=3))
    def handle(msg: Message) -> None:
        if msg.value == b"s2":
            raise ConnectionError("payment service unavailable")

    with lab.running(app):
        lab.wait(lambda: bool(lab.acknowledged("reject")), "s2 rejected")
    lab.check("deliveries of s2 (member, delivery count)", [("member", 1), ("member", 2)],
              lab.deliveries().get("s2"))  # fmt: skip
    lab.check("acknowledged",
              {"accept": {"s1": [1], "s3": [1]}, "release": {"s2": [1]}, "reject": {"s2": [2]}},
              {o: lab.acknowledged(o) for o in ("accept", "release", "reject")})  # fmt: skip
    letters = lab.dead_letters(dlt)
    lab.check(
        "dead letters (value, original offset, attempts)",
        [("s2", 1, 2)],
        [(m.value().decode(), _long(dict(m.headers()).get(DLT_ORIGINAL_OFFSET)),
          _int(dict(m.headers()).get(REDRIVE_ATTEMPTS))) for m in letters],
    )  # fmt: skip
    rejected_at = min(e.ts for e in lab.events(Acknowledged) if e.outcome == "reject")
    confirmed_at = min((e.ts for e in lab.events(DeadLettered)), default=rejected_at + 1)
    lab.check("dead letter confirmed before the reject", True, confirmed_at <= rejected_at)


@scenario(
    "share-crash",
    "Share group: a member dies holding records (SIGKILL)",
    contract="S1, C3",
    story="""jobs[0] holds s1..s4 (one producer batch, so one member acquires them all); the
    share group's acquisition lock is 2 s. member-a runs in a child process and blocks at s3;
    the lab kills it with SIGKILL while it holds the records it acquired, then member-b
    joins. The contract: nothing is lost; what the dead member held is delivered again
    (count 2), including what it handled but had not acknowledged (at-least-once). The
    broker releases them as soon as it sees the dead member's connection close.""",
)
def share_crash(lab: Lab) -> None:
    _held_by_a_dead_member(lab, freeze=False)


@scenario(
    "share-frozen",
    "Share group: a member freezes holding records (SIGSTOP)",
    contract="S1",
    story="""As share-crash, but the lab freezes member-a with SIGSTOP: the process keeps its
    connection and its acquisition locks, and does nothing. The contract: its records come
    back when their 2 s lock expires (not before), delivered again with count 2, and nothing
    is lost. The lock is the bound on how long a stuck member can hold records.""",
)
def share_frozen(lab: Lab) -> None:
    _held_by_a_dead_member(lab, freeze=True)


def _held_by_a_dead_member(lab: Lab, *, freeze: bool) -> None:
    topic = lab.topic("jobs", S[:4])
    lock = 2.0
    with lab.child("member-a", "redrive.lab.share:holding_member", topic=topic, hold="s3",
                   lock_duration=lock) as child:  # fmt: skip

        def holding() -> bool:
            if not child.alive():
                raise LabFailure(f"the child member exited early: {child.log_tail()}")
            return any(isinstance(e, Delivered) and e.records[0][1] == 2 for e in child.events())

        lab.wait(holding, "s3 handed to the handler in the child process")
        acquired = max(e.ts for e in child.events() if isinstance(e, Polled))
        lab.note("SIGSTOP" if freeze else "SIGKILL", "member-a")
        (child.freeze if freeze else child.kill)()
        app = lab.share_app()

        @app.share_listener(topic, name="member-b")
        def handle(msg: Message) -> None:
            pass

        with lab.running(app):
            lab.wait(lambda: len(lab.acknowledged()) == 4, "every record accepted by member-b")
    lab.check("handled by member-a before it stopped", ["s1", "s2", "s3"],
              lab.handled("member-a"))  # fmt: skip
    lab.check("accepted by member-b, with delivery counts", {n: [2] for n in S[:4]},
              lab.acknowledged())  # fmt: skip
    if freeze:
        back = min(e.ts for e in lab.events(Delivered) if e.listener == "member-b")
        lab.check("came back after the lock expired", True, back >= acquired + lock)


def select(names: Sequence[str]) -> list[Scenario]:
    """The scenarios called `names` (all when empty); ValueError names an unknown one."""
    if not names:
        return list(SCENARIOS.values())
    unknown = [n for n in names if n not in SCENARIOS]
    if unknown:
        raise ValueError(f"unknown scenario {unknown[0]!r}; the lab has: {', '.join(SCENARIOS)}")
    return [SCENARIOS[n] for n in names]
