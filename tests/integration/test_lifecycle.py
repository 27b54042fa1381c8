"""Crash, graceful stop, and revocation against a real broker (C3, C4, C5; scenario 2)."""

from __future__ import annotations

import os
import signal
import subprocess
import sys
import threading
from collections import Counter
from pathlib import Path

import pytest

from redrive import App, Message, admin

from .helpers import FAST, running, wait_for

pytestmark = pytest.mark.integration

CHILD = Path(__file__).with_name("child_app.py")


def _lines(path: Path) -> list[str]:
    return path.read_text().splitlines() if path.exists() else []


def _handled(path: Path) -> list[str]:
    return [line.split(":", 2)[2] for line in _lines(path) if line[0].isdigit()]


def _consume_to_end(kafka: str, group: str, topic: str, end: int) -> list[str]:
    """A second consumer in `group` takes over and handles what is left."""
    seen: list[str] = []
    app = App(kafka, group, kafka=FAST)

    @app.listener(topic, max_poll_records=3, value_deserializer="str")
    def handle(msg: Message) -> None:
        seen.append(msg.value)

    with running(app):
        wait_for(lambda: admin.committed_offsets(kafka, group, topic) == {0: end})
    return seen


def test_scenario2_sigkill_mid_batch_loses_nothing_c3(kafka, make_topic, names, tmp_path) -> None:
    topic = make_topic()
    admin.produce(kafka, topic, [f"m{i}" for i in range(1, 7)])
    group = names.group()
    log = tmp_path / "child.log"
    child = subprocess.Popen(
        [sys.executable, str(CHILD), kafka, topic, group, str(log), "m2"],
        stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL,
    )  # fmt: skip
    try:
        wait_for(lambda: "STALLED" in _lines(log), what="the child to stall in m2")
        child.send_signal(signal.SIGKILL)
        child.wait(10)
    finally:
        if child.poll() is None:
            child.kill()
            child.wait()
    assert _handled(log) == ["m1", "m2"]
    # nothing of the batch committed: only position 0, with the owner's window, before m1
    assert admin.committed_offsets(kafka, group, topic) == {0: 0}

    seen = _consume_to_end(kafka, group, topic, 6)
    assert seen == ["m1", "m2", "m3", "m4", "m5", "m6"]
    total = Counter(_handled(log) + seen)
    assert total["m1"] == 2  # handled again: at-least-once, bounded by the uncommitted batch
    assert set(total) == {f"m{i}" for i in range(1, 7)}


def test_graceful_stop_mid_batch_via_redrive_run_c4(kafka, make_topic, names, tmp_path) -> None:
    topic = make_topic()
    values = [f"m{i}" for i in range(1, 31)]
    admin.produce(kafka, topic, values)
    group = names.group()
    log = tmp_path / "run.log"
    env = {
        **os.environ,
        "PYTHONPATH": str(CHILD.parent),
        "REDRIVE_CHILD_BOOTSTRAP": kafka,
        "REDRIVE_CHILD_TOPIC": topic,
        "REDRIVE_CHILD_GROUP": group,
        "REDRIVE_CHILD_LOG": str(log),
        "REDRIVE_CHILD_SLOW": "0.2",
    }
    proc = subprocess.Popen(
        [sys.executable, "-m", "redrive", "run", "child_app:app"],
        env=env, stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True,
    )  # fmt: skip
    try:
        # mid-batch: the 5th record is the 2nd of the second poll (max_poll_records=3)
        wait_for(lambda: len(_handled(log)) >= 5, what="five records handled")
        proc.send_signal(signal.SIGTERM)
        out, _ = proc.communicate(timeout=30)
    finally:
        if proc.poll() is None:
            proc.kill()
            proc.wait()
    assert proc.returncode == 0, out
    assert "received SIGTERM: stopping gracefully" in out
    first = _handled(log)
    assert first == values[: len(first)]
    assert admin.committed_offsets(kafka, group, topic) == {0: len(first)}

    seen = _consume_to_end(kafka, group, topic, 30)
    assert first + seen == values  # nothing handled twice, nothing skipped


@pytest.mark.parametrize("protocol", ["classic", "consumer"])
def test_revocation_commits_before_giving_up_c5(kafka, make_topic, names, protocol) -> None:
    topic = make_topic(partitions=4)
    values = [f"v{i}" for i in range(400)]
    for p in range(4):
        admin.produce(kafka, topic, values[p * 100 : (p + 1) * 100], partition=p)
    group = names.group()
    seen: Counter[str] = Counter()
    lock = threading.Lock()
    settings = dict(FAST) if protocol == "classic" else {"group.protocol": "consumer"}

    def make_app(tag: str) -> App:
        app = App(kafka, group, kafka=settings)

        @app.listener(topic, max_poll_records=10, value_deserializer="str", name=tag)
        def handle(msg: Message) -> None:
            with lock:
                seen[msg.value] += 1
            threading.Event().wait(0.004)

        return app

    first, second = make_app("first"), make_app("second")
    with running(first) as rec1:
        wait_for(lambda: sum(seen.values()) >= 40, what="the first consumer to be mid-stream")
        with running(second) as rec2:
            wait_for(lambda: len(seen) == 400, timeout=60, what="every record handled")
            wait_for(
                lambda: admin.committed_offsets(kafka, group, topic) == {p: 100 for p in range(4)}
            )
    revoked = [e for e in rec1.events if e.kind == "Revoked" and e.partitions]
    assert revoked, "the first consumer gave partitions up"
    assert any(e.kind == "Assigned" and e.partitions for e in rec2.events)
    dupes = {v: n for v, n in seen.items() if n > 1}
    assert dupes == {}  # revocation committed every final outcome before the hand-over
