"""Prometheus metrics of an App, fed only from its event bus (O3).

```python
from redrive.observe import Metrics, serve

metrics = Metrics().attach(app)           # a subscriber of app.bus
with serve(app, port=9464, metrics=metrics):
    app.run()                             # GET :9464/metrics
```

Every series has the label ``listener`` (the listener's name); ``topic`` is the topic a
record was read from (a retry listener's are the retry topics), ``partition`` appears only
on per-partition gauges, which are removed when the partition is revoked, lost or resumed.
``exception`` holds the class name of the failure, at most ``max_exception_labels`` distinct
ones per listener (then ``other``). So the number of series is bounded by listeners x topics
x (partitions for the gauges, exception classes for failures). ``METRICS`` lists them all.
"""

from __future__ import annotations

import threading
from collections.abc import Callable
from typing import TYPE_CHECKING, Any

from prometheus_client import CollectorRegistry, Counter, Gauge, Histogram

from redrive.errors import DeserializationError
from redrive.events import (
    Assigned,
    BackingOff,
    BreakerOpened,
    CommitRetrying,
    Committed,
    DeadLettered,
    Delivered,
    Due,
    Event,
    Failed,
    Handled,
    Idle,
    Lag,
    Lost,
    Paused,
    Recovered,
    RecoveryRetrying,
    Resumed,
    RetryHop,
    Revoked,
    Skipped,
    Started,
    Stopped,
    Stopping,
    Succeeded,
)
from redrive.message import TopicPartition

if TYPE_CHECKING:
    from redrive.app import App

LAG_INTERVAL = 15.0
"""Seconds between lag readings when metrics are attached to an App that set none."""

DESERIALIZATION = DeserializationError.__name__

METRICS: tuple[tuple[str, str, str, str], ...] = (
    # (name, type, labels, what it counts)
    ("redrive_records_received_total", "counter", "listener",
     "records returned by polls"),
    ("redrive_records_handled_total", "counter", "listener",
     "records the handler finished without error"),
    ("redrive_records_failed_total", "counter", "listener, topic, exception",
     "handler failures (and undecodable records), by exception class"),
    ("redrive_records_retried_total", "counter", "listener, topic, mode",
     "failed records given another attempt: mode in_place, seek or retry_topic"),
    ("redrive_records_dead_lettered_total", "counter", "listener, topic",
     "records written to a dead-letter topic (acknowledged by the broker)"),
    ("redrive_records_recovered_total", "counter", "listener, topic, outcome",
     "records brought to a final outcome by the recoverer: outcome dead_letter, "
     "retry_topic, skip or other (a recoverer of your own)"),
    ("redrive_recovery_failures_total", "counter", "listener, topic",
     "recoveries that failed and will be tried again (e.g. a dead-letter write)"),
    ("redrive_deserialization_failures_total", "counter", "listener, topic",
     "records whose key or value could not be decoded"),
    ("redrive_handling_duration_seconds", "histogram", "listener",
     "time the loop took to hand one poll's records over: handler calls, failures decided, "
     "recoveries (with concurrency > 1: queueing them)"),
    ("redrive_handler_duration_seconds", "histogram", "listener",
     "time in one handler call (a record, or a batch); only with Metrics(per_record=True)"),
    ("redrive_poll_records", "histogram", "listener", "records per non-empty poll"),
    ("redrive_commits_total", "counter", "listener, reason",
     "commits (reason poll, record, attempt, window, revoke, close ...)"),
    ("redrive_commit_duration_seconds", "histogram", "listener",
     "time in the commit call (synchronous commits wait for the broker)"),
    ("redrive_commit_failures_total", "counter", "listener",
     "synchronous commits that failed (tried again later)"),
    ("redrive_rebalances_total", "counter", "listener, kind",
     "rebalance events: kind assigned, revoked or lost"),
    ("redrive_assigned_partitions", "gauge", "listener", "partitions owned now"),
    ("redrive_paused_partitions", "gauge", "listener",
     "partitions paused now (waiting out a back-off or a due time)"),
    ("redrive_partition_paused_until_timestamp_seconds", "gauge",
     "listener, topic, partition", "when a paused partition is due to resume (epoch s)"),
    ("redrive_retry_topic_lateness_seconds", "histogram", "listener, topic",
     "how long after its due time a retry-topic record was handed over"),
    ("redrive_consumer_lag_records", "gauge", "listener, group, topic, partition",
     "high watermark less the committed position"),
    ("redrive_circuit_breaker_open", "gauge", "listener",
     "1 once the dead-letter circuit breaker tripped (the listener stops)"),
    ("redrive_last_poll_timestamp_seconds", "gauge", "listener",
     "when the loop last returned from a poll (epoch s)"),
    ("redrive_listener_running", "gauge", "listener, group",
     "1 from start until the listener begins to stop"),
)  # fmt: skip

_SECONDS = (0.0005, 0.001, 0.0025, 0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1, 2.5, 5, 10, 30)
_LATENESS = (0.01, 0.05, 0.1, 0.25, 0.5, 1, 2.5, 5, 10, 30, 60, 300)
_RECORDS = (1, 2, 5, 10, 25, 50, 100, 250, 500, 1000, 5000)


class Metrics:
    """The Prometheus metrics of one or more Apps (``METRICS`` lists them), in ``registry``
    (a registry of its own by default: pass ``prometheus_client.REGISTRY`` to serve them
    with your other metrics). ``attach(app)`` subscribes to the App's bus; nothing in the
    consumer loop knows about metrics."""

    def __init__(
        self,
        registry: CollectorRegistry | None = None,
        *,
        max_exception_labels: int = 20,
        per_record: bool = False,
    ) -> None:
        self.registry = registry if registry is not None else CollectorRegistry()
        self.max_exception_labels = max_exception_labels
        self.per_record = per_record

        def make(kind: Any, name: str, labels: list[str], **kw: Any) -> Any:
            return kind(name, _help(name), labels, registry=self.registry, **kw)

        lt, li = ["listener", "topic"], ["listener"]
        self.received = make(Counter, "redrive_records_received", li)
        self.handled = make(Counter, "redrive_records_handled", li)
        self.failed = make(Counter, "redrive_records_failed", [*lt, "exception"])
        self.retried = make(Counter, "redrive_records_retried", [*lt, "mode"])
        self.dead_lettered = make(Counter, "redrive_records_dead_lettered", lt)
        self.recovered = make(Counter, "redrive_records_recovered", [*lt, "outcome"])
        self.recovery_failures = make(Counter, "redrive_recovery_failures", lt)
        self.undecodable = make(Counter, "redrive_deserialization_failures", lt)
        self.handling = make(Histogram, "redrive_handling_duration_seconds", li,
                             buckets=_SECONDS)  # fmt: skip
        self.handler_duration = make(Histogram, "redrive_handler_duration_seconds", li,
                                     buckets=_SECONDS)  # fmt: skip
        self.poll_records = make(Histogram, "redrive_poll_records", li, buckets=_RECORDS)
        self.commits = make(Counter, "redrive_commits", ["listener", "reason"])
        self.commit_duration = make(Histogram, "redrive_commit_duration_seconds", li,
                                    buckets=_SECONDS)  # fmt: skip
        self.commit_failures = make(Counter, "redrive_commit_failures", li)
        self.rebalances = make(Counter, "redrive_rebalances", ["listener", "kind"])
        self.assigned = make(Gauge, "redrive_assigned_partitions", li)
        self.paused = make(Gauge, "redrive_paused_partitions", li)
        self.paused_until = make(Gauge, "redrive_partition_paused_until_timestamp_seconds",
                                 [*lt, "partition"])  # fmt: skip
        self.lateness = make(Histogram, "redrive_retry_topic_lateness_seconds", lt,
                             buckets=_LATENESS)  # fmt: skip
        self.lag = make(Gauge, "redrive_consumer_lag_records",
                        ["listener", "group", "topic", "partition"])  # fmt: skip
        self.breaker_open = make(Gauge, "redrive_circuit_breaker_open", li)
        self.last_poll = make(Gauge, "redrive_last_poll_timestamp_seconds", li)
        self.running = make(Gauge, "redrive_listener_running", ["listener", "group"])
        self._lock = threading.Lock()
        self._children: dict[tuple[Any, ...], Any] = {}
        self._began: dict[tuple[str, TopicPartition, int], float] = {}  # handler call start
        self._failing: set[tuple[str, TopicPartition, int]] = set()  # failed, outcome pending
        self._recovering: dict[str, tuple[TopicPartition, int]] = {}  # outcome event seen
        self._exceptions: dict[str, set[str]] = {}
        self._groups: dict[str, str] = {}
        self._modes: dict[str, str] = {}
        self._owned: dict[str, set[TopicPartition]] = {}
        self._paused: dict[str, set[TopicPartition]] = {}
        self._lagging: dict[str, set[TopicPartition]] = {}
        self._on: dict[type[Event], Callable[[Any], None]] = {
            Idle: self._idle, Handled: self._handled, Due: self._due,
            Failed: self._failed, BackingOff: self._backing_off,
            RetryHop: self._retry_hop, DeadLettered: self._dead_lettered,
            Skipped: self._skipped, Recovered: self._recovered,
            RecoveryRetrying: self._recovery_retrying, Committed: self._committed,
            CommitRetrying: self._commit_retrying, Assigned: self._assigned_ev,
            Revoked: self._gone, Lost: self._gone, Paused: self._paused_ev,
            Resumed: self._resumed, Lag: self._lag_ev, BreakerOpened: self._breaker,
            Started: self._started, Stopping: self._stopping, Stopped: self._stopped,
        }  # fmt: skip
        if per_record:  # every record's two events: a cost per record (see RECORD_EVENTS)
            self._on[Delivered] = self._delivered
            self._on[Succeeded] = self._succeeded

    def attach(self, app: App) -> Metrics:
        """Subscribe to `app`'s bus (and ask it for lag readings every ``LAG_INTERVAL``
        seconds unless it asks already). Returns self."""
        if app.lag_interval is None:
            app.lag_interval = LAG_INTERVAL
        for spec in app.specs:
            self._groups[spec.name] = spec.group_id
            self._modes[spec.name] = spec.retry.mode
        app.bus.subscribe(self, self.kinds)
        return self

    @property
    def kinds(self) -> tuple[type[Event], ...]:
        """The events these metrics read (``bus.subscribe(metrics, metrics.kinds)``)."""
        return tuple(self._on)

    def __call__(self, event: Event) -> None:
        on = self._on.get(type(event))
        if on is not None:
            on(event)

    # -- helpers --------------------------------------------------------------------------

    def _child(self, metric: Any, *labels: str) -> Any:
        key = (id(metric), *labels)
        child = self._children.get(key)
        if child is None:
            child = self._children[key] = metric.labels(*labels)
        return child

    def _exception(self, listener: str, name: str) -> str:
        seen = self._exceptions.setdefault(listener, set())
        if name in seen:
            return name
        if len(seen) >= self.max_exception_labels:
            return "other"
        seen.add(name)
        return name

    def _took(self, e: Succeeded | Failed) -> None:
        began = self._began.pop((e.listener, e.tp, e.offset), None)
        if began is not None:
            self._child(self.handler_duration, e.listener).observe(max(0.0, e.ts - began))

    def _drop_series(self, listener: str, tps: set[TopicPartition] | list[TopicPartition]) -> None:
        group = self._groups.get(listener, "")
        for tp in tps:
            part = str(tp.partition)
            for metric, labels in ((self.paused_until, (listener, tp.topic, part)),
                                   (self.lag, (listener, group, tp.topic, part))):  # fmt: skip
                try:
                    metric.remove(*labels)
                except KeyError:
                    pass
            self._children.pop((id(self.paused_until), listener, tp.topic, part), None)

    # -- the events -----------------------------------------------------------------------

    def _idle(self, e: Idle) -> None:
        self._child(self.last_poll, e.listener).set(e.ts)

    def _handled(self, e: Handled) -> None:
        self._child(self.received, e.listener).inc(e.received)
        self._child(self.poll_records, e.listener).observe(e.received)
        if e.handled:
            self._child(self.handled, e.listener).inc(e.handled)
        self._child(self.handling, e.listener).observe(e.seconds)
        self._child(self.last_poll, e.listener).set(e.ts)

    def _due(self, e: Due) -> None:
        self._child(self.lateness, e.listener, e.tp.topic).observe(e.late)

    def _delivered(self, e: Delivered) -> None:
        tp, offset, _ = e.records[0]
        self._began[(e.listener, tp, offset)] = e.ts

    def _succeeded(self, e: Succeeded) -> None:
        if self._began:
            self._took(e)

    def _failed(self, e: Failed) -> None:
        if self._began:
            self._took(e)
        name = self._exception(e.listener, e.error_type)
        self._child(self.failed, e.listener, e.tp.topic, name).inc()
        if e.error_type == DESERIALIZATION:
            self._child(self.undecodable, e.listener, e.tp.topic).inc()
        self._failing.add((e.listener, e.tp, e.offset))

    def _backing_off(self, e: BackingOff) -> None:
        key = (e.listener, e.tp, e.offset)
        if key in self._failing:  # a retry after a failure (not a Defer, not a recovery wait)
            self._failing.discard(key)
            mode = self._modes.get(e.listener, "seek")
            self._child(self.retried, e.listener, e.tp.topic, mode).inc()

    def _retry_hop(self, e: RetryHop) -> None:
        self._child(self.retried, e.listener, e.tp.topic, "retry_topic").inc()
        self._outcome(e.listener, e.tp, e.offset, "retry_topic")

    def _dead_lettered(self, e: DeadLettered) -> None:
        self._child(self.dead_lettered, e.listener, e.tp.topic).inc()
        self._outcome(e.listener, e.tp, e.offset, "dead_letter")

    def _skipped(self, e: Skipped) -> None:
        self._outcome(e.listener, e.tp, e.offset, "skip")

    def _outcome(self, listener: str, tp: TopicPartition, offset: int, outcome: str) -> None:
        self._failing.discard((listener, tp, offset))
        self._recovering[listener] = (tp, offset)
        self._child(self.recovered, listener, tp.topic, outcome).inc()

    def _recovered(self, e: Recovered) -> None:
        self._failing.discard((e.listener, e.tp, e.offset))
        if self._recovering.pop(e.listener, None) != (e.tp, e.offset):
            self._child(self.recovered, e.listener, e.tp.topic, "other").inc()

    def _recovery_retrying(self, e: RecoveryRetrying) -> None:
        self._failing.discard((e.listener, e.tp, e.offset))
        self._child(self.recovery_failures, e.listener, e.tp.topic).inc()

    def _committed(self, e: Committed) -> None:
        self._child(self.commits, e.listener, e.reason).inc()
        self._child(self.commit_duration, e.listener).observe(e.duration)

    def _commit_retrying(self, e: CommitRetrying) -> None:
        self._child(self.commit_failures, e.listener).inc()

    def _assigned_ev(self, e: Assigned) -> None:
        with self._lock:
            owned = self._owned.setdefault(e.listener, set())
            owned.update(e.partitions)
            self._child(self.assigned, e.listener).set(len(owned))
        self._child(self.rebalances, e.listener, "assigned").inc()

    def _gone(self, e: Revoked | Lost) -> None:
        kind = "revoked" if isinstance(e, Revoked) else "lost"
        with self._lock:
            owned = self._owned.setdefault(e.listener, set())
            owned.difference_update(e.partitions)
            self._child(self.assigned, e.listener).set(len(owned))
            paused = self._paused.setdefault(e.listener, set())
            paused.difference_update(e.partitions)
            self._child(self.paused, e.listener).set(len(paused))
            self._lagging.setdefault(e.listener, set()).difference_update(e.partitions)
            self._drop_series(e.listener, list(e.partitions))
        self._child(self.rebalances, e.listener, kind).inc()

    def _paused_ev(self, e: Paused) -> None:
        with self._lock:
            paused = self._paused.setdefault(e.listener, set())
            paused.update(e.partitions)
            self._child(self.paused, e.listener).set(len(paused))
            if e.delay > 0:
                for tp in e.partitions:
                    child = self._child(self.paused_until, e.listener, tp.topic, str(tp.partition))
                    child.set(e.ts + e.delay)

    def _resumed(self, e: Resumed) -> None:
        with self._lock:
            paused = self._paused.setdefault(e.listener, set())
            paused.difference_update(e.partitions)
            self._child(self.paused, e.listener).set(len(paused))
            for tp in e.partitions:
                labels = (e.listener, tp.topic, str(tp.partition))
                if self._children.pop((id(self.paused_until), *labels), None) is not None:
                    self.paused_until.remove(*labels)

    def _lag_ev(self, e: Lag) -> None:
        group = self._groups.get(e.listener, "")
        with self._lock:
            lagging = self._lagging.setdefault(e.listener, set())
            now = {tp for tp, _ in e.lags}
            self._drop_series(e.listener, lagging - now)
            for tp, lag in e.lags:
                self.lag.labels(e.listener, group, tp.topic, str(tp.partition)).set(lag)
            self._lagging[e.listener] = now

    def _breaker(self, e: BreakerOpened) -> None:
        self._child(self.breaker_open, e.listener).set(1)

    def _started(self, e: Started) -> None:
        self._groups[e.listener] = e.group_id
        for topic in e.topics:  # series that exist from the start: rate() sees the first one
            for counter in (self.dead_lettered, self.recovery_failures, self.undecodable):
                self._child(counter, e.listener, topic)
        self._child(self.received, e.listener)
        self._child(self.handled, e.listener)
        self._child(self.commit_failures, e.listener)
        self._child(self.breaker_open, e.listener).set(0)
        self._child(self.running, e.listener, e.group_id).set(1)
        self._child(self.last_poll, e.listener).set(e.ts)
        self._child(self.assigned, e.listener).set(0)
        self._child(self.paused, e.listener).set(0)

    def _stopping(self, e: Stopping) -> None:
        self._child(self.running, e.listener, self._groups.get(e.listener, "")).set(0)

    def _stopped(self, e: Stopped) -> None:
        with self._lock:
            for tps in (self._owned, self._paused, self._lagging):
                gone = tps.pop(e.listener, set())
                self._drop_series(e.listener, gone)
            self._child(self.assigned, e.listener).set(0)
            self._child(self.paused, e.listener).set(0)
        self._child(self.running, e.listener, self._groups.get(e.listener, "")).set(0)
        for key in [k for k in self._began if k[0] == e.listener]:
            self._began.pop(key, None)


def _help(name: str) -> str:
    for full, _kind, _labels, text in METRICS:
        if full == name or full == f"{name}_total":
            return text
    raise KeyError(name)
