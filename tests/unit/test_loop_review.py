"""Regressions found by review: each test failed before its fix (fake client, fake clock)."""

from __future__ import annotations

import time
from typing import Any

import pytest

from redrive import App, BackOff, BatchFailed, Commit, ConfigError, Message, Retry
from redrive.consumer.loop import Loop
from redrive.consumer.spec import ListenerSpec
from redrive.errors import ListenerStopped
from redrive.message import TopicPartition
from redrive.recover.base import Call
from redrive.recover.breaker import CircuitBreaker
from redrive.testing import FakeClient, FakeClock, loop_for

TP = TopicPartition("t", 0)


def _undecodable(data: bytes | None) -> bytes | None:
    if data == b"bad":
        raise ValueError("undecodable")
    return data


@pytest.mark.parametrize("mode", ["seek", "in_place"])
def test_batch_named_failure_counts_attempts_and_recovers_after_the_last(mode: str) -> None:
    clock = FakeClock()
    client = FakeClient(clock=clock)
    client.add("t", ["ok", "poison", "ok2"])
    calls: list[list[tuple[int, int]]] = []
    recovered: list[int] = []

    def handle(batch: list[Message]) -> None:
        calls.append([(m.offset, m.attempt) for m in batch])
        for i, m in enumerate(batch):
            if m.value == b"poison":
                raise BatchFailed(index=i) from RuntimeError("boom")

    loop = loop_for(handle, client, batch=True, clock=clock,
                    retry=Retry(backoff=BackOff.fixed(0.1, max_attempts=3), mode=mode),  # type: ignore[arg-type]
                    recoverer=Call(lambda m, e: recovered.append(m.offset)))  # fmt: skip
    loop.start()
    for _ in range(30):
        loop.run_once()
    assert [c[0] for c in calls] == [(0, 1), (1, 2), (1, 3), (2, 1)]
    assert recovered == [1]
    assert client.committed_position("t", 0) == 3


def test_manual_ack_attempt_state_never_commits_past_an_unacknowledged_record() -> None:
    clock = FakeClock()
    client = FakeClient(clock=clock)
    client.add("t", ["m0", "m1"])
    held: list[Message] = []

    def handle(msg: Message) -> None:
        if msg.value == b"m0":
            held.append(msg)  # acknowledged later
            return
        raise RuntimeError("m1 fails")

    loop = loop_for(handle, client, clock=clock, commit=Commit.manual(),
                    retry=Retry(backoff=BackOff.fixed(5.0, max_attempts=None)))  # fmt: skip
    loop.start()
    for _ in range(25):
        loop.run_once()
    assert all(pos <= 0 for c in client.committed_log for (pos, _) in c.values())
    held[0].ack()
    loop.run_once()
    assert client.committed_position("t", 0) == 1
    assert client.commits[TP][1] is not None  # the attempt state arrives with position 1


def test_batch_record_recovered_before_a_rewind_is_not_dead_lettered_again() -> None:
    clock = FakeClock()
    client = FakeClient(clock=clock)
    client.add("t", ["m0", "bad", "m2"])
    dead: list[int] = []
    failures = {"m0": 2}

    def handle(batch: list[Message]) -> None:
        for i, m in enumerate(batch):
            if m.value == b"m0" and failures["m0"]:
                failures["m0"] -= 1
                raise BatchFailed(index=i) from ConnectionError("db down")

    loop = loop_for(handle, client, batch=True, clock=clock, value_deserializer=_undecodable,
                    retry=Retry(backoff=BackOff.fixed(0.1, max_attempts=5)),
                    recoverer=Call(lambda m, e: dead.append(m.offset)))  # fmt: skip
    loop.start()
    for _ in range(20):
        loop.run_once()
    assert dead == [1]
    assert client.committed_position("t", 0) == 3


def test_batch_failed_recovery_commits_nothing_before_earlier_records_are_handled() -> None:
    clock = FakeClock()
    client = FakeClient(clock=clock)
    client.add("t", ["m0", "bad", "m2"])
    committed_at_handling: list[int | None] = []

    def failing(msg: Message, exc: BaseException) -> None:
        raise RuntimeError("dead-letter topic unavailable")

    def handle(batch: list[Message]) -> None:
        committed_at_handling.append(client.committed_position("t", 0))

    loop = loop_for(handle, client, batch=True, clock=clock, value_deserializer=_undecodable,
                    retry=Retry(backoff=BackOff.fixed(0.1, max_attempts=5)),
                    recoverer=Call(failing))  # fmt: skip
    loop.start()
    loop.run_once()
    assert committed_at_handling == [0]  # only the owner's window, at m0
    assert client.committed_position("t", 0) == 1  # m0 handled; "bad" waits, uncommitted


def test_batch_fast_path_counts_handled_records_for_the_circuit_breaker() -> None:
    clock = FakeClock()
    client = FakeClient(clock=clock)
    client.add("t", (["ok"] * 9 + ["bad"]) * 5)
    dead: list[int] = []
    loop = loop_for(lambda batch: None, client, batch=True, clock=clock, max_poll_records=10,
                    value_deserializer=_undecodable,
                    recoverer=CircuitBreaker(Call(lambda m, e: dead.append(m.offset)), in_a_row=3))  # fmt: skip
    loop.start()
    for _ in range(10):
        loop.run_once()
    assert dead == [9, 19, 29, 39, 49]
    assert loop.handled == 45


def test_records_of_a_partition_revoked_during_the_poll_are_dropped() -> None:
    class MidPollRevoke(FakeClient):
        revoke_now = False

        def poll(self, max_records: int, timeout: float) -> list[Any]:
            first = super().poll(1, timeout)
            if self.revoke_now:
                self.revoke_now = False
                self.revoke([TP])  # served by a later consume() of the same poll
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
    assert client.committed_log[-1] == {TP: (2, None)}
    assert TP not in loop.committer.tracker.partitions


def test_partition_paused_for_a_back_off_resumes_when_assigned_again() -> None:
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
    assert TP in client.paused
    client.revoke([TP])  # like librdkafka, the fake keeps the pause flag
    client.assign([TP])
    loop.run_once()  # the new owner waits out the rest of the back-off (R3)...
    clock.advance(61)
    loop.run_once()  # ...then the partition flows again instead of staying paused
    loop.run_once()
    assert seen == ["fails-once", "fails-once", "next"]


@pytest.mark.parametrize("signal", [BatchFailed(index=7), BatchFailed(message=Message("t", 0, 99))])
def test_batch_failed_naming_no_record_of_the_batch_retries_it_whole(signal: BatchFailed) -> None:
    clock = FakeClock()
    client = FakeClient(clock=clock)
    client.add("t", ["a", "b"])
    calls: list[list[int]] = []

    def handle(batch: list[Message]) -> None:
        calls.append([m.offset for m in batch])
        if len(calls) == 1:
            raise signal

    loop = loop_for(handle, client, batch=True, clock=clock,
                    retry=Retry(backoff=BackOff.fixed(0.0, max_attempts=3)))  # fmt: skip
    loop.start()
    for _ in range(4):
        loop.run_once()
    assert calls == [[0, 1], [0, 1]]
    assert client.committed_position("t", 0) == 2


def test_recovery_back_off_with_a_limit_keeps_its_longest_delay() -> None:
    assert BackOff.fixed(2.0, max_attempts=3).delay_forever(10) == 2.0
    assert BackOff.exponential(1, max_delay=8, jitter=False, max_attempts=2).delay_forever(5) == 8


def test_concurrency_recovered_records_are_not_successes_for_the_breaker() -> None:
    client = FakeClient()
    client.add("t", [b"x"] * 50)
    recovered: list[int] = []

    def fails(msg: Message) -> None:
        time.sleep(0.01)
        raise RuntimeError("broken deployment")

    spec = ListenerSpec(
        name="c", topics=("t",), group_id="g", handler=fails, batch=False,
        max_poll_records=5, key_deserializer=None, value_deserializer=None,
        commit=Commit.per_poll(), retry=Retry.none(),
        recoverer=CircuitBreaker(Call(lambda m, e: recovered.append(m.offset)), in_a_row=3),
        poll_timeout=0.01, concurrency=2,
    )  # fmt: skip
    loop = Loop(spec, client)
    loop.start()
    with pytest.raises(ListenerStopped):
        deadline = time.monotonic() + 10
        while time.monotonic() < deadline:
            loop.run_once()
            time.sleep(0.005)
    loop.close()
    assert len(recovered) < 10


def test_manual_acks_do_not_combine_with_concurrency() -> None:
    app = App("127.0.0.1:1", "g")
    with pytest.raises(ConfigError, match="Commit.manual\\(\\) does not combine with concurrency"):
        app.listener("t", concurrency=4, commit=Commit.manual())(lambda m: None)


@pytest.mark.parametrize(
    "metadata",
    ['{"redrive":1,"offset":0}', '{"redrive":1,"offset":0,"attempts":"x","first_failure":1}'],
)
def test_damaged_attempt_metadata_starts_the_count_over(metadata: str) -> None:
    from redrive.retry.attempts import decode

    assert decode(metadata, 0) is None
