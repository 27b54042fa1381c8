"""``redrive bench``: arguments and output (the harness does the work)."""

from __future__ import annotations

import argparse
import json

from redrive.bench.harness import THROUGHPUT, Options, run, table


def add_arguments(parser: argparse.ArgumentParser) -> None:
    d = Options()
    parser.add_argument("--records", type=int, default=d.records, help="records in the topic")
    parser.add_argument("--size", type=int, default=d.size, help="bytes per record value")
    parser.add_argument("--partitions", type=int, default=d.partitions)
    parser.add_argument("--rounds", type=int, default=d.rounds, help="repeat and take medians")
    parser.add_argument("--max-poll-records", type=int, default=d.max_poll_records)
    parser.add_argument(
        "--contenders", default=",".join(THROUGHPUT), help="comma-separated, in this order"
    )
    parser.add_argument(
        "--io-records", type=int, default=d.io_records, help="I/O-bound topic size (0: skip)"
    )
    parser.add_argument("--io-delay", type=float, default=d.io_delay, help="seconds per record")
    parser.add_argument("--workers-records", type=int, default=d.workers_records,
                        help="records per `redrive run --workers N` run (0: skip)")  # fmt: skip
    parser.add_argument("--bootstrap-servers", help="use this cluster (default: a local broker)")
    parser.add_argument("--json", action="store_true", help="print the result as JSON")


def run_bench(args: argparse.Namespace) -> int:
    names = [c.strip() for c in args.contenders.split(",") if c.strip()]
    unknown = [c for c in names if c not in THROUGHPUT]
    if unknown:
        raise SystemExit(f"redrive bench: unknown contender(s) {unknown}; choose from {THROUGHPUT}")
    for flag in ("records", "size", "partitions", "rounds", "max_poll_records"):
        if getattr(args, flag) < 1:
            raise SystemExit(f"redrive bench: --{flag.replace('_', '-')} must be >= 1")
    opts = Options(
        records=args.records, size=args.size, partitions=args.partitions, rounds=args.rounds,
        max_poll_records=args.max_poll_records, contenders=names,
        io_records=max(0, args.io_records), io_delay=args.io_delay,
        workers_records=max(0, args.workers_records),
    )  # fmt: skip
    result = run(args.bootstrap_servers, opts)
    print(json.dumps(result, indent=2) if args.json else table(result))
    return 0
