"""`redrive chaos`: run the chaos plan in each chosen mode, print the verdicts, write the
report. Exit status 0 when every verdict passes, 1 when one fails, 2 for a usage error."""

from __future__ import annotations

import argparse
import json
import shutil
import signal
import sys
import tempfile
import time
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path
from types import FrameType
from typing import cast

from redrive.broker import LocalKafka
from redrive.broker.local import QUICK_RESTART
from redrive.chaos import report
from redrive.chaos.plan import MODES, Mode, Plan
from redrive.chaos.run import Driver, Say
from redrive.chaos.verdict import judge


def add_arguments(parser: argparse.ArgumentParser) -> None:
    d = Plan()
    parser.add_argument(
        "--mode",
        default="record",
        help=f"one or more of {', '.join(MODES)} (comma-separated), or all (default record)",
    )
    parser.add_argument(
        "--records",
        type=int,
        default=d.records,
        metavar="N",
        help=f"records to produce (default {d.records:,})",
    )
    parser.add_argument(
        "--partitions",
        type=int,
        default=d.partitions,
        metavar="P",
        help=f"partitions of the topic (default {d.partitions})",
    )
    parser.add_argument(
        "--consumers",
        type=int,
        default=d.consumers,
        metavar="C",
        help=f"consumer processes in the group (default {d.consumers})",
    )
    parser.add_argument(
        "--kill-every",
        type=float,
        default=d.kill_every,
        metavar="SECONDS",
        help=f"mean time between consumer faults; 0: none (default {d.kill_every:g})",
    )
    parser.add_argument(
        "--term-share",
        type=float,
        default=d.term_share,
        metavar="F",
        help=f"share of consumer faults that are SIGTERM, not SIGKILL (default {d.term_share:g})",
    )
    parser.add_argument(
        "--broker-restarts",
        type=int,
        default=d.broker_restarts,
        metavar="R",
        help=f"broker stops and starts (default {d.broker_restarts}; none "
        "with REDRIVE_BOOTSTRAP_SERVERS)",
    )
    parser.add_argument(
        "--transient",
        type=float,
        default=d.transient,
        metavar="F",
        help=f"share of transient records (default {d.transient:g})",
    )
    parser.add_argument(
        "--poison",
        type=float,
        default=d.poison,
        metavar="F",
        help=f"share of poison records (default {d.poison:g})",
    )
    parser.add_argument("--seed", type=int, default=d.seed, help=f"default {d.seed}")
    parser.add_argument(
        "--timeout",
        type=float,
        metavar="SECONDS",
        help="fail a run that has not settled by then (default 600 + 1 s per 200 records)",
    )
    parser.add_argument("--report", default="redrive-chaos.html", help="HTML report path")
    parser.add_argument("--json", action="store_true", help="print the verdicts as JSON")
    parser.add_argument(
        "--workdir",
        metavar="DIR",
        help="keep the ledger and consumer logs here (default: a temporary folder, removed)",
    )


def plans(args: argparse.Namespace) -> list[Plan]:
    """One plan per chosen mode; ValueError names a wrong one."""
    names = list(MODES) if args.mode == "all" else [m.strip() for m in args.mode.split(",")]
    for name in names:
        if name not in MODES:
            raise ValueError(f"unknown mode {name!r}: one of {', '.join(MODES)}, or all")
    for option in ("records", "partitions", "consumers"):
        if getattr(args, option) < 1:
            raise ValueError(f"--{option} must be >= 1")
    if args.transient + args.poison > 1 or min(args.transient, args.poison) < 0:
        raise ValueError("--transient and --poison are shares: each >= 0, together <= 1")
    return [
        Plan(
            mode=cast(Mode, name),
            records=args.records,
            partitions=args.partitions,
            consumers=args.consumers,
            seed=args.seed,
            kill_every=args.kill_every,
            term_share=args.term_share,
            broker_restarts=args.broker_restarts,
            transient=args.transient,
            poison=args.poison,
            timeout=args.timeout or 600 + args.records / 200,
        )
        for name in names
    ]


@contextmanager
def _broker(say: Say) -> Iterator[tuple[str, LocalKafka | None]]:
    import os

    external = os.environ.get("REDRIVE_BOOTSTRAP_SERVERS")
    if external:
        say(f"using Kafka at {external} (REDRIVE_BOOTSTRAP_SERVERS): no broker restarts")
        yield external, None
        return
    say("starting a local Kafka broker that chaos can restart ...")
    with LocalKafka(settings=QUICK_RESTART, die_with_parent=True) as broker:
        yield broker.bootstrap_servers, broker


def run_chaos(args: argparse.Namespace, broker: LocalKafka | None = None) -> int:
    """The command; `broker` (tests): a restartable broker to use instead of a new one."""
    try:
        chosen = plans(args)
    except ValueError as exc:
        print(f"redrive chaos: {exc}", file=sys.stderr)
        return 2
    out = sys.stderr if args.json else sys.stdout

    def say(text: str) -> None:
        print(text, file=out, flush=True)

    # SIGTERM unwinds like Ctrl-C: the consumers are stopped and the broker with them.
    previous = signal.signal(signal.SIGTERM, _interrupt)
    try:
        return _run(args, chosen, broker, say)
    finally:
        signal.signal(signal.SIGTERM, previous)


def _interrupt(signum: int, frame: FrameType | None) -> None:
    raise KeyboardInterrupt


def _run(args: argparse.Namespace, chosen: list[Plan], broker: LocalKafka | None, say: Say) -> int:
    command = "redrive chaos " + " ".join(sys.argv[2:]) if sys.argv[1:2] == ["chaos"] else ""
    results = []
    began = time.monotonic()
    with _given(broker) if broker is not None else _broker(say) as (servers, kafka):
        for plan in chosen:
            with _workdir(args.workdir, plan) as kept:
                run = Driver(plan, servers, kafka, kept.path, say).run()
                verdict = judge(run)
                kept.keep = not verdict.passed
            results.append(report.Result(run, verdict))
            say(report.terminal(run, verdict))
    path = Path(args.report)
    path.write_text(
        report.html(results, command=command, total=time.monotonic() - began), encoding="utf-8"
    )
    if args.json:
        print(json.dumps(report.as_json(results, command=command), indent=1))
    passed = sum(r.verdict.passed for r in results)
    say(f"\n{passed}/{len(results)} chaos runs pass; report: {path.resolve()}")
    return 0 if passed == len(results) else 1


@contextmanager
def _given(broker: LocalKafka) -> Iterator[tuple[str, LocalKafka | None]]:
    yield broker.bootstrap_servers, broker


class _Folder:
    def __init__(self, path: Path, keep: bool) -> None:
        self.path = path
        self.keep = keep


@contextmanager
def _workdir(folder: str | None, plan: Plan) -> Iterator[_Folder]:
    """The folder of a run's ledger and consumer logs: `folder`/<mode>-<seed>, or a
    temporary one, removed unless the verdict failed or the run raised (then it is kept
    for a look)."""
    if folder:
        path = Path(folder) / f"{plan.mode}-{plan.seed}"
        path.mkdir(parents=True, exist_ok=True)
        yield _Folder(path, True)
        return
    kept = _Folder(Path(tempfile.mkdtemp(prefix="redrive-chaos-")), False)
    try:
        yield kept
    except BaseException:
        kept.keep = True  # evidence of what went wrong
        raise
    finally:
        if kept.keep:
            print(f"redrive chaos: ledger and consumer logs kept in {kept.path}", file=sys.stderr)
        else:
            shutil.rmtree(kept.path, ignore_errors=True)
