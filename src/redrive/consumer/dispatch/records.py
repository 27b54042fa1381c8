"""Record listeners, one record at a time on the loop thread, in poll order.

One record's path: ``gate`` (may it be handed over now?), the handler, then ``succeeded``
or ``failed``; a record that must wait parks its partition, and the rest of the poll of that
partition is dropped (seek retries fetch it again) or held (in-place retries).

While nothing needs a check per record (no attempt state, nothing parked or recovered, no
commit per record), a poll takes the fast path: its records are delivered and finished in
one step per partition, and only the handler (and the events, if anyone listens) runs per
record.
The first record that fails (or cannot be decoded) sends the rest of the poll down the
path above.
"""

from __future__ import annotations

from collections.abc import Sequence

from redrive.consumer.dispatch.base import OnLoopThread, Parts, park
from redrive.consumer.failures import Hold
from redrive.consumer.offsets import Runs
from redrive.consumer.pauser import Parked
from redrive.errors import ListenerStopped
from redrive.events import Delivered, Succeeded
from redrive.message import Message, TopicPartition


class Records(OnLoopThread):
    def __init__(self, parts: Parts) -> None:
        super().__init__(parts)
        self._open: Sequence[Message] | None = None  # a fast poll being handed over
        self._at = 0  # its record being handled
        self._settled = 0  # its records finished already (at a revocation)

    def dispatch(self, msgs: Sequence[Message], runs: Runs | None = None) -> None:
        parts = self.parts
        if parts.pauser.parked or parts.spec.commit.after_record or not parts.engine.plain():
            self._one_at_a_time(msgs)
        else:
            self._fast(msgs, runs)

    def _fast(self, msgs: Sequence[Message], runs: Runs | None) -> None:
        parts = self.parts
        runs = parts.committer.deliver_many(msgs, runs)
        call, stopping, bus = self._call, parts.stopping, parts.bus
        self._open, self._settled = msgs, 0
        i = 0
        try:
            if not bus.records:
                for msg in msgs:
                    if msg.error is not None or stopping():
                        break
                    self._at = i
                    call(msg)
                    i += 1
            else:  # the same, with the events the per-record path emits
                emit, name = bus.emit, parts.spec.name
                for msg in msgs:
                    if msg.error is not None or stopping():
                        break
                    self._at = i
                    emit(Delivered(name, ((msg.tp, msg.offset, msg.attempt),), (msg,)))
                    call(msg)
                    i += 1
                    emit(Succeeded(name, msg.tp, msg.offset))
        except BaseException as exc:
            self._open = None
            self._settle(msgs, i)
            if isinstance(exc, ListenerStopped) or not isinstance(exc, Exception):
                raise
            failure: Exception | None = exc
        else:
            failure = None
        if failure is not None:
            # Outside the except clause: the rest of the poll must not run while `failure`
            # is being handled, or a later record's error would carry it as its
            # __context__ (and a fatal one would make a retryable error look fatal, F5).
            failed = msgs[i]
            hold = self.outcome(failed, failure)
            waiting = {} if hold.delay is None else {failed.tp: (hold.delay, [failed])}
            self._one_at_a_time(msgs[i + 1 :], delivered=True, waiting=waiting)
            return
        self._open = None
        if i == len(msgs):
            self._settle(msgs, i, runs)
            return
        self._settle(msgs, i)
        if not stopping():  # an undecodable record: the gate takes it
            self._one_at_a_time(msgs[i:], delivered=True)

    def _settle(self, msgs: Sequence[Message], n: int, runs: Runs | None = None) -> None:
        """The first `n` records of `msgs` were handled (once per poll, or at a failure);
        `runs`: their offsets per partition when that is all of them. Records finished at a
        revocation during the poll are not finished twice."""
        start, self._settled = self._settled, 0
        if n > start:
            whole = start == 0 and n == len(msgs)
            self.parts.committer.finish_many(msgs if whole else msgs[start:n],
                                             runs if whole else None)  # fmt: skip
            self.parts.engine.handled += n - start

    def revoke(self, partitions: Sequence[TopicPartition], timeout: float) -> None:
        """A rebalance let in by a handler (a client call inside it): the records of the
        fast poll handled so far are final now, as on the per-record path, so the commit
        at the revocation includes them."""
        msgs = self._open
        if msgs is not None and self._at > self._settled:
            self.parts.committer.finish_many(msgs[self._settled : self._at])
            self.parts.engine.handled += self._at - self._settled
            self._settled = self._at

    def _one_at_a_time(
        self,
        msgs: Sequence[Message],
        *,
        delivered: bool = False,
        waiting: dict[TopicPartition, tuple[float, list[Message]]] | None = None,
    ) -> None:
        """`delivered`: the records are delivered already; `waiting`: a record of the poll
        failed already (the rest of a fast poll)."""
        parts = self.parts
        engine, committer, pauser = parts.engine, parts.committer, parts.pauser
        after_record = parts.spec.commit.after_record
        parked, stopping = pauser.parked, parts.stopping
        # nothing to check before a record: the gate can be skipped
        plain = waiting is None and engine.plain()
        waiting = {} if waiting is None else waiting
        for msg in msgs:
            tp = msg.tp
            if tp in waiting:
                waiting[tp][1].append(msg)
                continue
            if tp in parked or stopping():
                continue  # stale fetch of a paused partition, or stopping: not delivered
            if not delivered:
                committer.deliver(msg)
            hold: Hold | None = None if plain and msg.error is None else engine.gate(msg)
            if hold is None:
                hold = self.hand_over(msg, msg)
            if hold is not None:
                plain = False
                if hold.delay is not None:
                    waiting[tp] = (hold.delay, [msg])
            if after_record:
                committer.flush("record")
        for tp, (delay, held) in waiting.items():
            park(parts, tp, delay, held)

    def resumed(self, parked: Parked) -> None:
        if parked.held:
            self.dispatch(parked.held)
