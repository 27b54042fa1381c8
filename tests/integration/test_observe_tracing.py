"""OpenTelemetry traces (O3) against a real broker, exported by the SDK's in-memory exporter:
one trace follows a record through its failures, its retry hop, its dead letter and its
replay; a batch listener's span links the records of its batch."""

from __future__ import annotations

from collections.abc import Iterator, Sequence

import pytest
from opentelemetry import propagate, trace
from opentelemetry.sdk.trace import ReadableSpan, TracerProvider
from opentelemetry.sdk.trace.export import SimpleSpanProcessor
from opentelemetry.sdk.trace.export.in_memory_span_exporter import InMemorySpanExporter
from opentelemetry.trace import SpanKind, StatusCode

from redrive import App, Message, RetryTopics, admin
from redrive import headers as h
from redrive.dlt.replay import replay
from redrive.events import DeadLettered, Succeeded
from redrive.observe import Metrics, Tracing

from .helpers import FAST, running, wait_for

pytestmark = pytest.mark.integration


class Broken(Exception):
    """Fails until the record is replayed."""


@pytest.fixture
def spans() -> Iterator[tuple[TracerProvider, InMemorySpanExporter]]:
    provider = TracerProvider()
    exporter = InMemorySpanExporter()
    provider.add_span_processor(SimpleSpanProcessor(exporter))
    yield provider, exporter
    provider.shutdown()


def _produce_traced(
    kafka: str, topic: str, values: Sequence[str], provider: TracerProvider
) -> list[trace.SpanContext]:
    """Produce each value under a ``send`` span of its own, carrying its ``traceparent``."""
    tracer = provider.get_tracer("test-producer")
    contexts = []
    for value in values:
        with tracer.start_as_current_span(f"send {topic}", kind=SpanKind.PRODUCER) as span:
            carrier: dict[str, str] = {}
            propagate.inject(carrier)
            admin.produce(
                kafka, topic, [value], headers=[(k, v.encode()) for k, v in carrier.items()]
            )
            contexts.append(span.get_span_context())
    return contexts


def _tree(spans: Sequence[ReadableSpan], trace_id: int) -> list[str]:
    """The spans of one trace as an indented tree: name, kind, status, attempt, events."""
    mine = [s for s in spans if s.context is not None and s.context.trace_id == trace_id]
    children: dict[int | None, list[ReadableSpan]] = {}
    for s in mine:
        children.setdefault(s.parent.span_id if s.parent else None, []).append(s)
    lines: list[str] = []

    def walk(parent: int | None, depth: int) -> None:
        for s in sorted(children.get(parent, []), key=lambda s: s.start_time or 0):
            attrs = s.attributes or {}
            bits = [s.kind.name]
            if "redrive.attempt" in attrs:
                bits.append(f"attempt {attrs['redrive.attempt']}")
            if s.status.status_code is StatusCode.ERROR:
                bits.append("ERROR")
            events = [e.name for e in s.events]
            if events:
                bits.append("events: " + ", ".join(events))
            lines.append(f"{'  ' * depth}{s.name} ({'; '.join(bits)})")
            assert s.context is not None
            walk(s.context.span_id, depth + 1)

    walk(None, 0)
    assert len(lines) == len(mine), "every span of the trace hangs under its root"
    return lines


def test_o3_one_trace_from_first_failure_through_retry_hop_dead_letter_and_replay(
    kafka, make_topic, names, spans
) -> None:
    provider, exporter = spans
    topic = make_topic()
    dlt_topic = f"{topic}-dlt"
    (origin,) = _produce_traced(kafka, topic, ["order-1"], provider)
    app = App(kafka, names.group(), kafka=FAST)

    @app.listener(topic, value_deserializer="str", retry_topics=RetryTopics((0.2,)))
    def handle(msg: Message) -> None:
        if msg.header(h.REPLAY_OF) is None:
            raise Broken(f"cannot store {msg.value}")

    Tracing(tracer_provider=provider).attach(app)
    metrics = Metrics().attach(app)
    with running(app) as recorder:
        wait_for(lambda: recorder.of(DeadLettered), what="the record dead-lettered")
        result = replay(kafka, dlt_topic, tracer_provider=provider)
        assert len(result.sent) == 1
        wait_for(
            lambda: any(e.tp.topic == topic for e in recorder.of(Succeeded)),
            what="the replayed record handled",
        )
    # the retry-topic record was handed over once, after its due time
    late = [(s.labels["topic"], s.value) for m in metrics.registry.collect()
            if m.name == "redrive_retry_topic_lateness_seconds"
            for s in m.samples if s.name.endswith("_count")]  # fmt: skip
    assert late == [(f"{topic}-retry", 1.0)]
    tree = _tree(exporter.get_finished_spans(), origin.trace_id)
    print("\n".join(tree))
    assert tree == [
        f"send {topic} (PRODUCER)",
        f"  process {topic} (CONSUMER; attempt 1; ERROR; events: exception, retry hop)",
        f"    process {topic}-retry (CONSUMER; attempt 2; ERROR; events: exception, dead letter)",
        f"      send {topic} (PRODUCER)",
        f"        process {topic} (CONSUMER; attempt 1)",
    ]
    by_name = {}
    for s in exporter.get_finished_spans():
        by_name.setdefault(s.name, []).append(s)
    first = by_name[f"process {topic}"][0]
    attrs = dict(first.attributes or {})
    assert attrs["messaging.system"] == "kafka"
    assert attrs["messaging.operation.type"] == "process"
    assert attrs["messaging.destination.name"] == topic
    assert attrs["messaging.destination.partition.id"] == "0"
    assert attrs["messaging.kafka.offset"] == 0
    assert attrs["messaging.consumer.group.name"] == app.group_id
    assert attrs["error.type"] == "Broken"
    hop = next(e for e in first.events if e.name == "retry hop")
    assert hop.attributes is not None
    assert hop.attributes["messaging.destination.name"] == f"{topic}-retry"
    assert hop.attributes["redrive.next_attempt"] == 2
    dead = by_name[f"process {topic}-retry"][0]
    letter = next(e for e in dead.events if e.name == "dead letter")
    assert letter.attributes is not None
    assert letter.attributes["messaging.destination.name"] == dlt_topic
    replay_span = by_name[f"send {topic}"][-1]
    assert (replay_span.attributes or {})["redrive.replay_of"] == f"{dlt_topic}/0/0"
    # each hop carries exactly one traceparent: the span that wrote it
    (dead_letter,) = admin.read_all(kafka, dlt_topic)
    parents = [v for k, v in dead_letter.headers() or [] if k == h.TRACEPARENT]
    assert dead.context is not None
    assert len(parents) == 1
    assert parents[0].startswith(
        f"00-{dead.context.trace_id:032x}-{dead.context.span_id:016x}-".encode()
    )


def test_o3_a_batch_listeners_span_links_its_records(kafka, make_topic, names, spans) -> None:
    provider, exporter = spans
    topic = make_topic()
    produced = _produce_traced(kafka, topic, ["a", "b", "c"], provider)
    app = App(kafka, names.group(), kafka=FAST)
    seen: list[int] = []

    @app.batch_listener(topic, max_poll_records=10)
    def handle(batch: list[Message]) -> None:
        seen.extend(m.offset for m in batch)

    Tracing(tracer_provider=provider).attach(app)
    with running(app):
        wait_for(lambda: admin.committed_offsets(kafka, app.group_id or "", topic) == {0: 3},
                 what="the three records committed")  # fmt: skip
    batch_spans = [s for s in exporter.get_finished_spans() if s.name == f"process {topic}"]
    assert batch_spans, "a span per batch"
    linked = [link.context for s in batch_spans for link in s.links]
    assert sorted(c.span_id for c in linked) == sorted(c.span_id for c in produced)
    for s in batch_spans:
        attrs = s.attributes or {}
        assert s.kind is SpanKind.CONSUMER
        assert attrs["messaging.batch.message_count"] == len(s.links)
        assert s.parent is None  # a batch starts its own trace and links its records'
    assert sorted(seen) == [0, 1, 2]
