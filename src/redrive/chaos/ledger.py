"""The independent ledger: one line per handling, written by the consumer processes.

Each consumer process appends to its own file (``ledger-<pid>.txt``) with one ``write(2)``
per handling (per batch, for a batch listener) *before* the handler returns. A SIGKILL
cannot lose a line the kernel accepted, so a record handled and then killed before its
commit shows up as handled, and its second handling as a duplicate. (No fsync: chaos kills
processes, not the machine; a power cut could lose the last lines.)

A line: ``<unix time> <id> <attempt> <ok|fail> <topic> <partition> <offset>``. A consumer
that is told it *lost* partitions (its session expired: the group gave them to another
member without a hand-over) writes ``<unix time> -1 0 lost <topic> <partition> -1`` for
each: the verdict counts that as a fault, reported by the consumer itself. So does
``refused`` in its place: Kafka refused the commit of partitions the consumer was giving up
in a rebalance (the group was rebalancing again), so what it handled since its last commit
there is handled again by their next owner.
"""

from __future__ import annotations

import os
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path

PREFIX = "ledger-"


@dataclass(frozen=True, slots=True)
class Handling:
    """One handling of a record, as a consumer process wrote it."""

    t: float
    ident: int
    attempt: int
    outcome: str  # "ok", "fail"; "lost" or "refused" (a partition: ident is -1)
    topic: str
    partition: int
    offset: int
    pid: int

    @property
    def ok(self) -> bool:
        return self.outcome == "ok"

    @property
    def lost(self) -> bool:
        """A partition this process lost (``lost``), or gave up uncommitted (``refused``)."""
        return self.outcome in ("lost", "refused")


def lost_line(t: float, topic: str, partition: int, how: str = "lost") -> str:
    return f"{t:.4f} -1 0 {how} {topic} {partition} -1\n"


def line(
    t: float, ident: int, attempt: int, ok: bool, topic: str, partition: int, offset: int
) -> str:
    return f"{t:.4f} {ident} {attempt} {'ok' if ok else 'fail'} {topic} {partition} {offset}\n"


class Writer:
    """A consumer process's ledger file, appended to with one ``write(2)`` per call."""

    def __init__(self, folder: Path) -> None:
        folder.mkdir(parents=True, exist_ok=True)
        path = folder / f"{PREFIX}{os.getpid()}.txt"
        self.fd = os.open(path, os.O_WRONLY | os.O_APPEND | os.O_CREAT, 0o644)

    def write(self, text: str) -> None:
        data = text.encode()
        while data:  # a regular file takes it whole; the loop is for the letter of write(2)
            data = data[os.write(self.fd, data) :]


class Reader:
    """Reads every ledger file of a folder, new lines only at each call (the driver follows
    progress with it while the run goes on)."""

    def __init__(self, folder: Path) -> None:
        self.folder = folder
        self._offsets: dict[Path, int] = {}
        self._partial: dict[Path, bytes] = {}

    def new(self) -> Iterator[Handling]:
        for path in sorted(self.folder.glob(f"{PREFIX}*.txt")):
            pid = int(path.stem.removeprefix(PREFIX))
            with open(path, "rb") as f:
                f.seek(self._offsets.get(path, 0))
                data = self._partial.pop(path, b"") + f.read()
                self._offsets[path] = f.tell()
            complete, _, rest = data.rpartition(b"\n")
            if rest:  # a line being written right now: read it whole next time
                self._partial[path] = rest
            for raw in complete.split(b"\n") if complete else ():
                t, ident, attempt, outcome, topic, partition, offset = raw.split()
                yield Handling(
                    float(t),
                    int(ident),
                    int(attempt),
                    outcome.decode(),
                    topic.decode(),
                    int(partition),
                    int(offset),
                    pid,
                )
