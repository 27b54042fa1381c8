"""Mixed Spring Kafka / redrive fleets against the real Spring Kafka (D2, D4, R4).

The Spring side is ``interop/spring``, a plain Java program on spring-kafka 4.1.2 and
kafka-clients 4.2.2, built with Maven once and cached outside the repository (see
``spring.py``). It writes records the way Spring does (a ``DeadLetterPublishingRecoverer``
behind a ``DefaultErrorHandler``; a retry-topic chain from ``RetryTopicConfigurationBuilder``,
every hop and its dead letter) and reads records the way a Spring listener does (``@Header``
conversions, ``KafkaMessageHeaderAccessor``, the chain's own attempt counting)."""

from __future__ import annotations

import json
import threading
import time
from pathlib import Path

import pytest

from redrive import App, BackOff, DeadLetter, Message, Retry, RetryTopics, admin, cli
from redrive import headers as h
from redrive.dlt.records import read

from . import spring
from .helpers import FAST, running, wait_for

pytestmark = pytest.mark.integration

ISE = "java.lang.IllegalStateException"
LEFE = "org.springframework.kafka.listener.ListenerExecutionFailedException"


class NotReady(Exception):
    """A retryable failure (raised from a TimeoutError)."""


NOT_READY = f"{__name__}.NotReady"


def not_ready(msg: Message) -> NotReady:
    err = NotReady(f"order {msg.value} not ready")
    err.__cause__ = TimeoutError("inventory timed out")
    return err


def bad_value(msg: Message) -> ValueError:
    """Issue 12's case: a ValueError raised from a KeyError."""
    try:
        {}[msg.value]
    except KeyError as exc:
        err = ValueError(f"order {msg.value} is invalid")
        err.__cause__ = exc
        return err
    raise AssertionError("unreachable")


@pytest.fixture(scope="module")
def spring_app() -> Path:
    reason = spring.missing_tools()
    if reason:
        pytest.skip(f"Spring interop needs Java and Maven: {reason}")
    log: list[str] = []
    jar = spring.build(log)
    print(*log)
    return jar


def _cli(capsys: pytest.CaptureFixture[str], kafka: str, *args: str) -> str:
    capsys.readouterr()
    assert cli.main(["dlt", *args, "--bootstrap-servers", kafka]) == 0
    return capsys.readouterr().out


def _topics(kafka: str, *names: str) -> None:
    admin.create_topics(kafka, {n: 1 for n in names})


def test_d2_spring_classic_dead_letter_is_read_by_redrive(
    kafka, make_topic, names, spring_app, capsys
) -> None:
    topic = make_topic("orders")
    _topics(kafka, f"{topic}-dlt")
    out = spring.run(spring_app, "dead-letter", bootstrap=kafka, topic=topic,
                     group=names.group(), key="k", value="42")  # fmt: skip
    produced = next(e for e in out if e["event"] == "produced")
    (d,) = read(kafka, f"{topic}-dlt")
    s = d.summary()
    assert s["origin"] == {
        "topic": topic, "partition": 0, "offset": produced["offset"],
        "time": s["origin"]["time"],
    }  # fmt: skip
    assert d.origin_timestamp == produced["timestamp"]
    assert (s["exception"], s["message"]) == (ISE, "order 42 is broken")
    assert (s["cause"], s["cause_message"]) == ("java.io.IOException", "disk on fire")
    assert s["consumer_group"] == "classic"  # the Spring listener's id is its group
    listed = json.loads(_cli(capsys, kafka, "ls", f"{topic}-dlt", "--json",
                             "--exception", "IOException"))  # fmt: skip
    assert [r["offset"] for r in listed] == [0]


def test_d2_spring_retry_chain_is_read_by_redrive(
    kafka, make_topic, names, spring_app, capsys
) -> None:
    topic = make_topic("orders")
    hops = [f"{topic}-retry-0", f"{topic}-retry-1"]
    _topics(kafka, *hops, f"{topic}-dlt")
    out = spring.run(spring_app, "chain", bootstrap=kafka, topic=topic, group=names.group(),
                     key="k", value="43", delays="300,600", until=f"{topic}-dlt")  # fmt: skip
    produced = next(e for e in out if e["event"] == "produced")
    calls = [e for e in out if e["event"] == "call"]
    assert [c["topic"] for c in calls] == [topic, *hops]
    records = [read(kafka, t)[0] for t in [*hops, f"{topic}-dlt"]]
    for d, attempts in zip(records, (1, 2, 3), strict=True):
        assert (d.origin_topic, d.origin_partition, d.origin_offset) == (topic, 0, 0)
        assert d.origin_timestamp == produced["timestamp"]
        assert (d.exception, d.message) == (ISE, "order 43 is broken")
        assert d.cause == "java.io.IOException" and d.failure.cause_message == "disk on fire"
        assert d.attempts == attempts  # attempts made; Spring's header is the next number
        assert d.decoded[h.RETRY_ATTEMPTS] == attempts + 1
        assert d.decoded[h.EXCEPTION_FQCN] == LEFE
    # each hop is due after its delay, counted from the failure that sent it there
    for d, call, delay in zip(records[:2], calls[:2], (300, 600), strict=True):
        assert d.due is not None and call["at"] + delay - 50 <= d.due <= call["at"] + delay + 500
    msg = Message(hops[0], 0, 0, headers=records[0].headers)
    assert (h.attempts_of(msg), h.due_ms(msg)) == (2, records[0].due)
    assert h.origin_of(msg) == h.Origin(topic, 0, 0, produced["timestamp"], 1)

    # redrive dlt: the origin, the exception and a replay target, where it saw none before
    (listed,) = json.loads(_cli(capsys, kafka, "ls", f"{topic}-dlt", "--json"))
    assert listed["origin"]["topic"] == topic and listed["exception"] == ISE
    assert listed["attempts"] == 3
    found = json.loads(_cli(capsys, kafka, "ls", f"{topic}-dlt", "--json",
                            "--exception", "IllegalStateException"))  # fmt: skip
    assert len(found) == 1
    dry = json.loads(_cli(capsys, kafka, "replay", f"{topic}-dlt", "--dry-run", "--json"))
    assert (dry["would_send"], dry["no_origin"]) == (1, 0)


def test_r4_a_redrive_retry_consumer_takes_over_a_spring_hop(
    kafka, make_topic, names, spring_app
) -> None:
    """Spring puts the record on orders-retry-0 (due in 3 s) and stops; redrive's retry
    consumer hands it over no earlier than due, as attempt 2, and its next hop is read by
    Spring with Spring's origin and attempt 3."""
    topic = make_topic("orders")
    hops = [f"{topic}-retry-0", f"{topic}-retry-1"]
    _topics(kafka, *hops, f"{topic}-dlt")
    out = spring.run(spring_app, "chain", bootstrap=kafka, topic=topic, group=names.group("s"),
                     key="k", value="44", delays="3000,1000", until=hops[0],
                     fail_retries="false")  # fmt: skip
    produced = next(e for e in out if e["event"] == "produced")
    (spring_hop,) = admin.read_all(kafka, hops[0])
    due = h.due_ms(Message(hops[0], 0, 0, headers=tuple(spring_hop.headers() or ())))
    assert due is not None

    app = App(kafka, names.group("r"), kafka=FAST)
    calls: list[tuple[str, int, float]] = []
    lock = threading.Lock()

    @app.listener(topic, value_deserializer="str", retry_topics=RetryTopics((3.0, 1.0)))
    def handle(msg: Message) -> None:
        with lock:
            calls.append((msg.topic, msg.attempt, time.time() * 1000))
        if msg.topic != topic:  # the main topic's copy was Spring's to fail, not ours
            raise not_ready(msg)

    with running(app):
        wait_for(lambda: admin.end_offsets(kafka, hops[1]) == {0: 1}, timeout=60,
                 what="redrive's hop to retry-1")  # fmt: skip
    on_retry = [(t, a, at) for t, a, at in calls if t == hops[0]]
    assert len(on_retry) == 1
    _, attempt, at = on_retry[0]
    assert attempt == 2 and at >= due
    (ours,) = read(kafka, hops[1])
    assert (ours.origin_topic, ours.origin_offset) == (topic, produced["offset"])
    assert ours.origin_timestamp == produced["timestamp"]
    assert ours.decoded[h.RETRY_ORIGINAL_TIMESTAMP] == produced["timestamp"]
    assert (ours.exception, ours.cause, ours.attempts) == (NOT_READY, "TimeoutError", 2)

    (seen,) = spring.run(spring_app, "read", bootstrap=kafka, topics=hops[1], count=1)
    assert (seen["original_topic"], seen["original_partition"], seen["original_offset"]) == (
        topic, 0, produced["offset"]
    )  # fmt: skip
    assert seen["attempts_accessor"] == seen["attempts_chain"] == 3
    assert seen["exception_fqcn"] == NOT_READY


def test_d2_spring_reads_redrive_dead_letters_and_retry_hops(
    kafka, make_topic, names, spring_app
) -> None:
    classic, chained, far = make_topic("classic"), make_topic("chained"), make_topic("far")
    hops = [f"{chained}-retry-0", f"{chained}-retry-1"]
    _topics(kafka, f"{classic}-dlt", *hops, f"{chained}-dlt")
    admin.produce(kafka, classic, ["a"])
    admin.produce(kafka, chained, ["b"])
    # a hop as redrive writes it at attempt 200 (one byte would not do from 128 on)
    hop_200 = h.dead_letter_headers(
        topic=chained, partition=0, offset=0, timestamp=1_700_000_000_000, timestamp_type=1,
        group_id="g", exc=NotReady("late"), attempts=199, first_failure=1_700_000_000.0,
        original=h.retry_headers(next_attempt=200, original_timestamp=1_700_000_000_000,
                                 due_ms=1_700_000_100_000),
        family=h.CHAIN,
    )  # fmt: skip
    admin.produce(kafka, far, [(b"k", b"c")], headers=hop_200)

    app = App(kafka, names.group(), kafka=FAST)

    @app.listener(classic, value_deserializer="str", recoverer=DeadLetter(),
                  retry=Retry(backoff=BackOff.none()))  # fmt: skip
    def fail_classic(msg: Message) -> None:
        raise bad_value(msg)

    @app.listener(chained, value_deserializer="str", retry_topics=RetryTopics((0.2, 0.4)))
    def fail_chained(msg: Message) -> None:
        raise not_ready(msg)

    with running(app):
        wait_for(
            lambda: admin.end_offsets(kafka, f"{classic}-dlt") == {0: 1}
            and admin.end_offsets(kafka, f"{chained}-dlt") == {0: 1},
            timeout=60, what="both dead letters",
        )  # fmt: skip

    # redrive's own reading: the listener's exception with its own message, the root cause
    (d,) = read(kafka, f"{classic}-dlt")
    assert (d.exception, d.message) == ("ValueError", "order a is invalid")
    assert (d.cause, d.failure.cause_message) == ("KeyError", "'a'")

    topics = [f"{classic}-dlt", *hops, f"{chained}-dlt", far]
    seen = spring.run(spring_app, "read", bootstrap=kafka, topics=",".join(topics),
                      count=len(topics))  # fmt: skip
    by_topic = {s["topic"]: s for s in seen}
    assert all("error" not in s for s in seen), seen
    dlt = by_topic[f"{classic}-dlt"]
    assert (dlt["dlt_original_topic"], dlt["dlt_original_partition"],
            dlt["dlt_original_offset"]) == (classic, 0, 0)  # fmt: skip
    assert (dlt["dlt_exception_fqcn"], dlt["dlt_exception_cause_fqcn"]) == (
        "ValueError", "ValueError"
    )  # fmt: skip
    assert dlt["dlt_exception_message"] == "order a is invalid"
    assert dlt["original_topic"] is None and dlt["exception_fqcn"] is None
    redrive_due = {t: read(kafka, t)[0].due for t in hops}
    for t, next_attempt in ((hops[0], 2), (hops[1], 3), (f"{chained}-dlt", 4)):
        s = by_topic[t]
        assert (s["original_topic"], s["original_partition"], s["original_offset"]) == (
            chained, 0, 0
        )  # fmt: skip
        assert (s["exception_fqcn"], s["exception_message"]) == (NOT_READY, "order b not ready")
        assert s["original_consumer_group"] == names.group()
        assert s["attempts_accessor"] == s["attempts_chain"] == next_attempt
        assert s["dlt_original_topic"] is None and s["dlt_exception_fqcn"] is None
        if t in redrive_due:
            assert s["backoff_timestamp"] == redrive_due[t]
    assert by_topic[far]["attempts_bytes"] == "000000c8"
    assert by_topic[far]["attempts_accessor"] == by_topic[far]["attempts_chain"] == 200
    assert by_topic[far]["backoff_timestamp"] == 1_700_000_100_000
