"""`redrive dlt` reads every header through the codec, interruptions included (no broker)."""

from __future__ import annotations

import io

from redrive import headers as h
from redrive.dlt import DeadLetterRecord, decode_headers
from redrive.dlt.cli import _table
from redrive.dlt.records import copies


def record(interruptions: int) -> DeadLetterRecord:
    raw = tuple(
        h.dead_letter_headers(
            topic="orders", partition=1, offset=4, timestamp=1_700_000_000_000, timestamp_type=1,
            group_id="billing", exc=ConnectionError("down"), attempts=3,
            first_failure=1_700_000_000.0, interruptions=interruptions,
        )
    )  # fmt: skip
    return DeadLetterRecord("orders-dlt", 0, 9, 1_700_000_001_000, b"k", b"v", raw,
                            decode_headers(raw))  # fmt: skip


def test_summary_names_origin_attempts_and_interruptions() -> None:
    s = record(2).summary()
    assert s["origin"]["topic"] == "orders" and s["origin"]["offset"] == 4
    assert (s["attempts"], s["interruptions"]) == (3, 2)
    assert s["exception"] == "ConnectionError" and s["consumer_group"] == "billing"
    assert record(0).summary()["interruptions"] == 0
    assert record(2).full()["headers"][h.REDRIVE_INTERRUPTIONS] == 2


def test_the_table_shows_interruptions_only_when_there_were_some() -> None:
    out = io.StringIO()
    _table([record(2), record(0)], out)
    rows = out.getvalue().splitlines()
    assert "3 (2 interrupted)" in rows[1]
    assert "interrupted" not in rows[2]


def chain_letter() -> DeadLetterRecord:
    """The dead letter at the end of a retry-topic chain, in Spring's retry-topic family."""
    exc = ValueError("bad")
    exc.__cause__ = KeyError("sku")
    raw = tuple(
        h.dead_letter_headers(
            topic="orders", partition=1, offset=4, timestamp=1_700_000_000_000, timestamp_type=1,
            group_id="billing", exc=exc, attempts=3, first_failure=1_700_000_000.0,
            original=[("trace", b"t"),
                      *h.retry_headers(next_attempt=4, original_timestamp=1, due_ms=None)],
            family=h.CHAIN,
        )
    )  # fmt: skip
    return DeadLetterRecord("orders-dlt", 0, 9, 1_700_000_001_000, b"k", b"v", raw,
                            decode_headers(raw))  # fmt: skip


def test_a_chain_dead_letter_names_origin_exception_and_root_cause() -> None:
    s = chain_letter().summary()
    assert (s["origin"]["topic"], s["origin"]["partition"], s["origin"]["offset"]) == (
        "orders", 1, 4
    )  # fmt: skip
    assert (s["exception"], s["message"], s["cause"], s["cause_message"]) == (
        "ValueError", "bad", "KeyError", "'sku'"
    )  # fmt: skip
    assert chain_letter().exception_matches("KeyError")
    assert chain_letter().exception_matches("ValueError")


def test_a_replayed_record_starts_clean_of_both_families() -> None:
    from redrive.dlt.replay import _headers

    letter = chain_letter()
    to_origin = [k for k, _ in _headers(letter, "origin")]
    assert to_origin == ["trace", h.REPLAY_OF]
    to_retry = dict(_headers(letter, "retry"))
    assert h.DLT_ORIGINAL_TOPIC not in to_retry and h.EXCEPTION_FQCN not in to_retry
    assert to_retry[h.ORIGINAL_TOPIC] == b"orders" and to_retry[h.ORIGINAL_OFFSET] == h.int64(4)
    assert to_retry[h.RETRY_ATTEMPTS] == h.int32(2)


def dead(offset: int, group: str, origin_offset: int = 7) -> DeadLetterRecord:
    decoded = {
        h.DLT_ORIGINAL_TOPIC: "orders",
        h.DLT_ORIGINAL_PARTITION: 0,
        h.DLT_ORIGINAL_OFFSET: origin_offset,
        h.DLT_ORIGINAL_CONSUMER_GROUP: group,
    }
    return DeadLetterRecord("orders-dlt", 0, offset, 1000 + offset, None, b"x", [], decoded)


def test_dead_letters_of_one_record_by_one_group_are_copies_by_two_groups_are_not() -> None:
    records = [dead(0, "billing"), dead(1, "shipping"), dead(2, "billing"), dead(3, "billing", 8)]
    assert copies(records) == {"0:2": "0:0"}
