"""A share group's settings (KIP-932), set where the group lives: on the broker.

A share group's delivery limit, acquisition lock and start position are *group*
configurations, not client settings: ``ShareGroup`` holds the ones a share listener cares
about, ``App.start()`` writes those you set with the admin API's incremental alter configs
on the group (``kafka-configs.sh --entity-type groups`` does the same by hand), then reads
the effective values back (what you did not set keeps the group's value, or comes from the
broker's ``group.share.*`` defaults). A running listener reads the delivery limit and the
lock duration again every lock duration and applies the lowest it saw::

    ShareGroup(delivery_limit=5, lock_duration=30.0, auto_offset_reset="earliest")

The broker bounds them: ``group.share.min/max.delivery.count.limit`` (2..10 by default) and
``group.share.min/max.record.lock.duration.ms`` (15 s..60 s by default); a value outside
raises ``ConfigError`` with the broker's words.
"""

from __future__ import annotations

import math
from collections.abc import Callable
from dataclasses import dataclass
from typing import Any

from confluent_kafka import KafkaException
from confluent_kafka.admin import (  # type: ignore[attr-defined]
    AdminClient,
    AlterConfigOpType,
    ConfigEntry,
    ConfigResource,
    ResourceType,
)

from redrive.errors import ClientError, ConfigError
from redrive.observe.logs import kafka_logging

DELIVERY_LIMIT = "share.delivery.count.limit"
LOCK_DURATION = "share.record.lock.duration.ms"
AUTO_OFFSET_RESET = "share.auto.offset.reset"


@dataclass(frozen=True, slots=True, kw_only=True)
class ShareGroup:
    """The settings of a share group that a share listener writes at start (None: leave
    the group's current value, or the broker's default)."""

    delivery_limit: int | None = None
    """``share.delivery.count.limit``: deliveries of one record before the broker archives
    it. redrive dead-letters a failing record one delivery earlier (see the README)."""
    lock_duration: float | None = None
    """``share.record.lock.duration.ms``, in seconds: how long a member holds a delivered
    record before the broker gives it to another member (a crashed member's records come
    back after this)."""
    auto_offset_reset: str | None = None
    """``share.auto.offset.reset``: where a new share group starts: "earliest", "latest" or
    "by_duration:<ISO 8601 duration>". None: the group's current value; a group without
    one is set to "earliest" (the consumer listeners' default too; the broker's is
    latest)."""

    def __post_init__(self) -> None:
        limit = self.delivery_limit
        if limit is not None and (isinstance(limit, bool) or not isinstance(limit, int)
                                  or limit < 2):  # fmt: skip
            raise ConfigError(
                "share_group.delivery_limit", f"must be a whole number >= 2 or None, got {limit!r}"
            )
        lock = self.lock_duration
        if lock is not None and (
            isinstance(lock, bool)
            or not isinstance(lock, int | float)
            or not math.isfinite(lock)
            or lock < 0.001
        ):
            raise ConfigError(
                "share_group.lock_duration", f"must be > 0 seconds or None, got {lock!r}"
            )
        reset = self.auto_offset_reset
        if reset is not None and not (
            isinstance(reset, str)
            and (reset in ("earliest", "latest") or reset.startswith("by_duration:"))
        ):
            raise ConfigError(
                "share_group.auto_offset_reset",
                f"must be 'earliest', 'latest', 'by_duration:<ISO 8601>' or None, got {reset!r}",
            )

    def configs(self) -> dict[str, str]:
        """The group configurations to write (those set)."""
        out = {}
        if self.auto_offset_reset is not None:
            out[AUTO_OFFSET_RESET] = self.auto_offset_reset
        if self.delivery_limit is not None:
            out[DELIVERY_LIMIT] = str(self.delivery_limit)
        if self.lock_duration is not None:
            out[LOCK_DURATION] = str(round(self.lock_duration * 1000))
        return out


@dataclass(frozen=True, slots=True)
class Effective:
    """A share group's settings as the broker applies them."""

    delivery_limit: int
    lock_duration: float
    auto_offset_reset: str


def apply(kafka: dict[str, Any] | Any, group_id: str, group: ShareGroup,
          timeout: float = 30.0) -> Effective:  # fmt: skip
    """Write `group`'s settings on share group `group_id`, then read them back."""
    admin = AdminClient(kafka_logging(_admin_settings(kafka)))
    configs = group.configs()
    if AUTO_OFFSET_RESET not in configs and _unset(admin, group_id, AUTO_OFFSET_RESET, timeout):
        configs[AUTO_OFFSET_RESET] = "earliest"
    entries = [
        ConfigEntry(name, value, incremental_operation=AlterConfigOpType.SET)
        for name, value in configs.items()
    ]
    if entries:
        resource = ConfigResource(ResourceType.GROUP, group_id, incremental_configs=entries)
        try:
            for future in admin.incremental_alter_configs([resource]).values():
                future.result(timeout)
        except KafkaException as exc:
            text = exc.args[0].str() if exc.args and hasattr(exc.args[0], "str") else str(exc)
            setting = next((n for n in configs if text.startswith(n)), "share_group")
            why = f"the broker refused it for group {group_id!r}: {text}"
            raise ConfigError(setting, why) from None
    return describe(admin, group_id, timeout)


def reader(kafka: dict[str, Any] | Any, group_id: str,
           timeout: float = 10.0) -> Callable[[], Effective]:  # fmt: skip
    """A function that reads share group `group_id`'s settings as the broker applies them
    (one admin client for all the calls)."""
    admin = AdminClient(kafka_logging(_admin_settings(kafka)))
    return lambda: describe(admin, group_id, timeout)


def _unset(admin: AdminClient, group_id: str, name: str, timeout: float) -> bool:
    """True when `name` is not set on the group (its value is the broker's default)."""
    entry = _entries(admin, group_id, timeout).get(name)
    return entry is None or bool(entry.is_default)


def _entries(admin: AdminClient, group_id: str, timeout: float) -> dict[str, Any]:
    try:
        (future,) = admin.describe_configs([ConfigResource(ResourceType.GROUP, group_id)]).values()
        return dict(future.result(timeout))
    except KafkaException as exc:
        raise ClientError(f"reading the settings of share group {group_id!r}: {exc}") from None


def describe(admin: AdminClient, group_id: str, timeout: float = 30.0) -> Effective:
    """The share-group settings of `group_id` as the broker applies them."""
    values = {name: entry.value for name, entry in _entries(admin, group_id, timeout).items()}
    return Effective(
        delivery_limit=int(values.get(DELIVERY_LIMIT) or 5),
        lock_duration=int(values.get(LOCK_DURATION) or 30000) / 1000,
        auto_offset_reset=str(values.get(AUTO_OFFSET_RESET) or "latest"),
    )


_CLIENT_ONLY = ("max.poll.records", "max.poll.interval.ms", "fetch.", "group.id", "share.")


def _admin_settings(kafka: Any) -> dict[str, Any]:
    """The listener's settings an admin client takes (connection and security ones)."""
    return {k: v for k, v in dict(kafka).items() if not k.startswith(_CLIENT_ONLY)}
