"""A crash is not a failure (R3 with issue 10, item 8), against the real broker.

Consumers in child processes are SIGKILLed at chosen points; a new owner continues from the
commit metadata. An attempt that never reported an outcome is an *interruption*: the record
is handled again, never dead-lettered for it, unless its handling is interrupted
``max_interruptions`` (3) times, when it is dead-lettered with ``HandlingInterrupted`` as the
reason. Each test runs for a record listener, a batch listener and ``concurrency=4,
ordering="key"``.
"""

from __future__ import annotations

import signal
import sys
from pathlib import Path

import pytest

from redrive import App, Message, admin
from redrive import headers as h

from .dlt import dead_letters, header_values
from .helpers import kill_when, running, wait_for

pytestmark = pytest.mark.integration

CHILD = Path(__file__).with_name("crash_child.py")
FAST = {"session.timeout.ms": 2000, "heartbeat.interval.ms": 400}
MODES = ["record", "batch", "key"]


def produce(kafka: str, topic: str) -> None:
    admin.produce(kafka, topic, [(b"ka", b"a"), (b"kp", b"p"), (b"kb", b"b")])


def kill_inside(kafka: str, topic: str, group: str, ledger: Path, mode: str, when: str) -> None:
    """Start a child consumer, wait until it is inside the chosen point, SIGKILL it."""
    argv = [sys.executable, str(CHILD), kafka, topic, group, str(ledger), mode, when]
    killed = kill_when(Path(f"{ledger}.inside"), argv, "the child to reach its kill point")
    assert killed == -signal.SIGKILL


def prepare(kafka: str, make_topic, names, tmp_path: Path) -> tuple[str, str, Path]:
    """A topic with a, p, b and its dead-letter topic, a fresh group, an empty ledger."""
    topic = make_topic()
    admin.create_topics(kafka, {f"{topic}-dlt": 1})
    produce(kafka, topic)
    ledger = tmp_path / "ledger"
    ledger.touch()
    return topic, names.group(), ledger


def attempts(ledger: Path) -> list[int]:
    return [int(line.split()[1]) for line in ledger.read_text().splitlines()]


@pytest.mark.parametrize("mode", MODES)
def test_killed_after_a_successful_last_attempt_the_record_is_handled_again_not_dead_lettered(
    kafka, make_topic, names, tmp_path, mode
) -> None:
    topic, group, ledger = prepare(kafka, make_topic, names, tmp_path)
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
    topic, group, ledger = prepare(kafka, make_topic, names, tmp_path)
    # the first attempt (in the owner's window), the second owner's (the range is only
    # suspect after one death), then one marked attempt per interruption
    for _ in range(5):
        kill_inside(kafka, topic, group, ledger, mode, "inside-each")
    assert attempts(ledger) == [1, 1, 1, 2, 3]

    app = App(kafka, group, kafka=FAST)
    handled: list[bytes] = []
    app.listener(topic, max_poll_records=10)(lambda m: handled.append(m.value))
    with running(app):
        wait_for(lambda: admin.committed_offsets(kafka, group, topic) == {0: 3}, timeout=60)
    assert b"p" not in handled  # the sixth owner recovers it without handing it over
    (dead,) = dead_letters(kafka, f"{topic}-dlt")
    headers = header_values(dead)
    assert dead.value() == b"p"
    assert headers[h.DLT_EXCEPTION_FQCN] == "redrive.errors.HandlingInterrupted"
    assert "interrupted 3 times" in headers[h.DLT_EXCEPTION_MESSAGE]
    assert headers[h.REDRIVE_INTERRUPTIONS] == 3
