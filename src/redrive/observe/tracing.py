"""OpenTelemetry traces of an App's records, fed from its event bus (O3): one trace follows
a record through its failures, retry hops, dead letter and replay.

```python
from redrive.observe import Tracing

Tracing().attach(app)      # after the listeners are registered; uses the global provider
```

Each handler call gets a ``process <topic>`` span (kind CONSUMER) with the messaging
attributes (``messaging.system``, ``messaging.destination.name``, ``messaging.destination.
partition.id``, ``messaging.kafka.offset``, ``messaging.consumer.group.name``,
``messaging.operation.type``) and ``redrive.attempt``. Its parent:

- the span of the record's previous attempt in this process (seek or in-place retries);
- else the W3C trace context the record carries (``traceparent``): the producer's span, or,
  on a retry hop, a dead letter or a replayed record, the span that wrote it;
- else none: the record starts a trace.

A failed attempt records the exception and stays the current span while the record is
recovered, so the retry hop or dead letter written for it carries its context
(``redrive.publish`` injects the current context through ``redrive.headers.with_trace``).
Its end says what came next, as a span event: ``retry`` (attempt, delay), ``retry hop``
(retry topic, next attempt), ``dead letter`` (topic, partition, offset), ``skipped`` or
``recovered``. A batch listener's call gets one span linking each record's context.
``redrive dlt replay`` adds a ``send <topic>`` span (kind PRODUCER) under the dead letter's
context and writes its own context on the replayed record.

Without OpenTelemetry installed (``pip install 'redrive[otel]'``), ``AVAILABLE`` is False,
``Tracing`` refuses to start, and writing records costs one check.
"""

from __future__ import annotations

import threading
from collections.abc import Callable, Iterator, Sequence
from contextlib import contextmanager
from dataclasses import dataclass
from typing import TYPE_CHECKING, Any

from redrive.errors import ConfigError
from redrive.events import (
    BackingOff,
    DeadLettered,
    Delivered,
    Event,
    Failed,
    Handled,
    Idle,
    Lost,
    Recovered,
    RecoveryRetrying,
    RetryHop,
    Revoked,
    Skipped,
    Stopping,
    Succeeded,
)
from redrive.message import Message, TopicPartition

try:
    from opentelemetry import context as otel_context
    from opentelemetry import propagate, trace
    from opentelemetry.trace import Link, SpanKind, Status, StatusCode

    AVAILABLE = True
except ImportError:  # pragma: no cover - exercised where OpenTelemetry is absent
    AVAILABLE = False

if TYPE_CHECKING:
    from opentelemetry.context import Context as OtelContext
    from opentelemetry.trace import Span, SpanContext, TracerProvider

    from redrive.app import App

Headers = Sequence[tuple[str, bytes | None]]
Key = tuple[str, TopicPartition, int]


def current_headers() -> list[tuple[str, bytes]]:
    """The current trace context as record headers (``traceparent``...), or none: what a
    record written now (a retry hop, a dead letter) should carry."""
    if not AVAILABLE:
        return []
    carrier: dict[str, str] = {}
    propagate.inject(carrier)
    return [(k, v.encode()) for k, v in carrier.items()]


def context_of(headers: Headers) -> OtelContext | None:
    """The trace context `headers` carry, or None."""
    fields = propagate.get_global_textmap().fields
    carrier = {k: v.decode("latin-1") for k, v in headers if v and k in fields}
    if not carrier:
        return None
    ctx = propagate.extract(carrier)
    return ctx if trace.get_current_span(ctx).get_span_context().is_valid else None


@dataclass(slots=True)
class _Open:
    span: Span
    thread: int = 0
    token: object = None  # set while the span is current (a failed record being recovered)


class Tracing:
    """Spans for the records of one or more Apps. ``tracer_provider``: the OpenTelemetry
    provider (the global one by default, as set up by the SDK or ``opentelemetry-instrument``).
    Raises ``ConfigError`` when OpenTelemetry is not installed."""

    def __init__(self, tracer_provider: TracerProvider | None = None) -> None:
        if not AVAILABLE:
            raise ConfigError(
                "tracing",
                "OpenTelemetry is not installed: pip install 'redrive[otel]' and an SDK "
                "(opentelemetry-sdk) with an exporter",
            )
        from redrive import __version__

        self.tracer = trace.get_tracer("redrive", __version__, tracer_provider=tracer_provider)
        self._apps: list[App] = []
        self._specs: dict[str, tuple[str, bool]] = {}  # listener: (group, batch)
        self._open: dict[Key, _Open] = {}
        self._batches: dict[str, _Open] = {}
        self._previous: dict[Key, SpanContext] = {}  # an unfinished record's last attempt
        self._current = threading.local()  # the span made current on this thread
        self._lock = threading.Lock()
        self._on: dict[type[Event], Callable[[Any], None]] = {
            Delivered: self._delivered, Succeeded: self._succeeded, Failed: self._failed,
            BackingOff: self._backing_off, RetryHop: self._retry_hop,
            DeadLettered: self._dead_lettered, Skipped: self._skipped,
            RecoveryRetrying: self._recovery_retrying, Recovered: self._recovered,
            Handled: self._moved_on, Idle: self._moved_on, Stopping: self._stopping,
            Revoked: self._gone, Lost: self._gone,
        }  # fmt: skip

    def attach(self, app: App) -> Tracing:
        """Subscribe to `app`'s bus. Returns self."""
        self._apps.append(app)
        app.bus.subscribe(self, tuple(self._on))
        return self

    def __call__(self, event: Event) -> None:
        on = self._on.get(type(event))
        if on is not None:
            on(event)

    # -- helpers --------------------------------------------------------------------------

    def _spec(self, listener: str) -> tuple[str, bool]:
        found = self._specs.get(listener)
        if found is None:
            for app in self._apps:
                for spec in app.specs:
                    self._specs[spec.name] = (spec.group_id, spec.batch)
            found = self._specs.get(listener, ("", False))
        return found

    def _attributes(self, group: str, msg: Message) -> dict[str, Any]:
        return {
            "messaging.system": "kafka",
            "messaging.operation.type": "process",
            "messaging.operation.name": "process",
            "messaging.destination.name": msg.topic,
            "messaging.destination.partition.id": str(msg.partition),
            "messaging.consumer.group.name": group,
            "messaging.kafka.offset": msg.offset,
            "redrive.attempt": msg.attempt,
        }

    def _make_current(self, key: Key) -> None:
        """Make the span of `key` current on this thread (what a write now carries)."""
        opened = self._open.get(key)
        if opened is None:
            return
        self._release_current()
        opened.token = otel_context.attach(trace.set_span_in_context(opened.span))
        opened.thread = threading.get_ident()
        self._current.key = key

    def _release_current(self) -> None:
        key = getattr(self._current, "key", None)
        if key is None:
            return
        self._current.key = None
        opened = self._open.get(key)
        if opened is not None and opened.token is not None:
            token, opened.token = opened.token, None
            otel_context.detach(token)  # type: ignore[arg-type]

    def _end(self, key: Key, event: str | None = None, attrs: dict[str, Any] | None = None,
             *, again: bool = False) -> None:  # fmt: skip
        """End the span of `key` with a last span event; `again`: the record comes back."""
        opened = self._open.get(key)
        if opened is None:
            return
        if getattr(self._current, "key", None) == key:
            self._release_current()
        del self._open[key]
        span = opened.span
        if event is not None:
            span.add_event(event, attrs or {})
        if again:
            self._previous[key] = span.get_span_context()
        else:
            self._previous.pop(key, None)
        span.end()

    # -- the events -----------------------------------------------------------------------

    def _delivered(self, e: Delivered) -> None:
        if not e.messages:
            return
        group, batch = self._spec(e.listener)
        if batch:
            self._batch(e, group)
            return
        msg = e.messages[0]
        key = (e.listener, msg.tp, msg.offset)
        with self._lock:
            self._end(key)  # a span left open (a recoverer that says nothing)
            previous = self._previous.pop(key, None)
        parent: OtelContext | None
        if previous is not None:
            parent = trace.set_span_in_context(trace.NonRecordingSpan(previous))
        else:
            parent = context_of(msg.headers) if msg.headers else None
        span = self.tracer.start_span(
            f"process {msg.topic}", context=parent, kind=SpanKind.CONSUMER,
            attributes={**self._attributes(group, msg), "redrive.listener": e.listener},
        )  # fmt: skip
        with self._lock:
            self._open[key] = _Open(span)

    def _batch(self, e: Delivered, group: str) -> None:
        self._end_batch(e.listener)
        links = []
        for m in e.messages:
            ctx = context_of(m.headers) if m.headers else None
            if ctx is not None:
                links.append(
                    Link(trace.get_current_span(ctx).get_span_context(),
                         {"messaging.kafka.offset": m.offset,
                          "messaging.destination.partition.id": str(m.partition)})
                )  # fmt: skip
        topics = sorted({m.topic for m in e.messages})
        first = e.messages[0]
        span = self.tracer.start_span(
            f"process {' '.join(topics)}", kind=SpanKind.CONSUMER, links=links,
            attributes={
                **self._attributes(group, first),
                "messaging.batch.message_count": len(e.messages),
                "redrive.listener": e.listener,
            },
        )  # fmt: skip
        opened = _Open(span)
        with self._lock:
            self._batches[e.listener] = opened
            for m in e.messages:  # a failure of one of them is recorded on the batch's span
                self._open[(e.listener, m.tp, m.offset)] = opened

    def _end_batch(self, listener: str) -> None:
        opened = self._batches.pop(listener, None)
        if opened is None:
            return
        with self._lock:
            for key in [k for k, o in self._open.items() if o is opened]:
                if getattr(self._current, "key", None) == key:
                    self._release_current()
                del self._open[key]
        opened.span.end()

    def _succeeded(self, e: Succeeded) -> None:
        key = (e.listener, e.tp, e.offset)
        opened = self._open.get(key)
        if opened is None or e.listener in self._batches:
            return
        with self._lock:
            self._end(key)

    def _failed(self, e: Failed) -> None:
        key = (e.listener, e.tp, e.offset)
        opened = self._open.get(key)
        if opened is None:  # undecodable: never handed over; a span of its own
            return
        span = opened.span
        span.add_event("exception", {
            "exception.type": e.error_type, "exception.message": e.error,
            "redrive.attempt": e.attempt, "messaging.kafka.offset": e.offset,
            "redrive.fatal": e.fatal,
        })  # fmt: skip
        span.set_attribute("error.type", e.error_type)
        span.set_status(Status(StatusCode.ERROR, f"{e.error_type}: {e.error}"))
        with self._lock:
            self._make_current(key)  # a retry hop or dead letter written now carries it

    def _backing_off(self, e: BackingOff) -> None:
        key = (e.listener, e.tp, e.offset)
        if e.listener in self._batches:
            return
        with self._lock:
            self._end(key, "retry", {"redrive.attempt": e.attempt,
                                     "redrive.retry.delay_s": e.delay}, again=True)  # fmt: skip

    def _retry_hop(self, e: RetryHop) -> None:
        attrs = {"messaging.destination.name": e.topic, "redrive.next_attempt": e.attempt,
                 "redrive.retry.due": e.due}  # fmt: skip
        self._outcome(e.listener, e.tp, e.offset, "retry hop", attrs)

    def _dead_lettered(self, e: DeadLettered) -> None:
        attrs = {
            "messaging.destination.name": e.topic,
            "messaging.destination.partition.id": str(e.partition),
            "redrive.dead_letter.offset": e.dlt_offset,
            "redrive.attempts": e.attempts,
        }
        self._outcome(e.listener, e.tp, e.offset, "dead letter", attrs)

    def _skipped(self, e: Skipped) -> None:
        self._outcome(e.listener, e.tp, e.offset, "skipped", {"redrive.reason": e.reason})

    def _recovered(self, e: Recovered) -> None:
        self._outcome(e.listener, e.tp, e.offset, "recovered", {"redrive.recoverer": e.recoverer})

    def _outcome(
        self, listener: str, tp: TopicPartition, offset: int, name: str, attrs: dict[str, Any]
    ) -> None:
        key = (listener, tp, offset)
        opened = self._open.get(key)
        if opened is None:
            return
        if listener in self._batches:
            opened.span.add_event(name, {**attrs, "messaging.kafka.offset": offset})
            return
        with self._lock:
            self._end(key, name, attrs)

    def _recovery_retrying(self, e: RecoveryRetrying) -> None:
        opened = self._open.get((e.listener, e.tp, e.offset))
        if opened is not None:
            opened.span.add_event("recovery failed", {"redrive.error": e.error})

    def _moved_on(self, e: Handled | Idle) -> None:
        if e.listener in self._batches:
            self._end_batch(e.listener)

    def _stopping(self, e: Stopping) -> None:
        self._end_batch(e.listener)
        with self._lock:
            for key in [k for k in self._open if k[0] == e.listener]:
                self._end(key, "stopped")
            for key in [k for k in self._previous if k[0] == e.listener]:
                del self._previous[key]

    def _gone(self, e: Revoked | Lost) -> None:
        gone = set(e.partitions)
        with self._lock:
            for key in [k for k in self._previous if k[0] == e.listener and k[1] in gone]:
                del self._previous[key]


@contextmanager
def sending(
    items: Sequence[tuple[Headers, str, dict[str, Any]]],
    tracer_provider: TracerProvider | None = None,
) -> Iterator[list[list[tuple[str, bytes]]]]:
    """For records about to be written (headers of the record they come from, target topic,
    attributes): a ``send <topic>`` span each, under the context the source carries, open
    until the block ends; yields the trace headers each written record should carry."""
    if not AVAILABLE:
        yield [[] for _ in items]
        return
    from redrive import __version__

    tracer = trace.get_tracer("redrive", __version__, tracer_provider=tracer_provider)
    spans = []
    out = []
    for headers, topic, attrs in items:
        span = tracer.start_span(
            f"send {topic}", context=context_of(headers), kind=SpanKind.PRODUCER,
            attributes={"messaging.system": "kafka", "messaging.operation.type": "send",
                        "messaging.operation.name": "send",
                        "messaging.destination.name": topic, **attrs},
        )  # fmt: skip
        spans.append(span)
        carrier: dict[str, str] = {}
        propagate.inject(carrier, context=trace.set_span_in_context(span))
        out.append([(k, v.encode()) for k, v in carrier.items()])
    try:
        yield out
    except BaseException as exc:
        for span in spans:
            span.record_exception(exc)
            span.set_status(Status(StatusCode.ERROR, str(exc)))
        raise
    finally:
        for span in spans:
            span.end()
