"""A listener's options: the one list of them, their defaults, and their checks.

``App.listener()`` and ``App.batch_listener()`` take these as keyword-only arguments and
build a ``ListenerOptions``, which checks the type and value of every option when the
listener is registered, long before a record arrives. A mistake raises ``ConfigError``
naming the option, the value given, what is accepted and, for the common slips, the fix::

    app.listener("orders", commit="per_record")
    # ConfigError: invalid setting 'commit': must be a Commit policy, got 'per_record'; use
    # Commit.per_record()

Options that depend on each other or on the App (a group id from the App, batch listeners
and concurrency, reserved ``kafka`` keys, one listener per topic and group) are checked by
``App`` when it registers the listener.
"""

from __future__ import annotations

import math
from collections.abc import Mapping
from dataclasses import dataclass, fields
from typing import TYPE_CHECKING, Literal

from redrive.consumer.commit import Commit
from redrive.errors import ConfigError
from redrive.recover.base import Recoverer
from redrive.retry.backoff import BackOff
from redrive.retry.policy import Retry
from redrive.serde import DeserializerOption, check_deserializer
from redrive.topics import RetryTopics
from redrive.topics.create import MISSING_TOPICS, MissingTopics

if TYPE_CHECKING:
    from redrive.share.group import ShareGroup

Ordering = Literal["partition", "key", "none"]
"""How ``concurrency > 1`` keeps records in order: per partition, per key, or not at all."""

KafkaValue = str | int | float | bool
"""A confluent-kafka setting's value as redrive passes it through."""

ORDERINGS: tuple[Ordering, ...] = ("partition", "key", "none")
_COMMITS = (
    "Commit.per_poll(), Commit.per_record(), Commit.interval(seconds), Commit.manual() or "
    "Commit.transaction()"
)
_RECOVERERS = "DeadLetter(), Skip(), Stop(), Call(fn)"


@dataclass(frozen=True, slots=True, kw_only=True)
class ListenerOptions:
    """The options of one listener, checked when it is built.

    Each field's docstring is the reference for that keyword argument of ``App.listener()``
    and ``App.batch_listener()``.
    """

    group_id: str | None = None
    """Consumer group of the listener; None: the ``group_id`` given to ``App``."""
    max_poll_records: int = 500
    """Most records one poll hands over (one batch, for a batch listener)."""
    key_deserializer: DeserializerOption = "bytes"
    """How ``msg.key`` is decoded: "bytes" (as is), "str" (UTF-8), "json", or a function."""
    value_deserializer: DeserializerOption = "bytes"
    """How ``msg.value`` is decoded: "bytes" (as is), "str" (UTF-8), "json", or a function."""
    commit: Commit | None = None
    """When positions are committed; None: ``Commit.per_poll()``. ``Commit.transaction()``
    commits the records the handler returns, its dead letters and its positions in one Kafka
    transaction (exactly once on Kafka topics)."""
    retry: Retry | None = None
    """How a failed record is retried; None: ``Retry()`` (seek, exponential, 10 attempts)."""
    recoverer: Recoverer | None = None
    """The final action for a record whose retries are over; None: ``DeadLetter()`` behind
    a ``CircuitBreaker``."""
    kafka: Mapping[str, KafkaValue] | None = None
    """confluent-kafka consumer settings for this listener; they win over ``App(kafka=)``."""
    poll_timeout: float = 0.5
    """Seconds one poll waits for records."""
    name: str | None = None
    """The listener's name in logs and events; None: the handler's qualified name."""
    retry_topics: RetryTopics | None = None
    """Non-blocking retries through ``<topic>-retry-<n>`` topics, then ``<topic>-dlt``."""
    concurrency: int = 1
    """Records handled at once (record listeners only); 1 handles them one by one."""
    ordering: Ordering = "partition"
    """With ``concurrency > 1``: records in order per "partition", per "key", or "none"."""
    max_in_flight: int | None = None
    """With ``concurrency > 1``: most records handed over and not yet done; None: derived
    from ``max_poll_records`` and ``concurrency``."""
    drain_timeout: float = 30.0
    """Seconds revocation and stop wait for running records before abandoning them."""
    missing_topics: MissingTopics = "wait"
    """A topic of the listener missing at start: "wait" (say so every 30 s; consumed once it
    exists), "fail" (``App.start()`` raises ``ConfigError``) or "create" (1 partition)."""

    def __post_init__(self) -> None:
        self.validate()

    def validate(self) -> None:
        """Raise ``ConfigError`` for the first option whose type or value is not accepted."""
        _optional_text("group_id", self.group_id)
        _whole("max_poll_records", self.max_poll_records)
        check_deserializer("key_deserializer", self.key_deserializer)
        check_deserializer("value_deserializer", self.value_deserializer)
        _commit(self.commit)
        _retry(self.retry)
        _recoverer(self.recoverer)
        _kafka(self.kafka)
        _seconds("poll_timeout", self.poll_timeout, zero=False)
        _optional_text("name", self.name)
        _instance("retry_topics", self.retry_topics, RetryTopics, "RetryTopics((1, 5, 30))")
        _whole("concurrency", self.concurrency)
        if self.ordering not in ORDERINGS:
            raise ConfigError(
                "ordering", f"must be 'partition', 'key' or 'none', got {self.ordering!r}"
            )
        if self.max_in_flight is not None:
            _whole("max_in_flight", self.max_in_flight, "a whole number >= 1 or None")
        _seconds("drain_timeout", self.drain_timeout, zero=True)
        if self.commit is not None and self.commit.transactional:
            _transactional(self)
        if self.missing_topics not in MISSING_TOPICS:
            raise ConfigError(
                "missing_topics",
                f"must be 'wait', 'fail' or 'create', got {_got(self.missing_topics)}",
            )


@dataclass(frozen=True, slots=True, kw_only=True)
class ShareListenerOptions:
    """The options of one share listener (``App.share_listener()``,
    ``App.share_batch_listener()``), checked when it is built. A share group has no
    positions to commit and no partitions to pause: ``commit``, ``retry_topics``,
    ``concurrency`` and ``ordering`` do not apply; ``consumers`` runs several members."""

    group_id: str | None = None
    """Share group of the listener; None: the ``group_id`` given to ``App``."""
    share_group: ShareGroup | None = None
    """The share group's delivery limit, lock duration and start, written at start; None:
    ``ShareGroup()`` (start at the earliest record, the broker's limit and lock)."""
    consumers: int = 1
    """Members of the share group this App runs (a thread and a client each); more members
    than partitions share the partitions' records."""
    max_poll_records: int = 500
    """Most records one poll hands over (one batch, for a batch listener). The client
    acquires whole producer batches, so it may hold more, acquired (their locks running)
    by an earlier poll: redrive counts their lock from that poll."""
    key_deserializer: DeserializerOption = "bytes"
    """How ``msg.key`` is decoded: "bytes" (as is), "str" (UTF-8), "json", or a function."""
    value_deserializer: DeserializerOption = "bytes"
    """How ``msg.value`` is decoded: "bytes" (as is), "str" (UTF-8), "json", or a function."""
    retry: Retry | None = None
    """Which failures are fatal and how many deliveries a record gets (its back-off's
    ``max_attempts``, capped one below the group's delivery limit); delays do not apply:
    a released record is delivered again at once. None: ``Retry()``."""
    recoverer: Recoverer | None = None
    """The final action before a record is rejected; None: ``DeadLetter()`` behind a
    ``CircuitBreaker``."""
    kafka: Mapping[str, KafkaValue] | None = None
    """confluent-kafka share consumer settings; they win over ``App(kafka=)``."""
    poll_timeout: float = 0.5
    """Seconds one poll waits for records."""
    name: str | None = None
    """The listener's name in logs and events; None: the handler's qualified name."""
    drain_timeout: float = 30.0
    """Seconds a stop waits for the running handler."""
    missing_topics: MissingTopics = "wait"
    """A topic of the listener missing at start: "wait", "fail" or "create"."""

    def __post_init__(self) -> None:
        self.validate()

    def validate(self) -> None:
        """Raise ``ConfigError`` for the first option whose type or value is not accepted."""
        from redrive.share.group import ShareGroup

        _optional_text("group_id", self.group_id)
        _instance("share_group", self.share_group, ShareGroup, "ShareGroup(delivery_limit=5)")
        _whole("consumers", self.consumers)
        _whole("max_poll_records", self.max_poll_records)
        check_deserializer("key_deserializer", self.key_deserializer)
        check_deserializer("value_deserializer", self.value_deserializer)
        _retry(self.retry)
        _recoverer(self.recoverer)
        _kafka(self.kafka)
        _seconds("poll_timeout", self.poll_timeout, zero=False)
        _optional_text("name", self.name)
        _seconds("drain_timeout", self.drain_timeout, zero=True)
        if self.missing_topics not in MISSING_TOPICS:
            raise ConfigError(
                "missing_topics",
                f"must be 'wait', 'fail' or 'create', got {_got(self.missing_topics)}",
            )


OPTION_NAMES: tuple[str, ...] = tuple(f.name for f in fields(ListenerOptions))
"""Every listener option, in the order of ``App.listener()``'s keyword arguments."""


def _got(value: object, bare: tuple[type, ...] = ()) -> str:
    """``value`` as an error message quotes it: its repr, with its type unless that is plain
    (None, a str in quotes, or one of the ``bare`` types the option accepts)."""
    if isinstance(value, type):
        return f"the class {value.__qualname__}"
    if value is None or type(value) in (str, *bare):
        return repr(value)
    return f"{value!r} (type {type(value).__name__})"


def _call_it(value: object) -> str:
    """The fix for a class or a factory method given where an instance is wanted."""
    name = getattr(value, "__qualname__", "")
    if isinstance(value, type):
        return f"; pass an instance: {name}()"
    return f"; call it: {name}()"


def _whole(option: str, value: object, accepted: str = "a whole number >= 1") -> None:
    if isinstance(value, bool) or not isinstance(value, int) or value < 1:
        raise ConfigError(option, f"must be {accepted}, got {_got(value, (int,))}")


def _seconds(option: str, value: object, *, zero: bool) -> None:
    bound = ">= 0" if zero else "> 0"
    if (
        isinstance(value, bool)
        or not isinstance(value, int | float)
        or not math.isfinite(value)
        or not (value >= 0 if zero else value > 0)
    ):
        raise ConfigError(option, f"must be {bound} seconds, got {_got(value, (int, float))}")


def _optional_text(option: str, value: object) -> None:
    if value is not None and (not isinstance(value, str) or not value):
        raise ConfigError(option, f"must be a non-empty str or None, got {_got(value)}")


def _instance(option: str, value: object, kind: type, example: str) -> None:
    if value is not None and not isinstance(value, kind):
        raise ConfigError(
            option, f"must be a {kind.__name__} (e.g. {example}) or None, got {_got(value)}"
        )


def _commit(value: object) -> None:
    if value is None or isinstance(value, Commit):
        return
    problem = f"must be a Commit policy, got {_got(value)}"
    if isinstance(value, str) and value in ("per_poll", "per_record", "manual", "transaction"):
        problem += f"; use Commit.{value}()"
    elif isinstance(value, str) and value == "interval":
        problem += "; use Commit.interval(seconds)"
    elif isinstance(value, str) and value in ("transactional", "exactly_once"):
        problem += "; use Commit.transaction()"
    elif value in (
        Commit.per_poll, Commit.per_record, Commit.interval, Commit.manual, Commit.transaction
    ):  # fmt: skip
        problem += _call_it(value)
    else:
        problem += f": one of {_COMMITS}"
    raise ConfigError("commit", problem)


def _transactional(options: ListenerOptions) -> None:
    """What a transaction per poll cannot combine with."""
    if options.concurrency > 1:
        raise ConfigError(
            "commit",
            "Commit.transaction() does not combine with concurrency > 1: records finish out "
            "of order, and a transaction commits the outputs of the records before its "
            "positions; use concurrency=1 (or several listener processes: redrive run "
            "--workers N)",
        )
    if options.retry is not None and options.retry.mode == "in_place":
        raise ConfigError(
            "retry",
            "Retry.in_place() does not combine with Commit.transaction(): an aborted "
            "transaction rewinds the partition, and in-place retries keep records in "
            "memory past it; use Retry.seek(backoff) (the default)",
        )


def _retry(value: object) -> None:
    if value is None or isinstance(value, Retry):
        return
    problem = f"must be a Retry policy, got {_got(value)}"
    if isinstance(value, BackOff):
        problem += "; a BackOff goes inside a Retry: pass retry=Retry(backoff=BackOff.fixed(...))"
    elif value in (Retry, Retry.none, Retry.seek, Retry.in_place):
        problem += _call_it(value)
    else:
        problem += ": Retry(), Retry.none(), Retry.seek(backoff) or Retry.in_place(backoff)"
    raise ConfigError("retry", problem)


def _recoverer(value: object) -> None:
    if value is None:
        return
    if isinstance(value, type):
        problem = f"must be a recoverer object, got {_got(value)}{_call_it(value)}"
    elif isinstance(value, Recoverer):
        return
    elif callable(value):
        problem = f"must be a recoverer object, got {_got(value)}; wrap a function: Call(fn)"
    else:
        problem = (
            f"must be a Recoverer, got {_got(value)}; pass a recoverer object such as "
            f"{_RECOVERERS}, or subclass redrive.recover.Recoverer"
        )
    raise ConfigError("recoverer", problem)


def _kafka(value: object) -> None:
    if value is None:
        return
    if not isinstance(value, Mapping):
        raise ConfigError(
            "kafka", f'must be a mapping such as {{"fetch.max.bytes": 1048576}}, got {_got(value)}'
        )
    for key, setting in value.items():
        if not isinstance(key, str) or not key:
            raise ConfigError("kafka", f"setting names must be non-empty str, got {_got(key)}")
        if not isinstance(setting, str | int | float | bool):
            raise ConfigError(
                f"kafka:{key}", f"must be a str, int, float or bool, got {_got(setting)}"
            )
