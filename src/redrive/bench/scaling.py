"""``redrive run --workers N`` with a CPU-bound handler (``bench/burn.py``): how throughput
scales with N processes in one group.

The supervisor and its workers are started as ``redrive run`` is in production, on an empty
topic. Once the group is stable with N members that each own partitions, the records are
produced; the clock runs from the first committed progress until the group's committed
positions cover every record. CPU seconds are those of the supervisor and its workers from
start to exit (start-up and group join included), from the kernel's accounting.
"""

from __future__ import annotations

import os
import resource
import signal
import subprocess
import sys
import tempfile
import time
from collections.abc import Callable
from typing import IO, Any

from confluent_kafka import ConsumerGroupTopicPartitions
from confluent_kafka.admin import AdminClient

TARGET_US = 20.0
"""CPU per record the handler burns."""


def burn(n: int) -> int:
    """CPU-bound work: `n` iterations of a pure-Python loop (holds the GIL throughout)."""
    total = 0
    for i in range(n):
        total += i
    return total


def calibrate(target_us: float = TARGET_US) -> int:
    """Loop iterations of ``burn`` that take `target_us` microseconds here (best of 5)."""
    n = 100_000
    best = min(_time(n) for _ in range(5))
    return max(1, round(n * target_us / 1e6 / best))


def _time(n: int) -> float:
    t0 = time.process_time()
    burn(n)
    return time.process_time() - t0


def run_workers(
    bootstrap: str, topic: str, group: str, workers: int, records: int, spin: int,
    fill: Callable[[], None], timeout: float = 300.0,
) -> dict[str, Any]:  # fmt: skip
    """Run `workers` workers on the empty `topic`; `fill` produces its `records` records."""
    env = {**os.environ, "REDRIVE_BOOTSTRAP_SERVERS": bootstrap, "REDRIVE_BENCH_TOPIC": topic,
           "REDRIVE_BENCH_GROUP": group, "REDRIVE_BENCH_SPIN": str(spin)}  # fmt: skip
    cmd = [sys.executable, "-m", "redrive", "run", "redrive.bench.burn:app",
           "--workers", str(workers), "--log-level", "WARNING"]  # fmt: skip
    admin = AdminClient({"bootstrap.servers": bootstrap, "log_level": 0})
    before = resource.getrusage(resource.RUSAGE_CHILDREN)
    log = tempfile.TemporaryFile()  # the workers' stderr, read only if they fail
    proc = subprocess.Popen(cmd, env=env, stdout=subprocess.DEVNULL, stderr=log)
    try:
        deadline = time.monotonic() + timeout
        while not _stable(admin, group, workers):
            _check(proc, log, deadline)
            time.sleep(0.05)
        fill()
        while (first := _committed(admin, group)) == 0:
            _check(proc, log, deadline)
            time.sleep(0.01)
        t0 = time.perf_counter()
        done = first
        while done < records:
            _check(proc, log, deadline)
            time.sleep(0.01)
            done = _committed(admin, group)
        elapsed = time.perf_counter() - t0
    finally:
        if proc.poll() is None:
            proc.send_signal(signal.SIGTERM)
            try:
                proc.wait(timeout=60)
            except subprocess.TimeoutExpired:
                proc.kill()
                proc.wait()
        log.close()
    after = resource.getrusage(resource.RUSAGE_CHILDREN)
    return {
        "workers": workers,
        "records": done - first,
        "seconds": elapsed,
        "records_per_s": (done - first) / elapsed if elapsed > 0 else 0.0,
        "cpu_s": (after.ru_utime + after.ru_stime) - (before.ru_utime + before.ru_stime),
    }


def _check(proc: subprocess.Popen[bytes], log: IO[bytes], deadline: float) -> None:
    if proc.poll() is not None:
        log.seek(0)
        tail = " | ".join(log.read().decode(errors="replace").strip().splitlines()[-5:])
        raise RuntimeError(f"redrive run --workers exited with {proc.returncode}: {tail}")
    if time.monotonic() > deadline:
        raise RuntimeError("redrive run --workers: the bench timed out")


def _stable(admin: AdminClient, group: str, workers: int) -> bool:
    """The group is stable with `workers` members, each owning partitions."""
    (described,) = admin.describe_consumer_groups([group], request_timeout=10).values()
    info = described.result()
    members = info.members or []
    state = str(getattr(info.state, "name", info.state))
    return (
        state == "STABLE"
        and len(members) == workers
        and all(m.assignment and m.assignment.topic_partitions for m in members)
    )


def _committed(admin: AdminClient, group: str) -> int:
    """The sum of the group's committed positions (what it has consumed)."""
    request = [ConsumerGroupTopicPartitions(group)]
    (got,) = admin.list_consumer_group_offsets(request, request_timeout=10).values()
    return sum(tp.offset for tp in got.result().topic_partitions if tp.offset >= 0)
