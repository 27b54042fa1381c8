"""Back-off policies (R1): when to try a failed record again, or that it is time to stop.

A back-off is a pure value. ``next_delay(attempts, elapsed)`` answers, after ``attempts``
attempts have failed and ``elapsed`` seconds since the first failure, how long to wait
before the next attempt, or ``None`` to stop and recover the record. It keeps no state, so
the attempt count can live anywhere (memory, commit metadata, record headers)::

    BackOff.none()                                        # one attempt, no retry
    BackOff.fixed(2.0, max_attempts=5)                    # 5 attempts, 2 s apart
    BackOff.exponential(0.5, max_delay=30, max_attempts=10, max_elapsed=600)
"""

from __future__ import annotations

import random
from dataclasses import dataclass

from redrive.errors import ConfigError


@dataclass(frozen=True, slots=True)
class BackOff:
    initial: float = 1.0
    multiplier: float = 2.0
    max_delay: float = 30.0
    jitter: bool = True
    max_attempts: int | None = 10
    max_elapsed: float | None = None

    def __post_init__(self) -> None:
        if self.initial < 0:
            raise ConfigError("backoff.initial", f"must be >= 0 seconds, got {self.initial!r}")
        if self.multiplier < 1:
            raise ConfigError("backoff.multiplier", f"must be >= 1, got {self.multiplier!r}")
        if self.max_delay < self.initial:
            raise ConfigError(
                "backoff.max_delay", f"must be >= initial ({self.initial}), got {self.max_delay!r}"
            )
        if self.max_attempts is not None and self.max_attempts < 1:
            raise ConfigError(
                "backoff.max_attempts", f"must be >= 1 (or None), got {self.max_attempts!r}"
            )
        if self.max_elapsed is not None and self.max_elapsed < 0:
            raise ConfigError("backoff.max_elapsed", f"must be >= 0, got {self.max_elapsed!r}")
        if self.max_attempts is None and self.max_elapsed is None:
            pass  # retry until it works: allowed on purpose, never loses a record

    @classmethod
    def none(cls) -> BackOff:
        """No retry: the first failure goes to the recoverer."""
        return cls(initial=0, multiplier=1, max_delay=0, jitter=False, max_attempts=1)

    @classmethod
    def fixed(
        cls, delay: float, *, max_attempts: int | None = 10, max_elapsed: float | None = None
    ) -> BackOff:
        return cls(delay, 1.0, delay, False, max_attempts, max_elapsed)

    @classmethod
    def exponential(
        cls,
        initial: float = 1.0,
        *,
        multiplier: float = 2.0,
        max_delay: float = 30.0,
        jitter: bool = True,
        max_attempts: int | None = 10,
        max_elapsed: float | None = None,
    ) -> BackOff:
        """Delays initial, initial*multiplier, ... capped at max_delay; with ``jitter`` each
        delay is drawn uniformly from [0, delay] (full jitter)."""
        return cls(initial, multiplier, max_delay, jitter, max_attempts, max_elapsed)

    def next_delay(
        self, attempts: int, elapsed: float = 0.0, rng: random.Random | None = None
    ) -> float | None:
        """Delay before attempt ``attempts + 1``, or None when no attempt is left."""
        if self.max_attempts is not None and attempts >= self.max_attempts:
            return None
        delay = min(self.max_delay, self.initial * self.multiplier ** max(attempts - 1, 0))
        if self.jitter and delay > 0:
            delay = (rng or random).uniform(0, delay)
        if self.max_elapsed is not None and elapsed + delay > self.max_elapsed:
            return None
        return delay

    def describe(self) -> str:
        """One line for the start-up log, e.g. ``exponential 1s..30s x2 full jitter, 10
        attempts``."""
        if self.max_attempts == 1:
            return "no retry"
        if self.multiplier == 1 or self.initial == self.max_delay:
            text = f"fixed {self.initial:g}s"
        else:
            text = f"exponential {self.initial:g}s..{self.max_delay:g}s x{self.multiplier:g}"
        if self.jitter:
            text += " full jitter"
        limits = []
        if self.max_attempts is not None:
            limits.append(f"{self.max_attempts} attempts")
        if self.max_elapsed is not None:
            limits.append(f"{self.max_elapsed:g}s in all")
        return f"{text}, {' or '.join(limits) or 'until it works'}"

    def delay_forever(self, attempts: int) -> float:
        """Like ``next_delay``, but past the limits the longest delay instead of stopping:
        for what must be tried until it works (a recoverer: giving up would lose a record)."""
        delay = self.next_delay(attempts)
        return self.max_delay if delay is None else delay
