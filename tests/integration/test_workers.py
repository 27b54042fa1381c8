"""`redrive run svc:app --workers N`: a supervisor of N `redrive run` processes in one
consumer group (issue 13).

Like test_signals.py, each test writes a small module into a temp dir and runs
``python -m redrive run svc:app --workers 2`` from there. The module marks, by files, which
worker (pid) was assigned partitions and which worker handled each record.
"""

from __future__ import annotations

import os
import signal
import subprocess
import sys
import time
from pathlib import Path

import pytest

from redrive import admin
from redrive.workers import MAX_DELAY, BackOff

from .helpers import wait_for

pytestmark = pytest.mark.integration

MODULE = """\
import os
import time
from pathlib import Path

from redrive import App, Message
from redrive.events import Assigned

MARKS = Path(os.environ["SVC_MARKS"])
FAST = {{"session.timeout.ms": 6000, "heartbeat.interval.ms": 500}}
app = App(group_id={group!r}, connect_timeout=60, kafka=FAST)


def on_event(event: object) -> None:
    if isinstance(event, Assigned) and event.partitions:
        worker = os.environ["REDRIVE_WORKER"]
        (MARKS / f"assigned-{{os.getpid()}}").write_text(worker)


app.bus.subscribe(on_event)


@app.listener({topic!r})
def handle(msg: Message) -> None:
    if msg.value == b"stuck":
        (MARKS / "inside").write_text(str(os.getpid()))
        time.sleep(600)
    (MARKS / f"rec-{{msg.partition}}-{{msg.offset}}").write_text(str(os.getpid()))
"""


class Supervisor:
    def __init__(self, tmp: Path, kafka: str, topic: str, group: str) -> None:
        self.marks = tmp / "marks"
        self.marks.mkdir(parents=True)
        (tmp / "svc.py").write_text(MODULE.format(topic=topic, group=group))
        self.out = tmp / "out.log"
        env = {**os.environ, "REDRIVE_BOOTSTRAP_SERVERS": kafka, "SVC_MARKS": str(self.marks)}
        with self.out.open("wb") as out:
            self.proc = subprocess.Popen(
                [sys.executable, "-m", "redrive", "run", "svc:app", "--workers", "2"],
                cwd=tmp, env=env, stdout=out, stderr=subprocess.STDOUT,
            )  # fmt: skip

    def log(self) -> str:
        return self.out.read_text(errors="replace")

    def assigned(self) -> set[int]:
        """The pids of the workers that were assigned partitions so far."""
        return {int(p.name.split("-")[1]) for p in self.marks.glob("assigned-*")}

    def handled(self) -> dict[tuple[int, int], int]:
        """(partition, offset) -> the pid that handled it."""
        out = {}
        for p in self.marks.glob("rec-*"):
            _, partition, offset = p.name.split("-")
            text = p.read_text()
            if text:
                out[int(partition), int(offset)] = int(text)
        return out

    def wait(self, check, timeout: float, what: str) -> None:
        def alive_and() -> bool:
            if self.proc.poll() is not None:
                raise AssertionError(f"the supervisor exited ({self.proc.returncode}) before "
                                     f"{what}:\n{self.log()}")  # fmt: skip
            return bool(check())

        try:
            wait_for(alive_and, timeout, what)
        except AssertionError as exc:
            raise AssertionError(f"{exc}\n{self.log()}") from None

    def cleanup(self) -> None:
        if self.proc.poll() is None:
            self.proc.kill()
            self.proc.wait()
        for pid in self.assigned():
            if alive(pid):
                os.kill(pid, signal.SIGKILL)


def alive(pid: int) -> bool:
    """Running (a zombie, dead but not yet reaped by whoever adopted it, is not)."""
    try:
        status = Path(f"/proc/{pid}/status").read_text()
    except FileNotFoundError:
        return False
    return "\nState:\tZ" not in status


def produce(kafka: str, topic: str, first: int, count: int) -> None:
    for p in range(4):
        admin.produce(kafka, topic, [f"m{i}" for i in range(first, first + count)], partition=p)


def test_workers_share_the_partitions_restart_and_stop(kafka, make_topic, names, tmp_path):
    topic = make_topic(partitions=4)
    sup = Supervisor(tmp_path, kafka, topic, names.group())
    try:
        # Both workers hold partitions before anything is produced, so both handle some.
        sup.wait(lambda: len(sup.assigned()) == 2, 30, "two workers with partitions")
        first = sup.assigned()
        assert sup.log().count(" started (pid ") == 2, sup.log()
        produce(kafka, topic, 0, 10)
        sup.wait(lambda: len(sup.handled()) == 40, 30, "40 records handled")
        assert set(sup.handled().values()) == first  # each worker handled some

        # A worker killed with SIGKILL is restarted; the group finishes the records.
        victim = min(first)
        os.kill(victim, signal.SIGKILL)
        sup.wait(lambda: "restarted (pid" in sup.log(), 10, "the restart")
        assert f"(pid {victim}) exited with code 137" in sup.log()
        produce(kafka, topic, 10, 10)
        sup.wait(lambda: len(sup.handled()) == 80, 30, "80 records handled")
        sup.wait(lambda: len(sup.assigned() - first) == 1, 15, "the new worker's partitions")
        assert not alive(victim)

        # SIGTERM: forwarded to both, each stops gracefully, exit 0; no child left.
        sup.proc.send_signal(signal.SIGTERM)
        began = time.monotonic()
        code = sup.proc.wait(20)
        took = time.monotonic() - began
        print(f"--workers 2: SIGTERM to exit {took:.2f} s")
        assert code == 0, sup.log()
        assert took < 15
        for pid in sup.assigned():
            assert not alive(pid), pid
        assert sup.log().count("exited with code 0 after the stop") == 2, sup.log()
    finally:
        sup.cleanup()


def test_second_signal_kills_the_workers(kafka, make_topic, names, tmp_path) -> None:
    topic = make_topic(partitions=4)
    sup = Supervisor(tmp_path, kafka, topic, names.group())
    try:
        sup.wait(lambda: len(sup.assigned()) == 2, 30, "two workers with partitions")
        admin.produce(kafka, topic, ["stuck"], partition=0)
        sup.wait(lambda: (sup.marks / "inside").exists(), 15, "a handler that never returns")
        sup.proc.send_signal(signal.SIGINT)  # that worker drains for 30 s (drain_timeout)
        began = time.monotonic()
        # (two signals sent at once may reach the process as one)
        sup.wait(lambda: "received SIGINT: stopping 2 worker(s)" in sup.log(), 5, "the stop")
        sup.proc.send_signal(signal.SIGINT)
        code = sup.proc.wait(10)
        assert code == 130, sup.log()
        assert time.monotonic() - began < 3
        wait_for(lambda: not any(alive(pid) for pid in sup.assigned()), 3, "no worker left")
    finally:
        sup.cleanup()


@pytest.mark.skipif(not sys.platform.startswith("linux"), reason="PR_SET_PDEATHSIG: Linux")
def test_workers_die_with_a_killed_supervisor(tmp_path: Path) -> None:
    (tmp_path / "svc.py").write_text(
        "from redrive import App, Message\n"
        "app = App('127.0.0.1:1', group_id='g')  # no broker: they wait for one\n"
        "@app.listener('t')\n"
        "def handle(msg: Message) -> None: ...\n"
    )
    with (tmp_path / "out.log").open("wb") as out:
        proc = subprocess.Popen(
            [sys.executable, "-m", "redrive", "run", "svc:app", "--workers", "2"],
            cwd=tmp_path, stdout=out, stderr=subprocess.STDOUT,
        )  # fmt: skip
    children = Path(f"/proc/{proc.pid}/task/{proc.pid}/children")
    pids: list[int] = []
    try:
        wait_for(lambda: len(children.read_text().split()) == 2, 10, "two workers")
        pids = [int(p) for p in children.read_text().split()]
        proc.kill()  # SIGKILL: no chance to forward anything
        proc.wait()
        wait_for(lambda: not any(alive(pid) for pid in pids), 5, "the workers to die")
    finally:
        if proc.poll() is None:
            proc.kill()
            proc.wait()
        for pid in pids:
            if alive(pid):
                os.kill(pid, signal.SIGKILL)


def test_back_off_doubles_to_30_s_and_resets_after_60_s() -> None:
    backoff = BackOff()
    assert [backoff.next(1.0) for _ in range(7)] == [1, 2, 4, 8, 16, 30, 30]
    assert MAX_DELAY == 30
    assert backoff.next(61.0) == 1
    assert backoff.next(0.5) == 2
