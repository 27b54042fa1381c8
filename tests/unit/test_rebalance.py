"""Rebalances: what a revocation commits and forgets, what a new owner continues, and what
survives a re-assignment (in-memory client, fake clock, no sleeping).

Revocation commits are synchronous and clean: metadata None when no attempt state is kept,
no window, since the hand-over is orderly."""

from __future__ import annotations

from typing import Any

import pytest

from redrive import BackOff, Commit, Message, Retry
from redrive.message import TopicPartition
from redrive.recover.base import Call
from redrive.retry.attempts import decode
from redrive.testing import FakeClient, FakeClock, loop_for

T0 = TopicPartition("t", 0)


# -- revocation ----------------------------------------------------------------------------


def test_revocation_commits_finished_work_cleanly_and_forgets_the_partition() -> None:
    client = FakeClient(clock=FakeClock())
    client.add("t", ["m1", "m2"])
    loop = loop_for(lambda m: None, client, commit=Commit.interval(60))
    loop.start()
    loop.run_once()
    client.committed_log.clear()
    client.revoke([T0])
    # synchronous, before giving it up, and clean: no window, the hand-over is orderly
    assert client.committed_log == [{T0: (2, None)}]
    assert loop.committer.tracker.positions() == {}


def test_records_of_a_partition_revoked_during_the_poll_are_dropped() -> None:
    class MidPollRevoke(FakeClient):
        revoke_now = False

        def poll(self, max_records: int, timeout: float) -> list[Any]:
            first = super().poll(1, timeout)
            if self.revoke_now:
                self.revoke_now = False
                self.revoke([T0])  # served by a later consume() of the same poll
                return first
            return first + super().poll(max_records - 1, 0)

    clock = FakeClock()
    client = MidPollRevoke(clock=clock)
    client.add("t", ["a", "b", "c", "d"])
    seen: list[int] = []
    loop = loop_for(lambda m: seen.append(m.offset), client, clock=clock, max_poll_records=2)
    loop.start()
    loop.run_once()
    client.revoke_now = True
    loop.run_once()
    assert seen == [0, 1]
    # the revocation commits (clean, no window) and nothing is committed after it
    assert client.committed_log[-1] == {T0: (2, None)}
    assert T0 not in loop.committer.tracker.partitions


# -- assignment ----------------------------------------------------------------------------


def test_a_new_owner_continues_the_attempt_count_from_the_commit_metadata() -> None:
    clock = FakeClock()
    client = FakeClient(clock=clock)
    client.add("t", ["poison"])
    client.commits[T0] = (0, '{"redrive":1,"offset":0,"attempts":2,"first_failure":1.0}')
    seen: list[int] = []

    def handle(msg: Message) -> None:
        seen.append(msg.attempt)
        raise RuntimeError("always")

    recovered: list[int] = []
    loop = loop_for(handle, client, clock=clock,
                    retry=Retry(backoff=BackOff.fixed(0.0, max_attempts=3)),
                    recoverer=Call(lambda m, e: recovered.append(m.offset)))  # fmt: skip
    loop.start()
    loop.run_until_idle()
    assert seen == [3] and recovered == [0]


@pytest.mark.parametrize(
    "metadata",
    ['{"redrive":1,"offset":0}', '{"redrive":1,"offset":0,"attempts":"x","first_failure":1}'],
)
def test_damaged_attempt_metadata_starts_the_count_over(metadata: str) -> None:
    assert decode(metadata, 0) is None


def test_a_partition_paused_for_a_back_off_flows_again_when_assigned_again() -> None:
    clock = FakeClock()
    client = FakeClient(clock=clock)
    client.add("t", ["fails-once", "next"])
    seen: list[str] = []

    def handle(msg: Message) -> None:
        seen.append(msg.value.decode())
        if seen.count("fails-once") == 1:
            raise RuntimeError("once")

    loop = loop_for(handle, client, clock=clock,
                    retry=Retry(backoff=BackOff.fixed(60.0, max_attempts=3)))  # fmt: skip
    loop.start()
    loop.run_once()
    assert T0 in client.paused
    client.revoke([T0])  # like librdkafka, the fake keeps the pause flag
    client.assign([T0])
    loop.run_once()  # the new owner waits out the rest of the back-off (R3)...
    clock.advance(61)
    loop.run_once()  # ...then the partition flows again instead of staying paused
    loop.run_once()
    assert seen == ["fails-once", "fails-once", "next"]


# -- a stop during a rebalance -------------------------------------------------------------


class RefusesCommits(FakeClient):
    """Counts the polls of a stop (its commits refused with ``refuse_commits``, as Kafka
    does while the group rebalances); `revoke_on_poll`: the rebalance that the next poll
    completes takes the partitions away."""

    revoke_on_poll = False
    polls_while_closing = 0

    def poll(self, max_records: int, timeout: float) -> list[Any]:
        if self.closing:
            self.polls_while_closing += 1
            if self.revoke_on_poll:
                self.revoke_on_poll = False
                self.revoke(list(self.assigned))
            return []
        return super().poll(max_records, timeout)

    closing = False


def stopped_during_a_rebalance(client: RefusesCommits) -> None:
    client.add("t", ["m1", "m2"])
    loop = loop_for(lambda m: None, client, commit=Commit.interval(60))
    loop.start()
    loop.run_once()  # m1, m2 handled; stored, not committed yet
    client.refuse_commits, client.closing = 1, True
    loop.close()


def test_a_stop_whose_last_commit_is_refused_commits_once_the_rebalance_is_done() -> None:
    """C4 under churn: nothing handled is redelivered after a graceful stop."""
    client = RefusesCommits(clock=FakeClock())
    stopped_during_a_rebalance(client)
    assert client.polls_while_closing == 1  # it took part in the rebalance, handing nothing
    assert client.committed_position("t", 0) == 2


def test_a_partition_given_up_in_that_rebalance_is_committed_by_its_revocation() -> None:
    client = RefusesCommits(clock=FakeClock())
    client.revoke_on_poll = True
    stopped_during_a_rebalance(client)
    assert client.polls_while_closing == 1 and client.committed_position("t", 0) == 2
    assert client.committed_log[-1] == {T0: (2, None)}  # the revocation's, clean


def test_a_stop_does_not_wait_on_a_commit_refused_long_before_it() -> None:
    """A graceful hand-over left m1 waiting out a back-off; the new owner's window commit
    was refused, its per-poll commits landed. Its stop sends the clean hand-over again (it
    matched what was read at assignment) instead of polling for a rebalance for 10 s."""
    from redrive.retry.attempts import Attempt, encode

    clock = FakeClock()
    client = RefusesCommits(clock=clock)
    client.add("t", ["m1", "m2"])
    waiting = Attempt(failures=1, limit=3, first_failure=clock(), due=clock() + 60,
                      error_text="ConnectionError: down")  # fmt: skip
    client.commit({T0: (0, encode({0: waiting}, 0))})  # the clean hand-over
    client.refuse_commits = 1  # the new owner's window commit
    loop = loop_for(lambda m: None, client, clock=clock,
                    retry=Retry.seek(BackOff.fixed(60.0, max_attempts=3)))  # fmt: skip
    loop.start()
    loop.run_once()
    client.closing = True
    loop.close()
    assert client.polls_while_closing == 0
    pos, meta = client.commits[T0]
    state = decode(meta, pos)
    assert pos == 0 and state is not None and state.window == 0  # clean again: no death
