"""How a seek retry waits, as the client sees it: pause and rewind at the failure, resume
when due, then the same seek again (librdkafka fetches a partition sought while paused up to
1 s late when it has a backlog: a 50 ms back-off took 1.02 s, 0.1 s with the second seek)."""

from __future__ import annotations

from collections.abc import Sequence

from redrive import BackOff, Message, Retry
from redrive.message import TopicPartition
from redrive.testing import FakeClient, FakeClock, loop_for

T0 = TopicPartition("t", 0)


class Calls(FakeClient):
    def __init__(self, clock: FakeClock) -> None:
        super().__init__(clock=clock)
        self.calls: list[tuple[str, int | None]] = []

    def seek(self, tp: TopicPartition, offset: int) -> None:
        self.calls.append(("seek", offset))
        super().seek(tp, offset)

    def pause(self, partitions: Sequence[TopicPartition]) -> None:
        self.calls += [("pause", None) for _ in partitions]
        super().pause(partitions)

    def resume(self, partitions: Sequence[TopicPartition]) -> None:
        self.calls += [("resume", None) for _ in partitions]
        super().resume(partitions)


def test_a_seek_retry_seeks_again_after_the_resume() -> None:
    clock = FakeClock()
    client = Calls(clock)
    client.add("t", ["a", "b", "c"])
    seen: list[tuple[bytes, int]] = []

    def handle(msg: Message) -> None:
        seen.append((msg.value, msg.attempt))
        if msg.value == b"b" and msg.attempt == 1:
            raise ConnectionError("down once")

    loop = loop_for(handle, client, retry=Retry.seek(BackOff.fixed(0.05, max_attempts=3)),
                    clock=clock, max_poll_records=10)  # fmt: skip
    loop.start()
    loop.run_until_idle()
    assert seen == [(b"a", 1), (b"b", 1), (b"b", 2), (b"c", 1)]
    after = client.calls[client.calls.index(("pause", None)) :]  # (an assignment resumes too)
    assert after == [("pause", None), ("seek", 1), ("resume", None), ("seek", 1)]
    assert client.committed_position("t", 0) == 3
