"""The workers of the concurrent dispatcher: lanes of records, run one after the other.

A lane is a queue of records handled in order; up to N lanes run at once, on a pool of N
threads (plain handlers) or as tasks on one event loop in a helper thread (``async def``).
A worker only runs the handler and reports the outcome: a success lets the lane go on, a
failure (or ``Defer``) stops it until the loop thread decides (``ConcurrentRecords``).
Records carry the *epoch* of their partition; revocation bumps it, and a record of an old
epoch is dropped instead of handed over. A lane is *owned* while a worker drains it or
while it waits for the loop thread's decision; each owner holds a token, so a lane taken
away by a revocation is never drained by two workers at once when it comes back.
"""

from __future__ import annotations

import asyncio
import inspect
import itertools
import threading
import time
from collections import deque
from collections.abc import Callable, Hashable, Iterable
from concurrent.futures import ThreadPoolExecutor
from typing import Any

from redrive.errors import ListenerStopped
from redrive.events import Delivered, EventBus
from redrive.message import Message, TopicPartition

Item = tuple[Message, int, Hashable]  # record, epoch of its partition, lane
DROPPED = Exception("dropped: its partition was revoked, or the listener stops")
REGATE = Exception("must wait: the loop thread gates it again")


class Lanes:
    def __init__(
        self, name: str, handler: Callable[[Message], Any], concurrency: int, bus: EventBus
    ) -> None:
        self.name, self.bus, self._handler = name, bus, handler
        self.lock = threading.Lock()
        self.changed = threading.Condition(self.lock)  # a worker reported
        self.queues: dict[Hashable, deque[Item]] = {}
        self._owner: dict[Hashable, int] = {}  # lane -> token of its worker or decision
        self._tp_of: dict[Hashable, TopicPartition] = {}
        self._tokens = itertools.count()
        self.running: dict[TopicPartition, int] = {}
        self.epochs: dict[TopicPartition, int] = {}
        self.done: deque[tuple[Item, BaseException | None]] = deque()
        self.error: BaseException | None = None  # stops the listener on the loop thread
        self.closing = False
        self._regate: set[int] = set()  # ids of queued records that must wait
        self._pool: ThreadPoolExecutor | None = None
        self._aloop: asyncio.AbstractEventLoop | None = None
        self._athread: threading.Thread | None = None
        if inspect.iscoroutinefunction(handler):
            self._aloop = asyncio.new_event_loop()
            self._sem = asyncio.Semaphore(concurrency)
            self._athread = threading.Thread(
                target=self._aloop.run_forever, name=f"redrive:{name}:async", daemon=True
            )
            self._athread.start()
        else:
            self._pool = ThreadPoolExecutor(concurrency, f"redrive:{name}")

    def put(
        self,
        msg: Message,
        lane: Hashable,
        *,
        front: bool = False,
        run: bool = True,
        wait: bool = False,
    ) -> None:
        """Queue `msg` in `lane`; with `run`, start the lane unless it is owned already. A
        record that must `wait` stops its lane when it comes up and is handed back."""
        with self.lock:
            if wait:
                self._regate.add(id(msg))
            queue = self.queues.setdefault(lane, deque())
            self._tp_of[lane] = msg.tp
            item = (msg, self.epochs.get(msg.tp, 0), lane)
            queue.appendleft(item) if front else queue.append(item)
            if lane in self._owner:
                return
            token = self._owner[lane] = next(self._tokens)
        if run:
            self._submit(lane, token)

    def go_on(self, lane: Hashable) -> None:
        """Let a stopped (or parked) lane go on with its queue, under a new owner."""
        with self.lock:
            if not self.queues.get(lane):
                self._release(lane)
                return
            token = self._owner[lane] = next(self._tokens)
        self._submit(lane, token)

    def take(self, lane: Hashable) -> Message | None:
        """Remove and return the first record of a stopped lane (to gate it again)."""
        with self.lock:
            queue = self.queues.get(lane)
            return queue.popleft()[0] if queue else None

    def wait_running(self, partitions: Iterable[TopicPartition] | None, timeout: float) -> bool:
        """Lock held: wait until none of `partitions` (None: any) has a running record."""
        deadline = time.monotonic() + timeout
        tps = None if partitions is None else set(partitions)
        while any(n for tp, n in self.running.items() if tps is None or tp in tps):
            if not self.changed.wait(max(0.0, deadline - time.monotonic())):
                return False
        return True

    def drop(self, partitions: set[TopicPartition]) -> int:
        """Lock held: forget the lanes of `partitions` and their queued records; how many
        records. A worker still running one of their records stops after it."""
        dropped = 0
        for lane in [lane for lane, tp in self._tp_of.items() if tp in partitions]:
            queue = self.queues.get(lane, ())
            dropped += len(queue)
            self._regate.difference_update(id(item[0]) for item in queue)
            self._release(lane)
        return dropped

    def _release(self, lane: Hashable) -> None:
        self.queues.pop(lane, None)
        self._owner.pop(lane, None)
        self._tp_of.pop(lane, None)

    def close(self, timeout: float) -> None:
        if self._pool is not None:
            self._pool.shutdown(wait=False, cancel_futures=True)
        if self._aloop is not None:
            self._aloop.call_soon_threadsafe(self._aloop.stop)
            if self._athread is not None:
                self._athread.join(timeout)
            if not self._aloop.is_running():
                self._aloop.close()

    # -- workers ------------------------------------------------------------------------

    def _submit(self, lane: Hashable, token: int) -> None:
        if self._pool is not None:
            self._pool.submit(self._drain_sync, lane, token)
        else:
            aloop = self._aloop
            assert aloop is not None
            aloop.call_soon_threadsafe(lambda: aloop.create_task(self._drain_async(lane, token)))

    def _next(self, lane: Hashable, token: int) -> Item | None:
        """The lane's next record that is still ours; None: the worker stops."""
        with self.lock:
            if self._owner.get(lane) != token:
                return None  # the lane was taken away (revocation)
            queue = self.queues.get(lane)
            while queue:
                item = queue.popleft()
                msg, epoch, _ = item
                if self.closing or self.epochs.get(msg.tp, 0) != epoch:
                    self.done.append((item, DROPPED))
                    continue
                if self._regate and id(msg) in self._regate:
                    self._regate.discard(id(msg))
                    self.done.append((item, REGATE))  # the lane stops here, still owned
                    self.changed.notify_all()
                    return None
                self.running[msg.tp] = self.running.get(msg.tp, 0) + 1
                break
            else:
                self._release(lane)
                return None
        if self.bus.records:
            self.bus.emit(Delivered(self.name, ((msg.tp, msg.offset, msg.attempt),), (msg,)))
        return item

    def _report(self, item: Item, outcome: BaseException | None) -> bool:
        """True when the lane goes on (the record succeeded); else it stays owned until the
        loop thread decides."""
        with self.lock:
            self.running[item[0].tp] -= 1
            self.done.append((item, outcome))
            self.changed.notify_all()
            if isinstance(outcome, ListenerStopped) or not isinstance(outcome, Exception | None):
                self.error = outcome
            return outcome is None

    def _drain_sync(self, lane: Hashable, token: int) -> None:
        while (item := self._next(lane, token)) is not None:
            outcome: BaseException | None = None
            try:
                self._handler(item[0])
            except BaseException as exc:  # reported; ListenerStopped or a bug stop the listener
                outcome = exc
            if not self._report(item, outcome):
                return

    async def _drain_async(self, lane: Hashable, token: int) -> None:
        async with self._sem:
            while (item := self._next(lane, token)) is not None:
                outcome: BaseException | None = None
                try:
                    await self._handler(item[0])
                except BaseException as exc:
                    outcome = exc
                if not self._report(item, outcome):
                    return
