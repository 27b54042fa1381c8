"""The chaos driver's own bookkeeping, without a broker: when a fault is logged, and
what a stop leaves behind."""

from __future__ import annotations

import shutil
import subprocess
import sys
import time
from pathlib import Path

import pytest

from redrive.chaos.cli import _workdir
from redrive.chaos.plan import Plan
from redrive.chaos.run import Driver, Run


def test_a_consumer_fault_is_stamped_when_its_signal_is_sent(tmp_path: Path) -> None:
    plan = Plan(records=1, partitions=1, consumers=1, term_share=0.0)
    driver = Driver(plan, "127.0.0.1:1", None, tmp_path, say=lambda _: None)
    run = Run(plan, "127.0.0.1:1", driver.topic, driver.group, ["ok"], {0: (0, 0)})
    (slot,) = driver.slots
    slot.proc = subprocess.Popen(["sleep", "60"])
    try:
        time.sleep(0.3)  # a tick that began a while ago: its time is not the fault's
        sent = time.time()
        driver._consumer_fault(run)
        assert slot.proc.wait(10) == -9
    finally:
        slot.proc.kill()
        slot.proc.wait()
    (fault,) = run.faults
    assert fault.kind == "kill" and fault.pid == slot.proc.pid and fault.t >= sent


def test_an_interrupted_stop_leaves_no_consumer_running(tmp_path: Path) -> None:
    plan = Plan(records=1, partitions=1, consumers=1)
    driver = Driver(plan, "127.0.0.1:1", None, tmp_path, say=lambda _: None)
    run = Run(plan, "127.0.0.1:1", driver.topic, driver.group, ["ok"], {0: (0, 0)})
    (slot,) = driver.slots
    deaf = "import signal, time; signal.signal(signal.SIGTERM, signal.SIG_IGN); time.sleep(60)"
    proc = slot.proc = subprocess.Popen([sys.executable, "-c", deaf])
    time.sleep(0.5)  # let it ignore SIGTERM
    real_wait = proc.wait
    calls = []

    def interrupted(timeout: float | None = None) -> int:
        calls.append(timeout)
        if len(calls) == 1:
            raise KeyboardInterrupt  # a second Ctrl-C while the driver waits for it
        return real_wait(timeout)

    proc.wait = interrupted  # type: ignore[method-assign]
    try:
        with pytest.raises(KeyboardInterrupt):
            driver._stop_all(run)
        assert proc.poll() == -9
    finally:
        proc.kill()
        real_wait()


def test_the_work_folder_is_kept_when_the_run_raises() -> None:
    with pytest.raises(RuntimeError), _workdir(None, Plan()) as kept:
        raise RuntimeError("the broker did not come back")
    try:
        assert kept.path.is_dir()
    finally:
        shutil.rmtree(kept.path)
