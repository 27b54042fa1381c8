"""Attempt state of failing records, and its form in commit metadata (R3).

A failing record's state is written into the commit metadata of its partition, committed at
the record's offset, so whoever owns the partition next (after a rebalance or a restart)
continues the count instead of starting over.

An attempt is counted when it *starts* (the loop commits the state before it hands the
record over again), so an attempt that a crash interrupted counts as used: the new owner
never hands the record over more often than the back-off allows, except when the crash hit
the very first attempt (nothing is committed before a record first fails).
"""

from __future__ import annotations

import json
from dataclasses import dataclass

ERROR_TEXT_LIMIT = 200  # characters of the last error kept in the metadata (4 KiB at most)


@dataclass(slots=True)
class Attempt:
    count: int  # attempts started so far
    first_failure: float  # wall-clock seconds of the first failure
    exhausted: bool = False  # retries are over; only the recoverer is tried again
    recoveries: int = 0  # failed recoverer runs
    last_error: BaseException | None = None
    limit: int | None = None  # attempts the back-off allows for the last error (None: no cap)
    error_text: str = ""  # "module.Type: message" of the last error, for a new owner
    due: float = 0.0  # wall-clock time of the next attempt (kept for a new owner only)

    @property
    def used_up(self) -> bool:
        """True when no attempt is left: retries are over, or the last allowed attempt was
        started (by a previous owner that did not live to see its outcome)."""
        return self.exhausted or (self.limit is not None and self.count >= self.limit)

    def note(self, exc: BaseException, limit: int | None) -> None:
        """Remember the last failure and how many attempts its back-off allows."""
        self.limit = limit
        kind = type(exc)
        name = (
            kind.__qualname__
            if kind.__module__ == "builtins"
            else f"{kind.__module__}.{kind.__qualname__}"
        )
        self.error_text = f"{name}: {exc}"[:ERROR_TEXT_LIMIT]

    def to_metadata(self, offset: int) -> str:
        data: dict[str, object] = {
            "redrive": 1, "offset": offset, "attempts": self.count,
            "first_failure": round(self.first_failure, 3), "exhausted": self.exhausted,
        }  # fmt: skip
        if self.limit is not None:
            data["limit"] = self.limit
        if self.error_text:
            data["error"] = self.error_text
        if self.due:
            data["due"] = round(self.due, 3)
        return json.dumps(data, separators=(",", ":"))

    @staticmethod
    def from_metadata(text: str | None, offset: int) -> Attempt | None:
        """The state stored for the record at `offset`, if the metadata is redrive's."""
        if not text or not text.startswith("{"):
            return None
        try:
            data = json.loads(text)
        except ValueError:
            return None
        if not isinstance(data, dict) or data.get("redrive") != 1 or data.get("offset") != offset:
            return None
        limit = data.get("limit")
        try:
            return Attempt(
                int(data["attempts"]),
                float(data["first_failure"]),
                bool(data.get("exhausted")),
                limit=int(limit) if isinstance(limit, int) else None,
                error_text=str(data.get("error", "")),
                due=float(data.get("due", 0.0)),
            )
        except (KeyError, TypeError, ValueError):  # not ours after all, or damaged: start over
            return None
