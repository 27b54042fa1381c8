"""Share groups against one consumer-group member on ONE partition, with an I/O handler.

    python -m redrive.bench.share [--records 600] [--latency 0.005] [--members 2]

A consumer group gives a partition to one member: with a handler that waits ``latency``
seconds per record (I/O), that member tops out near ``1 / latency`` records/s, however
many members the group has. A share group hands the same partition's records to every
member. Both contenders read the same records (written one producer batch each: a share
group hands out whole producer batches, so records written together would all go to one
member) from a fresh 1-partition topic, against one local broker (or
``REDRIVE_BOOTSTRAP_SERVERS``); the window runs from the first hand-over to the last
acknowledgement or commit, so joining the group is not counted. It prints records/s of each
and their ratio (a benchmark, not a test: ratios in one run hold on a noisy machine).
"""

from __future__ import annotations

import argparse
import threading
import time
import uuid

import redrive.admin as admin
from redrive.app import App
from redrive.broker.local import kafka_for_run
from redrive.events import Acknowledged, Committed, Delivered, Event, Succeeded
from redrive.message import Message
from redrive.share.group import ShareGroup


def _fill(servers: str, records: int) -> str:
    topic = f"bench-share-{uuid.uuid4().hex[:8]}"
    admin.create_topics(servers, {topic: 1})
    admin.produce(servers, topic, [b"x" * 100] * records, timeout=120, batch_each=True)
    return topic


def _measure(
    app: App, records: int, *, share: bool, timeout: float = 300.0
) -> tuple[float, dict[str, int]]:
    """Records/s of `app` from its first hand-over to its last outcome sent to Kafka, and
    the records each member was handed."""
    first: list[float] = []
    members: dict[str, int] = {}
    done: list[float] = []
    finished = threading.Event()
    lock = threading.Lock()

    def on(e: Event) -> None:
        with lock:
            if isinstance(e, Delivered):
                members[e.listener] = members.get(e.listener, 0) + len(e.records)
                if not first:
                    first.append(e.ts)
            elif share and isinstance(e, Acknowledged):
                done.append(e.ts)
            elif not share and isinstance(e, Succeeded):
                done.append(e.ts)
            if len(done) >= records and (share or isinstance(e, Committed)):
                finished.set()

    app.bus.subscribe(on)
    app.start()
    try:
        if not finished.wait(timeout):
            raise RuntimeError(f"{len(done)} of {records} records done in {timeout:g} s")
    finally:
        app.stop()
        app.join(60)
    return records / (max(done) - first[0]), members


def run(servers: str, records: int, latency: float, members: int) -> dict[str, float]:
    def handler(msg: Message) -> None:
        time.sleep(latency)

    topic = _fill(servers, records)
    group_app = App(servers, f"bench-group-{topic}")
    group_app.listener(topic, name="group-member")(handler)
    group_rate, _ = _measure(group_app, records, share=False)

    share_app = App(servers, f"bench-share-{topic}")
    share_app.share_listener(
        topic, name="share", consumers=members, max_poll_records=10, share_group=ShareGroup()
    )(handler)
    share_rate, handed = _measure(share_app, records, share=True)
    print("records handed to each share member:", ", ".join(f"{n}" for n in handed.values()))
    return {"consumer group (1 member)": group_rate, f"share group ({members} members)": share_rate,
            "ratio": share_rate / group_rate}  # fmt: skip


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="python -m redrive.bench.share", description=__doc__)
    parser.add_argument("--records", type=int, default=600)
    parser.add_argument("--latency", type=float, default=0.005)
    parser.add_argument("--members", type=int, default=2)
    args = parser.parse_args(argv)
    with kafka_for_run() as servers:
        result = run(servers, args.records, args.latency, args.members)
    ceiling = 1 / args.latency
    print(f"1 partition, handler {args.latency * 1000:g} ms, {args.records} records "
          f"(one member's ceiling: {ceiling:.0f} records/s)")  # fmt: skip
    for name, value in result.items():
        print(f"  {name:<28} {value:8.2f}" + ("" if name == "ratio" else " records/s"))
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
