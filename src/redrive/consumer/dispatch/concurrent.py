"""Concurrent record handling for I/O-bound handlers: ``concurrency=N`` on a record listener.

Records are put into *lanes*; a lane handles its records one after the other, in offset
order, and up to N lanes run at once. The lane of a record is chosen by ``ordering``:
``"partition"`` (one lane per partition), ``"key"`` (per partition and key) or ``"none"``.
``async def`` handlers run as tasks on one event loop in a helper thread; plain functions
run on a pool of N threads.

Workers only run the handler. Every decision is the loop thread's, through the same
``FailureHandler`` as the sequential loop: a failed record stops its lane and is reported;
``settle`` asks the engine, which keeps its attempt state in the commit metadata (R3) and
either parks the *lane* until the back-off is over (the partition keeps flowing for the
other lanes) or recovers the record. Offsets are finished only on the loop thread, so the
committed position advances over the contiguous finished prefix only (C1). After a dead
owner's window is found, that partition's records are handed over one at a time until the
window is passed, so an interruption is blamed on the record that caused it.

At most ``max_in_flight`` records are handed over and not final: the loop polls only for
the room left and pauses its partitions when handlers stall. On revocation, queued records
of the revoked partitions are dropped, running ones awaited (up to ``drain_timeout``), and
only finished work settles (C5); later outcomes belong to an old assignment and are ignored.
"""

from __future__ import annotations

import asyncio
import inspect
import logging
import threading
import time
from collections import deque
from collections.abc import Callable, Hashable, Sequence
from concurrent.futures import ThreadPoolExecutor

from redrive.consumer.client import Client
from redrive.consumer.dispatch.base import Parts
from redrive.consumer.failures import Hold
from redrive.consumer.pauser import Parked
from redrive.errors import Defer, ListenerStopped
from redrive.events import Delivered, Paused, Resumed
from redrive.listener import ListenerSpec
from redrive.message import Message, TopicPartition

log = logging.getLogger("redrive.concurrent")

_STALL = 0.2  # no room for this long: pause the partitions (handlers are slow or stuck)
_OK = None  # a success, as reported by a worker
Item = tuple[Message, int, Hashable]  # record, epoch of its partition, lane


class ConcurrentRecords:
    @staticmethod
    def bound(spec: ListenerSpec) -> int:
        """Records handed over and not yet final, at most."""
        return spec.max_in_flight or max(2 * spec.max_poll_records, 32 * spec.concurrency)

    def __init__(self, parts: Parts, client: Client) -> None:
        spec = parts.spec
        self.parts, self.client = parts, client
        self.max_in_flight = self.bound(spec)
        self._lane_of = _lane_function(spec.ordering)
        self._lock = threading.Lock()
        self._idle = threading.Condition(self._lock)
        self._lanes: dict[Hashable, deque[Item]] = {}
        self._active: set[Hashable] = set()  # drained by a worker, parked, or reported
        self._running: dict[TopicPartition, int] = {}
        self._epoch: dict[TopicPartition, int] = {}  # bumped on revocation
        self._done: deque[tuple[Item, BaseException | None]] = deque()
        self._error: BaseException | None = None
        self._closing = False
        self.in_flight = 0  # delivered, not yet final
        self._paused: list[TopicPartition] = []  # all partitions: over the bound
        self._careful: dict[TopicPartition, deque[Message]] = {}  # one at a time
        self._careful_busy: dict[TopicPartition, Message] = {}
        self._handler = spec.handler
        self._pool: ThreadPoolExecutor | None = None
        self._aloop: asyncio.AbstractEventLoop | None = None
        self._athread: threading.Thread | None = None
        if inspect.iscoroutinefunction(spec.handler):
            self._aloop = asyncio.new_event_loop()
            self._sem = asyncio.Semaphore(spec.concurrency)
            self._athread = threading.Thread(
                target=self._aloop.run_forever, name=f"redrive:{spec.name}:async", daemon=True
            )
            self._athread.start()
        else:
            self._pool = ThreadPoolExecutor(spec.concurrency, f"redrive:{spec.name}")

    # -- loop thread ------------------------------------------------------------------

    def dispatch(self, msgs: Sequence[Message]) -> None:
        engine, committer = self.parts.engine, self.parts.committer
        for msg in msgs:
            committer.deliver(msg)
            self.in_flight += 1
            if msg.tp in engine.careful or msg.tp in self._careful:
                self._careful.setdefault(msg.tp, deque()).append(msg)
            else:
                self._admit(msg)
        if self._careful:
            self._feed()
        tracker = committer.tracker
        if self._paused and len(self._paused) < len(tracker.partitions):
            self._pause([tp for tp in tracker.partitions if tp not in self._paused])

    def _admit(self, msg: Message) -> None:
        """Gate a record and queue it in its lane (parked when it must wait)."""
        hold = self.parts.engine.gate(msg)
        if hold is not None and hold.delay is None:
            self._final(msg)
            return
        lane = self._lane_of(msg)
        with self._lock:
            queue = self._lanes.setdefault(lane, deque())
            queue.append((msg, self._epoch.get(msg.tp, 0), lane))
            start = lane not in self._active
            self._active.add(lane)
        if hold is not None and hold.delay is not None:
            self._park(msg, lane, hold)
        elif start:
            self._start(lane)

    def _feed(self) -> None:
        for tp in list(self._careful):
            queue = self._careful[tp]
            while queue and tp not in self._careful_busy:
                msg = queue.popleft()
                self._careful_busy[tp] = msg
                self._admit(msg)
            if not queue and tp not in self._careful_busy:
                del self._careful[tp]

    def _final(self, msg: Message) -> None:
        self.in_flight -= 1
        if self._careful_busy.get(msg.tp) is msg:
            del self._careful_busy[msg.tp]

    def _park(self, msg: Message, lane: Hashable, hold: Hold) -> None:
        assert hold.delay is not None
        self.parts.pauser.park(lane, hold.delay, msg.tp, pause=False)

    def resumed(self, parked: Parked) -> None:
        """A parked lane is due: its first record goes through the gate again."""
        with self._lock:
            queue = self._lanes.get(parked.key)
            if not queue:
                self._active.discard(parked.key)
                return
            msg, _, lane = queue.popleft()
        hold = self.parts.engine.gate(msg)
        with self._lock:
            if hold is None or hold.delay is not None:
                queue.appendleft((msg, self._epoch.get(msg.tp, 0), lane))
        if hold is None:
            self._start(lane)
        elif hold.delay is not None:
            self._park(msg, lane, hold)
        else:
            self._final(msg)
            self._start(lane)

    def settle(self) -> None:
        """Take in the outcomes the workers reported; resume when half of the work is done."""
        if self._error is not None:
            error, self._error = self._error, None
            raise error
        engine = self.parts.engine
        while self._done:
            (msg, epoch, lane), outcome = self._done.popleft()
            if self._epoch.get(msg.tp, 0) != epoch:
                self.in_flight -= 1  # an old assignment's: not ours to finish
                continue
            if outcome is _OK:
                engine.succeeded(msg)
                self._final(msg)
                continue
            if isinstance(outcome, Defer):
                hold = engine.wait(msg, outcome.delay)
            else:
                assert isinstance(outcome, Exception)
                hold = engine.failed(msg, outcome)
            if hold.delay is None:
                self._final(msg)
                self._start(lane)
            else:
                with self._lock:
                    self._lanes.setdefault(lane, deque()).appendleft((msg, epoch, lane))
                self._park(msg, lane, hold)
        if self._careful:
            self._feed()
        if self._paused and self.in_flight <= self.max_in_flight // 2:
            paused, self._paused = self._paused, []
            self.client.resume(paused)
            if self.parts.bus:
                self.parts.bus.emit(Resumed(self.parts.spec.name, tuple(paused)))

    def before_poll(self, timeout: float, max_records: int) -> tuple[float, int]:
        """Poll only for the room left under ``max_in_flight``; with less room than a useful
        poll, first wait (up to ``_STALL``) for running records, then pause the partitions
        and keep polling for rebalances and liveness."""
        with self._lock:
            want = min(max_records, max(1, self.max_in_flight // 4))
            need = self.in_flight + want - self.max_in_flight
            if need > 0 and not self._paused:
                self._idle.wait_for(
                    lambda: len(self._done) >= need or self._error is not None, _STALL
                )
            room = self.max_in_flight - self.in_flight + len(self._done)
        if room <= 0:
            self.settle()
            if not self._paused:
                self._pause(list(self.parts.committer.tracker.partitions))
            return min(timeout, _STALL), 1
        busy = self.in_flight - len(self._careful_busy) > 0 or self._done
        return (min(timeout, 0.01) if busy else timeout), min(max_records, room)

    def _pause(self, partitions: list[TopicPartition]) -> None:
        if partitions:
            self.client.pause(partitions)
            self._paused.extend(partitions)
            if self.parts.bus:
                self.parts.bus.emit(Paused(self.parts.spec.name, tuple(partitions), 0.0))

    def idle(self) -> bool:
        return self.in_flight == 0 and not self._done

    def revoke(self, partitions: Sequence[TopicPartition], timeout: float) -> None:
        """Drop queued records of `partitions`, wait (bounded) for their running ones, and
        settle what finished; later outcomes of these partitions are ignored."""
        gone = set(partitions)
        with self._lock:
            deadline = time.monotonic() + timeout
            for tp in gone:
                self._epoch[tp] = self._epoch.get(tp, 0) + 1  # running ones finish, no more
            while any(self._running.get(tp) for tp in gone):
                if not self._idle.wait(max(0.0, deadline - time.monotonic())):
                    log.warning("%s: in-flight records of %s abandoned after %.1fs",
                                self.parts.spec.name, sorted(map(str, gone)), timeout)  # fmt: skip
                    break
            for tp in gone:  # records finished under the old epoch count as final
                self._epoch[tp] -= 1
        self.settle()
        with self._lock:
            for tp in gone:
                self._epoch[tp] += 1
            for lane, queue in list(self._lanes.items()):
                kept = deque(i for i in queue if i[0].tp not in gone)
                self.in_flight -= len(queue) - len(kept)
                self._lanes[lane] = kept
        for tp in gone:
            self.in_flight -= len(self._careful.pop(tp, ()))
            self._careful_busy.pop(tp, None)
        self._paused = [tp for tp in self._paused if tp not in gone]

    def close(self, timeout: float) -> None:
        """Stop taking queued records, wait (bounded) for running ones, settle them."""
        with self._lock:
            self._closing = True
            deadline = time.monotonic() + timeout
            while any(self._running.values()):
                if not self._idle.wait(max(0.0, deadline - time.monotonic())):
                    log.warning("%s: running records abandoned at stop after %.1fs",
                                self.parts.spec.name, timeout)  # fmt: skip
                    break
        try:
            self.settle()
        finally:
            if self._pool is not None:
                self._pool.shutdown(wait=False, cancel_futures=True)
            if self._aloop is not None:
                self._aloop.call_soon_threadsafe(self._aloop.stop)
                if self._athread is not None:
                    self._athread.join(timeout)
                if not self._aloop.is_running():
                    self._aloop.close()

    # -- workers ------------------------------------------------------------------------

    def _start(self, lane: Hashable) -> None:
        with self._lock:
            if not self._lanes.get(lane):
                self._active.discard(lane)
                self._lanes.pop(lane, None)
                return
            self._active.add(lane)
        if self._pool is not None:
            self._pool.submit(self._drain_sync, lane)
        else:
            assert self._aloop is not None
            self._aloop.call_soon_threadsafe(
                lambda: self._aloop.create_task(self._drain_async(lane))  # type: ignore[union-attr]
            )

    def _next(self, lane: Hashable) -> Item | None:
        """The lane's next record that is still ours (lock held); None: the lane stops."""
        queue = self._lanes.get(lane)
        while queue:
            item = queue.popleft()
            msg, epoch, _ = item
            if self._closing or self._epoch.get(msg.tp, 0) != epoch:
                continue  # dropped: revocation or stop
            self._running[msg.tp] = self._running.get(msg.tp, 0) + 1
            return item
        self._active.discard(lane)
        self._lanes.pop(lane, None)
        return None

    def _report(self, item: Item, outcome: BaseException | None) -> bool:
        """Lock held. True when the lane goes on (the record succeeded)."""
        self._running[item[0].tp] -= 1
        self._done.append((item, outcome))
        self._idle.notify_all()
        return outcome is _OK

    def _delivered(self, msg: Message) -> None:
        bus = self.parts.bus
        if bus:
            bus.emit(Delivered(self.parts.spec.name, ((msg.tp, msg.offset, msg.attempt),)))

    def _drain_sync(self, lane: Hashable) -> None:
        while True:
            with self._lock:
                item = self._next(lane)
            if item is None:
                return
            msg = item[0]
            self._delivered(msg)
            try:
                self._handler(msg)
                outcome: BaseException | None = _OK
            except BaseException as exc:  # ListenerStopped or a bug stop the listener
                outcome = self._failure(exc)
            with self._lock:
                if not self._report(item, outcome):
                    return

    async def _drain_async(self, lane: Hashable) -> None:
        async with self._sem:
            while True:
                with self._lock:
                    item = self._next(lane)
                if item is None:
                    return
                msg = item[0]
                self._delivered(msg)
                try:
                    await self._handler(msg)
                    outcome: BaseException | None = _OK
                except BaseException as exc:
                    outcome = self._failure(exc)
                with self._lock:
                    if not self._report(item, outcome):
                        return

    def _failure(self, exc: BaseException) -> BaseException:
        if not isinstance(exc, Exception) or isinstance(exc, ListenerStopped):
            self._error = exc  # stops the listener on the loop thread
        return exc


def _lane_function(ordering: str) -> Callable[[Message], Hashable]:
    if ordering == "partition":
        return lambda m: m.tp
    if ordering == "key":
        return lambda m: (m.tp, m.raw_key)
    counter = iter(range(1 << 62))
    return lambda m: next(counter)
