"""The failure engine across owners: attempt state in the commit metadata (R3), failures
kept apart from interruptions, a dead owner's window, stops; on the in-memory client."""

from __future__ import annotations

from collections.abc import Callable

import pytest

from redrive import (
    BackOff,
    CircuitBreaker,
    HandlingInterrupted,
    ListenerStopped,
    Message,
    Retry,
    Stop,
)
from redrive.message import TopicPartition
from redrive.recover.base import Call
from redrive.retry.attempts import Attempt, PartitionState, decode, encode
from redrive.testing import FakeClient, FakeClock, loop_for

T0 = TopicPartition("t", 0)
RETRY = Retry.seek(BackOff.fixed(1.0, max_attempts=3))


def previous_owner(client: FakeClient, clock: FakeClock, window: int = 0, **state: object) -> None:
    """Commit what a previous owner left: position 0 with attempt state in the metadata."""
    attempt = Attempt(first_failure=clock() - 5, **state)  # type: ignore[arg-type]
    attempt.note(ConnectionError("db down"), limit=3)
    client.commit({T0: (0, encode({0: attempt}, window))})


def setup() -> tuple[FakeClock, FakeClient, list[int], list[BaseException]]:
    clock = FakeClock()
    client = FakeClient(clock=clock)
    client.add("t", ["poison", "next"])
    return clock, client, [], []


def state_of(client: FakeClient, offset: int = 0) -> Attempt:
    pos, meta = client.commits[T0]
    state = decode(meta, pos)
    assert state is not None
    return state.records[offset]


def recording_marks(
    client: FakeClient, into: list[tuple[int, list[int]]]
) -> Callable[[Message], None]:
    """A handler noting each record's offset with the running marks committed before it."""

    def handle(msg: Message) -> None:
        pos, meta = client.commits[T0]
        state = decode(meta, pos)
        assert state is not None
        into.append((msg.offset, [o for o, s in state.records.items() if s.running]))

    return handle


def test_a_new_owner_continues_the_count() -> None:
    clock, client, attempts, recovered = setup()
    previous_owner(client, clock, failures=2)

    def handle(msg: Message) -> None:
        attempts.append(msg.attempt)
        if msg.value == b"poison":
            raise ConnectionError("still down")

    loop = loop_for(handle, client, retry=RETRY, clock=clock,
                    recoverer=Call(lambda m, e: recovered.append(e)))  # fmt: skip
    loop.start()
    loop.run_until_idle()
    assert attempts == [3, 1]  # the last attempt, then the next record
    assert len(recovered) == 1 and str(recovered[0]) == "still down"
    assert client.committed_position("t", 0) == 2


def test_a_last_attempt_that_failed_before_the_hand_over_is_not_run_again() -> None:
    clock, client, attempts, recovered = setup()
    previous_owner(client, clock, failures=3)  # 3 of 3 failed; the owner died before recovery
    loop = loop_for(lambda m: attempts.append(m.attempt), client, retry=RETRY, clock=clock,
                    recoverer=Call(lambda m, e: recovered.append(e)))  # fmt: skip
    loop.start()
    loop.run_until_idle()
    assert attempts == [1]  # only "next": the poison record went to the recoverer directly
    (exc,) = recovered
    assert "db down" in str(exc) and "retries exhausted after 3 failures" in str(exc)
    assert getattr(exc, "fqcn", None) == "ConnectionError"  # for the dead-letter headers


def test_an_interrupted_last_attempt_is_handled_again_not_recovered() -> None:
    """A crash is not a failure: the owner died in attempt 3 of 3 (its running mark is in
    the metadata), maybe after the handler succeeded; the record is handled again."""
    clock, client, attempts, recovered = setup()
    previous_owner(client, clock, failures=2, running=True)
    loop = loop_for(lambda m: attempts.append(m.attempt), client, retry=RETRY, clock=clock,
                    recoverer=Call(lambda m, e: recovered.append(e)))  # fmt: skip
    loop.start()
    loop.run_until_idle()
    assert attempts == [4, 1] and recovered == []  # attempt 4: 2 failures, 1 interruption
    assert client.committed_position("t", 0) == 2


def test_a_record_whose_handling_keeps_being_interrupted_is_recovered_and_says_why() -> None:
    clock, client, attempts, recovered = setup()
    previous_owner(client, clock, failures=1, interruptions=2, running=True)
    loop = loop_for(lambda m: attempts.append(m.attempt), client, retry=RETRY, clock=clock,
                    recoverer=Call(lambda m, e: recovered.append(e)))  # fmt: skip
    loop.start()
    loop.run_until_idle()
    assert attempts == [1]  # only "next"
    (exc,) = recovered
    assert isinstance(exc, HandlingInterrupted) and exc.interruptions == 3
    assert "interrupted 3 times" in str(exc) and "db down" in str(exc)


def test_an_attempt_is_marked_running_before_the_handler_runs() -> None:
    clock, client, _, _ = setup()
    previous_owner(client, clock, failures=1)
    marks: list[Attempt] = []
    loop = loop_for(lambda m: marks.append(state_of(client)), client, retry=RETRY, clock=clock)
    loop.start()
    loop.run_until_idle()
    assert marks[0].running and marks[0].failures == 1  # had it died here: an interruption


def test_a_dead_owners_window_is_handled_one_marked_record_at_a_time() -> None:
    """A second owner died somewhere in a suspect range: each record of it is marked running
    before it is handed over, so the next crash is blamed on the right record."""
    clock = FakeClock()
    client = FakeClient(clock=clock)
    client.add("t", ["a", "b", "c", "d", "e"])
    client.commit({T0: (0, encode({}, 2, suspect=3))})
    running: list[tuple[int, list[int]]] = []
    handle = recording_marks(client, running)
    loop = loop_for(handle, client, retry=RETRY, clock=clock, max_poll_records=10)
    loop.start()
    loop.run_until_idle()
    assert running == [(0, [0]), (1, [1]), (2, [2]), (3, []), (4, [])]
    assert client.committed_position("t", 0) == 5


def test_a_first_death_in_a_window_is_only_suspected_and_consumed_at_full_speed() -> None:
    """Most deaths are not a record's doing: the new owner marks no record, but its commits
    keep the window's end as suspect until it is passed, so a second death walks it."""
    clock = FakeClock()
    client = FakeClient(clock=clock)
    client.add("t", ["a", "b", "c", "d", "e"])
    client.commit({T0: (0, encode({}, 3))})  # the previous owner died in its window of 3
    seen: list[tuple[int, int | None, list[int]]] = []

    def handle(msg: Message) -> None:
        pos, meta = client.commits[T0]
        state = decode(meta, pos)
        assert state is not None
        seen.append((msg.offset, state.suspect, [o for o, s in state.records.items() if s.running]))

    loop = loop_for(handle, client, retry=RETRY, clock=clock, max_poll_records=10)
    loop.start()
    loop.run_until_idle()
    assert seen == [(o, 3, []) for o in range(5)]  # no marks; durable before the first record
    pos, meta = client.commits[T0]
    assert pos == 5 and decode(meta, pos) == PartitionState({}, 10, 0)  # passed: not suspect


def test_a_second_death_in_a_suspect_range_walks_the_rest_of_it() -> None:
    """Owner 1 died in its window; owner 2 suspects it and dies in it too (here: stops
    committing at offset 1): owner 3 walks offsets 1..2 one marked record at a time, then
    runs unmarked."""
    clock = FakeClock()
    client = FakeClient(clock=clock)
    client.add("t", ["a", "b", "c", "d"])
    client.commit({T0: (0, encode({}, 3))})
    owner2 = loop_for(lambda m: None, client, retry=RETRY, clock=clock, max_poll_records=1)
    owner2.start()
    owner2.run_once()  # handled a, committed position 1 with the suspect range, then died
    pos, meta = client.commits[T0]
    assert pos == 1 and decode(meta, pos) == PartitionState({}, 1, 3)
    after = FakeClient(clock=clock)  # owner 3 finds what owner 2 committed
    after.add("t", ["a", "b", "c", "d"])
    after.commit({T0: (pos, meta)})
    marks: list[tuple[int, list[int]]] = []
    owner3 = loop_for(recording_marks(after, marks), after, retry=RETRY, clock=clock,
                      max_poll_records=10)  # fmt: skip
    owner3.start()
    owner3.run_until_idle()
    assert marks == [(1, [1]), (2, [2]), (3, [])]


def test_a_graceful_hand_over_keeps_the_suspect_range_without_a_window() -> None:
    clock = FakeClock()
    client = FakeClient(clock=clock)
    client.add("t", ["a", "b", "c", "d"])
    client.commit({T0: (0, encode({}, 3))})
    parked: list[int] = []

    def handle(msg: Message) -> None:
        if msg.value == b"b":
            parked.append(msg.attempt)
            raise ConnectionError("down")  # b waits out its back-off: the position stays 1

    loop = loop_for(handle, client, retry=RETRY, clock=clock, max_poll_records=10)
    loop.start()
    loop.run_once()
    loop.close()  # a stop commits clean: no window, the suspect range kept
    pos, meta = client.commits[T0]
    state = decode(meta, pos)
    assert pos == 1 and parked == [1]
    assert state is not None and state.window == 0 and state.suspect == 3


def test_a_new_owner_waits_out_the_rest_of_the_back_off() -> None:
    clock, client, attempts, _ = setup()
    previous_owner(client, clock, failures=1, due=clock() + 10)
    loop = loop_for(lambda m: attempts.append(m.attempt), client, retry=RETRY, clock=clock)
    loop.start()
    loop.run_once()
    assert attempts == [] and T0 in client.paused
    while clock() < 1000 + 9.9:
        loop.run_once()
        assert attempts == []
    loop.run_until_idle()
    assert attempts[0] == 2


def test_a_stop_clears_the_attempt_state_for_the_next_start() -> None:
    clock, client, attempts, _ = setup()

    def handle(msg: Message) -> None:
        attempts.append(msg.attempt)
        raise ConnectionError("bug")

    loop = loop_for(handle, client, retry=RETRY, clock=clock, recoverer=Stop())
    loop.start()
    with pytest.raises(ListenerStopped, match="after 3 attempt"):
        loop.run_until_idle()
    assert attempts == [1, 2, 3]
    pos, meta = client.commits[T0]
    assert pos == 0 and '"r"' not in (meta or "")  # position kept, attempt state cleared


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
