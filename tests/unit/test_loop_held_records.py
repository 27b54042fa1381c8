"""Records retried in place (held in memory) are committed when they are done, before the
next poll's records are handled (C2). Found by the lab's batch scenario, where it showed
only when the next records arrived within the same step."""

from __future__ import annotations

from typing import Any

from redrive.consumer.commit import Commit
from redrive.consumer.loop import Loop
from redrive.consumer.spec import ListenerSpec
from redrive.message import Message, TopicPartition
from redrive.recover.base import Skip
from redrive.retry.backoff import BackOff
from redrive.retry.policy import Retry
from redrive.testing import FakeClient, FakeRecord

TP = TopicPartition("orders", 0)


def raw(offset: int) -> FakeRecord:
    return FakeRecord(TP.topic, TP.partition, offset, None, f"m{offset + 1}".encode())


class ScriptedClient(FakeClient):
    """The in-memory client, except that each poll returns the next scripted list."""

    def __init__(self, polls: list[list[FakeRecord]]) -> None:
        super().__init__()
        self.polls = polls
        self.logs[TP] = []  # the partition exists; its records come from the script

    def poll(self, max_records: int, timeout: float) -> list[Any]:
        if not self.assigned:
            self.assign([TP])
        return list(self.polls.pop(0)) if self.polls else []

    @property
    def commits_made(self) -> list[dict[TopicPartition, int]]:
        return [{tp: pos for tp, (pos, _) in c.items()} for c in self.committed_log]


def test_batch_retried_in_place_is_committed_before_the_next_poll_is_handled() -> None:
    client = ScriptedClient([[raw(0), raw(1), raw(2)], [raw(3)]])
    calls: list[tuple[list[int], list[dict[TopicPartition, int]]]] = []

    def handle(batch: list[Message]) -> None:
        calls.append(([m.offset for m in batch], client.commits_made))
        if len(calls) == 1:
            raise RuntimeError("the whole batch fails once")

    spec = ListenerSpec(
        name="batch", topics=(TP.topic,), group_id="g", handler=handle, batch=True,
        max_poll_records=3, key_deserializer=None, value_deserializer=None,
        commit=Commit.per_poll(), retry=Retry(backoff=BackOff.fixed(0.0, max_attempts=None)),
        recoverer=Skip(),
    )  # fmt: skip
    loop = Loop(spec, client, clock=lambda: 100.0)
    loop.start()
    loop.run_once()  # m1..m3 fail and are held
    loop.run_once()  # the held batch succeeds; the next poll brings m4
    assert [offsets for offsets, _ in calls] == [[0, 1, 2], [0, 1, 2], [3]]
    commits_before_m4 = calls[2][1]
    assert commits_before_m4[-1] == {TP: 3}  # m1..m3 committed before m4 was handled
    assert client.commits_made[-1] == {TP: 4}
