"""Recoverers: the final action for a record whose retries are over (or never started)."""

from __future__ import annotations

import logging
from abc import ABC, abstractmethod
from collections.abc import Callable, Mapping
from dataclasses import dataclass
from typing import Any

from redrive.errors import ListenerStopped
from redrive.events import EventBus, Skipped
from redrive.message import Message
from redrive.publish import Publisher

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
    publisher: Publisher | None = None
    """With ``Commit.transaction()``: the listener's open transaction. A recoverer that
    writes to Kafka writes through it (``publisher.publish``), so its write commits with the
    source record's position or not at all; None: use your own producer."""


@dataclass(frozen=True, slots=True)
class ListenerContext:
    """What a recoverer learns when its listener starts."""

    name: str
    group_id: str
    kafka: Mapping[str, Any]
    """The listener's full client settings (bootstrap servers, security), for producers."""
    handled: Callable[[], int]
    """Records the listener handled successfully so far (a plain counter, cheap to read)."""
    share_group: bool = False
    """True for a share listener: a record not recovered is released to the group (its
    members), not left uncommitted."""


class Recoverer(ABC):
    """The final action for a failed record.

    The loop calls ``start`` once when the listener starts, ``recover`` for each record whose
    retries are over (or that failed fatally), and ``close`` when the listener stops.
    ``recover`` returns normally when the record reached a final outcome (it will be
    committed); it raises when it did not (the record stays uncommitted and recovery is
    tried again after a back-off), or raises ``ListenerStopped`` to stop the listener::

        class Archive(Recoverer):
            def recover(self, msg: Message, exc: BaseException, ctx: Context) -> None:
                archive.put(msg.raw_value, reason=repr(exc))  # raises when it cannot

    One recoverer may serve several listeners: ``start`` is then called once per listener.
    """

    def start(self, listener: ListenerContext) -> None:  # noqa: B027 (optional hook)
        """Prepare for `listener` (connect producers, bind counters); nothing by default."""

    @abstractmethod
    def recover(self, msg: Message, exc: BaseException, ctx: Context) -> None:
        """Bring `msg`, which failed with `exc`, to a final outcome, or raise."""

    def close(self) -> None:  # noqa: B027 (optional hook)
        """Release what ``start`` acquired; nothing by default."""

    def describe(self) -> str:
        """One line naming this recoverer in the start-up log."""
        return type(self).__name__


class Skip(Recoverer):
    """Log the failure and move on: the record counts as handled."""

    def recover(self, msg: Message, exc: BaseException, ctx: Context) -> None:
        log.warning(
            "skipping %s[%d]@%d after %d attempt(s): %s: %s",
            msg.topic, msg.partition, msg.offset, ctx.attempts, type(exc).__name__, exc,
        )  # fmt: skip
        if ctx.bus:
            ctx.bus.emit(Skipped(ctx.listener, msg.tp, msg.offset, f"{type(exc).__name__}: {exc}"))

    def describe(self) -> str:
        return "skip (log and move on)"


class Stop(Recoverer):
    """Stop the listener with a clear error; the record stays uncommitted."""

    def recover(self, msg: Message, exc: BaseException, ctx: Context) -> None:
        raise ListenerStopped(
            f"listener {ctx.listener!r} stopped at {msg.topic}[{msg.partition}]@{msg.offset} "
            f"after {ctx.attempts} attempt(s): {type(exc).__name__}: {exc}"
        ) from exc

    def describe(self) -> str:
        return "stop the listener"


class Call(Recoverer):
    """Run your own function ``fn(msg, exc)``; it returning normally is a final outcome."""

    def __init__(self, fn: Callable[[Message, BaseException], Any]) -> None:
        self.fn = fn

    def recover(self, msg: Message, exc: BaseException, ctx: Context) -> None:
        self.fn(msg, exc)

    def describe(self) -> str:
        name = getattr(self.fn, "__qualname__", None) or type(self.fn).__name__
        return f"call {name}"
