"""`redrive lab`: run scenarios against a real broker and show what happened."""

from __future__ import annotations

import argparse
import time
import uuid

from redrive import admin
from redrive.app import App
from redrive.broker import kafka_for_run
from redrive.events import Committed, Delivered, Polled, Recorder, Succeeded
from redrive.message import Message


def run_lab(args: argparse.Namespace) -> int:
    with kafka_for_run() as servers:
        print(f"Kafka at {servers}")
        return _success_demo(servers)


def _success_demo(servers: str) -> int:
    run = uuid.uuid4().hex[:6]
    topic, group = f"lab-success-{run}", f"lab-success-{run}"
    admin.create_topics(servers, {topic: 1})
    admin.produce(servers, topic, [f"m{i}" for i in range(1, 7)])
    seen: list[str] = []
    app = App(servers, group)
    recorder = Recorder()
    app.bus.subscribe(recorder)

    @app.listener(topic, max_poll_records=3, value_deserializer="str")
    def handle(msg: Message) -> None:
        seen.append(msg.value)
        if len(seen) == 6:
            app.stop()

    app.start()
    deadline = time.monotonic() + 30
    while len(seen) < 6 and time.monotonic() < deadline:
        time.sleep(0.05)
    app.stop()
    app.join()
    for e in recorder.events:
        if isinstance(e, Polled):
            print("poll    ->", ", ".join(f"{tp}: {n} record(s) from {o}" for tp, o, n in e.counts))
        elif isinstance(e, Delivered):
            print("handle  ->", ", ".join(f"{tp}@{o}" for tp, o, _ in e.records))
        elif isinstance(e, Succeeded):
            print("ok      <-", f"{e.tp}@{e.offset}")
        elif isinstance(e, Committed):
            print("commit  ->", ", ".join(f"{tp} position {p}" for tp, p in e.positions))
    committed = admin.committed_offsets(servers, group, topic)
    ok = seen == [f"m{i}" for i in range(1, 7)] and committed == {0: 6}
    print(f"handled {seen}; committed {committed}")
    print("verdict: " + ("PASS" if ok else "FAIL"))
    return 0 if ok else 1
