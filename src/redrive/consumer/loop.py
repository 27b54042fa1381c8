"""The consumer loop: poll -> dispatch -> settle -> commit.

One record's path: ``run_once`` polls; ``_message`` decodes it; ``_process`` hands it to the
handler; success finishes its offset in the ``OffsetTracker``; failure asks the retry policy
for a delay: a delay *parks* the partition (pause, rewind, wait), no delay means *recover*
(the recoverer, e.g. the dead-letter publisher, confirms its write before returning). Only
then is the offset finished; ``_flush`` commits the tracker's safe positions when the commit
policy says so. Policies are values handed in; the loop knows none of them in particular.
"""

from __future__ import annotations

import asyncio
import inspect
import logging
import time
from collections import deque
from collections.abc import Callable, Iterable, Sequence
from dataclasses import replace
from typing import Any

from redrive.consumer.client import Client, RawRecord
from redrive.consumer.concurrent import ConcurrentRecords
from redrive.consumer.offsets import OffsetTracker
from redrive.errors import (
    BatchFailed,
    CommitFailed,
    Defer,
    DeserializationError,
    ListenerStopped,
)
from redrive.events import (
    Assigned,
    BackingOff,
    Committed,
    Delivered,
    EventBus,
    Failed,
    Lost,
    Paused,
    Polled,
    RecoveryRetrying,
    Resumed,
    Revoked,
    Seeked,
    Started,
    Stopped,
    Succeeded,
)
from redrive.listener import ListenerSpec
from redrive.message import Message, TopicPartition
from redrive.recover.base import Context, ListenerContext
from redrive.retry.attempts import Attempt

log = logging.getLogger("redrive.loop")

Clock = Callable[[], float]


class Loop:
    """Consumes for one listener. ``run()`` blocks until ``stop()``; unit tests drive
    ``start()``, ``run_once()`` and ``close()`` on a fake client and clock."""

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
        self.clock = clock
        self.wall_clock = wall_clock
        self.tracker = OffsetTracker()
        self._committed: dict[TopicPartition, int] = {}
        self._stored: dict[TopicPartition, int] = {}  # Commit.interval: stored, not yet sure
        self._waiting: dict[TopicPartition, float] = {}  # paused partition -> due (clock)
        self._held: dict[TopicPartition, list[Message]] = {}  # in-place retries
        self._attempts: dict[tuple[TopicPartition, int], Attempt] = {}
        self._acks: deque[Message] = deque()
        self._stopping = False
        self._persist_attempts = spec.retry.mode == "seek"
        self._manual_ack = spec.commit.manual_ack
        self._aloop: asyncio.AbstractEventLoop | None = None
        self.handled = 0  # records handled successfully (read by the circuit breaker)
        self._gone: set[TopicPartition] = set()  # revoked or lost during the current poll
        self._recovered: dict[TopicPartition, set[int]] = {}  # recovered, not committed past
        self._tps: dict[str, dict[int, TopicPartition]] = {}
        self._decode = spec.value_deserializer is not None or spec.key_deserializer is not None
        self._pool: ConcurrentRecords | None = None
        if spec.concurrency > 1 and not spec.batch:
            self._pool = ConcurrentRecords(self)
        else:
            self._call = self._sync_handler(spec.handler)

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
        self.client.subscribe(self.spec.topics, self._on_assign, self._on_revoke, self._on_lost)
        if self.bus:
            self.bus.emit(Started(self.spec.name, self.spec.group_id, self.spec.topics))

    def run(self) -> None:
        self.start()
        try:
            while not self._stopping:
                self.run_once()
        finally:
            self.close()

    def stop(self) -> None:
        """Ask the loop to stop after the current record (safe from any thread)."""
        self._stopping = True

    def close(self, reason: str = "stop") -> None:
        """Commit every final outcome synchronously, then leave the group (C4)."""
        try:
            if self._pool is not None:
                self._pool.close(self.spec.drain_timeout)
            self._drain_acks()
            self._flush("close", sync=True)
        finally:
            self.spec.recoverer.close()
            self.client.close()
            if self._aloop is not None:
                self._aloop.close()
            if self.bus:
                self.bus.emit(Stopped(self.spec.name, reason))

    # -- one step ---------------------------------------------------------------------

    def run_once(self) -> None:
        timeout = self.spec.poll_timeout
        if self._waiting:
            now = self.clock()
            self._resume_due(now)
            if self._waiting:
                timeout = min(timeout, max(0.0, min(self._waiting.values()) - now))
        pool, max_records = self._pool, self.spec.max_poll_records
        if pool is not None:
            timeout, max_records = pool.before_poll(timeout, max_records)
        records = self.client.poll(max_records, timeout)
        if self._gone:  # revoked or lost inside this poll: not ours any more (C5)
            gone = self._gone
            records = [r for r in records if (r.topic(), r.partition()) not in gone]
            self._gone = set()
        if records:
            if self.bus:
                self.bus.emit(Polled(self.spec.name, _poll_counts(records)))
            if pool is not None and not self._stopping:
                pool.dispatch(map(self._message, records))
            else:
                self._dispatch(map(self._message, records))
        if pool is not None:
            pool.settle()
        if self._acks:
            self._drain_acks()
        self._flush("poll")

    def _dispatch(self, msgs: Iterable[Message]) -> None:
        if self.spec.batch:
            waiting = self._waiting
            self._dispatch_batch(
                [m for m in msgs if m.tp not in waiting] if waiting else list(msgs)
            )
        else:
            self._dispatch_records(msgs)

    def _dispatch_records(self, msgs: Iterable[Message]) -> None:
        parked: dict[TopicPartition, list[Message]] = {}
        waiting = self._waiting
        after_record = self.spec.commit.after_record
        for msg in msgs:
            tp = msg.tp
            if tp in parked:
                parked[tp].append(msg)
                continue
            if tp in waiting or self._stopping:
                continue  # stale fetch of a paused partition, or stopping: not delivered
            self.tracker.deliver(tp, msg.offset)
            if not self._process(msg):
                parked[tp] = [msg]
            elif after_record:
                self._flush("record")
        for tp, held in parked.items():
            self._park(tp, held)

    def _process(self, msg: Message) -> bool:
        """Hand one record to the handler; True when it reached a final outcome."""
        if self._recovered and msg.offset in self._recovered.get(msg.tp, ()):
            self.tracker.finish(msg.tp, msg.offset)  # recovered before a rewind: final
            return True
        state = self._attempts.get((msg.tp, msg.offset)) if self._attempts else None
        if state is not None:
            if state.used_up:  # also: a previous owner died in the last allowed attempt
                return self._recover(msg, state.last_error or _LastError(state), state)
            if state.due:  # a previous owner's back-off is not over: wait out the rest
                delay, state.due = state.due - self.wall_clock(), 0.0
                if delay > 0:
                    msg.attempt = state.count
                    self._wait(msg, delay)
                    return False
            msg.attempt = state.count + 1
            if self._persist_attempts:  # count the attempt before it runs: a crash cannot hide it
                self._commit_attempt(msg.tp, msg.offset, replace(state, count=msg.attempt))
        if self._manual_ack:
            msg._ack = self._acks.append
        if self.bus:
            self.bus.emit(Delivered(self.spec.name, ((msg.tp, msg.offset, msg.attempt),)))
        try:
            if msg.error is not None:
                raise msg.error  # undecodable: never reaches the handler (F4)
            self._call(msg)
        except ListenerStopped:
            raise
        except Defer as defer:
            self._wait(msg, defer.delay)
            return False
        except Exception as exc:
            return self._on_failure(msg, exc, state)
        self._succeeded(msg)
        return True

    def _succeeded(self, msg: Message) -> None:
        self.handled += 1
        if not self._manual_ack:  # under manual acks, msg.ack() finishes it
            self.tracker.finish(msg.tp, msg.offset)
        if self._attempts:
            self._attempts.pop((msg.tp, msg.offset), None)
        if self.bus:
            self.bus.emit(Succeeded(self.spec.name, msg.tp, msg.offset))

    # -- failure, retry, recovery -------------------------------------------------------

    def _on_failure(self, msg: Message, exc: BaseException, state: Attempt | None) -> bool:
        now = self.wall_clock()
        state = state or Attempt(0, now)
        state.count = msg.attempt
        retry = self.spec.retry
        fatal = retry.classifier.is_fatal(exc)
        if self.bus:
            self.bus.emit(
                Failed(self.spec.name, msg.tp, msg.offset, msg.attempt, type(exc).__name__,
                       str(exc), fatal)
            )  # fmt: skip
        delay = None if fatal else retry.next_delay(exc, state.count, now - state.first_failure)
        if delay is None:
            return self._recover(msg, exc, state)
        log.info(
            "%s: %s[%d]@%d failed (attempt %d: %s: %s); retry in %.2fs",
            self.spec.name, msg.topic, msg.partition, msg.offset, msg.attempt,
            type(exc).__name__, exc, delay,
        )  # fmt: skip
        state.note(exc, retry.backoff_for(exc).max_attempts)
        self._attempts[(msg.tp, msg.offset)] = state
        if self._persist_attempts:
            state.due = now + delay  # for a new owner; this loop waits on its own clock
            self._commit_attempt(msg.tp, msg.offset, state)
            state.due = 0.0
        self._wait(msg, delay)
        return False

    def _recover(self, msg: Message, exc: BaseException, state: Attempt) -> bool:
        spec = self.spec
        ctx = Context(spec.name, spec.group_id, state.count, state.first_failure, self.bus,
                      spec.kafka)  # fmt: skip
        try:
            spec.recoverer.recover(msg, exc, ctx)
        except ListenerStopped:
            # Stopped on purpose (Stop, circuit breaker): after a restart the record gets a
            # fresh set of attempts, for the code that presumably fixed the cause.
            self._attempts.pop((msg.tp, msg.offset), None)
            if self._persist_attempts and self._committed.get(msg.tp) == msg.offset:
                self.client.commit({msg.tp: (msg.offset, None)})
            raise
        except Exception as rexc:
            # The record stays uncommitted; recovery is tried again after a back-off (D3).
            state.exhausted = True
            state.recoveries += 1
            state.last_error = exc
            delay = spec.retry.recovery.delay_forever(state.recoveries)
            log.error(
                "%s: recovering %s[%d]@%d failed, retrying in %.1fs: %s",
                spec.name, msg.topic, msg.partition, msg.offset, delay, rexc,
            )  # fmt: skip
            if self.bus:
                self.bus.emit(RecoveryRetrying(spec.name, msg.tp, msg.offset, str(rexc)))
            self._attempts[(msg.tp, msg.offset)] = state
            if self._persist_attempts:
                self._commit_attempt(msg.tp, msg.offset, state)
            self._wait(msg, delay)
            return False
        self.tracker.finish(msg.tp, msg.offset)
        self._attempts.pop((msg.tp, msg.offset), None)
        self._recovered.setdefault(msg.tp, set()).add(msg.offset)
        return True

    def _wait(self, msg: Message, delay: float) -> None:
        self._waiting[msg.tp] = self.clock() + delay
        if self.bus:
            self.bus.emit(BackingOff(self.spec.name, msg.tp, msg.offset, msg.attempt, delay))

    def _park(self, tp: TopicPartition, held: list[Message]) -> None:
        """Pause `tp` until its due time and rewind it: to the failed record (seek mode), or
        past the records kept in memory (in-place mode)."""
        self.client.pause([tp])
        if self.spec.retry.mode == "in_place":
            self._held[tp] = held
            offset = held[-1].offset + 1
        else:
            offset = held[0].offset
        self.client.seek(tp, offset)
        if self.bus:
            self.bus.emit(Paused(self.spec.name, (tp,), self._waiting[tp]))
            self.bus.emit(Seeked(self.spec.name, tp, offset))

    def _resume_due(self, now: float) -> None:
        due = [tp for tp, t in self._waiting.items() if t <= now]
        if not due:
            return
        for tp in due:
            del self._waiting[tp]
        self.client.resume(due)
        if self.bus:
            self.bus.emit(Resumed(self.spec.name, tuple(due)))
        held = [m for tp in due for m in self._held.pop(tp, ())]
        if held:
            self._dispatch(held)
            self._flush("poll")  # held records are an earlier poll's: commit them first (C2)

    # -- batch listeners ------------------------------------------------------------------

    def _dispatch_batch(self, msgs: list[Message]) -> None:
        if self._stopping or not msgs:
            return
        self.tracker.deliver_many(msgs)
        if self._manual_ack:
            for m in msgs:
                m._ack = self._acks.append
        attempts, recovered = self._attempts, self._recovered
        if not attempts and not recovered and all(m.error is None for m in msgs):
            self._call_batch(msgs)  # the common case
            return
        # Undecodable records never reach a batch handler (F4), nor do records whose tries
        # are over and whose recovery failed before (D3): only the recoverer is tried again;
        # nor records recovered before a rewind (they are final). Retried records carry on
        # their attempt count (R3).
        direct: set[tuple[TopicPartition, int]] = set()
        parked_at: dict[TopicPartition, int] = {}
        now = self.wall_clock()
        for m in msgs:
            if m.tp in parked_at:
                continue
            state = attempts.get((m.tp, m.offset)) if attempts else None
            if (
                m.error is not None
                or (state is not None and state.used_up)
                or (recovered and m.offset in recovered.get(m.tp, ()))
            ):
                direct.add((m.tp, m.offset))
            elif state is not None:
                wait, state.due = state.due - now, 0.0
                if wait > 0:  # a previous owner's back-off is not over: wait out the rest
                    m.attempt = state.count
                    self._wait(m, wait)
                    parked_at[m.tp] = m.offset
                    self._park(m.tp, [x for x in msgs if x.tp == m.tp and x.offset >= m.offset])
                    continue
                m.attempt = state.count + 1
                if self._persist_attempts:
                    self._commit_attempt(m.tp, m.offset, replace(state, count=m.attempt))
        for m in msgs:
            if (m.tp, m.offset) in direct and m.offset < parked_at.get(m.tp, _END):
                if not self._process(m):
                    parked_at[m.tp] = m.offset
                    self._park(m.tp, [x for x in msgs if x.tp == m.tp and x.offset >= m.offset])
        self._call_batch(
            [
                m
                for m in msgs
                if (m.tp, m.offset) not in direct and m.offset < parked_at.get(m.tp, _END)
            ]
        )

    def _call_batch(self, msgs: list[Message]) -> None:
        while msgs:
            if self.bus:
                self.bus.emit(
                    Delivered(self.spec.name, tuple((m.tp, m.offset, m.attempt) for m in msgs))
                )
            try:
                self._call(msgs)
            except ListenerStopped:
                raise
            except Defer as defer:
                for m in msgs[: defer.index]:
                    self._succeeded(m)
                waiting = msgs[defer.index]
                self._wait(waiting, defer.delay)
                self._park(waiting.tp, [m for m in msgs[defer.index :] if m.tp == waiting.tp])
                msgs = [m for m in msgs[defer.index + 1 :] if m.tp != waiting.tp]
                continue
            except BatchFailed as signal:
                index = _index_of(signal, msgs)
                if index is None:  # names no record of this batch: as if it named none
                    log.warning("%s: %s names no record of the batch of %d; retrying it whole",
                                self.spec.name, signal, len(msgs))  # fmt: skip
                    self._on_batch_failure(msgs, signal)
                    return
                for m in msgs[:index]:
                    self._succeeded(m)
                failed = msgs[index]
                rest = msgs[index + 1 :]
                cause = signal.__cause__ or signal
                state = self._attempts.get((failed.tp, failed.offset))
                if not self._on_failure(failed, cause, state):
                    self._park(failed.tp, [failed, *(m for m in rest if m.tp == failed.tp)])
                    rest = [m for m in rest if m.tp != failed.tp]
                msgs = rest  # other partitions go on without a rewind (C6)
                continue
            except Exception as exc:
                self._on_batch_failure(msgs, exc)
                return
            if self._manual_ack or self._attempts or self.bus:
                for m in msgs:
                    self._succeeded(m)
            else:  # nothing to record per record: finish the batch in one step per partition
                self.tracker.finish_many(msgs)
                self.handled += len(msgs)
            return

    def _on_batch_failure(self, msgs: list[Message], exc: Exception) -> None:
        """A failure that names no record: retry the whole batch in place, then isolate."""
        attempt = max(m.attempt for m in msgs)
        first = msgs[0]
        retry = self.spec.retry
        now = self.wall_clock()
        fatal = retry.classifier.is_fatal(exc)
        if self.bus:
            self.bus.emit(
                Failed(self.spec.name, first.tp, first.offset, attempt, type(exc).__name__,
                       str(exc), fatal)
            )  # fmt: skip
        # Whole-batch retries count attempts on the held records; elapsed-time limits apply
        # to single records only.
        delay = None if fatal else retry.next_delay(exc, attempt, 0.0)
        if delay is not None:
            due = self.clock() + delay
            by_tp: dict[TopicPartition, list[Message]] = {}
            for m in msgs:
                m.attempt = attempt + 1
                by_tp.setdefault(m.tp, []).append(m)
            if self.bus:
                self.bus.emit(BackingOff(self.spec.name, first.tp, first.offset, attempt, delay))
            for tp, held in by_tp.items():
                self._waiting[tp] = due
                self.client.pause([tp])
                self._held[tp] = held
                self.client.seek(tp, held[-1].offset + 1)
                if self.bus:
                    self.bus.emit(Paused(self.spec.name, (tp,), due))
            return
        # Retries are over: find the failing records by handing them over one at a time.
        blocked: dict[TopicPartition, list[Message]] = {}
        for m in msgs:
            if m.tp in blocked:
                blocked[m.tp].append(m)
                continue
            m.attempt = attempt
            try:
                if self.bus:
                    self.bus.emit(Delivered(self.spec.name, ((m.tp, m.offset, m.attempt),)))
                self._call([m])
            except ListenerStopped:
                raise
            except Defer as defer:  # "not yet" is no failure: wait, counting no attempt
                self._wait(m, defer.delay)
                blocked[m.tp] = [m]
                continue
            except Exception as single:
                state = Attempt(attempt, now)
                if self.bus:
                    self.bus.emit(
                        Failed(self.spec.name, m.tp, m.offset, attempt, type(single).__name__,
                               str(single), True)
                    )  # fmt: skip
                if not self._recover(m, single, state):
                    blocked[m.tp] = [m]
                continue
            self._succeeded(m)
        for tp, held in blocked.items():
            self._park(tp, held)

    # -- commits ----------------------------------------------------------------------

    def _commit_attempt(self, tp: TopicPartition, offset: int, state: Attempt) -> None:
        """Commit the position `offset` with the record's attempt state (R3).

        Only when every record before it is final (manual acks, batch order): otherwise the
        state waits in memory and ``_flush`` attaches it once the position reaches `offset`.
        """
        pos = self.tracker.of(tp).position()
        if pos is not None and pos < offset:
            return
        try:
            self.client.commit({tp: (offset, state.to_metadata(offset))})
        except CommitFailed as exc:
            log.warning(
                "%s: attempt state of %s@%d not committed: %s", self.spec.name, tp, offset, exc
            )
            return
        self._committed[tp] = offset
        if self.bus:
            self.bus.emit(
                Committed(self.spec.name, ((tp, offset),), ((tp, state.to_metadata(offset)),),
                          "attempt")
            )  # fmt: skip

    def _flush(
        self, reason: str, *, sync: bool = False, only: Sequence[TopicPartition] = ()
    ) -> None:
        positions = self.tracker.positions()
        background = self.spec.commit.background_interval is not None and not sync
        # Stored positions are committed by the client later; a sync flush (revoke, close)
        # compares with what was really committed.
        committed = self._stored if background else self._committed
        changed = {
            tp: pos
            for tp, pos in positions.items()
            if committed.get(tp) != pos and (not only or tp in only)
        }
        if not changed:
            return
        payload: dict[TopicPartition, tuple[int, str | None]] = {}
        for tp, pos in changed.items():
            state = self._attempts.get((tp, pos)) if self._attempts else None
            payload[tp] = (
                pos,
                state.to_metadata(pos) if state and self._persist_attempts else None,
            )
        if background:
            self.client.store(payload)
        else:
            try:
                self.client.commit(payload)
            except CommitFailed as exc:
                # Positions stay uncommitted here and are tried again at the next flush (or
                # in the revocation callback); if ownership was lost, the new owner re-reads
                # them: at-least-once, never a skip.
                log.warning("%s: %s (will retry)", self.spec.name, exc)
                return
        committed.update(changed)
        if self._recovered:  # committed past: a rewind can no longer bring them back
            for tp, pos in changed.items():
                if tp in self._recovered:
                    self._recovered[tp] = {o for o in self._recovered[tp] if o >= pos}
        if self.bus:
            meta = tuple((tp, m) for tp, (_, m) in payload.items() if m)
            self.bus.emit(Committed(self.spec.name, tuple(changed.items()), meta, reason))

    def _drain_acks(self) -> None:
        acks = self._acks
        while acks:
            m = acks.popleft()
            self.tracker.finish(m.tp, m.offset)

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
        if not partitions or not self._persist_attempts:
            return
        # Continue the attempt count of a record a previous owner was retrying (R3).
        try:
            committed = self.client.committed(partitions)
        except Exception as exc:  # raising here would stop the listener; counts restart
            log.warning("%s: reading attempt state failed, counts restart: %s", self.spec.name, exc)
            return
        for tp, (pos, meta) in committed.items():
            state = Attempt.from_metadata(meta, pos)
            if state is not None:
                self._attempts[(tp, pos)] = state
                self._committed[tp] = pos
                log.info(
                    "%s: %s@%d continues at attempt %d (from commit metadata)",
                    self.spec.name, tp, pos, state.count + 1,
                )  # fmt: skip

    def _on_revoke(self, partitions: list[TopicPartition]) -> None:
        """Commit final outcomes of the revoked partitions before giving them up (C5)."""
        if self._pool is not None:
            self._pool.revoke(partitions, self.spec.drain_timeout)
        self._drain_acks()
        try:
            self._flush("revoke", sync=True, only=partitions)
        finally:
            self._forget(partitions)
        if self.bus:
            self.bus.emit(Revoked(self.spec.name, tuple(partitions)))

    def _on_lost(self, partitions: list[TopicPartition]) -> None:
        if self._pool is not None:
            self._pool.revoke(partitions, 0.0)  # lost: nothing of them may be committed
        self._forget(partitions)
        if self.bus:
            self.bus.emit(Lost(self.spec.name, tuple(partitions)))

    def _forget(self, partitions: Iterable[TopicPartition]) -> None:
        self._gone.update(partitions)
        for tp in partitions:
            self._recovered.pop(tp, None)
            self.tracker.drop(tp)
            self._committed.pop(tp, None)
            self._stored.pop(tp, None)
            self._waiting.pop(tp, None)
            self._held.pop(tp, None)
            for key in [k for k in self._attempts if k[0] == tp]:
                del self._attempts[key]

    # -- records ----------------------------------------------------------------------

    def _message(self, raw: RawRecord) -> Message:
        key = raw.key()
        value = raw.value()
        ts_type, ts = raw.timestamp()
        headers = raw.headers()
        topic = raw.topic()
        partition = raw.partition()
        tps = self._tps.get(topic)  # one TopicPartition per partition, not per record
        tp = tps.get(partition) if tps is not None else None
        if tp is None:
            tp = self._tps.setdefault(topic, {}).setdefault(
                partition, TopicPartition(topic, partition)
            )
        msg = Message(
            topic, partition, raw.offset(), key, value,
            raw_key=key, raw_value=value, headers=tuple(headers) if headers else (),
            timestamp=ts, timestamp_type=ts_type, tp=tp,
        )  # fmt: skip
        if self._decode:
            spec = self.spec
            try:
                if spec.key_deserializer is not None:
                    msg.key = spec.key_deserializer(key)
                if spec.value_deserializer is not None:
                    msg.value = spec.value_deserializer(value)
            except Exception as exc:
                err = DeserializationError(
                    f"{msg.topic}[{msg.partition}]@{msg.offset} could not be decoded: "
                    f"{type(exc).__name__}: {exc}"
                )
                err.__cause__ = exc
                msg.error = err
        return msg

    def _sync_handler(self, handler: Callable[[Any], Any]) -> Callable[[Any], Any]:
        if not inspect.iscoroutinefunction(handler):
            return handler
        aloop = asyncio.new_event_loop()
        self._aloop = aloop

        def call(arg: Any) -> Any:
            return aloop.run_until_complete(handler(arg))

        return call


_END = 1 << 62  # past any offset


def _index_of(signal: BatchFailed, msgs: list[Message]) -> int | None:
    if signal.index is not None:
        return signal.index if 0 <= signal.index < len(msgs) else None
    return next((i for i, m in enumerate(msgs) if m is signal.message), None)


class _LastError(Exception):
    """Stands for the failure a previous owner of the partition saw, when only its type
    name and message are known (from the commit metadata)."""

    def __init__(self, state: Attempt) -> None:
        name, _, text = (state.error_text or "").partition(": ")
        self.fqcn = name or None  # the dead-letter headers name the original type
        super().__init__(
            f"{text or 'unknown error'} (retries exhausted after {state.count} attempts, "
            "the last one by a previous owner of the partition)"
        )


def _poll_counts(records: Sequence[RawRecord]) -> tuple[tuple[TopicPartition, int, int], ...]:
    counts: dict[TopicPartition, list[int]] = {}
    for r in records:
        tp = TopicPartition(r.topic(), r.partition())
        if tp in counts:
            counts[tp][1] += 1
        else:
            counts[tp] = [r.offset(), 1]
    return tuple((tp, first, n) for tp, (first, n) in counts.items())
