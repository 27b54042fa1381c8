"""Seek-retry state across owners, stops and the circuit breaker, on the in-memory client
(no broker, no sleeping)."""

from __future__ import annotations

import pytest

from redrive import BackOff, CircuitBreaker, ListenerStopped, Message, Retry, Stop
from redrive.message import TopicPartition
from redrive.recover.base import Call
from redrive.retry.attempts import Attempt
from redrive.testing import FakeClient, FakeClock, loop_for

T0 = TopicPartition("t", 0)
RETRY = Retry.seek(BackOff.fixed(1.0, max_attempts=3))


def previous_owner(client: FakeClient, clock: FakeClock, **state: object) -> None:
    """Commit what a previous owner left: position 0 with attempt state in the metadata."""
    attempt = Attempt(first_failure=clock() - 5, **state)  # type: ignore[arg-type]
    attempt.note(ConnectionError("db down"), limit=3)
    client.commit({T0: (0, attempt.to_metadata(0))})


def setup() -> tuple[FakeClock, FakeClient, list[int], list[BaseException]]:
    clock = FakeClock()
    client = FakeClient(clock=clock)
    client.add("t", ["poison", "next"])
    return clock, client, [], []


def test_a_new_owner_continues_the_count() -> None:
    clock, client, attempts, recovered = setup()
    previous_owner(client, clock, count=2)

    def handle(msg: Message) -> None:
        attempts.append(msg.attempt)
        if msg.value == b"poison":
            raise ConnectionError("still down")

    loop = loop_for(handle, client, retry=RETRY, clock=clock,
                    recoverer=Call(lambda m, e: recovered.append(e)))  # fmt: skip
    loop.start()
    for _ in range(3):
        loop.run_once()
    assert attempts == [3, 1]  # the last attempt, then the next record
    assert len(recovered) == 1 and str(recovered[0]) == "still down"
    assert client.committed_position("t", 0) == 2


def test_an_interrupted_last_attempt_is_not_run_again() -> None:
    clock, client, attempts, recovered = setup()
    previous_owner(client, clock, count=3)  # attempt 3 of 3 started, outcome unknown
    loop = loop_for(lambda m: attempts.append(m.attempt), client, retry=RETRY, clock=clock,
                    recoverer=Call(lambda m, e: recovered.append(e)))  # fmt: skip
    loop.start()
    loop.run_once()
    assert attempts == [1]  # only "next": the poison record went to the recoverer directly
    (exc,) = recovered
    assert "db down" in str(exc) and "retries exhausted after 3 attempts" in str(exc)
    assert getattr(exc, "fqcn", None) == "ConnectionError"  # for the dead-letter headers


def test_a_new_owner_waits_out_the_rest_of_the_back_off() -> None:
    clock, client, attempts, _ = setup()
    previous_owner(client, clock, count=1, due=clock() + 10)
    loop = loop_for(lambda m: attempts.append(m.attempt), client, retry=RETRY, clock=clock)
    loop.start()
    loop.run_once()
    assert attempts == [] and T0 in client.paused
    while clock() < 1000 + 9.9:
        loop.run_once()
        assert attempts == []
    clock.advance(0.2)
    loop.run_once()
    loop.run_once()
    assert attempts[0] == 2


def test_a_stop_clears_the_attempt_state_for_the_next_start() -> None:
    clock, client, attempts, _ = setup()

    def handle(msg: Message) -> None:
        attempts.append(msg.attempt)
        raise ConnectionError("bug")

    loop = loop_for(handle, client, retry=RETRY, clock=clock, recoverer=Stop())
    loop.start()
    with pytest.raises(ListenerStopped, match="after 3 attempt"):
        for _ in range(20):
            loop.run_once()
    assert attempts == [1, 2, 3]
    assert client.commits[T0] == (0, None)  # position kept, attempt count cleared


def test_the_breaker_counts_the_loops_handled_records_without_the_bus() -> None:
    clock = FakeClock()
    client = FakeClient(clock=clock)
    client.add("t", ["ok", "bad", "ok", "bad", "bad", "ok"])
    recovered: list[int] = []

    def handle(msg: Message) -> None:
        if msg.value == b"bad":
            raise ValueError("bad record")

    breaker = CircuitBreaker(Call(lambda m, e: recovered.append(m.offset)), in_a_row=2)
    loop = loop_for(handle, client, retry=Retry.none(), clock=clock, recoverer=breaker,
                    max_poll_records=10)  # fmt: skip
    loop.start()
    assert not loop.bus  # the breaker does not make every step build events
    with pytest.raises(ListenerStopped, match="2 records in a row"):
        loop.run_once()
    assert recovered == [1, 3]  # the "ok" between them reset the count
    loop.close()
    assert client.committed_position("t", 0) == 4  # stays at the record that tripped it
