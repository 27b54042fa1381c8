"""A crash is not a failure (R3 with issue 10, item 8), against the real broker.

Consumers in child processes are SIGKILLed at chosen points; a new owner continues from the
commit metadata. An attempt that never reported an outcome is an *interruption*: the record
is handled again, never dead-lettered for it, unless its handling is interrupted
``max_interruptions`` (3) times, when it is dead-lettered with ``HandlingInterrupted`` as the
reason. Each test runs for a record listener, a batch listener and ``concurrency=4,
ordering="key"``.
"""

from __future__ import annotations

import os
import signal
import subprocess
import sys
from pathlib import Path

import pytest

from redrive import App, Message, admin
from redrive import headers as h

from .dlt import dead_letters, header_values
from .helpers import running, wait_for

pytestmark = pytest.mark.integration

CHILD = Path(__file__).with_name("crash_child.py")
FAST = {"session.timeout.ms": 2000, "heartbeat.interval.ms": 400}
MODES = ["record", "batch", "key"]


def produce(kafka: str, topic: str) -> None:
    admin.produce(kafka, topic, [(b"ka", b"a"), (b"kp", b"p"), (b"kb", b"b")])


def kill_inside(kafka: str, topic: str, group: str, ledger: Path, mode: str, when: str) -> None:
    """Start a child consumer, wait until it is inside the chosen point, SIGKILL it."""
    inside = Path(f"{ledger}.inside")
    inside.unlink(missing_ok=True)
    child = subprocess.Popen(
        [sys.executable, str(CHILD), kafka, topic, group, str(ledger), mode, when],
        stdout=subprocess.DEVNULL, stderr=subprocess.PIPE,
    )  # fmt: skip
    try:
        wait_for(lambda: inside.exists() or child.poll() is not None, timeout=60,
                 what="the child to reach the point where it is killed")  # fmt: skip
        assert child.poll() is None, child.stderr.read().decode() if child.stderr else ""
        os.kill(child.pid, signal.SIGKILL)
    finally:
        if child.poll() is None:
            child.kill()
        child.wait(30)
        if child.stderr:
            child.stderr.close()


def attempts(ledger: Path) -> list[int]:
    return [int(line.split()[1]) for line in ledger.read_text().splitlines()]


@pytest.mark.parametrize("mode", MODES)
def test_killed_after_a_successful_last_attempt_the_record_is_handled_again_not_dead_lettered(
    kafka, make_topic, names, tmp_path, mode
) -> None:
    topic = make_topic()
    admin.create_topics(kafka, {f"{topic}-dlt": 1})
    produce(kafka, topic)
    group = names.group()
    ledger = tmp_path / "ledger"
    ledger.touch()
    kill_inside(kafka, topic, group, ledger, mode, "after-success")
    assert attempts(ledger) == [1, 2, 3]  # the third succeeded; killed before the commit

    app = App(kafka, group, kafka=FAST)
    again: list[int] = []

    @app.listener(topic, max_poll_records=10)
    def handle(msg: Message) -> None:
        if msg.value == b"p":
            again.append(msg.attempt)

    with running(app):
        wait_for(lambda: admin.committed_offsets(kafka, group, topic) == {0: 3}, timeout=60)
    assert again == [4]  # 2 failures and 1 interruption before it: handled, not recovered
    assert dead_letters(kafka, f"{topic}-dlt") == []


@pytest.mark.parametrize("mode", MODES)
def test_a_record_that_kills_every_owner_is_dead_lettered_after_the_interruption_limit(
    kafka, make_topic, names, tmp_path, mode
) -> None:
    topic = make_topic()
    admin.create_topics(kafka, {f"{topic}-dlt": 1})
    produce(kafka, topic)
    group = names.group()
    ledger = tmp_path / "ledger"
    ledger.touch()
    for _ in range(4):  # the first attempt, then one marked attempt per interruption
        kill_inside(kafka, topic, group, ledger, mode, "inside-each")
    assert attempts(ledger) == [1, 1, 2, 3]  # 1 again: the dead owner's window, unmarked

    app = App(kafka, group, kafka=FAST)
    handled: list[bytes] = []
    app.listener(topic, max_poll_records=10)(lambda m: handled.append(m.value))
    with running(app):
        wait_for(lambda: admin.committed_offsets(kafka, group, topic) == {0: 3}, timeout=60)
    assert b"p" not in handled  # the fifth owner recovers it without handing it over
    (dead,) = dead_letters(kafka, f"{topic}-dlt")
    headers = header_values(dead)
    assert dead.value() == b"p"
    assert headers[h.DLT_EXCEPTION_FQCN] == "redrive.errors.HandlingInterrupted"
    assert "interrupted 3 times" in headers[h.DLT_EXCEPTION_MESSAGE]
    assert headers[h.REDRIVE_INTERRUPTIONS] == 3
