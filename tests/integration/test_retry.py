"""Retry against a real broker: back-off that pauses instead of sleeping (R1, R2), attempt
counts that survive a hand-over (R3), fatal errors (F5), and the start-up log of defaults."""

from __future__ import annotations

import logging
import signal
import sys
import threading
import time
from pathlib import Path

import pytest

from redrive import App, BackOff, ListenerStopped, Message, Retry, Stop, TopicPartition, admin
from redrive import headers as h
from redrive.events import Assigned, BackingOff, Committed, Failed, Lost, Revoked, Stopped

from .dlt import dead_letters, header_values
from .helpers import FAST, commits, kill_when, running, wait_for

pytestmark = pytest.mark.integration

# librdkafka needs max.poll.interval.ms >= session.timeout.ms; the test broker allows 1 s.
SHORT_POLL = {"session.timeout.ms": 2000, "heartbeat.interval.ms": 400,
              "max.poll.interval.ms": 2500}  # fmt: skip
CHILD = Path(__file__).with_name("child.py")


@pytest.mark.parametrize("mode", ["seek", "in_place"])
def test_r1_transient_failure_handled_three_times_committed_once(
    kafka, make_topic, names, mode
) -> None:
    topic = make_topic()
    admin.create_topics(kafka, {f"{topic}-dlt": 1})
    admin.produce(kafka, topic, ["m1"])
    group = names.group()
    app = App(kafka, group, kafka=FAST)
    attempts: list[int] = []

    @app.listener(topic, retry=Retry(backoff=BackOff.fixed(0.2, max_attempts=5), mode=mode))
    def handle(msg: Message) -> None:
        attempts.append(msg.attempt)
        if len(attempts) <= 2:
            raise ConnectionError("database not reachable yet")

    with running(app) as rec:
        wait_for(lambda: admin.committed_offsets(kafka, group, topic) == {0: 1})
    assert attempts == [1, 2, 3]
    assert [c for c in commits(rec) if c[0] == 1] == [{0: 1}]  # the position past it: once
    assert all(c == {0: 0} for c in commits(rec)[:-1])  # never past it before it succeeded
    state_commits = [e for e in rec.of(Committed) if e.reason == "attempt"]
    if mode == "in_place":
        assert not state_commits  # the count lives in memory
    else:  # seek: the attempt state is committed at the record itself, then cleared
        assert len(state_commits) == 4  # 2 failures + 2 "attempt started"
        assert admin.committed_metadata(kafka, group, TopicPartition(topic, 0)) is None
    assert dead_letters(kafka, f"{topic}-dlt") == []


@pytest.mark.parametrize("mode", ["seek", "in_place"])
def test_r2_back_off_past_max_poll_interval_never_evicts_e1(kafka, make_topic, names, mode) -> None:
    """Back-offs adding up to three times max.poll.interval.ms: the failing partition is
    paused, the loop keeps polling, the other partition keeps flowing, no rebalance."""
    topic = make_topic(partitions=2)
    admin.produce(kafka, topic, ["slow"], partition=0)
    group = names.group()
    app = App(kafka, group, kafka=SHORT_POLL)
    poll_interval = SHORT_POLL["max.poll.interval.ms"] / 1000
    handled: list[tuple[str, int, float]] = []  # value, attempt, time
    done = threading.Event()

    retry = Retry(backoff=BackOff.fixed(poll_interval, max_attempts=4), mode=mode)

    @app.listener(topic, value_deserializer="str", retry=retry)
    def handle(msg: Message) -> None:
        handled.append((msg.value, msg.attempt, time.monotonic()))
        if msg.value == "slow" and msg.attempt < 4:
            raise ConnectionError("downstream busy")

    def feed_other_partition() -> None:
        i = 0
        while not done.wait(1.0):
            admin.produce(kafka, topic, [f"other-{i}"], partition=1)
            i += 1

    feeder = threading.Thread(target=feed_other_partition)
    with running(app) as rec:
        wait_for(lambda: any(v == "slow" for v, _, _ in handled), what="first attempt")
        feeder.start()
        try:
            wait_for(lambda: ("slow", 4) in [(v, a) for v, a, _ in handled], timeout=60,
                     what="the fourth attempt")  # fmt: skip
        finally:
            done.set()
            feeder.join()
        wait_for(lambda: admin.committed_offsets(kafka, group, topic)[0] == 1)
        # never evicted: one assignment, nothing revoked or lost while running (a graceful
        # stop revokes at the end)
        assert len(rec.of(Assigned)) == 1
        assert not rec.of(Revoked) and not rec.of(Lost)
    slow = [t for v, _, t in handled if v == "slow"]
    assert [a for v, a, _ in handled if v == "slow"] == [1, 2, 3, 4]
    assert slow[-1] - slow[0] >= 3 * poll_interval  # back-offs of 3 x max.poll.interval.ms
    during = [v for v, _, t in handled if v.startswith("other") and slow[0] < t < slow[-1]]
    assert len(during) >= 3, f"the other partition stalled during the back-off: {handled}"
    assert len(rec.of(BackingOff)) == 3


def test_r3_seek_retry_commits_prefix_dead_letters_once_and_moves_on_e2(
    kafka, make_topic, names
) -> None:
    topic = make_topic()
    admin.create_topics(kafka, {f"{topic}-dlt": 1})
    admin.produce(kafka, topic, ["m1", "m2", "m3", "m4"])
    group = names.group()
    app = App(kafka, group, kafka=FAST)
    seen: list[tuple[str, int, list[dict[int, int]]]] = []

    @app.listener(topic, value_deserializer="str",
                  retry=Retry.seek(BackOff.fixed(0.3, max_attempts=3)))  # fmt: skip
    def handle(msg: Message) -> None:
        seen.append((msg.value, msg.attempt, commits(rec)))
        if msg.value == "m2":
            raise ConnectionError("m2 cannot be stored")

    with running(app) as rec:
        wait_for(lambda: admin.committed_offsets(kafka, group, topic) == {0: 4})
    assert [(v, a) for v, a, _ in seen] == [
        ("m1", 1), ("m2", 1), ("m2", 2), ("m2", 3), ("m3", 1), ("m4", 1),
    ]  # fmt: skip
    # m1 was committed before m2's second attempt, and nothing passed m2 before it was
    # dead-lettered
    assert seen[2][2][0] == {0: 1}
    before_dlt = [c for _, _, cs in seen[:4] for c in cs]
    assert all(c[0] <= 1 for c in before_dlt)
    (dead,) = dead_letters(kafka, f"{topic}-dlt")
    assert dead.value() == b"m2"
    assert header_values(dead)[h.REDRIVE_ATTEMPTS] == 3
    assert len(rec.of(Assigned)) == 1  # the same consumer did every attempt


def test_f5_fatal_error_goes_straight_to_dead_letter_and_defaults_are_logged(
    kafka, make_topic, names, caplog
) -> None:
    topic = make_topic()
    admin.create_topics(kafka, {f"{topic}-dlt": 1})
    admin.produce(kafka, topic, ["ok", "poison", "ok"])
    group = names.group()
    app = App(kafka, group, kafka=FAST)
    calls: list[str] = []

    @app.listener(topic, value_deserializer="str")  # the defaults: nothing configured
    def handle(msg: Message) -> None:
        calls.append(msg.value)
        if msg.value == "poison":
            raise ValueError("price must be positive")

    with caplog.at_level(logging.INFO, logger="redrive"), running(app) as rec:
        wait_for(lambda: admin.committed_offsets(kafka, group, topic) == {0: 3})
    assert calls == ["ok", "poison", "ok"]  # no retry of the fatal error
    assert not rec.of(BackingOff)
    (failed,) = rec.of(Failed)
    assert failed.fatal
    (dead,) = dead_letters(kafka, f"{topic}-dlt")
    assert dead.value() == b"poison"
    assert header_values(dead)[h.REDRIVE_ATTEMPTS] == 1
    assert header_values(dead)[h.DLT_EXCEPTION_FQCN] == "ValueError"
    startup = [r.getMessage() for r in caplog.records if r.getMessage().startswith("listener ")]
    assert len(startup) == 1
    assert "retry=seek exponential 1s..30s x2 full jitter, 10 attempts" in startup[0]
    assert "fatal: DeserializationError, ValueError" in startup[0]
    assert "(default), recoverer=dead letter to <topic>-dlt" in startup[0]
    assert "circuit breaker (100 in a row) (default)" in startup[0]


def test_r3_graceful_handover_continues_the_attempt_count_e3(kafka, make_topic, names) -> None:
    topic = make_topic()
    admin.create_topics(kafka, {f"{topic}-dlt": 1})
    admin.produce(kafka, topic, ["poison"])
    group = names.group()
    # a long back-off after attempt 2 (a TimeoutError), during which a hands over to b
    slow = {TimeoutError: BackOff.fixed(5.0, max_attempts=4)}
    retry = Retry.seek(BackOff.fixed(0.2, max_attempts=4), per_exception=slow)
    by: dict[str, list[int]] = {"a": [], "b": []}

    def app_for(name: str) -> App:
        app = App(kafka, group, kafka=FAST)

        @app.listener(topic, retry=retry, name=name)
        def handle(msg: Message) -> None:
            by[name].append(msg.attempt)
            if msg.attempt == 2:
                raise TimeoutError(f"slow ({name}, attempt {msg.attempt})")
            raise ConnectionError(f"down ({name}, attempt {msg.attempt})")

        return app

    first, second = app_for("a"), app_for("b")
    with running(first) as rec_a:
        wait_for(lambda: any(e.partitions for e in rec_a.of(Assigned)), what="a owns it")
        with running(second) as rec_b:
            wait_for(lambda: bool(rec_b.of(Assigned)), what="b joined the group")
            assert not any(e.partitions for e in rec_b.of(Assigned))  # b waits in the group
            wait_for(lambda: len(rec_a.of(Failed)) == 2, what="two failed attempts on a")
            first.stop()  # graceful: a commits and leaves; b takes the partition over
            first.join(60)
            wait_for(lambda: admin.committed_offsets(kafka, group, topic) == {0: 1})
    assert by == {"a": [1, 2], "b": [3, 4]}  # total attempts: the configured 4
    # b first waits out the rest of a's 5 s back-off, then hands the record over
    kinds = [e.kind for e in rec_b.events if e.kind in ("BackingOff", "Delivered")]
    assert kinds[:2] == ["BackingOff", "Delivered"]
    (dead,) = dead_letters(kafka, f"{topic}-dlt")
    assert header_values(dead)[h.REDRIVE_ATTEMPTS] == 4


@pytest.mark.parametrize(
    ("kill_at", "expected"),
    [
        (1, {"child": [1], "new owner": [1, 2, 3]}),  # a dead owner's window: a fresh count
        (2, {"child": [1, 2], "new owner": [3, 4]}),  # 1 failure, 1 interruption, then 2
        (3, {"child": [1, 2, 3], "new owner": [4]}),  # killed in the last: not a failure
    ],
)
@pytest.mark.parametrize("concurrency", [1, 4])  # 4: ordering="key", the same promise
def test_r3_sigkill_mid_attempt_continues_the_attempt_count_e3(
    kafka, make_topic, names, tmp_path, kill_at, expected, concurrency
) -> None:
    """A consumer killed with SIGKILL inside attempt `kill_at` of 3; a new owner continues.

    A crash is not a failure (issue 10, item 8): the killed attempt is an interruption, so
    the record is dead-lettered after 3 *observed* failures, and the handler runs
    max_attempts + 1 times in all: the extra run is the interrupted one."""
    max_attempts = 3
    topic = make_topic()
    admin.create_topics(kafka, {f"{topic}-dlt": 1})
    admin.produce(kafka, topic, ["poison"])
    group = names.group()
    ledger = tmp_path / "attempts"
    ledger.touch()
    argv = [sys.executable, str(CHILD), kafka, topic, group, str(ledger), str(kill_at),
            str(max_attempts), str(concurrency)]  # fmt: skip
    killed = kill_when(Path(f"{ledger}.inside"), argv, f"the child inside attempt {kill_at}")
    assert killed == -signal.SIGKILL
    by_child = [int(line.split()[1]) for line in ledger.read_text().splitlines()]

    app = App(kafka, group, kafka=SHORT_POLL)
    by_new_owner: list[int] = []

    @app.listener(topic, retry=Retry.seek(BackOff.fixed(0.3, max_attempts=max_attempts)),
                  concurrency=concurrency, ordering="key")  # fmt: skip
    def handle(msg: Message) -> None:
        by_new_owner.append(msg.attempt)
        raise ConnectionError(f"downstream unavailable (attempt {msg.attempt})")

    with running(app):
        wait_for(lambda: admin.committed_offsets(kafka, group, topic) == {0: 1}, timeout=60)
    assert {"child": by_child, "new owner": by_new_owner} == expected
    (dead,) = dead_letters(kafka, f"{topic}-dlt")
    interrupted = 0 if kill_at == 1 else 1  # the first attempt's start is in no metadata
    assert header_values(dead)[h.REDRIVE_ATTEMPTS] == max_attempts + interrupted
    assert header_values(dead).get(h.REDRIVE_INTERRUPTIONS, 0) == interrupted
    assert "downstream unavailable" in header_values(dead)[h.DLT_EXCEPTION_MESSAGE]
    assert header_values(dead)[h.DLT_EXCEPTION_FQCN] == "ConnectionError"
    total = len(by_child) + len(by_new_owner)
    assert total == max_attempts + 1
    print(f"SIGKILL inside attempt {kill_at} of {max_attempts}: {total} handler runs")


def test_r3_stop_then_restart_gives_the_record_fresh_attempts(kafka, make_topic, names) -> None:
    """Stop (like the circuit breaker) leaves the record uncommitted; the fixed code that
    starts next handles it with a full set of attempts instead of recovering it at once."""
    topic = make_topic()
    admin.produce(kafka, topic, ["ok", "bad"])
    group = names.group()
    retry = Retry.seek(BackOff.fixed(0.2, max_attempts=2))
    broken = App(kafka, group, kafka=FAST)
    attempts: list[tuple[str, int]] = []

    @broken.listener(topic, value_deserializer="str", retry=retry, recoverer=Stop())
    def handle(msg: Message) -> None:
        attempts.append(("broken", msg.attempt))
        if msg.value == "bad":
            raise ConnectionError("bug in this deployment")

    with pytest.raises(ListenerStopped, match=r"stopped at .*\[0\]@1 after 2 attempt"):
        with running(broken) as rec:
            wait_for(lambda: bool(rec.of(Stopped)), what="the stop")
    assert admin.committed_offsets(kafka, group, topic) == {0: 1}
    assert admin.committed_metadata(kafka, group, TopicPartition(topic, 0)) is None

    fixed = App(kafka, group, kafka=FAST)

    @fixed.listener(topic, value_deserializer="str", retry=retry, recoverer=Stop())
    def handle_fixed(msg: Message) -> None:
        attempts.append(("fixed", msg.attempt))

    with running(fixed):
        wait_for(lambda: admin.committed_offsets(kafka, group, topic) == {0: 2})
    assert attempts == [("broken", 1), ("broken", 1), ("broken", 2), ("fixed", 1)]
