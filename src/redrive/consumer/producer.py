"""The producer of a listener's outputs, and its confluent-kafka adapter.

One producer per consumer (KIP-447): with transactions, the consumer's positions are sent
to the producer's transaction with the consumer's group metadata, so the group coordinator
refuses a commit from a consumer that lost its partitions (a zombie), whatever the
producer's ``transactional.id``. librdkafka's transactional errors are mapped here, once:
fatal ones (fenced, unsupported) to ``ProducerFenced``, the others to
``TransactionAborted`` (abort, rewind, handle again).
"""

from __future__ import annotations

import logging
import threading
import time
from collections.abc import Callable, Mapping
from typing import Any, Protocol

from confluent_kafka import KafkaError, KafkaException, Producer
from confluent_kafka import TopicPartition as KTopicPartition

from redrive.consumer.client import Positions
from redrive.errors import CommitFailed, ProducerFenced, RecoveryFailed, TransactionAborted
from redrive.observe.logs import kafka_logging
from redrive.outputs import Output, encoded
from redrive.publish import (
    PRODUCER_DEFAULTS,
    Delivery,
    Header,
    Publisher,
    produce,
    producer_settings,
)

log = logging.getLogger("redrive.producer")

_FENCED = {KafkaError._FENCED, KafkaError.PRODUCER_FENCED, KafkaError.INVALID_PRODUCER_EPOCH}


class OutputProducer(Protocol):
    """Where a listener's outputs go: ``ConfluentClient.outputs()`` makes the real one,
    ``FakeClient.outputs()`` an in-memory one."""

    transactional: bool
    """True: outputs and positions commit in one transaction (``commit``)."""
    publisher: Publisher
    """Writes of recoverers (dead letters, retry hops), in the open transaction."""

    @property
    def pending(self) -> bool:
        """Something was written since the last ``commit`` or ``abort``."""

    def start(self) -> None:
        """Connect now. Transactional: register the transactional id with the coordinator,
        which fences an older producer with the same id and aborts its open transaction."""

    def send(self, output: Output) -> None:
        """Write `output` (in the open transaction, beginning one if none is open)."""

    def commit(self, positions: Positions) -> None:
        """Transactional: send `positions` to the open transaction (beginning one if none is
        open) and commit it. Otherwise: wait until the broker confirmed every write (the
        caller commits the positions). Raises ``TransactionAborted`` (the transaction is to
        be aborted) or ``CommitFailed`` (a write failed), ``ProducerFenced`` when fatal."""

    def abort(self) -> None:
        """Abort the open transaction (no-op without one, or without transactions)."""

    def close(self) -> None: ...


class KafkaOutputs:
    """``OutputProducer`` over confluent-kafka's Producer (idempotent, ``acks=all``)."""

    def __init__(
        self,
        kafka: Mapping[str, Any],
        transactional_id: str | None,
        group_metadata: Callable[[], object],
        *,
        timeout: float = 30.0,
        factory: Callable[[dict[str, Any]], Producer] = lambda s: Producer(kafka_logging(s)),
    ) -> None:
        self.transactional = transactional_id is not None
        self.transactional_id = transactional_id
        self.timeout = timeout
        self._group_metadata = group_metadata
        self._settings = {**producer_settings(kafka), **PRODUCER_DEFAULTS, "linger.ms": 5}
        if transactional_id is not None:
            # An output that fails fails the transaction's commit: no report per output.
            self._settings["transactional.id"] = transactional_id
        else:  # a report for failed outputs only: a Python call per record costs ~1 us
            self._settings["delivery.report.only.error"] = True
            self._settings["on_delivery"] = self._delivered
        self._factory = factory
        self._producer: Producer | None = None
        self._open = False  # outputs written since the last commit (with transactions: open)
        self._lock = threading.RLock()  # handlers on several threads (concurrency > 1)
        self._failed: list[str] = []  # delivery errors since the last commit or abort
        self._publisher = _InTransaction(self, timeout)
        self.publisher: Publisher = self._publisher

    @property
    def pending(self) -> bool:
        # Without transactions, also what another thread wrote while a commit flushed: the
        # producer counts what it has not had confirmed.
        producer = self._producer
        return self._open or (producer is not None and len(producer) > 0)

    def producer(self) -> Producer:
        """The producer, created (and registered with the transaction coordinator, which
        fences an older producer with the same transactional id) on first use."""
        with self._lock:
            if self._producer is None:
                producer = self._factory(dict(self._settings))
                if self.transactional:
                    self._call(producer.init_transactions, "init")
                self._producer = producer
            return self._producer

    def start(self) -> None:
        self.producer()

    def begin(self) -> Producer:
        with self._lock:
            producer = self.producer()
            if not self._open:
                if self.transactional:
                    self._call(lambda _left: producer.begin_transaction(), "begin")
                self._open = True
            return producer

    def send(self, output: Output) -> None:
        producer = self._producer if self._open else None
        if producer is None:
            producer = self.begin()
        headers = list(output.headers) if output.headers else None
        try:
            produce(producer, output.topic, encoded(output.key), encoded(output.value),
                    headers, output.partition, self.timeout)  # fmt: skip
        except KafkaException as exc:
            self._raise(exc.args[0], f"writing to {output.topic!r}")

    def _delivered(self, err: Any, msg: Any) -> None:
        """Without transactions: the report of an output the broker refused."""
        if err is not None:
            self._failed.append(f"{msg.topic()}: {err.str()}")

    def commit(self, positions: Positions) -> None:
        producer = self.begin()
        if not self.transactional:
            with self._lock:  # what is written from now on waits for the next commit
                self._open = False
            left = producer.flush(self.timeout)
            failed, self._failed = self._failed, []
            if left or failed:
                why = failed[0] if failed else f"{left} not acknowledged in {self.timeout:g} s"
                raise CommitFailed(f"outputs not confirmed by the broker: {why}")
            return
        # Flushed first: librdkafka's own wait for the outputs inside send_offsets and
        # commit_transaction is several times slower (measured: 15k vs 45k records/s). No
        # Python callback is then served inside the calls below (one served inside a call
        # that fails meets its pending exception: SystemError).
        # One deadline for the whole commit (it must end well within max.poll.interval.ms).
        deadline = time.monotonic() + self.timeout
        producer.flush(self.timeout)
        if positions:
            offsets = [
                KTopicPartition(tp.topic, tp.partition, pos, meta)
                if meta is not None
                else KTopicPartition(tp.topic, tp.partition, pos)
                for tp, (pos, meta) in positions.items()
            ]
            metadata = self._group_metadata()
            self._call(
                lambda left: producer.send_offsets_to_transaction(offsets, metadata, left),
                "sending the positions to",
                deadline,
            )
        self._call(producer.commit_transaction, "committing", deadline, sent=True)
        self._open = False
        if self._failed:  # cannot happen: a failed write fails the commit; say so if it does
            log.error("outputs failed in a committed transaction: %s", self._failed)
        self._failed.clear()

    def abort(self) -> None:
        self._publisher.forget()
        self._failed.clear()
        if not self._open or self._producer is None or not self.transactional:
            self._open = False
            return
        producer = self._producer
        self._open = False
        # Flushed first, so that every partition written to is registered with the
        # transaction before it is aborted. librdkafka (2.x) aborting while it still adds
        # one (an output written just before the handler failed, right after the previous
        # commit, when the coordinator answers CONCURRENT_TRANSACTIONS and librdkafka
        # retries) drops that registration and sends EndTxn all the same; the coordinator,
        # its transaction already complete, answers INVALID_TXN_STATE, which librdkafka
        # makes fatal: the listener stopped (found by `redrive chaos --mode exactly-once`).
        # What is flushed is aborted with the rest.
        producer.flush(self.timeout)
        self._call(producer.abort_transaction, "aborting")
        producer.poll(0)  # the delivery reports of the purged outputs: they are gone with it
        self._failed.clear()

    def _call(
        self,
        call: Callable[[float], object],
        what: str,
        deadline: float | None = None,
        *,
        sent: bool = False,
    ) -> None:
        """`call` (given the seconds left), retried on retriable errors until `deadline`
        (default: ``timeout`` from now). ``sent``: a commit the coordinator may be
        completing; one that neither succeeds nor fails within the deadline cannot be
        aborted (librdkafka: retry it), so the listener stops instead."""
        deadline = time.monotonic() + self.timeout if deadline is None else deadline
        while True:
            try:
                call(max(deadline - time.monotonic(), 0.001))
                return
            except KafkaException as exc:
                err = exc.args[0]
                if err.fatal() or err.txn_requires_abort() or not err.retriable():
                    self._raise(err, f"{what} the transaction")
                if time.monotonic() >= deadline:
                    if sent:
                        raise ProducerFenced(
                            f"committing the transaction of {self.transactional_id!r} did "
                            f"not complete within {self.timeout:g} s ({err.str()}): its "
                            "outcome is unknown and it cannot be aborted. This listener "
                            "stops; the next instance with this transactional.id completes "
                            "or aborts it"
                        ) from None
                    self._raise(err, f"{what} the transaction")
                log.info("%s the transaction: %s (retrying)", what, err.str())

    def _raise(self, err: Any, what: str) -> None:
        text = err.str() if hasattr(err, "str") else str(err)
        if err.fatal() or err.code() in _FENCED:
            if err.code() in _FENCED:
                raise ProducerFenced(
                    f"the transactional producer {self.transactional_id!r} was fenced while "
                    f"{what}: another producer with the same transactional.id took over "
                    f"(a second instance, or a newer one of this listener): {text}. This "
                    "listener stops; the instance that fenced it carries on"
                ) from None
            raise ProducerFenced(
                f"fatal transactional producer error while {what}: {text}. Does the broker "
                "support transactions (Kafka >= 2.5 with a transaction state log)?"
            ) from None
        raise TransactionAborted(f"{what}: {text}") from None

    def close(self) -> None:
        self.publisher.close()
        if self._producer is not None:
            try:
                if self._open and self.transactional:  # the loop committed what is final
                    self.abort()
                else:
                    self._producer.flush(self.timeout)
            except (ProducerFenced, TransactionAborted, KafkaException) as exc:
                # A producer in a fatal state fails its flush too; the error that made it
                # fatal (ProducerFenced) is what the listener reports, not this one.
                log.debug("closing the producer: %s", exc)
            self._producer = None


class _InTransaction(Publisher):
    """The dead-letter and retry-hop writes of a listener with outputs: through the
    listener's own producer, in its open transaction."""

    def __init__(self, owner: KafkaOutputs, timeout: float) -> None:
        super().__init__(timeout=timeout)
        self._owner = owner

    def _producer_now(self) -> Producer:
        return self._owner.begin()  # inside the open transaction, beginning one if needed

    def publish(
        self,
        source: Any,
        topic: str,
        partition: int | None,
        key: bytes | None,
        value: bytes | None,
        headers: Any,
        *,
        role: str = "dead-letter",
    ) -> Delivery:
        try:
            return super().publish(source, topic, partition, key, value, headers, role=role)
        except TransactionAborted as exc:  # ProducerFenced stops the listener
            raise RecoveryFailed(f"{role} write to {topic!r}: {exc}") from exc

    def close(self) -> None:
        with self._lock:
            self._pending.clear()


__all__ = ["Header", "KafkaOutputs", "OutputProducer"]
