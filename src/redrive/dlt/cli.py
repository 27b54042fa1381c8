"""`redrive dlt ls|show|replay`: see what is in a dead-letter topic and send it back."""

from __future__ import annotations

import argparse
import json
import os
import sys
from pathlib import Path
from typing import Any

from confluent_kafka import KafkaException

import redrive.admin as admin
from redrive.dlt.records import copies, read
from redrive.dlt.replay import Filter, parse_time, replay
from redrive.errors import ClientError, ConfigError


def add_parser(sub: Any) -> None:
    dlt = sub.add_parser("dlt", help="dead letters: ls, show, replay")
    actions = dlt.add_subparsers(dest="action", required=True)

    ls = actions.add_parser("ls", help="list dead letters with their decoded headers")
    ls.add_argument("topic", help="dead-letter topic, e.g. orders-dlt")
    _bootstrap(ls)
    ls.add_argument("--json", action="store_true", help="print JSON instead of a table")
    _filters(ls)

    show = actions.add_parser("show", help="one dead letter in full")
    show.add_argument("topic")
    _bootstrap(show)
    show.add_argument("offset", type=int)
    show.add_argument("--partition", type=int, default=0, help="partition (default 0)")
    show.add_argument("--json", action="store_true", help="print JSON")

    rp = actions.add_parser("replay", help="send dead letters back to their origin topic")
    rp.add_argument("topic")
    _bootstrap(rp)
    _filters(rp)
    rp.add_argument(
        "--to", choices=["origin", "retry"], default="origin",
        help="origin topic (default) or the first retry topic of the origin",
    )  # fmt: skip
    rp.add_argument("--dry-run", action="store_true", help="list what would be sent; send nothing")
    rp.add_argument("--force", action="store_true", help="replay dead letters replayed before")
    rp.add_argument("--json", action="store_true", help="print the result as JSON")
    dlt.set_defaults(func=run)


def _bootstrap(p: argparse.ArgumentParser) -> None:
    p.add_argument(
        "--bootstrap-servers",
        default=os.environ.get("REDRIVE_BOOTSTRAP_SERVERS", "127.0.0.1:9092"),
        help="Kafka address (default: $REDRIVE_BOOTSTRAP_SERVERS or 127.0.0.1:9092)",
    )
    p.add_argument(
        "--command-config",
        metavar="FILE",
        default=os.environ.get("REDRIVE_KAFKA_CONFIG"),
        help="client settings (key=value lines: security.protocol, sasl.*, ssl.*) for a "
        "secured cluster (default: $REDRIVE_KAFKA_CONFIG)",
    )


def servers(args: argparse.Namespace) -> admin.Servers:
    """The bootstrap address, with the settings of --command-config when given."""
    if not args.command_config:
        return str(args.bootstrap_servers)
    settings: dict[str, str] = {}
    try:
        lines = Path(args.command_config).read_text().splitlines()
    except OSError as exc:
        raise ConfigError("--command-config", f"cannot read {args.command_config}: {exc}") from None
    for n, line in enumerate(lines, 1):
        line = line.strip()
        if not line or line.startswith(("#", "!")):
            continue
        key, sep, value = line.partition("=")
        if not sep:
            raise ConfigError(
                "--command-config", f"{args.command_config}:{n}: expected key=value"
            )  # the line itself may hold a secret: not repeated here
        settings[key.strip()] = value.strip()
    return {"bootstrap.servers": args.bootstrap_servers, **settings}


def _filters(p: argparse.ArgumentParser) -> None:
    p.add_argument("--partition", type=int, help="only this partition of the dead-letter topic")
    p.add_argument("--from-offset", type=int, help="first offset (inclusive)")
    p.add_argument("--to-offset", type=int, help="last offset (inclusive)")
    p.add_argument("--exception", help="exception type (simple or full name, or its cause's)")
    p.add_argument("--since", type=parse_time, help="dead-lettered at or after (ISO or epoch s)")
    p.add_argument("--until", type=parse_time, help="dead-lettered at or before (ISO or epoch s)")


def _filter(args: argparse.Namespace) -> Filter:
    return Filter(
        args.partition, args.from_offset, args.to_offset, args.exception, args.since, args.until
    )


def run(args: argparse.Namespace) -> int:
    try:
        return _run(args)
    except KafkaException as exc:  # a bad --command-config setting, an unreachable broker
        err = exc.args[0] if exc.args else exc
        raise ClientError(f"dlt: {err.str() if hasattr(err, 'str') else err}") from None


def _run(args: argparse.Namespace) -> int:
    out = sys.stdout
    if args.action == "ls":
        every = read(servers(args), args.topic)
        rows = [r for r in every if _filter(args)(r)]
        copy_of = copies(every)
        if args.json:
            summaries = [{**r.summary(), "copy_of": copy_of.get(r.replay_key)} for r in rows]
            json.dump(summaries, out, indent=2)
            out.write("\n")
        else:
            _table(rows, out, copy_of)
        return 0
    if args.action == "show":
        found = [
            r for r in read(servers(args), args.topic)
            if r.partition == args.partition and r.offset == args.offset
        ]  # fmt: skip
        if not found:
            raise ClientError(f"{args.topic}[{args.partition}] has no record at {args.offset}")
        full = found[0].full()
        if args.json:
            json.dump(full, out, indent=2)
            out.write("\n")
        else:
            headers = full.pop("headers")
            for k, v in full.items():
                out.write(f"{k}: {json.dumps(v) if isinstance(v, dict) else v}\n")
            out.write("headers:\n")
            for k, v in headers.items():
                text = str(v)
                if k.endswith("stacktrace"):
                    text = "\n    " + text.rstrip().replace("\n", "\n    ")
                out.write(f"  {k}: {text}\n")
        return 0
    result = replay(
        servers(args), args.topic, where=_filter(args), to=args.to,
        dry_run=args.dry_run, force=args.force,
    )  # fmt: skip
    if args.json:
        json.dump(
            {
                "selected": len(result.selected),
                "sent": 0 if result.dry_run else len(result.sent),
                "would_send": len(result.sent) if result.dry_run else 0,
                "already_replayed": len(result.already),
                "no_origin": len(result.unroutable),
                "copies": len(result.copies),
                "records": [
                    {"partition": r.partition, "offset": r.offset, "to": t, "to_partition": p,
                     "to_offset": o}
                    for r, t, p, o in result.sent
                ],
            },
            out, indent=2,
        )  # fmt: skip
        out.write("\n")
        return 0
    verb = "would send" if result.dry_run else "sent"
    for r, t, p, o in result.sent:
        where = "" if result.dry_run else f"[{p}]@{o}"
        out.write(f"{verb} {args.topic}[{r.partition}]@{r.offset} -> {t}{where}\n")
    out.write(
        f"selected {len(result.selected)}, {verb} {len(result.sent)}, already replayed "
        f"{len(result.already)}" + (" (use --force to send again)" if result.already else "")
        + (f", no origin header {len(result.unroutable)}" if result.unroutable else "")
        + (f", copies of a record replayed once {len(result.copies)}" if result.copies else "")
        + (" (dry run: nothing sent)" if result.dry_run else "") + "\n"
    )  # fmt: skip
    return 0


def _attempts(summary: dict[str, Any]) -> str:
    text = "-" if summary["attempts"] is None else str(summary["attempts"])
    n = summary["interruptions"]
    return f"{text} ({n} interrupted)" if n else text


def _table(rows: list[Any], out: Any, copy_of: dict[str, str] | None = None) -> None:
    copy_of = copy_of or {}
    head = ("PART", "OFFSET", "DEAD-LETTERED (UTC)", "ORIGIN", "ATTEMPTS", "EXCEPTION", "MESSAGE")
    lines = [head]
    for r in rows:
        s = r.summary()
        o = s["origin"]
        origin = f"{o['topic']}[{o['partition']}]@{o['offset']}" if o["topic"] else "-"
        if r.replay_key in copy_of:
            origin += f" (copy of {copy_of[r.replay_key]})"
        exc = (s["exception"] or "-").rsplit(".", 1)[-1]
        msg = (s["message"] or "").replace("\n", " ")
        lines.append(
            (str(r.partition), str(r.offset), (s["time"] or "-")[:23], origin,
             _attempts(s), exc,
             msg[:60] + ("..." if len(msg) > 60 else ""))
        )  # fmt: skip
    widths = [max(len(line[i]) for line in lines) for i in range(len(head) - 1)]
    for line in lines:
        cells = [c.ljust(w) for c, w in zip(line, widths, strict=False)]
        out.write("  ".join([*cells, line[-1]]).rstrip() + "\n")
    shown = sum(r.replay_key in copy_of for r in rows)
    out.write(f"{len(rows)} dead letter(s)")
    out.write(
        f", {shown} of them copies of an earlier one (same origin record)\n" if shown else "\n"
    )
