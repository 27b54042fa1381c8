"""The chaos driver's own bookkeeping, without a broker: when a fault is logged."""

from __future__ import annotations

import subprocess
import time
from pathlib import Path

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
