"""Run an App in a child process that the lab can watch and kill (the crash scenario).

The child builds its App with a factory named ``"package.module:function"`` (called with
the given keyword arguments, returning an ``App``), writes every event of the App's bus as
one JSON line to a file, and runs until stopped, killed, or its parent goes away::

    with Child("redrive.lab.scenarios:crash_app", {"servers": s, "topic": t}, workdir) as child:
        wait_until(lambda: any(isinstance(e, Delivered) for e in child.events()))
        child.kill()                   # SIGKILL: no commit, no goodbye to the group

Leaving the ``with`` block always kills a child still running and reaps it.
"""

from __future__ import annotations

import importlib
import json
import os
import signal
import subprocess
import sys
import threading
import time
from collections.abc import Mapping
from pathlib import Path
from types import TracebackType
from typing import Any

from redrive.events import Event
from redrive.lab.codec import from_dict, to_dict


class Child:
    """One App running in a child process; its events go to ``<workdir>/<name>.jsonl``."""

    def __init__(
        self, factory: str, kwargs: Mapping[str, Any], workdir: Path, *, name: str = "child"
    ) -> None:
        self.factory = factory
        self.kwargs = dict(kwargs)
        self.events_file = workdir / f"{name}.jsonl"
        self.log_file = workdir / f"{name}.log"
        self._proc: subprocess.Popen[bytes] | None = None

    def start(self) -> None:
        spec = {"factory": self.factory, "kwargs": self.kwargs, "events": str(self.events_file)}
        self.events_file.write_text("")
        with self.log_file.open("wb") as log:
            self._proc = subprocess.Popen(
                [sys.executable, "-m", "redrive.lab.child", json.dumps(spec)],
                stdout=log,
                stderr=subprocess.STDOUT,
                stdin=subprocess.DEVNULL,
            )

    @property
    def pid(self) -> int | None:
        return self._proc.pid if self._proc else None

    def alive(self) -> bool:
        return self._proc is not None and self._proc.poll() is None

    def events(self) -> list[Event]:
        """Every event the child reported so far (complete lines only)."""
        try:
            text = self.events_file.read_text()
        except FileNotFoundError:
            return []
        return [
            from_dict(json.loads(line))
            for line in text.splitlines(keepends=True)
            if line.endswith("\n")
        ]

    def log_tail(self, lines: int = 5) -> str:
        """The last lines the child printed (its errors, when it died)."""
        try:
            return " | ".join(self.log_file.read_text().splitlines()[-lines:])
        except FileNotFoundError:
            return ""

    def kill(self) -> None:
        """SIGKILL the child and reap it."""
        if self._proc is not None and self._proc.poll() is None:
            self._proc.send_signal(signal.SIGKILL)
        if self._proc is not None:
            self._proc.wait(30)

    def freeze(self) -> None:
        """SIGSTOP the child: it keeps its connections (and what it holds) but does nothing,
        like a process stuck in a long pause. Leaving the ``with`` block still kills it."""
        if self._proc is not None and self._proc.poll() is None:
            self._proc.send_signal(signal.SIGSTOP)

    def stop(self, timeout: float = 30.0) -> int:
        """SIGTERM (graceful stop); returns the exit status. Killed if it does not exit."""
        if self._proc is None:
            return 0
        if self._proc.poll() is None:
            self._proc.send_signal(signal.SIGTERM)
        try:
            return self._proc.wait(timeout)
        except subprocess.TimeoutExpired:
            self.kill()
            return self._proc.returncode

    def __enter__(self) -> Child:
        self.start()
        return self

    def __exit__(
        self,
        exc_type: type[BaseException] | None,
        exc: BaseException | None,
        tb: TracebackType | None,
    ) -> None:
        self.kill()


def _watch_parent(parent: int) -> None:
    """Exit when the parent is gone, so a crashed lab leaves no consumer behind."""
    while True:
        if os.getppid() != parent:
            os._exit(3)
        time.sleep(0.5)


def main(argv: list[str]) -> int:
    from redrive.app import App

    spec = json.loads(argv[1])
    module_name, _, attr = str(spec["factory"]).partition(":")
    factory = getattr(importlib.import_module(module_name), attr)
    app = factory(**spec["kwargs"])
    if not isinstance(app, App):
        raise SystemExit(f"{spec['factory']} returned {type(app).__name__}, not an App")
    lock = threading.Lock()
    with open(spec["events"], "a", encoding="utf-8") as out:

        def write(event: Event) -> None:
            line = json.dumps(to_dict(event)) + "\n"
            with lock:
                out.write(line)
                out.flush()

        app.bus.subscribe(write)
        threading.Thread(target=_watch_parent, args=(os.getppid(),), daemon=True).start()
        app.run()
    return 0


if __name__ == "__main__":
    raise SystemExit(main(sys.argv))
