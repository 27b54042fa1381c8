"""`redrive dlt` reads every header through the codec, interruptions included (no broker)."""

from __future__ import annotations

import io

from redrive import headers as h
from redrive.dlt import DeadLetterRecord, decode_headers
from redrive.dlt.cli import _table


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
