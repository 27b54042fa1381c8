"""Logs that explain: log lines from the event bus (one subscriber, no logging calls in the
loop's hot path), readable set-up (`configure`), and librdkafka's own lines routed through
Python logging with repeats collapsed (`kafka_logging`)."""

from __future__ import annotations

import json
import logging
import re
import sys
import threading
import time
from collections.abc import Callable, Mapping
from datetime import UTC, datetime
from typing import Any, Literal

from redrive.errors import ConfigError
from redrive.events import (
    Assigned,
    BackingOff,
    Committed,
    DeadLettered,
    Event,
    EventBus,
    Failed,
    Lost,
    NotDue,
    Paused,
    RecoveryRetrying,
    Resumed,
    RetryHop,
    Revoked,
    Skipped,
    Started,
    Stopped,
)

log = logging.getLogger("redrive.events")


def log_events(bus: EventBus, *, commits: bool = False) -> None:
    """Subscribe a logger (``redrive.events``) that tells what happens to records, one line
    per fact; ``redrive run`` installs it. Commits are logged too with `commits`.

    - WARNING: a handler raised (``failed (attempt 2): ConnectionError: ...``, and whether
      the error is fatal), a record was dead-lettered or skipped.
    - ERROR: a record could not be recovered (a dead-letter write failed); it stays
      uncommitted and recovery is tried again.
    - INFO: start, stop, partitions assigned and revoked, each retry (``retry in 1.2 s``),
      each hop to a retry topic.
    - DEBUG: pauses, resumes, records of a retry topic that are not due yet.

    The events carry an exception's type and message, not its traceback: for tracebacks,
    catch and log in the handler (``log.exception(...)``, then ``raise``). A failed commit
    is not an event: the loop logs it (``redrive.commit``, WARNING) and commits again later.

    >>> log_events(app.bus)
    """

    def on_event(e: Event) -> None:
        if isinstance(e, Failed):
            log.warning(
                "%s: %s@%d failed (attempt %d%s): %s: %s", e.listener, e.tp, e.offset,
                e.attempt, ", fatal: not retried" if e.fatal else "", e.error_type, e.error,
            )  # fmt: skip
        elif isinstance(e, BackingOff):
            log.info("%s: %s@%d retry in %s (attempt %d next)", e.listener, e.tp, e.offset,
                     _seconds(e.delay), e.attempt + 1)  # fmt: skip
        elif isinstance(e, DeadLettered):
            log.warning(
                "%s: %s@%d dead-lettered to %s[%d]@%d after %d attempt(s)", e.listener, e.tp,
                e.offset, e.topic, e.partition, e.dlt_offset, e.attempts,
            )  # fmt: skip
        elif isinstance(e, RecoveryRetrying):
            log.error("%s: %s@%d not recovered, stays uncommitted, trying again: %s",
                      e.listener, e.tp, e.offset, e.error)  # fmt: skip
        elif isinstance(e, Skipped):
            log.warning("%s: %s@%d skipped: %s", e.listener, e.tp, e.offset, e.reason)
        elif isinstance(e, RetryHop):
            log.info(
                "%s: %s@%d sent to %s for attempt %d, due in %s", e.listener, e.tp, e.offset,
                e.topic, e.attempt, _seconds(e.due - e.ts),
            )  # fmt: skip
        elif isinstance(e, NotDue):
            log.debug("%s: %s@%d not due for %s: partition paused", e.listener, e.tp,
                      e.offset, _seconds(e.due - e.ts))  # fmt: skip
        elif isinstance(e, Started):
            log.info("%s: started, group %s, topics %s", e.listener, e.group_id,
                     ",".join(e.topics))  # fmt: skip
        elif isinstance(e, Stopped):
            log.info("%s: stopped (%s)", e.listener, e.reason)
        elif isinstance(e, Assigned | Revoked | Lost):
            parts = ", ".join(str(tp) for tp in e.partitions) or "-"
            log.info("%s: %s %s", e.listener, e.kind.lower(), parts)
        elif isinstance(e, Paused | Resumed):
            log.debug("%s: %s %s", e.listener, e.kind.lower(), ", ".join(map(str, e.partitions)))
        elif commits and isinstance(e, Committed):
            log.info(
                "%s: committed %s (%s)", e.listener,
                ", ".join(f"{tp}={pos}" for tp, pos in e.positions), e.reason,
            )  # fmt: skip

    # The kinds it logs: not the events of every record handled, which are then not built.
    bus.subscribe(on_event, (Failed, BackingOff, DeadLettered, RecoveryRetrying, Skipped,
                             RetryHop, NotDue, Started, Stopped, Assigned, Revoked, Lost,
                             Paused, Resumed, *((Committed,) if commits else ())))  # fmt: skip


def _seconds(s: float) -> str:
    """``1.2 s``, ``0.05 s``, ``30 s``: short, and never ``0.0 s`` for a short wait."""
    s = max(s, 0.0)
    return f"{s:.2g} s" if s < 1 else f"{s:.1f} s".replace(".0 s", " s")


# --- Setting up logging, and librdkafka's logs through it ----------------------------------

_DIGITS = re.compile(r"\d+")

KAFKA_LOGGER = "redrive.kafka"
"""The logger librdkafka's own log lines go to (see `kafka_logging`)."""


class Collapse(logging.Filter):
    """Let the first of identical log lines through, then one summary per `window` seconds.

    librdkafka repeats a failure as often as it retries (an unreachable broker: "Connect to
    ... failed" about 20 times a second). With this filter on a logger you see the first line
    at once, then ``<line> (repeated 212 times in the last 10s)`` at most every `window`
    seconds while it goes on. Lines are identical when logger, level and text are, numbers
    aside ("after 51ms" and "after 50ms" are the same line).

    >>> logging.getLogger("noisy").addFilter(Collapse(window=10.0))
    """

    def __init__(self, window: float = 10.0, clock: Callable[[], float] = time.monotonic) -> None:
        super().__init__()
        self.window = window
        self._clock = clock
        self._lock = threading.Lock()
        # line -> (when it was last let through, how many were held back since)
        self._seen: dict[tuple[str, int, str], tuple[float, int]] = {}

    def filter(self, record: logging.LogRecord) -> bool:
        text = record.getMessage()
        key = (record.name, record.levelno, _DIGITS.sub("#", text))  # "after 51ms": the same
        now = self._clock()
        with self._lock:
            seen = self._seen.get(key)
            if seen is None:
                if len(self._seen) >= 1000:  # old lines are forgotten, not kept forever
                    self._seen = {k: v for k, v in self._seen.items() if now - v[0] < self.window}
                self._seen[key] = (now, 0)
                return True
            since, held = seen
            if now - since < self.window:
                self._seen[key] = (since, held + 1)
                return False
            self._seen[key] = (now, 0)
        if held:
            record.msg = f"{text} (repeated {held + 1} times in the last {now - since:.0f}s)"
            record.args = None
        return True


_kafka_log = logging.getLogger(KAFKA_LOGGER)
_kafka_log.addFilter(Collapse())


def kafka_logging(settings: Mapping[str, Any]) -> dict[str, Any]:
    """`settings` (confluent-kafka client settings) with librdkafka's logs sent to Python
    logging: the ``redrive.kafka`` logger, repeated lines collapsed (`Collapse`).

    Pass every client's settings through it when you create the client:

    >>> consumer = Consumer(kafka_logging({"bootstrap.servers": "127.0.0.1:9092", ...}))

    A ``logger`` you set yourself is kept. confluent-kafka hands the lines over when the
    client is polled (``poll``, ``consume``, ``flush``), not from its own threads.
    """
    return {"logger": _kafka_log, **settings}


class _JsonFormatter(logging.Formatter):
    def format(self, record: logging.LogRecord) -> str:
        line: dict[str, Any] = {
            "time": self.formatTime(record),
            "level": record.levelname,
            "logger": record.name,
            "message": record.getMessage(),
        }
        if record.exc_info:
            line["exception"] = self.formatException(record.exc_info)
        return json.dumps(line, default=str)

    def formatTime(self, record: logging.LogRecord, datefmt: str | None = None) -> str:
        t = datetime.fromtimestamp(record.created, UTC)
        return t.isoformat(timespec="milliseconds").replace("+00:00", "Z")


class _TextFormatter(logging.Formatter):
    def __init__(self) -> None:
        super().__init__("%(asctime)s %(levelname)-7s %(name)s: %(message)s")

    def formatTime(self, record: logging.LogRecord, datefmt: str | None = None) -> str:
        t = datetime.fromtimestamp(record.created).astimezone()
        return t.isoformat(sep=" ", timespec="milliseconds")


class _Stderr(logging.StreamHandler):  # type: ignore[type-arg]
    """Writes to `sys.stderr` as it is at each line (redirected, or a test's capture), not
    as it was when logging was set up."""

    def emit(self, record: logging.LogRecord) -> None:
        self.stream = sys.stderr  # emit runs under the handler's lock
        super().emit(record)


def configure(level: str = "INFO", fmt: Literal["text", "json"] = "text") -> None:
    """Send log lines of `level` and above to stderr: time, level, logger and message, as
    text or (``fmt="json"``) one JSON object per line.

    Calling it again replaces what an earlier call set up; handlers of your own stay.

    >>> configure("DEBUG", fmt="json")
    """
    if fmt not in ("text", "json"):
        raise ConfigError("log format", f"must be 'text' or 'json', got {fmt!r}")
    numeric = logging.getLevelName(level.upper())
    if not isinstance(numeric, int):
        raise ConfigError("log level", f"must be DEBUG, INFO, WARNING or ERROR, got {level!r}")
    root = logging.getLogger()
    for handler in [h for h in root.handlers if getattr(h, "_redrive", False)]:
        root.removeHandler(handler)
    handler = _Stderr()
    handler._redrive = True  # type: ignore[attr-defined]
    handler.setFormatter(_JsonFormatter() if fmt == "json" else _TextFormatter())
    root.addHandler(handler)
    root.setLevel(numeric)
