"""Batch listeners: the records of one poll in one handler call. ``BatchFailed`` names the
failed record (by index or message); any other failure retries the whole batch, then its
records one at a time (in-memory client, fake clock, no sleeping)."""

from __future__ import annotations

import pytest

from redrive import BackOff, BatchFailed, Message, Retry
from redrive.recover.base import Call
from redrive.recover.breaker import CircuitBreaker
from redrive.testing import FakeClient, FakeClock, loop_for


def values(msgs: list[Message]) -> list[str]:
    return [m.value.decode() for m in msgs]


def undecodable(data: bytes | None) -> bytes | None:
    """A value deserializer that fails on ``b"bad"``."""
    if data == b"bad":
        raise ValueError("undecodable")
    return data


# -- BatchFailed names the failed record ---------------------------------------------------


def test_a_named_failure_commits_the_records_before_it_and_other_partitions_go_on() -> None:
    clock = FakeClock()
    client = FakeClient(clock=clock)
    client.add("t", ["a1", "a2"], partition=0)
    client.add("t", ["b1"], partition=1)
    calls: list[list[str]] = []

    def handle(batch: list[Message]) -> None:
        calls.append(values(batch))
        if len(calls) == 1:
            raise BatchFailed(index=1) from RuntimeError("a2")

    loop = loop_for(handle, client, batch=True, max_poll_records=10, clock=clock,
                    retry=Retry(backoff=BackOff.fixed(1.0, max_attempts=2)))  # fmt: skip
    loop.start()
    loop.run_once()
    assert calls == [["a1", "a2", "b1"], ["b1"]]  # b1 handed over again without a rewind
    assert client.committed_position("t", 0) == 1 and client.committed_position("t", 1) == 1
    clock.advance(1)  # the back-off of a2
    loop.run_once()
    loop.run_once()
    assert calls[-1] == ["a2"]
    assert client.committed_position("t", 0) == 2


@pytest.mark.parametrize("mode", ["seek", "in_place"])
def test_a_named_failure_counts_attempts_and_is_recovered_after_the_last(mode: str) -> None:
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
    loop.run_until_idle()
    assert [c[0] for c in calls] == [(0, 1), (1, 2), (1, 3), (2, 1)]
    assert recovered == [1]
    assert client.committed_position("t", 0) == 3


@pytest.mark.parametrize("signal", [BatchFailed(index=7), BatchFailed(message=Message("t", 0, 99))])
def test_a_failure_naming_no_record_of_the_batch_retries_it_whole(signal: BatchFailed) -> None:
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
    loop.run_until_idle()
    assert calls == [[0, 1], [0, 1]]
    assert client.committed_position("t", 0) == 2


def test_a_failure_naming_nothing_retries_the_whole_batch_then_isolates_the_failing_one() -> None:
    """After the whole batch's attempts, its records are handed over one at a time; only
    the one that fails is recovered (isolation)."""
    clock = FakeClock()
    client = FakeClient(clock=clock)
    client.add("t", ["ok", "poison", "ok2"])
    calls: list[list[tuple[int, int]]] = []
    recovered: list[int] = []

    def handle(batch: list[Message]) -> None:
        calls.append([(m.offset, m.attempt) for m in batch])
        if any(m.value == b"poison" for m in batch):
            raise RuntimeError("names no record")

    loop = loop_for(handle, client, batch=True, clock=clock,
                    retry=Retry(backoff=BackOff.fixed(1.0, max_attempts=2)),
                    recoverer=Call(lambda m, e: recovered.append(m.offset)))  # fmt: skip
    loop.start()
    loop.run_until_idle()
    assert calls == [
        [(0, 1), (1, 1), (2, 1)],  # the whole batch, attempt 1
        [(0, 2), (1, 2), (2, 2)],  # again after the back-off: attempt 2, the last
        [(0, 2)],  # then one record at a time
        [(1, 2)],
        [(2, 2)],
    ]
    assert recovered == [1]
    assert client.committed_position("t", 0) == 3


# -- records recovered in a batch ----------------------------------------------------------


def test_a_record_recovered_before_a_rewind_is_not_recovered_again() -> None:
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

    loop = loop_for(handle, client, batch=True, clock=clock, value_deserializer=undecodable,
                    retry=Retry(backoff=BackOff.fixed(0.1, max_attempts=5)),
                    recoverer=Call(lambda m, e: dead.append(m.offset)))  # fmt: skip
    loop.start()
    loop.run_until_idle()
    assert dead == [1]
    assert client.committed_position("t", 0) == 3


def test_an_undecodable_record_whose_recovery_fails_waits_uncommitted_behind_earlier_ones() -> None:
    """The gate sends "bad" to the recoverer before the batch is handed over; its failed
    recovery commits nothing past m0 before m0 is handled."""
    clock = FakeClock()
    client = FakeClient(clock=clock)
    client.add("t", ["m0", "bad", "m2"])
    committed_at_handling: list[int | None] = []

    def failing(msg: Message, exc: BaseException) -> None:
        raise RuntimeError("dead-letter topic unavailable")

    def handle(batch: list[Message]) -> None:
        committed_at_handling.append(client.committed_position("t", 0))

    loop = loop_for(handle, client, batch=True, clock=clock, value_deserializer=undecodable,
                    retry=Retry(backoff=BackOff.fixed(0.1, max_attempts=5)),
                    recoverer=Call(failing))  # fmt: skip
    loop.start()
    loop.run_once()
    assert committed_at_handling == [0]  # only the owner's window, at m0
    assert client.committed_position("t", 0) == 1  # m0 handled; "bad" waits, uncommitted


def test_the_fast_path_counts_handled_records_for_the_circuit_breaker() -> None:
    """A batch that needs no per-record bookkeeping is finished in one step per partition;
    its records still count as handled, so one bad record in ten never trips the breaker."""
    clock = FakeClock()
    client = FakeClient(clock=clock)
    client.add("t", (["ok"] * 9 + ["bad"]) * 5)
    dead: list[int] = []
    loop = loop_for(lambda batch: None, client, batch=True, clock=clock, max_poll_records=10,
                    value_deserializer=undecodable,
                    recoverer=CircuitBreaker(Call(lambda m, e: dead.append(m.offset)), in_a_row=3))  # fmt: skip
    loop.start()
    loop.run_until_idle()
    assert dead == [9, 19, 29, 39, 49]
    assert loop.handled == 45


def test_isolated_records_failures_do_not_carry_the_batch_failure_as_their_context() -> None:
    """The records of a failed batch are handed over one by one outside the except clause
    that caught the batch's failure: a record's own error is what the recoverer sees, not
    one chained to the batch's (found by `redrive chaos` on the record listener)."""
    client = FakeClient()
    client.add("t", ["a", "b"])
    recovered: list[BaseException] = []

    def handle(msgs: list[Message]) -> None:
        if len(msgs) > 1:
            raise ValueError("the whole batch: fatal")
        raise ConnectionError(f"{msgs[0].value.decode()} alone")

    loop = loop_for(handle, client, batch=True, max_poll_records=10,
                    recoverer=Call(lambda m, e: recovered.append(e)))  # fmt: skip
    loop.start()
    loop.run_until_idle()
    assert [str(e) for e in recovered] == ["a alone", "b alone"]
    assert all(e.__context__ is None for e in recovered)
