"""Reading output topics of transactional listeners in tests, as ``read_committed`` and
``read_uncommitted`` readers see them (``redrive.admin.read_as``)."""

from __future__ import annotations

from typing import Any

from redrive import admin
from redrive.admin import Isolation


def read(kafka: str, topic: str, isolation: Isolation = "read_committed") -> list[Any]:
    """Every record of `topic` a reader with `isolation` sees now, partition by partition."""
    return admin.read_as(kafka, topic, isolation)


def values(records: list[Any]) -> list[bytes]:
    return [r.value() for r in records]
