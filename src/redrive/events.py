"""The event bus (O1): every step of the loop is an event; logs, metrics and the lab listen.

Events are frozen values with the wall-clock time ``ts`` (seconds) and the ``listener`` name.
The loop only builds an event when somebody listens (``if bus: bus.emit(...)``), so an
unobserved loop pays one truth test per step. The two events of every record handled
(``Delivered``, ``Succeeded``) are built only when a subscriber asked for them
(``bus.records``), and ``Polled``, whose counts per partition take a look at every record,
only when one asked for it (``bus.wants(Polled)``): a subscriber that names the kinds it
wants (``subscribe(s, kinds=...)``) and leaves them out, such as the metrics (which count
``Handled``, once per poll), costs the loop next to nothing per record.

Catalogue:

- ``Started`` / ``Stopped``: a listener's loop began or ended.
- ``Assigned`` / ``Revoked`` / ``Lost``: rebalance; partitions given, taken back, or lost.
- ``Polled``: one poll returned records (count per partition).
- ``Delivered``: a record (or a batch) was handed to the handler.
- ``Succeeded``: the handler finished a record without error.
- ``Failed``: the handler raised for a record; exception type and message.
- ``NotDue``: a retry-topic record is not due yet; it is not handed over before ``due``.
- ``BackingOff``: a failed record waits ``delay`` seconds before its next attempt.
- ``Paused`` / ``Resumed``: partitions stopped or started fetching.
- ``Seeked``: a partition was rewound to an offset.
- ``Committed``: positions (next offset to read) were committed, per partition (with
  ``Commit.transaction()``: together with the transaction's outputs and dead letters).
- ``Aborted``: a transaction was aborted; its partitions are rewound and handled again.
- ``DeadLettered``: a record was written to a dead-letter topic and the broker confirmed it.
- ``RecoveryRetrying``: a recoverer could not finish; the record stays uncommitted and
  recovery is tried again after a back-off.
- ``Skipped``: a recoverer dropped a record on purpose.
- ``RetryHop``: a record was sent to a retry topic, due at ``due``.
- ``Handled``: after each poll's records were handed over: how many the poll returned, how
  many were handled successfully since the previous one, and the seconds the hand-over took.
- ``Due``: a retry-topic record's due time has passed; it is handed over ``late`` seconds
  after it.
- ``Idle``: a poll returned no records (with ``Polled``, the sign that the loop polls).
- ``Stopping``: a listener's loop began to close (drain, commit, leave the group).
- ``Recovered``: the recoverer brought a failed record to a final outcome (after its own
  ``DeadLettered`` / ``RetryHop`` / ``Skipped``, when it has one).
- ``CommitRetrying``: a synchronous commit failed; its positions are tried again later.
- ``Lag``: records between each partition's committed position and its high watermark,
  from the client's statistics (only while someone asked for them, see ``App.lag_interval``).
- ``BreakerOpened``: the dead-letter circuit breaker tripped; the listener stops.
- ``Acknowledged``: a share listener's acknowledgement of a record (accept, release or
  reject) was taken by the broker (share groups, S1); ``delivery`` is its delivery count.
"""

from __future__ import annotations

import threading
from collections.abc import Callable, Iterable
from dataclasses import dataclass, field
from time import time
from typing import Any

from redrive.message import Message, TopicPartition

LOCAL = {"local": True}
"""Field metadata of values that stay in the process (records): not written by the lab."""


@dataclass(frozen=True, slots=True)
class Event:
    listener: str
    ts: float = field(default_factory=time, kw_only=True)

    @property
    def kind(self) -> str:
        return type(self).__name__


@dataclass(frozen=True, slots=True)
class Started(Event):
    group_id: str
    topics: tuple[str, ...]
    settings: tuple[tuple[str, str], ...] = ()


@dataclass(frozen=True, slots=True)
class Stopped(Event):
    reason: str = "stop"


@dataclass(frozen=True, slots=True)
class Assigned(Event):
    partitions: tuple[TopicPartition, ...]


@dataclass(frozen=True, slots=True)
class Revoked(Event):
    partitions: tuple[TopicPartition, ...]


@dataclass(frozen=True, slots=True)
class Lost(Event):
    partitions: tuple[TopicPartition, ...]


@dataclass(frozen=True, slots=True)
class Polled(Event):
    counts: tuple[tuple[TopicPartition, int, int], ...]
    """(partition, first offset, number of records) per partition, in poll order."""


@dataclass(frozen=True, slots=True)
class Delivered(Event):
    records: tuple[tuple[TopicPartition, int, int], ...]
    """(partition, offset, attempt) of each record handed over in one handler call."""
    messages: tuple[Message, ...] = field(default=(), compare=False, repr=False, metadata=LOCAL)
    """The records themselves (headers for trace context), in the order of ``records``."""


@dataclass(frozen=True, slots=True)
class Succeeded(Event):
    tp: TopicPartition
    offset: int


@dataclass(frozen=True, slots=True)
class Failed(Event):
    tp: TopicPartition
    offset: int
    attempt: int
    error_type: str
    error: str
    fatal: bool = False


@dataclass(frozen=True, slots=True)
class BackingOff(Event):
    tp: TopicPartition
    offset: int
    attempt: int
    delay: float


@dataclass(frozen=True, slots=True)
class NotDue(Event):
    tp: TopicPartition
    offset: int
    due: float
    """Wall-clock time (seconds) from which the record may be handed over."""


@dataclass(frozen=True, slots=True)
class Paused(Event):
    partitions: tuple[TopicPartition, ...]
    until: float
    delay: float = 0.0
    """Seconds from ``ts`` to ``until`` (0: paused with no due time, until room is made)."""


@dataclass(frozen=True, slots=True)
class Resumed(Event):
    partitions: tuple[TopicPartition, ...]


@dataclass(frozen=True, slots=True)
class Seeked(Event):
    tp: TopicPartition
    offset: int


@dataclass(frozen=True, slots=True)
class Committed(Event):
    positions: tuple[tuple[TopicPartition, int], ...]
    metadata: tuple[tuple[TopicPartition, str], ...] = ()
    reason: str = "poll"
    duration: float = 0.0
    """Seconds the commit call took (a synchronous one waits for the broker)."""


@dataclass(frozen=True, slots=True)
class Aborted(Event):
    """A transaction was aborted (a handler failed, or an abortable Kafka error): nothing of
    it is visible to ``read_committed`` readers; ``rewound`` partitions go back to these
    positions (the last committed) and their records are handled again."""

    reason: str
    rewound: tuple[tuple[TopicPartition, int], ...] = ()


@dataclass(frozen=True, slots=True)
class DeadLettered(Event):
    tp: TopicPartition
    offset: int
    topic: str
    partition: int
    dlt_offset: int
    attempts: int


@dataclass(frozen=True, slots=True)
class RecoveryRetrying(Event):
    tp: TopicPartition
    offset: int
    error: str


@dataclass(frozen=True, slots=True)
class Skipped(Event):
    tp: TopicPartition
    offset: int
    reason: str


@dataclass(frozen=True, slots=True)
class RetryHop(Event):
    tp: TopicPartition
    offset: int
    topic: str
    attempt: int
    due: float


@dataclass(frozen=True, slots=True)
class Handled(Event):
    received: int
    handled: int
    seconds: float
    """Time the loop spent handing over one poll's records (with ``concurrency > 1``: queueing
    them; their handling shows in ``handled`` at a later poll)."""


@dataclass(frozen=True, slots=True)
class Due(Event):
    tp: TopicPartition
    offset: int
    late: float


@dataclass(frozen=True, slots=True)
class Idle(Event):
    pass


@dataclass(frozen=True, slots=True)
class Stopping(Event):
    pass


@dataclass(frozen=True, slots=True)
class Recovered(Event):
    tp: TopicPartition
    offset: int
    recoverer: str
    """The recoverer's class name."""


@dataclass(frozen=True, slots=True)
class CommitRetrying(Event):
    positions: tuple[tuple[TopicPartition, int], ...]
    error: str
    reason: str = "poll"


@dataclass(frozen=True, slots=True)
class Lag(Event):
    lags: tuple[tuple[TopicPartition, int], ...]
    """(partition, records behind the high watermark) per assigned partition."""


@dataclass(frozen=True, slots=True)
class BreakerOpened(Event):
    reason: str


@dataclass(frozen=True, slots=True)
class Acknowledged(Event):
    tp: TopicPartition
    offset: int
    outcome: str
    """"accept", "release" or "reject"."""
    delivery: int
    """The broker's delivery count of the record when it was acknowledged."""


Subscriber = Callable[[Event], Any]

RECORD_EVENTS: frozenset[type[Event]] = frozenset({Delivered, Succeeded})
"""The events of every record handled: built only when a subscriber wants them."""


class EventBus:
    """In-process fan-out of events to subscribers, in the order they happen.

    ``bool(bus)`` is False while nobody listens, which is what the loop checks before it
    builds an event; ``bus.records`` is False while nobody listens to ``RECORD_EVENTS``. A
    subscriber that raises is logged and kept (it must not break consumption).
    """

    def __init__(self) -> None:
        self._subscribers: tuple[tuple[Subscriber, frozenset[type[Event]] | None], ...] = ()
        self._lock = threading.Lock()
        self.records = False
        self._wanted: frozenset[type[Event]] | None = frozenset()  # None: every kind

    def __bool__(self) -> bool:
        return bool(self._subscribers)

    def subscribe(
        self, subscriber: Subscriber, kinds: Iterable[type[Event]] | None = None
    ) -> Callable[[], None]:
        """Add a subscriber of every event, or of the event types in `kinds`; returns a
        function that removes it."""
        entry = (subscriber, None if kinds is None else frozenset(kinds))
        with self._lock:
            self._subscribers = (*self._subscribers, entry)
            self._update()

        def unsubscribe() -> None:
            with self._lock:
                self._subscribers = tuple(e for e in self._subscribers if e is not entry)
                self._update()

        return unsubscribe

    def _update(self) -> None:
        self.records = any(k is None or k & RECORD_EVENTS for _, k in self._subscribers)
        wanted: set[type[Event]] = set()
        for _, kinds in self._subscribers:
            if kinds is None:
                self._wanted = None
                return
            wanted |= kinds
        self._wanted = frozenset(wanted)

    def wants(self, kind: type[Event]) -> bool:
        """True when a subscriber listens to events of type `kind`."""
        wanted = self._wanted
        return wanted is None or kind in wanted

    def emit(self, event: Event) -> None:
        kind = type(event)
        for subscriber, kinds in self._subscribers:
            if kinds is not None and kind not in kinds:
                continue
            try:
                subscriber(event)
            except Exception:  # a broken subscriber must not stop consumption
                import logging

                logging.getLogger("redrive.events").exception(
                    "event subscriber %r failed on %s", subscriber, event.kind
                )


class Recorder:
    """A subscriber that keeps every event (used by the lab and tests)."""

    def __init__(self) -> None:
        self.events: list[Event] = []
        self._lock = threading.Lock()

    def __call__(self, event: Event) -> None:
        with self._lock:
            self.events.append(event)

    def of(self, kind: type[Event]) -> list[Any]:
        with self._lock:
            return [e for e in self.events if isinstance(e, kind)]
