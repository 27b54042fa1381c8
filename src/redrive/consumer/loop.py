"""The consumer loop: poll -> dispatch -> settle -> commit, and the life cycle around it.

One record's path: ``run_once`` polls; the ``Decoder`` builds its ``Message``; the
dispatcher hands it over (``dispatch/records.py``, ``batches.py`` or ``concurrent.py``);
before and after the handler, the ``FailureHandler`` (``failures.py``) decides whether it
may run, waits (the ``Pauser``), or recovers it; the ``Committer`` turns final outcomes into
safe positions and commits them when the commit policy says so. The loop knows no policy in
particular: they are values in the listener's spec.
"""

from __future__ import annotations

import logging
import time
from collections.abc import Callable, Sequence

from redrive.consumer.client import Client, RawRecord
from redrive.consumer.decode import Decoder
from redrive.consumer.dispatch.base import Dispatcher, Parts
from redrive.consumer.dispatch.batches import Batches
from redrive.consumer.dispatch.concurrent import ConcurrentRecords
from redrive.consumer.dispatch.records import Records
from redrive.consumer.failures import FailureHandler
from redrive.consumer.pauser import Pauser
from redrive.consumer.spec import ListenerSpec
from redrive.consumer.transactions import committer_for
from redrive.events import (
    Assigned,
    EventBus,
    Handled,
    Idle,
    Lost,
    Polled,
    Revoked,
    Started,
    Stopped,
    Stopping,
)
from redrive.message import TopicPartition
from redrive.recover.base import ListenerContext

log = logging.getLogger("redrive.loop")

CLOSE_RETRY = 10.0
"""Seconds a graceful stop keeps taking part in a rebalance to get its last commit in."""

Clock = Callable[[], float]


class Loop:
    """Consumes for one listener. ``run()`` blocks until ``stop()``; unit tests drive
    ``start()``, ``run_once()`` (or ``run_until_idle()``) and ``close()`` on a fake client
    and clock."""

    def __init__(
        self,
        spec: ListenerSpec,
        client: Client,
        *,
        bus: EventBus | None = None,
        clock: Clock = time.monotonic,
        wall_clock: Clock = time.time,
    ) -> None:
        self.spec = spec
        self.client = client
        self.bus = bus or EventBus()
        self._stopping = False
        self.closing = False
        """True once ``close()`` began: past the handler, committing and leaving the group."""
        self._gone: set[TopicPartition] = set()  # revoked or lost during the current poll
        self._polled = 0
        self._said = 0  # records handled as of the last Handled event
        concurrent = spec.concurrency > 1 and not spec.batch
        persist = spec.retry.mode == "seek"
        # records an owner may be handling past its committed position: a poll's, or under
        # concurrency the in-flight bound (with room for failed records not yet settled)
        window = 2 * ConcurrentRecords.bound(spec) if concurrent else spec.max_poll_records
        self.pauser = Pauser(spec.name, client, self.bus, clock)
        self.committer, spec = committer_for(spec, client, self.bus, self.pauser,
                                             persist=persist, window=window)  # fmt: skip
        self.spec = spec  # its handler writes the outputs it returns (transactions.py)
        self.engine = FailureHandler(spec, self.committer, self.bus, wall_clock)
        parts = Parts(spec, self.engine, self.committer, self.pauser, self.bus,
                      lambda: self._stopping)  # fmt: skip
        self.dispatcher: Dispatcher = (
            ConcurrentRecords(parts, client) if concurrent
            else Batches(parts) if spec.batch else Records(parts)
        )  # fmt: skip
        self._decode = Decoder(spec.key_deserializer, spec.value_deserializer,
                               one_topic=len(spec.topics) == 1)  # fmt: skip

    @property
    def handled(self) -> int:
        """Records handled successfully so far."""
        return self.engine.handled

    # -- life cycle -------------------------------------------------------------------

    def start(self) -> None:
        spec = self.spec
        spec.recoverer.start(
            ListenerContext(
                name=spec.name,
                group_id=spec.group_id,
                kafka=spec.kafka,
                handled=lambda: self.handled,
            )
        )
        self.client.subscribe(spec.topics, self._on_assign, self._on_revoke, self._on_lost)
        if self.bus:
            self.bus.emit(Started(spec.name, spec.group_id, spec.topics))

    def run(self) -> None:
        try:
            self.start()
            while not self._stopping:
                self.run_once()
        finally:
            self.close()

    def stop(self) -> None:
        """Ask the loop to stop after the current record (safe from any thread)."""
        first = not self._stopping
        self._stopping = True
        if first and self.bus:  # probes: not ready from now on, while the record finishes
            self.bus.emit(Stopping(self.spec.name))

    def close(self, reason: str = "stop") -> None:
        """Commit every final outcome synchronously, then leave the group (C4). The client
        is closed (the group left) whatever fails before it."""
        self.closing = True
        if not self._stopping:  # closing without a stop() (an error): say so once
            self._stopping = True
            if self.bus:
                self.bus.emit(Stopping(self.spec.name))
        try:
            try:
                self.dispatcher.close(self.spec.drain_timeout)
            finally:
                self.committer.flush("close", sync=True)
                if self.committer.refused and self.committer.carries_done:
                    self._commit_after_rebalance()
        finally:
            try:
                try:
                    self.client.close()
                finally:
                    self.committer.close()
            finally:
                try:
                    self.spec.recoverer.close()
                except Exception as exc:
                    log.error("%s: closing the recoverer failed: %s", self.spec.name, exc)
                if self.bus:
                    self.bus.emit(Stopped(self.spec.name, reason))

    def _commit_after_rebalance(self) -> None:
        """The last commit was refused, typically because the group is rebalancing (a member
        joined or left): keep polling, with every partition paused and nothing handed over,
        so that this member takes part in the rebalance (a partition it gives up is committed
        by the revocation callback), and commit again, for up to ``CLOSE_RETRY`` seconds.
        Without it a graceful stop during a rebalance left its last records to be handled
        again by the next owner (C4; found by ``redrive chaos --mode concurrency``)."""
        client, committer = self.client, self.committer
        deadline = time.monotonic() + CLOSE_RETRY
        try:
            while committer.refused and time.monotonic() < deadline:
                began = time.monotonic()
                client.pause(list(committer.tracker.partitions))
                client.poll(1, 0.2)  # rebalance callbacks run here; a record is left for later
                refusals = committer.refusals
                committer.flush("close", sync=True, only=sorted(committer.refused, key=str))
                if committer.refusals == refusals:
                    break  # committed, or given up in the rebalance (and committed there)
                time.sleep(max(0.0, 0.2 - (time.monotonic() - began)))  # paced
        except Exception as exc:  # the stop goes on; the error it may be closing for stays
            log.warning("%s: committing again at stop failed: %s", self.spec.name, exc)
            return
        if committer.refused:
            log.warning("%s: the final commit of %s was refused for %.0f s; their records "
                        "handled since the last commit may be handled again by the next "
                        "owner", self.spec.name, sorted(map(str, committer.refused)),
                        CLOSE_RETRY)  # fmt: skip

    # -- one step ---------------------------------------------------------------------

    def run_once(self) -> None:
        dispatcher = self.dispatcher
        for parked in self.pauser.due():
            dispatcher.resumed(parked)
            if parked.held:  # an earlier poll's records: commit them first (C2)
                self.committer.flush("poll")
        timeout = self.pauser.timeout(self.spec.poll_timeout)
        timeout, max_records = dispatcher.before_poll(timeout, self.spec.max_poll_records)
        records = self.client.poll(max_records, timeout)
        if self._gone:  # revoked or lost inside this poll: not ours any more (C5)
            gone = self._gone
            records = [r for r in records if (r.topic(), r.partition()) not in gone]
            self._gone = set()
        self._polled = len(records)
        bus = self.bus
        took = 0.0
        if records:
            if bus and bus.wants(Polled):  # its counts look at every record
                bus.emit(Polled(self.spec.name, _poll_counts(records)))
            if not self._stopping:
                began = time.perf_counter() if bus else 0.0
                dispatcher.dispatch(*self._decode.poll(records))
                took = time.perf_counter() - began if bus else 0.0
        elif bus:
            bus.emit(Idle(self.spec.name))
        dispatcher.settle()
        if bus:
            self._say_handled(len(records), took)
        self.committer.flush("poll")

    def _say_handled(self, received: int, took: float) -> None:
        """Once per poll: records received, handled since the last time (however they were
        handed over: now, resumed after a back-off, or settled by workers), and the time."""
        handled = self.engine.handled
        if received or handled != self._said:
            count, self._said = handled - self._said, handled
            self.bus.emit(Handled(self.spec.name, received, count, took))

    def run_until_idle(self, limit: int = 1000) -> int:
        """Run steps until one polls nothing while nothing waits or runs; the steps taken.
        For tests on a fake client, whose clock moves when a poll finds nothing."""
        for step in range(1, limit + 1):
            self.run_once()
            if not self._polled and not self.pauser.parked and self.dispatcher.idle(0.05):
                return step
        raise AssertionError(f"the loop was still busy after {limit} steps")

    # -- rebalance (called inside client.poll) ------------------------------------------

    def _on_assign(self, partitions: list[TopicPartition]) -> None:
        self._gone.difference_update(partitions)
        if partitions:
            # librdkafka keeps a partition's pause flag across revocation and re-assignment;
            # a partition paused for a back-off when it was taken away would stall forever.
            try:
                self.client.resume(partitions)
            except Exception as exc:
                log.warning("%s: resuming assigned partitions: %s", self.spec.name, exc)
        if self.bus:
            self.bus.emit(Assigned(self.spec.name, tuple(partitions)))
        if not partitions or not self.committer.persist:
            return
        try:  # continue what a previous owner left in the commit metadata (R3)
            committed = self.client.committed(partitions)
        except Exception as exc:  # raising here would stop the listener; counts restart
            log.warning("%s: reading attempt state failed, counts restart: %s", self.spec.name, exc)
            return
        self.engine.assigned(committed)

    def _on_revoke(self, partitions: list[TopicPartition]) -> None:
        """Commit final outcomes of the revoked partitions before giving them up (C5)."""
        # closing: close() already waited drain_timeout for running records; do not wait twice
        self.dispatcher.revoke(partitions, 0.0 if self.closing else self.spec.drain_timeout)
        try:
            self.committer.flush("revoke", sync=True, only=partitions)
        finally:
            self._forget(partitions)
        if self.bus:
            self.bus.emit(Revoked(self.spec.name, tuple(partitions)))

    def _on_lost(self, partitions: list[TopicPartition]) -> None:
        self.dispatcher.revoke(partitions, 0.0)  # lost: nothing of them may be committed
        self._forget(partitions)
        if self.bus:
            self.bus.emit(Lost(self.spec.name, tuple(partitions)))

    def _forget(self, partitions: list[TopicPartition]) -> None:
        self._gone.update(partitions)
        self.committer.forget(partitions)
        self.pauser.forget(partitions)
        self.engine.forget(partitions)


def _poll_counts(records: Sequence[RawRecord]) -> tuple[tuple[TopicPartition, int, int], ...]:
    # Runs for every record of every poll someone listens to: plain tuples, one lookup each.
    counts: dict[tuple[str, int], list[int]] = {}
    get = counts.get
    for r in records:
        key = (r.topic(), r.partition())
        c = get(key)
        if c is None:
            counts[key] = [r.offset(), 1]
        else:
            c[1] += 1
    return tuple((TopicPartition(t, p), first, n) for (t, p), (first, n) in counts.items())
