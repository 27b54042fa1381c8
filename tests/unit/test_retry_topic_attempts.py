"""A retry-topic record's attempt number comes from its ``retry_topic-attempts`` header, also
when it is handled in a dead owner's window (found by `redrive chaos`, issue 14)."""

from __future__ import annotations

from redrive import Message
from redrive import headers as h
from redrive.message import TopicPartition
from redrive.testing import FakeClient, FakeClock, FakeRecord, loop_for

R0 = TopicPartition("t-retry", 0)


def retry_record(offset: int, attempt: int, due_ms: int) -> FakeRecord:
    hop = h.retry_headers(next_attempt=attempt, original_timestamp=0, due_ms=due_ms)
    return FakeRecord("t-retry", 0, offset, None, f"r{offset}".encode(), list(hop))


def test_attempt_from_the_header_in_and_out_of_a_dead_owners_window() -> None:
    clock = FakeClock()
    client = FakeClient(clock=clock)
    due = int(clock() * 1000) - 1  # due already
    client.logs[R0] = [retry_record(0, 2, due), retry_record(1, 3, due)]
    # the previous owner died while it may have been handling 2 records from position 0
    client.commits[R0] = (0, '{"redrive":2,"w":2}')
    seen: list[tuple[bytes, int]] = []

    def handle(msg: Message) -> None:
        seen.append((msg.value, msg.attempt))

    loop = loop_for(handle, client, topics=("t-retry",), due_times=True, clock=clock)
    loop.start()
    loop.run_until_idle()
    assert seen == [(b"r0", 2), (b"r1", 3)]
