"""Safe positions, attempt metadata and acknowledgements of one loop's partitions.

Every dispatcher reports here what it handed over (``deliver``) and what reached a final
outcome (``finish``, ``recovered``, ``ack``); the ``OffsetTracker`` turns that into the safe
position of each partition (C1), and ``flush`` commits it when the commit policy says so.
The attempt state of the partition's unfinished records (``retry/attempts.py``) rides along
in the commit metadata; ``commit_now`` writes it at once, for what must survive a crash.
"""

from __future__ import annotations

import logging
import time
from collections import deque
from collections.abc import Iterable, Sequence

from redrive.consumer.client import Client
from redrive.consumer.commit import Commit
from redrive.consumer.offsets import OffsetTracker, Runs
from redrive.errors import CommitFailed
from redrive.events import CommitRetrying, Committed, EventBus
from redrive.message import Message, TopicPartition
from redrive.publish import Publisher
from redrive.retry.attempts import Attempt, encode

log = logging.getLogger("redrive.commit")

Payload = dict[TopicPartition, tuple[int, str | None]]


class Committer:
    """``persist``: keep attempt state and the owner's window in the commit metadata
    (seek retries); ``window``: how many records past its position an owner may be
    handling (``max_poll_records``, or the in-flight bound under concurrency)."""

    def __init__(
        self,
        name: str,
        client: Client,
        policy: Commit,
        bus: EventBus,
        *,
        persist: bool,
        window: int,
    ) -> None:
        self.name = name
        self.client = client
        self.policy = policy
        self.bus = bus
        self.persist = persist
        self.window = window if persist else 0
        self.tracker = OffsetTracker()
        self.states: dict[TopicPartition, dict[int, Attempt]] = {}
        self.suspect: dict[TopicPartition, int] = {}  # end of a range an owner died in
        self._committed: dict[TopicPartition, tuple[int, str | None]] = {}
        self._stored: dict[TopicPartition, tuple[int, str | None]] = {}  # or asked for
        self._final: dict[TopicPartition, set[int]] = {}  # recovered past the position
        self._acks: deque[Message] = deque()
        self._live: set[TopicPartition] = set()  # window committed in this assignment
        self.stale_marks: set[TopicPartition] = set()  # running marks of finished records
        self.refused: set[TopicPartition] = set()  # their last synchronous commit was refused
        self.refusals = 0  # synchronous commits refused so far
        self._background = policy.background_interval is not None
        self._ask = not policy.wait  # poll commits are asked for, not waited on
        self._handoffs: set[TopicPartition] = set()  # recovered since the last commit
        self._no_states = {False: encode({}, self.window), True: encode({}, 0)}  # by `clean`
        self._took = 0.0  # seconds the last commit call took (for its Committed event)

    carries_done: bool = True
    """Synchronous commits list the offsets final past the position ("k"): a new owner
    skips them (see ``retry/attempts.py``)."""

    publisher: Publisher | None = None
    """Where recoverers write instead of their own producer: a transaction's (see
    ``transactions.py``); None here."""

    def defer_recovery(self) -> bool:
        """True when a recovery now would be lost (a doomed transaction): it waits."""
        return False

    def close(self) -> None:
        """Release what the committer holds (a producer of outputs); nothing here."""

    # -- attempt state ----------------------------------------------------------------

    def state(self, msg: Message) -> Attempt | None:
        states = self.states.get(msg.tp)
        return states.get(msg.offset) if states else None

    def keep(self, msg: Message, state: Attempt) -> None:
        self.states.setdefault(msg.tp, {})[msg.offset] = state

    def drop_state(self, msg: Message) -> None:
        states = self.states.get(msg.tp)
        if states:
            states.pop(msg.offset, None)

    # -- outcomes -----------------------------------------------------------------------

    def deliver(self, msg: Message) -> None:
        self.tracker.deliver(msg.tp, msg.offset)
        if self.window and msg.tp not in self._live:
            self._go_live()

    def deliver_many(self, msgs: Iterable[Message], runs: Runs | None = None) -> Runs:
        """``deliver`` each of `msgs` in one step per partition; their offsets per partition
        (`runs` if known already; give them to ``finish_many`` of the same records)."""
        runs = self.tracker.deliver_many(msgs, runs)
        if self.window and len(self._live) != len(self.tracker.partitions):
            self._go_live()
        return runs

    def _go_live(self) -> None:
        """Before the first records of a partition are handled in this assignment, commit
        its position with our window: should we die in it, the next owner knows."""
        for tp in [tp for tp in self.tracker.partitions if tp not in self._live]:
            self._live.add(tp)
            pos = self.tracker.of(tp).position()
            meta = self._metadata(tp, pos, False, full=True) if pos is not None else None
            if pos is not None and self._committed.get(tp) != (pos, meta):
                self.commit_now(tp, "window")

    def finish(self, msg: Message) -> None:
        self.tracker.finish(msg.tp, msg.offset)

    def finish_many(self, msgs: Iterable[Message], runs: Runs | None = None) -> None:
        self.tracker.finish_many(msgs, runs)

    def recovered(self, msg: Message) -> None:
        """Final without being handled: remembered, so a rewind cannot recover it again."""
        self.tracker.finish(msg.tp, msg.offset)
        self._final.setdefault(msg.tp, set()).add(msg.offset)
        self.drop_state(msg)
        if self._ask:  # a dead-letter hand-off: its commit waits, so a crash cannot repeat it
            self._handoffs.add(msg.tp)

    @property
    def has_final(self) -> bool:
        return bool(self._final)

    def is_final(self, msg: Message) -> bool:
        final = self._final.get(msg.tp)
        return final is not None and msg.offset in final

    def ack(self, msg: Message) -> None:
        """``msg.ack()`` under ``Commit.manual()``: safe from any thread."""
        self._acks.append(msg)

    def drain_acks(self) -> None:
        acks = self._acks
        while acks:
            self.finish(acks.popleft())

    # -- commits ------------------------------------------------------------------------

    def _metadata(
        self, tp: TopicPartition, pos: int, clean: bool, full: bool = False
    ) -> str | None:
        """`clean`: a hand-over (no window); `full`: a synchronous commit, which also lists
        the offsets final past `pos` (the asynchronous per-poll ones do not: that costs a
        sort per poll, and after a crash those records are handled again, at least once)."""
        if not self.persist:
            return None
        states = self.states.get(tp)
        suspect = self.suspect.get(tp, 0)
        if suspect <= pos:
            suspect = 0
        done: set[int] | frozenset[int] = frozenset()
        if full and self.carries_done:
            offsets = self.tracker.partitions.get(tp)
            done = {*(offsets.finished if offsets is not None else ()), *self._final.get(tp, ())}
        if not states and not suspect and not done:  # the common case
            return self._no_states[clean]
        records = {o: s for o, s in states.items() if o >= pos} if states else {}
        return encode(records, 0 if clean else self.window, suspect, done, pos)

    def clear_marks(self) -> None:
        """Commit the partitions whose committed running marks belong to finished records."""
        for tp in list(self.stale_marks):
            self.commit_now(tp, "attempt")

    def commit_now(self, tp: TopicPartition, reason: str = "attempt") -> None:
        """Commit `tp`'s safe position with its attempt state, synchronously (R3)."""
        pos = self.tracker.of(tp).position()
        if pos is None:
            return
        self._commit({tp: (pos, self._metadata(tp, pos, False, full=True))}, reason, sync=True)

    def flush(
        self, reason: str, *, sync: bool = False, only: Sequence[TopicPartition] = ()
    ) -> None:
        """Commit (or store, under ``Commit.interval``) every safe position that changed.

        ``sync`` (revocation, stop) commits synchronously and marks the hand-over clean:
        no window, so a new owner does not take the previous one for dead.
        """
        self.drain_acks()
        if self._ask:  # an asynchronous commit that failed: ask for it again
            for tp in self.client.failed_commits():
                self._stored.pop(tp, None)
        payload: Payload = {}
        # Commits that are not waited on compare with what was asked; a waiting one (revoke,
        # stop) with what is known to be committed, so it is sent again if in doubt.
        waits = sync or not (self._background or self._ask)
        done = self._committed if waits else self._stored
        for tp, pos in self.tracker.positions().items():
            if only and tp not in only:
                continue
            entry = (pos, self._metadata(tp, pos, sync, full=waits))
            if done.get(tp) != entry:
                payload[tp] = entry
        if payload and not waits and self._handoffs & payload.keys():
            handed = {tp: e for tp, e in payload.items() if tp in self._handoffs}
            self._commit(handed, reason, sync=True)
            payload = {tp: e for tp, e in payload.items() if tp not in handed}
        if payload:
            self._commit(payload, reason, sync=waits)

    def _commit(self, payload: Payload, reason: str, *, sync: bool) -> None:
        began = time.perf_counter() if self.bus else 0.0
        if not sync:
            if self._background:
                self.client.store(payload)
            else:
                self.client.commit_async(payload)
            self._stored.update(payload)
        else:
            try:
                self.client.commit(payload)
            except CommitFailed as exc:
                # Positions stay uncommitted here and are tried again at the next flush (or
                # in the revocation callback); if ownership was lost, the new owner re-reads
                # them: at-least-once, never a skip.
                if reason == "revoke":  # the partitions go now: there is no next flush
                    log.warning("%s: %s; the partitions given up may see records handled again "
                                "by their next owner (at-least-once)", self.name, exc)  # fmt: skip
                else:
                    log.warning("%s: %s (will retry)", self.name, exc)
                self.refused.update(payload)
                self.refusals += 1
                for tp in payload:  # unknown now: a synchronous flush sends it again
                    self._committed.pop(tp, None)
                if self.bus:
                    positions = tuple((tp, pos) for tp, (pos, _) in payload.items())
                    self.bus.emit(CommitRetrying(self.name, positions, str(exc), reason))
                return
            self.refused.difference_update(payload)
            self._committed.update(payload)
            self._handoffs.difference_update(payload)
        self._took = time.perf_counter() - began if self.bus else 0.0
        self._after_commit(payload, reason)

    def _after_commit(self, payload: Payload, reason: str) -> None:
        """Bookkeeping once `payload` was committed (or asked for)."""
        for tp, (pos, _) in payload.items():
            self.stale_marks.discard(tp)
            if self.suspect.get(tp, pos + 1) <= pos:  # passed: no longer suspect
                del self.suspect[tp]
            final = self._final.get(tp)
            if final:  # committed past: a rewind can no longer bring them back
                final.difference_update([o for o in final if o < pos])
                if not final:
                    del self._final[tp]
        if self.bus:
            meta = tuple((tp, m) for tp, (_, m) in payload.items() if m)
            positions = tuple((tp, pos) for tp, (pos, _) in payload.items())
            took, self._took = self._took, 0.0  # the commit call's, when it was timed
            self.bus.emit(Committed(self.name, positions, meta, reason, took))

    # -- assignment ---------------------------------------------------------------------

    def assigned(self, tp: TopicPartition, pos: int, metadata: str | None) -> None:
        """What the group had committed for a partition we now own."""
        self._committed[tp] = (pos, metadata)

    def skip(self, tp: TopicPartition, offsets: Iterable[int]) -> None:
        """Records a previous owner brought to a final outcome past its committed position
        (concurrency): never handed over again, finished when they come."""
        self._final.setdefault(tp, set()).update(offsets)

    def forget(self, partitions: Iterable[TopicPartition]) -> None:
        for tp in partitions:
            self.tracker.drop(tp)
            self.states.pop(tp, None)
            self.suspect.pop(tp, None)
            self._committed.pop(tp, None)
            self._stored.pop(tp, None)
            self._final.pop(tp, None)
            self._live.discard(tp)
            self.stale_marks.discard(tp)
            self.refused.discard(tp)
            self._handoffs.discard(tp)
