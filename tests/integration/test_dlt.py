"""`redrive dlt` against a real broker (D4): list and inspect dead letters (also Spring
Kafka's), replay them once the cause is fixed, never twice unless forced."""

from __future__ import annotations

import json
import struct
import threading
import time

import pytest

from redrive import App, Classifier, Message, RetryTopics, admin, cli
from redrive.dlt import REPLAY_OF

from .helpers import FAST, running, wait_for

pytestmark = pytest.mark.integration


class Broken(Exception):
    """The downstream system is broken (fatal here: straight to the dead-letter topic)."""


def _cli(capsys: pytest.CaptureFixture[str], kafka: str, *args: str) -> str:
    capsys.readouterr()
    assert cli.main(["dlt", *args, "--bootstrap-servers", kafka]) == 0
    return capsys.readouterr().out


def test_d4_replay_round_trip_once_unless_forced(kafka, make_topic, names, capsys) -> None:
    topic = make_topic()
    dlt_topic = f"{topic}-dlt"
    admin.produce(kafka, topic, ["a", "b", "c"])
    group = names.group()
    app = App(kafka, group, kafka=FAST)
    broken = threading.Event()
    broken.set()
    done: list[tuple[str, bytes | None]] = []

    chain = RetryTopics((0.2,), classifier=Classifier(fatal=(Broken,)))

    @app.listener(topic, value_deserializer="str", retry_topics=chain)
    def handle(msg: Message) -> None:
        if msg.value != "a" and broken.is_set():
            raise Broken(f"cannot store {msg.value}")
        done.append((msg.value, msg.header(REPLAY_OF)))

    with running(app):
        wait_for(
            lambda: (
                admin.committed_offsets(kafka, group, topic) == {0: 3}
                and admin.end_offsets(kafka, dlt_topic) == {0: 2}
            ),
            what="b and c dead-lettered",
        )
        listed = json.loads(_cli(capsys, kafka, "ls", dlt_topic, "--json"))
        assert [(d["offset"], d["origin"]["topic"], d["origin"]["offset"]) for d in listed] == [
            (0, topic, 1), (1, topic, 2)
        ]  # fmt: skip
        assert all(d["exception"].endswith("Broken") and d["attempts"] == 1 for d in listed)
        assert listed[0]["message"] == "cannot store b"
        table = _cli(capsys, kafka, "ls", dlt_topic)
        assert "Broken" in table and f"{topic}[0]@1" in table and "2 dead letter(s)" in table

        # a dry run lists and sends nothing
        out = _cli(capsys, kafka, "replay", dlt_topic, "--dry-run")
        assert "selected 2, would send 2" in out and "nothing sent" in out
        assert admin.end_offsets(kafka, topic) == {0: 3}

        broken.clear()  # the cause is fixed
        out = _cli(capsys, kafka, "replay", dlt_topic)
        assert "selected 2, sent 2, already replayed 0" in out
        wait_for(
            lambda: admin.committed_offsets(kafka, group, topic) == {0: 5},
            what="replayed records handled and committed",
        )
        assert done == [
            ("a", None),
            ("b", f"{dlt_topic}/0/0".encode()),
            ("c", f"{dlt_topic}/0/1".encode()),
        ]

        # the same dead letters are not replayed twice
        out = _cli(capsys, kafka, "replay", dlt_topic)
        assert "selected 2, sent 0, already replayed 2 (use --force" in out
        # unless forced; filters pick by offset range and exception type
        picked = json.loads(
            _cli(capsys, kafka, "replay", dlt_topic, "--force", "--dry-run", "--json",
                 "--exception", "Broken", "--from-offset", "1", "--to-offset", "1")
        )  # fmt: skip
        assert picked["would_send"] == 1 and picked["records"][0]["offset"] == 1
        none = json.loads(
            _cli(capsys, kafka, "replay", dlt_topic, "--force", "--dry-run", "--json",
                 "--exception", "TimeoutError")
        )  # fmt: skip
        assert none["selected"] == 0
        # forced, to the start of the retry chain: handled by the retry consumer
        out = _cli(capsys, kafka, "replay", dlt_topic, "--force", "--to", "retry",
                   "--from-offset", "0", "--to-offset", "0")  # fmt: skip
        assert f"-> {topic}-retry[0]@0" in out and "sent 1" in out
        wait_for(lambda: len(done) == 4, what="b handled from the retry topic")
        assert done[3] == ("b", f"{dlt_topic}/0/0".encode())
    assert admin.end_offsets(kafka, topic) == {0: 5}  # nothing more was sent
    assert admin.end_offsets(kafka, dlt_topic) == {0: 2}  # and nothing failed again


def _big(n: int) -> bytes:  # Java BigInteger.toByteArray()
    return n.to_bytes(n.bit_length() // 8 + 1, "big", signed=True)


def test_d4_reads_spring_kafka_dead_letters(kafka, make_topic, capsys) -> None:
    topic = make_topic("orders-dlt")
    original_ts = 1_700_000_000_123
    stack = "java.lang.IllegalStateException: no customer 42\n\tat com.example.Orders.handle"
    # Headers as Spring Kafka's DeadLetterPublishingRecoverer and retry topics write them.
    spring = [
        ("kafka_dlt-original-topic", b"orders"),
        ("kafka_dlt-original-partition", struct.pack(">i", 2)),
        ("kafka_dlt-original-offset", struct.pack(">q", 1234)),
        ("kafka_dlt-original-timestamp", struct.pack(">q", original_ts)),
        ("kafka_dlt-original-timestamp-type", b"CreateTime"),
        ("kafka_dlt-original-consumer-group", b"orders-service"),
        ("kafka_dlt-exception-fqcn",
         b"org.springframework.kafka.listener.ListenerExecutionFailedException"),
        ("kafka_dlt-exception-cause-fqcn", b"java.lang.IllegalStateException"),
        ("kafka_dlt-exception-message", b"Listener failed; no customer 42"),
        ("kafka_dlt-exception-stacktrace", stack.encode()),
        ("retry_topic-attempts", _big(4)),  # three attempts were made
        ("retry_topic-original-timestamp", _big(original_ts)),
        ("retry_topic-backoff-timestamp", _big(original_ts + 3000)),
        ("traceparent", b"00-abc-01"),
    ]  # fmt: skip
    before = time.time() * 1000
    admin.produce(kafka, topic, [(b"42", b'{"order": 42}')], headers=spring)

    (row,) = json.loads(_cli(capsys, kafka, "ls", topic, "--json"))
    assert row["origin"] == {
        "topic": "orders", "partition": 2, "offset": 1234, "time": "2023-11-14T22:13:20.123+00:00"
    }  # fmt: skip
    assert row["exception"] == "java.lang.IllegalStateException"  # the cause, not the wrapper
    assert row["message"] == "no customer 42"  # its own message, Spring's prefix taken off
    assert row["attempts"] == 3
    assert row["consumer_group"] == "orders-service"
    assert row["time"] >= time.strftime("%Y-%m-%dT%H:%M", time.gmtime(before / 1000 - 60))

    full = json.loads(_cli(capsys, kafka, "show", topic, "0", "--json"))
    assert full["key"] == "42" and full["value"] == '{"order": 42}'
    h = full["headers"]
    assert h["kafka_dlt-original-partition"] == 2 and h["kafka_dlt-original-offset"] == 1234
    assert h["retry_topic-attempts"] == 4
    assert h["retry_topic-backoff-timestamp"] == original_ts + 3000
    assert h["kafka_dlt-exception-stacktrace"] == stack and h["traceparent"] == "00-abc-01"
    text = _cli(capsys, kafka, "show", topic, "0")
    assert "java.lang.IllegalStateException: no customer 42" in text


def test_d4_command_config_carries_client_settings_and_never_echoes_them(
    kafka, make_topic, capsys, tmp_path
) -> None:
    dlt_topic = make_topic("dlt")
    admin.produce(kafka, dlt_topic, [b"dead"])
    config = tmp_path / "client.properties"
    config.write_text("# a comment\nsecurity.protocol=PLAINTEXT\nclient.id=redrive-dlt-test\n")
    assert cli.main(["dlt", "ls", dlt_topic, "--bootstrap-servers", kafka,
                     "--command-config", str(config), "--json"]) == 0  # fmt: skip
    assert [r["offset"] for r in json.loads(capsys.readouterr().out)] == [0]

    config.write_text("sasl.password hunter2\n")
    assert cli.main(["dlt", "ls", dlt_topic, "--bootstrap-servers", kafka,
                     "--command-config", str(config)]) == 2  # fmt: skip
    err = capsys.readouterr().err
    assert f"invalid setting '--command-config': {config}:1: expected key=value" in err
    assert "hunter2" not in err


def test_d4_copies_of_one_origin_record_are_listed_as_copies_and_replayed_once(
    kafka, make_topic, capsys
) -> None:
    """A consumer killed between a dead-letter write and its commit makes the next owner
    write the dead letter again (without transactions): two dead letters, one origin."""
    from redrive import headers as h

    topic = make_topic()
    dlt_topic = make_topic("dlt")

    def dead(offset: int, value: str) -> tuple[str, bytes, list[tuple[str, bytes]]]:
        headers = h.dead_letter_headers(
            topic=topic, partition=0, offset=offset, timestamp=1_700_000_000_000,
            timestamp_type=1, group_id="g", exc=Broken(value), attempts=1,
            first_failure=time.time(),
        )  # fmt: skip
        return (dlt_topic, value.encode(), headers)

    for _, value, headers in (dead(5, "x"), dead(5, "x"), dead(7, "y")):
        admin.produce(kafka, dlt_topic, [value], partition=0, headers=headers)
    listed = json.loads(_cli(capsys, kafka, "ls", dlt_topic, "--json"))
    assert [d["copy_of"] for d in listed] == [None, "0:0", None]
    table = _cli(capsys, kafka, "ls", dlt_topic)
    assert "(copy of 0:0)" in table and "1 of them copies of an earlier one" in table

    out = _cli(capsys, kafka, "replay", dlt_topic)
    assert "selected 3, sent 2, already replayed 0, copies of a record replayed once 1" in out
    assert sorted(m.value() for m in admin.read_all(kafka, topic)) == [b"x", b"y"]
    again = json.loads(_cli(capsys, kafka, "replay", dlt_topic, "--json"))
    assert (again["sent"], again["already_replayed"], again["copies"]) == (0, 2, 1)
