"""The retry policy of a listener: how often, how long apart, and how a retry is done."""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass, field
from typing import Literal

from redrive.errors import ConfigError
from redrive.retry.backoff import BackOff
from redrive.retry.classify import Classifier, cause_chain

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
    ``max_interruptions``: an attempt that never reports an outcome (the process died or
    lost the partition while the handler ran) is not a failure and is tried again; after
    this many in a row the record is recovered with ``HandlingInterrupted`` (seek mode).
    """

    backoff: BackOff = field(
        default_factory=lambda: BackOff.exponential(1.0, max_delay=30.0, max_attempts=10)
    )
    mode: Mode = "seek"
    classifier: Classifier = field(default_factory=Classifier)
    per_exception: (
        tuple[tuple[type[BaseException], BackOff], ...] | Mapping[type[BaseException], BackOff]
    ) = ()
    recovery: BackOff = field(
        default_factory=lambda: BackOff.exponential(1.0, max_delay=60.0, max_attempts=None)
    )
    max_interruptions: int = 3

    def __post_init__(self) -> None:
        if (
            not isinstance(self.max_interruptions, int)
            or isinstance(self.max_interruptions, bool)
            or self.max_interruptions < 1
        ):
            raise ConfigError(
                "retry.max_interruptions",
                f"must be a whole number >= 1, got {self.max_interruptions!r}",
            )
        if self.mode not in ("seek", "in_place"):
            raise ConfigError("retry.mode", f"must be 'seek' or 'in_place', got {self.mode!r}")
        pairs: object = self.per_exception
        if isinstance(pairs, Mapping):  # {TimeoutError: BackOff.fixed(5)} reads best
            pairs = tuple(pairs.items())
            object.__setattr__(self, "per_exception", pairs)
        for pair in pairs:  # type: ignore[attr-defined]
            if (
                not isinstance(pair, tuple)
                or len(pair) != 2
                or not (isinstance(pair[0], type) and issubclass(pair[0], BaseException))
                or not isinstance(pair[1], BackOff)
            ):
                raise ConfigError(
                    "retry.per_exception",
                    f"give {{ExceptionType: BackOff(...)}} pairs, got {pair!r}",
                )

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
        """The back-off for `exc`: the first ``per_exception`` entry whose type matches a
        link of the cause chain (outermost link first), else ``backoff``."""
        if self.per_exception:
            for link in cause_chain(exc):
                for exc_type, backoff in self._pairs():
                    if isinstance(link, exc_type):
                        return backoff
        return self.backoff

    def _pairs(self) -> tuple[tuple[type[BaseException], BackOff], ...]:
        pairs = self.per_exception  # a tuple once __post_init__ ran
        return tuple(pairs.items()) if isinstance(pairs, Mapping) else pairs

    def describe(self) -> str:
        """One line for the start-up log."""
        extra = "".join(f", {t.__name__}: {b.describe()}" for t, b in self._pairs())
        return (
            f"{self.mode} {self.backoff.describe()}{extra}; {self.classifier.describe()}; "
            f"recovery retried {self.recovery.describe()}"
        )

    def next_delay(self, exc: BaseException, attempts: int, elapsed: float) -> float | None:
        """Delay before the next attempt, or None: recover now (fatal, or no attempt left)."""
        if self.classifier.is_fatal(exc):
            return None
        return self.backoff_for(exc).next_delay(attempts, elapsed)
