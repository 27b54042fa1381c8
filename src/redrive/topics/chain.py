"""The retry-topic chain of a listener (R4): which topics, which delays, when to give up.

A failed record is not retried in its partition: it is published to the next retry topic
with the time it is due, and the partition goes on. A consumer of the retry topics hands it
to the same handler once it is due. After the last delay (or a fatal error, or when the total
retry time is used up) it goes to the dead-letter topic::

    RetryTopics(delays=(1, 5, 30))                     # orders-retry-0, -1, -2, orders-dlt
    RetryTopics.fixed(2.0, attempts=3)                 # orders-retry (reused), orders-dlt
    RetryTopics.exponential(0.5, max_delay=8, attempts=5, max_total=60)
"""

from __future__ import annotations

from dataclasses import dataclass, field

from redrive.errors import ConfigError
from redrive.retry.classify import Classifier


@dataclass(frozen=True, slots=True)
class RetryTopics:
    """A listener's retry-topic chain.

    ``delays``: seconds to wait before each retry; one retry topic per delay,
    ``<topic>-retry-<n>`` (n from 0), or a single reused ``<topic>-retry`` when all delays
    are equal. ``max_total``: seconds from the first failure after which no retry is
    scheduled; the record goes to ``<topic>-dlt`` instead. ``classifier``: fatal errors skip
    the retry topics. ``auto_create``: create missing topics at start-up with the source
    topic's partition count (else a missing topic is a start-up error naming it).
    ``group_suffix``: the retry topics are consumed by the group ``<group_id><suffix>``.
    """

    delays: tuple[float, ...] = (1.0, 5.0, 30.0)
    max_total: float | None = None
    classifier: Classifier = field(default_factory=Classifier)
    auto_create: bool = True
    group_suffix: str = "-retry"

    def __post_init__(self) -> None:
        delays = tuple(self.delays)
        object.__setattr__(self, "delays", delays)
        if not delays:
            raise ConfigError("retry_topics.delays", "give at least one delay (seconds)")
        if any(not isinstance(d, int | float) or d < 0 for d in delays):
            raise ConfigError("retry_topics.delays", f"each must be >= 0 seconds, got {delays}")
        if self.max_total is not None and not self.max_total > 0:
            raise ConfigError(
                "retry_topics.max_total", f"must be > 0 seconds (or None), got {self.max_total!r}"
            )
        if not self.group_suffix:
            raise ConfigError(
                "retry_topics.group_suffix", "must not be empty: the retry topics need a group "
                "of their own so the main consumer never waits for them"
            )  # fmt: skip

    @classmethod
    def fixed(cls, delay: float, *, attempts: int = 3, **options: object) -> RetryTopics:
        """``attempts`` retries ``delay`` seconds apart, through one reused retry topic."""
        if attempts < 1:
            raise ConfigError("retry_topics.attempts", f"must be >= 1, got {attempts!r}")
        return cls((float(delay),) * attempts, **options)  # type: ignore[arg-type]

    @classmethod
    def exponential(
        cls,
        initial: float = 1.0,
        *,
        multiplier: float = 2.0,
        max_delay: float = 30.0,
        attempts: int = 3,
        **options: object,
    ) -> RetryTopics:
        """Delays initial, initial*multiplier, ... capped at ``max_delay``: ``attempts`` retries."""
        if attempts < 1:
            raise ConfigError("retry_topics.attempts", f"must be >= 1, got {attempts!r}")
        if multiplier < 1:
            raise ConfigError("retry_topics.multiplier", f"must be >= 1, got {multiplier!r}")
        delays = tuple(min(max_delay, initial * multiplier**i) for i in range(attempts))
        return cls(delays, **options)  # type: ignore[arg-type]

    @property
    def single_topic(self) -> bool:
        return len(set(self.delays)) == 1

    def topic_for(self, source: str, index: int) -> str:
        """The retry topic of retry number ``index`` (0 is the first retry)."""
        return f"{source}-retry" if self.single_topic else f"{source}-retry-{index}"

    def retry_topics(self, source: str) -> tuple[str, ...]:
        return tuple(dict.fromkeys(self.topic_for(source, i) for i in range(len(self.delays))))

    @staticmethod
    def dlt(source: str) -> str:
        return f"{source}-dlt"
