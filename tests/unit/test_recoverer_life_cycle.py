"""The recoverer life cycle: start, recover, close, describe, declared by ``Recoverer``;
the dead-letter publisher and the retry-topic chain recoverer on a fake producer."""

from __future__ import annotations

from dataclasses import replace
from typing import Any

import pytest

from redrive import Call, CircuitBreaker, DeadLetter, ListenerStopped, Message, Skip, Stop
from redrive import headers as h
from redrive.events import DeadLettered, Event, EventBus, RetryHop, Skipped
from redrive.publish import Publisher
from redrive.recover import DEFAULT_IN_A_ROW, default_recoverer
from redrive.recover.base import Context, ListenerContext, Recoverer
from redrive.topics import ChainRecoverer, RetryTopics

from .fake_producer import Factory

KAFKA = {"bootstrap.servers": "k:9092", "group.id": "billing"}
LISTENER = ListenerContext(name="handle", group_id="billing", kafka=KAFKA, handled=lambda: 0)


def context(bus: EventBus | None = None, attempts: int = 3, interruptions: int = 0) -> Context:
    return Context("handle", "billing", attempts, 1_700_000_000.0, bus or EventBus(), KAFKA,
                   interruptions)  # fmt: skip


def recording() -> tuple[EventBus, list[Event]]:
    bus, events = EventBus(), []
    bus.subscribe(events.append)
    return bus, events


class Spy(Recoverer):
    def __init__(self) -> None:
        self.calls: list[str] = []

    def start(self, listener: ListenerContext) -> None:
        self.calls.append(f"start {listener.name}")

    def recover(self, msg: Message, exc: BaseException, ctx: Context) -> None:
        self.calls.append(f"recover {msg.offset}")

    def close(self) -> None:
        self.calls.append("close")


def test_a_recoverer_must_say_how_it_recovers() -> None:
    class Nothing(Recoverer):
        pass

    with pytest.raises(TypeError, match="recover"):
        Nothing()  # type: ignore[abstract]


def test_start_close_and_describe_have_defaults() -> None:
    class Minimal(Recoverer):
        def recover(self, msg: Message, exc: BaseException, ctx: Context) -> None:
            pass

    r = Minimal()
    r.start(LISTENER)
    r.close()
    assert r.describe() == "Minimal"


def test_skip_stop_and_call_describe_themselves() -> None:
    bus, events = recording()
    skip = Skip()
    skip.start(LISTENER)
    skip.recover(Message("t", 0, 4), ValueError("bad"), context(bus))
    skip.close()
    assert [type(e) for e in events] == [Skipped]
    with pytest.raises(ListenerStopped, match=r"t\[0\]@4 after 3 attempt"):
        Stop().recover(Message("t", 0, 4), ValueError("bad"), context())

    def park(msg: Message, exc: BaseException) -> None:
        pass

    assert (Skip().describe(), Stop().describe(), Call(park).describe()) == (
        "skip (log and move on)", "stop the listener",
        "call test_skip_stop_and_call_describe_themselves.<locals>.park",
    )  # fmt: skip


def test_the_breaker_starts_and_closes_what_it_wraps() -> None:
    inner = Spy()
    breaker = CircuitBreaker(inner, in_a_row=3)
    breaker.start(LISTENER)
    breaker.recover(Message("t", 0, 1), ValueError("bad"), context())
    breaker.close()
    assert inner.calls == ["start handle", "recover 1", "close"]
    assert breaker.describe() == "Spy behind a circuit breaker (3 in a row)"


def test_the_breaker_has_one_default_threshold() -> None:
    assert DEFAULT_IN_A_ROW == 100
    assert CircuitBreaker().in_a_row == default_recoverer().in_a_row == DEFAULT_IN_A_ROW
    assert isinstance(default_recoverer().recoverer, DeadLetter)
    assert default_recoverer().describe() == (
        "dead letter to <topic>-dlt (broker-confirmed before commit) behind a circuit breaker "
        "(100 in a row)"
    )


def fake_publisher(recoverer: DeadLetter | ChainRecoverer, **topics: int) -> Factory:
    factory = Factory(**topics)
    recoverer.publisher = Publisher(factory=factory)
    return factory


def test_dead_letter_creates_its_producer_at_start_and_drops_it_at_close() -> None:
    dead = DeadLetter()
    factory = fake_publisher(dead, orders_dlt=4)
    dead.start(LISTENER)
    assert len(factory.made) == 1 and factory.producer.settings["enable.idempotence"] is True
    dead.close()
    assert factory.producer.flushes == 1


def test_dead_letter_writes_to_the_same_partition_and_emits_the_event() -> None:
    dead = DeadLetter()
    factory = fake_publisher(dead, orders_dlt=4)
    dead.start(LISTENER)
    bus, events = recording()
    msg = Message("orders", 2, 9, raw_key=b"k", raw_value=b"v", headers=(("trace", b"t"),))
    dead.recover(msg, ValueError("bad"), context(bus, interruptions=2))
    (sent,) = factory.producer.sent
    assert (sent.topic, sent.partition, sent.key, sent.value) == ("orders-dlt", 2, b"k", b"v")
    d = h.decode(sent.headers)
    assert sent.headers[0] == ("trace", b"t")
    assert d[h.DLT_ORIGINAL_OFFSET] == 9 and d[h.REDRIVE_ATTEMPTS] == 3
    assert d[h.REDRIVE_INTERRUPTIONS] == 2
    assert same(events, [DeadLettered("handle", msg.tp, 9, "orders-dlt", 2, 0, 3)])


def same(events: list[Event], expected: list[Event]) -> bool:
    """Equal but for the time they were emitted."""
    return [replace(e, ts=0.0) for e in events] == [replace(e, ts=0.0) for e in expected]


def chain_recoverer() -> tuple[ChainRecoverer, Factory]:
    chain = ChainRecoverer(RetryTopics((1.0, 5.0)), ["orders"], "billing")
    factory = fake_publisher(chain, orders_retry_0=2, orders_retry_1=2, orders_dlt=2)
    chain.start(LISTENER)
    return chain, factory


def test_chain_hops_to_the_next_retry_topic_then_the_dead_letter_topic() -> None:
    chain, factory = chain_recoverer()
    bus, events = recording()
    source = Message("orders", 1, 5, raw_value=b"v", timestamp=1_000, timestamp_type=1)
    chain.recover(source, ConnectionError("bad"), context(bus, attempts=1))
    first = factory.producer.sent[-1]
    assert (first.topic, first.partition) == ("orders-retry-0", 1)
    d = h.decode(first.headers)
    assert d[h.RETRY_ATTEMPTS] == 2 and d[h.RETRY_ORIGINAL_TIMESTAMP] == 1_000
    assert dict(first.headers)[h.RETRY_ATTEMPTS] == b"\x00\x00\x00\x02"  # as Spring 4.1
    # Spring's retry-topic family on a hop, not the dead-letter one
    assert d[h.ORIGINAL_TOPIC] == "orders" and d[h.REDRIVE_ATTEMPTS] == 1
    assert h.DLT_ORIGINAL_TOPIC not in d and d[h.EXCEPTION_FQCN] == "ConnectionError"
    (hop,) = events
    assert isinstance(hop, RetryHop) and (hop.topic, hop.attempt) == ("orders-retry-0", 2)
    assert hop.due * 1000 == d[h.RETRY_BACKOFF_TIMESTAMP]

    on_retry = Message("orders-retry-1", 1, 0, raw_value=b"v", headers=(
        *(kv for kv in first.headers if kv[0] != h.RETRY_ATTEMPTS), (h.RETRY_ATTEMPTS, b"\x03")
    ))  # fmt: skip
    chain.recover(on_retry, ConnectionError("still bad"), context(bus, attempts=1))
    last = factory.producer.sent[-1]
    assert (last.topic, last.partition) == ("orders-dlt", 1)
    d = h.decode(last.headers)
    assert h.RETRY_BACKOFF_TIMESTAMP not in d
    assert d[h.RETRY_ATTEMPTS] == 4 and d[h.REDRIVE_ATTEMPTS] == 3
    assert d[h.ORIGINAL_TOPIC] == "orders" and d[h.ORIGINAL_OFFSET] == 5
    assert d[h.EXCEPTION_MESSAGE] == "still bad" and h.DLT_ORIGINAL_TOPIC not in d
    assert d[h.REDRIVE_FIRST_FAILURE] == h.decode(first.headers)[h.REDRIVE_FIRST_FAILURE]
    assert same(events[-1:], [DeadLettered("handle", on_retry.tp, 0, "orders-dlt", 1, 0, 3)])
    names = [k for k, _ in last.headers]
    assert all(names.count(k) == 1 for k in names)  # replaced, not piled up


def test_chain_sends_fatal_errors_straight_to_the_dead_letter_topic() -> None:
    chain, factory = chain_recoverer()
    chain.recover(Message("orders", 0, 1), TypeError("fatal"), context(attempts=1))
    assert factory.producer.sent[-1].topic == "orders-dlt"


def test_chain_describes_itself_and_closes_its_publisher() -> None:
    chain, factory = chain_recoverer()
    assert chain.describe() == (
        "retry topics (1s, 5s), then <topic>-dlt (broker-confirmed before commit)"
    )
    chain.close()
    assert factory.producer.flushes == 1


def test_every_recoverer_is_one() -> None:
    recoverers: list[Any] = [Skip(), Stop(), Call(print), DeadLetter(), CircuitBreaker(),
                             ChainRecoverer(RetryTopics(), ["t"], "g")]  # fmt: skip
    assert all(isinstance(r, Recoverer) for r in recoverers)


def test_chain_takes_over_a_hop_a_spring_chain_wrote() -> None:
    chain, factory = chain_recoverer()
    spring_hop = Message("orders-retry-0", 1, 3, raw_value=b"v", timestamp=9_000, headers=(
        (h.ORIGINAL_TOPIC, b"orders"), (h.ORIGINAL_PARTITION, h.int32(1)),
        (h.ORIGINAL_OFFSET, h.int64(77)), (h.ORIGINAL_TIMESTAMP, h.int64(1_000)),
        (h.ORIGINAL_TIMESTAMP_TYPE, b"CreateTime"),
        (h.EXCEPTION_FQCN, b"org.springframework.kafka.listener.ListenerExecutionFailedException"),
        (h.EXCEPTION_CAUSE_FQCN, b"java.lang.IllegalStateException"),
        (h.RETRY_ATTEMPTS, h.int32(2)), (h.RETRY_ORIGINAL_TIMESTAMP, h.big_int(1_000)),
        (h.RETRY_BACKOFF_TIMESTAMP, h.big_int(8_000)),
    ))  # fmt: skip
    chain.recover(spring_hop, ConnectionError("not yet"), context(None, attempts=1))
    sent = factory.producer.sent[-1]
    assert sent.topic == "orders-retry-1"  # attempt 2 failed: the second retry topic
    d = h.decode(sent.headers)
    assert (d[h.ORIGINAL_TOPIC], d[h.ORIGINAL_OFFSET], d[h.ORIGINAL_TIMESTAMP]) == (
        "orders", 77, 1_000
    )  # fmt: skip
    assert d[h.RETRY_ATTEMPTS] == 3 and d[h.RETRY_ORIGINAL_TIMESTAMP] == 1_000
    assert d[h.EXCEPTION_FQCN] == d[h.EXCEPTION_CAUSE_FQCN] == "ConnectionError"
    names = [k for k, _ in sent.headers]
    assert all(names.count(k) == 1 for k in names)
