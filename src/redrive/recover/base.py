"""Recoverers: the final action for a record whose retries are over (or never started)."""

from __future__ import annotations

import logging
from collections.abc import Callable, Mapping
from dataclasses import dataclass
from typing import Any, Protocol

from redrive.errors import ListenerStopped
from redrive.events import EventBus, Skipped
from redrive.message import Message

log = logging.getLogger("redrive.recover")


@dataclass(frozen=True, slots=True)
class Context:
    """What a recoverer knows besides the record and the exception."""

    listener: str
    group_id: str
    attempts: int
    first_failure: float
    bus: EventBus
    kafka: Mapping[str, Any]
    """Client settings of the listener (bootstrap servers, security) for producers."""
    interruptions: int = 0
    """Attempts that never reported an outcome (the process died while handling it)."""


class Recoverer(Protocol):
    """The final action for a failed record.

    Return normally when the record reached a final outcome (it will be committed). Raise
    when it did not (it stays uncommitted and recovery is tried again after a back-off);
    raise ``ListenerStopped`` to stop the listener.
    """

    def recover(self, msg: Message, exc: BaseException, ctx: Context) -> None: ...

    def close(self) -> None: ...


class Skip:
    """Log the failure and move on: the record counts as handled."""

    def recover(self, msg: Message, exc: BaseException, ctx: Context) -> None:
        log.warning(
            "skipping %s[%d]@%d after %d attempt(s): %s: %s",
            msg.topic, msg.partition, msg.offset, ctx.attempts, type(exc).__name__, exc,
        )  # fmt: skip
        if ctx.bus:
            ctx.bus.emit(Skipped(ctx.listener, msg.tp, msg.offset, f"{type(exc).__name__}: {exc}"))

    def close(self) -> None:
        pass

    def describe(self) -> str:
        return "skip (log and move on)"


class Stop:
    """Stop the listener with a clear error; the record stays uncommitted."""

    def recover(self, msg: Message, exc: BaseException, ctx: Context) -> None:
        raise ListenerStopped(
            f"listener {ctx.listener!r} stopped at {msg.topic}[{msg.partition}]@{msg.offset} "
            f"after {ctx.attempts} attempt(s): {type(exc).__name__}: {exc}"
        ) from exc

    def close(self) -> None:
        pass

    def describe(self) -> str:
        return "stop the listener"


class Call:
    """Run your own function ``fn(msg, exc)``; it returning normally is a final outcome."""

    def __init__(self, fn: Callable[[Message, BaseException], Any]) -> None:
        self.fn = fn

    def recover(self, msg: Message, exc: BaseException, ctx: Context) -> None:
        self.fn(msg, exc)

    def close(self) -> None:
        pass


def describe(recoverer: object) -> str:
    """One line naming a recoverer for the start-up log (its ``describe()`` if it has one)."""
    text = getattr(recoverer, "describe", None)
    return str(text()) if callable(text) else type(recoverer).__name__
