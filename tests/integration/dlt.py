"""Reading dead-letter topics in tests."""

from __future__ import annotations

from typing import Any

from redrive import admin
from redrive.headers import decode


def dead_letters(kafka: str, topic: str) -> list[Any]:
    """Every record in `topic` (a dead-letter topic), partition by partition."""
    if admin.topic_partitions(kafka, topic) is None:
        return []
    return admin.read_all(kafka, topic)


def header_values(record: Any) -> dict[str, Any]:
    return decode(record.headers() or [])


def raw_headers(record: Any) -> list[tuple[str, bytes]]:
    return list(record.headers() or [])
