"""One real Kafka broker per test session; unique topics and groups per test."""

from __future__ import annotations

import os
import uuid
from collections.abc import Iterator

import pytest

from redrive import admin
from redrive.broker import LocalKafka


@pytest.fixture(scope="session")
def kafka() -> Iterator[str]:
    """The bootstrap address of the session's broker (REDRIVE_BOOTSTRAP_SERVERS, or local)."""
    external = os.environ.get("REDRIVE_BOOTSTRAP_SERVERS")
    if external:
        yield external
        return
    with LocalKafka() as broker:
        yield broker.bootstrap_servers


@pytest.fixture
def names(request: pytest.FixtureRequest) -> Names:
    return Names(request.node.name)


class Names:
    """Unique topic and group names for one test."""

    def __init__(self, test_name: str) -> None:
        self.stem = "".join(c if c.isalnum() else "-" for c in test_name)[:60].strip("-")
        self.suffix = uuid.uuid4().hex[:8]

    def topic(self, label: str = "t") -> str:
        return f"{self.stem}-{label}-{self.suffix}"

    def group(self, label: str = "g") -> str:
        return f"{self.stem}-{label}-{self.suffix}"


@pytest.fixture
def make_topic(kafka: str, names: Names) -> Topics:
    return Topics(kafka, names)


class Topics:
    def __init__(self, kafka: str, names: Names) -> None:
        self.kafka = kafka
        self.names = names

    def __call__(self, label: str = "t", partitions: int = 1) -> str:
        name = self.names.topic(label)
        admin.create_topics(self.kafka, {name: partitions})
        return name
