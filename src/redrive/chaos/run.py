"""The chaos driver: a broker it can restart, a topic of records, consumer processes, and
faults on a seeded schedule, while it follows the ledger and the group's commits.

The driver is the only process that sends faults, and it logs each one with its time; the
consumers (``redrive run redrive.chaos.app:app``) know nothing of the plan. The run ends
when every record reached its final outcome (handled, or dead-lettered for the poison ones)
and the group has committed everything; then the consumers are stopped gracefully and the
dead-letter topic is read back with a plain consumer (``read_committed``), and in the
exactly-once mode the output topic too, once with each isolation level.
"""

from __future__ import annotations

import contextlib
import os
import random
import signal
import subprocess
import sys
import threading
import time
import uuid
from collections.abc import Callable, Iterator
from dataclasses import dataclass, field, replace
from pathlib import Path

from confluent_kafka import Consumer
from confluent_kafka import TopicPartition as KTopicPartition

from redrive import admin
from redrive.broker import LocalKafka
from redrive.chaos.app import RETRY_TOPICS
from redrive.chaos.ledger import Handling, Reader
from redrive.chaos.plan import EXACTLY_ONCE, POISON, Kind, Plan, output_topic, parse
from redrive.dlt.records import DeadLetterRecord, read
from redrive.observe.logs import kafka_logging
from redrive.workers import _die_with_parent, exit_code

TICK = 0.2
SAMPLE_EVERY = 0.5
STOP_WAIT = 60.0  # seconds a SIGTERMed consumer may take before it is SIGKILLed

Say = Callable[[str], None]


@dataclass(frozen=True, slots=True)
class Fault:
    """Something that happened to the run: ``kill`` (SIGKILL of a consumer), ``term``
    (SIGTERM), ``broker-term`` / ``broker-kill`` (a broker stop and start, from ``t`` to
    ``until``), done by the driver; ``refused``: a consumer reported that Kafka refused
    the commit of `partitions` it gave up in a rebalance; ``evicted``: a consumer reported
    that it lost `partitions` (its session expired, typically while the broker was down).
    ``pid`` is the consumer's process id (0 for the broker)."""

    t: float
    kind: str
    pid: int = 0
    slot: int = -1
    until: float = 0.0
    note: str = ""
    partitions: tuple[tuple[str, int], ...] = ()

    @property
    def end(self) -> float:
        return max(self.t, self.until)

    @property
    def broker(self) -> bool:
        return self.kind.startswith("broker")


@dataclass(frozen=True, slots=True)
class Sample:
    """The group's committed positions and the end offsets, per ``(topic, partition)``
    (None: nothing committed yet), read from ``began`` until ``t`` (None: at ``t``)."""

    t: float
    committed: dict[tuple[str, int], int | None]
    ends: dict[tuple[str, int], int]
    began: float | None = None

    @property
    def start(self) -> float:
        """When the read began: the positions are at least those committed by then."""
        return self.t if self.began is None else self.began

    def lag(self) -> int:
        return sum(end - (self.committed.get(tp) or 0) for tp, end in self.ends.items())


@dataclass(frozen=True, slots=True)
class Written:
    """A record of ``<topic>-out`` (exactly-once mode): the id of the record whose handling
    wrote it, where it is, and when it was written."""

    ident: int
    partition: int
    offset: int
    t: float


@dataclass
class Run:
    """What a chaos run did and saw: the input of the verdict and the report."""

    plan: Plan
    servers: str
    topic: str
    group: str
    kinds: list[str]
    produced: dict[int, tuple[int, int]]  # id -> (partition, offset)
    began: float = 0.0
    ended: float = 0.0
    settled: bool = False
    faults: list[Fault] = field(default_factory=list)
    starts: list[tuple[float, int, int]] = field(default_factory=list)  # (t, slot, pid)
    exits: list[tuple[float, int, int, int]] = field(default_factory=list)  # t, slot, pid, code
    samples: list[Sample] = field(default_factory=list)
    handlings: list[Handling] = field(default_factory=list)
    dead_letters: list[DeadLetterRecord] = field(default_factory=list)
    outputs: list[Written] = field(default_factory=list)
    """``<topic>-out`` as a ``read_committed`` reader sees it (exactly-once mode)."""
    outputs_uncommitted: list[Written] = field(default_factory=list)
    """``<topic>-out`` as a ``read_uncommitted`` reader sees it: aborted outputs too."""
    broker_faults: bool = True
    workdir: Path = Path()

    @property
    def dlt(self) -> str:
        return f"{self.topic}-dlt"

    @property
    def out(self) -> str:
        return output_topic(self.topic)


@dataclass
class Slot:
    index: int
    proc: subprocess.Popen[bytes] | None = None
    restart_at: float | None = None
    term_sent: float | None = None


class Driver:
    """Runs one chaos run. ``broker``: the restartable local broker (None: the broker at
    ``servers`` is not ours, and gets no faults)."""

    def __init__(
        self, plan: Plan, servers: str, broker: LocalKafka | None, workdir: Path, say: Say = print
    ) -> None:
        self.plan = plan
        self.servers = servers
        self.broker = broker
        self.workdir = workdir
        self.say = say
        self.rng = random.Random(f"faults-{plan.seed}")
        stem = f"chaos-{plan.mode}-{plan.seed}-{uuid.uuid4().hex[:6]}"
        self.topic, self.group = stem, f"{stem}-g"
        self.ledger = workdir / "ledger"
        self.slots = [Slot(i) for i in range(plan.consumers)]
        self.preexec = _die_with_parent()
        self._sampling = threading.Event()
        self.reader = Reader(self.ledger)

    # -- the run ------------------------------------------------------------------------

    def run(self) -> Run:
        plan = self.plan
        kinds = plan.kinds()
        self.say(
            f"chaos {plan.mode}: {plan.records:,} records over {plan.partitions} "
            f"partitions, {plan.consumers} consumers, seed {plan.seed}"
        )
        topics = {self.topic: plan.partitions, f"{self.topic}-dlt": plan.partitions}
        if plan.mode == "retry-topics":  # before the sampler looks at them
            topics.update(dict.fromkeys(RETRY_TOPICS.retry_topics(self.topic), plan.partitions))
        if plan.mode in EXACTLY_ONCE:
            topics[output_topic(self.topic)] = plan.partitions
        admin.create_topics(self.servers, topics)
        produced = self._produce(kinds)
        run = Run(
            plan,
            self.servers,
            self.topic,
            self.group,
            list(kinds),
            produced,
            broker_faults=self.broker is not None,
            workdir=self.workdir,
        )
        watched = self._watched()
        sampler = threading.Thread(
            target=self._sample, args=(run, watched), daemon=True, name="chaos:sampler"
        )
        run.began = time.time()
        try:
            for slot in self.slots:
                self._start(run, slot)
            sampler.start()
            self._drive(run, kinds)
        finally:
            self._stop_all(run)
            self._sampling.set()
            if sampler.is_alive():
                sampler.join(30)
        for h in self.reader.new():  # what the consumers wrote while they stopped
            if h.lost:
                self._evicted(run, h)
            else:
                run.handlings.append(h)
        run.samples.append(self._sample_once(watched, timeout=30.0))
        run.ended = time.time()
        if plan.mode in EXACTLY_ONCE:
            self._await_settled_transactions([run.dlt, run.out])
            run.outputs = self._written(run.out, "read_committed")
            run.outputs_uncommitted = self._written(run.out, "read_uncommitted")
        run.dead_letters = read(self.servers, run.dlt, timeout=120)
        return run

    def _await_settled_transactions(self, topics: list[str], timeout: float = 90.0) -> None:
        """Wait until no transaction is open in `topics` (the last stable offset of every
        partition is its high watermark): a ``read_committed`` reader stops at an open one,
        and would miss what was committed after it. A SIGKILLed consumer's transaction stays
        open until the coordinator aborts it (``redrive.chaos.app.TRANSACTIONS``)."""
        began = time.monotonic()
        while True:
            unsettled = [
                t
                for t in topics
                if admin.end_offsets(self.servers, t)
                != admin.end_offsets(self.servers, t, "read_uncommitted")
            ]
            if not unsettled:
                if time.monotonic() - began > 1:
                    self.say(f"open transactions ended after {time.monotonic() - began:.1f} s")
                return
            if time.monotonic() - began > timeout:
                self.say(
                    f"transactions still open in {', '.join(unsettled)} after {timeout:g} s: "
                    "reading what read_committed readers see now"
                )
                return
            time.sleep(0.5)

    def _written(self, topic: str, isolation: admin.Isolation) -> list[Written]:
        return [
            Written(parse(m.value())[0], m.partition(), m.offset(), m.timestamp()[1] / 1000)
            for m in admin.read_as(self.servers, topic, isolation, timeout=120)
        ]

    def _produce(self, kinds: list[Kind]) -> dict[int, tuple[int, int]]:
        began = time.monotonic()
        outgoing = ((self.topic, k, v, None, None) for k, v in self.plan.values(kinds))
        settings = kafka_logging(
            {
                "bootstrap.servers": self.servers,
                "linger.ms": 50,
                "batch.num.messages": 10000,
                "compression.type": "lz4",
            }
        )
        acks = admin.send(settings, outgoing, timeout=300)
        produced = {i: a for i, a in enumerate(acks) if isinstance(a, tuple)}
        if len(produced) != len(acks):
            missing = sorted({a for a in acks if isinstance(a, str)})
            raise RuntimeError(f"producing the chaos records failed: {', '.join(missing)}")
        self.say(
            f"produced {len(acks):,} records to {self.topic} in {time.monotonic() - began:.1f} s"
        )
        return produced

    def _watched(self) -> list[tuple[str, list[str]]]:
        """(group, topics) whose commits tell when the run is over."""
        watched = [(self.group, [self.topic])]
        if self.plan.mode == "retry-topics":
            watched.append(
                (
                    self.group + RETRY_TOPICS.group_suffix,
                    list(RETRY_TOPICS.retry_topics(self.topic)),
                )
            )
        return watched

    def _drive(self, run: Run, kinds: list[Kind]) -> None:
        plan = self.plan
        healthy = [k not in POISON for k in kinds]
        wanted = sum(healthy)
        done = bytearray(len(kinds))
        handled = 0
        restarts = [(n + 1) / (plan.broker_restarts + 1) for n in range(plan.broker_restarts)]
        if self.broker is None:
            restarts = []
        next_fault = time.time() + self._interval()
        deadline = time.monotonic() + plan.timeout
        last_report = next_look = time.monotonic()
        while time.monotonic() < deadline:
            for h in self.reader.new():
                if h.lost:
                    self._evicted(run, h)
                    continue
                run.handlings.append(h)
                if h.ok and not done[h.ident]:
                    done[h.ident] = 1
                    handled += healthy[h.ident]
            now = time.time()
            share = handled / max(wanted, 1)
            finished = handled >= wanted
            # Also look now and then: a record dead-lettered by mistake is never handled,
            # and the verdict, not a timeout, should say so.
            if (finished or time.monotonic() >= next_look) and self._settled(run):
                run.settled = True
                self.say(
                    f"every record reached its final outcome and is committed "
                    f"({now - run.began:.1f} s)"
                )
                return
            now = time.time()  # _settled() may have waited up to 10 s
            if not finished and time.monotonic() >= next_look:
                next_look = time.monotonic() + 5
            if restarts and share >= restarts[0]:
                restarts.pop(0)
                self._restart_broker(run, kill=(plan.broker_restarts - len(restarts)) % 2 == 0)
                continue
            self._supervise(run, now)
            if not finished and now >= next_fault and plan.kill_every > 0:
                self._consumer_fault(run)
                next_fault = time.time() + self._interval()
            if time.monotonic() - last_report >= 10:
                last_report = time.monotonic()
                self.say(
                    f"  {now - run.began:6.1f} s: {handled:,} of {wanted:,} records "
                    f"handled, {len(run.faults)} faults"
                )
            time.sleep(TICK)
        self.say(f"the run did not settle within {plan.timeout:g} s")

    def _evicted(self, run: Run, h: Handling) -> None:
        """A lost partition a consumer reported (or one whose commit Kafka refused when it
        gave it up): one fault per report (its partitions)."""
        kind = "evicted" if h.outcome == "lost" else "refused"
        last = run.faults[-1] if run.faults else None
        tp = (h.topic, h.partition)
        if last and last.kind == kind and last.pid == h.pid and abs(last.t - h.t) < 1:
            run.faults[-1] = replace(last, partitions=(*last.partitions, tp))
            return
        run.faults.append(Fault(h.t, kind, h.pid, partitions=(tp,)))
        what = (
            "lost its partitions (evicted from the group)"
            if kind == "evicted"
            else "gave up partitions whose commit Kafka refused (a rebalance overtook it)"
        )
        self.say(f"  {h.t - run.began:6.1f} s: consumer pid {h.pid} {what}")

    def _interval(self) -> float:
        return self.plan.kill_every * self.rng.uniform(0.5, 1.5)

    def _settled(self, run: Run) -> bool:
        """True when the latest sample, taken after now, shows nothing left to commit."""
        asked = time.time()
        while time.time() < asked + 10:
            latest = run.samples[-1] if run.samples else None
            if latest is not None and latest.t > asked:
                return latest.lag() == 0 and all(v is not None for v in latest.committed.values())
            if self._sampling.wait(0.05):
                break
        return False

    # -- consumers ----------------------------------------------------------------------

    def _start(self, run: Run, slot: Slot) -> None:
        env = {
            **os.environ,
            "REDRIVE_CHAOS_TOPIC": self.topic,
            "REDRIVE_CHAOS_GROUP": self.group,
            "REDRIVE_CHAOS_LEDGER": str(self.ledger),
            "REDRIVE_CHAOS_MODE": self.plan.mode,
            "REDRIVE_CHAOS_SLOT": str(slot.index),
        }
        argv = [
            sys.executable,
            "-m",
            "redrive",
            "run",
            "redrive.chaos.app:app",
            "--bootstrap-servers",
            self.servers,
            "--log-level",
            "WARNING",
        ]
        with open(self.workdir / f"consumer-{slot.index}.log", "ab") as out:
            slot.proc = subprocess.Popen(
                argv,
                env=env,
                stdout=out,
                stderr=subprocess.STDOUT,
                stdin=subprocess.DEVNULL,
                preexec_fn=self.preexec,
                process_group=0,
            )
        slot.restart_at = slot.term_sent = None
        run.starts.append((time.time(), slot.index, slot.proc.pid))

    def _supervise(self, run: Run, now: float) -> None:
        for slot in self.slots:
            proc = slot.proc
            if proc is not None and proc.poll() is not None:
                code = exit_code(proc.returncode)
                run.exits.append((now, slot.index, proc.pid, code))
                if slot.term_sent is None and code != 128 + signal.SIGKILL:
                    self.say(
                        f"  consumer {slot.index} (pid {proc.pid}) exited with code "
                        f"{code} on its own; see {self.workdir}/consumer-{slot.index}.log"
                    )
                slot.proc = None
                slot.restart_at = now + self.rng.uniform(0.5, 2.0)
            elif proc is not None and slot.term_sent and now - slot.term_sent > STOP_WAIT:
                proc.kill()
                run.faults.append(
                    Fault(
                        time.time(),
                        "kill",
                        proc.pid,
                        slot.index,
                        note=f"still running {STOP_WAIT:g} s after SIGTERM",
                    )
                )
            if slot.proc is None and slot.restart_at is not None and now >= slot.restart_at:
                self._start(run, slot)

    def _consumer_fault(self, run: Run) -> None:
        """SIGKILL or SIGTERM a random live consumer, logged with the time it was sent."""
        alive = [s for s in self.slots if s.proc is not None and s.term_sent is None]
        if not alive:
            return
        slot = self.rng.choice(alive)
        assert slot.proc is not None
        term = self.rng.random() < self.plan.term_share
        pid = slot.proc.pid
        if term:
            slot.proc.send_signal(signal.SIGTERM)
        else:
            slot.proc.kill()
        now = time.time()  # the moment the signal was sent, not when the tick began
        if term:
            slot.term_sent = now
        run.faults.append(Fault(now, "term" if term else "kill", pid, slot.index))
        self.say(
            f"  {now - run.began:6.1f} s: {'SIGTERM' if term else 'SIGKILL'} consumer "
            f"{slot.index} (pid {pid})"
        )

    def _stop_all(self, run: Run) -> None:
        """SIGTERM every consumer and wait for it; SIGKILL what is left, also when the
        wait is interrupted (a second Ctrl-C leaves no consumer behind)."""
        try:
            for slot in self.slots:
                slot.restart_at = None
                if slot.proc is not None and slot.proc.poll() is None:
                    slot.proc.send_signal(signal.SIGTERM)
            deadline = time.monotonic() + STOP_WAIT
            for slot in self.slots:
                proc = slot.proc
                if proc is None:
                    continue
                with contextlib.suppress(subprocess.TimeoutExpired):
                    proc.wait(max(0.1, deadline - time.monotonic()))
                if proc.poll() is None:
                    proc.kill()
                    proc.wait(30)
                run.exits.append((time.time(), slot.index, proc.pid, exit_code(proc.returncode)))
                slot.proc = None
        finally:
            for slot in self.slots:
                if slot.proc is not None and slot.proc.poll() is None:
                    slot.proc.kill()
                    slot.proc.wait()

    # -- the broker ---------------------------------------------------------------------

    def _restart_broker(self, run: Run, *, kill: bool) -> None:
        assert self.broker is not None
        began = time.time()
        how = "SIGKILL" if kill else "SIGTERM"
        self.say(f"  {began - run.began:6.1f} s: broker stop ({how}) and start ...")
        self.broker.restart(kill=kill)
        back = time.time()
        run.faults.append(Fault(began, "broker-kill" if kill else "broker-term", until=back))
        self.say(f"  {back - run.began:6.1f} s: broker back after {back - began:.1f} s")

    # -- commits ------------------------------------------------------------------------

    def _sample(self, run: Run, watched: list[tuple[str, list[str]]]) -> None:
        while not self._sampling.is_set():
            began = time.time()
            with contextlib.suppress(Exception):  # the broker may be down: try again
                run.samples.append(self._sample_once(watched, timeout=2.0))
            self._sampling.wait(max(0.0, SAMPLE_EVERY - (time.time() - began)))

    def _sample_once(self, watched: list[tuple[str, list[str]]], timeout: float) -> Sample:
        """Committed positions and end offsets, stamped with when their read began and
        when it ended."""
        began = time.time()
        committed: dict[tuple[str, int], int | None] = {}
        ends: dict[tuple[str, int], int] = {}
        for group, topics in watched:
            with _consumer(self.servers, group) as c:
                tps = [KTopicPartition(t_, p) for t_ in topics for p in range(self.plan.partitions)]
                for tp in c.committed(tps, timeout=timeout):
                    committed[(tp.topic, tp.partition)] = tp.offset if tp.offset >= 0 else None
                for tp in tps:
                    _, high = c.get_watermark_offsets(tp, timeout=timeout, cached=False)
                    ends[(tp.topic, tp.partition)] = high
        # a partition with nothing in it needs no commit
        for key, end in ends.items():
            if end == 0 and committed.get(key) is None:
                committed[key] = 0
        return Sample(time.time(), committed, ends, began)


@contextlib.contextmanager
def _consumer(servers: str, group: str) -> Iterator[Consumer]:
    c = Consumer(
        kafka_logging(
            {
                "bootstrap.servers": servers,
                "group.id": group,
                "enable.auto.commit": False,
                "log_level": 0,
            }
        )
    )
    try:
        yield c
    finally:
        c.close()
