"""Concurrent record handling for I/O-bound handlers: ``concurrency=N`` on a record listener.

Records are put into *lanes*; a lane handles its records one after the other, in offset
order, and up to N lanes run at once. The lane of a record is chosen by ``ordering``:

- ``"partition"``: one lane per partition (records of a partition in offset order);
- ``"key"``: one lane per partition and key (records of one key in offset order);
- ``"none"``: one lane per record (no order at all).

``async def`` handlers run as tasks on one event loop in a helper thread; plain functions
run on a pool of N threads. The loop thread keeps polling; it finishes a record's offset
only when the lane reports the record's final outcome, so the committed position of a
partition advances over its contiguous finished prefix only (C1; ``OffsetTracker``).

A failed record is retried *in its lane* with the listener's back-off (the lane waits, the
others flow; attempts are counted in memory), then recovered (dead-letter, skip, ...). The
number of records handed over and not yet final is bounded by ``max_in_flight``: above it
the loop pauses its partitions and resumes them when half of the work is done, so memory
stays flat with any backlog. On revocation, queued records of the revoked partitions are
dropped, running ones are awaited (up to ``drain_timeout``), and only finished work is
committed (C5); work that finishes later belongs to an old assignment and is ignored.
"""

from __future__ import annotations

import asyncio
import inspect
import logging
import threading
import time
from collections import deque
from collections.abc import Callable, Hashable, Iterable, Sequence
from concurrent.futures import ThreadPoolExecutor
from typing import TYPE_CHECKING, Literal

from redrive.errors import ConfigError, Defer, ListenerStopped
from redrive.events import Delivered, Failed, Paused, Resumed
from redrive.message import Message, TopicPartition
from redrive.recover.base import Context

if TYPE_CHECKING:
    from redrive.consumer.loop import Loop

log = logging.getLogger("redrive.concurrent")

Ordering = Literal["partition", "key", "none"]
ORDERINGS: tuple[str, ...] = ("partition", "key", "none")

_SLICE = 0.05  # how often a waiting lane checks whether its record was abandoned
_STALL = 0.2  # no room for this long: pause the partitions (handlers are slow or stuck)


def check_options(concurrency: int, ordering: str, max_in_flight: int | None) -> None:
    """Raise ConfigError for values that are not allowed."""
    if not isinstance(concurrency, int) or isinstance(concurrency, bool) or concurrency < 1:
        raise ConfigError("concurrency", f"must be a whole number >= 1, got {concurrency!r}")
    if ordering not in ORDERINGS:
        raise ConfigError("ordering", f"must be 'partition', 'key' or 'none', got {ordering!r}")
    if max_in_flight is not None and (not isinstance(max_in_flight, int) or max_in_flight < 1):
        raise ConfigError("max_in_flight", f"must be a whole number >= 1, got {max_in_flight!r}")


class ConcurrentRecords:
    """The loop's record dispatch when ``concurrency > 1``: lanes, a bound, and settlement.

    Its public methods run on the loop thread; ``_drain_*`` run the lanes (pool threads or
    event-loop tasks) and report final outcomes through ``_done``, which only the loop
    thread settles into the ``OffsetTracker``.
    """

    def __init__(self, loop: Loop) -> None:
        spec = loop.spec
        self.loop = loop
        self.concurrency = spec.concurrency
        self.max_in_flight = spec.max_in_flight or max(2 * spec.max_poll_records,
                                                       32 * spec.concurrency)  # fmt: skip
        self._lane_of = _lane_function(spec.ordering)
        self._lock = threading.Lock()
        self._idle = threading.Condition(self._lock)
        self._lanes: dict[Hashable, deque[tuple[Message, int]]] = {}
        self._running: dict[TopicPartition, int] = {}  # records being handled, per partition
        self._epoch: dict[TopicPartition, int] = {}  # bumped on revocation
        self._done: deque[tuple[Message, int]] = deque()  # final outcomes for the loop thread
        self._recovered: set[int] = set()  # ids of messages in _done that were recovered
        self._error: BaseException | None = None
        self._closing = False
        self.in_flight = 0  # handed over, not yet settled by the loop thread
        self._paused: list[TopicPartition] = []  # all partitions: over the bound
        # ordering="partition": one partition's records run one at a time, so a partition
        # holding most of the bound would starve the others; it is paused on its own.
        self._share = spec.ordering == "partition"
        self._per_tp: dict[TopicPartition, int] = {}
        self._tp_paused: set[TopicPartition] = set()
        self._is_async = inspect.iscoroutinefunction(spec.handler)
        self._handler = spec.handler
        self._pool: ThreadPoolExecutor | None = None
        self._aloop: asyncio.AbstractEventLoop | None = None
        self._athread: threading.Thread | None = None
        self._sem: asyncio.Semaphore | None = None
        if self._is_async:
            self._aloop = asyncio.new_event_loop()
            self._athread = threading.Thread(
                target=self._aloop.run_forever, name=f"redrive:{spec.name}:async", daemon=True
            )
            self._athread.start()
        else:
            self._pool = ThreadPoolExecutor(spec.concurrency, f"redrive:{spec.name}")

    # -- loop thread ------------------------------------------------------------------

    def dispatch(self, msgs: Iterable[Message]) -> None:
        """Deliver polled records to the tracker and hand them to their lanes."""
        tracker = self.loop.tracker
        lane_of = self._lane_of
        new: list[Hashable] = []
        n = 0
        batch = list(msgs)
        with self._lock:
            lanes = self._lanes
            epochs = self._epoch
            for msg in batch:
                tp = msg.tp
                tracker.deliver(tp, msg.offset)
                lane = lane_of(msg)
                item = (msg, epochs.get(tp, 0))
                queue = lanes.get(lane)
                if queue is None:
                    lanes[lane] = deque((item,))
                    new.append(lane)
                else:
                    queue.append(item)
                n += 1
            self.in_flight += n
        if new:
            self._start(new)
        if self._share:
            self._share_out(batch)
        if self._paused and len(self._paused) < len(tracker.partitions):
            # a partition first seen while over the bound: pause it too
            self._pause([tp for tp in tracker.partitions if tp not in self._paused])

    def before_poll(self, timeout: float, max_records: int) -> tuple[float, int]:
        """Timeout and record count for the next poll, so the in-flight bound holds.

        The loop polls only for the room left under ``max_in_flight``. With less room than a
        useful poll (a quarter of the bound) it first waits for running records to finish;
        when none finish within ``_STALL`` (slow or stuck handlers) it pauses its partitions
        and keeps polling for rebalances and liveness.
        """
        with self._lock:
            want = min(max_records, max(1, self.max_in_flight // 4))
            need = self.in_flight + want - self.max_in_flight  # completions still needed
            if need > 0 and not self._paused:
                self._idle.wait_for(
                    lambda: len(self._done) >= need or self._error is not None, _STALL
                )
            room = self.max_in_flight - self.in_flight + len(self._done)
        if room <= 0:
            self.settle()
            if not self._paused:
                self._pause([tp for tp in self.loop.tracker.partitions])
            return min(timeout, _STALL), 1
        return (min(timeout, 0.01) if self.in_flight else timeout), min(max_records, room)

    def _share_out(self, batch: list[Message]) -> None:
        per_tp = self._per_tp
        for msg in batch:
            per_tp[msg.tp] = per_tp.get(msg.tp, 0) + 1
        cap = self._cap()
        over = [tp for tp in {m.tp for m in batch}
                if per_tp[tp] > cap and tp not in self._tp_paused]  # fmt: skip
        if over:
            self.loop.client.pause(over)
            self._tp_paused.update(over)

    def _cap(self) -> int:
        # Divided by at least 8: a partition is paused early enough that the records of
        # partitions not seen yet get through librdkafka's queue (it hands out one
        # partition's fetched chunk, thousands of records, before the next one's).
        return max(1, self.max_in_flight // max(8, len(self._per_tp)))

    def _share_back(self) -> None:
        cap = self._cap()
        back = [tp for tp in self._tp_paused if self._per_tp.get(tp, 0) <= cap // 2]
        if back:
            self._tp_paused.difference_update(back)
            self.loop.client.resume([tp for tp in back if tp not in self._paused])

    def settle(self) -> None:
        """Finish the offsets of records that reached a final outcome; resume when paused
        and half of the in-flight work is done."""
        if self._error is not None:
            error, self._error = self._error, None
            raise error
        if self._done:
            self._settle_done()
        if self._tp_paused:
            self._share_back()
        if self._paused and self.in_flight <= self.max_in_flight // 2:
            loop = self.loop
            paused, self._paused = self._paused, []
            loop.client.resume([tp for tp in paused if tp not in self._tp_paused])
            if loop.bus:
                loop.bus.emit(Resumed(loop.spec.name, tuple(paused)))

    def _pause(self, partitions: list[TopicPartition]) -> None:
        """Stop fetching until half of the in-flight work is done (Paused.until is 0)."""
        if not partitions:
            return
        loop = self.loop
        loop.client.pause(partitions)
        self._paused.extend(partitions)
        if loop.bus:
            loop.bus.emit(Paused(loop.spec.name, tuple(partitions), 0.0))

    def revoke(self, partitions: Sequence[TopicPartition], timeout: float) -> None:
        """Drop queued records of `partitions`, wait (bounded) for their running ones, and
        settle what finished; later outcomes of these partitions are ignored."""
        gone = set(partitions)
        with self._lock:
            for tp in gone:
                self._epoch[tp] = self._epoch.get(tp, 0) + 1
            deadline = time.monotonic() + timeout
            while any(self._running.get(tp) for tp in gone):
                left = deadline - time.monotonic()
                if left <= 0:
                    log.warning("%s: in-flight records of %s abandoned after %.1fs",
                                self.loop.spec.name, sorted(map(str, gone)), timeout)  # fmt: skip
                    break
                self._idle.wait(left)
            for tp in gone:  # records finished under the old epoch count as final
                self._epoch[tp] -= 1
            self._settle_done()
            for tp in gone:
                self._epoch[tp] += 1
        self._paused = [tp for tp in self._paused if tp not in gone]
        self._tp_paused.difference_update(gone)
        for tp in gone:
            if not self._per_tp.get(tp):
                self._per_tp.pop(tp, None)

    def _settle_done(self) -> None:
        """Loop thread: finish the offsets of final outcomes of the current assignment."""
        done = self._done
        settled = 0
        while done:
            msg, epoch = done.popleft()
            settled += 1
            if self._share:
                self._per_tp[msg.tp] -= 1
            if self._epoch.get(msg.tp, 0) == epoch:
                if id(msg) in self._recovered:  # final, but not a success (circuit breaker)
                    self._recovered.discard(id(msg))
                    self.loop.tracker.finish(msg.tp, msg.offset)
                else:
                    self.loop._succeeded(msg)
            else:
                self._recovered.discard(id(msg))
        self.in_flight -= settled

    def close(self, timeout: float) -> None:
        """Stop taking queued records, wait (bounded) for running ones, settle them."""
        with self._lock:
            self._closing = True
            deadline = time.monotonic() + timeout
            while any(self._running.values()):
                left = deadline - time.monotonic()
                if left <= 0:
                    log.warning("%s: running records abandoned at stop after %.1fs",
                                self.loop.spec.name, timeout)  # fmt: skip
                    break
                self._idle.wait(left)
            self._settle_done()
        if self._pool is not None:
            self._pool.shutdown(wait=False, cancel_futures=True)
        if self._aloop is not None:
            self._aloop.call_soon_threadsafe(self._aloop.stop)
            if self._athread is not None:
                self._athread.join(timeout)
            if not self._aloop.is_running():
                self._aloop.close()

    # -- lanes (workers) ----------------------------------------------------------------

    def _start(self, lanes: list[Hashable]) -> None:
        if self._pool is not None:
            for lane in lanes:
                self._pool.submit(self._drain_sync, lane)
        else:
            assert self._aloop is not None
            self._aloop.call_soon_threadsafe(self._start_tasks, lanes)

    def _next(self, lane: Hashable) -> tuple[Message, int] | None:
        """The lane's next record that still belongs to us (lock held), or None: lane done."""
        queue = self._lanes[lane]
        while queue:
            msg, epoch = queue.popleft()
            if self._closing or self._epoch.get(msg.tp, 0) != epoch:
                self._done.append((msg, -1))  # dropped: leaves the in-flight count, unfinished
                continue
            self._running[msg.tp] = self._running.get(msg.tp, 0) + 1
            return msg, epoch
        del self._lanes[lane]
        return None

    def _finished(self, msg: Message, epoch: int, final: bool) -> None:
        """Lock held."""
        self._running[msg.tp] -= 1
        self._done.append((msg, epoch if final else -1))
        self._idle.notify_all()

    def _abandoned(self, msg: Message, epoch: int) -> bool:
        return self._closing or self._epoch.get(msg.tp, 0) != epoch

    def _drain_sync(self, lane: Hashable) -> None:
        lock = self._lock
        while True:
            with lock:
                item = self._next(lane)
            if item is None:
                return
            msg, epoch = item
            final = False
            try:
                final = self._handle_sync(msg, epoch)
            except BaseException as exc:  # ListenerStopped, or a bug: stop the listener
                self._error = exc
            finally:
                with lock:
                    self._finished(msg, epoch, final)

    def _start_tasks(self, lanes: list[Hashable]) -> None:
        if self._sem is None:
            self._sem = asyncio.Semaphore(self.concurrency)
        assert self._aloop is not None
        for lane in lanes:
            self._aloop.create_task(self._drain_async(lane))

    async def _drain_async(self, lane: Hashable) -> None:
        assert self._sem is not None
        async with self._sem:
            lock = self._lock
            while True:
                with lock:
                    item = self._next(lane)
                if item is None:
                    return
                msg, epoch = item
                final = False
                try:
                    final = await self._handle_async(msg, epoch)
                except BaseException as exc:
                    self._error = exc
                finally:
                    with lock:
                        self._finished(msg, epoch, final)

    # -- one record with in-lane retries --------------------------------------------------

    def _handle_sync(self, msg: Message, epoch: int) -> bool:
        first_failure = 0.0
        while True:
            self._delivered(msg)
            try:
                if msg.error is not None:
                    raise msg.error  # undecodable: never reaches the handler (F4)
                self._handler(msg)
                return True
            except ListenerStopped:
                raise
            except Defer as defer:
                delay: float | None = defer.delay
            except Exception as exc:
                first_failure = first_failure or time.time()
                delay = self._failed(msg, exc, first_failure)
                if delay is None:
                    return self._recover_sync(msg, epoch, exc, first_failure)
                msg.attempt += 1
            if not self._sleep_sync(msg, epoch, delay or 0.0):
                return False

    async def _handle_async(self, msg: Message, epoch: int) -> bool:
        first_failure = 0.0
        while True:
            self._delivered(msg)
            try:
                if msg.error is not None:
                    raise msg.error
                await self._handler(msg)
                return True
            except ListenerStopped:
                raise
            except Defer as defer:
                delay: float | None = defer.delay
            except Exception as exc:
                first_failure = first_failure or time.time()
                delay = self._failed(msg, exc, first_failure)
                if delay is None:
                    # Recoverers are synchronous (a confirmed produce): run them off the loop.
                    return await asyncio.get_running_loop().run_in_executor(
                        None, self._recover_sync, msg, epoch, exc, first_failure
                    )
                msg.attempt += 1
            if not await self._sleep_async(msg, epoch, delay or 0.0):
                return False

    def _delivered(self, msg: Message) -> None:
        bus = self.loop.bus
        if bus:
            bus.emit(Delivered(self.loop.spec.name, ((msg.tp, msg.offset, msg.attempt),)))

    def _failed(self, msg: Message, exc: Exception, first_failure: float) -> float | None:
        spec = self.loop.spec
        fatal = spec.retry.classifier.is_fatal(exc)
        bus = self.loop.bus
        if bus:
            bus.emit(Failed(spec.name, msg.tp, msg.offset, msg.attempt, type(exc).__name__,
                            str(exc), fatal))  # fmt: skip
        if fatal:
            return None
        return spec.retry.next_delay(exc, msg.attempt, time.time() - first_failure)

    def _recover_sync(
        self, msg: Message, epoch: int, exc: BaseException, first_failure: float
    ) -> bool:
        spec = self.loop.spec
        ctx = Context(spec.name, spec.group_id, msg.attempt, first_failure, self.loop.bus,
                      spec.kafka)  # fmt: skip
        tries = 0
        while True:
            try:
                spec.recoverer.recover(msg, exc, ctx)
                self._recovered.add(id(msg))
                return True
            except ListenerStopped:
                raise
            except Exception as rexc:  # the record stays unfinished; try again later (D3)
                tries += 1
                delay = spec.retry.recovery.delay_forever(tries)
                log.error("%s: recovering %s[%d]@%d failed, retrying in %.1fs: %s",
                          spec.name, msg.topic, msg.partition, msg.offset, delay, rexc)  # fmt: skip
                if not self._sleep_sync(msg, epoch, delay):
                    return False

    def _sleep_sync(self, msg: Message, epoch: int, delay: float) -> bool:
        """Wait `delay` in the lane; False when the record was abandoned meanwhile."""
        end = time.monotonic() + delay
        while True:
            if self._abandoned(msg, epoch):
                return False
            left = end - time.monotonic()
            if left <= 0:
                return True
            time.sleep(min(left, _SLICE))

    async def _sleep_async(self, msg: Message, epoch: int, delay: float) -> bool:
        end = time.monotonic() + delay
        while True:
            if self._abandoned(msg, epoch):
                return False
            left = end - time.monotonic()
            if left <= 0:
                return True
            await asyncio.sleep(min(left, _SLICE))


def _lane_function(ordering: str) -> Callable[[Message], Hashable]:
    if ordering == "partition":
        return lambda m: (m.topic, m.partition)
    if ordering == "key":
        return lambda m: (m.topic, m.partition, m.raw_key)
    counter = iter(range(1 << 62))
    return lambda m: next(counter)
