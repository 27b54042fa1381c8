"""Bad input, commit policies and async handlers against a real broker."""

from __future__ import annotations

import asyncio
import time

import pytest

from redrive import App, Commit, ConfigError, KafkaUnavailable, Message, admin
from redrive.events import Committed

from .helpers import FAST, commits, running, wait_for

pytestmark = pytest.mark.integration


def _noop(msg: Message) -> None:
    pass


def test_unknown_kafka_setting_is_named_at_start(kafka, make_topic, names) -> None:
    app = App(kafka, names.group(), kafka={"fetch.wait.max.mss": 10})
    app.listener(make_topic())(_noop)
    with pytest.raises(ConfigError) as err:
        app.start()
    assert str(err.value).startswith("invalid setting 'kafka:fetch.wait.max.mss'")
    assert "No such configuration property" in str(err.value)


def test_invalid_kafka_value_is_named_at_start(kafka, make_topic, names) -> None:
    app = App(kafka, names.group(), kafka={"session.timeout.ms": "soon"})
    app.listener(make_topic())(_noop)
    with pytest.raises(ConfigError, match=r"'kafka:session.timeout.ms'.*Invalid value"):
        app.start()


@pytest.mark.parametrize(
    ("options", "message"),
    [
        ({"max_poll_records": 0}, "invalid setting 'max_poll_records': must be a whole number >= 1, got 0"),
        ({"value_deserializer": "yaml"}, "invalid setting 'value_deserializer': must be one of ['bytes', 'json', 'str'] or a function, got 'yaml'"),
        ({"kafka": {"enable.auto.commit": True}}, "invalid setting 'kafka:enable.auto.commit': is set by redrive"),
        ({"poll_timeout": 0}, "invalid setting 'poll_timeout': must be > 0 seconds, got 0"),
    ],
)  # fmt: skip
def test_invalid_redrive_settings_fail_at_registration(options, message) -> None:
    app = App("127.0.0.1:1", "g")
    with pytest.raises(ConfigError) as err:
        app.listener("t", **options)(_noop)
    assert str(err.value).startswith(message)


def test_missing_group_id_is_named() -> None:
    with pytest.raises(ConfigError, match="no group id: pass group_id= to App or to the listener"):
        App("127.0.0.1:1").listener("t")(_noop)


def test_listener_registered_twice_for_topic_and_group_is_refused() -> None:
    app = App("127.0.0.1:1", "g")
    app.listener("orders")(_noop)
    with pytest.raises(
        ConfigError, match="topic 'orders' already has listener '_noop' in group 'g'"
    ):
        app.batch_listener(["payments", "orders"])(_noop)
    app.listener("orders", group_id="other")(_noop)  # another group may consume it too


def test_unreachable_broker_is_reported_in_bounded_time() -> None:
    app = App("127.0.0.1:1", "g", connect_timeout=2.0)
    app.listener("t")(_noop)
    began = time.monotonic()
    with pytest.raises(KafkaUnavailable) as err:
        app.start()
    assert time.monotonic() - began < 15
    assert "no Kafka broker answered at 127.0.0.1:1 within 2 s" in str(err.value)


def test_secrets_never_appear_in_errors_or_logs(caplog: pytest.LogCaptureFixture) -> None:
    caplog.set_level("DEBUG")
    app = App(
        "127.0.0.1:1", "g", connect_timeout=1.0,
        kafka={"security.protocol": "SASL_PLAINTEXT", "sasl.mechanism": "PLAIN",
               "sasl.username": "u", "sasl.password": "hunter2-secret"},
    )  # fmt: skip
    app.listener("t")(_noop)
    with pytest.raises(KafkaUnavailable) as err:
        app.start()
    assert "hunter2" not in str(err.value)
    assert "hunter2" not in caplog.text


def test_commit_per_record(kafka, make_topic, names) -> None:
    topic = make_topic()
    admin.produce(kafka, topic, ["a", "b", "c"])
    group = names.group()
    app = App(kafka, group, kafka=FAST)
    app.listener(topic, max_poll_records=3, commit=Commit.per_record())(_noop)
    with running(app) as rec:
        wait_for(lambda: admin.committed_offsets(kafka, group, topic) == {0: 3})
    assert commits(rec)[:3] == [{0: 1}, {0: 2}, {0: 3}]


def test_commit_on_interval_stores_and_commits_in_background(kafka, make_topic, names) -> None:
    topic = make_topic()
    admin.produce(kafka, topic, ["a", "b", "c"])
    group = names.group()
    app = App(kafka, group, kafka=FAST)
    app.listener(topic, max_poll_records=3, commit=Commit.interval(0.2))(_noop)
    with running(app) as rec:
        wait_for(lambda: admin.committed_offsets(kafka, group, topic) == {0: 3})
    # the owner's window is committed before the first record; then positions are stored,
    # and the client commits them in the background
    assert [e.reason for e in rec.of(Committed)][:2] == ["window", "poll"]


def test_manual_ack_commits_only_acknowledged_prefix(kafka, make_topic, names) -> None:
    topic = make_topic()
    admin.produce(kafka, topic, ["a", "b", "c", "d"])
    group = names.group()
    app = App(kafka, group, kafka=FAST)
    pending: list[Message] = []

    @app.listener(topic, max_poll_records=4, value_deserializer="str", commit=Commit.manual())
    def handle(msg: Message) -> None:
        if msg.value in ("a", "c"):
            msg.ack()
        else:
            pending.append(msg)

    with running(app):
        wait_for(lambda: admin.committed_offsets(kafka, group, topic) == {0: 1})
        time.sleep(0.5)
        assert admin.committed_offsets(kafka, group, topic) == {0: 1}  # b is not acknowledged
        pending[0].ack()  # b, from another thread: a, b, c are done now
        wait_for(lambda: admin.committed_offsets(kafka, group, topic) == {0: 3})
        pending[1].ack()
        wait_for(lambda: admin.committed_offsets(kafka, group, topic) == {0: 4})


def test_async_handler(kafka, make_topic, names) -> None:
    topic = make_topic()
    admin.produce(kafka, topic, ["a", "b"])
    group = names.group()
    app = App(kafka, group, kafka=FAST)
    seen: list[str] = []

    @app.listener(topic, value_deserializer="str")
    async def handle(msg: Message) -> None:
        await asyncio.sleep(0.01)
        seen.append(msg.value)

    with running(app):
        wait_for(lambda: admin.committed_offsets(kafka, group, topic) == {0: 2})
    assert seen == ["a", "b"]
