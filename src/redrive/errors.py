"""Every error redrive raises, under one root.

```
RedriveError
├── ConfigError(ValueError)        a setting is unknown or has a value that is not allowed
├── BrokerError(RuntimeError)      the local Kafka broker cannot be resolved, started or stopped
├── KafkaUnavailable(ConnectionError)  no broker answered at the bootstrap address in time
├── UsageError(RuntimeError)       redrive was called where it cannot work (the fix is named)
├── StopTimeout(TimeoutError)      a graceful stop did not finish within the drain timeout
├── ClientError                    the Kafka client reported an error redrive cannot handle
│   ├── CommitFailed               a commit was refused (rebalance, lost ownership); retried
│   ├── TransactionAborted         a transaction had to be aborted; its poll is handled again
│   ├── ProducerFenced             another producer took over the transactional id (fatal;
│   │                              also a ListenerStopped: the listener stops)
│   └── ShareGroupsUnavailable     the broker offers no share groups (KIP-932)
├── RecoveryFailed                 a recoverer (e.g. the dead-letter publisher) failed
├── HandlingInterrupted            the process died while handling a record, too often
│   └── DeliveryLimitReached       a share group delivered a record its last time unhandled
└── ListenerStopped                a recoverer or circuit breaker stopped a listener on purpose
```

Signals a handler may raise (not errors of redrive itself):

- `BatchFailed(index=...)` or `BatchFailed(message=...)`: a batch listener names the record
  that failed; the records before it count as handled.
- `DeserializationError`: raised by redrive when a record's key or value cannot be decoded.
  It is fatal: the record goes to the recoverer with its raw bytes and never reaches a handler.
"""

from __future__ import annotations

from typing import TYPE_CHECKING

if TYPE_CHECKING:
    from collections.abc import Sequence

    from redrive.message import Message
    from redrive.outputs import Output


class RedriveError(Exception):
    """Root of every error raised by redrive."""


class ConfigError(RedriveError, ValueError):
    """A setting is unknown or has a value that is not allowed.

    The message names the setting, the value given, and what is allowed.
    """

    def __init__(self, setting: str, problem: str) -> None:
        self.setting = setting
        self.problem = problem
        super().__init__(f"invalid setting {setting!r}: {problem}")


class BrokerError(RedriveError, RuntimeError):
    """The local Apache Kafka broker could not be resolved, started or stopped."""


class KafkaUnavailable(RedriveError, ConnectionError):
    """No broker answered at the bootstrap address within the allowed time."""


class UsageError(RedriveError, RuntimeError):
    """redrive was called in a way that cannot work, such as ``App.run()`` at the top level
    of a module that ``redrive run`` imports. The message says how to fix it."""


class StopTimeout(RedriveError, TimeoutError):
    """A graceful stop did not finish in time: a handler was still running after the
    listener's ``drain_timeout`` (its record stays uncommitted and is handled again by the
    next owner)."""


class ClientError(RedriveError):
    """The Kafka client reported an error that redrive does not handle itself."""


class CommitFailed(ClientError):
    """A commit was refused (rebalance in progress, ownership lost, coordinator moving).

    The loop keeps the positions and commits them at the next opportunity; when ownership
    was lost, the new owner redelivers from the last committed position (at-least-once).
    """


class RecoveryFailed(RedriveError):
    """A recoverer could not bring a record to a final outcome (it stays uncommitted)."""


class HandlingInterrupted(RedriveError):
    """The reason a record is recovered when its handling was interrupted too often.

    An attempt that never reported an outcome (the process was killed, or lost its
    partition, while the handler ran) is not a failure: the record is handed over again.
    A record whose handling is interrupted ``max_interruptions`` times in a row (a record
    that crashes the process, for example) is recovered with this as its exception, so it
    still reaches the dead-letter topic instead of crashing every new owner.
    """

    def __init__(self, interruptions: int, last_error: str = "") -> None:
        self.interruptions = interruptions
        self.last_error = last_error
        text = f"handling was interrupted {interruptions} times (the process died or lost the "
        text += "partition while the handler ran)"
        if last_error:
            text += f"; the last failure before that: {last_error}"
        super().__init__(text)


class DeliveryLimitReached(HandlingInterrupted):
    """The reason a share listener recovers a record the broker delivers for the last time.

    A share listener dead-letters a failing record one delivery before the group's
    ``share.delivery.count.limit``, so a record that arrives *at* the limit was interrupted
    (the member died, or its acquisition lock expired, while the handler ran). It is not
    handed over again: the broker would archive it, without a dead letter, if this last
    delivery were interrupted too.
    """

    def __init__(self, deliveries: int, limit: int) -> None:
        self.deliveries = deliveries
        self.limit = limit
        RedriveError.__init__(
            self,
            f"delivered {deliveries} times (the share group's delivery limit is {limit}) "
            "without an outcome: a member died, or its acquisition lock expired, while the "
            "handler ran",
        )
        self.interruptions = 1
        self.last_error = ""


class ListenerStopped(RedriveError):
    """A listener was stopped on purpose (stop recoverer, circuit breaker)."""


class TransactionAborted(ClientError):
    """A Kafka transaction could not be committed and was aborted (an *abortable* error:
    the consumer lost its partitions, a write of the transaction failed, the coordinator
    moved). Nothing of it is visible to ``read_committed`` readers; the listener rewinds its
    partitions to the last committed positions and handles those records again. The loop
    handles this itself; you see it in logs and events."""


class ProducerFenced(ListenerStopped, ClientError):
    """A *fatal* transactional producer error: the listener stops, naming the cause.

    Raised when another producer started with the same ``transactional.id`` (a second
    instance given the same ``Commit.transaction(transactional_id=...)``, or a restarted one
    taking over from a zombie), or the broker refuses transactions (too old, or transactions
    disabled). The open transaction is never committed: nothing of it is visible to
    ``read_committed`` readers, and the partitions' next owner handles its records again.
    """


class ShareGroupsUnavailable(ClientError):
    """The broker does not offer share groups (KIP-932), so a share listener cannot run."""

    def __init__(self, servers: str, reason: str) -> None:
        super().__init__(
            f"the Kafka broker at {servers} does not offer share groups ({reason}). Share "
            "listeners need Apache Kafka 4.2 or newer with the share.version feature enabled "
            "(`kafka-features.sh --bootstrap-server ... upgrade --feature share.version=1`); "
            "or use @app.listener (consumer groups)."
        )


class BatchFailed(Exception):  # noqa: N818 - a signal, named after what happened
    """Raised by a batch listener to say which record of the batch failed.

    Give either the index of the record in the batch or the record itself::

        @app.batch_listener("orders")
        def handle(batch: list[Message]) -> None:
            for i, msg in enumerate(batch):
                try:
                    save(msg)
                except DatabaseError as exc:
                    raise BatchFailed(index=i) from exc

    The records before it count as handled and are committed; retry starts at it. A
    handler that writes outputs (``redrive.outputs``) passes those of the records before it
    in ``outputs=``: they are written as if returned (without them, those records are
    committed with no output written).
    """

    def __init__(
        self,
        index: int | None = None,
        *,
        message: Message | None = None,
        cause: BaseException | None = None,
        outputs: Sequence[Output] = (),
    ) -> None:
        if (index is None) == (message is None):
            raise TypeError("BatchFailed takes exactly one of index= or message=")
        self.index = index
        self.message = message
        self.outputs = outputs
        if cause is not None:
            self.__cause__ = cause
        where = f"index {index}" if index is not None else "the given message"
        super().__init__(f"batch failed at {where}")

    def index_in(self, batch: Sequence[Message]) -> int | None:
        """The index of the failed record in `batch`, or None when it names none of it."""
        if self.index is not None:
            return self.index if 0 <= self.index < len(batch) else None
        return next((i for i, m in enumerate(batch) if m is self.message), None)


class Defer(Exception):  # noqa: N818 - a signal
    """Raised by a handler to say "not yet": hand this record over again in ``delay`` seconds.

    The partition is paused and rewound to the record; nothing is committed past it and no
    attempt is counted. Retry-topic consumers use it to wait for a record's due time (R4).
    In a batch listener, ``index`` names the first record that must wait; the records before
    it are committed, and ``outputs`` are theirs (written as if returned, see ``BatchFailed``).
    """

    def __init__(self, delay: float, *, index: int = 0, outputs: Sequence[Output] = ()) -> None:
        self.delay = max(0.0, delay)
        self.index = index
        self.outputs = outputs
        super().__init__(f"deferred for {self.delay:.3f}s")


class DeserializationError(RedriveError):
    """A record's key or value could not be decoded; it is never handed to a handler."""
