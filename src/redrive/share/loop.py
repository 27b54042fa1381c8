"""A share listener's loop: poll -> hand over -> acknowledge -> commit the acknowledgements.

One record's path: ``ShareClient.poll`` acquires it (with its delivery count, which becomes
``msg.attempt``); the ``Decoder`` builds its ``Message``; ``CountedFailures.gate`` may
recover it without handing it over (undecodable, or delivered at the group's limit); the
handler runs; the engine turns the outcome into "accept", "release" or "reject" (after a
confirmed dead letter); every record of the poll is acknowledged, and ``commit`` sends the
acknowledgements and waits for the broker before the next poll.

There are no positions to commit, no partitions to pause and no attempt state to keep:
the broker tracks each record. A batch listener gets the poll's records in one call; when
it fails at ``BatchFailed(index=i)`` the records before ``i`` are accepted, record ``i``
goes to the engine and the rest are handed over again (in the same delivery, so their
delivery counts are not spent); a failure naming no record hands the records over one at a
time, so only the failing ones are released. A ``Defer`` releases its records: the broker
delivers them again at once and counts the delivery (it holds no delay).

Every record of a poll goes through ``gate`` as soon as the poll returns, before any is
handed over: a record at the delivery limit must get its dead letter within its lock
(released, or left past its lock, the broker archives it), whatever happens to the records
before it. The acquisition lock of a poll's records is counted from the start of the
earliest poll since the client last had nothing left over (a poll of fewer than
``max_poll_records``), at most one lock duration back: the client acquires whole producer
batches, so a poll of ``max_poll_records`` may return records it acquired before.
"""

from __future__ import annotations

import logging
import threading
import time
from collections.abc import Callable, Sequence
from typing import Any

from redrive.consumer.counted import CountedFailures, Verdict
from redrive.consumer.decode import Decoder
from redrive.consumer.dispatch.base import call_handler, cause_of, run_sync
from redrive.consumer.spec import ListenerSpec
from redrive.errors import BatchFailed, Defer
from redrive.events import (
    Acknowledged,
    Delivered,
    EventBus,
    Handled,
    Idle,
    Polled,
    Started,
    Stopped,
    Stopping,
)
from redrive.message import Message
from redrive.recover.base import ListenerContext
from redrive.share.client import ShareClient, delivery_count
from redrive.share.group import Effective

log = logging.getLogger("redrive.share")


class Members:
    """What the members of one share listener in this App share.

    - The recoverer: started once (its ``handled()`` is the sum over the members, so a
      circuit breaker counts the listener as a whole), closed when the last member closes,
      and its ``recover`` called by one member at a time.
    - The group's delivery limit and lock duration: the lowest seen, read again from the
      broker (`read`) every lock duration, so a limit lowered by an operator or another
      deployment is applied before a member releases a record the broker would archive.
    """

    def __init__(
        self,
        spec: ListenerSpec,
        limit: int,
        lock: float,
        read: Callable[[], Effective] | None = None,
        clock: Callable[[], float] = time.monotonic,
    ) -> None:
        self.spec = spec
        self.recovering = threading.Lock()
        self._lock = threading.Lock()
        self._reading = threading.Lock()
        self._limit = limit
        self._lock_duration = lock
        self._read = read
        self._clock = clock
        self._next_read = clock() + lock
        self._loops: list[ShareLoop] = []
        self._running = 0

    def start(self, loop: ShareLoop) -> None:
        spec = self.spec
        with self._lock:
            self._loops.append(loop)
            self._running += 1
            if self._running > 1:
                return
            context = ListenerContext(name=spec.name, group_id=spec.group_id, kafka=spec.kafka,
                                      handled=self.handled, share_group=True)  # fmt: skip
            try:
                spec.recoverer.start(context)
            except BaseException:
                self._running -= 1
                raise

    def handled(self) -> int:
        """Records the members handled successfully."""
        return sum(loop.engine.handled for loop in tuple(self._loops))

    def close(self) -> None:
        """A member stops: the last one closes the recoverer."""
        with self._lock:
            self._running -= 1
            if self._running > 0:
                return
        self.spec.recoverer.close()

    def settings(self) -> tuple[int, float]:
        """The delivery limit and lock duration to apply (lowest seen)."""
        if self._read is None or self._clock() < self._next_read:
            return self._limit, self._lock_duration
        if not self._reading.acquire(blocking=False):  # another member reads them
            return self._limit, self._lock_duration
        try:
            if self._clock() >= self._next_read:
                self._next_read = self._clock() + self._lock_duration
                try:
                    group = self._read()
                except Exception as exc:
                    log.warning("%s: reading the share group's settings again failed (kept: "
                                "delivery limit %d, lock %gs): %s", self.spec.name,
                                self._limit, self._lock_duration, exc)  # fmt: skip
                else:
                    self._lower(group)
            return self._limit, self._lock_duration
        finally:
            self._reading.release()

    def _lower(self, group: Effective) -> None:
        if group.delivery_limit < self._limit:
            log.warning("%s: the share group's delivery limit was lowered from %d to %d: "
                        "applied from the next poll", self.spec.name, self._limit,
                        group.delivery_limit)  # fmt: skip
            self._limit = group.delivery_limit
        if group.lock_duration < self._lock_duration:
            log.warning("%s: the share group's lock duration was lowered from %gs to %gs",
                        self.spec.name, self._lock_duration, group.lock_duration)  # fmt: skip
            self._lock_duration = group.lock_duration


class ShareLoop:
    """Consumes for one member of a share group. ``run()`` blocks until ``stop()``.

    `members` is what it shares with the listener's other members in this App; without
    it, a member of its own with a fixed `limit` and `lock`."""

    def __init__(
        self,
        spec: ListenerSpec,
        client: ShareClient,
        *,
        limit: int = 5,
        lock: float = 30.0,
        members: Members | None = None,
        bus: EventBus | None = None,
        member: str | None = None,
        clock: Callable[[], float] = time.monotonic,
        pause: Callable[[float], None] = time.sleep,
    ) -> None:
        self.spec = spec
        self.client = client
        self.bus = bus or EventBus()
        self.name = member or spec.name
        self.closing = False
        self._stop = threading.Event()
        self.members = members or Members(spec, limit, lock, clock=clock)
        self.limit, self.lock = self.members.settings()
        self.clock = clock
        self.engine = CountedFailures(
            spec, self.bus, self.limit, self._sleep, stopping=self._stop.is_set,
            expires=lambda: self._expires, clock=clock, pause=pause,
            recover_lock=self.members.recovering,
        )  # fmt: skip
        self._decode = Decoder(spec.key_deserializer, spec.value_deserializer)
        self._call, self._release = run_sync(spec.handler)
        self._verdicts: list[tuple[Any, Message, Verdict]] = []
        self._expires = 0.0  # when the locks of the current poll's records expire (at most)
        self._acquired: float | None = None  # earliest acquisition of records the client holds
        self._started = False

    @property
    def handled(self) -> int:
        return self.engine.handled

    def _sleep(self, seconds: float) -> bool:
        """Wait `seconds`; False when the listener is stopping."""
        return not self._stop.wait(seconds)

    # -- life cycle -------------------------------------------------------------------

    def start(self) -> None:
        spec = self.spec
        self.members.start(self)
        self._started = True
        self.client.subscribe(spec.topics)
        if self.bus:
            self.bus.emit(Started(self.name, spec.group_id, spec.topics))

    def run(self) -> None:
        try:
            self.start()
            while not self._stop.is_set():
                self.run_once()
        finally:
            self.close()

    def stop(self) -> None:
        """Stop after the current record (safe from any thread)."""
        first = not self._stop.is_set()
        self._stop.set()
        if first and self.bus:  # probes: not ready from now on
            self.bus.emit(Stopping(self.name))

    def close(self, reason: str = "stop") -> None:
        """Send the acknowledgements made, leave the group (C4)."""
        self.closing = True
        try:
            self.client.close()
        finally:
            self._release()
            if self._started:
                self._started = False
                try:
                    self.members.close()
                except Exception as exc:
                    log.error("%s: closing the recoverer failed: %s", self.name, exc)
            if self.bus:
                self.bus.emit(Stopped(self.name, reason))

    # -- one step ---------------------------------------------------------------------

    def run_once(self) -> None:
        self.limit, self.lock = self.members.settings()
        self.engine.limit = self.limit
        began = self.clock()
        raws = self.client.poll(self.spec.poll_timeout)
        if self._acquired is None or began - self._acquired >= self.lock:
            # the client held nothing acquired before this poll, or what it held is past its
            # lock already (the broker gave it away): its records are counted from now, so
            # a steady stream of full polls is not released forever
            self._acquired = began
        self._expires = self._acquired + self.lock
        if len(raws) < self.spec.max_poll_records:  # what it acquired is handed over
            self._acquired = None
        if not raws:
            if self.bus:  # probes: the loop polls
                self.bus.emit(Idle(self.name))
            return
        msgs = []
        for raw in raws:
            msg = self._decode(raw)
            msg.attempt = delivery_count(raw)
            msgs.append((raw, msg))
        if self.bus:
            self.bus.emit(Polled(self.name, tuple((m.tp, m.offset, 1) for _, m in msgs)))
        handled, began = self.handled, time.perf_counter()
        try:
            todo = []
            for raw, msg in msgs:  # at the limit: its dead letter before anything else
                verdict = self.engine.gate(msg)
                if verdict is None:
                    todo.append((raw, msg))
                else:
                    self._verdicts.append((raw, msg, verdict))
            if self.spec.batch:
                self._batch(todo)
            else:
                for raw, msg in todo:
                    if self._stopping() or self._expired(msg):
                        break  # the rest are released
                    self._verdicts.append((raw, msg, self._hand_over(msg, msg)))
        finally:
            self._settle(msgs)
        if self.bus:  # metrics and probes: once per poll
            took = time.perf_counter() - began
            self.bus.emit(Handled(self.name, len(msgs), self.handled - handled, took))
        if self.engine.stopped is not None:
            stopped, self.engine.stopped = self.engine.stopped, None
            raise stopped

    def _stopping(self) -> bool:
        return self._stop.is_set() or self.engine.stopped is not None

    def _expired(self, msg: Message) -> bool:
        """True when `msg`'s acquisition lock expired while it waited for its turn: the
        broker has given it to another member, so it is not handed over here (its answer
        is ignored by the broker)."""
        if self.clock() < self._expires:
            return False
        log.warning("%s: %s@%d not handed over: its %gs lock expired while the records "
                    "before it were handled", self.name, msg.tp, msg.offset, self.lock)  # fmt: skip
        return True

    def _hand_over(self, msg: Message, arg: Any) -> Verdict:
        """Call the handler with `arg` (`msg`, or a batch of it alone): its verdict."""
        self._delivered([msg])
        failure = call_handler(self._call, arg)
        if failure is None:
            return self.engine.succeeded(msg)
        if isinstance(failure, Defer):
            return self._deferred(msg)
        return self.engine.failed(msg, cause_of(failure))

    def _deferred(self, msg: Message) -> Verdict:
        log.info("%s: %s@%d deferred: released (the broker delivers it again at once and "
                 "counts the delivery)", self.name, msg.tp, msg.offset)  # fmt: skip
        return "release"

    def _batch(self, todo: list[tuple[Any, Message]]) -> None:
        while todo and not self._stopping() and not self._expired(todo[0][1]):
            batch = [m for _, m in todo]
            self._delivered(batch)
            failure = call_handler(self._call, batch)
            if failure is None:
                for raw, msg in todo:
                    self._verdicts.append((raw, msg, self.engine.succeeded(msg)))
                return
            if isinstance(failure, Defer):
                for raw, msg in todo:
                    self._verdicts.append((raw, msg, self._deferred(msg)))
                return
            at = failure.index_in(batch) if isinstance(failure, BatchFailed) else None
            if at is None:  # names no record: one at a time, same delivery
                for raw, msg in todo:
                    if self._stopping() or self._expired(msg):
                        return  # the rest are released
                    self._verdicts.append((raw, msg, self._hand_over(msg, [msg])))
                return
            for raw, msg in todo[:at]:
                self._verdicts.append((raw, msg, self.engine.succeeded(msg)))
            raw, msg = todo[at]
            self._verdicts.append((raw, msg, self.engine.failed(msg, cause_of(failure))))
            todo = todo[at + 1 :]

    def _delivered(self, msgs: Sequence[Message]) -> None:
        if self.bus:
            self.bus.emit(Delivered(self.name, tuple((m.tp, m.offset, m.attempt) for m in msgs)))

    def _settle(self, msgs: list[tuple[Any, Message]]) -> None:
        """Acknowledge every record of the poll (those without a verdict, when stopping or
        after an error: release; all of them are below the delivery limit), then send them
        and wait for the broker."""
        done = {id(raw) for raw, _, _ in self._verdicts}
        verdicts = self._verdicts + [(r, m, "release") for r, m in msgs if id(r) not in done]
        self._verdicts = []
        for raw, _, verdict in verdicts:
            self.client.acknowledge(raw, verdict)
        late = self.clock() >= self._expires
        errors = self.client.commit()
        if errors is None:  # a transient error, logged: the records come back after the lock
            return
        if late:  # the broker ignores answers past the lock (the client reports no error)
            log.warning("%s: the answers to a poll were sent after its %gs lock expired: the "
                        "broker may have handed its records to another member (handled "
                        "twice)", self.name, self.lock)  # fmt: skip
            return
        for tp, err in errors.items():
            if err is not None:  # e.g. the lock expired: the broker gave them to another member
                log.warning("%s: acknowledgements for %s not taken: %s", self.name, tp, err)
        if self.bus:
            for _, msg, verdict in verdicts:
                if errors.get(msg.tp) is None:
                    self.bus.emit(Acknowledged(self.name, msg.tp, msg.offset, verdict, msg.attempt))
