"""Share-group members the lab (and the tests) run in child processes, so they can be
SIGKILLed while they hold acquired records (see ``redrive.lab.child``)."""

from __future__ import annotations

import time

from redrive.app import App
from redrive.message import Message
from redrive.share.group import ShareGroup


def holding_member(
    servers: str, group: str, name: str, topic: str, hold: str, lock_duration: float
) -> App:
    """A share-group member whose handler blocks at the record whose value is `hold`
    (the lab kills it meanwhile): it dies holding the records of its poll."""
    app = App(servers, group)

    @app.share_listener(topic, value_deserializer="str", name=name, max_poll_records=5,
                        share_group=ShareGroup(lock_duration=lock_duration))  # fmt: skip
    def handle(msg: Message) -> None:
        if msg.value == hold:
            time.sleep(120)

    return app


def slow_member(servers: str, group: str, name: str, topic: str, delay: float) -> App:
    """A share-group member that needs `delay` seconds per record (to be stopped while
    it holds records)."""
    app = App(servers, group)

    @app.share_listener(topic, value_deserializer="str", name=name)
    def handle(msg: Message) -> None:
        time.sleep(delay)

    return app
