"""The share loop on a fake share client (no broker): what the broker is told about each
record of a poll (accept / release / reject), when, and what reaches the handler and the
recoverer. The clock is a fake one: a handler or a wait moves it on."""

from __future__ import annotations

import logging
from collections import deque
from collections.abc import Callable, Sequence
from typing import Any

import pytest
from confluent_kafka import KafkaError, KafkaException

from redrive import BackOff, ClientError, Defer, Message, Retry
from redrive.consumer.counted import CountedFailures
from redrive.consumer.spec import ListenerSpec
from redrive.errors import BatchFailed, ListenerStopped
from redrive.events import EventBus
from redrive.message import TopicPartition
from redrive.recover.base import Context, ListenerContext, Recoverer
from redrive.recover.breaker import CircuitBreaker
from redrive.share import ShareGroup
from redrive.share.client import ShareClient, delivery_count
from redrive.share.group import Effective
from redrive.share.loop import Members, ShareLoop
from redrive.testing import FakeRecord

LOCK = 30.0


class Clock:
    def __init__(self) -> None:
        self.now = 0.0

    def __call__(self) -> float:
        return self.now

    def advance(self, seconds: float) -> None:
        self.now += seconds


class ShareRecord(FakeRecord):
    """A record as the share consumer gives it: with its delivery count."""

    __slots__ = ("_count",)

    def __init__(self, offset: int, count: int | None = 1) -> None:
        super().__init__("t", 0, offset, None, b"v%d" % offset)
        self._count = count

    def delivery_count(self) -> int | None:
        return self._count


class FakeShareClient:
    """The ``ShareClient`` calls the loop makes, recorded; polls answered from a list."""

    def __init__(self, *polls: Sequence[ShareRecord]) -> None:
        self.polls = deque(list(p) for p in polls)
        self.answers: dict[int, str] = {}  # offset -> the last answer sent
        self.pending: list[tuple[int, str]] = []
        self.closed = False

    def subscribe(self, topics: Sequence[str]) -> None:
        pass

    def poll(self, timeout: float) -> list[ShareRecord]:
        return self.polls.popleft() if self.polls else []

    def acknowledge(self, record: ShareRecord, outcome: str) -> None:
        self.pending.append((record.offset(), outcome))

    def commit(self, timeout: float = 30.0) -> dict[TopicPartition, str | None] | None:
        self.answers.update(self.pending)
        self.pending = []
        return {}

    def close(self) -> None:
        self.closed = True


def spec(handler: Callable[[Any], Any], recoverer: Recoverer, *, batch: bool = False,
         max_poll_records: int = 10, attempts: int = 10) -> ListenerSpec:  # fmt: skip
    return ListenerSpec(
        name="l", topics=("t",), group_id="g", handler=handler, batch=batch,
        max_poll_records=max_poll_records, key_deserializer=None, value_deserializer=None,
        commit=None,  # type: ignore[arg-type]
        retry=Retry(backoff=BackOff.fixed(1.0, max_attempts=attempts)), recoverer=recoverer,
        share=ShareGroup(),
    )  # fmt: skip


def loop(listener: ListenerSpec, client: FakeShareClient, clock: Clock, *, limit: int = 5,
         members: Members | None = None) -> ShareLoop:  # fmt: skip
    return ShareLoop(
        listener, client,  # type: ignore[arg-type]
        limit=limit, lock=LOCK, members=members, clock=clock, pause=clock.advance,
    )  # fmt: skip


class Flaky(Recoverer):
    """Fails `failures` times, then writes; counts its life cycle."""

    def __init__(self, failures: int = 0) -> None:
        self.failures = failures
        self.written: list[tuple[int, str]] = []
        self.tries = 0
        self.starts = 0
        self.closes = 0

    def start(self, listener: ListenerContext) -> None:
        self.starts += 1

    def recover(self, msg: Message, exc: BaseException, ctx: Context) -> None:
        self.tries += 1
        if self.tries <= self.failures:
            raise OSError("dead-letter topic unavailable")
        self.written.append((msg.offset, type(exc).__name__))

    def close(self) -> None:
        self.closes += 1


# -- finding: a record at the delivery limit is never released --------------------------


def test_a_stop_during_the_poll_does_not_release_a_record_at_the_limit() -> None:
    clock = Clock()
    client = FakeShareClient([ShareRecord(1), ShareRecord(2, count=5), ShareRecord(3)])
    recoverer = Flaky()
    seen: list[int] = []
    share: ShareLoop

    def handle(msg: Message) -> None:
        seen.append(msg.offset)
        share.stop()  # a SIGTERM while the first record is handled

    share = loop(spec(handle, recoverer), client, clock)
    share.run_once()
    assert seen == [1]
    assert recoverer.written == [(2, "DeliveryLimitReached")]
    assert client.answers == {1: "accept", 2: "reject", 3: "release"}


def test_a_record_at_the_limit_gets_its_dead_letter_before_slow_records_use_up_its_lock() -> None:
    clock = Clock()
    client = FakeShareClient([ShareRecord(1), ShareRecord(2), ShareRecord(3, count=5)])
    recoverer = Flaky()

    def handle(msg: Message) -> None:
        clock.advance(LOCK)  # the lock of the poll expires while the first is handled

    share = loop(spec(handle, recoverer), client, clock)
    share.run_once()
    assert recoverer.written == [(3, "DeliveryLimitReached")]
    assert client.answers == {1: "accept", 2: "release", 3: "reject"}


def test_a_stop_while_a_record_at_the_limit_is_recovered_keeps_trying_its_dead_letter() -> None:
    clock = Clock()
    recoverer = Flaky(failures=3)
    engine = CountedFailures(
        spec(lambda m: None, recoverer), EventBus(), 5, lambda s: False,  # stopping: no sleep
        stopping=lambda: True, expires=lambda: LOCK, clock=clock, pause=clock.advance,
    )  # fmt: skip
    assert engine.gate(Message("t", 0, 7, value=b"v", attempt=5)) == "reject"
    assert recoverer.written == [(7, "DeliveryLimitReached")] and recoverer.tries == 4
    assert 0 < clock.now < LOCK


def test_a_stop_past_the_lock_of_a_record_at_the_limit_ends_the_retries_with_an_error(
    caplog: pytest.LogCaptureFixture,
) -> None:
    clock = Clock()
    recoverer = Flaky(failures=1000)
    engine = CountedFailures(
        spec(lambda m: None, recoverer), EventBus(), 5, lambda s: False,
        stopping=lambda: True, expires=lambda: LOCK, clock=clock, pause=clock.advance,
    )  # fmt: skip
    with caplog.at_level(logging.ERROR):
        engine.gate(Message("t", 0, 7, value=b"v", attempt=5))
    assert clock.now >= LOCK and recoverer.written == []  # tried for the whole lock
    assert "archives it without a dead letter" in caplog.text


def test_a_circuit_breaker_tripping_on_a_record_at_the_limit_still_dead_letters_it() -> None:
    clock = Clock()
    client = FakeShareClient([ShareRecord(1, count=5), ShareRecord(2)])
    inner = Flaky()
    seen: list[int] = []
    share = loop(spec(lambda m: seen.append(m.offset), CircuitBreaker(inner, in_a_row=1)),
                 client, clock)  # fmt: skip
    share.start()
    with pytest.raises(ListenerStopped, match="dead-lettered all the same"):
        share.run_once()
    assert inner.written == [(1, "DeliveryLimitReached")] and seen == []
    assert client.answers == {1: "reject", 2: "release"}


def test_the_breaker_says_a_share_record_it_did_not_recover_is_released() -> None:
    clock = Clock()
    client = FakeShareClient([ShareRecord(1)])

    def handle(msg: Message) -> None:
        raise KeyError("fatal")

    share = loop(spec(handle, CircuitBreaker(Flaky(), in_a_row=1)), client, clock)
    share.start()
    with pytest.raises(ListenerStopped) as stopped:
        share.run_once()
    assert "released to the share group" in str(stopped.value)
    assert "uncommitted" not in str(stopped.value)
    assert client.answers == {1: "release"}  # below the limit: delivered again


# -- finding: dead-letter retries are bounded by the lock ------------------------------


def test_a_failing_dead_letter_write_is_retried_until_the_lock_expires_then_released() -> None:
    clock = Clock()
    recoverer = Flaky(failures=100)

    def sleep(seconds: float) -> bool:
        clock.advance(seconds)
        return True  # not stopping

    engine = CountedFailures(spec(lambda m: None, recoverer), EventBus(), 5, sleep,
                             expires=lambda: LOCK, clock=clock)  # fmt: skip
    assert engine.failed(Message("t", 0, 7, value=b"v", attempt=1), KeyError("x")) == "release"
    assert clock.now == pytest.approx(LOCK) and recoverer.written == []


# -- finding: the delivery limit is read again ------------------------------------------


def test_a_delivery_limit_lowered_on_the_broker_is_applied_and_never_raised_again() -> None:
    clock = Clock()
    reads = deque([Effective(3, LOCK, "earliest"), Effective(10, LOCK, "earliest")])
    recoverer = Flaky()
    members = Members(spec(lambda m: None, recoverer), 5, LOCK, reads.popleft, clock=clock)
    seen: list[int] = []
    client = FakeShareClient([ShareRecord(1, count=3)], [ShareRecord(2, count=4)])
    share = loop(spec(lambda m: seen.append(m.offset), recoverer), client, clock,
                 members=members)  # fmt: skip
    clock.advance(LOCK)  # time to read the group's settings again: limit 3
    share.run_once()
    clock.advance(LOCK)  # the limit read is 10 now: the lowest seen stays
    share.run_once()
    assert seen == []
    assert recoverer.written == [(1, "DeliveryLimitReached"), (2, "DeliveryLimitReached")]
    assert client.answers == {1: "reject", 2: "reject"}


def test_a_share_group_leaves_unset_settings_alone() -> None:
    assert ShareGroup().configs() == {}
    assert ShareGroup(delivery_limit=4).configs() == {"share.delivery.count.limit": "4"}


# -- finding: no made-up delivery count -------------------------------------------------


def test_a_record_without_a_delivery_count_is_an_error_naming_the_versions() -> None:
    with pytest.raises(ClientError, match=r"confluent-kafka .* tested with confluent-kafka"):
        delivery_count(ShareRecord(1, count=None))  # type: ignore[arg-type]


# -- finding: members share one recoverer -----------------------------------------------


def test_members_start_and_close_their_shared_recoverer_once_and_count_together() -> None:
    clock = Clock()
    recoverer = Flaky()
    listener = spec(lambda m: None, recoverer)
    members = Members(listener, 5, LOCK, clock=clock)
    handled: list[Callable[[], int]] = []
    recoverer.start = lambda ctx: handled.append(ctx.handled)  # type: ignore[method-assign]
    first = loop(listener, FakeShareClient([ShareRecord(1)]), clock, members=members)
    second = loop(listener, FakeShareClient([ShareRecord(2), ShareRecord(3)]), clock,
                  members=members)  # fmt: skip
    first.start()
    second.start()
    first.run_once()
    second.run_once()
    assert len(handled) == 1 and handled[0]() == 3  # both members' records
    first.close()
    assert recoverer.closes == 0  # the other member still writes dead letters
    second.close()
    assert recoverer.closes == 1


# -- finding: the lock of records acquired by an earlier poll ---------------------------


def test_the_lock_counts_from_the_poll_that_acquired_the_records_held_over() -> None:
    clock = Clock()
    # the client acquired four records in one producer batch; polls hand over two at a time
    client = FakeShareClient([ShareRecord(1), ShareRecord(2)], [ShareRecord(3), ShareRecord(4)])
    seen: list[int] = []

    def handle(msg: Message) -> None:
        seen.append(msg.offset)
        clock.advance(10)

    share = loop(spec(handle, Flaky(), max_poll_records=2), client, clock)
    share.run_once()
    share.run_once()  # at 20 s: the locks taken at 0 s expire at 30 s
    assert seen == [1, 2, 3]
    assert client.answers == {1: "accept", 2: "accept", 3: "accept", 4: "release"}


def test_a_steady_stream_of_full_polls_is_not_released_forever() -> None:
    clock = Clock()
    polls = [[ShareRecord(2 * i + 1), ShareRecord(2 * i + 2)] for i in range(4)]
    client = FakeShareClient(*polls)
    seen: list[int] = []

    def handle(msg: Message) -> None:
        seen.append(msg.offset)
        clock.advance(10)

    share = loop(spec(handle, Flaky(), max_poll_records=2), client, clock)
    for _ in polls:
        share.run_once()
    # the third poll (at 30 s) counts from itself: what came before is past its lock anyway
    assert seen == [1, 2, 3, 5, 6, 7]
    assert [o for o, a in sorted(client.answers.items()) if a == "release"] == [4, 8]


# -- finding: a Defer releases ---------------------------------------------------------


@pytest.mark.parametrize("batch", [False, True])
def test_a_defer_releases_the_record_without_a_dead_letter(batch: bool) -> None:
    clock = Clock()
    client = FakeShareClient([ShareRecord(1, count=4)])  # a failure would be its last
    recoverer = Flaky()

    def handle(arg: Any) -> None:
        raise Defer(5.0)

    loop(spec(handle, recoverer, batch=batch), client, clock).run_once()
    assert recoverer.written == [] and client.answers == {1: "release"}


def test_a_batch_failure_naming_a_record_accepts_those_before_it() -> None:
    clock = Clock()
    client = FakeShareClient([ShareRecord(1), ShareRecord(2), ShareRecord(3)])
    calls: list[list[int]] = []

    def handle(batch: list[Message]) -> None:
        calls.append([m.offset for m in batch])
        if len(calls) == 1:
            raise BatchFailed(index=1) from ConnectionError("down")

    loop(spec(handle, Flaky(), batch=True), client, clock).run_once()
    assert calls == [[1, 2, 3], [3]]
    assert client.answers == {1: "accept", 2: "release", 3: "accept"}


# -- finding: a transient commit error does not stop the listener -----------------------


class Consumer:
    def __init__(self, err: KafkaError) -> None:
        self.err = err

    def commit_sync(self, timeout: float) -> None:
        raise KafkaException(self.err)


def share_client(err: KafkaError) -> ShareClient:
    client = ShareClient.__new__(ShareClient)
    client._consumer = Consumer(err)  # type: ignore[assignment]
    client.servers = "127.0.0.1:1"
    return client


def test_a_transient_commit_error_is_logged_and_the_listener_goes_on(
    caplog: pytest.LogCaptureFixture,
) -> None:
    with caplog.at_level(logging.WARNING):
        assert share_client(KafkaError(KafkaError._TIMED_OUT)).commit() is None
    assert "come back to the group when their locks expire" in caplog.text
    with pytest.raises(ClientError):
        share_client(KafkaError(KafkaError._FATAL, fatal=True)).commit()


# -- finding: no client left open at start ----------------------------------------------


def test_start_leaves_no_share_or_broker_check_client_open(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    import redrive.app
    import redrive.share.client
    import redrive.share.group
    from redrive import App, ConfigError

    checks: list[FakeShareClient] = []
    members: list[FakeShareClient] = []

    def check_client(settings: Any) -> FakeShareClient:
        checks.append(FakeShareClient())
        return checks[-1]

    def member_client(settings: Any) -> FakeShareClient:
        if len(members) == 2:  # the second listener's client: a bad setting
            raise ConfigError("kafka:x", "refused")
        members.append(FakeShareClient())
        return members[-1]

    monkeypatch.setattr(redrive.app, "ConfluentClient", check_client)
    monkeypatch.setattr(App, "_wait_for_brokers", lambda self, clients: True)
    monkeypatch.setattr(App, "_ensure_topics", lambda self: [])
    monkeypatch.setattr(redrive.share.group, "apply", lambda *a: Effective(5, LOCK, "earliest"))
    monkeypatch.setattr(redrive.share.group, "reader", lambda *a: lambda: Effective(5, LOCK, ""))
    monkeypatch.setattr(redrive.share.client, "ShareClient", member_client)

    app = App("127.0.0.1:1", "g")
    app.share_listener("a", consumers=2)(lambda m: None)
    app.share_listener("b")(lambda m: None)
    with pytest.raises(ConfigError):
        app.start()
    assert [c.closed for c in checks] == [True] * len(checks) and len(checks) == 2
    assert [c.closed for c in members] == [True, True]

    checks.clear()
    members.clear()
    app = App("127.0.0.1:1", "g")
    app.share_listener("a")(lambda m: None)
    monkeypatch.setattr(App, "_run_loop", lambda self, loop: None)
    app.start()
    app.join()
    assert [c.closed for c in checks] == [True] and [c.closed for c in members] == [False]
