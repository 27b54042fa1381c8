"""Concurrent record handling (``concurrency > 1``) on the in-memory client: lanes, the one
failure engine, attempt state in the commit metadata (R3), revocation."""

from __future__ import annotations

import threading
import time
from typing import Any

from redrive import BackOff, Commit, Message, Retry
from redrive.consumer.loop import Loop
from redrive.consumer.spec import ListenerSpec
from redrive.events import EventBus, Recorder, Succeeded
from redrive.message import TopicPartition
from redrive.recover.base import Call, Recoverer, Skip
from redrive.retry.attempts import Attempt, decode, encode
from redrive.testing import FakeClient, FakeClock

T0 = TopicPartition("t", 0)


def concurrent_loop(
    handler: Any,
    client: FakeClient,
    *,
    ordering: str = "key",
    retry: Retry | None = None,
    recoverer: Recoverer | None = None,
    bus: EventBus | None = None,
    max_poll_records: int = 10,
    drain_timeout: float = 30.0,
) -> Loop:
    spec = ListenerSpec(
        name="c", topics=("t",), group_id="g", handler=handler, batch=False,
        max_poll_records=max_poll_records, key_deserializer=None, value_deserializer=None,
        commit=Commit.per_poll(), retry=retry or Retry.seek(BackOff.fixed(1.0, max_attempts=3)),
        recoverer=recoverer or Skip(), poll_timeout=0.5, concurrency=4, ordering=ordering,
        drain_timeout=drain_timeout,
    )  # fmt: skip
    assert client.clock is not None
    return Loop(spec, client, bus=bus, clock=client.clock, wall_clock=client.clock)


def keyed(client: FakeClient, items: list[tuple[bytes, str]]) -> None:
    for key, value in items:
        client.add("t", [value], key=key)


def test_a_failing_key_waits_in_its_lane_while_other_keys_flow_and_commits_stop_at_it() -> None:
    client = FakeClient(clock=FakeClock())
    keyed(client, [(b"a", "a1"), (b"b", "b1"), (b"a", "a2"), (b"b", "b2")])
    seen: list[tuple[str, int]] = []
    lock = threading.Lock()

    def handle(msg: Message) -> None:
        with lock:
            seen.append((msg.value.decode(), msg.attempt))
        if msg.value == b"a1" and msg.attempt < 3:
            raise ConnectionError("a is down")

    loop = concurrent_loop(handle, client)
    loop.start()
    loop.run_until_idle()
    assert [s for s in seen if s[0].startswith("a")] == [("a1", 1), ("a1", 2), ("a1", 3), ("a2", 1)]
    assert {"b1", "b2"} <= {v for v, _ in seen}
    assert seen.index(("b2", 1)) < seen.index(("a1", 3))  # b flowed during a's back-off
    assert client.committed_position("t", 0) == 4
    # while a1 waited, the position stayed at it (C1) and carried its attempt state (R3)
    states = [
        (pos, d.records[0].failures)
        for c in client.committed_log
        for pos, meta in c.values()
        if (d := decode(meta, pos)) and 0 in d.records
    ]
    assert states and all(pos == 0 for pos, _ in states)
    assert max(f for _, f in states) == 2


def test_a_new_owner_continues_the_counts_of_several_records_of_a_partition() -> None:
    client = FakeClient(clock=FakeClock())
    keyed(client, [(b"a", "a1"), (b"b", "b1"), (b"c", "c1")])
    clock = client.clock
    assert clock is not None
    left = {0: Attempt(2, first_failure=clock() - 5, limit=3),
            1: Attempt(1, 1, first_failure=clock() - 5, limit=3)}  # fmt: skip
    client.commit({T0: (0, encode(left, 40))})
    seen: dict[str, list[int]] = {}
    recovered: list[int] = []
    lock = threading.Lock()

    def handle(msg: Message) -> None:
        with lock:
            seen.setdefault(msg.value.decode(), []).append(msg.attempt)
        raise ConnectionError("still down")

    loop = concurrent_loop(handle, client, recoverer=Call(lambda m, e: recovered.append(m.offset)),
                           retry=Retry.seek(BackOff.fixed(0.0, max_attempts=3)))  # fmt: skip
    loop.start()
    loop.run_until_idle()
    # a1: 2 failures left by the previous owner, 1 more; b1: 1 failure and 1 interruption
    assert seen == {"a1": [3], "b1": [3, 4], "c1": [1, 2, 3]}
    assert sorted(recovered) == [0, 1, 2]
    assert client.committed_position("t", 0) == 3


def test_records_of_a_dead_owners_window_run_one_at_a_time_each_marked_first() -> None:
    client = FakeClient(clock=FakeClock())
    keyed(client, [(b"a", "a1"), (b"b", "b1"), (b"c", "c1"), (b"d", "d1")])
    client.commit({T0: (0, encode({}, 3, suspect=3))})  # a second owner died in the range
    running: list[tuple[int, list[int]]] = []
    active = threading.Semaphore(1)

    def handle(msg: Message) -> None:
        assert active.acquire(blocking=False), "two records of the window ran at once"
        pos, meta = client.commits[T0]
        state = decode(meta, pos)
        running.append((msg.offset, [o for o, s in state.records.items() if s.running]))
        active.release()

    loop = concurrent_loop(handle, client)
    loop.start()
    loop.run_until_idle()
    assert running[:3] == [(0, [0]), (1, [1]), (2, [2])]
    assert client.committed_position("t", 0) == 4


def test_work_that_finishes_after_its_partition_was_revoked_is_not_committed() -> None:
    client = FakeClient(clock=FakeClock())
    keyed(client, [(b"a", "a1"), (b"b", "b1")])
    started, release = threading.Event(), threading.Event()
    rec = Recorder()
    bus = EventBus()
    bus.subscribe(rec)

    def handle(msg: Message) -> None:
        if msg.value == b"b1":
            started.set()
            release.wait(10)

    loop = concurrent_loop(handle, client, bus=bus, drain_timeout=0.05)
    loop.start()
    loop.run_once()
    assert started.wait(10)
    client.revoke([T0])  # b1 still runs after the drain timeout: abandoned, its epoch over
    release.set()
    lanes = loop.dispatcher.lanes  # type: ignore[attr-defined]
    with lanes.lock:
        assert lanes.changed.wait_for(lambda: lanes.done, 10)  # b1 reported, too late
    loop.dispatcher.settle()
    loop.committer.flush("poll")
    assert all(pos <= 1 for c in client.committed_log for pos, _ in c.values())  # never past b1
    assert (T0, 1) not in {(e.tp, e.offset) for e in rec.of(Succeeded)}
    loop.run_until_idle()  # the partition comes back: b1 is handled again (at-least-once)
    assert [e.offset for e in rec.of(Succeeded)] == [0, 1]
    assert client.committed_position("t", 0) == 2


def test_a_lane_waiting_out_a_back_off_flows_again_when_its_partition_comes_back() -> None:
    client = FakeClient(clock=FakeClock())
    client.add("t", ["a1", "a2"])
    seen: list[tuple[bytes, int]] = []
    failed = threading.Event()

    def handle(msg: Message) -> None:
        seen.append((msg.value, msg.attempt))
        if msg.value == b"a1" and not failed.is_set():
            failed.set()
            raise ConnectionError("down once")

    loop = concurrent_loop(handle, client, ordering="partition",
                           retry=Retry.seek(BackOff.fixed(1.0, max_attempts=5)))  # fmt: skip
    loop.start()
    while not loop.pauser.parked:  # a1 failed: its lane waits 1 s
        loop.run_once()
    client.revoke([T0])  # the next poll assigns it again (FakeClient)
    loop.run_until_idle()
    assert seen[0] == (b"a1", 1) and seen[-2:] == [(b"a1", 2), (b"a2", 1)]
    assert client.committed_position("t", 0) == 2
    assert loop.dispatcher.idle()


def test_in_a_dead_owners_window_no_two_partitions_run_at_once() -> None:
    """Otherwise a crash caused by one would count as an interruption of the other."""
    t1 = TopicPartition("t", 1)
    client = FakeClient(clock=FakeClock())
    client.add("t", ["h1", "h2"], partition=0)
    client.add("t", ["p1", "p2"], partition=1)
    client.commit({T0: (0, encode({}, 50, 50)), t1: (0, encode({}, 50, 50))})  # died twice
    running = threading.Semaphore(1)
    marks: list[int] = []

    def handle(msg: Message) -> None:
        assert running.acquire(blocking=False), "two records of the window ran at once"
        marks.append(sum(
            1 for pos, meta in client.commits.values()
            if (d := decode(meta, pos)) for s in d.records.values() if s.running
        ))  # fmt: skip
        running.release()

    loop = concurrent_loop(handle, client, ordering="partition")
    loop.start()
    loop.run_until_idle()
    assert marks == [1, 1, 1, 1]  # each ran alone, the only record marked running
    assert client.committed_position("t", 0) == 2 and client.committed_position("t", 1) == 2


def test_records_finished_past_a_waiting_one_are_not_handled_again_by_the_next_owner() -> None:
    """C4/C5 under concurrency: a1 waits out a back-off, so the position stays at it, while
    b1 (handled) and c1 (dead-lettered) are final past it. The revocation's commit carries
    them in its metadata; the next owner hands over a1 only."""
    client = FakeClient(clock=FakeClock())
    keyed(client, [(b"a", "a1"), (b"b", "b1"), (b"c", "c1"), (b"d", "d1")])
    seen: list[str] = []
    recovered: list[str] = []
    lock = threading.Lock()

    def handle(msg: Message) -> None:
        with lock:
            seen.append(msg.value.decode())
        if msg.value == b"a1":
            raise ConnectionError("a is down")
        if msg.value == b"c1":
            raise ValueError("c is poison")  # fatal: recovered at once

    loop = concurrent_loop(handle, client, recoverer=Call(lambda m, e: recovered.append(m.value)),
                           retry=Retry.seek(BackOff.fixed(60.0, max_attempts=5)))  # fmt: skip
    loop.start()
    deadline = time.monotonic() + 10  # the workers run on threads: real time
    while loop.committer.tracker.of(T0).finished != {1, 2, 3} and time.monotonic() < deadline:
        loop.run_once()
        time.sleep(0.001)
    client.revoke([T0])
    pos, meta = client.commits[T0]
    state = decode(meta, pos)
    assert pos == 0 and state is not None and state.done == {1, 2, 3}

    after = FakeClient(clock=FakeClock())  # the next owner
    keyed(after, [(b"a", "a1"), (b"b", "b1"), (b"c", "c1"), (b"d", "d1")])
    after.commit({T0: (pos, meta)})
    again: list[str] = []
    loop = concurrent_loop(lambda m: again.append(m.value.decode()), after)
    loop.start()
    loop.run_until_idle()
    assert again == ["a1"] and after.committed_position("t", 0) == 4
    assert recovered == [b"c1"]  # dead-lettered once


def test_the_final_offsets_past_the_position_round_trip_as_runs() -> None:
    meta = encode({}, 0, done={11, 12, 13, 15, 20, 21}, position=10)
    assert meta is not None and '"k":[[1,3],[5,1],[10,2]]' in meta
    state = decode(meta, 10)
    assert state is not None and state.done == {11, 12, 13, 15, 20, 21}


def test_a_stop_during_a_walk_hands_nothing_more_over_when_it_commits_again() -> None:
    """A walked record outlives the drain timeout at stop; the final commit is refused and
    the rebalance that the stop takes part in revokes one partition: no record of the other
    is handed to the (closed) workers."""
    t1 = TopicPartition("t", 1)

    class Refusing(FakeClient):
        closing = False

        def poll(self, max_records: int, timeout: float) -> list[Any]:
            if self.closing:
                self.closing = False
                release.set()
                time.sleep(0.2)  # the abandoned record reports
                self.revoke([T0])
                return []
            return super().poll(max_records, timeout)

    client = Refusing(clock=FakeClock())
    client.add("t", ["a1", "a2"], partition=0)
    client.add("t", ["b1", "b2"], partition=1)
    client.commit({T0: (0, encode({}, 50, 50)), t1: (0, encode({}, 50, 50))})  # died twice
    started, release = threading.Event(), threading.Event()
    ran: list[tuple[int, int]] = []

    def handle(msg: Message) -> None:
        ran.append((msg.partition, msg.offset))
        started.set()
        release.wait(5)

    loop = concurrent_loop(handle, client, drain_timeout=0.05)
    loop.start()
    while not started.is_set():
        loop.run_once()
    for _ in range(3):
        loop.run_once()
    loop.stop()
    client.refuse_commits, client.closing = 1, True
    loop.close()  # raised RuntimeError (cannot schedule new futures after shutdown)
    assert len(ran) == 1
