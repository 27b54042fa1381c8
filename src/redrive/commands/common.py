"""What the chore commands share: connection options, exit codes, terminal-aware output."""

from __future__ import annotations

import argparse
import functools
import sys
from collections.abc import Callable, Sequence
from typing import Any, TextIO

from confluent_kafka import KafkaException

import redrive.admin as admin
from redrive.dlt.cli import _bootstrap, servers
from redrive.errors import ClientError

__all__ = ["Out", "connection", "positive", "reachable", "refused", "servers", "split_pair"]

Command = Callable[[argparse.Namespace], int]


def connection(p: argparse.ArgumentParser, timeout_help: str | None = None) -> None:
    """--bootstrap-servers, --command-config (as `redrive dlt` has them) and --timeout."""
    _bootstrap(p)
    p.add_argument(
        "--timeout",
        type=float,
        default=None if timeout_help else 5.0,
        metavar="S",
        help=timeout_help or "seconds to wait for the broker to answer (default 5)",
    )


def reachable(args: argparse.Namespace, timeout: float) -> admin.Servers:
    """The client settings of `args`, once a broker answered there (else KafkaUnavailable:
    one line naming the address, exit 2)."""
    where = servers(args)
    admin.check_reachable(where, timeout)
    return where


def refused(func: Command) -> Command:
    """Turn the broker's refusal (the topic exists, does not exist, ...) into a one-line
    error and exit status 1. An unreachable broker or a bad setting stays exit status 2."""

    @functools.wraps(func)
    def run(args: argparse.Namespace) -> int:
        try:
            return func(args)
        except ClientError as exc:
            print(f"redrive {args.command}: {exc}", file=sys.stderr)
        except KafkaException as exc:
            err = exc.args[0] if exc.args else exc
            print(f"redrive {args.command}: {getattr(err, 'str', err.__str__)()}", file=sys.stderr)
        return 1

    return run


def split_pair(text: str, what: str) -> tuple[str, str]:
    """`key=value` -> (key, value); argparse turns the ValueError into a usage error."""
    key, sep, value = text.partition("=")
    if not sep or not key:
        raise argparse.ArgumentTypeError(f"{what}: expected key=value, got {text!r}")
    return key, value


def positive(text: str) -> int:
    """An int of 1 or more, for argparse."""
    try:
        n = int(text)
    except ValueError:
        n = 0
    if n < 1:
        raise argparse.ArgumentTypeError(f"expected a whole number of 1 or more, got {text!r}")
    return n


class Out:
    """Standard output: rich tables and colours on a terminal, plain text when piped."""

    def __init__(self, stream: TextIO | None = None) -> None:
        self.stream = stream or sys.stdout
        self.console: Any = None
        if self.stream.isatty():
            from rich.console import Console

            self.console = Console(file=self.stream, highlight=False)

    def line(self, text: str, style: str | None = None) -> None:
        if self.console is not None:
            self.console.print(text, style=style, markup=False, soft_wrap=True)
        else:
            self.stream.write(text + "\n")

    def markup(self, rich_text: str, plain: str) -> None:
        """`rich_text` (rich markup) on a terminal, `plain` otherwise."""
        if self.console is not None:
            self.console.print(rich_text, soft_wrap=True)
        else:
            self.stream.write(plain + "\n")

    def table(
        self, head: Sequence[str], rows: Sequence[Sequence[str]], title: str | None = None
    ) -> None:
        if self.console is not None:
            from rich import box
            from rich.table import Table

            table = Table(*head, title=title, box=box.SIMPLE_HEAD, title_justify="left")
            for row in rows:
                table.add_row(*row)
            self.console.print(table)
            return
        if title:
            self.stream.write(title + "\n")
        lines = [tuple(head), *map(tuple, rows)]
        widths = [max(len(line[i]) for line in lines) for i in range(len(head))]
        for line in lines:
            cells = [c.ljust(w) for c, w in zip(line, widths, strict=True)]
            self.stream.write("  ".join(cells).rstrip() + "\n")
