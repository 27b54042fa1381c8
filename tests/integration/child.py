"""A consumer in its own process, for the SIGKILL hand-over test (E3).

    python child.py BOOTSTRAP TOPIC GROUP LEDGER KILL_AT MAX_ATTEMPTS [CONCURRENCY]

Every handler call appends ``<pid> <attempt>`` to LEDGER (flushed to disk before anything
else happens). Attempt KILL_AT writes LEDGER + ".inside" and then waits to be killed; the
other attempts fail with a retryable error.
"""

from __future__ import annotations

import os
import sys
import time

from redrive import App, BackOff, Message, Retry

FAST = {"session.timeout.ms": 2000, "heartbeat.interval.ms": 400}


def main() -> None:
    bootstrap, topic, group, ledger, kill_at, max_attempts = sys.argv[1:7]
    concurrency = int(sys.argv[7]) if len(sys.argv) > 7 else 1
    app = App(bootstrap, group, kafka=FAST)

    @app.listener(topic, retry=Retry.seek(BackOff.fixed(0.3, max_attempts=int(max_attempts))),
                  concurrency=concurrency, ordering="key")  # fmt: skip
    def handle(msg: Message) -> None:
        with open(ledger, "a") as f:
            f.write(f"{os.getpid()} {msg.attempt}\n")
            f.flush()
            os.fsync(f.fileno())
        if msg.attempt == int(kill_at):
            with open(ledger + ".inside", "w") as f:
                f.write(str(msg.attempt))
            time.sleep(600)  # inside attempt KILL_AT until SIGKILL
        raise ConnectionError(f"downstream unavailable (attempt {msg.attempt})")

    app.run()


if __name__ == "__main__":
    main()
