"""The one failure engine: what happens to a record before it is handed over and after it
failed, whichever dispatcher hands it over.

- ``gate(msg)`` before a record is handed over: undecodable records go to the recoverer
  (F4); a retry-topic record that is not due yet waits (R4); a record whose failures or
  interruptions are used up is recovered; a record with a back-off left waits out the rest;
  otherwise its attempt number is set and, when its state is kept in the commit metadata,
  its *running* mark is committed first (so a crash in it counts as an interruption).
- ``failed(msg, exc)`` after the handler raised: classify (F5), choose the delay (R1), keep
  the state (R3) and wait, or recover.
- ``recover``: the recoverer (a dead-letter write confirmed by the broker, D3) brings the
  record to a final outcome, or the record stays unfinished and recovery is tried again.

The answer is a ``Hold`` (wait ``delay`` seconds, or the record is final) or ``None`` (hand
it over now); *how* to wait (pause the partition, or park a lane) is the dispatcher's. Runs
on the loop thread only.
"""

from __future__ import annotations

import logging
import time
from collections.abc import Callable
from dataclasses import dataclass

from redrive.consumer.client import Positions
from redrive.consumer.committer import Committer
from redrive.consumer.spec import ListenerSpec
from redrive.errors import (
    HandlingInterrupted,
    ListenerStopped,
    ProducerFenced,
)
from redrive.events import (
    BackingOff,
    Due,
    EventBus,
    Failed,
    NotDue,
    Recovered,
    RecoveryRetrying,
    Succeeded,
)
from redrive.headers import attempts_of, due_ms
from redrive.message import Message, TopicPartition
from redrive.publish import Publisher
from redrive.recover.base import Context, Recoverer
from redrive.retry.attempts import Attempt, PartitionState, decode

log = logging.getLogger("redrive.loop")


@dataclass(frozen=True, slots=True)
class Hold:
    """Do not hand the record over now: wait ``delay`` seconds, or (``None``) it is final."""

    delay: float | None


FINAL = Hold(None)


class FailureHandler:
    def __init__(
        self,
        spec: ListenerSpec,
        committer: Committer,
        bus: EventBus,
        wall_clock: Callable[[], float] = time.time,
    ) -> None:
        self.spec = spec
        self.retry = spec.retry
        self.committer = committer
        self.bus = bus
        self.wall_clock = wall_clock
        self.persist = committer.persist
        self.manual = spec.commit.manual_ack
        self.due_times = spec.due_times
        self.careful: dict[TopicPartition, int] = {}  # a dead owner's window: end offset
        self.handled = 0  # records handled successfully (read by the circuit breaker)

    # -- assignment ---------------------------------------------------------------------

    def assigned(self, committed: Positions) -> None:
        """Continue what a previous owner left in the commit metadata (R3)."""
        for tp, (pos, meta) in committed.items():
            self.committer.assigned(tp, pos, meta)
            state = decode(meta, pos) if self.persist else None
            if state is None:
                continue
            for offset, st in state.records.items():
                if st.running:  # it started and never reported: an interruption
                    st.running = False
                    st.interruptions += 1
                    st.first_failure = st.first_failure or self.wall_clock()
                log.info("%s: %s@%d continues at attempt %d (from commit metadata)",
                         self.spec.name, tp, offset, st.attempt)  # fmt: skip
            self.committer.states[tp] = state.records
            if state.done:
                self.committer.skip(tp, state.done)
            self._suspect(tp, pos, state)

    def _suspect(self, tp: TopicPartition, pos: int, state: PartitionState) -> None:
        """A previous owner that died in its window (``state.window``) is suspected at
        first: the window's end is kept in our commits and we consume at full speed. An
        owner that died in a range already suspect makes us walk the rest of it, one
        marked record at a time (``careful``), so a record that kills its owners is found."""
        suspect = state.suspect if state.suspect > pos else 0
        if state.window and suspect:
            self.careful[tp] = suspect
            log.info("%s: %s: a second owner died before offset %d: one record at a time "
                     "from %d", self.spec.name, tp, suspect, pos)  # fmt: skip
        if state.window:
            suspect = max(suspect, pos + state.window)
        if suspect:
            self.committer.suspect[tp] = suspect

    def forget(self, partitions: list[TopicPartition]) -> None:
        for tp in partitions:
            self.careful.pop(tp, None)

    # -- before a record is handed over ---------------------------------------------------

    def plain(self) -> bool:
        """True when ``gate`` has nothing to do for a decodable record (the common case)."""
        c = self.committer
        return not (c.states or c.has_final or c.stale_marks or self.careful or self.due_times
                    or self.manual)  # fmt: skip

    def gate(self, msg: Message) -> Hold | None:
        committer = self.committer
        if committer.is_final(msg):  # recovered before a rewind
            committer.finish(msg)
            return FINAL
        if msg.error is not None:  # undecodable: never reaches the handler (F4)
            return self.failed(msg, msg.error)
        if self.due_times and (hold := self._not_due(msg)) is not None:
            return hold
        state = committer.state(msg)
        if state is None and self.careful:
            state = self._careful(msg)
        if state is not None:
            if state.used_up:  # also: a failed recovery is tried again
                return self.recover(msg, state.last_error or _LastError(state), state)
            if state.interruptions >= self.retry.max_interruptions:
                why = HandlingInterrupted(state.interruptions, state.error_text)
                return self.recover(msg, why, state)
            # attempts before this record reached this topic (a retry hop's header) + its own
            earlier = (attempts_of(msg) or 1) - 1 if self.due_times else 0
            wait = state.due - self.wall_clock() if state.due else 0.0
            if wait > 0:  # a previous owner's back-off is not over: wait out the rest
                msg.attempt = earlier + state.attempt
                return self.wait(msg, wait)
            state.due = 0.0
            msg.attempt = earlier + state.attempt
            if self.persist:  # mark it running: a crash in it is an interruption (this commit
                state.running = True  # also drops the mark of the record before it)
                committer.commit_now(msg.tp, "attempt")
        if committer.stale_marks:  # a crash from here on must not be blamed on them
            committer.clear_marks()
        if self.manual:
            msg._ack = committer.ack
        return None

    def _not_due(self, msg: Message) -> Hold | None:
        msg.attempt = attempts_of(msg) or msg.attempt
        due = due_ms(msg)
        wait = 0.0 if due is None else due / 1000 - self.wall_clock()
        if wait <= 0:
            if due is not None and self.bus:
                self.bus.emit(Due(self.spec.name, msg.tp, msg.offset, -wait))
            return None
        if self.bus:
            self.bus.emit(NotDue(self.spec.name, msg.tp, msg.offset, due / 1000 if due else 0))
        return Hold(wait)

    def _careful(self, msg: Message) -> Attempt | None:
        end = self.careful.get(msg.tp)
        if end is None:
            return None
        if msg.offset >= end:
            del self.careful[msg.tp]
            return None
        state = Attempt()
        self.committer.keep(msg, state)
        return state

    # -- outcomes -----------------------------------------------------------------------

    def succeeded(self, msg: Message) -> None:
        self.handled += 1
        if not self.manual:  # under manual acks, msg.ack() finishes it
            self.committer.finish(msg)
        if self.committer.states and (state := self.committer.state(msg)) is not None:
            self.committer.drop_state(msg)
            if state.running and self.persist:  # its running mark is cleared before the
                self.committer.stale_marks.add(msg.tp)  # next record is handed over
        if self.bus.records:
            self.bus.emit(Succeeded(self.spec.name, msg.tp, msg.offset))

    def wait(self, msg: Message, delay: float) -> Hold:
        """Hand it over again in `delay` seconds, counting no attempt (``Defer``)."""
        state = self.committer.state(msg)
        if state is not None and state.running:
            state.running = False
            if self.persist:  # a crash while it waits must not count as an interruption
                self.committer.commit_now(msg.tp, "attempt")
        if self.bus:
            self.bus.emit(BackingOff(self.spec.name, msg.tp, msg.offset, msg.attempt, delay))
        return Hold(delay)

    def failed(self, msg: Message, exc: BaseException) -> Hold:
        now = self.wall_clock()
        state = self.committer.state(msg) or Attempt()
        state.running = False
        state.failures += 1
        state.first_failure = state.first_failure or now
        retry = self.retry
        fatal = retry.classifier.is_fatal(exc)
        if self.bus:
            self.bus.emit(Failed(self.spec.name, msg.tp, msg.offset, msg.attempt,
                                 type(exc).__name__, str(exc), fatal))  # fmt: skip
        delay = None if fatal else retry.next_delay(exc, state.failures, now - state.first_failure)
        if delay is None:
            return self.recover(msg, exc, state)
        log.info("%s: %s[%d]@%d failed (attempt %d: %s: %s); retry in %.2fs",
                 self.spec.name, msg.topic, msg.partition, msg.offset, msg.attempt,
                 type(exc).__name__, exc, delay)  # fmt: skip
        state.note(exc, retry.backoff_for(exc).max_attempts)
        state.last_error = exc
        state.due = now + delay
        self.committer.keep(msg, state)
        if self.persist:
            self.committer.commit_now(msg.tp, "attempt")
        if self.bus:
            self.bus.emit(BackingOff(self.spec.name, msg.tp, msg.offset, msg.attempt, delay))
        return Hold(delay)

    def recover(self, msg: Message, exc: BaseException, state: Attempt | None = None) -> Hold:
        """Bring the record to a final outcome with the recoverer, or wait and try again."""
        spec = self.spec
        state = state or Attempt(failures=1, first_failure=self.wall_clock())
        if self.committer.defer_recovery():
            return self._defer(msg, exc, state)
        try:
            first = state.first_failure or self.wall_clock()
            attempts = state.failures + state.interruptions
            run_recoverer(spec, self.bus, msg, exc, attempts, first, state.interruptions,
                          self.committer.publisher)  # fmt: skip
        except ProducerFenced:  # the listener stops; the record keeps its attempts
            raise
        except ListenerStopped:
            # Stopped on purpose (Stop, circuit breaker): after a restart the record gets a
            # fresh set of attempts, for the code that presumably fixed the cause.
            self.committer.drop_state(msg)
            if self.persist:
                self.committer.commit_now(msg.tp, "attempt")
            raise
        except Exception as rexc:
            # The record stays uncommitted; recovery is tried again after a back-off (D3).
            state.exhausted = True
            state.running = False
            state.recoveries += 1
            state.last_error = exc
            state.note(exc, state.limit)  # a new owner recovers it with this error
            delay = spec.retry.recovery.delay_forever(state.recoveries)
            log.error("%s: recovering %s[%d]@%d failed, retrying in %.1fs: %s",
                      spec.name, msg.topic, msg.partition, msg.offset, delay, rexc)  # fmt: skip
            if self.bus:
                self.bus.emit(RecoveryRetrying(spec.name, msg.tp, msg.offset, str(rexc)))
            self.committer.keep(msg, state)
            if self.persist:
                self.committer.commit_now(msg.tp, "attempt")
            return self.wait(msg, delay)
        self.committer.recovered(msg)
        if self.bus:
            self.bus.emit(Recovered(spec.name, msg.tp, msg.offset, type(spec.recoverer).__name__))
        return FINAL

    def _defer(self, msg: Message, exc: BaseException, state: Attempt) -> Hold:
        """Recover at the record's next delivery: its transaction is being aborted, and the
        recovery must commit in the same transaction as the records before it."""
        state.exhausted = True
        state.running = False
        state.last_error = exc
        state.note(exc, state.limit)
        self.committer.keep(msg, state)
        if self.persist:
            self.committer.commit_now(msg.tp, "attempt")
        return self.wait(msg, 0.0)

    def batch_failed(self, msgs: list[Message], exc: BaseException, attempt: int) -> float | None:
        """A batch failed without naming a record: the delay before the whole batch is
        tried again (attempts counted in memory), or None: isolate its records."""
        first = msgs[0]
        fatal = self.retry.classifier.is_fatal(exc)
        if self.bus:
            self.bus.emit(Failed(self.spec.name, first.tp, first.offset, attempt,
                                 type(exc).__name__, str(exc), fatal))  # fmt: skip
        # elapsed-time limits apply to single records only
        delay = None if fatal else self.retry.next_delay(exc, attempt, 0.0)
        if delay is not None and self.bus:
            self.bus.emit(BackingOff(self.spec.name, first.tp, first.offset, attempt, delay))
        return delay

    def give_up(self, msg: Message, exc: BaseException, attempts: int) -> Hold:
        """Recover a record found failing after its batch's retries were used up (F3)."""
        if self.bus:
            self.bus.emit(Failed(self.spec.name, msg.tp, msg.offset, attempts,
                                 type(exc).__name__, str(exc), True))  # fmt: skip
        return self.recover(msg, exc, Attempt(failures=attempts, first_failure=self.wall_clock()))


def run_recoverer(spec: ListenerSpec, bus: EventBus, msg: Message, exc: BaseException,
                  attempts: int, first_failure: float, interruptions: int = 0,
                  publisher: Publisher | None = None,
                  recoverer: Recoverer | None = None) -> None:  # fmt: skip
    """Hand `msg` to the listener's recoverer (or `recoverer`); returns when it reached a
    final outcome (a dead letter the broker confirmed, D3), raises when it did not.
    ``publisher``: the open transaction the recoverer writes through
    (``Commit.transaction()``)."""
    ctx = Context(spec.name, spec.group_id, attempts, first_failure, bus, spec.kafka,
                  interruptions, publisher)  # fmt: skip
    (recoverer or spec.recoverer).recover(msg, exc, ctx)


class _LastError(Exception):
    """Stands for the failure a previous owner of the partition saw, when only its type
    name and message are known (from the commit metadata)."""

    def __init__(self, state: Attempt) -> None:
        name, _, text = (state.error_text or "").partition(": ")
        self.fqcn = name or None  # the dead-letter headers name the original type
        super().__init__(
            f"{text or 'unknown error'} (retries exhausted after {state.failures} failures, "
            "the last one seen by a previous owner of the partition)"
        )
