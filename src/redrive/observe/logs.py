"""Log lines from the event bus: one subscriber, no logging calls in the loop's hot path."""

from __future__ import annotations

import logging

from redrive.events import (
    Assigned,
    Committed,
    DeadLettered,
    Event,
    EventBus,
    Failed,
    Lost,
    Paused,
    Resumed,
    RetryHop,
    Revoked,
    Skipped,
    Started,
    Stopped,
)

log = logging.getLogger("redrive.events")


def log_events(bus: EventBus, *, commits: bool = False) -> None:
    """Subscribe a logger that reports the notable events (commits too with `commits`)."""

    def on_event(e: Event) -> None:
        if isinstance(e, Started):
            log.info("%s started: group %s, topics %s", e.listener, e.group_id, ",".join(e.topics))
        elif isinstance(e, Stopped):
            log.info("%s stopped (%s)", e.listener, e.reason)
        elif isinstance(e, Assigned | Revoked | Lost):
            parts = ", ".join(str(tp) for tp in e.partitions) or "-"
            log.info("%s %s: %s", e.listener, e.kind.lower(), parts)
        elif isinstance(e, Failed):
            log.warning(
                "%s %s@%d failed (attempt %d%s): %s: %s", e.listener, e.tp, e.offset, e.attempt,
                ", fatal" if e.fatal else "", e.error_type, e.error,
            )  # fmt: skip
        elif isinstance(e, DeadLettered):
            log.warning(
                "%s %s@%d dead-lettered to %s[%d]@%d after %d attempt(s)", e.listener, e.tp,
                e.offset, e.topic, e.partition, e.dlt_offset, e.attempts,
            )  # fmt: skip
        elif isinstance(e, RetryHop):
            log.info(
                "%s %s@%d sent to %s for attempt %d", e.listener, e.tp, e.offset, e.topic,
                e.attempt,
            )  # fmt: skip
        elif isinstance(e, Skipped):
            log.warning("%s %s@%d skipped: %s", e.listener, e.tp, e.offset, e.reason)
        elif isinstance(e, Paused | Resumed):
            log.debug("%s %s %s", e.listener, e.kind.lower(), ", ".join(map(str, e.partitions)))
        elif commits and isinstance(e, Committed):
            log.info(
                "%s committed %s (%s)", e.listener,
                ", ".join(f"{tp}={pos}" for tp, pos in e.positions), e.reason,
            )  # fmt: skip

    bus.subscribe(on_event)
