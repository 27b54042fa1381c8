"""The everyday chores from the command line: `redrive topics`, `redrive produce`,
`redrive consume`. Thin: parse, call `redrive.admin`, print."""

from __future__ import annotations

from typing import Any

from redrive.commands import consume, produce, topics


def add_parsers(sub: Any) -> None:
    """Add the sub-commands to `sub` (the top-level parser's sub-parsers)."""
    topics.add_parser(sub)
    produce.add_parser(sub)
    consume.add_parser(sub)
