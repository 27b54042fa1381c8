"""Commit policies: when the loop commits the safe positions of its partitions (C2).

Whatever the policy, a committed position never passes a record without a final outcome
(C1); the policy only chooses *when* to commit::

    Commit.per_poll()          # default: after each poll's records are done, not waiting
    Commit.per_poll_sync()     # the same, waiting for the broker (Spring's default)
    Commit.per_record()        # after every record
    Commit.interval(5.0)       # positions stored; the client commits them every 5 s
    Commit.manual()            # a record is done when the handler calls msg.ack()
    Commit.transaction()       # outputs, dead letters and positions in one Kafka transaction

The default per-poll commit does not wait for the broker: positions only ever increase and
never pass an unfinished record, so a commit that fails is covered by the next one (or
asked for again at the next poll), and a crash can only lose the last poll's commit (those
records are handled again). Commits on revocation, on shutdown, for attempt state and for
dead-letter hand-offs always wait.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any

from redrive.errors import ConfigError


@dataclass(frozen=True, slots=True)
class Commit:
    """A commit policy. Build it with one of the class methods."""

    name: str
    after_record: bool = False
    background_interval: float | None = None
    manual_ack: bool = False
    wait: bool = True  # a poll's (or record's) commit waits for the broker's answer
    transactional: bool = False
    transactional_id: str | None = None

    @classmethod
    def per_poll(cls) -> Commit:
        """After each poll's records are done; the commit does not wait for the broker."""
        return cls("per_poll", wait=False)

    @classmethod
    def per_poll_sync(cls) -> Commit:
        """After each poll's records are done, waiting for the broker (Spring's default)."""
        return cls("per_poll_sync")

    @classmethod
    def per_record(cls) -> Commit:
        return cls("per_record", after_record=True)

    @classmethod
    def interval(cls, seconds: float = 5.0) -> Commit:
        if not seconds > 0:
            raise ConfigError("commit", f"interval must be > 0 seconds, got {seconds!r}")
        return cls("interval", background_interval=seconds)

    @classmethod
    def manual(cls) -> Commit:
        return cls("manual", manual_ack=True)

    @classmethod
    def transaction(
        cls, *, per_record: bool = False, transactional_id: str | None = None
    ) -> Commit:
        """Exactly once on Kafka (T1): the records the handler returns (``Output``), the dead
        letters and retry-topic hops, and the consumer's positions (with the attempt state
        of seek retries) commit in one Kafka transaction per poll, or per record with
        ``per_record=True``, or not at all. A failure aborts the transaction: the poll's
        records are handled again under the listener's retry policy.

        ``transactional_id``: the prefix of the producer's ``transactional.id``
        (``<prefix>.<listener name>``). None (default) makes a unique one per process;
        zombies are fenced through the consumer group (KIP-447) either way. A fixed one
        also fences an older instance that uses the same id: that one stops with
        ``ProducerFenced``.
        """
        if transactional_id is not None and (
            not isinstance(transactional_id, str) or not transactional_id
        ):
            raise ConfigError(
                "commit",
                f"transactional_id must be a non-empty str or None, got {transactional_id!r}",
            )
        return cls(
            "transaction_per_record" if per_record else "transaction",
            after_record=per_record,
            transactional=True,
            transactional_id=transactional_id,
        )

    def kafka_settings(self) -> dict[str, Any]:
        """Client settings this policy needs. redrive never lets the client store offsets
        by itself: only positions the loop has proven safe are stored or committed."""
        if self.background_interval is not None:
            return {
                "enable.auto.commit": True,
                "enable.auto.offset.store": False,
                "auto.commit.interval.ms": int(self.background_interval * 1000),
            }
        return {"enable.auto.commit": False, "enable.auto.offset.store": False}
