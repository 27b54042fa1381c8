"""Health probes of an App, fed from its event bus: liveness and readiness.

- **live**: every running listener's loop returned from a poll within its poll interval
  (the listener's ``max.poll.interval.ms``, 300 s by default, or ``live_within``): a
  handler stuck longer than that has also cost the listener its place in the group.
- **ready**: every listener started (so the broker answered), none began to stop. A
  listener waiting for its first assignment is ready: that is Kafka's business.

```python
probes = Probes().attach(app)
probes.live()    # Check(ok=True, detail='...')
probes.ready()
```
"""

from __future__ import annotations

import threading
import time
from collections.abc import Callable
from dataclasses import dataclass
from typing import TYPE_CHECKING

from redrive.events import Event, Handled, Idle, Started, Stopped, Stopping

if TYPE_CHECKING:
    from redrive.app import App

KINDS = (Handled, Idle, Started, Stopping, Stopped)
"""The events the probes read: every poll ends with ``Handled`` or ``Idle``."""

DEFAULT_POLL_INTERVAL = 300.0
"""librdkafka's ``max.poll.interval.ms`` default, in seconds."""


@dataclass(frozen=True, slots=True)
class Check:
    ok: bool
    detail: str


@dataclass(slots=True)
class _Listener:
    live_within: float
    started: bool = False
    stopping: bool = False
    stopped: bool = False
    last_poll: float = 0.0  # monotonic


class Probes:
    """Liveness and readiness of the listeners of one App. ``live_within``: seconds without
    a poll after which a listener counts as stuck (default: each listener's
    ``max.poll.interval.ms``). ``clock``: monotonic seconds (tests may pass their own)."""

    def __init__(
        self, *, live_within: float | None = None, clock: Callable[[], float] = time.monotonic
    ) -> None:
        self.live_within = live_within
        self.clock = clock
        self._listeners: dict[str, _Listener] = {}
        self._lock = threading.Lock()

    def attach(self, app: App) -> Probes:
        """Subscribe to `app`'s bus and expect each of its listeners. Returns self."""
        for spec in app.specs:
            within = self.live_within
            if within is None:
                ms = spec.kafka.get("max.poll.interval.ms")
                within = float(ms) / 1000 if ms is not None else DEFAULT_POLL_INTERVAL
            self._listeners.setdefault(spec.name, _Listener(within))
        app.bus.subscribe(self, KINDS)
        return self

    def __call__(self, event: Event) -> None:
        kind = type(event)
        if kind is Handled or kind is Idle:
            state = self._listeners.get(event.listener)
            if state is not None:
                state.last_poll = self.clock()
        elif kind is Started:
            with self._lock:
                name = event.listener
                listener, sep, _ = name.rpartition("#")
                placeholder = self._listeners.get(listener) if sep else None
                if placeholder is not None and not placeholder.started:
                    # a share listener's members are "<name>#<i>": they stand for it
                    del self._listeners[listener]
                    self._listeners[name] = _Listener(placeholder.live_within)
                state = self._listeners.setdefault(
                    name, _Listener(self.live_within or DEFAULT_POLL_INTERVAL)
                )
                state.started, state.stopping, state.stopped = True, False, False
                state.last_poll = self.clock()
        elif kind is Stopping or kind is Stopped:
            state = self._listeners.get(event.listener)
            if state is not None:
                state.stopping = True
                state.stopped = state.stopped or kind is Stopped

    def live(self) -> Check:
        """Not live when a running listener has not polled within its interval."""
        now = self.clock()
        stuck = []
        for name, s in sorted(self._listeners.items()):
            if s.started and not s.stopping and now - s.last_poll > s.live_within:
                stuck.append(f"{name}: no poll for {now - s.last_poll:.0f} s "
                             f"(limit {s.live_within:g} s)")  # fmt: skip
        if stuck:
            return Check(False, "; ".join(stuck))
        return Check(True, f"{len(self._listeners)} listener(s) polling")

    def ready(self) -> Check:
        """Ready when every listener started and none is stopping."""
        if not self._listeners:
            return Check(False, "no listener")
        waiting = [n for n, s in sorted(self._listeners.items()) if not s.started]
        stopping = [n for n, s in sorted(self._listeners.items()) if s.stopping]
        if stopping:
            return Check(False, f"stopping: {', '.join(stopping)}")
        if waiting:
            return Check(False, f"not started: {', '.join(waiting)}")
        return Check(True, f"{len(self._listeners)} listener(s) started")
