"""A redrive App for child processes: `python child_app.py BOOTSTRAP TOPIC GROUP LOG [STALL]`.

Appends "<partition>:<offset>:<value>" to LOG for every record it starts handling (flushed
at once), and, when it meets the value STALL, writes "STALLED" and blocks, waiting to be
killed. Also importable as a module for `redrive run` (settings from REDRIVE_CHILD_* env).
"""

from __future__ import annotations

import os
import sys
import time

from redrive import App, Message

SLOW = float(os.environ.get("REDRIVE_CHILD_SLOW", "0"))


def build(bootstrap: str, topic: str, group: str, log_path: str, stall: str | None) -> App:
    app = App(bootstrap, group, kafka={"session.timeout.ms": 3000, "heartbeat.interval.ms": 300})
    log = open(log_path, "a", buffering=1)  # noqa: SIM115 - lives as long as the process

    @app.listener(topic, max_poll_records=3, value_deserializer="str")
    def handle(msg: Message) -> None:
        log.write(f"{msg.partition}:{msg.offset}:{msg.value}\n")
        if msg.value == stall:
            log.write("STALLED\n")
            while True:
                time.sleep(1)
        if SLOW:
            time.sleep(SLOW)
        log.write(f"done:{msg.partition}:{msg.offset}\n")

    return app


if __name__ == "__main__":
    bootstrap, topic, group, log_path, *rest = sys.argv[1:]
    build(bootstrap, topic, group, log_path, rest[0] if rest else None).run()
elif os.environ.get("REDRIVE_CHILD_BOOTSTRAP"):
    app = build(
        os.environ["REDRIVE_CHILD_BOOTSTRAP"],
        os.environ["REDRIVE_CHILD_TOPIC"],
        os.environ["REDRIVE_CHILD_GROUP"],
        os.environ["REDRIVE_CHILD_LOG"],
        os.environ.get("REDRIVE_CHILD_STALL"),
    )
