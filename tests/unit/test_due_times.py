"""Waiting without sleeping (R2, R4): retry-topic records are not handed over before their
due time, and a partition that waits hands nothing over until then; on the in-memory
client and a manual clock."""

from __future__ import annotations

from redrive import BackOff, Message, Retry
from redrive import headers as h
from redrive.consumer.client import RawRecord
from redrive.events import Delivered, EventBus, NotDue, Recorder
from redrive.message import TopicPartition
from redrive.testing import FakeClient, FakeClock, FakeRecord, loop_for

T0 = TopicPartition("t-retry", 0)


def retry_record(client: FakeClient, offset: int, due: float, attempt: int) -> None:
    headers = [(h.RETRY_BACKOFF_TIMESTAMP, h.big_int(int(due * 1000))),
               (h.RETRY_ATTEMPTS, h.big_int(attempt))]  # fmt: skip
    client.logs.setdefault(T0, []).append(
        FakeRecord("t-retry", 0, offset, None, f"r{offset}".encode(), headers)
    )


def test_a_record_not_due_is_not_handed_over_until_its_due_time() -> None:
    clock = FakeClock()
    client = FakeClient(clock=clock)
    retry_record(client, 0, clock() + 5, attempt=2)
    retry_record(client, 1, clock() + 6, attempt=3)
    seen: list[tuple[int, int, float]] = []
    rec, bus = Recorder(), EventBus()
    bus.subscribe(rec)
    loop = loop_for(lambda m: seen.append((m.offset, m.attempt, clock())), client,
                    topics=("t-retry",), clock=clock, bus=bus, due_times=True)  # fmt: skip
    loop.start()
    loop.run_once()
    assert seen == [] and not rec.of(Delivered)  # the handler never ran, nothing drawn
    assert [(e.offset, e.due) for e in rec.of(NotDue)] == [(0, 1005.0)]
    assert T0 in client.paused and client.committed_position("t-retry", 0) in (None, 0)
    loop.run_until_idle()
    assert [(o, a) for o, a, _ in seen] == [(0, 2), (1, 3)]  # attempts from the headers
    assert all(t >= due for (_, _, t), due in zip(seen, (1005.0, 1006.0), strict=True))
    assert client.committed_position("t-retry", 0) == 2


def test_a_waiting_partition_hands_over_nothing_from_a_stale_fetch() -> None:
    """librdkafka may still return records it had fetched before the pause and the seek."""

    class StaleFetch(FakeClient):
        late: list[RawRecord] = []

        def seek(self, tp: TopicPartition, offset: int) -> None:
            pos = self.position.get(tp, 0)
            if pos != offset:  # fetched before the seek moved the position back
                self.late = list(self.logs[tp][pos : pos + 1])  # already in the fetch queue
            super().seek(tp, offset)

        def poll(self, max_records: int, timeout: float) -> list[RawRecord]:
            if self.late:
                late, self.late = self.late, []
                return late
            return super().poll(max_records, timeout)

    clock = FakeClock()
    client = StaleFetch(clock=clock)
    client.add("t", ["a", "b", "c"])
    seen: list[tuple[str, int]] = []

    def handle(msg: Message) -> None:
        seen.append((msg.value.decode(), msg.attempt))
        if msg.value == b"a" and msg.attempt == 1:
            raise ConnectionError("once")

    loop = loop_for(handle, client, clock=clock, max_poll_records=1,
                    retry=Retry(backoff=BackOff.fixed(5.0, max_attempts=3)))  # fmt: skip
    loop.start()
    loop.run_once()  # a fails: the partition waits 5 s
    loop.run_once()  # the stale fetch returns "b": not handed over before "a" (C1)
    loop.run_once()
    assert seen == [("a", 1)]
    assert client.committed_position("t", 0) in (None, 0)
    clock.advance(5)
    loop.run_until_idle()
    assert seen == [("a", 1), ("a", 2), ("b", 1), ("c", 1)]
