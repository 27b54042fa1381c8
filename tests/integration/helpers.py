"""Running an App in the test process, and reading what it committed."""

from __future__ import annotations

import os
import signal
import subprocess
import time
from collections.abc import Callable, Iterator, Sequence
from contextlib import contextmanager
from pathlib import Path

from redrive import App
from redrive.events import Committed, Recorder

FAST = {"session.timeout.ms": 6000, "heartbeat.interval.ms": 500}


def http_get(url: str) -> tuple[int, str]:
    """Status and body of a GET (status 0 when nothing answers)."""
    import urllib.error
    import urllib.request

    try:
        with urllib.request.urlopen(url, timeout=5) as r:
            return r.status, r.read().decode()
    except urllib.error.HTTPError as exc:
        return exc.code, exc.read().decode()
    except OSError:
        return 0, ""


def wait_for(check: Callable[[], bool], timeout: float = 30.0, what: str = "condition") -> None:
    deadline = time.monotonic() + timeout
    while not check():
        if time.monotonic() > deadline:
            raise AssertionError(f"timed out after {timeout:g} s waiting for {what}")
        time.sleep(0.02)


@contextmanager
def running(app: App) -> Iterator[Recorder]:
    """Run `app` in background threads; always stop it (also when the test fails)."""
    recorder = Recorder()
    app.bus.subscribe(recorder)
    app.start()
    try:
        yield recorder
    finally:
        app.stop()
        app.join(60)


def commits(recorder: Recorder) -> list[dict[int, int]]:
    """Committed positions, per commit that moved one, as {partition: position}. Commits
    that only write metadata (the owner's window before its first record, attempt marks, a
    clean hand-over at the same position) are left out."""
    out: list[dict[int, int]] = []
    last: dict[int, int] = {}
    for e in recorder.of(Committed):
        moved = {tp.partition: pos for tp, pos in e.positions if last.get(tp.partition, 0) != pos}
        if moved:
            last.update(moved)
            out.append(moved)
    return out


def kill_when(marker: Path, argv: Sequence[str], what: str) -> int:
    """Run `argv` (a child consumer), SIGKILL it once it wrote `marker`; its exit status.
    The child is always gone when this returns."""
    marker.unlink(missing_ok=True)
    child = subprocess.Popen(list(argv), stdout=subprocess.DEVNULL, stderr=subprocess.PIPE)
    try:
        wait_for(lambda: marker.exists() or child.poll() is not None, timeout=60, what=what)
        assert child.poll() is None, child.stderr.read().decode() if child.stderr else ""
        os.kill(child.pid, signal.SIGKILL)
    finally:
        if child.poll() is None:
            child.kill()
        child.wait(30)
        if child.stderr:
            child.stderr.close()
    return child.returncode
