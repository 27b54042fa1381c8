"""Batch listeners: the records of one poll in one handler call (F3).

``BatchFailed(index=i)`` names the failed record: the records before it succeeded, the
failed one goes to the failure engine like a record listener's. Any other exception names
nothing: the whole batch is retried in place, then its records are handed over one at a
time to find the failing ones, which are recovered (isolation). Records that need one
handling each (undecodable, with attempt state, not due yet, or in a dead owner's window)
go through the engine's gate first; in a dead owner's window they are handed over one at a
time, so an interruption is blamed on the record that caused it.
"""

from __future__ import annotations

import logging
from collections.abc import Sequence

from redrive.consumer.dispatch.base import OnLoopThread, Parts, park
from redrive.consumer.failures import Hold
from redrive.consumer.offsets import Runs
from redrive.consumer.pauser import Parked
from redrive.errors import BatchFailed, Defer, ListenerStopped
from redrive.events import Delivered
from redrive.message import Message, TopicPartition

log = logging.getLogger("redrive.loop")


class Batches(OnLoopThread):
    def __init__(self, parts: Parts) -> None:
        super().__init__(parts)
        spec = parts.spec
        self._decodes = spec.key_deserializer is not None or spec.value_deserializer is not None

    def dispatch(self, msgs: Sequence[Message], runs: Runs | None = None) -> None:
        parts = self.parts
        pauser, engine, committer = parts.pauser, parts.engine, parts.committer
        if parts.stopping():
            return
        if pauser.parked:
            batch, runs = [m for m in msgs if m.tp not in pauser], None
        else:
            batch = list(msgs)
        if not batch:
            return
        runs = committer.deliver_many(batch, runs)
        if engine.careful:
            careful = engine.careful.keys() & {m.tp for m in batch}
            if careful:
                self._one_by_one([m for m in batch if m.tp in careful], None)
                batch = [m for m in batch if m.tp not in careful]
                runs = None
        if committer.states or committer.has_final or committer.stale_marks or engine.due_times:
            batch, runs = self._gate(batch), None
        elif engine.manual or (self._decodes and any(m.error is not None for m in batch)):
            batch, runs = self._gate(batch), None
        self._handle(batch, runs)

    def _gate(self, msgs: list[Message]) -> list[Message]:
        """The records that may be handed over now; the others wait or are final."""
        ready: list[Message] = []
        waiting: set[TopicPartition] = set()
        for m in msgs:
            if m.tp in waiting:
                continue
            hold = self.parts.engine.gate(m)
            if hold is None:
                ready.append(m)
            elif hold.delay is not None:
                waiting.add(m.tp)
                park(self.parts, m.tp, hold.delay,
                     [x for x in msgs if x.tp == m.tp and x.offset >= m.offset])  # fmt: skip
        return ready

    def _handle(self, msgs: list[Message], runs: Runs | None) -> None:
        """`runs`: the offsets of `msgs` per partition, if known."""
        parts = self.parts
        engine = parts.engine
        while msgs:
            if parts.bus.records:
                records = tuple((m.tp, m.offset, m.attempt) for m in msgs)
                parts.bus.emit(Delivered(parts.spec.name, records, tuple(msgs)))
            try:
                self._call(msgs)
            except ListenerStopped:
                raise
            except Defer as defer:
                i = min(max(defer.index, 0), len(msgs) - 1)
                for m in msgs[:i]:
                    engine.succeeded(m)
                msgs, runs = self._failed_at(msgs, i, engine.wait(msgs[i], defer.delay)), None
                continue
            except BatchFailed as signal:
                named = signal.index_in(msgs)
                if named is None:  # names no record of this batch: as if it named none
                    log.warning("%s: %s names no record of the batch of %d; retrying it whole",
                                parts.spec.name, signal, len(msgs))  # fmt: skip
                    self._batch_failed(msgs, signal)
                    return
                for m in msgs[:named]:
                    engine.succeeded(m)
                cause = signal.__cause__ or signal
                msgs, runs = self._failed_at(msgs, named, engine.failed(msgs[named], cause)), None
                continue
            except Exception as exc:
                failure: Exception | None = exc
            else:
                failure = None
            if failure is not None:  # outside the except clause: see Records._fast
                self._batch_failed(msgs, failure)
                return
            if engine.manual or parts.committer.states or parts.bus.records:
                for m in msgs:
                    engine.succeeded(m)
            else:  # nothing to record per record: finish the batch in one step per partition
                parts.committer.finish_many(msgs, runs)
                engine.handled += len(msgs)
            return

    def _failed_at(self, msgs: list[Message], i: int, hold: Hold) -> list[Message]:
        """The records still to hand over after record `i` got `hold`; other partitions go
        on without a rewind (C6)."""
        failed, rest = msgs[i], msgs[i + 1 :]
        if hold.delay is None:
            return rest
        park(self.parts, failed.tp, hold.delay, [failed, *(m for m in rest if m.tp == failed.tp)])
        return [m for m in rest if m.tp != failed.tp]

    def _batch_failed(self, msgs: list[Message], exc: Exception) -> None:
        """A failure that names no record: retry the whole batch in place, then isolate."""
        parts = self.parts
        attempt = max(m.attempt for m in msgs)
        delay = parts.engine.batch_failed(msgs, exc, attempt)
        if delay is None:
            self._one_by_one(msgs, attempt)
            return
        by_tp: dict[TopicPartition, list[Message]] = {}
        for m in msgs:
            m.attempt = attempt + 1
            by_tp.setdefault(m.tp, []).append(m)
        for tp, held in by_tp.items():  # whole-batch attempts are counted in memory
            parts.pauser.park(tp, delay, tp, seek=held[-1].offset + 1, held=held)

    def _one_by_one(self, msgs: list[Message], isolate: int | None) -> None:
        """Hand records over one at a time: after the batch's `isolate` attempts failed (a
        failure recovers the record at once), or in a dead owner's window (``None``: each
        record goes through the gate and the normal retries)."""
        engine = self.parts.engine
        waiting: dict[TopicPartition, tuple[float, list[Message]]] = {}
        for m in msgs:
            if m.tp in waiting:
                waiting[m.tp][1].append(m)
                continue
            hold: Hold | None
            if isolate is None:
                hold = engine.gate(m)
                if hold is None:
                    hold = self.hand_over(m, [m])
            else:
                m.attempt = isolate
                hold = self.hand_over(m, [m], isolate)
            if hold is not None and hold.delay is not None:
                waiting[m.tp] = (hold.delay, [m])
        for tp, (delay, held) in waiting.items():
            park(self.parts, tp, delay, held)

    def resumed(self, parked: Parked) -> None:
        if parked.held:
            self.dispatch(parked.held)
