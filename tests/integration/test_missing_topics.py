"""Missing topics at start (issue 11): the dead-letter topic is created like the retry topics,
or start fails naming it; a missing topic of the listener is waited for (and said so), fails
the start, or is created, as ``missing_topics=`` says."""

from __future__ import annotations

import json
import logging
import threading
from pathlib import Path

import pytest

from redrive import App, CircuitBreaker, ConfigError, DeadLetter, Message, admin
from redrive.recover.base import Recoverer
from redrive.topics import create

from .dlt import dead_letters, header_values
from .helpers import FAST, running, wait_for

pytestmark = pytest.mark.integration


def redrive_threads() -> list[str]:
    return [t.name for t in threading.enumerate() if t.name.startswith("redrive:")]


@pytest.mark.parametrize(
    "recoverer",
    [None, CircuitBreaker(DeadLetter(), in_a_row=5), DeadLetter(topic="{topic}-parked")],
    ids=["default", "breaker", "fixed-name"],
)
def test_the_dead_letter_topic_is_created_at_start_with_the_sources_partitions(
    kafka, make_topic, names, recoverer
) -> None:
    topic = make_topic(partitions=3)
    if isinstance(recoverer, DeadLetter) and isinstance(recoverer.topic, str):
        recoverer = DeadLetter(topic=recoverer.topic.format(topic=topic))
    dlt = recoverer.topic if isinstance(recoverer, DeadLetter) else f"{topic}-dlt"
    assert isinstance(dlt, str)
    admin.produce(kafka, topic, ["fine", "broken"], partition=2)
    group = names.group()
    app = App(kafka, group, kafka=FAST)

    @app.listener(topic, value_deserializer="str", recoverer=recoverer)
    def handle(msg: Message) -> None:
        if msg.value == "broken":
            raise ValueError("cannot parse the order")  # fatal: dead-lettered at once

    with running(app):
        assert admin.topic_partitions(kafka, dlt) == 3  # created by start()
        wait_for(lambda: admin.committed_offsets(kafka, group, topic)[2] == 2)
    (dead,) = dead_letters(kafka, dlt)
    assert (dead.partition(), dead.value()) == (2, b"broken")  # same partition as its source
    assert header_values(dead)["kafka_dlt-exception-message"] == "cannot parse the order"
    assert redrive_threads() == []


def test_a_dead_letter_function_topic_is_not_created(kafka, make_topic, names) -> None:
    topic = make_topic()
    app = App(kafka, names.group(), kafka=FAST)

    @app.listener(topic, recoverer=DeadLetter(topic=lambda msg: f"{msg.topic}-elsewhere"))
    def handle(msg: Message) -> None: ...

    with running(app):
        pass
    assert admin.topic_partitions(kafka, f"{topic}-elsewhere") is None
    assert admin.topic_partitions(kafka, f"{topic}-dlt") is None


@pytest.mark.parametrize("wrapped", [False, True])
def test_auto_create_off_fails_the_start_naming_the_topic_and_the_command(
    kafka, make_topic, names, wrapped
) -> None:
    topic = make_topic(partitions=2)
    app = App(kafka, names.group(), kafka=FAST)
    recoverer: Recoverer = DeadLetter(auto_create=False)
    if wrapped:
        recoverer = CircuitBreaker(recoverer)

    @app.listener(topic, recoverer=recoverer)
    def handle(msg: Message) -> None: ...

    with pytest.raises(ConfigError) as err:
        app.start()
    assert err.value.setting == "recoverer"
    assert err.value.problem == (
        f"missing topics: {topic}-dlt. Create them (redrive topics create {topic}-dlt "
        "--partitions 2) or pass DeadLetter(auto_create=True)"
    )
    assert admin.topic_partitions(kafka, f"{topic}-dlt") is None
    assert redrive_threads() == []


def test_a_dead_letter_topic_the_broker_refuses_fails_the_start(kafka, make_topic, names) -> None:
    topic = make_topic()
    app = App(kafka, names.group(), kafka=FAST)

    @app.listener(topic, recoverer=DeadLetter(topic="no spaces allowed"))
    def handle(msg: Message) -> None: ...

    with pytest.raises(ConfigError) as err:
        app.start()
    assert err.value.setting == "recoverer"
    assert "missing topics could not be created: no spaces allowed (" in err.value.problem
    assert "redrive topics create no spaces allowed --partitions 1" in err.value.problem
    assert redrive_threads() == []


def test_missing_topics_fail_fails_the_start_naming_the_topics(kafka, make_topic, names) -> None:
    present, absent = make_topic("present"), names.topic("absent")
    app = App(kafka, names.group(), kafka=FAST)

    @app.listener([present, absent], missing_topics="fail")
    def handle(msg: Message) -> None: ...

    with pytest.raises(ConfigError) as err:
        app.start()
    assert err.value.setting == "missing_topics"
    assert err.value.problem.startswith(f"missing topics: {absent}. Create them (redrive topics "
                                        f"create {absent} --partitions N) or pass")  # fmt: skip
    assert admin.topic_partitions(kafka, absent) is None
    assert admin.topic_partitions(kafka, f"{present}-dlt") is None  # nothing created
    assert redrive_threads() == []


def test_missing_topics_create_creates_and_consumes_it(kafka, names) -> None:
    topic = names.topic()
    group = names.group()
    app = App(kafka, group, kafka=FAST)
    seen: list[str] = []

    @app.listener(topic, value_deserializer="str", missing_topics="create")
    def handle(msg: Message) -> None:
        seen.append(msg.value)

    with running(app):
        assert admin.topic_partitions(kafka, topic) == 1
        assert admin.topic_partitions(kafka, f"{topic}-dlt") == 1
        admin.produce(kafka, topic, ["a", "b"])
        wait_for(lambda: admin.committed_offsets(kafka, group, topic) == {0: 2})
    assert seen == ["a", "b"]
    assert redrive_threads() == []


def test_missing_topics_wait_says_so_then_consumes_it_once_created(
    kafka, names, caplog, monkeypatch
) -> None:
    monkeypatch.setattr(create, "CHECK_EVERY", 0.2)
    monkeypatch.setattr(create, "REPORT_EVERY", 0.5)
    topic = names.topic()
    group = names.group()
    app = App(kafka, group, kafka=FAST)
    seen: list[str] = []

    @app.listener(topic, value_deserializer="str", name="orders")
    def handle(msg: Message) -> None:
        seen.append(msg.value)
        if msg.value == "broken":
            raise ValueError("cannot parse the order")

    def said(what: str) -> list[str]:
        return [r.getMessage() for r in caplog.records
                if r.name == "redrive.topics" and what in r.getMessage()]  # fmt: skip

    with caplog.at_level(logging.INFO, logger="redrive"), running(app):
        (first,) = said("does not exist (")
        assert first.startswith(f"listener orders: topic {topic} does not exist")
        assert f"Create it: redrive topics create {topic} --partitions N" in first
        assert first.endswith("--partitions N")
        wait_for(lambda: len(said("still does not exist")) >= 2, what="the reminders")
        assert "redrive:topics" in redrive_threads()
        admin.create_topics(kafka, {topic: 2})
        admin.produce(kafka, topic, ["a", "broken"], partition=1)
        wait_for(lambda: admin.committed_offsets(kafka, group, topic)[1] == 2)
        assert said(f"topic(s) {topic} exist now")
        assert "redrive:topics" not in redrive_threads()  # nothing left to wait for
    assert seen == ["a", "broken"]
    assert admin.topic_partitions(kafka, f"{topic}-dlt") == 2  # created once the topic was
    (dead,) = dead_letters(kafka, f"{topic}-dlt")
    assert (dead.partition(), dead.value()) == (1, b"broken")
    assert redrive_threads() == []


def test_the_watch_ends_with_the_app_while_the_topic_is_still_missing(kafka, names) -> None:
    app = App(kafka, names.group(), kafka=FAST)

    @app.listener(names.topic())
    def handle(msg: Message) -> None: ...

    app.start()
    try:
        assert "redrive:topics" in redrive_threads()
    finally:
        app.stop()
        app.join(30)
    assert redrive_threads() == []


def test_the_issue_a_failing_record_in_the_readme_listeners_example_is_dead_lettered(
    kafka, make_topic, monkeypatch, tmp_path
) -> None:
    """Issue 11 as the new user met it: only the topics of the example exist, and a record
    that fails ends in the dead-letter topic instead of an endless "not available" loop."""
    orders, payments = make_topic("orders"), make_topic("payments")
    readme = (Path(__file__).parents[2] / "README.md").read_text()
    block = readme[readme.index("## Listeners\n") :].split("```python\n", 1)[1].split("```")[0]
    source = block.replace('"orders"', repr(orders)).replace('"payments"', repr(payments))
    assert repr(orders) in source and repr(payments) in source
    admin.produce(kafka, orders, [json.dumps({"customer": "c1", "amount": 9.5}),
                                  json.dumps({"customer": "c2"})])  # no amount: KeyError  # fmt: skip
    monkeypatch.setenv("REDRIVE_BOOTSTRAP_SERVERS", kafka)
    monkeypatch.chdir(tmp_path)

    def run_until_billing_committed(app: App) -> None:
        with running(app):
            wait_for(lambda: admin.committed_offsets(kafka, "billing", orders) == {0: 2})

    monkeypatch.setattr(App, "run", run_until_billing_committed)
    namespace: dict[str, object] = {"__name__": "__main__"}
    exec(compile(source, "README.md", "exec"), namespace)
    assert namespace["totals"] == {"c1": 9.5}
    (dead,) = dead_letters(kafka, f"{orders}-dlt")
    assert json.loads(dead.value()) == {"customer": "c2"}
    assert header_values(dead)["kafka_dlt-exception-fqcn"] == "KeyError"
