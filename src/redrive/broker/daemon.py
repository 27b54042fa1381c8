"""`redrive broker up|down|status`: one long-lived local broker, remembered in a state file."""

from __future__ import annotations

import json
import shutil
from dataclasses import dataclass
from pathlib import Path

from redrive.broker.local import LocalKafka, _alive, cache_root, stop_process_group
from redrive.errors import BrokerError

DEFAULT_PORT = 9092


@dataclass(frozen=True)
class BrokerStatus:
    running: bool
    bootstrap_servers: str | None = None
    pid: int | None = None
    log: str | None = None


def _home() -> Path:
    return cache_root() / "broker"


def _state_file() -> Path:
    return _home() / "state.json"


def broker_status() -> BrokerStatus:
    """Whether the broker of `redrive broker up` runs, and where."""
    try:
        state = json.loads(_state_file().read_text())
    except (OSError, ValueError):
        return BrokerStatus(running=False)
    if not _alive(int(state["pid"])):
        return BrokerStatus(running=False, log=state.get("log"))
    return BrokerStatus(True, state["bootstrap_servers"], int(state["pid"]), state.get("log"))


def broker_up(port: int = DEFAULT_PORT) -> BrokerStatus:
    """Start the local broker in the background (or report the one already running)."""
    status = broker_status()
    if status.running:
        return status
    data = _home() / "data"
    shutil.rmtree(data, ignore_errors=True)
    kafka = LocalKafka(port, data_dir=data)
    kafka.start()
    assert kafka.process is not None
    state = {
        "pid": kafka.process.pid,
        "bootstrap_servers": kafka.bootstrap_servers,
        "log": str(kafka.log_path),
    }
    _state_file().write_text(json.dumps(state))
    return BrokerStatus(True, kafka.bootstrap_servers, kafka.process.pid, str(kafka.log_path))


def broker_down() -> bool:
    """Stop the broker of `redrive broker up`; True when one was running."""
    status = broker_status()
    if status.pid is not None:
        stop_process_group(status.pid)
        if _alive(status.pid):
            raise BrokerError(f"the local broker (pid {status.pid}) did not stop")
    _state_file().unlink(missing_ok=True)
    shutil.rmtree(_home() / "data", ignore_errors=True)
    return status.running
