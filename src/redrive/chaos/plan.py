"""What one chaos run does: its size, its mode, its faults, and the kind of every record.

Every record carries a unique id and its kind in its value (``b"<id>:<kind>"``), so the
consumer processes need no shared state to know what to do with it:

- ``ok``: handled once, successfully.
- ``t1`` / ``t2`` (transient): the handler fails on attempts 1 (and 2), then succeeds. The
  attempt number is the one redrive hands over (``Message.attempt``), never a count the
  ledger keeps.
- ``pf`` (poison, fatal): always raises ``ValueError`` (fatal by default: no retry).
- ``pr`` (poison, retryable): always raises ``ConnectionError`` until the retries are over.

Both poison kinds must end in the dead-letter topic exactly once; nothing else may.
"""

from __future__ import annotations

import random
from collections.abc import Iterator
from dataclasses import dataclass
from typing import Literal

Mode = Literal["record", "batch", "concurrency", "retry-topics", "exactly-once"]
"""How the consumers listen: a name in ``MODES``, a listener in ``redrive.chaos.app``, and
the rule ``redrive.chaos.verdict`` judges it by (``EXACTLY_ONCE``, or at-least-once)."""

MODES: dict[str, str] = {
    "record": "record listener, seek retries in the partition",
    "batch": "batch listener naming the failed record (BatchFailed)",
    "concurrency": "record listener, concurrency=4, ordering='key'",
    "retry-topics": "record listener with non-blocking retry topics",
    "exactly-once": "record listener, Commit.transaction(): an output per record to <topic>-out",
}

EXACTLY_ONCE: frozenset[str] = frozenset({"exactly-once"})
"""Modes judged by what they wrote to Kafka (``<topic>-out`` and ``<topic>-dlt``, read
``read_committed``): every record's effect exactly once. The others are judged by the
ledger: at least once, every repeat explained by a fault."""

Kind = Literal["ok", "t1", "t2", "pf", "pr"]
POISON: frozenset[str] = frozenset({"pf", "pr"})
TRANSIENT: frozenset[str] = frozenset({"t1", "t2"})


@dataclass(frozen=True, slots=True)
class Plan:
    """One chaos run. Times are seconds; shares are fractions of the records."""

    mode: Mode = "record"
    records: int = 20_000
    partitions: int = 6
    consumers: int = 3
    seed: int = 1
    kill_every: float = 4.0
    """Mean time between two consumer faults (each drawn from 0.5x..1.5x of it)."""
    term_share: float = 0.25
    """Share of consumer faults that are a SIGTERM (graceful stop) instead of a SIGKILL."""
    broker_restarts: int = 1
    """Broker restarts, spread over the run (alternately SIGTERM and SIGKILL)."""
    transient: float = 0.01
    poison: float = 0.002
    timeout: float = 700.0
    """Give up (a failing verdict) when the run has not settled after this long."""

    def kinds(self) -> list[Kind]:
        """The kind of every record id (0 .. records-1), drawn from the seed."""
        rng = random.Random(f"kinds-{self.seed}")
        out: list[Kind] = []
        for _ in range(self.records):
            x = rng.random()
            if x < self.poison:
                out.append("pf" if rng.random() < 0.5 else "pr")
            elif x < self.poison + self.transient:
                out.append("t1" if rng.random() < 0.5 else "t2")
            else:
                out.append("ok")
        return out

    def keys(self) -> int:
        """Distinct keys: about ten records share one (per-key order means something)."""
        return max(1, self.records // 10)

    def values(self, kinds: list[Kind]) -> Iterator[tuple[bytes, bytes]]:
        """(key, value) of every record, in id order."""
        keys = self.keys()
        for i, kind in enumerate(kinds):
            yield f"key-{i % keys}".encode(), f"{i}:{kind}".encode()


def output_topic(topic: str) -> str:
    """Where the exactly-once mode's handler writes one output per record it handles."""
    return f"{topic}-out"


def parse(value: bytes) -> tuple[int, str]:
    """The id and kind of a chaos record's value."""
    ident, _, kind = value.partition(b":")
    return int(ident), kind.decode()
