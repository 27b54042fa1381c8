"""Parked records and their due times: how the loop waits without sleeping (R2, R4).

A record that must wait (a back-off, a retry-topic record not due yet, a failed dead-letter
write) is *parked* until its due time. The sequential dispatchers park its partition: it is
paused (so the loop keeps polling and the consumer is never evicted) and rewound, to the
record (seek retries) or past records kept in memory (in-place retries). The concurrent
dispatcher parks a lane: the partition keeps flowing for the other lanes. When the loop's
clock passes the due time, ``due()`` hands the parked entries back to their dispatcher.
"""

from __future__ import annotations

from collections.abc import Callable, Hashable, Iterable
from dataclasses import dataclass

from redrive.consumer.client import Client
from redrive.events import EventBus, Paused, Resumed, Seeked
from redrive.message import Message, TopicPartition


@dataclass(slots=True)
class Parked:
    key: Hashable  # a TopicPartition, or a lane of the concurrent dispatcher
    due: float  # loop clock
    tp: TopicPartition  # the partition of the parked record(s)
    paused: bool  # the partition is paused for it
    held: list[Message]  # records kept in memory, handed over again when due
    seek: int | None = None  # the offset the paused partition was rewound to


class Pauser:
    def __init__(
        self, name: str, client: Client, bus: EventBus, clock: Callable[[], float]
    ) -> None:
        self.name = name
        self.client = client
        self.bus = bus
        self.clock = clock
        self.parked: dict[Hashable, Parked] = {}

    def __contains__(self, key: Hashable) -> bool:
        return key in self.parked

    def park(
        self,
        key: Hashable,
        delay: float,
        tp: TopicPartition,
        *,
        pause: bool = True,
        seek: int | None = None,
        held: Iterable[Message] = (),
    ) -> None:
        """Park `key` for `delay` seconds; with `pause`, pause partition `tp` and rewind it
        to `seek` (the next record to fetch when it resumes)."""
        due = self.clock() + delay
        self.parked[key] = Parked(key, due, tp, pause, list(held), seek if pause else None)
        if not pause:
            return
        self.client.pause([tp])
        if seek is not None:
            self.client.seek(tp, seek)
        if self.bus:
            self.bus.emit(Paused(self.name, (tp,), due, delay))
            if seek is not None:
                self.bus.emit(Seeked(self.name, tp, seek))

    def rewind(self, tp: TopicPartition, offset: int) -> None:
        """Fetch `tp` again from `offset`: a parked partition resumes there when due; any
        other is parked until the next step, so the rest of the current poll of it is not
        handed over."""
        if tp not in self.parked:
            self.park(tp, 0.0, tp, seek=offset)
            return
        self.client.seek(tp, offset)
        parked = self.parked[tp]
        if parked.paused:
            parked.seek = offset
        if self.bus:
            self.bus.emit(Seeked(self.name, tp, offset))

    def timeout(self, longest: float) -> float:
        """How long the next poll may wait without passing a due time."""
        if not self.parked:
            return longest
        soonest = min(p.due for p in self.parked.values())
        return min(longest, max(0.0, soonest - self.clock()))

    def due(self) -> list[Parked]:
        """Entries whose time has come (removed); their partitions are resumed."""
        if not self.parked:
            return []
        now = self.clock()
        ready = [p for p in self.parked.values() if p.due <= now]
        for p in ready:
            del self.parked[p.key]
        tps = [p.tp for p in ready if p.paused]
        if tps:
            self.client.resume(tps)
            # librdkafka fetches a partition that was sought while paused only after its
            # broker thread wakes up, up to 1 s later when the partition has a backlog (a
            # 50 ms back-off took 1.02 s); the same seek again after the resume fetches at once
            # (~0.1 s). The first seek, at the pause, drops what was fetched past the record.
            for p in ready:
                if p.paused and p.seek is not None:
                    self.client.seek(p.tp, p.seek)
            if self.bus:
                self.bus.emit(Resumed(self.name, tuple(tps)))
        return ready

    def forget(self, partitions: Iterable[TopicPartition]) -> None:
        gone = set(partitions)
        for key in [k for k, p in self.parked.items() if p.tp in gone]:
            del self.parked[key]
