"""Dead letters (D4): list, inspect and replay the records of a dead-letter topic."""

from redrive.dlt.records import DeadLetterRecord, decode_headers, read
from redrive.dlt.replay import Filter, ReplayResult, replay, replayed_keys
from redrive.headers import REPLAY_OF

__all__ = [
    "REPLAY_OF",
    "DeadLetterRecord",
    "Filter",
    "ReplayResult",
    "decode_headers",
    "read",
    "replay",
    "replayed_keys",
]
