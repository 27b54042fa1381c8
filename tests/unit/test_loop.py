"""The loop's logic on the in-memory client and a manual clock (no broker, no sleeping)."""

from __future__ import annotations

from redrive import BackOff, BatchFailed, Commit, Message, Retry
from redrive.events import EventBus, Paused, Recorder, Resumed
from redrive.message import TopicPartition
from redrive.recover.base import Call
from redrive.retry.attempts import decode
from redrive.testing import FakeClient, FakeClock, loop_for

T0 = TopicPartition("t", 0)
W3 = '{"redrive":2,"w":3}'  # commit metadata: "an owner may be handling 3 records from here"


def values(msgs: list[Message]) -> list[str]:
    return [m.value.decode() for m in msgs]


def test_scenario1_commit_after_each_poll() -> None:
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


def test_failure_pauses_only_its_partition_and_resumes_when_due() -> None:
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
    loop.run_once()
    loop.run_once()
    assert rec.of(Resumed)
    assert seen[-2:] == ["a2", "a3"]
    assert client.committed_position("t", 0) == 3


def test_seek_retry_keeps_attempts_in_commit_metadata_and_recovers_after_the_last() -> None:
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
    for _ in range(12):
        loop.run_once()
    assert seen == [("ok", 1), ("poison", 1), ("poison", 2), ("poison", 3), ("after", 1)]
    assert recovered == ["poison"]
    metas = [(pos, meta) for c in client.committed_log for (pos, meta) in c.values() if meta]
    states = [s for pos, meta in metas if (d := decode(meta, pos)) for s in d.records.values()]
    assert [(s.failures, s.running) for s in states if s.running] == [(1, True), (2, True)]
    assert client.committed_position("t", 0) == 3


def test_new_owner_continues_the_attempt_count_from_metadata() -> None:
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
    for _ in range(3):
        loop.run_once()
    assert seen == [3] and recovered == [0]


def test_revocation_commits_finished_work_and_forgets_the_partition() -> None:
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


def test_batch_named_failure_commits_prefix_and_other_partitions_go_on() -> None:
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
    clock.advance(1)
    loop.run_once()
    loop.run_once()
    assert calls[-1] == ["a2"]
    assert client.committed_position("t", 0) == 2


def test_undecodable_record_never_reaches_the_handler() -> None:
    import json

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
