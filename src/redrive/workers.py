"""`redrive run module:app --workers N`: N child processes, each a plain `redrive run
module:app` in the same consumer group, under a supervisor (issue 13).

The supervisor (this process) forwards SIGTERM and SIGINT to every child; a second signal
SIGKILLs them and exits at once with 128 + its number. A child that crashed (a non-zero
exit that our stop did not cause) is started again after a back-off: 1 s, doubling up to
30 s, back to 1 s after a child ran 60 s. The supervisor exits 0 when every child stopped
gracefully after a signal, else with the first non-zero code.

Children die with the supervisor: on Linux each asks the kernel for SIGTERM when its parent
dies (``prctl(PR_SET_PDEATHSIG)``), so even a SIGKILLed supervisor leaves none behind
(each stops gracefully, bounded by its ``drain_timeout``). Elsewhere that is not
available, and children outlive a supervisor that was killed with SIGKILL.
"""

from __future__ import annotations

import argparse
import ctypes
import ctypes.util
import logging
import os
import signal
import subprocess
import sys
import time
from collections.abc import Callable, Sequence
from dataclasses import dataclass, field
from types import FrameType

log = logging.getLogger("redrive.workers")

FIRST_DELAY = 1.0
MAX_DELAY = 30.0
HEALTHY_AFTER = 60.0  # a child that ran this long resets its slot's back-off
TICK = 0.1
PR_SET_PDEATHSIG = 1


def child_argv(args: argparse.Namespace) -> list[str]:
    """``python -m redrive run APP`` with the options of `args`, less ``--workers``."""
    argv = [sys.executable, "-m", "redrive", "run", args.app]
    if getattr(args, "verbose", False):
        argv.append("-v")
    if getattr(args, "bootstrap_servers", None):
        argv += ["--bootstrap-servers", args.bootstrap_servers]
    if getattr(args, "give_up_after", None) is not None:
        argv += ["--give-up-after", repr(args.give_up_after)]
    if getattr(args, "log_level", None):
        argv += ["--log-level", args.log_level]
    if getattr(args, "log_format", None):
        argv += ["--log-format", args.log_format]
    if getattr(args, "metrics_port", None) is not None:  # worker i serves on port + i
        argv += ["--metrics-port", str(args.metrics_port), "--metrics-host", args.metrics_host]
    return argv


def exit_code(returncode: int) -> int:
    """A Popen return code as a shell shows it: killed by signal N is 128 + N."""
    return 128 - returncode if returncode < 0 else returncode


@dataclass
class BackOff:
    """The delay before a crashed child's slot starts again."""

    delay: float = FIRST_DELAY

    def next(self, ran: float) -> float:
        """The delay after a child that ran `ran` seconds crashed."""
        if ran >= HEALTHY_AFTER:
            self.delay = FIRST_DELAY
        delay = self.delay
        self.delay = min(self.delay * 2, MAX_DELAY)
        return delay


@dataclass
class Slot:
    index: int
    proc: subprocess.Popen[bytes] | None = None
    started: float = 0.0
    restarts: int = 0
    restart_at: float | None = None  # a crashed child waits here for its back-off
    code: int | None = None  # the last child's exit code, once it exited for good
    backoff: BackOff = field(default_factory=BackOff)


def _die_with_parent() -> Callable[[], None] | None:
    """For Popen's ``preexec_fn``: SIGTERM this child when its parent dies (Linux only)."""
    if not sys.platform.startswith("linux"):
        return None
    libc = ctypes.CDLL(ctypes.util.find_library("c") or "libc.so.6", use_errno=True)
    parent = os.getpid()

    def preexec() -> None:
        libc.prctl(PR_SET_PDEATHSIG, signal.SIGTERM, 0, 0, 0)
        if os.getppid() != parent:  # the parent died before the prctl: too late for it
            os.kill(os.getpid(), signal.SIGTERM)

    return preexec


class Supervisor:
    def __init__(self, argv: Sequence[str], workers: int) -> None:
        self.argv = list(argv)
        self.slots = [Slot(i) for i in range(workers)]
        self.stop_signal: int | None = None
        self.first_code = 0  # the first non-zero exit code of a child that stays down
        self.preexec = _die_with_parent()

    # -- children ----------------------------------------------------------------------

    def _start(self, slot: Slot) -> None:
        env = {**os.environ, "REDRIVE_WORKER": str(slot.index)}
        # Own process group: a Ctrl-C at the terminal reaches the supervisor only, which
        # forwards it once (the group would get it twice: a second signal exits at once).
        slot.proc = subprocess.Popen(self.argv, env=env, preexec_fn=self.preexec, process_group=0)
        slot.started = time.monotonic()
        slot.restart_at = None
        what = "restarted" if slot.restarts else "started"
        log.info("worker %d %s (pid %d)", slot.index, what, slot.proc.pid)
        if self.stop_signal is not None:  # the signal came while it was being started
            self._send(slot, self.stop_signal)

    @staticmethod
    def _send(slot: Slot, sig: int) -> None:
        if slot.proc is not None and slot.proc.poll() is None:
            try:
                slot.proc.send_signal(sig)
            except ProcessLookupError:
                pass

    def _reap(self, slot: Slot) -> None:
        if slot.proc is None or slot.proc.poll() is None:
            return
        proc, slot.proc = slot.proc, None
        code = exit_code(proc.returncode)
        ran = time.monotonic() - slot.started
        if self.stop_signal is not None:
            slot.code = code
            self.first_code = self.first_code or code
            level = logging.INFO if code == 0 else logging.WARNING
            log.log(level, "worker %d (pid %d) exited with code %d after the stop",
                    slot.index, proc.pid, code)  # fmt: skip
        elif code == 0:
            slot.code = 0  # stopped by someone else (a signal sent to it): not restarted
            log.info("worker %d (pid %d) exited with code 0 after %.1f s: not restarted",
                     slot.index, proc.pid, ran)  # fmt: skip
        else:
            delay = slot.backoff.next(ran)
            slot.restarts += 1
            slot.restart_at = time.monotonic() + delay
            log.warning("worker %d (pid %d) exited with code %d after %.1f s: restarting "
                        "in %g s", slot.index, proc.pid, code, ran, delay)  # fmt: skip

    # -- signals -----------------------------------------------------------------------

    def _on_signal(self, signum: int, frame: FrameType | None) -> None:
        name = signal.Signals(signum).name
        if self.stop_signal is None:
            self.stop_signal = signum
            log.info("received %s: stopping %d worker(s) gracefully (send it again to kill "
                     "them and exit at once)", name, len(self.slots))  # fmt: skip
            for slot in self.slots:
                slot.restart_at = None  # a crashed child waiting for its back-off stays down
                self._send(slot, signum)
            return
        log.warning("received %s again: killing the workers and exiting at once with code "
                    "%d", name, 128 + signum)  # fmt: skip
        for slot in self.slots:
            self._send(slot, signal.SIGKILL)
        for slot in self.slots:
            if slot.proc is not None:
                try:
                    slot.proc.wait(1.0)
                except subprocess.TimeoutExpired:
                    pass
        logging.shutdown()
        sys.stdout.flush()
        sys.stderr.flush()
        os._exit(128 + signum)

    # -- the loop ----------------------------------------------------------------------

    def run(self) -> int:
        previous = {sig: signal.signal(sig, self._on_signal)
                    for sig in (signal.SIGTERM, signal.SIGINT)}  # fmt: skip
        try:
            log.info("starting %d workers: %s", len(self.slots), " ".join(self.argv[1:]))
            for slot in self.slots:
                if self.stop_signal is None:
                    self._start(slot)
            while True:
                now = time.monotonic()
                for slot in self.slots:
                    self._reap(slot)
                    if (slot.restart_at is not None and now >= slot.restart_at
                            and self.stop_signal is None):  # fmt: skip
                        self._start(slot)
                if all(s.proc is None and s.restart_at is None for s in self.slots):
                    break
                time.sleep(TICK)
        finally:
            for sig, handler in previous.items():
                signal.signal(sig, handler)
        code = self.first_code
        log.info("all %d workers stopped: exit %d", len(self.slots), code)
        return code


def run_workers(args: argparse.Namespace) -> int:
    """`redrive run APP --workers N` with N > 1."""
    return Supervisor(child_argv(args), args.workers).run()
