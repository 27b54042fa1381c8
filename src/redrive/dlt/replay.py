"""Replaying (redriving) dead letters to their origin topic or to the start of the chain.

Each replayed record carries the header ``redrive_replay-of: <dlt>/<partition>/<offset>``,
and every replay is recorded in the compacted topic ``<dlt>-replayed`` (key
``<partition>:<offset>``) after the broker confirmed the replayed record. A dead letter
found there is not replayed again unless forced. The ledger is written after the record,
so a crash between the two can at worst replay one dead letter twice, never lose it.
"""

from __future__ import annotations

import datetime as dt
import json
import time
from collections.abc import Callable, Sequence
from dataclasses import dataclass, field
from typing import TYPE_CHECKING, Literal

import redrive.admin as admin
import redrive.headers as h
from redrive.dlt.records import DeadLetterRecord, read
from redrive.errors import ClientError, ConfigError
from redrive.observe.tracing import sending

if TYPE_CHECKING:
    from opentelemetry.trace import TracerProvider

Target = Literal["origin", "retry"]


@dataclass(frozen=True, slots=True)
class Filter:
    """Which dead letters to replay. Offsets are inclusive; times are epoch seconds and
    apply to when the record was dead-lettered."""

    partition: int | None = None
    from_offset: int | None = None
    to_offset: int | None = None
    exception: str | None = None
    since: float | None = None
    until: float | None = None

    def __call__(self, r: DeadLetterRecord) -> bool:
        return (
            (self.partition is None or r.partition == self.partition)
            and (self.from_offset is None or r.offset >= self.from_offset)
            and (self.to_offset is None or r.offset <= self.to_offset)
            and (self.exception is None or r.exception_matches(self.exception))
            and (self.since is None or r.timestamp >= self.since * 1000)
            and (self.until is None or r.timestamp <= self.until * 1000)
        )


@dataclass(slots=True)
class ReplayResult:
    selected: list[DeadLetterRecord] = field(default_factory=list)
    sent: list[tuple[DeadLetterRecord, str, int, int]] = field(default_factory=list)
    """(dead letter, topic, partition, offset) of each record sent."""
    already: list[DeadLetterRecord] = field(default_factory=list)
    """Selected but replayed before (skipped unless forced)."""
    unroutable: list[DeadLetterRecord] = field(default_factory=list)
    """Selected but without an origin topic header."""
    copies: list[DeadLetterRecord] = field(default_factory=list)
    """Selected but copies of an origin record replayed in this run or before (written twice
    by a consumer killed between the dead-letter write and its commit): skipped, so the
    origin record is replayed once."""
    dry_run: bool = False


def ledger_topic(dlt_topic: str) -> str:
    return f"{dlt_topic}-replayed"


def replayed_keys(bootstrap_servers: admin.Servers, dlt_topic: str) -> set[str]:
    """``partition:offset`` of every dead letter of `dlt_topic` replayed so far."""
    topic = ledger_topic(dlt_topic)
    if admin.topic_partitions(bootstrap_servers, topic) is None:
        return set()
    return {
        m.key().decode()
        for m in admin.read_all(bootstrap_servers, topic)
        if m.key() and m.value() is not None
    }


def parse_time(text: str) -> float:
    """Epoch seconds from ``1700000000`` or an ISO-8601 time (UTC when no zone is given)."""
    try:
        return float(text)
    except ValueError:
        pass
    try:
        t = dt.datetime.fromisoformat(text)
    except ValueError:
        raise ConfigError("time", f"expected epoch seconds or ISO-8601, got {text!r}") from None
    if t.tzinfo is None:
        t = t.replace(tzinfo=dt.UTC)
    return t.timestamp()


def replay(
    bootstrap_servers: admin.Servers,
    dlt_topic: str,
    *,
    where: Filter | Callable[[DeadLetterRecord], bool] | None = None,
    to: Target = "origin",
    dry_run: bool = False,
    force: bool = False,
    tracer_provider: TracerProvider | None = None,
) -> ReplayResult:
    """Send the selected dead letters of `dlt_topic` back to their origin topic (``to=
    "origin"``, to the origin partition when it exists) or to the first retry topic of the
    origin (``to="retry"``, due at once). Dead-letter and retry headers are dropped, the
    record's own headers kept, and ``redrive_replay-of`` added. Returns what was selected,
    sent and skipped; with ``dry_run`` nothing is sent or recorded.

    With OpenTelemetry installed, each replayed record gets a ``send <topic>`` span under
    the trace context its dead letter carries (the attempt that failed last), and carries
    that span's context, so the record's trace goes on (``tracer_provider``: the global
    one by default)."""
    if to not in ("origin", "retry"):
        raise ConfigError("to", f"must be 'origin' or 'retry', got {to!r}")
    result = ReplayResult(dry_run=dry_run)
    keep = where or Filter()
    everything = read(bootstrap_servers, dlt_topic)
    result.selected = [r for r in everything if keep(r)]
    done = set() if force else replayed_keys(bootstrap_servers, dlt_topic)
    # origin records replayed before (through any of their copies), and in this run
    sent_origins = {r.origin_key for r in everything if r.replay_key in done}
    todo: list[tuple[DeadLetterRecord, str]] = []
    partitions: dict[str, int | None] = {}
    for r in sorted(result.selected, key=lambda r: (r.timestamp, r.partition, r.offset)):
        if r.replay_key in done:
            result.already.append(r)
            continue
        if r.origin_topic is None:
            result.unroutable.append(r)
            continue
        if not force and r.origin_key in sent_origins:
            result.copies.append(r)
            continue
        sent_origins.add(r.origin_key)
        target = r.origin_topic if to == "origin" else _first_retry_topic(
            bootstrap_servers, r.origin_topic, partitions
        )  # fmt: skip
        todo.append((r, target))
    if dry_run or not todo:
        result.sent = [(r, t, -1, -1) for r, t in todo] if dry_run else []
        return result
    for _, t in todo:
        if t not in partitions:
            partitions[t] = admin.topic_partitions(bootstrap_servers, t)
        if partitions[t] is None:
            raise ClientError(f"replay target topic {t!r} does not exist")
    spans = [(r.headers, t, {"redrive.replay_of": f"{r.topic}/{r.partition}/{r.offset}"})
             for r, t in todo]  # fmt: skip
    with sending(spans, tracer_provider) as trace_headers:
        items = [(r, t, h.with_trace(_headers(r, to), trace))
                 for (r, t), trace in zip(todo, trace_headers, strict=True)]  # fmt: skip
        result.sent = _send(bootstrap_servers, items, partitions)
    _record(bootstrap_servers, dlt_topic, result.sent)
    return result


def _first_retry_topic(
    bootstrap_servers: admin.Servers, origin: str, partitions: dict[str, int | None]
) -> str:
    for t in (f"{origin}-retry-0", f"{origin}-retry"):
        if t not in partitions:
            partitions[t] = admin.topic_partitions(bootstrap_servers, t)
        if partitions[t] is not None:
            return t
    raise ClientError(f"{origin!r} has no retry topic ({origin}-retry-0 or {origin}-retry)")


def _headers(r: DeadLetterRecord, to: Target) -> list[tuple[str, str | bytes | None]]:
    # Origin and exception headers of either family, redrive's and the retry headers go:
    # a replayed record starts clean, and fails into one fresh set.
    own: list[tuple[str, str | bytes | None]] = [
        (k, v or b"")
        for k, v in r.headers
        if not k.startswith((*h.REPLACED_PREFIXES, h.RETRY_PREFIX)) and k != h.REPLAY_OF
    ]
    marker = h.replay_marker(r.topic, r.partition, r.offset)
    origin = r.origin
    if to == "origin" or origin is None:
        return [*own, marker]
    # To the first retry topic: keep the origin (in the retry-topic family, as a hop carries
    # it), due now, counted as the first retry.
    chain = h.CHAIN
    kept: list[tuple[str, str | bytes | None]] = [
        (chain.original_topic, origin.topic.encode()),
        (chain.original_partition, h.int32(origin.partition)),
        (chain.original_offset, h.int64(origin.offset)),
    ]
    if origin.timestamp >= 0:
        kept.append((chain.original_timestamp, h.int64(origin.timestamp)))
        kept.append(
            (chain.original_timestamp_type,
             h.TIMESTAMP_TYPES.get(origin.timestamp_type, "CreateTime").encode())
        )  # fmt: skip
    ts = r.origin_timestamp or r.timestamp
    hop = h.retry_headers(next_attempt=2, original_timestamp=ts, due_ms=int(time.time() * 1000))
    return [*own, *kept, *hop, marker]


def _send(
    bootstrap_servers: admin.Servers,
    items: Sequence[tuple[DeadLetterRecord, str, list[tuple[str, str | bytes | None]]]],
    partitions: dict[str, int | None],
) -> list[tuple[DeadLetterRecord, str, int, int]]:
    outgoing: list[admin.Outgoing] = []
    for r, topic, headers in items:
        count = partitions.get(topic)
        same = r.origin_partition is not None and count and r.origin_partition < count
        outgoing.append((topic, r.key, r.value, headers, r.origin_partition if same else None))
    settings = {**admin.client_config(bootstrap_servers), "acks": "all",
                "enable.idempotence": True, "linger.ms": 5}  # fmt: skip
    acks = admin.send(settings, outgoing)
    sent = []
    failed = []
    for (r, topic, _), ack in zip(items, acks, strict=True):
        if isinstance(ack, tuple):
            sent.append((r, topic, ack[0], ack[1]))
        else:
            failed.append(f"{r.partition}:{r.offset} ({ack or 'not acknowledged'})")
    if failed:
        # Record what did arrive, so a second run does not send it again.
        _record(bootstrap_servers, items[0][0].topic, sent)
        raise ClientError(f"replay failed for {len(failed)} dead letter(s): {', '.join(failed)}")
    return sent


def _record(
    bootstrap_servers: admin.Servers,
    dlt_topic: str,
    sent: Sequence[tuple[DeadLetterRecord, str, int, int]],
) -> None:
    if not sent:
        return
    topic = ledger_topic(dlt_topic)
    admin.create_topics(
        bootstrap_servers, {topic: 1}, config={"cleanup.policy": "compact"}
    )  # kept if it exists
    now = time.time()
    admin.produce(
        bootstrap_servers,
        topic,
        [
            (r.replay_key, json.dumps({"replayed_at": round(now, 3), "to": t, "partition": p,
                                       "offset": o}))
            for r, t, p, o in sent
        ],
    )  # fmt: skip
