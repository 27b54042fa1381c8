"""Retry-topic chain naming, validation and header encodings (no broker)."""

from __future__ import annotations

import asyncio
import inspect
import struct
import time

import pytest

from redrive import ConfigError, Defer, Message, RetryTopics
from redrive import headers as h
from redrive.topics.hop import due_gate


def test_one_topic_per_delay_or_one_reused_topic() -> None:
    chain = RetryTopics((1, 5, 30))
    assert chain.retry_topics("orders") == ("orders-retry-0", "orders-retry-1", "orders-retry-2")
    assert chain.dlt("orders") == "orders-dlt"
    assert RetryTopics.fixed(2.0, attempts=3).retry_topics("orders") == ("orders-retry",)
    assert RetryTopics.exponential(1, max_delay=4, attempts=4).delays == (1, 2, 4, 4)


@pytest.mark.parametrize(
    "make",
    [
        lambda: RetryTopics(()),
        lambda: RetryTopics((1, -1)),
        lambda: RetryTopics((1,), max_total=0),
        lambda: RetryTopics.fixed(1, attempts=0),
    ],
)
def test_invalid_chains_name_the_setting(make) -> None:
    with pytest.raises(ConfigError, match="retry_topics"):
        make()


@pytest.mark.parametrize(
    ("n", "java"),
    [(0, b"\x00"), (2, b"\x02"), (127, b"\x7f"), (128, b"\x00\x80"),
     (1_700_000_000_123, bytes.fromhex("018bcfe5687b"))],
)  # fmt: skip
def test_big_integer_encoding_matches_java(n: int, java: bytes) -> None:
    assert h.big_int(n) == java
    assert h.from_big_int(java) == n


def test_attempts_as_four_byte_int_decode_too() -> None:
    assert h.decode([(h.RETRY_ATTEMPTS, struct.pack(">i", 3))]) == {h.RETRY_ATTEMPTS: 3}


def test_due_gate_defers_a_record_until_its_due_time() -> None:
    seen: list[Message] = []
    gate = due_gate(seen.append, batch=False)
    later = h.big_int(int(time.time() * 1000) + 60_000)
    msg = Message(
        "t-retry", 0, 0, headers=((h.RETRY_BACKOFF_TIMESTAMP, later), (h.RETRY_ATTEMPTS, b"\x02"))
    )
    with pytest.raises(Defer) as d:
        gate(msg)
    assert 55 < d.value.delay <= 60 and not seen
    due = Message("t-retry", 0, 1, headers=((h.RETRY_BACKOFF_TIMESTAMP, h.big_int(0)),
                                            (h.RETRY_ATTEMPTS, b"\x03")))  # fmt: skip
    gate(due)
    assert seen == [due] and due.attempt == 3


def test_due_gate_keeps_async_handlers_async() -> None:
    seen: list[int] = []

    async def handle(msg: Message) -> None:
        seen.append(msg.attempt)

    gate = due_gate(handle, batch=False)
    assert inspect.iscoroutinefunction(gate)
    msg = Message("t-retry", 0, 0, headers=((h.RETRY_ATTEMPTS, b"\x02"),))
    asyncio.run(gate(msg))
    assert seen == [2]


def test_batch_gate_hands_over_the_due_prefix_then_defers() -> None:
    calls: list[list[int]] = []
    gate = due_gate(lambda batch: calls.append([m.offset for m in batch]), batch=True)
    later = h.big_int(int(time.time() * 1000) + 60_000)
    batch = [
        Message("t-retry", 0, 0),
        Message("t-retry", 0, 1, headers=((h.RETRY_BACKOFF_TIMESTAMP, later),)),
        Message("t-retry", 0, 2),
    ]
    with pytest.raises(Defer) as d:
        gate(batch)
    assert calls == [[0]] and d.value.index == 1
