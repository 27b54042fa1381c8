"""A listener's description: its handler and policies, as the App registered it."""

from __future__ import annotations

from collections.abc import Callable, Mapping
from dataclasses import dataclass, field
from typing import TYPE_CHECKING, Any

from redrive.consumer.commit import Commit
from redrive.recover.base import Recoverer
from redrive.retry.policy import Retry
from redrive.serde import Deserializer

if TYPE_CHECKING:
    from redrive.share.group import ShareGroup


@dataclass(frozen=True)
class ListenerSpec:
    name: str
    topics: tuple[str, ...]
    group_id: str
    handler: Callable[[Any], Any]
    batch: bool
    max_poll_records: int
    key_deserializer: Deserializer | None
    value_deserializer: Deserializer | None
    commit: Commit
    retry: Retry
    recoverer: Recoverer
    kafka: Mapping[str, Any] = field(default_factory=dict)
    """Full client settings (bootstrap servers, group id, passthrough)."""
    poll_timeout: float = 0.5
    concurrency: int = 1
    """Records handled at once (record listeners); 1 is the sequential loop."""
    ordering: str = "partition"
    """With concurrency > 1: "partition", "key" or "none" (see consumer/concurrent.py)."""
    max_in_flight: int | None = None
    """Bound on records handed over and not yet final (default: see ConcurrentRecords)."""
    drain_timeout: float = 30.0
    """How long revocation and stop wait for running records before abandoning them."""
    due_times: bool = False
    """Records carry a due time (retry topics): none is handed over before it (R4)."""
    share: ShareGroup | None = None
    """A share listener (KIP-932): the settings of its share group; None: a consumer group."""
    consumers: int = 1
    """Share listeners: members of the share group this App runs (a thread each)."""
