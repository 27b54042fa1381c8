"""Concurrent record handling for I/O-bound handlers: ``concurrency=N`` on a record listener.

Records are put into *lanes* (``lanes.py``), chosen by ``ordering``: ``"partition"`` (one
lane per partition), ``"key"`` (per partition and key) or ``"none"``. Workers only run the
handler. Every decision is the loop thread's, through the same ``FailureHandler`` as the
sequential loop: a failed record stops its lane and is reported; ``settle`` asks the
engine, which keeps its attempt state in the commit metadata (R3) and either parks the
*lane* until the back-off is over (the partition keeps flowing for the other lanes) or
recovers the record. Offsets are finished only on the loop thread, so the committed position
advances over the contiguous finished prefix only (C1). After a dead owner's window is
found (a second death in one range, see ``retry/attempts.py``), records are handed over
one at a time, with nothing else running, until the range is passed, so an interruption is
blamed on the record that caused it.

At most ``max_in_flight`` records are handed over and not final: the loop polls only for
the room left and pauses its partitions when handlers stall. On revocation, queued records
of the revoked partitions are dropped, running ones awaited (up to ``drain_timeout``), and
only finished work settles (C5); later outcomes belong to an old assignment and are ignored.
"""

from __future__ import annotations

import logging
from collections import deque
from collections.abc import Callable, Hashable, Sequence

from redrive.consumer.client import Client
from redrive.consumer.dispatch.base import Parts
from redrive.consumer.dispatch.lanes import DROPPED, REGATE, Lanes
from redrive.consumer.failures import Hold
from redrive.consumer.offsets import Runs
from redrive.consumer.pauser import Parked
from redrive.consumer.spec import ListenerSpec
from redrive.errors import Defer
from redrive.events import Paused, Resumed
from redrive.message import Message, TopicPartition

log = logging.getLogger("redrive.concurrent")

_STALL = 0.2  # no room for this long: pause the partitions (handlers are slow or stuck)


class ConcurrentRecords:
    @staticmethod
    def bound(spec: ListenerSpec) -> int:
        """Records handed over and not yet final, at most."""
        return spec.max_in_flight or max(2 * spec.max_poll_records, 32 * spec.concurrency)

    def __init__(self, parts: Parts, client: Client) -> None:
        spec = parts.spec
        self.parts, self.client = parts, client
        self.max_in_flight = self.bound(spec)
        self.lanes = Lanes(spec.name, spec.handler, spec.concurrency, parts.bus)
        self._lane_of = _lane_function(spec.ordering)
        self.in_flight = 0  # delivered, not yet final
        self._paused: list[TopicPartition] = []  # all partitions: over the bound
        self._careful: deque[Message] = deque()  # one at a time, nothing else running
        self._careful_busy: Message | None = None
        self._leaving: set[TopicPartition] = set()  # being revoked: nothing handed over
        # ordering="partition": a partition's records run one at a time, and librdkafka hands
        # out one partition's fetched chunk (thousands of records) before the next one's, so a
        # partition could hold the whole bound while the others starve: each is paused on its
        # own past its share (520 -> 1,030 records/s with 6 partitions and a 5 ms handler).
        self._share = spec.ordering == "partition"
        self._per_tp: dict[TopicPartition, int] = {}  # in flight, per partition
        self._tp_paused: set[TopicPartition] = set()

    def dispatch(self, msgs: Sequence[Message], runs: Runs | None = None) -> None:
        engine, committer = self.parts.engine, self.parts.committer
        for msg in msgs:
            committer.deliver(msg)
            self.in_flight += 1
            if self._careful or self._careful_busy is not None or msg.tp in engine.careful:
                self._careful.append(msg)
            else:
                self._admit(msg)
        if self._careful:
            self._feed()
        if self._share:
            self._share_out(msgs)
        tracker = committer.tracker
        if self._paused and len(self._paused) < len(tracker.partitions):
            self._pause([tp for tp in tracker.partitions if tp not in self._paused])

    def _admit(self, msg: Message) -> None:
        """Gate a record and queue it in its lane; one that must wait stops the lane."""
        hold = self.parts.engine.gate(msg)
        if hold is not None and hold.delay is None:
            self._final(msg)
        else:
            self.lanes.put(msg, self._lane_of(msg), wait=hold is not None)

    def _feed(self) -> None:
        """Hand over the next record of a dead owner's window once nothing else runs."""
        while self._careful and self._careful_busy is None and not self.lanes.closing:
            with self.lanes.lock:
                if any(self.lanes.running.values()):
                    return  # settle() feeds again when they are done
            msg = self._careful_busy = self._careful.popleft()
            self._admit(msg)

    def _share_out(self, msgs: Sequence[Message]) -> None:
        per_tp = self._per_tp
        for msg in msgs:
            per_tp[msg.tp] = per_tp.get(msg.tp, 0) + 1
        cap = self._cap()
        over = [tp for tp in {m.tp for m in msgs} if per_tp[tp] > cap and tp not in self._tp_paused]
        if over:
            self.client.pause(over)
            self._tp_paused.update(over)

    def _cap(self) -> int:
        # at least 8 shares: partitions not seen yet get through librdkafka's queue too
        return max(1, self.max_in_flight // max(8, len(self._per_tp)))

    def _share_back(self) -> None:
        cap = self._cap()
        back = [tp for tp in self._tp_paused if self._per_tp.get(tp, 0) <= cap // 2]
        if back:
            self._tp_paused.difference_update(back)
            self.client.resume([tp for tp in back if tp not in self._paused])

    def _final(self, msg: Message) -> None:
        self.in_flight -= 1
        if self._share:
            self._per_tp[msg.tp] = self._per_tp.get(msg.tp, 1) - 1
        if self._careful_busy is msg:
            self._careful_busy = None

    def _hold(self, msg: Message, lane: Hashable, hold: Hold | None) -> None:
        """After the gate or a failure: the lane goes on, or waits with `msg` in front."""
        if hold is not None and hold.delay is None:
            self._final(msg)
            self.lanes.go_on(lane)
            return
        self.lanes.put(msg, lane, front=True, run=False)
        if hold is None:
            self.lanes.go_on(lane)
        else:
            assert hold.delay is not None
            self.parts.pauser.park(lane, hold.delay, msg.tp, pause=False)

    def resumed(self, parked: Parked) -> None:
        """A parked lane is due: its first record goes through the gate again."""
        msg = self.lanes.take(parked.key)
        if msg is None:
            self.lanes.go_on(parked.key)
        else:
            self._hold(msg, parked.key, self.parts.engine.gate(msg))

    def settle(self) -> None:
        """Take in the outcomes the workers reported; resume when half of the work is done."""
        lanes, engine = self.lanes, self.parts.engine
        if lanes.error is not None:
            error, lanes.error = lanes.error, None
            raise error
        while lanes.done:
            (msg, epoch, lane), outcome = lanes.done.popleft()
            if outcome is DROPPED or lanes.epochs.get(msg.tp, 0) != epoch:
                self._final(msg)  # an old assignment's: not ours to finish
            elif outcome is None:
                engine.succeeded(msg)
                self._final(msg)
            elif msg.tp in self._leaving:  # revoked: take in the failure, hand nothing over
                if not isinstance(outcome, Defer) and outcome is not REGATE:
                    engine.failed(msg, outcome)
                self._final(msg)
            elif outcome is REGATE:
                self._hold(msg, lane, engine.gate(msg))
            elif isinstance(outcome, Defer):
                self._hold(msg, lane, engine.wait(msg, outcome.delay))
            else:
                self._hold(msg, lane, engine.failed(msg, outcome))
        if self._careful:
            self._feed()
        if self._tp_paused:
            self._share_back()
        if self._paused and self.in_flight <= self.max_in_flight // 2:
            paused, self._paused = self._paused, []
            self.client.resume([tp for tp in paused if tp not in self._tp_paused])
            if self.parts.bus:
                self.parts.bus.emit(Resumed(self.parts.spec.name, tuple(paused)))

    def before_poll(self, timeout: float, max_records: int) -> tuple[float, int]:
        """Poll only for the room left under ``max_in_flight``; with less room than a useful
        poll, first wait (up to ``_STALL``) for running records, then pause the partitions
        and keep polling for rebalances and liveness."""
        lanes = self.lanes
        with lanes.lock:
            want = min(max_records, max(1, self.max_in_flight // 4))
            need = self.in_flight + want - self.max_in_flight
            if need > 0 and not self._paused:
                lanes.changed.wait_for(
                    lambda: len(lanes.done) >= need or lanes.error is not None, _STALL
                )
            room = self.max_in_flight - self.in_flight + len(lanes.done)
        if room <= 0:
            self.settle()
            if not self._paused:
                self._pause(list(self.parts.committer.tracker.partitions))
            return min(timeout, _STALL), 1
        if self._careful_busy is not None:  # a walk: the next record waits for this one,
            with lanes.lock:  # so take its outcome as soon as it is there (~1 ms, not a poll)
                lanes.changed.wait_for(lambda: bool(lanes.done), min(timeout, 0.01))
            return 0.0, min(max_records, room)
        waiting = len(self.parts.pauser.parked)  # parked lanes need no quick poll
        busy = self.in_flight > waiting or lanes.done
        return (min(timeout, 0.01) if busy else timeout), min(max_records, room)

    def _pause(self, partitions: list[TopicPartition]) -> None:
        if partitions:
            self.client.pause(partitions)
            self._paused.extend(partitions)
            if self.parts.bus:
                self.parts.bus.emit(Paused(self.parts.spec.name, tuple(partitions), 0.0))

    def idle(self, wait: float = 0.0) -> bool:
        lanes = self.lanes
        if self.in_flight > len(self.parts.pauser.parked) and not lanes.done and wait > 0:
            with lanes.lock:  # workers are running: give them a moment to report
                lanes.changed.wait_for(lambda: bool(lanes.done), wait)
        return self.in_flight == 0 and not lanes.done

    def revoke(self, partitions: Sequence[TopicPartition], timeout: float) -> None:
        """Drop queued records of `partitions`, wait (bounded) for their running ones, and
        settle what finished; later outcomes of these partitions are ignored."""
        gone, lanes = set(partitions), self.lanes
        kept = deque(m for m in self._careful if m.tp not in gone)
        self.in_flight -= len(self._careful) - len(kept)
        self._careful = kept
        with lanes.lock:
            self.in_flight -= lanes.drop(gone)  # queued: never handed over
            if not lanes.wait_running(gone, timeout):
                log.warning("%s: in-flight records of %s abandoned after %.1fs",
                            self.parts.spec.name, sorted(map(str, gone)), timeout)  # fmt: skip
        self._leaving = gone
        try:
            self.settle()  # what finished under this assignment is final (and committed)
        finally:
            self._leaving = set()
        with lanes.lock:
            for tp in gone:
                lanes.epochs[tp] = lanes.epochs.get(tp, 0) + 1  # later outcomes: ignored
        if self._careful_busy is not None and self._careful_busy.tp in gone:
            self._careful_busy = None  # abandoned: its late outcome is an old epoch's
        self._paused = [tp for tp in self._paused if tp not in gone]
        self._tp_paused.difference_update(gone)
        for tp in gone:
            self._per_tp.pop(tp, None)

    def close(self, timeout: float) -> None:
        """Stop taking queued records, wait (bounded) for running ones, settle them."""
        lanes = self.lanes
        with lanes.lock:
            lanes.closing = True
            if not lanes.wait_running(None, timeout):
                log.warning("%s: running records abandoned at stop after %.1fs",
                            self.parts.spec.name, timeout)  # fmt: skip
        try:
            self.settle()
        finally:
            lanes.close(timeout)


def _lane_function(ordering: str) -> Callable[[Message], Hashable]:
    if ordering == "partition":
        return lambda m: m.tp
    if ordering == "key":
        return lambda m: (m.tp, m.raw_key)
    counter = iter(range(1 << 62))
    return lambda m: next(counter)
