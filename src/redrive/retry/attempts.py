"""Attempt state of records that are being retried, and its form in commit metadata (R3).

The state of a partition's unfinished records travels in the commit metadata of that
partition, committed at its safe position, so whoever owns the partition next (after a
rebalance, a restart or a crash) continues where the previous owner stopped.

A failure and an interruption are kept apart. A *failure* is an outcome the handler
reported (it raised). An *interruption* is an attempt that started and never reported an
outcome: the process was killed, or lost the partition, while the handler ran. Before it
hands over a record that has state, the owner commits a *running* mark for it; a new owner
that finds the mark counts an interruption, not a failure. So a record that succeeded on its
last allowed attempt and was killed before the commit is handled again, not dead-lettered,
and a record that kills the process every time is recovered after ``max_interruptions``.

While an owner consumes a partition, its commits also carry a *window*: the number of
records it may be handling past the committed position. A new owner that finds a window
knows the previous one may have died inside it. Most deaths are not the records' doing (a
deploy, a kill, a lost node), so the first time it only notes the window's end as *suspect*
in its own commits and consumes at full speed. When an owner dies again before the
suspect range is passed, the next one walks the rest of it carefully: it marks each record
as running before it hands it over (one commit per record, for that range only), so a
record that crashes the process on its first attempt is found too, two deaths later than
one that had state. Graceful hand-overs (revocation, stop) commit no window; they keep a
suspect range, which only a death in it turns into a walk.

Form (JSON, kept under Kafka's 4096-byte metadata limit; records that do not fit are left
out and start their count over)::

    {"redrive": 2, "w": 500, "s": 1234,
     "r": {"42": {"f": 2, "i": 1, "t": 1700000000.1, "run": 1, "l": 10,
                  "e": "TimeoutError: ...", "d": 1700000009.5}}}

``s`` is an offset (the end of the suspect range), ``w`` a count past the position.

Under concurrency, records past an unfinished one may be final already (handled, or
dead-lettered) while the position stays at the unfinished one. Their offsets ride along as
``"k"``, runs ``[start, length]`` counted from the position, so that a new owner (after a
revocation, a stop or a crash) skips them instead of handling them again; what does not fit
in the metadata is left out and handled again (at-least-once).
"""

from __future__ import annotations

import json
from collections.abc import Iterable
from dataclasses import dataclass, field

ERROR_TEXT_LIMIT = 200  # characters of the last error kept per record
METADATA_LIMIT = 3800  # bytes: Kafka's offset.metadata.max.bytes defaults to 4096
DONE_LIMIT = 1_000_000  # records in one run of final offsets, at most (a damaged one: ignored)


@dataclass(slots=True)
class Attempt:
    """What is known of one record's attempts."""

    failures: int = 0  # outcomes the handler reported as failures
    interruptions: int = 0  # attempts that started and never reported an outcome
    first_failure: float = 0.0  # wall-clock seconds of the first failure (0: none yet)
    running: bool = False  # an attempt started and has not reported yet (persisted mark)
    exhausted: bool = False  # retries are over; only the recoverer is tried again
    recoveries: int = 0  # failed recoverer runs
    last_error: BaseException | None = None
    limit: int | None = None  # failures the back-off allows for the last error (None: no cap)
    error_text: str = ""  # "module.Type: message" of the last error, for a new owner
    due: float = 0.0  # wall-clock time of the next attempt (0: now)

    @property
    def attempt(self) -> int:
        """The number of the next attempt (1 on first delivery)."""
        return self.failures + self.interruptions + 1

    @property
    def used_up(self) -> bool:
        """True when the observed failures reached the back-off's limit."""
        return self.exhausted or (self.limit is not None and self.failures >= self.limit)

    def note(self, exc: BaseException, limit: int | None) -> None:
        """Remember the last failure and how many failures its back-off allows."""
        self.limit = limit
        kind = type(exc)
        name = (
            kind.__qualname__
            if kind.__module__ == "builtins"
            else f"{kind.__module__}.{kind.__qualname__}"
        )
        self.error_text = f"{name}: {exc}"[:ERROR_TEXT_LIMIT]

    def to_json(self) -> dict[str, object]:
        data: dict[str, object] = {"f": self.failures}
        if self.interruptions:
            data["i"] = self.interruptions
        if self.first_failure:
            data["t"] = round(self.first_failure, 3)
        if self.running:
            data["run"] = 1
        if self.exhausted:
            data["x"] = 1
        if self.limit is not None:
            data["l"] = self.limit
        if self.error_text:
            data["e"] = self.error_text
        if self.due:
            data["d"] = round(self.due, 3)
        return data

    @staticmethod
    def from_json(data: object) -> Attempt:
        if not isinstance(data, dict):
            raise ValueError("not an object")
        limit = data.get("l")
        return Attempt(
            failures=int(data.get("f", 0)),
            interruptions=int(data.get("i", 0)),
            first_failure=float(data.get("t", 0.0)),
            running=bool(data.get("run")),
            exhausted=bool(data.get("x")),
            limit=int(limit) if isinstance(limit, int) else None,
            error_text=str(data.get("e", "")),
            due=float(data.get("d", 0.0)),
        )


@dataclass(slots=True)
class PartitionState:
    """What a partition's commit metadata said when it was assigned."""

    records: dict[int, Attempt] = field(default_factory=dict)
    window: int = 0  # > 0: the previous owner was consuming (it may have died in it)
    suspect: int = 0  # end offset of a range an owner already died in (0: none)
    done: frozenset[int] = frozenset()  # final offsets past the position (skip them)


def encode(
    records: dict[int, Attempt],
    window: int,
    suspect: int = 0,
    done: Iterable[int] = (),
    position: int = 0,
) -> str | None:
    """The metadata for a partition: its records' states, the owner's window, the end of a
    suspect range, and the offsets past `position` that are final already (`done`)."""
    runs = _runs(sorted(o - position for o in done if o > position))
    if not records and not window and not suspect and not runs:
        return None
    data: dict[str, object] = {"redrive": 2}
    if window:
        data["w"] = window
    if suspect:
        data["s"] = suspect
    if records:
        kept: dict[str, object] = {}
        size = 40
        for offset in sorted(records):
            entry = records[offset].to_json()
            cost = len(json.dumps(entry)) + 12
            if size + cost > METADATA_LIMIT:
                break  # the rest start their count over (documented limit)
            kept[str(offset)] = entry
            size += cost
        data["r"] = kept
    if runs:
        room = METADATA_LIMIT - len(json.dumps(data, separators=(",", ":"))) - 8
        kept_runs: list[list[int]] = []
        for run in runs:
            room -= len(str(run[0])) + len(str(run[1])) + 4
            if room < 0:
                break  # the rest are handled again by a new owner (at-least-once)
            kept_runs.append(run)
        data["k"] = kept_runs
    return json.dumps(data, separators=(",", ":"))


def _runs(offsets: list[int]) -> list[list[int]]:
    """Ascending offsets as runs ``[start, length]``."""
    runs: list[list[int]] = []
    for o in offsets:
        if runs and runs[-1][0] + runs[-1][1] == o:
            runs[-1][1] += 1
        else:
            runs.append([o, 1])
    return runs


def decode(text: str | None, position: int) -> PartitionState | None:
    """The state in a partition's commit metadata, or None when it is not redrive's (or
    damaged: the counts start over). Records before `position` are final and left out."""
    if not text or not text.startswith("{"):
        return None
    try:
        data = json.loads(text)
        if not isinstance(data, dict):
            return None
        if data.get("redrive") == 1:  # redrive 0.1: one record, attempts counted at start
            if data.get("offset") != position:
                return None
            old = Attempt(failures=int(data["attempts"]), interruptions=0,
                          first_failure=float(data["first_failure"]),
                          exhausted=bool(data.get("exhausted")),
                          limit=data.get("limit") if isinstance(data.get("limit"), int) else None,
                          error_text=str(data.get("error", "")),
                          due=float(data.get("due", 0.0)))  # fmt: skip
            return PartitionState({position: old}, 0)
        if data.get("redrive") != 2:
            return None
        records = {
            int(k): Attempt.from_json(v)
            for k, v in dict(data.get("r", {})).items()
            if int(k) >= position
        }
        done = frozenset(  # damaged runs are ignored: never the record at the position
            position + start + i
            for start, length in data.get("k", ())
            if start >= 1 and 0 < length <= DONE_LIMIT
            for i in range(length)
        )
        return PartitionState(records, int(data.get("w", 0)), int(data.get("s", 0)), done)
    except (KeyError, TypeError, ValueError):
        return None
