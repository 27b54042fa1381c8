"""The app ``redrive bench`` runs under ``redrive run --workers N``: a record listener whose
handler burns a fixed amount of CPU per record (``REDRIVE_BENCH_SPIN`` loop iterations,
about 20 us, calibrated once by the bench so every run does the same work)."""

from __future__ import annotations

import os

from redrive import App, Message
from redrive.bench.scaling import burn

TOPIC = os.environ.get("REDRIVE_BENCH_TOPIC", "redrive-bench")
SPIN = int(os.environ.get("REDRIVE_BENCH_SPIN", "1000"))

app = App(group_id=os.environ.get("REDRIVE_BENCH_GROUP", "redrive-bench-workers"))


@app.listener(TOPIC)
def handle(msg: Message) -> None:
    burn(SPIN)
