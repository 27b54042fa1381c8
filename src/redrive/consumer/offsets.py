"""Per-partition contiguous completion: the position that is safe to commit (C1).

Records of a partition are delivered in offset order and may finish in any order (manual
acknowledgement, concurrency). The safe position is the first delivered record that has not
reached a final outcome, or one past the last delivered record when all have.
"""

from __future__ import annotations

from collections import deque
from collections.abc import Iterable

from redrive.message import Message, TopicPartition

Runs = dict[TopicPartition, list[int]]
"""The offsets of some records, partition by partition, ascending."""


class PartitionOffsets:
    __slots__ = ("pending", "finished", "high")

    def __init__(self) -> None:
        self.pending: deque[int] = deque()  # delivered, not final, ascending
        self.finished: set[int] = set()  # final but behind an unfinished one
        self.high = -1  # last delivered offset

    def deliver(self, offset: int) -> None:
        if offset <= self.high:  # a redelivery after a seek: forget what lies beyond
            self.reset_to(offset)
        self.pending.append(offset)
        self.high = offset

    def deliver_run(self, offsets: list[int]) -> None:
        """Deliver ascending offsets of one poll (Kafka returns a partition's records in
        offset order); the same as ``deliver`` for each, in one step when none is a
        redelivery."""
        if offsets[0] <= self.high:  # a redelivery after a seek: forget what lies beyond
            self.reset_to(offsets[0])
        self.pending.extend(offsets)
        self.high = offsets[-1]

    def finish_run(self, offsets: list[int]) -> None:
        """The same as ``finish`` for each of `offsets` (ascending, delivered, not yet
        final); in one step when they are exactly what is pending."""
        pending = self.pending
        if len(pending) == len(offsets) and pending[0] == offsets[0] and pending[-1] == offsets[-1]:
            pending.clear()
            self.finished.clear()
        else:
            for o in offsets:
                self.finish(o)

    def reset_to(self, offset: int) -> None:
        self.pending = deque(o for o in self.pending if o < offset)
        self.finished = {o for o in self.finished if o < offset}
        self.high = offset - 1

    def finish(self, offset: int) -> None:
        pending = self.pending
        if pending and pending[0] == offset:
            pending.popleft()
            finished = self.finished
            while pending and pending[0] in finished:
                finished.discard(pending.popleft())
        elif offset in pending:
            self.finished.add(offset)

    def position(self) -> int | None:
        """Next offset to read that is safe to commit, or None when nothing was delivered."""
        if self.pending:
            return self.pending[0]
        return self.high + 1 if self.high >= 0 else None


class OffsetTracker:
    """The safe-to-commit position of every partition a loop owns."""

    def __init__(self) -> None:
        self.partitions: dict[TopicPartition, PartitionOffsets] = {}

    def of(self, tp: TopicPartition) -> PartitionOffsets:
        p = self.partitions.get(tp)
        if p is None:
            p = self.partitions[tp] = PartitionOffsets()
        return p

    def deliver(self, tp: TopicPartition, offset: int) -> None:
        self.of(tp).deliver(offset)

    def finish(self, tp: TopicPartition, offset: int) -> None:
        p = self.partitions.get(tp)
        if p is not None:
            p.finish(offset)

    def deliver_many(self, msgs: Iterable[Message], runs: Runs | None = None) -> Runs:
        """``deliver`` every record of one poll, partition by partition (hot path); the
        offsets of each partition (`runs`, if known already), for ``finish_many``."""
        if runs is None:
            runs = runs_of(msgs)
        for tp, offsets in runs.items():
            self.of(tp).deliver_run(offsets)
        return runs

    def finish_many(self, msgs: Iterable[Message], runs: Runs | None = None) -> None:
        """``finish`` every record of a handled batch, partition by partition (hot path);
        `runs`: what ``deliver_many`` of the same records returned."""
        partitions = self.partitions
        for tp, offsets in (runs_of(msgs) if runs is None else runs).items():
            p = partitions.get(tp)
            if p is not None:
                p.finish_run(offsets)

    def positions(self) -> dict[TopicPartition, int]:
        out = {}
        for tp, p in self.partitions.items():
            pos = p.position()
            if pos is not None:
                out[tp] = pos
        return out

    def drop(self, tp: TopicPartition) -> None:
        self.partitions.pop(tp, None)


def runs_of(msgs: Iterable[Message]) -> Runs:
    """The offsets of `msgs`, partition by partition, in their order."""
    runs: Runs = {}
    last: TopicPartition | None = None
    append = None
    for m in msgs:
        tp = m.tp
        if tp is not last:  # a poll holds runs of one partition's records
            last = tp
            run = runs.get(tp)
            if run is None:
                run = runs[tp] = []
            append = run.append
        append(m.offset)  # type: ignore[misc]
    return runs
