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
time, so only the failing ones are released.
"""

from __future__ import annotations

import logging
import threading
import time
from collections.abc import Callable, Sequence
from typing import Any

from redrive.consumer.decode import Decoder
from redrive.consumer.dispatch.base import run_sync
from redrive.consumer.failures import CountedFailures, Verdict
from redrive.consumer.spec import ListenerSpec
from redrive.errors import BatchFailed, ListenerStopped
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

log = logging.getLogger("redrive.share")


class ShareLoop:
    """Consumes for one member of a share group. ``run()`` blocks until ``stop()``."""

    def __init__(
        self,
        spec: ListenerSpec,
        client: ShareClient,
        *,
        limit: int,
        lock: float = 30.0,
        bus: EventBus | None = None,
        member: str | None = None,
        clock: Callable[[], float] = time.monotonic,
    ) -> None:
        self.spec = spec
        self.client = client
        self.bus = bus or EventBus()
        self.name = member or spec.name
        self.closing = False
        self._stop = threading.Event()
        self.engine = CountedFailures(spec, self.bus, limit, self._sleep)
        self._decode = Decoder(spec.key_deserializer, spec.value_deserializer)
        self._call, self._release = run_sync(spec.handler)
        self._verdicts: list[tuple[Any, Message, Verdict]] = []
        self.lock = lock
        self.clock = clock
        self._expires = 0.0  # when the locks of the current poll's records expire

    @property
    def handled(self) -> int:
        return self.engine.handled

    def _sleep(self, seconds: float) -> bool:
        """Wait `seconds`; False when the listener is stopping."""
        return not self._stop.wait(seconds)

    # -- life cycle -------------------------------------------------------------------

    def start(self) -> None:
        spec = self.spec
        context = ListenerContext(
            name=spec.name, group_id=spec.group_id, kafka=spec.kafka, handled=lambda: self.handled
        )
        spec.recoverer.start(context)
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
            try:
                self.spec.recoverer.close()
            except Exception as exc:
                log.error("%s: closing the recoverer failed: %s", self.name, exc)
            if self.bus:
                self.bus.emit(Stopped(self.name, reason))

    # -- one step ---------------------------------------------------------------------

    def run_once(self) -> None:
        raws = self.client.poll(self.spec.poll_timeout)
        if not raws:
            if self.bus:  # probes: the loop polls
                self.bus.emit(Idle(self.name))
            return
        self._expires = self.clock() + self.lock
        msgs = []
        for raw in raws:
            msg = self._decode(raw)
            msg.attempt = delivery_count(raw)
            msgs.append((raw, msg))
        if self.bus:
            self.bus.emit(Polled(self.name, tuple((m.tp, m.offset, 1) for _, m in msgs)))
        handled, began = self.handled, time.perf_counter()
        try:
            if self.spec.batch:
                self._batch(msgs)
            else:
                for raw, msg in msgs:
                    self._verdicts.append((raw, msg, self._one(msg)))
        finally:
            self._settle(msgs)
        if self.bus:  # metrics and probes: once per poll
            took = time.perf_counter() - began
            self.bus.emit(Handled(self.name, len(msgs), self.handled - handled, took))

    def _expired(self, msg: Message) -> bool:
        """True when `msg`'s acquisition lock expired while it waited for its turn: the
        broker has given it to another member, so it is not handed over here (its answer
        is ignored by the broker)."""
        if self.clock() < self._expires:
            return False
        log.warning("%s: %s@%d not handed over: its %gs lock expired while the records "
                    "before it were handled", self.name, msg.tp, msg.offset, self.lock)  # fmt: skip
        return True

    def _one(self, msg: Message) -> Verdict:
        if self._stop.is_set() or self._expired(msg):
            return "release"
        verdict = self.engine.gate(msg)
        if verdict is not None:
            return verdict
        self._delivered([msg])
        try:
            self._call(msg)
        except ListenerStopped:
            raise
        except Exception as exc:
            return self.engine.failed(msg, exc)
        return self.engine.succeeded(msg)

    def _batch(self, msgs: list[tuple[Any, Message]]) -> None:
        todo = []
        for raw, msg in msgs:
            verdict = self.engine.gate(msg)
            if verdict is None:
                todo.append((raw, msg))
            else:
                self._verdicts.append((raw, msg, verdict))
        while todo and not self._stop.is_set() and not self._expired(todo[0][1]):
            batch = [m for _, m in todo]
            self._delivered(batch)
            try:
                self._call(batch)
            except ListenerStopped:
                raise
            except Exception as exc:
                at = _failed_at(exc, batch)
                if at is None:  # names no record: one at a time, same delivery
                    for raw, msg in todo:
                        self._verdicts.append((raw, msg, self._isolated(msg)))
                    return
                for raw, msg in todo[:at]:
                    self._verdicts.append((raw, msg, self.engine.succeeded(msg)))
                raw, msg = todo[at]
                cause = exc.__cause__ or exc if isinstance(exc, BatchFailed) else exc
                self._verdicts.append((raw, msg, self.engine.failed(msg, cause)))
                todo = todo[at + 1 :]
                continue
            for raw, msg in todo:
                self._verdicts.append((raw, msg, self.engine.succeeded(msg)))
            return

    def _isolated(self, msg: Message) -> Verdict:
        if self._stop.is_set() or self._expired(msg):
            return "release"
        self._delivered([msg])
        try:
            self._call([msg])
        except ListenerStopped:
            raise
        except Exception as exc:
            cause = exc.__cause__ or exc if isinstance(exc, BatchFailed) else exc
            return self.engine.failed(msg, cause)
        return self.engine.succeeded(msg)

    def _delivered(self, msgs: Sequence[Message]) -> None:
        if self.bus:
            self.bus.emit(Delivered(self.name, tuple((m.tp, m.offset, m.attempt) for m in msgs)))

    def _settle(self, msgs: list[tuple[Any, Message]]) -> None:
        """Acknowledge every record of the poll (those without a verdict, when stopping or
        after an error: release), then send them and wait for the broker."""
        done = {id(raw) for raw, _, _ in self._verdicts}
        verdicts = self._verdicts + [(r, m, "release") for r, m in msgs if id(r) not in done]
        self._verdicts = []
        for raw, _, verdict in verdicts:
            self.client.acknowledge(raw, verdict)
        late = self.clock() >= self._expires
        errors = self.client.commit()
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


def _failed_at(exc: BaseException, batch: list[Message]) -> int | None:
    if not isinstance(exc, BatchFailed):
        return None
    if exc.index is not None:
        return exc.index if 0 <= exc.index < len(batch) else None
    for i, m in enumerate(batch):
        if m is exc.message:
            return i
    return None
