"""Correct usage: `mypy --strict` must accept all of it (tests/unit/test_typing.py).

This file is type-checked, never run.
"""

from __future__ import annotations

import json
from collections.abc import Sequence
from typing import Any

from redrive import (
    App,
    BackOff,
    Call,
    Commit,
    DeadLetter,
    Message,
    Retry,
    RetryTopics,
    Skip,
    Stop,
)

app = App("127.0.0.1:9092", "g")


def decode(data: bytes | None) -> Any:
    return None if data is None else json.loads(data)


def on_failure(msg: Message, exc: BaseException) -> None: ...


@app.listener(
    "orders",
    group_id="billing",
    max_poll_records=3,
    key_deserializer="str",
    value_deserializer=decode,
    commit=Commit.per_record(),
    retry=Retry(backoff=BackOff.fixed(1.0, max_attempts=3)),
    recoverer=DeadLetter(),
    kafka={"fetch.max.bytes": 1048576, "client.id": "billing", "check.crcs": True},
    poll_timeout=1.0,
    name="billing",
)
def handle(msg: Message) -> None: ...


@app.listener(["a", "b"], recoverer=Skip(), retry=Retry.none(), value_deserializer="json")
async def handle_async(msg: Message) -> None: ...


@app.listener("c", concurrency=8, ordering="key", max_in_flight=64, drain_timeout=5)
async def handle_concurrently(msg: Message) -> None: ...


@app.listener("d", retry_topics=RetryTopics((1, 5, 30)), value_deserializer=lambda b: b)
def returns_something(msg: Message) -> int:
    return 1


@app.batch_listener("e", max_poll_records=100, commit=Commit.interval(5.0), recoverer=Stop())
def handle_batch(batch: list[Message]) -> None: ...


@app.batch_listener("f", recoverer=Call(on_failure))
async def handle_batch_async(batch: Sequence[Message]) -> None: ...


# The decorated functions keep their own types.
handle(Message("orders", 0, 0))
number: int = returns_something(Message("d", 0, 0))
handle_batch([Message("e", 0, 0)])
app.listener("g")(lambda msg: None)
