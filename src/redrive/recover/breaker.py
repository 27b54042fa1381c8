"""The dead-letter circuit breaker: stop a listener before a broken deployment empties its
topic into the dead-letter topic.

It wraps the listener's recoverer and counts which records ended handled (the loop's
counter of handled records) and which were recovered (dead-lettered, skipped...). When the record
about to be recovered would make ``in_a_row`` recoveries in a row, or more than ``share`` of
the last ``window`` records, it does not recover it: it raises ``ListenerStopped``, the
record stays uncommitted, and the listener stops with a clear error::

    CircuitBreaker(DeadLetter())                              # stop at the 100th in a row
    CircuitBreaker(DeadLetter(), in_a_row=10)                 # stop at the 10th in a row
    CircuitBreaker(DeadLetter(), share=0.5, window=200)       # or at > 50 % of 200 records

Nothing is lost when it trips: fix the cause (or the threshold) and start the listener
again; it resumes at the record that tripped the breaker. The counts live in memory, so a
restart begins a fresh count.
"""

from __future__ import annotations

import logging
from collections import deque
from collections.abc import Callable
from dataclasses import dataclass, field

from redrive.errors import ConfigError, ListenerStopped
from redrive.events import BreakerOpened
from redrive.message import Message
from redrive.recover.base import Context, ListenerContext, Recoverer

log = logging.getLogger("redrive.recover")

DEFAULT_IN_A_ROW = 100
"""Recoveries in a row at which a breaker trips unless told otherwise: a broken deployment,
not a few bad records."""


@dataclass
class _Counts:
    handled: Callable[[], int] | None = None  # the loop's count of handled records
    seen: int = 0  # its value at the last look
    in_a_row: int = 0
    window: deque[bool] = field(default_factory=deque)  # True: recovered, False: handled
    recovered_in_window: int = 0
    share_group: bool = False  # a share listener: a record not recovered is released


class CircuitBreaker(Recoverer):
    """Wrap ``recoverer`` (a ``DeadLetter()`` by default); trip at ``in_a_row`` recoveries
    in a row (``DEFAULT_IN_A_ROW``, 100, by default), or when more than ``share`` of the last
    ``window`` records (a full window) would have been recovered. Give ``in_a_row=None`` to
    use only the share, or ``share=None`` to use only the count (the default)."""

    def __init__(
        self,
        recoverer: Recoverer | None = None,
        *,
        in_a_row: int | None = DEFAULT_IN_A_ROW,
        share: float | None = None,
        window: int = 100,
    ) -> None:
        if in_a_row is not None and (not isinstance(in_a_row, int) or in_a_row < 1):
            raise ConfigError(
                "circuit_breaker.in_a_row", f"must be a whole number >= 1 or None, got {in_a_row!r}"
            )
        if share is not None and not 0 < share < 1:
            raise ConfigError(
                "circuit_breaker.share", f"must be between 0 and 1 (exclusive), got {share!r}"
            )
        if not isinstance(window, int) or window < 1:
            raise ConfigError("circuit_breaker.window", f"must be >= 1, got {window!r}")
        if in_a_row is None and share is None:
            raise ConfigError(
                "circuit_breaker", "give in_a_row= or share= (or both), otherwise it never trips"
            )
        if recoverer is None:
            from redrive.recover.dead_letter import DeadLetter

            recoverer = DeadLetter()
        self.recoverer = recoverer
        self.in_a_row = in_a_row
        self.share = share
        self.window = window
        self._counts: dict[str, _Counts] = {}

    def start(self, listener: ListenerContext) -> None:
        """Count from here on what `listener` handled (``listener.handled()``: a plain
        counter, no per-record cost), and start the wrapped recoverer."""
        self._counts[listener.name] = _Counts(
            handled=listener.handled, seen=listener.handled(), share_group=listener.share_group
        )
        self.recoverer.start(listener)

    def _push(self, counts: _Counts, recovered: bool) -> None:
        counts.window.append(recovered)
        counts.recovered_in_window += recovered
        if len(counts.window) > self.window:
            counts.recovered_in_window -= counts.window.popleft()

    def _trips(self, counts: _Counts) -> str | None:
        """Why recovering one more record would trip the breaker, or None."""
        if self.in_a_row is not None and counts.in_a_row + 1 >= self.in_a_row:
            return f"{counts.in_a_row + 1} records in a row failed (limit in_a_row={self.in_a_row})"
        if self.share is not None:
            seen = list(counts.window)[-(self.window - 1) :] if self.window > 1 else []
            recovered = sum(seen) + 1
            total = len(seen) + 1
            if total >= self.window and recovered / total > self.share:
                return (
                    f"{recovered} of the last {total} records failed "
                    f"(limit share={self.share:g} of window={self.window})"
                )
        return None

    def recover(self, msg: Message, exc: BaseException, ctx: Context) -> None:
        counts = self._counts.setdefault(ctx.listener, _Counts())
        if counts.handled is not None:  # records handled since the last recovery
            now = counts.handled()
            successes, counts.seen = now - counts.seen, now
            if successes > 0:
                counts.in_a_row = 0
                for _ in range(min(successes, self.window)):
                    self._push(counts, False)
        why = self._trips(counts)
        if why is not None:
            where = f"{msg.topic}[{msg.partition}]@{msg.offset}"
            if counts.share_group:
                fate = (f"{where} was not recovered and is released to the share group "
                        f"(last error: {type(exc).__name__}: {exc}). Fix the cause, or raise "
                        "the limit, and start the listener again: the group delivers it "
                        "again (its delivery counted).")  # fmt: skip
            else:
                fate = (f"{where} was not recovered and stays uncommitted (last error: "
                        f"{type(exc).__name__}: {exc}). Fix the cause, or raise the limit, "
                        "and start the listener again: it resumes at that record.")  # fmt: skip
            breaker = "stopped by the dead-letter circuit breaker"
            text = f"listener {ctx.listener!r} {breaker}: {why}; {fate}"
            log.error("%s", text)
            if ctx.bus:
                ctx.bus.emit(BreakerOpened(ctx.listener, why))
            raise ListenerStopped(text) from exc
        self.recoverer.recover(msg, exc, ctx)  # raises when it failed: nothing counted
        counts.in_a_row += 1
        self._push(counts, True)

    def close(self) -> None:
        self.recoverer.close()

    def describe(self) -> str:
        limits = []
        if self.in_a_row is not None:
            limits.append(f"{self.in_a_row} in a row")
        if self.share is not None:
            limits.append(f"> {self.share:g} of {self.window}")
        return f"{self.recoverer.describe()} behind a circuit breaker ({' or '.join(limits)})"


def default_recoverer() -> CircuitBreaker:
    """What a listener gets when you configure no recoverer: dead letters to
    ``<topic>-dlt``, behind a circuit breaker that stops the listener at the
    ``DEFAULT_IN_A_ROW``-th (100th) record in a row that fails."""
    return CircuitBreaker()
