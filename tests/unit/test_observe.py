"""The parts of redrive.observe that need no broker: metric labels stay bounded, lag is read
from librdkafka's statistics, a written record carries one trace context, and the README
lists every metric."""

from __future__ import annotations

import json
from pathlib import Path

from redrive import BackOff, Retry
from redrive import headers as h
from redrive.consumer.client import lag_of
from redrive.events import (
    Delivered,
    EventBus,
    Handled,
    Polled,
    Succeeded,
)
from redrive.message import TopicPartition
from redrive.observe import Metrics, Probes
from redrive.observe.metrics import METRICS
from redrive.observe.probes import KINDS
from redrive.testing import FakeClient, FakeClock, loop_for

README = Path(__file__).parents[2] / "README.md"


class A(Exception): ...


class B(Exception): ...


class C(Exception): ...


def test_exception_labels_are_capped_and_the_rest_counted_as_other() -> None:
    clock = FakeClock()
    client = FakeClient(clock=clock)
    client.add("t", [b"a", b"b", b"c", b"c", b"ok"])
    errors = {b"a": A, b"b": B, b"c": C}

    def handle(msg: object) -> None:
        value = msg.value  # type: ignore[attr-defined]
        if value in errors:
            raise errors[value](value)

    bus = EventBus()
    metrics = Metrics(max_exception_labels=2, per_record=True)
    bus.subscribe(metrics, metrics.kinds)
    loop = loop_for(handle, client, bus=bus, retry=Retry(BackOff.none()), max_poll_records=10)
    loop.start()
    loop.run_until_idle()
    sample = metrics.registry.get_sample_value

    def failed(exception: str) -> float | None:
        return sample("redrive_records_failed_total",
                      {"listener": "test", "topic": "t", "exception": exception})  # fmt: skip

    assert (failed("A"), failed("B"), failed("other"), failed("C")) == (1, 1, 2, None)
    assert sample("redrive_records_handled_total", {"listener": "test"}) == 1
    outcome = {"listener": "test", "topic": "t", "outcome": "skip"}
    assert sample("redrive_records_recovered_total", outcome) == 4
    assert sample("redrive_handler_duration_seconds_count", {"listener": "test"}) == 5


def test_metrics_alone_keep_the_events_of_every_record_unbuilt() -> None:
    client = FakeClient(clock=FakeClock())
    client.add("t", [b"a", b"b", b"c", b"d"])
    bus = EventBus()
    metrics = Metrics()
    bus.subscribe(metrics, metrics.kinds)
    probes = Probes()
    bus.subscribe(probes, KINDS)
    assert bus and not bus.records and not bus.wants(Polled)
    kinds: list[str] = []
    bus.subscribe(lambda e: kinds.append(e.kind), (Polled, Handled, Delivered, Succeeded))
    assert bus.records, "a subscriber of Delivered turns them on"
    loop = loop_for(lambda m: None, client, bus=bus, max_poll_records=10)
    loop.start()
    loop.run_until_idle()
    assert kinds[:2] == ["Polled", "Delivered"] and kinds.count("Succeeded") == 4
    assert kinds.count("Handled") == 1
    sample = metrics.registry.get_sample_value
    assert sample("redrive_records_handled_total", {"listener": "test"}) == 4
    assert sample("redrive_handling_duration_seconds_count", {"listener": "test"}) == 1
    assert sample("redrive_handler_duration_seconds_count", {"listener": "test"}) is None


def test_paused_partitions_get_a_due_gauge_removed_on_resume() -> None:
    clock = FakeClock()
    client = FakeClient(clock=clock)
    client.add("t", [b"x"])
    calls = []

    def handle(msg: object) -> None:
        calls.append(msg)
        if len(calls) == 1:
            raise A("once")

    bus = EventBus()
    metrics = Metrics()
    bus.subscribe(metrics, metrics.kinds)
    seen: list[float | None] = []
    labels = {"listener": "test", "topic": "t", "partition": "0"}
    bus.subscribe(lambda e: seen.append(metrics.registry.get_sample_value(
        "redrive_partition_paused_until_timestamp_seconds", labels)))  # fmt: skip
    loop = loop_for(handle, client, bus=bus, retry=Retry(BackOff.fixed(5.0)))
    loop.start()
    loop.run_until_idle()
    assert any(v is not None for v in seen), "set while the partition waited"
    assert seen[-1] is None, "removed once it resumed"
    assert metrics.registry.get_sample_value("redrive_paused_partitions", {"listener": "test"}) == 0
    assert len(calls) == 2


def test_probes_are_not_live_when_no_poll_came_within_the_interval() -> None:
    now = [0.0]
    probes = Probes(live_within=10.0, clock=lambda: now[0])
    bus = EventBus()
    bus.subscribe(probes)
    client = FakeClient(clock=FakeClock())
    client.add("t", [b"x"])
    loop = loop_for(lambda m: None, client, bus=bus)
    assert not probes.ready().ok
    loop.start()
    assert probes.ready().ok and probes.live().ok
    now[0] = 11.0
    assert probes.live() == probes.live() and not probes.live().ok
    loop.run_once()  # polled: alive again
    assert probes.live().ok
    now[0] = 30.0
    loop.stop()
    assert probes.live().ok and probes.ready().detail == "stopping: test"


def test_lag_is_read_from_librdkafka_statistics() -> None:
    stats = {
        "topics": {
            "orders": {
                "partitions": {
                    "0": {"partition": 0, "fetch_state": "active", "consumer_lag": 12},
                    "1": {"partition": 1, "fetch_state": "active", "consumer_lag": -1,
                          "hi_offset": 40, "app_offset": 35},
                    "2": {"partition": 2, "fetch_state": "none", "consumer_lag": 7},
                    "-1": {"partition": -1, "fetch_state": "none", "consumer_lag": -1},
                }
            }
        }
    }  # fmt: skip
    assert lag_of(json.dumps(stats)) == (
        (TopicPartition("orders", 0), 12),
        (TopicPartition("orders", 1), 5),
    )


def test_a_written_record_carries_one_trace_context() -> None:
    old = [("traceparent", b"00-aa-01"), ("tracestate", b"x=1"), ("k", b"v")]
    new = [("traceparent", b"00-bb-01")]
    assert h.with_trace(old, new) == [("k", b"v"), ("traceparent", b"00-bb-01")]
    assert h.with_trace(old, []) == old


def test_the_readme_lists_every_metric() -> None:
    text = README.read_text()
    missing = [name for name, *_ in METRICS if f"`{name}`" not in text]
    assert not missing


def test_handled_counts_records_however_they_were_handed_over() -> None:
    """Now, after an in-place back-off (resumed at the top of a later step), or settled by
    worker threads: each success is counted once."""
    from dataclasses import replace

    from redrive.consumer.loop import Loop

    for retry, concurrency in ((Retry.in_place(BackOff.fixed(1.0)), 1), (Retry(), 4)):
        clock = FakeClock()
        client = FakeClient(clock=clock)
        client.add("t", [b"a", b"b", b"c", b"d"])
        failed: list[bytes] = []

        def handle(msg: object, failed: list[bytes] = failed) -> None:
            value = msg.value  # type: ignore[attr-defined]
            if value == b"b" and not failed:
                failed.append(value)
                raise A("once")

        bus = EventBus()
        metrics = Metrics()
        bus.subscribe(metrics, metrics.kinds)
        base = loop_for(handle, client, bus=bus, retry=retry, max_poll_records=10)
        loop = Loop(replace(base.spec, concurrency=concurrency), client, bus=bus, clock=clock,
                    wall_clock=clock)  # fmt: skip
        loop.start()
        loop.run_until_idle()
        loop.close()
        handled = metrics.registry.get_sample_value(
            "redrive_records_handled_total", {"listener": "test"}
        )
        assert (concurrency, handled, failed) == (concurrency, 4, [b"b"])
