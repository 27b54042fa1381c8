"""A consumer in its own process that dies (SIGKILL from the test) at a chosen point, for
the "a crash is not a failure" tests.

    python crash_child.py BOOTSTRAP TOPIC GROUP LEDGER MODE WHEN

MODE: "record" (a record listener), "batch" (a batch listener naming the failed record),
"key" (a record listener with concurrency=4, ordering="key"). The record "p" fails with a
retryable error on attempts 1 and 2 (3 attempts allowed); the other records succeed.
WHEN: "inside-each" (every handling of "p" waits to be killed: the process dies each
time), or "after-success" (attempt 3 of "p" succeeds, then the loop is held right after
the success, before the commit, until the kill). Every handling of "p" appends
``<pid> <attempt>`` to LEDGER; LEDGER + ".inside" says the child waits to be killed.
"""

from __future__ import annotations

import os
import sys
import time

from redrive import App, BackOff, BatchFailed, Message, Retry
from redrive.events import Event, Succeeded

FAST = {"session.timeout.ms": 2000, "heartbeat.interval.ms": 400}


def main() -> None:
    bootstrap, topic, group, ledger, mode, when = sys.argv[1:7]
    app = App(bootstrap, group, kafka=FAST)
    retry = Retry.seek(BackOff.fixed(0.2, max_attempts=3))

    def wait_to_be_killed() -> None:
        with open(ledger + ".inside", "w") as f:
            f.write("inside")
        time.sleep(600)

    def handle_one(msg: Message) -> None:
        if msg.value != b"p":
            return
        with open(ledger, "a") as f:
            f.write(f"{os.getpid()} {msg.attempt}\n")
            f.flush()
            os.fsync(f.fileno())
        if when == "inside-each":
            wait_to_be_killed()
        if msg.attempt < 3:
            raise ConnectionError(f"downstream unavailable (attempt {msg.attempt})")

    def after_success(event: Event) -> None:  # runs on the loop thread, before the commit
        if isinstance(event, Succeeded) and when == "after-success":
            with open(ledger) as f:
                if any(line.split()[1] == "3" for line in f):
                    wait_to_be_killed()

    app.bus.subscribe(after_success)
    if mode == "batch":

        @app.batch_listener(topic, retry=retry, max_poll_records=10)
        def handle_batch(batch: list[Message]) -> None:
            for i, msg in enumerate(batch):
                try:
                    handle_one(msg)
                except ConnectionError as exc:
                    raise BatchFailed(index=i) from exc

    else:
        concurrency = 4 if mode == "key" else 1
        app.listener(topic, retry=retry, max_poll_records=10, concurrency=concurrency,
                     ordering="key")(handle_one)  # fmt: skip
    app.run()


if __name__ == "__main__":
    main()
