"""Record listeners: one record at a time on the loop thread, in poll order; what a failure,
an undecodable record or a retry changes (in-memory client, fake clock, no sleeping)."""

from __future__ import annotations

import json

from redrive import BackOff, Defer, Message, Retry
from redrive.consumer.dispatch.records import Records
from redrive.events import EventBus, Paused, Recorder, Resumed
from redrive.message import TopicPartition
from redrive.recover.base import Call
from redrive.retry.attempts import decode
from redrive.testing import FakeClient, FakeClock, loop_for

T0 = TopicPartition("t", 0)


# -- failures and retries ------------------------------------------------------------------


def test_a_failure_pauses_only_its_partition_and_it_resumes_when_due() -> None:
    clock = FakeClock()
    client = FakeClient(clock=clock)
    client.add("t", ["a1", "a2", "a3"], partition=0)
    client.add("t", ["b1", "b2"], partition=1)
    seen: list[str] = []
    fail = {"a2"}

    def handle(msg: Message) -> None:
        seen.append(msg.value.decode())
        if msg.value.decode() in fail:
            fail.clear()
            raise RuntimeError("a2 fails once")

    bus = EventBus()
    rec = Recorder()
    bus.subscribe(rec)
    loop = loop_for(handle, client, max_poll_records=10, clock=clock, bus=bus,
                    retry=Retry(backoff=BackOff.fixed(5.0, max_attempts=3)))  # fmt: skip
    loop.start()
    loop.run_once()
    assert seen == ["a1", "a2", "b1", "b2"]
    assert client.commits[T0][0] == 1 and client.committed_position("t", 1) == 2
    assert T0 in client.paused and rec.of(Paused)[0].partitions == (T0,)
    loop.run_once()  # nothing due yet: the fake clock moves by the poll timeout
    assert seen == ["a1", "a2", "b1", "b2"]
    clock.advance(5)
    loop.run_once()  # due: resumed, and a2 fetched again
    loop.run_once()
    assert rec.of(Resumed)
    assert seen[-2:] == ["a2", "a3"]
    assert client.committed_position("t", 0) == 3


def test_seek_retries_keep_the_attempts_in_commit_metadata_and_recover_after_the_last() -> None:
    clock = FakeClock()
    client = FakeClient(clock=clock)
    client.add("t", ["ok", "poison", "after"])
    seen: list[tuple[str, int]] = []
    recovered: list[str] = []

    def handle(msg: Message) -> None:
        seen.append((msg.value.decode(), msg.attempt))
        if msg.value == b"poison":
            raise RuntimeError("always")

    loop = loop_for(
        handle, client, clock=clock,
        retry=Retry(backoff=BackOff.fixed(1.0, max_attempts=3)),
        recoverer=Call(lambda m, e: recovered.append(m.value.decode())),
    )  # fmt: skip
    loop.start()
    loop.run_until_idle()
    assert seen == [("ok", 1), ("poison", 1), ("poison", 2), ("poison", 3), ("after", 1)]
    assert recovered == ["poison"]
    metas = [(pos, meta) for c in client.committed_log for (pos, meta) in c.values() if meta]
    states = [s for pos, meta in metas if (d := decode(meta, pos)) for s in d.records.values()]
    assert [(s.failures, s.running) for s in states if s.running] == [(1, True), (2, True)]
    assert client.committed_position("t", 0) == 3


def test_in_place_retries_hold_the_rest_of_the_poll_and_hand_it_over_again_when_due() -> None:
    """The failed record and the records after it stay in memory; the partition is paused
    past them, so nothing is fetched twice."""
    clock = FakeClock()
    client = FakeClient(clock=clock)
    client.add("t", ["a1", "a2", "a3"])
    seen: list[tuple[str, int]] = []

    def handle(msg: Message) -> None:
        seen.append((msg.value.decode(), msg.attempt))
        if seen == [("a1", 1), ("a2", 1)]:
            raise RuntimeError("a2 fails once")

    loop = loop_for(handle, client, clock=clock,
                    retry=Retry.in_place(BackOff.fixed(5.0, max_attempts=3)))  # fmt: skip
    loop.start()
    loop.run_once()
    assert seen == [("a1", 1), ("a2", 1)]
    assert T0 in client.paused and client.position[T0] == 3  # held, not fetched again
    assert client.committed_position("t", 0) == 1
    clock.advance(5)
    loop.run_once()
    assert seen[2:] == [("a2", 2), ("a3", 1)]
    assert client.committed_position("t", 0) == 3
    assert client.committed_log[-1][T0][1] is None  # in-place retries keep no metadata


def test_a_recovery_back_off_with_a_limit_keeps_its_longest_delay() -> None:
    """A recoverer that fails is tried again forever (nothing is lost): past the limit of
    its back-off, at the longest delay instead of stopping."""
    assert BackOff.fixed(2.0, max_attempts=3).delay_forever(10) == 2.0
    assert BackOff.exponential(1, max_delay=8, jitter=False, max_attempts=2).delay_forever(5) == 8


# -- undecodable records -------------------------------------------------------------------


def test_an_undecodable_record_never_reaches_the_handler_and_is_recovered() -> None:
    client = FakeClient(clock=FakeClock())
    client.add("t", ['{"ok": 1}', "{not json", '{"ok": 2}'])
    seen: list[object] = []
    recovered: list[bytes | None] = []
    loop = loop_for(seen.append, client, value_deserializer=json.loads,
                    recoverer=Call(lambda m, e: recovered.append(m.raw_value)))  # fmt: skip
    loop.start()
    loop.run_once()
    assert [m.value for m in seen] == [{"ok": 1}, {"ok": 2}]  # type: ignore[attr-defined]
    assert recovered == [b"{not json"]
    assert client.committed_position("t", 0) == 3


# -- Defer ---------------------------------------------------------------------------------


def test_defer_hands_the_record_over_again_when_due_counting_no_attempt() -> None:
    """``Defer`` ("not yet") pauses and rewinds the partition to the record, commits nothing
    past it, and is no failure: no attempt is counted, nothing is recovered."""
    clock = FakeClock()
    client = FakeClient(clock=clock)
    client.add("t", ["d1", "d2"])
    seen: list[tuple[str, int]] = []
    recovered: list[int] = []

    def handle(msg: Message) -> None:
        seen.append((msg.value.decode(), msg.attempt))
        if len(seen) == 1:
            raise Defer(5.0)

    loop = loop_for(handle, client, clock=clock,
                    recoverer=Call(lambda m, e: recovered.append(m.offset)))  # fmt: skip
    loop.start()
    loop.run_once()
    assert seen == [("d1", 1)]  # d2 is not handed over while d1 waits
    assert T0 in client.paused and client.committed_position("t", 0) == 0
    loop.run_once()  # not due yet
    assert seen == [("d1", 1)]
    clock.advance(5)
    loop.run_until_idle()
    assert seen == [("d1", 1), ("d1", 1), ("d2", 1)]
    assert recovered == []
    assert client.committed_position("t", 0) == 2


# -- the fast path -------------------------------------------------------------------------


_VARYING = {"ts", "messages", "seconds", "duration"}


def _mixed_run(mode: str) -> tuple[list[tuple[str, int]], dict[int, list[object]], list[object]]:
    """Three partitions; records that fail once, always, defer once, or cannot be decoded,
    amid plain ones. What the handler saw, each partition's commits, and the events."""
    clock = FakeClock()
    client = FakeClient(clock=clock)
    client.add("t", ['"a1"', '"fail-once"', '"a3"', "{bad", '"a5"'], partition=0)
    client.add("t", ['"b1"', '"always"', '"b3"'], partition=1)
    client.add("t", ['"c1"', '"defer"', '"c3"', '"c4"'], partition=2)
    seen: list[tuple[str, int]] = []
    once = {"fail-once", "defer"}

    def handle(msg: Message) -> None:
        seen.append((msg.value, msg.attempt))
        if msg.value == "always" or (msg.value == "fail-once" and "fail-once" in once):
            once.discard("fail-once")
            raise RuntimeError(msg.value)
        if msg.value == "defer" and "defer" in once:
            once.discard("defer")
            raise Defer(2.0)

    bus, rec = EventBus(), Recorder()
    bus.subscribe(rec)
    retry = Retry(backoff=BackOff.fixed(1.0, max_attempts=2), mode=mode)  # type: ignore[arg-type]
    loop = loop_for(handle, client, clock=clock, bus=bus, max_poll_records=20, retry=retry,
                    value_deserializer=json.loads, recoverer=Call(lambda m, e: None))  # fmt: skip
    loop.start()
    loop.run_until_idle()
    commits: dict[int, list[object]] = {}
    for c in client.committed_log:
        for tp, entry in c.items():
            commits.setdefault(tp.partition, []).append(entry)
    # Committed events come in another order (a poll's partitions go live at once): their
    # contents are the commits compared per partition
    # times, durations and the messages themselves (other objects in each run) left out
    events = [{k: getattr(e, k) for k in e.__slots__ if k not in _VARYING} | {"kind": e.kind}
              for e in rec.events if e.kind != "Committed"]  # fmt: skip
    return seen, commits, events


def test_the_fast_path_sees_commits_and_tells_what_the_per_record_path_does(monkeypatch) -> None:
    for mode in ("seek", "in_place"):
        fast = _mixed_run(mode)
        with monkeypatch.context() as m:  # every poll down the per-record path
            m.setattr(Records, "_fast", lambda self, msgs, runs: self._one_at_a_time(msgs))
            careful = _mixed_run(mode)
        assert fast == careful
        seen, commits, events = fast
        assert ("a5", 1) in seen and ("c4", 1) in seen and ("always", 2) in seen
        assert ("fail-once", 2) in seen and [v for v, _ in seen].count("defer") == 2
        assert {p: c[-1][0] for p, c in commits.items()} == {0: 5, 1: 3, 2: 4}
        kinds = [e["kind"] for e in events]
        assert kinds.count("Delivered") == len(seen) and kinds.count("Succeeded") == 10


def test_a_stop_inside_a_fast_poll_hands_over_nothing_more_and_commits_only_what_ran() -> None:
    client = FakeClient(clock=FakeClock())
    client.add("t", [f"a{i}" for i in range(5)], partition=0)
    client.add("t", [f"b{i}" for i in range(5)], partition=1)
    seen: list[str] = []

    def handle(msg: Message) -> None:
        seen.append(msg.value.decode())
        if len(seen) == 7:
            loop.stop()

    loop = loop_for(handle, client, max_poll_records=10)
    loop.start()
    loop.run_once()
    loop.close()
    assert seen == ["a0", "a1", "a2", "a3", "a4", "b0", "b1"]
    assert client.committed_position("t", 0) == 5 and client.committed_position("t", 1) == 2


def test_a_fatal_failure_does_not_make_the_next_records_failures_look_fatal() -> None:
    """Found by `redrive chaos`: after a record of a poll failed fatally, the rest of the
    poll was handed over inside the except clause that caught it, so a later record's
    retryable error carried the fatal one as its ``__context__`` and was dead-lettered at
    its first attempt."""
    clock = FakeClock()
    client = FakeClient(clock=clock)
    client.add("t", ["poison", "flaky", "ok"])
    seen: list[tuple[str, int]] = []
    recovered: list[tuple[str, str]] = []
    failed_once: set[str] = set()

    def handle(msg: Message) -> None:
        value = msg.value.decode()
        seen.append((value, msg.attempt))
        if value == "poison":
            raise ValueError("fatal: never retried")
        if value == "flaky" and value not in failed_once:
            failed_once.add(value)
            raise ConnectionError("transient")

    loop = loop_for(handle, client, max_poll_records=10, clock=clock,
                    retry=Retry(backoff=BackOff.fixed(1.0, max_attempts=3)),
                    recoverer=Call(lambda m, e: recovered.append(
                        (m.value.decode(), type(e).__name__))))  # fmt: skip
    loop.start()
    loop.run_until_idle()
    assert recovered == [("poison", "ValueError")]
    assert seen == [("poison", 1), ("flaky", 1), ("flaky", 2), ("ok", 1)]
    assert client.committed_position("t", 0) == 3
