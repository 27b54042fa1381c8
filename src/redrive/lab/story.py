"""What happened in a run, in a few sentences, from its recorded events only.

The scenario's hand-written intro says what it sets up; everything said here is read from
the events, so it cannot disagree with the diagram drawn from the same events::

    2 polls: [m1..m3], [m2, m3]. m2 failed twice (RuntimeError), waited 1.5 s, then was
    dead-lettered to orders-dlt[0]@0. m1, m3 were handled once and succeeded.
    Committed orders[0]: 1 -> 3.
"""

from __future__ import annotations

from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass, field

import redrive.events as ev
from redrive.lab.codec import LabNote
from redrive.message import TopicPartition

Names = Mapping[tuple[str, int, int], str]

_TIMES = {1: "once", 2: "twice"}
_SHOWN_POLLS = 4
_SHOWN_NAMES = 10


def times(n: int) -> str:
    """``once``, ``twice``, ``3 times``."""
    return _TIMES.get(n, f"{n} times")


def seconds(value: float) -> str:
    """``1.5 s``, ``0.92 s``, ``2 s``."""
    return f"{value:.2f}".rstrip("0").rstrip(".") + " s"


@dataclass
class _Record:
    """What happened to one named record (its copies in retry topics included)."""

    name: str
    handled: dict[str, int] = field(default_factory=dict)
    """Listener -> times the record was handed to its handler."""
    unfinished: dict[str, int] = field(default_factory=dict)
    """Listener -> hand-overs that never reached an outcome (the consumer died or left)."""
    errors: list[str] = field(default_factory=list)
    waits: list[float] = field(default_factory=list)
    not_due: list[float] = field(default_factory=list)
    hops: list[str] = field(default_factory=list)
    failed_writes: int = 0
    final: str = ""
    last_attempt: int = 1

    def describe(self) -> str:
        """Everything but the name: ``failed twice (RuntimeError), waited 1.5 s, then ...``."""
        total = sum(self.handled.values())
        parts: list[str] = []
        why = [", ".join(dict.fromkeys(self.errors))] if self.errors else []
        if len(self.handled) > 1:  # by whom: "consumer-1 ×2", "consumer-1 without an outcome"
            why.append(
                ", ".join(
                    who
                    + (f" ×{n}" if n > 1 else "")
                    + (" without an outcome" if self.unfinished.get(who) else "")
                    for who, n in self.handled.items()
                )
            )
        if self.errors:
            parts.append(f"failed {times(len(self.errors))}")
        else:
            parts.append(f"was handled {times(total)}")
        if why:
            parts[-1] += f" ({'; '.join(why)})"
        if len(self.handled) == 1 and any(self.unfinished.values()):
            parts.append(f"{times(sum(self.unfinished.values()))} without an outcome")
        if self.waits:
            parts.append("waited " + _sum_of(self.waits))
        if self.hops:
            parts.append("moved to " + ", then ".join(self.hops))
        if self.not_due:
            parts.append("was held back " + _sum_of(self.not_due) + " until due")
        if self.failed_writes:
            parts.append(f"its dead-letter write failed {times(self.failed_writes)}")
        final = self.final or "reached no final outcome"
        if final == "succeeded" and self.errors:
            final = f"succeeded on attempt {self.last_attempt}"
        if len(parts) == 1 and not self.errors:
            return f"{parts[0]} and {final}"
        return ", ".join(parts) + f", then {final}"


def _sum_of(delays: Sequence[float]) -> str:
    if len(delays) == 1:
        return seconds(delays[0])
    if len({round(d, 2) for d in delays}) == 1:
        return f"{len(delays)} × {seconds(delays[0])}"
    return " + ".join(seconds(d).removesuffix(" s") for d in delays) + " s"


class _Teller:
    def __init__(self, names: Names, alias: Callable[[str], str]) -> None:
        self.names = names
        self.alias = alias
        self.records: dict[str, _Record] = {}
        self.open: dict[tuple[str, str], int] = {}
        """(listener, record name) -> hand-overs without an outcome yet."""

    def name(self, tp: TopicPartition, offset: int) -> str:
        found = self.names.get((tp.topic, tp.partition, offset))
        return found or f"{self.alias(tp.topic)}[{tp.partition}]@{offset}"

    def record(self, tp: TopicPartition, offset: int) -> _Record:
        name = self.name(tp, offset)
        return self.records.setdefault(name, _Record(name))

    def settle(self, listener: str, tp: TopicPartition, offset: int) -> None:
        key = (listener, self.name(tp, offset))
        if self.open.get(key):
            self.open[key] -= 1

    def add(self, e: ev.Event) -> None:
        if isinstance(e, ev.Delivered):
            for tp, offset, attempt in e.records:
                r = self.record(tp, offset)
                r.handled[e.listener] = r.handled.get(e.listener, 0) + 1
                r.last_attempt = attempt
                key = (e.listener, r.name)
                self.open[key] = self.open.get(key, 0) + 1
        elif isinstance(e, ev.Succeeded):
            self.record(e.tp, e.offset).final = "succeeded"
            self.settle(e.listener, e.tp, e.offset)
        elif isinstance(e, ev.Failed):
            r = self.record(e.tp, e.offset)
            r.errors.append(e.error_type + (", fatal" if e.fatal else ""))
            r.final = ""
            self.settle(e.listener, e.tp, e.offset)
            # A batch that failed as a whole settles every record handed over with it.
            for (who, name), n in self.open.items():
                if who == e.listener and n:
                    self.open[(who, name)] = 0
        elif isinstance(e, ev.BackingOff):
            if e.delay > 0.005:
                self.record(e.tp, e.offset).waits.append(e.delay)
        elif isinstance(e, ev.NotDue):
            self.record(e.tp, e.offset).not_due.append(max(e.due - e.ts, 0.0))
        elif isinstance(e, ev.RetryHop):
            r = self.record(e.tp, e.offset)
            r.hops.append(self.alias(e.topic))
            r.final = ""
        elif isinstance(e, ev.RecoveryRetrying):
            self.record(e.tp, e.offset).failed_writes += 1
        elif isinstance(e, ev.DeadLettered):
            self.record(
                e.tp, e.offset
            ).final = f"was dead-lettered to {self.alias(e.topic)}[{e.partition}]@{e.dlt_offset}"
        elif isinstance(e, ev.Skipped):
            self.record(e.tp, e.offset).final = f"was skipped ({e.reason})"

    def unfinished(self) -> None:
        for (who, name), n in self.open.items():
            if n and name in self.records:
                r = self.records[name]
                r.unfinished[who] = r.unfinished.get(who, 0) + n


def _names(items: Sequence[str]) -> str:
    if len(items) > _SHOWN_NAMES:
        return ", ".join(items[:_SHOWN_NAMES]) + f" and {len(items) - _SHOWN_NAMES} more"
    return ", ".join(items)


def _polls(events: Sequence[ev.Event], teller: _Teller) -> str:
    polls = [e for e in events if isinstance(e, ev.Polled)]
    listeners = list(dict.fromkeys(e.listener for e in polls))

    def batch(e: ev.Polled) -> str:
        runs = []
        for tp, first, n in e.counts:
            a = teller.name(tp, first)
            last = teller.name(tp, first + n - 1)
            runs.append(a if n == 1 else f"{a}, {last}" if n == 2 else f"{a}..{last}")
        return "[" + ", ".join(runs) + "]"

    def listed(ps: Sequence[ev.Polled]) -> str:
        shown = ", ".join(batch(p) for p in ps[:_SHOWN_POLLS])
        more = ", …" if len(ps) > _SHOWN_POLLS else ""
        count = f"{len(ps)} poll" + ("" if len(ps) == 1 else "s")
        return f"{count} ({shown}{more})"

    if not polls:
        return "No poll returned records."
    if len(listeners) == 1:
        return listed(polls) + "."
    return "; ".join(f"{who}: {listed([p for p in polls if p.listener == who])}"
                     for who in listeners) + "."  # fmt: skip


def _group_story(events: Sequence[ev.Event], t0: float, alias: Callable[[str], str]) -> list[str]:
    """Lab interventions, evictions, and consumers that left while another carried on."""
    out: list[str] = []
    deliveries = [(e.listener, e.ts) for e in events if isinstance(e, ev.Delivered)]
    for e in events:
        at = f"at +{e.ts - t0:.2f} s"
        parts = ""
        if isinstance(e, ev.Assigned | ev.Revoked | ev.Lost):
            parts = ", ".join(f"{alias(tp.topic)}[{tp.partition}]" for tp in e.partitions)
        if isinstance(e, LabNote):
            if e.text.startswith("lab "):
                out.append(f"The lab {e.text.removeprefix('lab ')} {at}.")
            else:
                whom = f" on {e.listener}" if e.listener else ""
                out.append(f"The lab: {e.text}{whom} {at}.")
        elif isinstance(e, ev.Lost):
            out.append(f"{e.listener} lost {parts or 'its partitions'} {at}.")
        elif isinstance(e, ev.Assigned) and parts:
            # A take-over (records were handled before), not the first assignment of a run.
            if any(ts < e.ts for _, ts in deliveries):
                out.append(f"{e.listener} was assigned {parts} {at}.")
        elif isinstance(e, ev.Revoked) and parts:
            # Given up in the middle of the run (it handled records after), not at its stop.
            if any(who == e.listener and ts > e.ts for who, ts in deliveries):
                out.append(f"{e.listener} gave up {parts} {at}.")
        elif isinstance(e, ev.Stopped):
            if any(who != e.listener and ts > e.ts for who, ts in deliveries):
                out.append(f"{e.listener} stopped and left the group {at}.")
    return out


def _commits(events: Sequence[ev.Event], alias: Callable[[str], str]) -> str:
    moves: dict[TopicPartition, list[int]] = {}
    total = 0
    for e in events:
        if isinstance(e, ev.Committed):
            total += 1
            for tp, pos in e.positions:
                seen = moves.setdefault(tp, [0])
                if pos != seen[-1]:
                    seen.append(pos)
    if not moves:
        return "Nothing was committed."
    shown = "; ".join(
        f"{alias(tp.topic)}[{tp.partition}]: " + " → ".join(str(p) for p in path[1:] or path)
        for tp, path in moves.items()
    )
    moved = sum(len(path) - 1 for path in moves.values())
    return (
        f"Committed {shown} ({total} commit{'s' if total != 1 else ''}, {moved} moved a position)."
    )


def _acknowledgements(events: Sequence[ev.Event], teller: _Teller) -> str | None:
    """``Acknowledged to the broker: accept m1, m3; release m2 (delivery 1); ...``, for
    share listeners (None when the run has none)."""
    acks = [e for e in events if isinstance(e, ev.Acknowledged)]
    if not acks:
        return None
    by_outcome: dict[str, list[str]] = {}
    for e in acks:
        name = teller.name(e.tp, e.offset)
        by_outcome.setdefault(e.outcome, []).append(
            name if e.outcome == "accept" else f"{name} (delivery {e.delivery})"
        )
    shown = "; ".join(f"{outcome} {_names(names)}" for outcome, names in by_outcome.items())
    return f"Acknowledged to the share group: {shown}."


def tell(
    events: Sequence[ev.Event],
    names: Names | None = None,
    alias: Callable[[str], str] = lambda topic: topic,
) -> list[str]:
    """Sentences about the run of `events`: polls, what happened to each record, the lab's
    interventions and rebalances that mattered, and the commits."""
    if not events:
        return ["No event was recorded."]
    teller = _Teller(names or {}, alias)
    for e in events:
        teller.add(e)
    teller.unfinished()
    out = [_polls(events, teller)]
    out += _group_story(events, events[0].ts, alias)
    grouped: dict[str, list[str]] = {}
    for r in teller.records.values():
        grouped.setdefault(r.describe(), []).append(r.name)
    for text, who in grouped.items():
        if len(who) > 1:
            text = text.replace("was handled", "were handled").replace("was dead", "were dead")
        out.append(f"{_names(who)} {text}.")
    out.append(_acknowledgements(events, teller) or _commits(events, alias))
    return out
