"""The chaos verdict on hand-made runs: what counts as lost, which repeats a fault explains
(the duplicate rule of redrive.chaos.verdict), and the dead-letter checks."""

from __future__ import annotations

from pathlib import Path
from types import SimpleNamespace

import pytest

from redrive import headers as h
from redrive.chaos import cli
from redrive.chaos.ledger import Handling
from redrive.chaos.plan import Mode, Plan
from redrive.chaos.report import Result, as_json, terminal
from redrive.chaos.run import Fault, Run, Sample, Written
from redrive.chaos.verdict import EXACTLY_ONCE_RULE, judge
from redrive.cli import build_parser
from redrive.dlt.records import DeadLetterRecord, decode_headers

T = "chaos-t"


def make_run(kinds: list[str], handlings: list[Handling], *, faults: list[Fault] = (),
             samples: list[Sample] | None = None, dead: list[DeadLetterRecord] = (),
             mode: Mode = "record") -> Run:  # fmt: skip
    produced = {i: (0, i) for i in range(len(kinds))}
    end = len(kinds)
    final = Sample(100.0, {(T, 0): end}, {(T, 0): end})
    run = Run(Plan(mode=mode, records=len(kinds), partitions=1), "x:1", T, "g", list(kinds),
              produced, began=0.0, ended=100.0, settled=True)  # fmt: skip
    run.faults = list(faults)
    run.samples = [*(samples or []), final]
    run.handlings = list(handlings)
    run.dead_letters = list(dead)
    return run


def ok(ident: int, t: float, pid: int = 1, offset: int | None = None) -> Handling:
    return Handling(t, ident, 1, "ok", T, 0, ident if offset is None else offset, pid)


def dead_letter(ident: int, t: float, exc: type[BaseException] = ValueError) -> DeadLetterRecord:
    raw = tuple(
        h.dead_letter_headers(topic=T, partition=0, offset=ident, timestamp=0, timestamp_type=0,
                              group_id="g", exc=exc("boom"), attempts=1, first_failure=0.0,
                              interruptions=0, original=())
    )  # fmt: skip
    return DeadLetterRecord(f"{T}-dlt", 0, 0, int(t * 1000), None, f"{ident}:pf".encode(), raw,
                            decode_headers(raw))  # fmt: skip


def test_every_record_once_passes() -> None:
    v = judge(make_run(["ok", "ok", "pf"], [ok(0, 1), ok(1, 2)], dead=[dead_letter(2, 3)]))
    assert v.passed, v.checks
    assert v.figures["lost"] == 0 and v.figures["poison_dead_lettered_once"] == 1


def test_a_record_neither_handled_nor_dead_lettered_is_lost() -> None:
    v = judge(make_run(["ok", "ok", "pf"], [ok(0, 1)], dead=[]))
    assert not v.passed
    assert v.lost == [1, 2]


def test_a_healthy_record_in_the_dead_letter_topic_fails() -> None:
    v = judge(make_run(["ok"], [ok(0, 1)], dead=[dead_letter(0, 2)]))
    assert not v.passed and v.misdirected == [0]


def test_a_repeat_after_a_sigkill_of_its_handler_before_the_commit_is_explained() -> None:
    kill = Fault(5.0, "kill", pid=1)
    v = judge(make_run(["ok"], [ok(0, 1, pid=1), ok(0, 9, pid=2)], faults=[kill]))
    assert v.passed, v.checks
    (repeat,) = v.repeats
    assert repeat.fault == kill and v.figures["handled_more_than_once"] == 1


def test_a_repeat_after_a_sigkill_of_another_process_is_not_explained() -> None:
    v = judge(make_run(["ok"], [ok(0, 1, pid=1), ok(0, 9, pid=2)],
                       faults=[Fault(5.0, "kill", pid=3)]))  # fmt: skip
    assert not v.passed and len(v.unexplained) == 1


def test_a_repeat_after_a_graceful_stop_is_not_explained() -> None:
    v = judge(make_run(["ok"], [ok(0, 1, pid=1), ok(0, 9, pid=2)],
                       faults=[Fault(5.0, "term", pid=1)]))  # fmt: skip
    assert not v.passed and len(v.unexplained) == 1


def test_a_repeat_of_a_record_committed_before_the_fault_is_not_explained() -> None:
    committed = Sample(4.0, {(T, 0): 1}, {(T, 0): 1})  # offset 0 committed at 4 s
    v = judge(make_run(["ok"], [ok(0, 1, pid=1), ok(0, 9, pid=2)],
                       faults=[Fault(5.0, "kill", pid=1)], samples=[committed]))  # fmt: skip
    assert not v.passed and len(v.unexplained) == 1


def test_a_broker_restart_explains_repeats_of_records_handled_before_it_was_back() -> None:
    restart = Fault(5.0, "broker-kill", until=8.0)
    v = judge(make_run(["ok", "ok"], [ok(0, 7), ok(0, 9, pid=2), ok(1, 9), ok(1, 12)],
                       faults=[restart]))  # fmt: skip
    by_id = {r.ident: r for r in v.repeats}
    assert by_id[0].fault == restart  # handled while the broker was down
    assert by_id[1].fault is None  # first handled after it was back: nothing explains it


def test_an_eviction_explains_repeats_of_the_partitions_the_consumer_lost() -> None:
    cause = Fault(4.0, "kill", pid=3)  # an injected fault just before: the eviction counts
    evicted = Fault(5.0, "evicted", pid=1, partitions=((T, 0),))
    v = judge(make_run(["ok"], [ok(0, 1, pid=1), ok(0, 9, pid=2)], faults=[cause, evicted]))
    assert v.passed, v.checks
    other = Fault(5.0, "evicted", pid=1, partitions=((T, 1),))
    v = judge(make_run(["ok"], [ok(0, 1, pid=1), ok(0, 9, pid=2)], faults=[cause, other]))
    assert not v.passed and len(v.unexplained) == 1


def test_a_refused_revocation_commit_explains_repeats_of_the_partitions_given_up() -> None:
    """Kafka refused the commit of a partition given up in a rebalance (the group was
    rebalancing again): what its owner handled since the last commit is handled again."""
    cause = Fault(4.0, "kill", pid=3)  # the churn that made the group rebalance again
    refused = Fault(5.0, "refused", pid=1, partitions=((T, 0),))
    handled = [ok(0, 1, pid=1), ok(0, 9, pid=2)]
    v = judge(make_run(["ok"], handled, faults=[cause, refused]))
    assert v.passed, v.checks
    assert v.repeats[0].fault == refused and v.figures["refused_revocation_commits"] == 1
    v = judge(make_run(["ok"], handled, faults=[refused]))  # nothing injected: fails
    assert not v.passed and v.figures["evictions_without_cause"] == 1
    committed = Sample(4.5, {(T, 0): 1}, {(T, 0): 1})  # offset 0 was committed before
    v = judge(make_run(["ok"], handled, faults=[cause, refused], samples=[committed]))
    assert not v.passed and len(v.unexplained) == 1


def test_an_eviction_nothing_injected_caused_explains_nothing_and_fails() -> None:
    evicted = Fault(50.0, "evicted", pid=1, partitions=((T, 0),))
    handled = [ok(0, 45, pid=1), ok(0, 59, pid=2)]
    v = judge(make_run(["ok"], handled, faults=[evicted]))
    assert not v.passed and len(v.unexplained) == 1
    assert v.figures["evictions_without_cause"] == 1
    late = Fault(10.0, "kill", pid=3)  # 40 s before: longer ago than a session timeout
    v = judge(make_run(["ok"], handled, faults=[late, evicted]))
    assert not v.passed and v.figures["evictions_without_cause"] == 1
    outage = Fault(30.0, "broker-term", until=45.0)  # back 5 s before the eviction
    v = judge(make_run(["ok"], [ok(0, 46, pid=1), ok(0, 59, pid=2)], faults=[outage, evicted]))
    assert v.passed, v.checks
    assert v.repeats[0].fault == evicted


def test_a_poison_record_dead_lettered_twice_needs_a_fault() -> None:
    handled = [Handling(1.0, 0, 3, "fail", T, 0, 0, 1)]
    twice = [dead_letter(0, 1.5), dead_letter(0, 9)]
    v = judge(make_run(["pf"], handled, dead=twice))
    assert not v.passed and v.figures["extra_dead_letters"] == 1
    extra = next(c for c in v.checks if c.what.startswith("extra dead-letter copies"))
    assert not extra.ok and extra.observed == "1 (1 unexplained)"
    v = judge(make_run(["pf"], handled, dead=twice, faults=[Fault(2.0, "kill", pid=1)]))
    assert v.passed, v.checks
    present = next(c for c in v.checks if c.what.startswith("poison records"))
    assert present.what == "poison records present in the dead-letter topic"
    assert present.observed == "1 (0 exactly once)"
    extra = next(c for c in v.checks if c.what.startswith("extra dead-letter copies"))
    assert extra.ok and extra.observed == "1 (0 unexplained)"


def test_dead_letter_headers_must_name_the_origin_and_the_failure() -> None:
    v = judge(make_run(["pf"], [], dead=[dead_letter(0, 1, exc=KeyError)]))
    assert not v.passed
    assert v.bad_headers == ["record 0: exception KeyError, expected ValueError"]


def test_one_fault_explains_one_repeat_of_a_record_not_any_number() -> None:
    kill = Fault(5.0, "kill", pid=1)
    again = [ok(0, 1, pid=1), ok(0, 9, pid=2), ok(0, 10, pid=2), ok(0, 11, pid=2),
             ok(0, 12, pid=3)]  # fmt: skip
    v = judge(make_run(["ok"], again, faults=[kill]))
    assert not v.passed
    assert [r.fault for r in v.repeats] == [kill, None, None, None]


def test_a_chain_of_kills_explains_one_repeat_each() -> None:
    first, second = Fault(5.0, "kill", pid=1), Fault(10.0, "kill", pid=2)
    v = judge(make_run(["ok"], [ok(0, 1, pid=1), ok(0, 9, pid=2), ok(0, 15, pid=3)],
                       faults=[first, second]))  # fmt: skip
    assert v.passed, v.checks
    assert [r.fault for r in v.repeats] == [first, second]


def test_a_kill_is_judged_by_the_first_commit_read_begun_after_it() -> None:
    # a slow read: begun at 3 s (nothing committed), ended at 4.9 s, before the kill at 5 s;
    # the read begun at 5.2 s shows offset 0 committed: the dead member had committed it
    slow = Sample(4.9, {(T, 0): None}, {(T, 0): 1}, began=3.0)
    after = Sample(5.4, {(T, 0): 1}, {(T, 0): 1}, began=5.2)
    v = judge(make_run(["ok"], [ok(0, 1, pid=1), ok(0, 9, pid=2)],
                       faults=[Fault(5.0, "kill", pid=1)], samples=[slow, after]))  # fmt: skip
    assert not v.passed and len(v.unexplained) == 1


def test_a_run_whose_ledger_misses_one_record_fails_and_the_command_exits_1(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    missing = make_run(["ok", "ok", "ok"], [ok(0, 1), ok(2, 2)])
    v = judge(missing)
    assert v.lost == [1] and v.figures["lost"] == 1 and not v.passed

    class OneRun:
        def __init__(self, *args: object) -> None:
            pass

        def run(self) -> Run:
            return missing

    monkeypatch.setattr(cli, "Driver", OneRun)
    args = build_parser().parse_args(["chaos", "--records", "3", "--partitions", "1",
                                      "--report", str(tmp_path / "r.html"),
                                      "--workdir", str(tmp_path / "work")])  # fmt: skip
    given = SimpleNamespace(bootstrap_servers="127.0.0.1:1")
    assert cli.run_chaos(args, broker=given) == 1  # type: ignore[arg-type]
    assert "lost records" in (tmp_path / "r.html").read_text()
    passing = make_run(["ok"], [ok(0, 1)])
    monkeypatch.setattr(OneRun, "run", lambda self: passing)
    assert cli.run_chaos(args, broker=given) == 0  # type: ignore[arg-type]


def test_copies_at_other_offsets_handled_by_one_process_need_one_fault_each() -> None:
    # retry-topic hops of one record published by two killed processes, all handled by pid 3
    def hop(t: float, offset: int, pid: int, outcome: str = "ok") -> Handling:
        return Handling(t, 0, 2, outcome, f"{T}-retry", 0, offset, pid)

    first, second = Fault(5.0, "kill", pid=1), Fault(10.0, "kill", pid=2)
    handled = [hop(1, 52, 1, "fail"), hop(9, 52, 2, "fail"), hop(20, 52, 3), hop(21, 185, 3),
               hop(22, 221, 3)]  # fmt: skip
    v = judge(make_run(["ok"], handled, faults=[first, second]))
    assert [r.fault for r in v.repeats] == [first, second]
    v = judge(make_run(["ok"], handled, faults=[first]))
    assert [r.fault for r in v.repeats] == [first, None]


def exactly_once(kinds: list[str], handlings: list[Handling], outputs: list[int],
                 *, uncommitted: list[int] = (), **kw: object) -> Run:  # fmt: skip
    """An exactly-once run whose <topic>-out holds one record per id in `outputs` (in the
    order written, a second apart), and `uncommitted` besides for read_uncommitted readers."""
    run = make_run(kinds, handlings, mode="exactly-once", **kw)  # type: ignore[arg-type]
    run.outputs = [Written(i, 0, n, 10.0 + n) for n, i in enumerate(outputs)]
    run.outputs_uncommitted = [Written(i, 0, n, 10.0 + n)
                               for n, i in enumerate([*outputs, *uncommitted])]  # fmt: skip
    return run


def test_exactly_once_judges_the_output_topic_and_counts_the_ledgers_repeats() -> None:
    # the handler ran record 0 three times (aborted polls, a kill), record 1 once: only
    # one output of each was committed, which is what the rule asks
    reruns = [ok(0, 1, pid=1), ok(0, 2, pid=1), ok(0, 9, pid=2), ok(1, 3)]
    kill = Fault(5.0, "kill", pid=1)
    run = exactly_once(["ok", "ok", "pf"], reruns, [0, 1], uncommitted=[0, 0, 1],
                       dead=[dead_letter(2, 4)], faults=[kill])  # fmt: skip
    v = judge(run)
    assert v.passed, v.checks
    assert v.rule == EXACTLY_ONCE_RULE and v.repeats == []
    assert [r.ident for r in v.reruns] == [0, 0]  # counted, not judged
    f = v.figures
    assert f["handler_runs_beyond_one_per_record"] == 2 and f["extra_handlings"] == 2
    assert (f["outputs"], f["outputs_more_than_once"]) == (2, 0)
    assert (f["outputs_read_uncommitted"], f["duplicates_read_uncommitted"]) == (5, 3)
    # the rule is shown: in --json and on the terminal
    (shown,) = as_json([Result(run, v)])["runs"]
    assert shown["rule"] == shown["figures"]["rule"] == EXACTLY_ONCE_RULE
    assert f"rule: {EXACTLY_ONCE_RULE}" in terminal(run, v)
    # the same ledger in an at-least-once mode: the second run by pid 1 has no fault
    assert not judge(make_run(["ok", "ok", "pf"], reruns, faults=[kill],
                              dead=[dead_letter(2, 4)])).passed  # fmt: skip


def test_exactly_once_fails_a_second_output_whatever_the_faults() -> None:
    # record 0 handled by pid 1, which was killed before its commit: in an at-least-once
    # mode that kill explains the repeat; here a second committed output is a failure
    kill = Fault(5.0, "kill", pid=1)
    handled = [ok(0, 1, pid=1), ok(0, 9, pid=2)]
    assert judge(make_run(["ok"], handled, faults=[kill])).passed
    v = judge(exactly_once(["ok"], handled, [0, 0], faults=[kill]))
    assert not v.passed
    (repeat,) = v.unexplained
    assert (repeat.ident, repeat.what, repeat.fault) == (0, "output", None)
    twice = next(c for c in v.checks if c.what.startswith("healthy records output more"))
    assert not twice.ok and twice.observed == "1 (1 extra outputs)"


def test_exactly_once_loses_a_record_whose_output_is_missing_though_the_ledger_has_it() -> None:
    v = judge(exactly_once(["ok", "ok"], [ok(0, 1), ok(1, 2)], [0]))
    assert not v.passed and v.lost == [1]


def test_exactly_once_fails_a_second_dead_letter_and_an_output_of_a_poison_record() -> None:
    handled = [Handling(1.0, 0, 3, "fail", T, 0, 0, 1)]
    kill = Fault(2.0, "kill", pid=1)  # explains the copy at least once, not here
    twice = [dead_letter(0, 1.5), dead_letter(0, 9)]
    assert judge(make_run(["pf"], handled, dead=twice, faults=[kill])).passed
    v = judge(exactly_once(["pf"], handled, [], dead=twice, faults=[kill]))
    assert not v.passed and v.figures["extra_dead_letters"] == 1
    v = judge(exactly_once(["pf"], handled, [0], dead=twice[:1]))
    assert not v.passed and v.figures["outputs_not_healthy"] == 1
