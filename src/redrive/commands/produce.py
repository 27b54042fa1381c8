"""`redrive produce TOPIC`: lines (or JSON lines) from stdin or a file, acknowledged."""

from __future__ import annotations

import argparse
import json
import sys
from collections.abc import Iterable
from pathlib import Path
from typing import Any

import redrive.admin as admin
from redrive.commands.common import Out, connection, reachable, refused, split_pair
from redrive.errors import ClientError


def add_parser(sub: Any) -> None:
    p = sub.add_parser(
        "produce",
        help="send lines (or JSON lines) from stdin or a file to a topic",
        description="Send one record per non-empty line of stdin (or --file) to TOPIC and "
        "wait until the broker acknowledged each; print how many were. With --json or "
        "--key-field every line is checked first: one that is not valid JSON stops the "
        "command before anything is sent.",
    )
    p.add_argument("topic", metavar="TOPIC")
    p.add_argument("--file", "-f", type=Path, metavar="FILE", help="read FILE, not stdin")
    p.add_argument("--json", action="store_true", help="each line must be valid JSON")
    key = p.add_mutually_exclusive_group()
    key.add_argument("--key", metavar="KEY", help="the same key on every record")
    key.add_argument(
        "--key-field", metavar="FIELD",
        help="lines are JSON objects; the key is their FIELD (a string as is, else as JSON)",
    )  # fmt: skip
    p.add_argument("--partition", type=int, metavar="N", help="send every record to partition N")
    p.add_argument(
        "--header", action="append", default=[], metavar="KEY=VALUE",
        type=lambda s: split_pair(s, "--header"), help="a header on every record (repeatable)",
    )  # fmt: skip
    connection(p)
    p.set_defaults(func=run)


@refused
def run(args: argparse.Namespace) -> int:
    if args.file is None and sys.stdin.isatty():
        print("reading records from stdin, one per line; Ctrl-D ends", file=sys.stderr)
    try:
        text = args.file.read_text() if args.file else sys.stdin.read()
    except (OSError, UnicodeDecodeError) as exc:
        raise ClientError(f"cannot read {args.file or 'stdin'}: {exc}") from None
    records = list(_records(text.splitlines(), args))  # all checked before any is sent
    where = reachable(args, args.timeout)
    partitions = admin.topic_partitions(where, args.topic, timeout=args.timeout)
    if partitions is None:
        raise ClientError(
            f"topic {args.topic!r} does not exist; create it with "
            f"`redrive topics create {args.topic}`"
        )
    if args.partition is not None and not 0 <= args.partition < partitions:
        raise ClientError(
            f"topic {args.topic!r} has partitions 0..{partitions - 1}, not {args.partition}"
        )
    acked = admin.produce(
        where, args.topic, records, partition=args.partition,
        headers=[(k, v.encode()) for k, v in args.header], timeout=max(args.timeout, 30.0),
    )  # fmt: skip
    ranges: dict[int, tuple[int, int]] = {}
    for p, o in acked:
        first, _ = ranges.get(p, (o, o))
        ranges[p] = (min(first, o), o)
    where_to = ", ".join(
        f"[{p}]@{a}" + (f"..{b}" if b != a else "") for p, (a, b) in sorted(ranges.items())
    )
    Out().markup(
        f"[green]acknowledged {len(acked)} record(s)[/] to [bold]{args.topic}[/] {where_to}",
        f"acknowledged {len(acked)} record(s) to {args.topic} {where_to}".rstrip(),
    )
    return 0


def _records(lines: Iterable[str], args: argparse.Namespace) -> Iterable[admin.Record]:
    for n, line in enumerate(lines, 1):
        if not line.strip():
            continue
        key: str | None = args.key
        if args.json or args.key_field:
            try:
                value = json.loads(line)
            except json.JSONDecodeError as exc:
                raise ClientError(
                    f"line {n} is not valid JSON ({exc.msg}, column {exc.colno}); nothing sent"
                ) from None
            if args.key_field:
                if not isinstance(value, dict) or args.key_field not in value:
                    raise ClientError(
                        f"line {n} has no field {args.key_field!r} for the key; nothing sent"
                    )
                field = value[args.key_field]
                key = field if isinstance(field, str) else json.dumps(field)
        yield (key, line)  # the line as written, not re-encoded
