"""What is committed when: commit policies, manual acknowledgements, records held in memory.

With seek retries (the default) every commit carries the owner's window in its metadata
(``{"redrive":2,"w":N}``: "an owner may be handling N records from here"), and the first
records of a partition are preceded by a commit of their start position with that window.
"""

from __future__ import annotations

from typing import Any

from redrive import BackOff, Commit, Message, Retry
from redrive.consumer.loop import Loop
from redrive.consumer.spec import ListenerSpec
from redrive.message import TopicPartition
from redrive.recover.base import Skip
from redrive.testing import FakeClient, FakeClock, FakeRecord, loop_for

T0 = TopicPartition("t", 0)
T1 = TopicPartition("t", 1)
W3 = '{"redrive":2,"w":3}'  # commit metadata: "an owner may be handling 3 records from here"


def values(msgs: list[Message]) -> list[str]:
    return [m.value.decode() for m in msgs]


# -- commit policies -----------------------------------------------------------------------


def test_per_poll_commits_the_window_first_then_the_position_after_each_poll() -> None:
    client = FakeClient(clock=FakeClock())
    client.add("t", ["m1", "m2", "m3", "m4"])
    seen: list[Message] = []
    loop = loop_for(seen.append, client)
    loop.start()
    loop.run_once()
    assert values(seen) == ["m1", "m2", "m3"]
    # the owner's window is committed before its first record, then position 3 after m3
    assert client.committed_log == [{T0: (0, W3)}, {T0: (3, W3)}]
    loop.run_once()
    assert client.committed_position("t", 0) == 4


# -- manual acknowledgements ---------------------------------------------------------------


def test_manual_acks_never_commit_past_an_unacknowledged_record_even_with_attempt_state() -> None:
    clock = FakeClock()
    client = FakeClient(clock=clock)
    client.add("t", ["m0", "m1"])
    held: list[Message] = []
    m1_failures = 0

    def handle(msg: Message) -> None:
        nonlocal m1_failures
        if msg.value == b"m0":
            held.append(msg)  # acknowledged later
            return
        m1_failures += 1
        raise RuntimeError("m1 fails")

    loop = loop_for(handle, client, clock=clock, commit=Commit.manual(),
                    retry=Retry(backoff=BackOff.fixed(5.0, max_attempts=None)))  # fmt: skip
    loop.start()
    loop.run_once()  # m0 waits for its ack; m1 fails and backs off
    for _ in range(3):  # m1 fails again after each back-off, committing its attempt state
        clock.advance(5)
        loop.run_once()
    assert m1_failures == 4
    assert all(pos <= 0 for c in client.committed_log for (pos, _) in c.values())
    held[0].ack()
    loop.run_once()
    assert client.committed_position("t", 0) == 1
    assert client.commits[T0][1] is not None  # the attempt state arrives with position 1


# -- records held in memory (in-place retries) ---------------------------------------------

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


def test_a_batch_retried_in_place_is_committed_before_the_next_polls_records_are_handled() -> None:
    """C2, found by the lab's batch scenario: it showed only when the next records arrived
    within the same step as the held batch succeeded."""
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


def test_the_default_poll_commit_does_not_wait_but_revocation_and_hand_offs_do() -> None:
    from redrive.recover.base import Call

    client = FakeClient(clock=FakeClock())
    client.add("t", ["ok", "bad", "ok"], partition=0)
    client.add("t", ["ok", "ok"], partition=1)

    def handle(msg: Message) -> None:
        if msg.value == b"bad":
            raise ValueError("bad record")  # fatal: recovered at once

    loop = loop_for(handle, client, max_poll_records=10, recoverer=Call(lambda m, e: None))
    loop.start()
    loop.run_once()
    past_bad = [w for c, w in zip(client.committed_log, client.waited, strict=True)
                if c.get(T0, (0, None))[0] == 3]  # fmt: skip
    assert past_bad == [True]  # the commit past the dead-letter hand-off waits
    polls = [w for c, w in zip(client.committed_log, client.waited, strict=True) if T1 in c]
    assert polls[-1] is False  # partition 1's poll commit was only asked for
    client.revoke([T0, T1])
    assert client.waited[-1] is True  # revocation waits (C5)


def test_per_poll_sync_waits_for_every_poll_commit() -> None:
    client = FakeClient(clock=FakeClock())
    client.add("t", ["m1", "m2"])
    loop = loop_for(lambda m: None, client, commit=Commit.per_poll_sync())
    loop.start()
    loop.run_until_idle()
    assert client.waited and all(client.waited)
    assert client.committed_position("t", 0) == 2


def test_an_asynchronous_commit_that_failed_is_asked_for_again_with_no_new_records() -> None:
    """A poll's commit can fail after it was sent (a rebalance changed the generation); when
    the partition has no new records there is no next commit to cover it, so the next poll
    asks for the same position again."""
    client = FakeClient(clock=FakeClock())
    client.add("t", ["a", "b", "c"])
    loop = loop_for(lambda m: None, client, max_poll_records=10)
    loop.start()
    client.fail_async_commits = True
    loop.run_once()  # handles a, b, c; its commit fails
    assert client.committed_position("t", 0) != 3
    client.fail_async_commits = False
    loop.run_once()  # no records: the failed commit is asked for again
    assert client.committed_position("t", 0) == 3
