"""The one module that calls confluent-kafka's share consumer (preview API, KIP-932).

confluent-kafka marks ``ShareConsumer`` as a preview: its names and behaviour may change
between releases. Everything redrive uses of it is here, so a change touches this file
only: ``ShareClient`` (subscribe, poll, acknowledge, commit, close), the delivery count of
a record, and the mapping of its errors to redrive's. ``TESTED_WITH`` names the versions
the integration tests ran against; ``check_version()`` says so in the start-up log when
another version is installed.

The client runs in *explicit* acknowledgement mode: every record of a poll gets exactly one
``acknowledge`` (accept, release or reject) before the next poll, and ``commit`` sends them
and waits for the broker's answer per partition.
"""

from __future__ import annotations

import logging
from collections.abc import Mapping, Sequence
from typing import Any, Literal

import confluent_kafka
from confluent_kafka import KafkaError, KafkaException

from redrive.consumer.client import RawRecord, make_client
from redrive.errors import ClientError, ShareGroupsUnavailable
from redrive.message import TopicPartition

log = logging.getLogger("redrive.share")

Outcome = Literal["accept", "release", "reject"]
"""What the broker is told about one delivered record."""

TESTED_WITH = {"confluent-kafka": "2.16.1", "librdkafka": "2.16.0", "Apache Kafka": "4.3.1"}
"""The versions the share-group integration tests ran against (pinned in pyproject)."""

# Settings the share consumer refuses or that redrive owns (explicit acknowledgements).
RESERVED = {
    "share.acknowledgement.mode": "redrive acknowledges every record itself (explicit mode)",
    "enable.auto.commit": "not applicable to a share consumer",
    "auto.offset.reset": "a share group's start is a group setting: pass "
    "share_group=ShareGroup(auto_offset_reset=...)",
    "group.protocol": "a share consumer always speaks the share-group protocol",
}

_ACK_TYPE = {
    "accept": confluent_kafka.AcknowledgeType.ACCEPT,
    "release": confluent_kafka.AcknowledgeType.RELEASE,
    "reject": confluent_kafka.AcknowledgeType.REJECT,
}

_TRANSIENT = {
    KafkaError._TIMED_OUT,
    KafkaError._TRANSPORT,
    KafkaError._ALL_BROKERS_DOWN,
    KafkaError.REQUEST_TIMED_OUT,
    KafkaError.NOT_COORDINATOR,
    KafkaError.COORDINATOR_NOT_AVAILABLE,
    KafkaError.COORDINATOR_LOAD_IN_PROGRESS,
}

_UNAVAILABLE = {KafkaError.UNSUPPORTED_VERSION, KafkaError._UNSUPPORTED_FEATURE}


def check_version() -> None:
    """Log a warning when the installed client is not the one the tests ran against."""
    got = installed_versions()
    want = (TESTED_WITH["confluent-kafka"], TESTED_WITH["librdkafka"])
    if got != want:
        log.warning(
            "share listeners were tested with confluent-kafka %s (librdkafka %s); this is "
            "%s (librdkafka %s), and its share consumer is a preview API that may differ",
            *want, *got,
        )  # fmt: skip


def installed_versions() -> tuple[str, str]:
    """(confluent-kafka, librdkafka) as installed."""
    version: Any = confluent_kafka.version()  # a str, or (str, int) in older releases
    return (version if isinstance(version, str) else version[0], confluent_kafka.libversion()[0])


def delivery_count(record: RawRecord) -> int:
    """How many times the broker has delivered `record` (1 the first time). Raises
    ``ClientError`` when the client gives none: the delivery limit could not be applied."""
    count = record.delivery_count()  # type: ignore[attr-defined]
    if isinstance(count, int) and not isinstance(count, bool) and count >= 1:
        return count
    kafka, librdkafka = installed_versions()
    raise ClientError(
        f"the share consumer gave no delivery count for {record.topic()}[{record.partition()}]"
        f"@{record.offset()} (got {count!r}) with confluent-kafka {kafka} (librdkafka "
        f"{librdkafka}); share listeners were tested with confluent-kafka "
        f"{TESTED_WITH['confluent-kafka']} (librdkafka {TESTED_WITH['librdkafka']}): install "
        "that version"
    )


class ShareClient:
    """One member of a share group, over confluent-kafka's ``ShareConsumer``."""

    def __init__(self, config: Mapping[str, Any]) -> None:
        settings = {**config, "share.acknowledgement.mode": "explicit"}
        self._consumer = make_client(confluent_kafka.ShareConsumer, settings)
        self.servers = str(config.get("bootstrap.servers"))

    def subscribe(self, topics: Sequence[str]) -> None:
        self._consumer.subscribe(list(topics))

    def poll(self, timeout: float) -> list[RawRecord]:
        """The records this member acquired (up to ``max.poll.records``), possibly none.
        Raises ``ShareGroupsUnavailable`` when the broker has no share groups."""
        try:
            records: list[Any] = list(self._consumer.poll(timeout))
        except KafkaException as exc:
            raise self._error(exc) from None
        kept = []
        for r in records:
            err = r.error()
            if err is None:
                kept.append(r)
            elif err.fatal() or err.code() in _UNAVAILABLE:
                raise self._error(KafkaException(err))
            else:
                log.warning("Kafka share consumer reported: %s (%s)", err.str(), r.topic())
        return kept

    def acknowledge(self, record: Any, outcome: Outcome) -> None:
        """Record how the broker should treat `record`; sent by the next ``commit``."""
        try:
            self._consumer.acknowledge(record, _ACK_TYPE[outcome])
        except (KafkaException, confluent_kafka.IllegalStateException) as exc:
            raise ClientError(
                f"acknowledging {record.topic()}[{record.partition()}]@{record.offset()} "
                f"({outcome}) failed: {exc}"
            ) from None

    def commit(self, timeout: float = 30.0) -> dict[TopicPartition, str | None] | None:
        """Send the acknowledgements and wait: per partition, None or the broker's error
        (for example an acquisition lock that expired before the acknowledgement). None
        when a transient error (logged) kept them from the broker: the records come back
        to the group when their locks expire. Other errors raise ``ClientError``."""
        try:
            result = self._consumer.commit_sync(timeout)
        except KafkaException as exc:
            err = exc.args[0] if exc.args else None
            if (
                isinstance(err, KafkaError)
                and not err.fatal()
                and (err.retriable() or err.code() in _TRANSIENT)
            ):
                log.warning("sending the acknowledgements failed (%s): their records come "
                            "back to the group when their locks expire", _text(exc))  # fmt: skip
                return None
            raise self._error(exc) from None
        return {
            TopicPartition(tp.topic, tp.partition): None if err is None else _text(err)
            for tp, err in (result or {}).items()
        }

    def close(self) -> None:
        """Send what is acknowledged and leave the group; unacknowledged records return to
        the group when this member leaves (or when their locks expire)."""
        try:
            self._consumer.close()
        except KafkaException as exc:
            log.warning("closing the share consumer: %s", _text(exc))

    def _error(self, exc: KafkaException) -> Exception:
        err = exc.args[0] if exc.args else None
        code = err.code() if isinstance(err, KafkaError) else None
        if code in _UNAVAILABLE:
            return ShareGroupsUnavailable(self.servers, _text(exc))
        return ClientError(f"share consumer: {_text(exc)}")


def _text(exc: BaseException | KafkaError) -> str:
    err = exc.args[0] if isinstance(exc, BaseException) and exc.args else exc
    return err.str() if isinstance(err, KafkaError) else str(err)
