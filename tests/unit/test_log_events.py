"""`log_events`, the subscriber `redrive run` installs: one readable line per fact, at a level
that says how much it matters."""

from __future__ import annotations

import logging

import pytest

from redrive import BackOff, Retry
from redrive.events import (
    BackingOff,
    Committed,
    DeadLettered,
    Delivered,
    Event,
    EventBus,
    Failed,
    NotDue,
    RecoveryRetrying,
    Succeeded,
)
from redrive.message import TopicPartition
from redrive.observe.logs import log_events
from redrive.testing import FakeClient, FakeClock, loop_for

TP = TopicPartition("orders", 1)


def _lines(caplog: pytest.LogCaptureFixture, *events: Event, commits: bool = False):
    bus = EventBus()
    log_events(bus, commits=commits)
    with caplog.at_level(logging.DEBUG, logger="redrive.events"):
        for e in events:
            bus.emit(e)
    return [(r.levelname, r.getMessage()) for r in caplog.records if r.name == "redrive.events"]


def test_a_failure_a_retry_and_a_dead_letter(caplog) -> None:
    assert _lines(
        caplog,
        Failed("handle", TP, 7, 1, "ConnectionError", "payment service unavailable"),
        BackingOff("handle", TP, 7, 1, 1.234),
        Failed("handle", TP, 7, 2, "KeyError", "'sku'", fatal=True),
        DeadLettered("handle", TP, 7, "orders-dlt", 1, 0, 2),
    ) == [
        (
            "WARNING",
            "handle: orders[1]@7 failed (attempt 1): ConnectionError: payment service unavailable",
        ),
        ("INFO", "handle: orders[1]@7 retry in 1.2 s (attempt 2 next)"),
        ("WARNING", "handle: orders[1]@7 failed (attempt 2, fatal: not retried): KeyError: 'sku'"),
        ("WARNING", "handle: orders[1]@7 dead-lettered to orders-dlt[1]@0 after 2 attempt(s)"),
    ]


def test_a_recovery_that_must_be_tried_again_is_an_error(caplog) -> None:
    error = "dead-letter topic orders-dlt is not available"
    assert _lines(caplog, RecoveryRetrying("handle", TP, 7, error)) == [
        ("ERROR", f"handle: orders[1]@7 not recovered, stays uncommitted, trying again: {error}")
    ]


def test_a_record_not_due_is_a_debug_line(caplog) -> None:
    assert _lines(caplog, NotDue("handle-retry", TP, 3, due=1002.5, ts=1000.0)) == [
        ("DEBUG", "handle-retry: orders[1]@3 not due for 2.5 s: partition paused")
    ]


def test_the_steps_of_every_record_are_not_logged(caplog) -> None:
    quiet = (Delivered("handle", ((TP, 7, 1),)), Succeeded("handle", TP, 7))
    assert _lines(caplog, *quiet, Committed("handle", ((TP, 8),))) == []
    assert _lines(caplog, Committed("handle", ((TP, 8),)), commits=True) == [
        ("INFO", "handle: committed orders[1]=8 (poll)")
    ]


def test_a_loop_that_retries_then_gives_up_logs_each_failure_once(caplog) -> None:
    clock = FakeClock()
    client = FakeClient(clock=clock)
    client.add("orders", [b"m1"])
    bus = EventBus()
    log_events(bus)

    def handle(msg: object) -> None:
        raise ConnectionError("payment service unavailable")

    retry = Retry(backoff=BackOff.fixed(1.5, max_attempts=2))
    loop = loop_for(handle, client, topics=("orders",), retry=retry, clock=clock, bus=bus)
    with caplog.at_level(logging.INFO, logger="redrive.events"):
        loop.start()
        loop.run_until_idle()
        loop.close()
    lines = [r.getMessage() for r in caplog.records if r.name == "redrive.events"]
    failed = [line for line in lines if "failed" in line]
    assert failed == [
        "test: orders[0]@0 failed (attempt 1): ConnectionError: payment service unavailable",
        "test: orders[0]@0 failed (attempt 2): ConnectionError: payment service unavailable",
    ]
    assert "test: orders[0]@0 retry in 1.5 s (attempt 2 next)" in lines
