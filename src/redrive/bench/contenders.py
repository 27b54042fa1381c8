"""The contenders of ``redrive bench``, each run in a child process of its own.

Every contender does the same job: read ``n`` records of one topic from the start with a
fresh group, call the same per-record handler (``Meter.hit``, which only counts), and
commit after each poll. ``Meter`` starts the clock at the first record and stops it at the
``n``-th, so group joins and process start-up are not measured.
"""

from __future__ import annotations

import asyncio
import importlib
import os
import threading
import time
from collections.abc import Callable
from dataclasses import dataclass, field
from typing import Any

CONSUMER = {
    "auto.offset.reset": "earliest",
    "enable.auto.commit": False,
    "enable.partition.eof": False,
    "partition.assignment.strategy": "cooperative-sticky",
}


@dataclass
class Job:
    contender: str
    bootstrap: str
    topic: str
    group: str
    records: int
    max_poll_records: int = 500
    delay: float = 0.0  # I/O-bound contenders: seconds each handler call waits
    concurrency: int = 1
    ordering: str = "partition"


@dataclass
class Meter:
    """Counts handled records; times the window from the first to the n-th."""

    n: int
    count: int = 0
    t0: float = 0.0
    t1: float = 0.0
    cpu0: float = 0.0
    cpu1: float = 0.0
    thread0: float = 0.0  # CPU of the thread that handles the records (the loop thread)
    thread1: float = 0.0
    rss: list[tuple[float, float]] = field(default_factory=list)  # (fraction done, MiB)
    done: threading.Event = field(default_factory=threading.Event)

    def hit(self, _record: object = None) -> None:
        c = self.count
        if c == 0:
            self.t0 = time.perf_counter()
            self.cpu0 = time.process_time()
            self.thread0 = time.thread_time()
        c += 1
        self.count = c
        if c == self.n:
            self.t1 = time.perf_counter()
            self.cpu1 = time.process_time()
            self.thread1 = time.thread_time()
            self.done.set()

    def sample(self) -> None:
        """Sample the resident set size every 0.5 s until done (a daemon thread)."""

        def run() -> None:
            while not self.done.wait(0.5):
                if self.count:
                    self.rss.append((self.count / self.n, rss_mib()))
            self.rss.append((1.0, rss_mib()))

        threading.Thread(target=run, daemon=True).start()

    def result(self) -> dict[str, Any]:
        elapsed = self.t1 - self.t0
        return {
            "records": self.n,
            "seconds": elapsed,
            "records_per_s": self.n / elapsed if elapsed > 0 else 0.0,
            "cpu_s": self.cpu1 - self.cpu0,
            "thread_cpu_s": self.thread1 - self.thread0,
            "rss_mib": [[round(f, 2), round(m, 1)] for f, m in self.rss],
            "peak_rss_mib": round(peak_rss_mib(), 1),
            **self.external,
        }

    external: dict[str, Any] = field(default_factory=dict)
    """Figures of a contender measured elsewhere (they replace or add to this one's)."""


def peak_rss_mib() -> float:
    """The process's high-water mark of resident memory (VmHWM; not carried over exec)."""
    with open("/proc/self/status") as f:
        for line in f:
            if line.startswith("VmHWM:"):
                return int(line.split()[1]) / 1024
    return 0.0


def rss_mib() -> float:
    with open("/proc/self/statm") as f:
        return int(f.read().split()[1]) * os.sysconf("SC_PAGE_SIZE") / 2**20


# -- the raw client ------------------------------------------------------------------------


def _loop(job: Job, meter: Meter, *, commit: str | None, settings: dict[str, Any]) -> None:
    """Consume, handle each record, then commit per poll: "sync", "async" or not at all."""
    from confluent_kafka import Consumer

    consumer = Consumer({"bootstrap.servers": job.bootstrap, "group.id": job.group, **CONSUMER,
                         **settings})  # fmt: skip
    consumer.subscribe([job.topic])
    handle = meter.hit
    try:
        while not meter.done.is_set():
            records = consumer.consume(job.max_poll_records, 0.5)
            if not records:
                continue
            for r in records:
                if r.error() is None:
                    handle(r)
            if commit == "async":
                consumer.commit(asynchronous=True)
            elif commit == "sync":
                consumer.commit(asynchronous=False)
    finally:
        consumer.close()


def baseline(job: Job, meter: Meter) -> None:
    """A hand-written confluent-kafka loop with librdkafka's defaults: consume, handle each
    record, commit per poll synchronously (the first release's reference)."""
    _loop(job, meter, commit="sync", settings={})


TUNED = {"fetch.queue.backoff.ms": 10}


def tuned(job: Job, meter: Meter) -> None:
    """The same loop tuned as the best user would: ``fetch.queue.backoff.ms=10`` and an
    asynchronous commit per poll (redrive's default guarantee). The reference of the ratios."""
    _loop(job, meter, commit="async", settings=TUNED)


def no_commit(job: Job, meter: Meter) -> None:
    """The tuned loop without commits: what this client and broker can do here at most."""
    _loop(job, meter, commit=None, settings=TUNED)


# -- redrive -------------------------------------------------------------------------------


def _app(job: Job) -> Any:
    from redrive.app import App

    return App(job.bootstrap, job.group)


def _run_app(app: Any, meter: Meter) -> None:
    """``app.run()``, as ``redrive run`` does, stopped once the meter has seen every record."""

    def stop_when_done() -> None:
        meter.done.wait()
        app.stop()

    threading.Thread(target=stop_when_done, daemon=True).start()
    app.run()


def redrive_record(job: Job, meter: Meter) -> None:
    app = _app(job)
    app.listener(job.topic, max_poll_records=job.max_poll_records)(meter.hit)
    _run_app(app, meter)


def redrive_batch(job: Job, meter: Meter) -> None:
    app = _app(job)
    handle = meter.hit

    def handle_batch(batch: list[Any]) -> None:
        for m in batch:
            handle(m)

    app.batch_listener(job.topic, max_poll_records=job.max_poll_records)(handle_batch)
    _run_app(app, meter)


def redrive_record_bus(job: Job, meter: Meter) -> None:
    app = _app(job)
    events = [0]

    def subscriber(_event: Any) -> None:
        events[0] += 1

    app.bus.subscribe(subscriber)
    app.listener(job.topic, max_poll_records=job.max_poll_records)(meter.hit)
    _run_app(app, meter)


def redrive_record_metrics(job: Job, meter: Meter) -> None:
    """The record listener with Prometheus metrics attached (``redrive run --metrics-port``
    without the HTTP server: what every record costs is the same)."""
    from redrive.observe import Metrics

    app = _app(job)
    app.listener(job.topic, max_poll_records=job.max_poll_records)(meter.hit)
    Metrics().attach(app)
    _run_app(app, meter)


def redrive_record_tracing(job: Job, meter: Meter) -> None:
    """The record listener with OpenTelemetry tracing on: the SDK samples every span and
    hands it to a batch processor whose exporter drops it (the cost up to the network)."""
    from opentelemetry.sdk.trace import TracerProvider
    from opentelemetry.sdk.trace.export import (
        BatchSpanProcessor,
        SpanExporter,
        SpanExportResult,
    )

    from redrive.observe import Tracing

    class Drop(SpanExporter):
        def export(self, spans: Any) -> SpanExportResult:
            return SpanExportResult.SUCCESS

    provider = TracerProvider()
    provider.add_span_processor(BatchSpanProcessor(Drop()))
    app = _app(job)
    app.listener(job.topic, max_poll_records=job.max_poll_records)(meter.hit)
    Tracing(tracer_provider=provider).attach(app)
    try:
        _run_app(app, meter)
    finally:
        provider.shutdown()


def _transform(job: Job, meter: Meter, commit: Any) -> None:
    """Consume-transform-produce: each record becomes one ``Output`` to ``<topic>-out``."""
    from redrive import Output

    app = _app(job)
    out, hit = f"{job.topic}-out", meter.hit

    def transform(msg: Any) -> Output:
        hit(msg)
        return Output(out, key=msg.raw_key, value=msg.raw_value)

    app.listener(job.topic, max_poll_records=job.max_poll_records, commit=commit)(transform)
    _run_app(app, meter)


def redrive_outputs(job: Job, meter: Meter) -> None:
    """At-least-once outputs: idempotent produces the broker confirms before each commit."""
    from redrive import Commit

    _transform(job, meter, Commit.per_poll())


def redrive_transaction(job: Job, meter: Meter) -> None:
    """Exactly once on Kafka: outputs and positions in one transaction per poll."""
    from redrive import Commit

    _transform(job, meter, Commit.transaction())


def redrive_io(job: Job, meter: Meter) -> None:
    """An I/O-bound handler: awaits ``job.delay`` seconds per record."""
    app = _app(job)
    delay = job.delay
    hit = meter.hit
    waited = [0.0, 0]  # how long the awaits took in fact, and how many

    async def handle(msg: Any) -> None:
        t0 = time.perf_counter()
        await asyncio.sleep(delay)
        waited[0] += time.perf_counter() - t0
        waited[1] += 1
        hit(msg)

    app.listener(
        job.topic,
        max_poll_records=job.max_poll_records,
        concurrency=job.concurrency,
        ordering=job.ordering,
    )(handle)
    _run_app(app, meter)
    meter.external = {"await_s": waited[0] / max(1, waited[1])}


# -- peers -----------------------------------------------------------------------------


def aiokafka_getmany(job: Job, meter: Meter) -> None:
    """A plain aiokafka loop: getmany, handle each record, commit per poll."""
    aiokafka = importlib.import_module("aiokafka")

    async def main() -> None:
        consumer = aiokafka.AIOKafkaConsumer(
            job.topic, bootstrap_servers=job.bootstrap, group_id=job.group,
            enable_auto_commit=False, auto_offset_reset="earliest",
            max_poll_records=job.max_poll_records,
        )  # fmt: skip
        await consumer.start()
        handle = meter.hit
        try:
            while not meter.done.is_set():
                batches = await consumer.getmany(timeout_ms=500, max_records=job.max_poll_records)
                if not batches:
                    continue
                for records in batches.values():
                    for r in records:
                        handle(r)
                await consumer.commit()
        finally:
            await consumer.stop()

    asyncio.run(main())


def _faststream(module: str, job: Job, meter: Meter) -> None:
    broker_type = importlib.import_module(module).KafkaBroker
    ack = importlib.import_module("faststream").AckPolicy.ACK
    broker = broker_type(job.bootstrap, logger=None)
    handle = meter.hit

    async def handle_batch(batch: list[bytes]) -> None:
        for m in batch:
            handle(m)

    broker.subscriber(
        job.topic, group_id=job.group, batch=True, max_records=job.max_poll_records,
        auto_offset_reset="earliest", ack_policy=ack,
    )(handle_batch)  # fmt: skip

    async def main() -> None:
        await broker.start()
        try:
            await asyncio.get_running_loop().run_in_executor(None, meter.done.wait)
        finally:
            await broker.stop()

    asyncio.run(main())


def faststream_aiokafka(job: Job, meter: Meter) -> None:
    """FastStream's Kafka subscriber on aiokafka, batch mode, ack after handling."""
    _faststream("faststream.kafka", job, meter)


def faststream_confluent(job: Job, meter: Meter) -> None:
    """FastStream's Kafka subscriber on confluent-kafka, batch mode, ack after handling."""
    _faststream("faststream.confluent", job, meter)


def java_consumer(job: Job, meter: Meter) -> None:
    """Apache Kafka's Java consumer: ``ConsumerPerformance`` from kafka-tools (its defaults:
    ``max.poll.records`` 500, offsets committed automatically every 5 s), in a JVM of its
    own. CPU seconds: the JVM's, less those of a JVM that reads a single record (start-up,
    group join)."""
    from redrive.bench.java import consumer_performance

    start = consumer_performance(job.bootstrap, job.topic, f"{job.group}-start", 1)
    run = consumer_performance(job.bootstrap, job.topic, job.group, job.records)
    meter.external = {
        "records": run.records,
        "seconds": run.seconds,
        "records_per_s": run.records / run.seconds if run.seconds > 0 else 0.0,
        "cpu_s": max(0.0, run.cpu_s - start.cpu_s),
        "thread_cpu_s": None,
        "rss_mib": [],
        "peak_rss_mib": round(run.peak_rss_mib, 1),
    }
    meter.done.set()


Contender = Callable[[Job, Meter], None]

CONTENDERS: dict[str, tuple[Contender, str | None]] = {
    # name: (function, Python module it needs beyond redrive's own dependencies, or "java")
    "tuned": (tuned, None),
    "no-commit": (no_commit, None),
    "baseline": (baseline, None),
    "redrive-record": (redrive_record, None),
    "redrive-batch": (redrive_batch, None),
    "redrive-record+bus": (redrive_record_bus, None),
    "redrive-record+metrics": (redrive_record_metrics, None),
    "redrive-record+tracing": (redrive_record_tracing, "opentelemetry.sdk"),
    "redrive-outputs": (redrive_outputs, None),
    "redrive-transaction": (redrive_transaction, None),
    "faststream-aiokafka": (faststream_aiokafka, "faststream"),
    "faststream-confluent": (faststream_confluent, "faststream"),
    "aiokafka-getmany": (aiokafka_getmany, "aiokafka"),
    "java-consumer": (java_consumer, "java"),
    "redrive-io": (redrive_io, None),
}
