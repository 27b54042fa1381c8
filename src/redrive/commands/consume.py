"""`redrive consume TOPIC`: print records from the beginning, the end or an offset."""

from __future__ import annotations

import argparse
import base64
import json
import sys
from typing import Any

import redrive.admin as admin
from redrive.commands.common import Out, connection, positive, reachable, refused


def add_parser(sub: Any) -> None:
    p = sub.add_parser(
        "consume",
        help="print the records of a topic (one line each, or JSON lines)",
        description="Print the records of TOPIC: partition@offset, key, value and headers. "
        "Without --group the partitions are read directly and nothing is committed; with "
        "--group G the records are read as a member of G and its positions are committed.",
    )
    p.add_argument("topic", metavar="TOPIC")
    p.add_argument(
        "--from", dest="start", type=_start, default="beginning", metavar="WHERE",
        help="beginning (default), end, or an offset (on every partition); with --group: "
        "where the group has no committed position yet (an offset: always)",
    )  # fmt: skip
    p.add_argument("--max", type=positive, metavar="N", help="stop after N records")
    p.add_argument(
        "--partition", type=int, action="append", metavar="N",
        help="only partition N (repeatable; not with --group)",
    )  # fmt: skip
    p.add_argument("--group", metavar="G", help="consume as a member of group G, committing")
    p.add_argument("--json", action="store_true", help="one JSON object per record")
    connection(
        p,
        timeout_help="stop after S seconds without a record, and give up on an unreachable "
        "broker after S (default: wait for records until Ctrl-C; 5 s for the broker)",
    )
    p.set_defaults(func=run)


def _start(text: str) -> admin.Start:
    if text in ("beginning", "end"):
        return text  # type: ignore[return-value]
    try:
        offset = int(text)
    except ValueError:
        offset = -1
    if offset < 0:
        raise argparse.ArgumentTypeError(f"expected beginning, end or an offset, got {text!r}")
    return offset


@refused
def run(args: argparse.Namespace) -> int:
    if args.group and args.partition:
        raise SystemExit("redrive consume: --partition does not combine with --group")
    where = reachable(args, args.timeout if args.timeout is not None else 5.0)
    out = Out()
    records = admin.tail(
        where, args.topic, start=args.start, group_id=args.group,
        partitions=args.partition, idle_timeout=args.timeout,
    )  # fmt: skip
    n = 0
    try:
        for msg in records:
            if args.json:
                out.stream.write(json.dumps(_as_json(msg)) + "\n")
            else:
                _print(out, msg)
            out.stream.flush()  # a reader (| head, | jq) sees each record as it comes
            n += 1
            if args.max is not None and n >= args.max:
                break
    finally:
        records.close()  # with a group: commits what was printed
    print(f"{n} record(s)", file=sys.stderr)
    return 0


def _text(b: bytes | None) -> str | None:
    return None if b is None else b.decode("utf-8", errors="backslashreplace")


def _as_json(msg: Any) -> dict[str, Any]:
    kind, ts = msg.timestamp()
    return {
        "topic": msg.topic(),
        "partition": msg.partition(),
        "offset": msg.offset(),
        "timestamp": ts if kind else None,
        "key": _text(msg.key()),
        "value": _text(msg.value()),
        "headers": [[k, _header(v)] for k, v in (msg.headers() or [])],
    }


def _header(v: bytes | None) -> str | None:
    if v is None:
        return None
    try:
        return v.decode()
    except UnicodeDecodeError:
        return "base64:" + base64.b64encode(v).decode()


def _print(out: Out, msg: Any) -> None:
    key = _text(msg.key())
    value = _text(msg.value())
    headers = " ".join(f"{k}={_header(v)}" for k, v in (msg.headers() or []))
    plain = f"{msg.partition()}@{msg.offset()} key={key if key is not None else '-'} {value}"
    if out.console is None:
        out.stream.write(plain + (f"  [{headers}]" if headers else "") + "\n")
        return
    from rich.text import Text

    line = Text.assemble(
        (f"{msg.partition()}@{msg.offset()}", "cyan"), " ",
        ("key=", "dim"), (key if key is not None else "-", "yellow"), " ",
        value if value is not None else ("null", "dim"),
        ("  [" + headers + "]" if headers else "", "magenta"),
    )  # fmt: skip
    out.console.print(line, soft_wrap=True)
