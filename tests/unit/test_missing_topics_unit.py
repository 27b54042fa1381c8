"""Which topics a listener needs at start, and what is done when one is missing (issue 11)."""

from __future__ import annotations

from redrive import CircuitBreaker, DeadLetter, RetryTopics, Skip
from redrive.recover.breaker import default_recoverer
from redrive.topics import ChainRecoverer
from redrive.topics.create import create_command, wanted_topics


def _plan(wanted: tuple) -> list[tuple[str, str, str | None]]:
    return [(w.topic, w.missing, w.like) for w in wanted]


def test_the_default_recoverer_wants_the_dead_letter_topic_created_like_its_source() -> None:
    assert _plan(wanted_topics(("orders",), default_recoverer(), "wait")) == [
        ("orders", "wait", None),
        ("orders-dlt", "create", "orders"),
    ]


def test_a_fixed_dead_letter_topic_is_wanted_once_per_source() -> None:
    recoverer = CircuitBreaker(DeadLetter(topic="parked", auto_create=False))
    assert _plan(wanted_topics(("a", "b"), recoverer, "fail")) == [
        ("a", "fail", None),
        ("b", "fail", None),
        ("parked", "fail", "a"),
        ("parked", "fail", "b"),
    ]


def test_a_dead_letter_function_and_other_recoverers_want_only_the_sources() -> None:
    by_record = DeadLetter(topic=lambda msg: f"{msg.topic}-{msg.partition}")
    assert by_record.topic_for("orders") is None
    assert _plan(wanted_topics(("orders",), by_record, "create")) == [("orders", "create", None)]
    assert _plan(wanted_topics(("orders",), Skip(), "wait")) == [("orders", "wait", None)]


def test_a_retry_chain_wants_its_topics_and_its_consumer_nothing_more() -> None:
    chain = RetryTopics((1.0, 5.0), auto_create=False)
    main = ChainRecoverer(chain, ("orders",), "g")
    assert _plan(wanted_topics(("orders",), main, "wait")) == [
        ("orders", "wait", None),
        ("orders-retry-0", "fail", "orders"),
        ("orders-retry-1", "fail", "orders"),
        ("orders-dlt", "fail", "orders"),
    ]
    assert wanted_topics(("orders-retry-0", "orders-retry-1"), main, "wait") == ()


def test_the_create_command_says_n_when_the_count_is_yours() -> None:
    assert create_command("orders-dlt", 3) == "redrive topics create orders-dlt --partitions 3"
    assert create_command("orders", None) == "redrive topics create orders --partitions N"
