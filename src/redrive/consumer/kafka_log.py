"""librdkafka's own log lines, through Python logging and without repeats.

Left alone, librdkafka writes straight to stderr: while no broker answers, about 20
identical ``Connect to ... failed`` lines a second, and raw lines in the middle of JSON logs.
Given a Python logger (confluent-kafka's ``logger`` setting), its lines arrive through
``logging`` when the client is polled; ``Repeats`` lets one line of a kind through per
interval and says how many it held back.
"""

from __future__ import annotations

import logging
import re
import threading
import time
from collections.abc import Callable

KAFKA_LOG = logging.getLogger("librdkafka")
"""The logger librdkafka's lines go to (pass it as the ``logger`` client setting)."""

_NUMBERS = re.compile(r"\d+")


class Repeats(logging.Filter):
    """Lets through one record of a kind (same level, same text once numbers are ignored) per
    ``every`` seconds; the next one let through says how many were held back."""

    def __init__(self, every: float = 30.0, clock: Callable[[], float] = time.monotonic) -> None:
        super().__init__()
        self.every = every
        self._clock = clock
        self._seen: dict[tuple[int, str], tuple[float, int]] = {}  # kind -> (shown at, held)
        self._lock = threading.Lock()

    def filter(self, record: logging.LogRecord) -> bool:
        text = record.getMessage()
        kind = (record.levelno, _NUMBERS.sub("#", text))
        now = self._clock()
        with self._lock:
            shown, held = self._seen.get(kind, (-self.every, 0))
            if now - shown < self.every:
                self._seen[kind] = (shown, held + 1)
                return False
            if len(self._seen) > 1000:  # forget kinds not seen for a while
                self._seen = {k: v for k, v in self._seen.items() if now - v[0] < self.every}
            self._seen[kind] = (now, 0)
        if held:
            record.msg, record.args = f"{text} ({held} more like it not shown)", ()
        return True


KAFKA_LOG.addFilter(Repeats())
