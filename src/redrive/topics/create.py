"""Creating the retry and dead-letter topics of a listener's chain at start-up."""

from __future__ import annotations

import logging
from collections.abc import Sequence
from typing import Any

from confluent_kafka import KafkaException
from confluent_kafka.admin import AdminClient, NewTopic  # type: ignore[attr-defined]

from redrive.admin import wait_for_leaders
from redrive.errors import ConfigError
from redrive.observe.logs import kafka_logging
from redrive.publish import producer_settings
from redrive.topics.chain import RetryTopics

log = logging.getLogger("redrive.topics")


def ensure_topics(
    settings: dict[str, Any], chain: RetryTopics, sources: Sequence[str], timeout: float = 30.0
) -> None:
    """Make sure every retry topic and dead-letter topic of `sources` exists.

    Missing ones are created with the source topic's partition count when
    ``chain.auto_create``; otherwise, or when the broker refuses, raise ``ConfigError``
    naming the missing topics.
    """
    admin = AdminClient(kafka_logging(producer_settings(settings)))
    try:
        md = admin.list_topics(timeout=timeout)
    except KafkaException as exc:
        raise ConfigError("retry_topics", f"cannot list topics: {exc.args[0]}") from None

    def exists(name: str) -> bool:
        t = md.topics.get(name)
        return t is not None and t.error is None

    wanted: dict[str, int] = {}
    for source in sources:
        if not exists(source):
            continue  # the source topic itself is the user's business (auto-creation, later)
        n = len(md.topics[source].partitions)
        for name in (*chain.retry_topics(source), chain.dlt(source)):
            if not exists(name):
                wanted[name] = n
    if not wanted:
        return
    missing = ", ".join(sorted(wanted))
    if not chain.auto_create:
        raise ConfigError(
            "retry_topics",
            f"missing topics: {missing}. Create them (with the source topic's partition "
            "count) or pass RetryTopics(auto_create=True)",
        )
    futures = admin.create_topics(
        [NewTopic(t, num_partitions=n, replication_factor=-1) for t, n in wanted.items()],
        operation_timeout=timeout,
    )
    refused = []
    for name, fut in futures.items():
        try:
            fut.result(timeout)
        except KafkaException as exc:
            if exc.args[0].name() != "TOPIC_ALREADY_EXISTS":
                refused.append(f"{name} ({exc.args[0].str()})")
    if refused:
        raise ConfigError(
            "retry_topics",
            f"missing topics could not be created: {', '.join(refused)}. Create them (with the "
            "source topic's partition count) and start again",
        )
    wait_for_leaders(admin, wanted, timeout)
    log.info("created retry/dead-letter topics: %s", missing)
