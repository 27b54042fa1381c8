"""The benchmark harness: one broker, one pre-filled topic, every contender in the same run.

Each contender runs in a child process of its own with a fresh consumer group reading the
topic from the start. Contenders alternate within a round and rounds repeat; the report
gives the median records/s and CPU seconds of the measured window, the child's peak RSS,
and the ratio to the tuned loop (a hand-written confluent-kafka loop doing the same work,
tuned as the best user would: ``fetch.queue.backoff.ms=10``, asynchronous per-poll commits).
Ratios within one run hold on a noisy machine; absolute figures do not travel.
"""

from __future__ import annotations

import importlib.util
import json
import os
import platform
import shutil
import statistics
import subprocess
import sys
import time
import uuid
from collections.abc import Iterator, Sequence
from contextlib import contextmanager
from dataclasses import asdict, dataclass, field
from importlib.metadata import PackageNotFoundError, version
from typing import Any

from confluent_kafka import Producer

import redrive.admin as admin
from redrive.bench import scaling
from redrive.bench.contenders import CONTENDERS, Job
from redrive.errors import ClientError

REFERENCE = "tuned"
"""The contender the ratios are to: the tuned loop with asynchronous per-poll commits."""

THROUGHPUT = ["tuned", "no-commit", "baseline", "redrive-record", "redrive-batch",
              "redrive-record+bus", "redrive-record+metrics", "redrive-record+tracing",
              "faststream-aiokafka", "faststream-confluent",
              "aiokafka-getmany", "redrive-outputs", "redrive-transaction",
              "java-consumer"]  # fmt: skip


@dataclass
class Options:
    records: int = 1_000_000
    size: int = 100
    partitions: int = 6
    rounds: int = 3
    max_poll_records: int = 500
    contenders: list[str] = field(default_factory=lambda: list(THROUGHPUT))
    io_records: int = 30_000
    io_delay: float = 0.005
    io_keys: int = 1000
    io_concurrency: int = 64
    workers_records: int = 100_000  # records per `redrive run --workers N` run (0: skip)
    timeout: float = 900.0  # per child process


@dataclass
class IoCase:
    name: str
    concurrency: int
    ordering: str
    share: int  # reads io_records // share records (sequential is slow)


WORKERS = (1, 2)
"""``redrive run --workers N`` with a CPU-bound handler: these N."""

IO_CASES = [
    IoCase("sequential", 1, "partition", 20),
    IoCase("ordering=partition", 64, "partition", 4),
    IoCase("ordering=key", 64, "key", 1),
]


def run(bootstrap: str | None, opts: Options) -> dict[str, Any]:
    """Run the whole benchmark; start a local broker unless `bootstrap` is given."""
    with _broker(bootstrap) as servers:
        return _run(servers, opts)


@contextmanager
def _broker(bootstrap: str | None) -> Iterator[str]:
    bootstrap = bootstrap or os.environ.get("REDRIVE_BOOTSTRAP_SERVERS")
    if bootstrap:
        yield bootstrap
        return
    from redrive.broker import LocalKafka

    with LocalKafka() as broker:
        yield broker.bootstrap_servers


def _run(bootstrap: str, opts: Options) -> dict[str, Any]:
    tag = uuid.uuid4().hex[:8]
    topic = f"redrive-bench-{tag}"
    io_topic = f"redrive-bench-io-{tag}"
    admin.create_topics(bootstrap, {topic: opts.partitions, io_topic: opts.partitions,
                                    f"{topic}-out": opts.partitions})  # fmt: skip
    fill(bootstrap, topic, opts.records, opts.size, keys=opts.io_keys)
    if opts.io_records:
        fill(bootstrap, io_topic, opts.io_records, opts.size, keys=opts.io_keys)
    skipped = {c: why for c in opts.contenders if (why := _missing(c))}
    available = [c for c in opts.contenders if c not in skipped]
    runs: dict[str, list[dict[str, Any]]] = {c: [] for c in available}
    io_runs: dict[str, list[dict[str, Any]]] = {c.name: [] for c in IO_CASES}
    worker_runs: dict[int, list[dict[str, Any]]] = {n: [] for n in WORKERS}
    spin = scaling.calibrate() if opts.workers_records else 0
    for rnd in range(opts.rounds):
        order = available if rnd % 2 == 0 else available[::-1]  # alternate the order too
        for name in order:
            job = Job(name, bootstrap, topic, f"bench-{tag}-{name}-{rnd}", opts.records,
                      opts.max_poll_records)  # fmt: skip
            runs[name].append(run_child(job, opts.timeout))
        for case in IO_CASES if opts.io_records else ():
            n = max(10, opts.io_records // case.share)
            job = Job("redrive-io", bootstrap, io_topic, f"bench-{tag}-io-{case.name}-{rnd}",
                      n, opts.max_poll_records, opts.io_delay, case.concurrency,
                      case.ordering)  # fmt: skip
            io_runs[case.name].append(run_child(job, opts.timeout))
        for n in WORKERS if opts.workers_records else ():
            name = f"redrive-bench-workers-{tag}-{n}-{rnd}"
            admin.create_topics(bootstrap, {name: opts.partitions})

            def fill_it(name: str = name) -> None:
                fill(bootstrap, name, opts.workers_records, opts.size, keys=opts.io_keys)

            run = scaling.run_workers(bootstrap, name, name, n, opts.workers_records, spin, fill_it)
            worker_runs[n].append(run)
    result = report(opts, runs, io_runs, skipped)
    result["workers"] = workers_report(opts, worker_runs, spin)
    return result


def _missing(contender: str) -> str | None:
    """Why `contender` cannot run here, or None."""
    needs = CONTENDERS[contender][1]
    if needs == "java":
        if shutil.which("java") is None:
            return "no java on PATH (Java 17 or newer)"
        if shutil.which("mvn") is None and not _tools_resolved():
            return "no mvn on PATH (Maven resolves kafka-tools once)"
        return None
    if needs is None or importlib.util.find_spec(needs) is not None:
        return None
    return "not installed (pip install 'redrive[bench]')"


def _tools_resolved() -> bool:
    from redrive.bench.java import tools_resolved

    return tools_resolved()


def fill(bootstrap: str, topic: str, n: int, size: int, *, keys: int) -> None:
    """Produce `n` records of `size` bytes with keys "0".."keys-1" and wait for all acks."""
    producer = Producer({"bootstrap.servers": bootstrap, "linger.ms": 50,
                         "batch.num.messages": 10000, "queue.buffering.max.messages": 500000,
                         "log_level": 0})  # fmt: skip
    value = b"x" * size
    key_list = [str(i).encode() for i in range(keys)]
    failed: list[str] = []

    def on_delivery(err: Any, _msg: Any) -> None:
        if err is not None:
            failed.append(str(err))

    for i in range(n):
        while True:
            try:
                producer.produce(topic, value, key_list[i % keys], on_delivery=on_delivery)
                break
            except BufferError:
                producer.poll(0.05)
        if i % 10000 == 0:
            producer.poll(0)
    left = producer.flush(120)
    if left or failed:
        raise ClientError(f"filling {topic!r} failed: {failed[:3] or f'{left} unsent'}")


def run_child(job: Job, timeout: float) -> dict[str, Any]:
    """Run one contender in a child process of its own; its JSON result."""
    cmd = [sys.executable, "-m", "redrive.bench.child", json.dumps(asdict(job))]
    proc = subprocess.Popen(cmd, stdout=subprocess.PIPE, stderr=subprocess.PIPE)
    try:
        out, err = proc.communicate(timeout=timeout)
    except subprocess.TimeoutExpired:
        proc.kill()
        proc.communicate()
        raise RuntimeError(f"bench contender {job.contender} took over {timeout:g} s") from None
    finally:
        if proc.poll() is None:
            proc.kill()
            proc.wait()
    if proc.returncode != 0:
        tail = err.decode(errors="replace").strip().splitlines()[-5:]
        raise RuntimeError(f"bench contender {job.contender} failed: {' | '.join(tail)}")
    result: dict[str, Any] = json.loads(out.decode().strip().splitlines()[-1])
    return result


def _per_record_us(values: Sequence[float | None], records: int) -> float | None:
    """CPU of the handling thread per record (median), in microseconds."""
    known = [v for v in values if v is not None]
    return round(_median(known) / records * 1e6, 3) if known and records else None


def _median(values: Sequence[float]) -> float:
    return float(statistics.median(values)) if values else 0.0


def report(
    opts: Options,
    runs: dict[str, list[dict[str, Any]]],
    io_runs: dict[str, list[dict[str, Any]]],
    skipped: dict[str, str],
) -> dict[str, Any]:
    rows = []
    base = _median([r["records_per_s"] for r in runs.get(REFERENCE, [])])
    for name, results in runs.items():
        rate = _median([r["records_per_s"] for r in results])
        rss = [r["peak_rss_mib"] for r in results]
        rows.append({
            "contender": name,
            "records_per_s": round(rate),
            "cpu_s": round(_median([r["cpu_s"] for r in results]), 2),
            "thread_us": _per_record_us([r.get("thread_cpu_s") for r in results], opts.records),
            "peak_rss_mib": round(max(rss), 1) if rss else None,
            "rss_first_last_mib": _first_last(results),
            "ratio": round(rate / base, 3) if base else None,
            "rounds": [round(r["records_per_s"]) for r in results],
        })  # fmt: skip
    ideal = opts.io_concurrency / opts.io_delay if opts.io_delay else None
    io_rows = []
    for name, results in io_runs.items():
        if not results:
            continue
        rate = _median([r["records_per_s"] for r in results])
        # what one await took in fact (asyncio's timers overshoot): the handler's own bound
        await_s = _median([r.get("await_s", 0.0) for r in results])
        lanes = {"sequential": 1, "ordering=partition": min(opts.io_concurrency, opts.partitions)}
        concurrency = lanes.get(name, opts.io_concurrency)  # records that can run at once
        io_rows.append({
            "mode": name,
            "records": results[0]["records"],
            "records_per_s": round(rate),
            "of_ideal": round(rate / ideal, 3) if ideal else None,
            "await_ms": round(await_s * 1000, 2),
            "of_await_bound": round(rate * await_s / concurrency, 3),
            "rounds": [round(r["records_per_s"]) for r in results],
        })  # fmt: skip
    return {
        "date": time.strftime("%Y-%m-%d %H:%M UTC", time.gmtime()),
        "machine": f"{platform.machine()}, {os.cpu_count()} cores, {platform.system()}",
        "versions": _versions(),
        "sizes": {
            "records": opts.records,
            "size": opts.size,
            "partitions": opts.partitions,
            "rounds": opts.rounds,
            "max_poll_records": opts.max_poll_records,
        },  # fmt: skip
        "throughput": rows,
        "skipped": skipped,
        "io": {
            "records": opts.io_records,
            "delay_s": opts.io_delay,
            "keys": opts.io_keys,
            "concurrency": opts.io_concurrency,
            "ideal_records_per_s": ideal,
            "modes": io_rows,
        },  # fmt: skip
    }


def workers_report(
    opts: Options, runs: dict[int, list[dict[str, Any]]], spin: int
) -> dict[str, Any]:
    """`redrive run --workers N` with a CPU-bound handler: medians, and N=2 over N=1."""
    modes: list[dict[str, Any]] = []
    for n, results in runs.items():
        if results:
            modes.append({
                "workers": n,
                "records_per_s": round(_median([r["records_per_s"] for r in results])),
                "cpu_s": round(_median([r["cpu_s"] for r in results]), 2),
                "rounds": [round(r["records_per_s"]) for r in results],
            })  # fmt: skip
    rates = {m["workers"]: m["records_per_s"] for m in modes}
    return {
        "records": opts.workers_records,
        "handler_us": scaling.TARGET_US,
        "spin": spin,
        "modes": modes,
        "scaling": round(rates[2] / rates[1], 3) if rates.get(1) and 2 in rates else None,
    }


def _first_last(results: list[dict[str, Any]]) -> list[float] | None:
    """RSS early in the window and at its end (the median round): flat, or growing?"""
    samples = [r["rss_mib"] for r in results if r["rss_mib"]]
    if not samples:
        return None
    mid = samples[len(samples) // 2]
    return [mid[0][1], mid[-1][1]]


def _versions() -> dict[str, str]:
    out = {"python": platform.python_version()}
    for dist in ("redrive", "confluent-kafka", "faststream", "aiokafka"):
        try:
            out[dist] = version(dist)
        except PackageNotFoundError:
            pass
    import confluent_kafka

    out["librdkafka"] = confluent_kafka.libversion()[0]
    return out


def table(result: dict[str, Any]) -> str:
    """The report as Markdown tables."""
    s = result["sizes"]
    lines = [
        f"{result['date']}; {result['machine']}; "
        + ", ".join(f"{k} {v}" for k, v in result["versions"].items()),
        f"{s['records']:,} records of {s['size']} bytes on {s['partitions']} partitions, "
        f"max_poll_records {s['max_poll_records']}, median of {s['rounds']} rounds",
        "",
        f"| contender | records/s | ratio to {REFERENCE} | CPU s | handling thread us/record "
        "| peak RSS MiB | RSS early → end |",
        "| --- | ---: | ---: | ---: | ---: | ---: | --- |",
    ]
    for r in result["throughput"]:
        fl = r["rss_first_last_mib"]
        thread = r.get("thread_us")
        lines.append(
            f"| {r['contender']} | {r['records_per_s']:,} | {r['ratio']} | {r['cpu_s']} | "
            f"{'-' if thread is None else thread} | {r['peak_rss_mib']} | "
            f"{f'{fl[0]} → {fl[1]}' if fl else '-'} |"
        )
    for name, why in result["skipped"].items():
        lines.append(f"| {name} | skipped: {why} | | | | | |")
    io = result["io"]
    if io["modes"]:
        lines += [
            "",
            f"I/O-bound: handler awaits {io['delay_s'] * 1000:g} ms per record, "
            f"{s['partitions']} partitions, {io['keys']:,} keys; ideal = "
            f"{io['concurrency']} / {io['delay_s']:g} s = {io['ideal_records_per_s']:,.0f}/s",
            "",
            "| mode | records | records/s | of ideal | one await took (ms) "
            "| of what can run at once / that |",
            "| --- | ---: | ---: | ---: | ---: | ---: |",
        ]
        for m in io["modes"]:
            lines.append(
                f"| {m['mode']} | {m['records']:,} | {m['records_per_s']:,} | {m['of_ideal']} "
                f"| {m['await_ms']} | {m['of_await_bound']} |"
            )
    w = result.get("workers")
    if w and w["modes"]:
        lines += [
            "",
            f"`redrive run --workers N`, a record listener burning about {w['handler_us']:g} us "
            f"of CPU per record, {w['records']:,} records per run:",
            "",
            "| workers | records/s | CPU s (all processes, start-up included) |",
            "| ---: | ---: | ---: |",
        ]
        for m in w["modes"]:
            lines.append(f"| {m['workers']} | {m['records_per_s']:,} | {m['cpu_s']} |")
        if w["scaling"] is not None:
            lines += ["", f"--workers 2 / --workers 1: {w['scaling']}"]
    return "\n".join(lines)
