"""Attempt state of failing records, and its form in commit metadata (R3).

A failing record's state is written into the commit metadata of its partition, committed at
the record's offset, so whoever owns the partition next (after a rebalance or a restart)
continues the count instead of starting over.
"""

from __future__ import annotations

import json
from dataclasses import dataclass


@dataclass(slots=True)
class Attempt:
    count: int  # attempts started so far
    first_failure: float  # wall-clock seconds of the first failure
    exhausted: bool = False  # retries are over; only the recoverer is tried again
    recoveries: int = 0  # failed recoverer runs
    last_error: BaseException | None = None

    def to_metadata(self, offset: int) -> str:
        return json.dumps(
            {"redrive": 1, "offset": offset, "attempts": self.count,
             "first_failure": round(self.first_failure, 3), "exhausted": self.exhausted},
            separators=(",", ":"),
        )  # fmt: skip

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
        return Attempt(
            int(data["attempts"]), float(data["first_failure"]), bool(data.get("exhausted"))
        )
