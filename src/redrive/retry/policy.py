"""The retry policy of a listener: how often, how long apart, and how a retry is done."""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Literal

from redrive.errors import ConfigError
from redrive.retry.backoff import BackOff
from redrive.retry.classify import Classifier

Mode = Literal["seek", "in_place"]


@dataclass(frozen=True, slots=True)
class Retry:
    """How a listener retries a failed record before it is recovered.

    - ``mode="seek"`` (default, stateful): the partition is rewound to the failed record and
      fetches it again after the back-off. The attempt count is kept in the commit metadata
      of the partition, so a rebalance or a restart continues it (R3).
    - ``mode="in_place"`` (stateless): the loop keeps the record and hands it to the handler
      again after the back-off; the count lives in memory.

    Either way the partition is *paused* while it waits and the loop keeps polling, so no
    back-off makes the consumer exceed ``max.poll.interval.ms`` (R2), and other partitions
    keep flowing. ``per_exception`` picks another back-off for some exception types.
    ``recovery`` is the back-off between tries of a recoverer that failed (a dead-letter
    write the broker refused): by default forever, so nothing is lost (D3).
    """

    backoff: BackOff = field(
        default_factory=lambda: BackOff.exponential(1.0, max_delay=30.0, max_attempts=10)
    )
    mode: Mode = "seek"
    classifier: Classifier = field(default_factory=Classifier)
    per_exception: tuple[tuple[type[BaseException], BackOff], ...] = ()
    recovery: BackOff = field(
        default_factory=lambda: BackOff.exponential(1.0, max_delay=60.0, max_attempts=None)
    )

    def __post_init__(self) -> None:
        if self.mode not in ("seek", "in_place"):
            raise ConfigError("retry.mode", f"must be 'seek' or 'in_place', got {self.mode!r}")

    @classmethod
    def none(cls) -> Retry:
        """No retry: the first failure goes to the recoverer."""
        return cls(backoff=BackOff.none())

    @classmethod
    def seek(cls, backoff: BackOff | None = None, **kwargs: object) -> Retry:
        return cls(backoff=backoff or BackOff.exponential(), mode="seek", **kwargs)  # type: ignore[arg-type]

    @classmethod
    def in_place(cls, backoff: BackOff | None = None, **kwargs: object) -> Retry:
        return cls(backoff=backoff or BackOff.exponential(), mode="in_place", **kwargs)  # type: ignore[arg-type]

    def backoff_for(self, exc: BaseException) -> BackOff:
        for exc_type, backoff in self.per_exception:
            if isinstance(exc, exc_type) or isinstance(exc.__cause__, exc_type):
                return backoff
        return self.backoff

    def next_delay(self, exc: BaseException, attempts: int, elapsed: float) -> float | None:
        """Delay before the next attempt, or None: recover now (fatal, or no attempt left)."""
        if self.classifier.is_fatal(exc):
            return None
        return self.backoff_for(exc).next_delay(attempts, elapsed)
