"""Test doubles for your own unit tests: an in-memory Kafka client and a manual clock.

```python
from redrive.testing import FakeClient, FakeClock, loop_for

clock = FakeClock()
client = FakeClient(clock=clock)
client.add("orders", [b"m1", b"m2", b"m3"])
seen = []
loop = loop_for(seen.append, client, topics=("orders",), clock=clock)
loop.start()
loop.run_once()
assert [m.value for m in seen] == [b"m1", b"m2", b"m3"]
assert client.committed_position("orders", 0) == 3
```

The fake keeps partition logs, fetch positions, pauses and commits in memory, assigns every
partition of the subscribed topics on the first poll, and advances a ``FakeClock`` by the
poll timeout when it has nothing to return, so back-offs pass without sleeping. The outputs
a handler returns (``redrive.Output``) go through a ``FakeOutputs`` (``client.producer``)
into the same logs, when they are committed.
"""

from __future__ import annotations

from collections.abc import Callable, Iterable, Mapping, Sequence
from typing import Any

from redrive.consumer.client import Positions, RawRecord, RebalanceCallback
from redrive.consumer.commit import Commit
from redrive.consumer.loop import Loop
from redrive.consumer.spec import ListenerSpec
from redrive.errors import CommitFailed, TransactionAborted
from redrive.events import EventBus
from redrive.message import TopicPartition
from redrive.outputs import Output, encoded
from redrive.publish import Publisher
from redrive.recover.base import Recoverer, Skip
from redrive.retry.policy import Retry
from redrive.serde import Deserializer


class FakeClock:
    """A clock that moves only when told to (``advance``) or when a fake poll waits."""

    def __init__(self, start: float = 1000.0) -> None:
        self.now = start

    def __call__(self) -> float:
        return self.now

    def advance(self, seconds: float) -> None:
        self.now += seconds


class FakeRecord:
    """A record with confluent-kafka's Message methods."""

    __slots__ = ("_topic", "_partition", "_offset", "_key", "_value", "_headers", "_ts")

    def __init__(
        self,
        topic: str,
        partition: int,
        offset: int,
        key: bytes | None,
        value: bytes | None,
        headers: list[tuple[str, bytes | None]] | None = None,
        ts: int = 0,
    ) -> None:
        self._topic, self._partition, self._offset = topic, partition, offset
        self._key, self._value, self._headers, self._ts = key, value, headers, ts

    def topic(self) -> str:
        return self._topic

    def partition(self) -> int:
        return self._partition

    def offset(self) -> int:
        return self._offset

    def key(self) -> bytes | None:
        return self._key

    def value(self) -> bytes | None:
        return self._value

    def headers(self) -> list[tuple[str, bytes | None]] | None:
        return self._headers

    def timestamp(self) -> tuple[int, int]:
        return (1, self._ts)

    def error(self) -> Any:
        return None


class FakeClient:
    """An in-memory implementation of the loop's ``Client`` protocol."""

    def __init__(self, *, clock: FakeClock | None = None) -> None:
        self.clock = clock
        self.logs: dict[TopicPartition, list[FakeRecord]] = {}
        self.position: dict[TopicPartition, int] = {}
        self.paused: set[TopicPartition] = set()
        self.assigned: list[TopicPartition] = []
        self.committed_log: list[dict[TopicPartition, tuple[int, str | None]]] = []
        self.waited: list[bool] = []  # per entry of committed_log: did the commit wait?
        self.commits: dict[TopicPartition, tuple[int, str | None]] = {}
        # in order: ("commit", {partition: position}) and ("confirmed", output values)
        self.journal: list[tuple[str, object]] = []
        self.topics: tuple[str, ...] = ()
        self.closed = False
        self.fail_async_commits = False
        """True: asynchronous commits fail (after the call returns, as a rebalance can make
        them), and ``failed_commits`` reports them."""
        self.refuse_commits = 0
        """The next this many synchronous commits are refused (``CommitFailed``), as Kafka
        refuses them while the group rebalances."""
        self._failed: list[TopicPartition] = []
        self._callbacks: tuple[RebalanceCallback, RebalanceCallback, RebalanceCallback] | None
        self._callbacks = None
        self.producer: FakeOutputs | None = None  # the loop's producer of outputs, once made

    # -- set-up --------------------------------------------------------------------

    def add(
        self,
        topic: str,
        values: Iterable[bytes | str | None],
        *,
        partition: int = 0,
        key: bytes | None = None,
    ) -> None:
        """Append records to a partition's log."""
        log = self.logs.setdefault(TopicPartition(topic, partition), [])
        for v in values:
            raw = v.encode() if isinstance(v, str) else v
            log.append(FakeRecord(topic, partition, len(log), key, raw))

    def committed_position(self, topic: str, partition: int) -> int | None:
        got = self.commits.get(TopicPartition(topic, partition))
        return got[0] if got else None

    def revoke(self, partitions: Sequence[TopicPartition]) -> None:
        """Take partitions away as a rebalance would (the loop's revoke callback runs)."""
        assert self._callbacks is not None
        self._callbacks[1](list(partitions))
        # like librdkafka, the pause flag outlives the assignment
        self.assigned = [tp for tp in self.assigned if tp not in partitions]

    def lose(self, partitions: Sequence[TopicPartition]) -> None:
        """Take partitions away as lost (the group moved on without a revocation)."""
        assert self._callbacks is not None
        self._callbacks[2](list(partitions))
        self.assigned = [tp for tp in self.assigned if tp not in partitions]

    def assign(self, partitions: Sequence[TopicPartition]) -> None:
        assert self._callbacks is not None
        for tp in partitions:
            self.position[tp] = self.commits.get(tp, (0, None))[0]
        self.assigned += [tp for tp in partitions if tp not in self.assigned]
        self._callbacks[0](list(partitions))

    # -- Client protocol -----------------------------------------------------------

    def subscribe(
        self,
        topics: Sequence[str],
        on_assign: RebalanceCallback,
        on_revoke: RebalanceCallback,
        on_lost: RebalanceCallback,
    ) -> None:
        self.topics = tuple(topics)
        self._callbacks = (on_assign, on_revoke, on_lost)

    def poll(self, max_records: int, timeout: float) -> list[RawRecord]:
        if not self.assigned and self._callbacks is not None:
            self.assign(sorted(tp for tp in self.logs if tp.topic in self.topics))
        out: list[RawRecord] = []
        for tp in self.assigned:
            if tp in self.paused:
                continue
            log = self.logs.get(tp, [])
            pos = self.position.get(tp, 0)
            take = log[pos : pos + max_records - len(out)]
            out.extend(take)
            self.position[tp] = pos + len(take)
            if len(out) >= max_records:
                break
        if not out and self.clock is not None:
            self.clock.advance(timeout)
        return out

    def commit(self, positions: Positions) -> None:
        if self.refuse_commits:
            self.refuse_commits -= 1
            raise CommitFailed("commit failed: Broker: Group rebalance in progress")
        snapshot = dict(positions)
        self.journal.append(("commit", {tp: pos for tp, (pos, _) in snapshot.items()}))
        self.committed_log.append(snapshot)
        self.commits.update(snapshot)
        self.waited.append(True)

    def commit_async(self, positions: Positions) -> None:
        if self.fail_async_commits:
            self._failed.extend(positions)
            return
        self.commit(positions)  # takes effect at once here; the real client's may fail later
        self.waited[-1] = False

    def failed_commits(self) -> list[TopicPartition]:
        failed, self._failed = self._failed, []
        return failed

    def store(self, positions: Positions) -> None:
        self.commit(positions)

    def committed(self, partitions: Sequence[TopicPartition]) -> Positions:
        return {tp: self.commits.get(tp, (-1001, None)) for tp in partitions}

    def seek(self, tp: TopicPartition, offset: int) -> None:
        self.position[tp] = offset

    def pause(self, partitions: Sequence[TopicPartition]) -> None:
        self.paused.update(partitions)

    def resume(self, partitions: Sequence[TopicPartition]) -> None:
        self.paused.difference_update(partitions)

    def outputs(self, kafka: Mapping[str, Any], transactional_id: str | None) -> FakeOutputs:
        self.producer = FakeOutputs(self, transactional_id)
        return self.producer

    def close(self) -> None:
        if self._callbacks is not None and self.assigned:
            self._callbacks[1](list(self.assigned))
        self.assigned = []
        self.closed = True


def loop_for(
    handler: Callable[[Any], Any],
    client: FakeClient,
    *,
    topics: Sequence[str] = ("t",),
    batch: bool = False,
    max_poll_records: int = 3,
    retry: Retry | None = None,
    recoverer: Recoverer | None = None,
    commit: Commit | None = None,
    value_deserializer: Deserializer | None = None,
    clock: FakeClock | None = None,
    bus: EventBus | None = None,
    kafka: Mapping[str, Any] | None = None,
    due_times: bool = False,
) -> Loop:
    """A Loop over a FakeClient with test-friendly defaults (Skip as recoverer).
    ``due_times``: the records carry retry-topic due times (a retry-topic consumer)."""
    spec = ListenerSpec(
        name="test",
        topics=tuple(topics),
        group_id="test-group",
        handler=handler,
        batch=batch,
        max_poll_records=max_poll_records,
        key_deserializer=None,
        value_deserializer=value_deserializer,
        commit=commit or Commit.per_poll(),
        retry=retry or Retry(),
        recoverer=recoverer or Skip(),
        kafka=dict(kafka or {}),
        poll_timeout=0.5,
        due_times=due_times,
    )
    clock = clock or client.clock or FakeClock()
    return Loop(spec, client, bus=bus, clock=clock, wall_clock=clock)


class FakeOutputs:
    """The in-memory producer of a listener's outputs (``FakeClient.outputs``): outputs land
    in the FakeClient's logs when their transaction commits (with transactions, the offsets
    are committed in the same step) or, without, when they are confirmed before a commit.

    ``aborted`` keeps what aborted transactions held (what only a ``read_uncommitted``
    reader would see); set ``fail_next_commit`` to make the next commit fail with an
    abortable error (without transactions: refuses the outputs not yet confirmed),
    ``fail_next_send`` to make the next output's write fail with one, and
    ``withhold_acks`` to make the next dead-letter or retry-hop writes wait in vain."""

    def __init__(self, client: FakeClient, transactional_id: str | None) -> None:
        self.client = client
        self.transactional = transactional_id is not None
        self.transactional_id = transactional_id
        self.staged: list[FakeRecord] = []
        self.aborted: list[FakeRecord] = []
        self.transactions = 0  # committed
        self.fail_next_commit: str | None = None
        self.fail_next_send: str | None = None
        self.closed = False
        self._open = False
        self.withhold_acks = 0  # publisher flushes (dead letters, hops) that confirm nothing
        self._producer = _FakeProducer(self)
        self.publisher = Publisher(factory=lambda _settings: self._producer)  # type: ignore[arg-type,return-value]
        self.publisher.start({})

    @property
    def pending(self) -> bool:
        return bool(self.staged) or self._open

    def stage(self, topic: str, partition: int | None, key: bytes | None, value: bytes | None,
              headers: list[tuple[str, bytes | None]] | None) -> FakeRecord:  # fmt: skip
        self._open = True
        record = FakeRecord(topic, partition or 0, -1, key, value, headers)
        self.staged.append(record)
        return record

    def start(self) -> None:
        pass

    def send(self, output: Output) -> None:
        if self.fail_next_send is not None:  # Kafka refused it (an abortable error)
            why, self.fail_next_send = self.fail_next_send, None
            raise TransactionAborted(f"writing to {output.topic!r}: {why}")
        self.stage(output.topic, output.partition, encoded(output.key), encoded(output.value),
                   list(output.headers) or None)  # fmt: skip

    def commit(self, positions: Positions) -> None:
        if self.fail_next_commit is not None:
            why, self.fail_next_commit = self.fail_next_commit, None
            self.aborted += self.staged  # a transaction's are aborted; others were refused
            self.staged = []
            raise TransactionAborted(why) if self.transactional else CommitFailed(why)
        for r in self.staged:
            log = self.client.logs.setdefault(TopicPartition(r._topic, r._partition), [])
            r._offset = len(log)
            log.append(r)
        if self.staged:
            self.client.journal.append(("confirmed", [r._value for r in self.staged]))
        self.staged = []
        self._open = False
        if self.transactional:
            self.transactions += 1
            if positions:
                self.client.commit(positions)

    def abort(self) -> None:
        self.aborted += self.staged
        self.staged = []
        self._open = False
        self._producer._acks.clear()  # purged with the transaction
        self.publisher.forget()

    def close(self) -> None:
        self.abort()
        self.closed = True


class _FakeProducer:
    """What ``Publisher`` asks of a producer, writing into a FakeOutputs' transaction."""

    def __init__(self, outputs: FakeOutputs) -> None:
        self.outputs = outputs
        self._acks: list[tuple[Callable[[Any, Any], None], FakeRecord]] = []

    def list_topics(self, topic: str | None = None, timeout: float = -1) -> Any:
        from types import SimpleNamespace

        partitions = {tp.partition: None for tp in self.outputs.client.logs if tp.topic == topic}
        found = SimpleNamespace(partitions=partitions or {0: None}, error=None)
        return SimpleNamespace(topics={topic: found})

    def produce(self, topic: str, **kwargs: Any) -> None:
        record = self.outputs.stage(topic, kwargs.get("partition"), kwargs.get("key"),
                                    kwargs.get("value"), kwargs.get("headers"))  # fmt: skip
        self._acks.append((kwargs["on_delivery"], record))

    def flush(self, timeout: float = -1) -> int:
        if self.outputs.withhold_acks:  # not acknowledged in time
            self.outputs.withhold_acks -= 1
            return len(self._acks)
        for on_delivery, record in self._acks:
            on_delivery(None, record)
        self._acks.clear()
        return 0
