"""Retry-topic chain naming, validation and header encodings (no broker)."""

from __future__ import annotations

import struct

import pytest

from redrive import ConfigError, RetryTopics
from redrive import headers as h


def test_one_topic_per_delay_or_one_reused_topic() -> None:
    chain = RetryTopics((1, 5, 30))
    assert chain.retry_topics("orders") == ("orders-retry-0", "orders-retry-1", "orders-retry-2")
    assert chain.dlt("orders") == "orders-dlt"
    assert RetryTopics.fixed(2.0, attempts=3).retry_topics("orders") == ("orders-retry",)
    assert RetryTopics.exponential(1, max_delay=4, attempts=4).delays == (1, 2, 4, 4)


@pytest.mark.parametrize(
    "make",
    [
        lambda: RetryTopics(()),
        lambda: RetryTopics((1, -1)),
        lambda: RetryTopics((1,), max_total=0),
        lambda: RetryTopics.fixed(1, attempts=0),
    ],
)
def test_invalid_chains_name_the_setting(make) -> None:
    with pytest.raises(ConfigError, match="retry_topics"):
        make()


@pytest.mark.parametrize(
    ("n", "java"),
    [(0, b"\x00"), (2, b"\x02"), (127, b"\x7f"), (128, b"\x00\x80"),
     (1_700_000_000_123, bytes.fromhex("018bcfe5687b"))],
)  # fmt: skip
def test_big_integer_encoding_matches_java(n: int, java: bytes) -> None:
    assert h.big_int(n) == java
    assert h.from_big_int(java) == n


def test_attempts_as_four_byte_int_decode_too() -> None:
    assert h.decode([(h.RETRY_ATTEMPTS, struct.pack(">i", 3))]) == {h.RETRY_ATTEMPTS: 3}
