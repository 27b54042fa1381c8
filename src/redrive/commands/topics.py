"""`redrive topics create|ls|describe|delete`."""

from __future__ import annotations

import argparse
import json
import sys
from typing import Any

import redrive.admin as admin
from redrive.commands.common import Out, connection, positive, reachable, refused, split_pair
from redrive.errors import ClientError


def add_parser(sub: Any) -> None:
    topics = sub.add_parser("topics", help="create, list, describe and delete topics")
    actions = topics.add_subparsers(dest="action", required=True, metavar="ACTION")

    create = actions.add_parser(
        "create", help="create topics",
        description="Create topics; an existing one is an error (exit 1) unless --if-not-exists.",
    )  # fmt: skip
    create.add_argument("names", nargs="+", metavar="NAME")
    create.add_argument("--partitions", type=positive, default=1, metavar="N", help="(default 1)")
    create.add_argument(
        "--replication-factor", type=int, default=-1, metavar="R",
        help="(default: the broker's default.replication.factor)",
    )  # fmt: skip
    create.add_argument(
        "--config", action="append", default=[], metavar="KEY=VALUE",
        type=lambda s: split_pair(s, "--config"),
        help="topic setting, e.g. retention.ms=86400000 (repeatable)",
    )  # fmt: skip
    create.add_argument("--if-not-exists", action="store_true", help="keep existing topics quietly")
    connection(create)

    ls = actions.add_parser("ls", help="list topics and their partition counts")
    ls.add_argument("--all", action="store_true", help="internal topics (__...) too")
    ls.add_argument("--json", action="store_true", help="print JSON")
    connection(ls)

    describe = actions.add_parser(
        "describe", help="partitions, leaders, offsets and non-default settings of a topic"
    )
    describe.add_argument("name", metavar="NAME")
    describe.add_argument("--json", action="store_true", help="print JSON")
    connection(describe)

    delete = actions.add_parser("delete", help="delete topics (asks first, unless --yes)")
    delete.add_argument("names", nargs="+", metavar="NAME")
    delete.add_argument("--yes", "-y", action="store_true", help="do not ask")
    connection(delete)
    topics.set_defaults(func=run)


@refused
def run(args: argparse.Namespace) -> int:
    where = reachable(args, args.timeout)
    out = Out()
    if args.action == "create":
        try:
            created = admin.create_topics(
            where, {name: args.partitions for name in args.names},
            config=dict(args.config), replication_factor=args.replication_factor,
            exist_ok=args.if_not_exists, timeout=max(args.timeout, 30.0),
            )  # fmt: skip
        except ClientError as exc:
            if "already exist" not in str(exc):
                raise
            raise ClientError(f"{exc}; --if-not-exists keeps existing topics") from None
        for name in args.names:
            if name in created:
                out.markup(f"created [bold]{name}[/] ({args.partitions} partition(s))",
                           f"created {name} ({args.partitions} partition(s))")  # fmt: skip
            else:
                out.line(f"{name} exists (kept)", style="dim")
        return 0
    if args.action == "ls":
        found = admin.list_topics(where, internal=args.all, timeout=args.timeout)
        if args.json:
            print(json.dumps([{"name": n, "partitions": p} for n, p in found.items()], indent=2))
        else:
            out.table(("TOPIC", "PARTITIONS"), [(n, str(p)) for n, p in found.items()])
        return 0
    if args.action == "describe":
        info = admin.describe_topic(where, args.name, timeout=max(args.timeout, 10.0))
        if args.json:
            print(json.dumps(_as_json(info), indent=2))
            return 0
        total = sum(p.end_offset - p.start_offset for p in info.partitions)
        out.markup(
            f"[bold]{info.name}[/]: {len(info.partitions)} partition(s), {total} record(s)",
            f"{info.name}: {len(info.partitions)} partition(s), {total} record(s)",
        )
        out.table(
            ("PARTITION", "LEADER", "REPLICAS", "IN-SYNC", "START", "END"),
            [
                (str(p.partition), str(p.leader), _ids(p.replicas), _ids(p.in_sync),
                 str(p.start_offset), str(p.end_offset))
                for p in info.partitions
            ],
        )  # fmt: skip
        if info.configs:
            out.table(
                ("SETTING", "VALUE", "FROM"),
                [(k, v if v is not None else "-", src) for k, (v, src) in info.configs.items()],
            )
        else:
            out.line("all settings at their defaults", style="dim")
        return 0
    return _delete(args, where, out)


def _delete(args: argparse.Namespace, where: admin.Servers, out: Out) -> int:
    if not args.yes:
        if not sys.stdin.isatty():
            print(
                "redrive topics delete: not deleting without --yes (no terminal to ask on)",
                file=sys.stderr,
            )
            return 1
        answer = input(f"delete {', '.join(args.names)} and every record in them? [y/N] ")
        if answer.strip().lower() not in ("y", "yes"):
            print("nothing deleted", file=sys.stderr)
            return 1
    admin.delete_topics(where, args.names, timeout=max(args.timeout, 30.0))
    for name in args.names:
        out.line(f"deleted {name}")
    return 0


def _ids(ids: tuple[int, ...]) -> str:
    return ",".join(map(str, ids))


def _as_json(info: admin.TopicInfo) -> dict[str, Any]:
    return {
        "name": info.name,
        "partitions": [
            {"partition": p.partition, "leader": p.leader, "replicas": list(p.replicas),
             "in_sync": list(p.in_sync), "start_offset": p.start_offset,
             "end_offset": p.end_offset}
            for p in info.partitions
        ],
        "configs": {k: {"value": v, "source": src} for k, (v, src) in info.configs.items()},
    }  # fmt: skip
