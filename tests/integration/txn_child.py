"""A transactional consume-transform-produce consumer in its own process, for the SIGKILL
test (T1).

    python txn_child.py BOOTSTRAP TOPIC GROUP OUTPUT SLOT

Each record becomes one output (same key, value prefixed with "out-"); the record with
value "poison" fails fatally and goes to ``<TOPIC>-dlt``. ``SLOT`` makes the transactional
id: a restarted child takes over its slot and fences the killed one's open transaction.
"""

from __future__ import annotations

import sys
import time

from redrive import App, Commit, Message, Output


def main() -> None:
    bootstrap, topic, group, output, slot = sys.argv[1:6]
    app = App(bootstrap, group, kafka={"session.timeout.ms": 2000, "heartbeat.interval.ms": 300})

    @app.listener(topic, commit=Commit.transaction(transactional_id=f"{group}-{slot}"))
    def transform(msg: Message) -> Output:
        if msg.value == b"poison":
            raise ValueError("poison record")
        time.sleep(0.0002)  # some work, so that kills land inside transactions
        return Output(output, key=msg.raw_key, value=b"out-" + (msg.raw_value or b""))

    app.run()


if __name__ == "__main__":
    main()
