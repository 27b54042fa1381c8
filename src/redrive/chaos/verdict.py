"""The verdict of a chaos run: the ledger and the dead-letter topic against the produced ids
(at least once, the rule of every mode but exactly-once; that one's rule is at the end).

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
   SIGTERM that long before it; any other eviction fails the verdict. Or a *refused
   revocation commit*: a consumer reported that Kafka refused the synchronous commit of
   X's partition when it gave the partition up in a rebalance, because the group was
   rebalancing again (the classic protocol's REBALANCE_IN_PROGRESS, ILLEGAL_GENERATION),
   with the same need of an injected cause. A SIGTERM of a consumer explains nothing: a
   graceful stop commits every final outcome before it leaves the group (C4, C5), and so
   does a revocation in a rebalance that Kafka lets commit.
2. ``f`` began before ``r``, and a handling ``h`` of X (any outcome) happened before ``f``
   hit: before the SIGKILL and *in the killed process*; before the eviction (or refused
   commit), in the reporting process and of a partition it reported; or before the broker
   was back.
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

**Exactly once** (``plan.EXACTLY_ONCE``: outputs, dead letters and positions in one Kafka
transaction per poll). The judged effect is what the consumers wrote to Kafka, read
``read_committed`` at the end: every healthy record's output exactly once in
``<topic>-out``, every poison record exactly once in ``<topic>-dlt``, nothing else in
either. A second copy is a failure whatever the faults: no fault explains it. The ledger,
a side effect outside Kafka, is written again whenever an aborted or killed poll is handled
again; those re-runs are counted, not judged. Lost, dead-lettered by mistake, the headers
and the final lag are checked as in the other modes.
"""

from __future__ import annotations

import bisect
from collections import Counter, defaultdict
from dataclasses import dataclass, field
from typing import Any

from redrive.chaos.app import SESSION
from redrive.chaos.ledger import Handling
from redrive.chaos.plan import EXACTLY_ONCE, POISON, TRANSIENT, parse
from redrive.chaos.run import Fault, Run, Sample, Written
from redrive.dlt.records import DeadLetterRecord

EXPLAINING = ("kill", "broker-term", "broker-kill", "evicted", "refused")
REPORTED = ("evicted", "refused")
"""Faults a consumer reports itself: each needs a cause the driver injected."""
EXPECTED_EXCEPTION = {"pf": "ValueError", "pr": "Poisoned"}
INTERRUPTED = "HandlingInterrupted"
SESSION_TIMEOUT = int(SESSION["session.timeout.ms"]) / 1000
EVICTION_SLACK = 10.0
"""Seconds past the session timeout in which a consumer still reports an eviction."""
AT_LEAST_ONCE_RULE = (
    "at-least-once: the ledger and the dead-letter topic; every repeat explained by a fault"
)
EXACTLY_ONCE_RULE = (
    "exactly-once: <topic>-out and <topic>-dlt read_committed; any second copy fails, "
    "handler re-runs (ledger) are counted, not judged"
)


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
    what: str  # "handled" | "dead-lettered" | "output" (a copy in <topic>-out)
    t: float
    first: float  # time of the record's first such outcome
    fault: Fault | None  # the fault that explains it, or None

    @property
    def explained(self) -> bool:
        return self.fault is not None


@dataclass
class Verdict:
    rule: str = AT_LEAST_ONCE_RULE
    checks: list[Check] = field(default_factory=list)
    repeats: list[Repeat] = field(default_factory=list)
    figures: dict[str, Any] = field(default_factory=dict)
    lost: list[int] = field(default_factory=list)
    misdirected: list[int] = field(default_factory=list)  # dead-lettered, not poison
    bad_headers: list[str] = field(default_factory=list)
    reruns: list[Repeat] = field(default_factory=list)
    """Exactly-once rule: the handler's repeated successful runs (ledger), not judged."""

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
            elif f.kind in REPORTED and (h.topic, h.partition) not in f.partitions:
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


@dataclass
class _Basis:
    """What both rules read from a run: the faults that count, the ledger per record, the
    dead-letter copies per record."""

    faults: list[Fault]  # by time, without the evictions nothing injected caused
    uncaused: list[Fault]
    by_id: dict[int, list[Handling]]  # each record's handlings, by time
    copies: dict[int, list[DeadLetterRecord]]  # each record's dead letters, by time
    poison: list[int]
    lag: int


def _basis(run: Run) -> _Basis:
    faults = sorted(run.faults, key=lambda f: f.t)
    uncaused = [f for f in faults if f.kind in REPORTED and injected_cause(f, faults) is None]
    by_id: dict[int, list[Handling]] = defaultdict(list)
    for h in run.handlings:
        by_id[h.ident].append(h)
    for hs in by_id.values():
        hs.sort(key=lambda h: h.t)
    copies: dict[int, list[DeadLetterRecord]] = defaultdict(list)
    for d in run.dead_letters:
        copies[parse(d.value or b"0:?")[0]].append(d)
    for ds in copies.values():
        ds.sort(key=lambda d: d.timestamp)
    final = run.samples[-1] if run.samples else None
    return _Basis(
        [f for f in faults if f not in uncaused],  # they explain nothing
        uncaused,
        by_id,
        copies,
        [i for i, k in enumerate(run.kinds) if k in POISON],
        final.lag() if final is not None else -1,
    )


def judge(run: Run) -> Verdict:
    """The verdict on `run`, by the rule of its mode: exactly-once modes are judged by what
    they wrote to Kafka, the others by the ledger (at least once, repeats explained)."""
    b = _basis(run)
    exactly_once = run.plan.mode in EXACTLY_ONCE
    v = Verdict(rule=EXACTLY_ONCE_RULE if exactly_once else AT_LEAST_ONCE_RULE)
    for ident, ds in b.copies.items():
        kind = run.kinds[ident] if 0 <= ident < len(run.kinds) else "?"
        if kind not in POISON:
            v.misdirected.append(ident)
        for d in ds:
            v.bad_headers += _header_problems(run, ident, kind, d)
    if exactly_once:
        _judge_exactly_once(run, b, v)
    else:
        _judge_at_least_once(run, b, v)
    v.repeats.sort(key=lambda r: r.t)
    return v


def _judge_at_least_once(run: Run, b: _Basis, v: Verdict) -> None:
    """The ledger and the dead-letter topic: every record handled or (poison) dead-lettered,
    every repeat explained by a fault (the duplicate bound above)."""
    kinds = run.kinds
    commits = _Commits(run.samples)
    for hs in b.by_id.values():
        oks = [h for h in hs if h.ok]
        used: set[Fault] = set()  # each fault explains at most one repeat of a record
        for later in oks[1:]:
            before = [h for h in hs if h.t < later.t]
            fault = explain(before, later.t, b.faults, commits, used, later)
            if fault is not None:
                used.add(fault)
            v.repeats.append(Repeat(later.ident, "handled", later.t, oks[0].t, fault))
    for ident, ds in b.copies.items():
        hs = b.by_id.get(ident, [])
        spent: set[Fault] = set()
        for d in ds[1:]:
            t = d.timestamp / 1000
            before = [h for h in hs if h.t < t]
            fault = explain(before, t, b.faults, commits, spent)
            if fault is not None:
                spent.add(fault)
            v.repeats.append(Repeat(ident, "dead-lettered", t, ds[0].timestamp / 1000, fault))
    for i, k in enumerate(kinds):
        handled = any(h.ok for h in b.by_id.get(i, ()))
        if (k in POISON and not b.copies.get(i)) or (k not in POISON and not handled):
            v.lost.append(i)
    explained = [r for r in v.repeats if r.explained]
    per_fault: dict[Fault, int] = defaultdict(int)
    for r in explained:
        assert r.fault is not None
        per_fault[r.fault] += 1
    v.figures = _figures(run, b, v)
    v.figures.update(
        repeats_explained=len(explained),
        repeats_unexplained=len(v.repeats) - len(explained),
        most_repeats_per_fault=max(per_fault.values(), default=0),
    )
    f = v.figures
    extra_unexplained = [r for r in v.unexplained if r.what == "dead-lettered"]
    v.checks = [
        Check(
            "lost records (neither handled nor dead-lettered)", "0", f"{len(v.lost):,}", not v.lost
        ),
        _misdirected(v),
        _poison_present(b),
        Check(
            "extra dead-letter copies (at-least-once: each must be explained by a fault)",
            "0 unexplained",
            f"{f['extra_dead_letters']:,} ({len(extra_unexplained):,} unexplained)",
            not extra_unexplained,
        ),
        _headers(v),
        Check(
            "repeats (handled or dead-lettered again) no fault explains",
            "0",
            f"{f['repeats_unexplained']:,} of {len(v.repeats):,}",
            not v.unexplained,
        ),
        Check(
            "evictions and refused revocation commits without an injected cause",
            "0",
            f"{len(b.uncaused):,}",
            not b.uncaused,
        ),
        *_final(run, b),
    ]


def _judge_exactly_once(run: Run, b: _Basis, v: Verdict) -> None:
    """The effect is what the consumers wrote to Kafka, read ``read_committed``: every
    healthy record's output once in ``<topic>-out``, every poison record once in
    ``<topic>-dlt``. A second copy in either is a failure whatever the faults: hiding the
    writes of aborted and killed handlings is what the transactions are for. The ledger (a
    side effect outside Kafka) repeats after every abort and kill; its repeats are counted
    (``reruns``), not judged."""
    kinds = run.kinds
    outputs: dict[int, list[Written]] = defaultdict(list)
    for w in run.outputs:
        outputs[w.ident].append(w)
    for ws in outputs.values():
        ws.sort(key=lambda w: w.t)
        for w in ws[1:]:
            v.repeats.append(Repeat(w.ident, "output", w.t, ws[0].t, None))
    for ident, ds in b.copies.items():
        for d in ds[1:]:
            t = d.timestamp / 1000
            v.repeats.append(Repeat(ident, "dead-lettered", t, ds[0].timestamp / 1000, None))
    for hs in b.by_id.values():
        oks = [h for h in hs if h.ok]
        v.reruns += [Repeat(h.ident, "handled", h.t, oks[0].t, None) for h in oks[1:]]
    v.reruns.sort(key=lambda r: r.t)
    for i, k in enumerate(kinds):
        if (k in POISON and not b.copies.get(i)) or (k not in POISON and not outputs.get(i)):
            v.lost.append(i)
    strays = sorted(i for i in outputs if not (0 <= i < len(kinds)) or kinds[i] in POISON)
    duplicated = sorted(i for i, ws in outputs.items() if len(ws) > 1)
    seen = Counter(w.ident for w in run.outputs_uncommitted)
    v.figures = _figures(run, b, v)
    v.figures.update(
        repeats_explained=0,
        repeats_unexplained=len(v.repeats),
        most_repeats_per_fault=0,
        handler_runs_beyond_one_per_record=len(run.handlings) - len(b.by_id),
        outputs=len(run.outputs),
        outputs_more_than_once=len(duplicated),
        extra_outputs=len(run.outputs) - len(outputs),
        outputs_not_healthy=len(strays),
        outputs_read_uncommitted=len(run.outputs_uncommitted),
        duplicates_read_uncommitted=len(run.outputs_uncommitted) - len(seen),
    )
    f = v.figures
    v.checks = [
        Check(
            "lost records (healthy: no output; poison: not dead-lettered)",
            "0",
            f"{len(v.lost):,}",
            not v.lost,
        ),
        Check(
            "healthy records output more than once (read_committed: no fault excuses one)",
            "0",
            f"{len(duplicated):,} ({f['extra_outputs']:,} extra outputs)",
            not duplicated,
        ),
        Check("outputs of records that are not healthy", "0", f"{len(strays):,}", not strays),
        _misdirected(v),
        _poison_present(b),
        Check(
            "extra dead-letter copies (exactly-once: each one fails)",
            "0",
            f"{f['extra_dead_letters']:,}",
            f["extra_dead_letters"] == 0,
        ),
        _headers(v),
        *_final(run, b),
    ]


def _figures(run: Run, b: _Basis, v: Verdict) -> dict[str, Any]:
    """The figures of both rules: the plan, the faults, the ledger, the dead letters."""
    kinds = run.kinds
    oks = {i: sum(h.ok for h in hs) for i, hs in b.by_id.items()}
    poison = b.poison
    return {
        "mode": run.plan.mode,
        "rule": v.rule,
        "records": len(kinds),
        "partitions": run.plan.partitions,
        "consumers": run.plan.consumers,
        "seed": run.plan.seed,
        "transient": sum(1 for k in kinds if k in TRANSIENT),
        "poison": len(poison),
        "handlings": len(run.handlings),
        "failed_attempts": len(run.handlings) - sum(oks.values()),
        "successes": sum(oks.values()),
        "kills": sum(1 for f in b.faults if f.kind == "kill"),
        "terms": sum(1 for f in b.faults if f.kind == "term"),
        "evictions": sum(1 for f in run.faults if f.kind == "evicted"),
        "evictions_without_cause": len(b.uncaused),
        "refused_revocation_commits": sum(1 for f in run.faults if f.kind == "refused"),
        "broker_restarts": sum(1 for f in b.faults if f.broker),
        "consumer_starts": len(run.starts),
        "lost": len(v.lost),
        "handled_more_than_once": sum(1 for n in oks.values() if n > 1),
        "extra_handlings": sum(n - 1 for n in oks.values() if n > 1),
        "most_handlings_of_one_record": max(oks.values(), default=1) or 1,
        "dead_letters": len(run.dead_letters),
        "poison_dead_lettered_once": sum(1 for i in poison if len(b.copies.get(i, ())) == 1),
        "extra_dead_letters": sum(len(ds) - 1 for ds in b.copies.values()),
        "dead_lettered_interrupted": sum(
            1 for d in run.dead_letters if d.exception_matches(INTERRUPTED)
        ),
        "dead_lettered_not_poison": len(v.misdirected),
        "final_lag": b.lag,
        "seconds": round(run.ended - run.began, 1),
        "settled": run.settled,
    }


def _misdirected(v: Verdict) -> Check:
    return Check(
        "records dead-lettered that are not poison",
        "0",
        f"{len(v.misdirected):,}",
        not v.misdirected,
    )


def _poison_present(b: _Basis) -> Check:
    poison = b.poison
    once = sum(1 for i in poison if len(b.copies.get(i, ())) == 1)
    return Check(
        "poison records present in the dead-letter topic",
        f"{len(poison):,}",
        f"{len(poison) - sum(1 for i in poison if not b.copies.get(i)):,} ({once:,} exactly once)",
        all(b.copies.get(i) for i in poison),
    )


def _headers(v: Verdict) -> Check:
    return Check(
        "dead letters with the wrong origin or failure headers",
        "0",
        f"{len(v.bad_headers):,}",
        not v.bad_headers,
    )


def _final(run: Run, b: _Basis) -> list[Check]:
    return [
        Check("final lag (records not committed)", "0", str(b.lag), b.lag == 0),
        Check(
            "the run settled within its timeout", "yes", "yes" if run.settled else "no", run.settled
        ),
    ]


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
