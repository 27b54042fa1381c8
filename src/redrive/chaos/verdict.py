"""The verdict of a chaos run: the ledger and the dead-letter topic against the produced ids.

- **Lost**: a record neither handled successfully nor (poison) dead-lettered. Must be 0.
- **Dead-lettered by mistake**: a record that is not poison in the dead-letter topic. Must
  be 0. Every poison record is in it, with headers naming its origin (topic, partition,
  offset as produced) and its failure.
- **Duplicates**: a record handled successfully more than once, or dead-lettered more than
  once. Each repeat must be *explained* by a fault, else the verdict fails.

The duplicate bound (the contract's C3, as chaos checks it). A repeat ``r`` of record X
(a second or later successful handling, or a second or later dead-letter copy) is
explained by a fault ``f`` when all three hold:

1. ``f`` is a SIGKILL of a consumer process, a broker restart (stop and start, by SIGTERM
   or SIGKILL), or an eviction: a consumer reported that it lost X's partition (its
   session expired, so the group moved the partition without a hand-over; with the broker
   down longer than the session timeout, every consumer is evicted). The consumer's word
   is not taken alone: an eviction explains only if the driver injected a cause for it, a
   broker outage that ended at most a session timeout (plus slack) before it, or a kill or
   SIGTERM that long before it; any other eviction fails the verdict. A SIGTERM of a
   consumer explains nothing: a graceful stop commits every final outcome before it leaves
   the group (C4, C5), and so does a revocation in a rebalance.
2. ``f`` began before ``r``, and a handling ``h`` of X (any outcome) happened before ``f``
   hit: before the SIGKILL and *in the killed process*; before the eviction, in the evicted
   process and of a partition it lost; or before the broker was back.
3. X was not committed when ``f`` hit: the last committed position of ``h``'s partition
   read before ``f`` is at or before ``h``'s offset. So what a fault repeats is bounded by
   what the faulty owner had handled since its partition's last commit.
4. ``f`` has not explained another repeat of X (one fault, one repeat per record), and a
   repeated handling is its process's first successful handling of that copy of X (its
   topic, partition and offset) after ``f``: a process that handles the same copy twice
   after one fault has no fault for the second time. (Copies at other offsets, such as
   retry-topic hops published twice, may be handled by one process in a row; each still
   needs a fault of its own.)

The committed positions are read every half second by the driver, each read stamped with
when it began and ended. For a SIGKILL, condition 3 uses the first read that *began* after
the signal (and before the repeat): the dead member can commit nothing more, so that is
what it had committed. For other faults it uses the last read that had *ended* before the fault, a
position at most about half a second old; positions only grow, so there the check can let
a repeat pass that came from a commit made in that last half second, never fail one.
"""

from __future__ import annotations

import bisect
from collections import defaultdict
from dataclasses import dataclass, field
from typing import Any

from redrive.chaos.app import SESSION
from redrive.chaos.ledger import Handling
from redrive.chaos.plan import POISON, TRANSIENT, parse
from redrive.chaos.run import Fault, Run, Sample
from redrive.dlt.records import DeadLetterRecord

EXPLAINING = ("kill", "broker-term", "broker-kill", "evicted")
EXPECTED_EXCEPTION = {"pf": "ValueError", "pr": "Poisoned"}
INTERRUPTED = "HandlingInterrupted"
SESSION_TIMEOUT = int(SESSION["session.timeout.ms"]) / 1000
EVICTION_SLACK = 10.0
"""Seconds past the session timeout in which a consumer still reports an eviction."""


@dataclass(frozen=True, slots=True)
class Check:
    what: str
    expected: str
    observed: str
    ok: bool


@dataclass(frozen=True, slots=True)
class Repeat:
    """A repeated outcome of one record: handled again, or dead-lettered again."""

    ident: int
    what: str  # "handled" | "dead-lettered"
    t: float
    first: float  # time of the record's first such outcome
    fault: Fault | None  # the fault that explains it, or None

    @property
    def explained(self) -> bool:
        return self.fault is not None


@dataclass
class Verdict:
    checks: list[Check] = field(default_factory=list)
    repeats: list[Repeat] = field(default_factory=list)
    figures: dict[str, Any] = field(default_factory=dict)
    lost: list[int] = field(default_factory=list)
    misdirected: list[int] = field(default_factory=list)  # dead-lettered, not poison
    bad_headers: list[str] = field(default_factory=list)

    @property
    def passed(self) -> bool:
        return all(c.ok for c in self.checks)

    @property
    def unexplained(self) -> list[Repeat]:
        return [r for r in self.repeats if not r.explained]


class _Commits:
    """The committed positions read over time, per (topic, partition)."""

    def __init__(self, samples: list[Sample]) -> None:
        self.times: dict[tuple[str, int], list[float]] = defaultdict(list)
        self.values: dict[tuple[str, int], list[int]] = defaultdict(list)
        self.starts: dict[tuple[str, int], list[tuple[float, int]]] = defaultdict(list)
        for s in sorted(samples, key=lambda s: s.t):
            for tp, pos in s.committed.items():
                if pos is not None:
                    self.times[tp].append(s.t)
                    self.values[tp].append(pos)
                    self.starts[tp].append((s.start, pos))
        for started in self.starts.values():
            started.sort()

    def before(self, tp: tuple[str, int], t: float) -> int:
        """The last position of `tp` whose read had ended at or before `t` (0: none)."""
        i = bisect.bisect_right(self.times.get(tp, []), t)
        return self.values[tp][i - 1] if i else 0

    def after(self, tp: tuple[str, int], t: float) -> tuple[float, int] | None:
        """The first read of `tp` that began after `t`: (began, position), or None."""
        started = self.starts.get(tp, [])
        i = bisect.bisect_right(started, (t, float("inf")))
        return started[i] if i < len(started) else None

    def at_fault(self, tp: tuple[str, int], f: Fault, repeat: float) -> int:
        """What of `tp` was committed when `f` hit, judging a repeat at `repeat`. A
        SIGKILLed member commits nothing more: the first read that began after the signal
        (and before the repeat, which a new owner may have committed since) is what it had
        committed."""
        if f.kind == "kill":
            later = self.after(tp, f.t)
            if later is not None and later[0] < repeat:
                return later[1]
        return self.before(tp, f.t)


def explain(
    h_of_x: list[Handling],
    t: float,
    faults: list[Fault],
    commits: _Commits,
    used: set[Fault],
    again: Handling | None = None,
) -> Fault | None:
    """The first fault not in `used` that explains a repeat at `t` of a record handled as
    `h_of_x` (every handling of it before `t`). `again`: the repeated handling, which must
    be its process's first successful handling of that record copy (topic, partition,
    offset) after the fault."""
    for f in faults:
        if f.t > t:
            break
        if f.kind not in EXPLAINING or f in used:
            continue
        if again is not None and any(_same_copy(h, again) and h.t > f.t for h in h_of_x):
            continue  # this process handled this copy since the fault: the fault is not why
        for h in h_of_x:
            if f.broker:
                if h.t > f.end:
                    continue
            elif h.pid != f.pid or h.t > f.t:
                continue
            elif f.kind == "evicted" and (h.topic, h.partition) not in f.partitions:
                continue
            if commits.at_fault((h.topic, h.partition), f, t) <= h.offset:
                return f
    return None


def _same_copy(h: Handling, again: Handling) -> bool:
    """`h` is a success of the process of `again`, at the same place in the same topic."""
    return h.ok and (h.pid, h.topic, h.partition, h.offset) == (
        again.pid,
        again.topic,
        again.partition,
        again.offset,
    )


def injected_cause(eviction: Fault, faults: list[Fault]) -> Fault | None:
    """The fault the driver injected that can have caused `eviction`: a broker outage that
    began before it and ended at most a session timeout (plus slack) before it, or a
    SIGKILL / SIGTERM of a consumer that long before it. None: redrive reported an
    eviction nothing injected explains, and the check does not take its word for it."""
    grace = SESSION_TIMEOUT + EVICTION_SLACK
    for f in faults:
        if f.broker and f.t <= eviction.t <= f.end + grace:
            return f
        if f.kind in ("kill", "term") and f.t <= eviction.t <= f.t + grace:
            return f
    return None


def judge(run: Run) -> Verdict:
    v = Verdict()
    kinds = run.kinds
    faults = sorted(run.faults, key=lambda f: f.t)
    uncaused = [f for f in faults if f.kind == "evicted" and injected_cause(f, faults) is None]
    faults = [f for f in faults if f not in uncaused]  # they explain nothing
    commits = _Commits(run.samples)
    by_id: dict[int, list[Handling]] = defaultdict(list)
    for h in run.handlings:
        by_id[h.ident].append(h)
    copies: dict[int, list[DeadLetterRecord]] = defaultdict(list)
    for d in run.dead_letters:
        copies[parse(d.value or b"0:?")[0]].append(d)

    successes = 0
    failures = 0
    times_max = 1
    for ident, hs in by_id.items():
        hs.sort(key=lambda h: h.t)
        oks = [h for h in hs if h.ok]
        failures += len(hs) - len(oks)
        successes += len(oks)
        times_max = max(times_max, len(oks))
        used: set[Fault] = set()  # each fault explains at most one repeat of a record
        for later in oks[1:]:
            before = [h for h in hs if h.t < later.t]
            fault = explain(before, later.t, faults, commits, used, later)
            if fault is not None:
                used.add(fault)
            v.repeats.append(Repeat(ident, "handled", later.t, oks[0].t, fault))
    for ident, ds in copies.items():
        ds.sort(key=lambda d: d.timestamp)
        hs = by_id.get(ident, [])
        spent: set[Fault] = set()
        for d in ds[1:]:
            t = d.timestamp / 1000
            before = [h for h in hs if h.t < t]
            fault = explain(before, t, faults, commits, spent)
            if fault is not None:
                spent.add(fault)
            v.repeats.append(Repeat(ident, "dead-lettered", t, ds[0].timestamp / 1000, fault))
        kind = kinds[ident] if 0 <= ident < len(kinds) else "?"
        if kind not in POISON:
            v.misdirected.append(ident)
        for d in ds:
            v.bad_headers += _header_problems(run, ident, kind, d)
    v.repeats.sort(key=lambda r: r.t)

    poison = [i for i, k in enumerate(kinds) if k in POISON]
    for i, k in enumerate(kinds):
        handled = any(h.ok for h in by_id.get(i, ()))
        if (k in POISON and not copies.get(i)) or (k not in POISON and not handled):
            v.lost.append(i)
    once = sum(1 for i in poison if len(copies.get(i, ())) == 1)
    interrupted = sum(1 for d in run.dead_letters if d.exception_matches(INTERRUPTED))
    final = run.samples[-1] if run.samples else None
    lag = final.lag() if final is not None else -1
    repeated_records = len({(r.ident, r.what) for r in v.repeats if r.what == "handled"})
    explained = [r for r in v.repeats if r.explained]
    per_fault: dict[Fault, int] = defaultdict(int)
    for r in explained:
        assert r.fault is not None
        per_fault[r.fault] += 1
    v.figures = {
        "mode": run.plan.mode,
        "records": len(kinds),
        "partitions": run.plan.partitions,
        "consumers": run.plan.consumers,
        "seed": run.plan.seed,
        "transient": sum(1 for k in kinds if k in TRANSIENT),
        "poison": len(poison),
        "handlings": len(run.handlings),
        "failed_attempts": failures,
        "successes": successes,
        "kills": sum(1 for f in faults if f.kind == "kill"),
        "terms": sum(1 for f in faults if f.kind == "term"),
        "evictions": sum(1 for f in run.faults if f.kind == "evicted"),
        "evictions_without_cause": len(uncaused),
        "broker_restarts": sum(1 for f in faults if f.broker),
        "consumer_starts": len(run.starts),
        "lost": len(v.lost),
        "handled_more_than_once": repeated_records,
        "extra_handlings": sum(1 for r in v.repeats if r.what == "handled"),
        "most_handlings_of_one_record": times_max,
        "dead_letters": len(run.dead_letters),
        "poison_dead_lettered_once": once,
        "extra_dead_letters": sum(1 for r in v.repeats if r.what == "dead-lettered"),
        "dead_lettered_interrupted": interrupted,
        "dead_lettered_not_poison": len(v.misdirected),
        "repeats_explained": len(explained),
        "repeats_unexplained": len(v.repeats) - len(explained),
        "most_repeats_per_fault": max(per_fault.values(), default=0),
        "final_lag": lag,
        "seconds": round(run.ended - run.began, 1),
        "settled": run.settled,
    }
    f = v.figures
    extra_unexplained = [r for r in v.unexplained if r.what == "dead-lettered"]
    v.checks = [
        Check(
            "lost records (neither handled nor dead-lettered)", "0", f"{len(v.lost):,}", not v.lost
        ),
        Check(
            "records dead-lettered that are not poison",
            "0",
            f"{len(v.misdirected):,}",
            not v.misdirected,
        ),
        Check(
            "poison records present in the dead-letter topic",
            f"{len(poison):,}",
            f"{len(poison) - sum(1 for i in poison if not copies.get(i)):,} "
            f"({once:,} exactly once)",
            all(copies.get(i) for i in poison),
        ),
        Check(
            "extra dead-letter copies (at-least-once: each must be explained by a fault)",
            "0 unexplained",
            f"{f['extra_dead_letters']:,} ({len(extra_unexplained):,} unexplained)",
            not extra_unexplained,
        ),
        Check(
            "dead letters with the wrong origin or failure headers",
            "0",
            f"{len(v.bad_headers):,}",
            not v.bad_headers,
        ),
        Check(
            "repeats (handled or dead-lettered again) no fault explains",
            "0",
            f"{f['repeats_unexplained']:,} of {len(v.repeats):,}",
            not v.unexplained,
        ),
        Check(
            "evictions without an injected cause",
            "0",
            f"{len(uncaused):,}",
            not uncaused,
        ),
        Check("final lag (records not committed)", "0", str(lag), lag == 0),
        Check(
            "the run settled within its timeout", "yes", "yes" if run.settled else "no", run.settled
        ),
    ]
    return v


def _header_problems(run: Run, ident: int, kind: str, d: DeadLetterRecord) -> list[str]:
    where = run.produced.get(ident)
    problems = []
    origin = (d.origin_topic, d.origin_partition, d.origin_offset)
    if where is None or origin != (run.topic, where[0], where[1]):
        problems.append(f"record {ident}: origin {origin}, produced at {where}")
    wanted = EXPECTED_EXCEPTION.get(kind)
    if wanted and not (d.exception_matches(wanted) or d.exception_matches(INTERRUPTED)):
        problems.append(f"record {ident}: exception {d.exception}, expected {wanted}")
    return problems
