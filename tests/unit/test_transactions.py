"""Outputs and transactions (T1) on the fake client: what a ``read_committed`` reader of the
output topics sees (the FakeClient's logs hold only committed outputs), what aborted
transactions held, and the committed positions."""

from __future__ import annotations

import threading
import time
from collections.abc import Callable

import pytest
from confluent_kafka import KafkaError, KafkaException

from redrive import App, BackOff, BatchFailed, Commit, ConfigError, Message, Output, Retry
from redrive.events import Aborted, DeadLettered, Failed, Recorder
from redrive.message import TopicPartition
from redrive.publish import Publisher
from redrive.recover import DeadLetter
from redrive.retry.attempts import Attempt, decode, encode
from redrive.testing import FakeClient, FakeClock, FakeOutputs, loop_for

from .fake_producer import Factory

T0 = TopicPartition("t", 0)
W3 = '{"redrive":2,"w":3}'  # the owner's window in the commit metadata
RETRY = Retry.seek(BackOff.fixed(1.0, max_attempts=3))


def out_values(client: FakeClient, topic: str = "out") -> list[str]:
    return [r.value().decode() for tp, log in sorted(client.logs.items()) if tp.topic == topic
            for r in log]  # fmt: skip


def producer(client: FakeClient) -> FakeOutputs:
    assert client.producer is not None
    return client.producer


def dead_letter() -> DeadLetter:
    dead = DeadLetter()
    dead.publisher = Publisher(factory=Factory(t_dlt=1))  # never used in a transaction
    return dead


def test_a_polls_outputs_and_positions_commit_in_one_transaction() -> None:
    client = FakeClient(clock=FakeClock())
    client.add("t", ["a", "b", "c"])

    def handle(msg: Message) -> Output:
        return Output("out", value=msg.value.decode().upper())

    loop = loop_for(handle, client, commit=Commit.transaction())
    loop.start()
    loop.run_until_idle()
    assert out_values(client) == ["A", "B", "C"]
    assert client.committed_position("t", 0) == 3
    txns = producer(client)
    assert txns.transactional and txns.aborted == []
    # one transaction for the poll: outputs and position 3 together (the owner's window
    # before its first record is a plain commit at the position, past nothing)
    assert txns.transactions == 1
    assert client.committed_log == [{T0: (0, W3)}, {T0: (3, W3)}]


def test_a_failure_aborts_the_transaction_and_nothing_of_the_poll_commits_until_the_retry() -> None:
    client = FakeClient(clock=FakeClock())
    client.add("t", ["a", "b", "c"])
    failures = {"b": 1}
    recorder = Recorder()

    def handle(msg: Message) -> list[Output]:
        value = msg.value.decode()
        outputs = [Output("out", value=value)]
        if failures.get(value):
            failures[value] -= 1
            raise TimeoutError("downstream slow")
        return outputs

    loop = loop_for(handle, client, commit=Commit.transaction(), retry=RETRY)
    loop.bus.subscribe(recorder)
    loop.start()
    loop.run_once()
    assert out_values(client) == []  # a was handled, but its transaction was aborted
    assert client.committed_position("t", 0) == 0
    (aborted,) = recorder.of(Aborted)
    assert "TimeoutError" in aborted.reason
    assert aborted.rewound == ((TopicPartition("t", 0), 0),)
    loop.run_until_idle()
    assert out_values(client) == ["a", "b", "c"]  # each once, in order
    assert client.committed_position("t", 0) == 3


def test_after_the_last_attempt_the_dead_letter_commits_with_the_records_around_it() -> None:
    client = FakeClient(clock=FakeClock())
    client.add("t", ["a", "poison", "c"])
    recorder = Recorder()
    seen: list[str] = []

    def handle(msg: Message) -> Output:
        seen.append(msg.value.decode())
        if msg.value == b"poison":
            raise ConnectionError("billing service down")
        return Output("out", value=msg.value)

    loop = loop_for(handle, client, commit=Commit.transaction(), retry=RETRY,
                    recoverer=dead_letter())  # fmt: skip
    loop.bus.subscribe(recorder)
    loop.start()
    loop.run_until_idle()
    assert out_values(client) == ["a", "c"]
    assert out_values(client, "t-dlt") == ["poison"]  # once, in the transaction
    assert len(recorder.of(DeadLettered)) == 1
    assert client.committed_position("t", 0) == 3
    assert seen.count("poison") == 3  # the three attempts; recovered without a fourth
    assert seen.count("a") == 4  # handled again after each abort; committed once


def test_an_abortable_commit_error_aborts_and_handles_the_poll_again() -> None:
    client = FakeClient(clock=FakeClock())
    client.add("t", ["a", "b"])
    loop = loop_for(lambda m: Output("out", value=m.value), client,
                    commit=Commit.transaction())  # fmt: skip
    loop.start()
    producer(client).fail_next_commit = "Broker: Coordinator not available"
    loop.run_until_idle()
    assert out_values(client) == ["a", "b"]
    assert client.committed_position("t", 0) == 2


def test_a_batch_listener_naming_the_failed_record_retries_the_whole_transaction() -> None:
    client = FakeClient(clock=FakeClock())
    client.add("t", ["a", "b", "c"])
    failures = {"b": 2}

    def handle(batch: list[Message]) -> list[Output]:
        outputs = []
        for i, msg in enumerate(batch):
            value = msg.value.decode()
            if failures.get(value):
                failures[value] -= 1
                raise BatchFailed(index=i)
            outputs.append(Output("out", value=value))
        return outputs

    loop = loop_for(handle, client, batch=True, commit=Commit.transaction(), retry=RETRY)
    loop.start()
    loop.run_until_idle()
    assert out_values(client) == ["a", "b", "c"]
    assert producer(client).aborted == []  # the batch raised before returning its outputs
    assert client.committed_position("t", 0) == 3


def test_outputs_without_transactions_are_confirmed_before_the_commit() -> None:
    client = FakeClient(clock=FakeClock())
    client.add("t", ["a", "b"])
    loop = loop_for(lambda m: [Output("out", value=m.value), Output("out2", key=b"k")], client)
    loop.start()
    loop.run_until_idle()
    assert out_values(client) == ["a", "b"]
    assert not producer(client).transactional
    assert client.committed_position("t", 0) == 2
    # in this order: the window at 0 (past nothing), the outputs confirmed, the commit at 2
    assert client.journal == [("commit", {T0: 0}), ("confirmed", [b"a", None, b"b", None]),
                              ("commit", {T0: 2})]  # fmt: skip


def test_a_handler_declared_to_return_none_gets_no_producer() -> None:
    client = FakeClient(clock=FakeClock())
    client.add("t", ["a"])

    def handle(msg: Message) -> None:
        pass

    loop = loop_for(handle, client)
    loop.start()
    loop.run_until_idle()
    assert client.producer is None


def test_a_list_mixing_outputs_and_other_values_is_a_handler_failure() -> None:
    client = FakeClient(clock=FakeClock())
    client.add("t", ["a"])
    loop = loop_for(lambda m: [Output("out"), {"not": "an output"}], client,
                    commit=Commit.transaction(), retry=Retry.none())  # fmt: skip
    loop.start()
    loop.run_until_idle()
    assert out_values(client) == []  # recovered (Skip): no output, position past it


@pytest.mark.parametrize(
    ("options", "setting", "text"),
    [
        ({"concurrency": 4}, "commit", "does not combine with concurrency > 1"),
        ({"retry": Retry.in_place()}, "retry", "use Retry.seek(backoff)"),
    ],
)
def test_what_a_transaction_cannot_combine_with_is_refused_at_registration(
    options: dict[str, object], setting: str, text: str
) -> None:
    app = App("127.0.0.1:1", "g")
    with pytest.raises(ConfigError) as err:
        app.listener("t", commit=Commit.transaction(), **options)  # type: ignore[arg-type]
    assert err.value.setting == setting
    assert text in str(err.value)


@pytest.mark.parametrize("value", ["transaction", "exactly_once", Commit.transaction])
def test_a_transaction_asked_for_the_wrong_way_names_the_fix(value: object) -> None:
    with pytest.raises(ConfigError, match=r"Commit\.transaction\(\)"):
        App("127.0.0.1:1", "g").listener("t", commit=value)  # type: ignore[arg-type]


def test_transactional_id_must_be_text() -> None:
    with pytest.raises(ConfigError, match="transactional_id"):
        Commit.transaction(transactional_id="")


@pytest.mark.parametrize("retry", [Retry.seek(), Retry.in_place()])
def test_outputs_the_broker_refuses_rewind_and_their_records_are_handled_again(
    retry: Retry,
) -> None:
    client = FakeClient(clock=FakeClock())
    client.add("t", ["a", "b"])
    seen: list[str] = []

    def handle(msg: Message) -> Output:
        seen.append(msg.value.decode())
        return Output("out", value=msg.value)

    loop = loop_for(handle, client, retry=retry)  # in place: no window in the metadata
    loop.start()
    producer(client).fail_next_commit = "Broker: Topic authorization failed"
    loop.run_until_idle()
    assert seen == ["a", "b", "a", "b"]
    assert out_values(client) == ["a", "b"]
    assert client.committed_position("t", 0) == 2


def test_a_retry_topic_hop_is_written_in_the_transaction() -> None:
    from redrive import RetryTopics
    from redrive.topics.recoverer import ChainRecoverer

    client = FakeClient(clock=FakeClock())
    client.add("t", ["a", "late", "c"])

    def handle(msg: Message) -> Output:
        if msg.value == b"late":
            raise LookupError("not created yet")
        return Output("out", value=msg.value)

    chain = ChainRecoverer(RetryTopics((1.0,)), ("t",), "test-group")
    chain.publisher = Publisher(factory=Factory(t_retry=1))  # never used in a transaction
    loop = loop_for(handle, client, commit=Commit.transaction(), retry=Retry.none(),
                    recoverer=chain)  # fmt: skip
    loop.start()
    loop.run_until_idle()
    assert out_values(client) == ["a", "c"]
    assert out_values(client, "t-retry") == ["late"]  # one hop, with the others' outputs
    assert client.committed_position("t", 0) == 3


def test_a_batch_failing_as_a_whole_isolates_the_poison_record_into_its_own_transaction() -> None:
    client = FakeClient(clock=FakeClock())
    client.add("t", ["a", "poison", "c"])
    batches: list[list[str]] = []

    def handle(batch: list[Message]) -> list[Output]:
        values = [m.value.decode() for m in batch]
        batches.append(values)
        if "poison" in values:
            raise ConnectionError("something in this batch cannot be billed")
        return [Output("out", value=v) for v in values]

    loop = loop_for(handle, client, batch=True, commit=Commit.transaction(), retry=RETRY,
                    recoverer=dead_letter())  # fmt: skip
    loop.start()
    loop.run_until_idle()
    assert out_values(client) == ["a", "c"]
    assert out_values(client, "t-dlt") == ["poison"]
    assert client.committed_position("t", 0) == 3
    # three tries of the whole batch, then one record at a time up to the failing one (in
    # a transaction that is aborted), then the batch without it, its dead letter in the same
    # transaction
    assert batches == [["a", "poison", "c"]] * 3 + [["a"], ["poison"], ["a", "c"]]


def test_per_record_transactions_rewind_without_skipping_the_rest_of_the_poll() -> None:
    client = FakeClient(clock=FakeClock())
    client.add("t", ["a", "b", "c"])
    seen: list[str] = []

    def handle(msg: Message) -> Output:
        seen.append(msg.value.decode())
        return Output("out", value=msg.value)

    loop = loop_for(handle, client, commit=Commit.transaction(per_record=True))
    loop.start()
    producer(client).fail_next_commit = "Broker: Not coordinator"  # a's transaction
    loop.run_until_idle()
    assert out_values(client) == ["a", "b", "c"]
    assert seen == ["a", "a", "b", "c"]  # b and c waited for the rewind to a
    assert client.committed_position("t", 0) == 3
    assert producer(client).transactions == 3


def test_a_batch_naming_its_failed_record_writes_the_outputs_of_the_records_before_it() -> None:
    client = FakeClient(clock=FakeClock())
    client.add("t", ["a", "b", "c"])
    failures = {"b": 1}
    batches: list[list[str]] = []

    def handle(batch: list[Message]) -> list[Output]:
        batches.append([m.value.decode() for m in batch])
        outputs = []
        for i, msg in enumerate(batch):
            value = msg.value.decode()
            if failures.get(value):
                failures[value] -= 1
                raise BatchFailed(index=i, outputs=outputs)  # a is done: its output too
            outputs.append(Output("out", value=value))
        return outputs

    loop = loop_for(handle, client, batch=True, retry=RETRY)
    loop.start()
    loop.run_until_idle()
    assert batches == [["a", "b", "c"], ["b", "c"]]  # a committed after the first call
    assert out_values(client) == ["a", "b", "c"]
    assert client.committed_position("t", 0) == 3


def test_a_dead_letter_not_acknowledged_in_time_is_aborted_never_committed_before_its_record() -> (
    None
):
    client = FakeClient(clock=FakeClock())
    client.add("t", ["a", "poison", "c"])

    def handle(msg: Message) -> Output:
        if msg.value == b"poison":
            raise ConnectionError("billing service down")
        return Output("out", value=msg.value)

    loop = loop_for(handle, client, commit=Commit.transaction(), retry=Retry.none(),
                    recoverer=dead_letter())  # fmt: skip
    producer(client).withhold_acks = 1  # the first dead-letter write times out
    loop.start()
    for _ in range(200):
        loop.run_once()
        if out_values(client, "t-dlt"):  # never visible without the position past it
            assert (client.committed_position("t", 0) or 0) >= 2
    assert out_values(client, "t-dlt") == ["poison"]
    assert [r.value() for r in producer(client).aborted].count(b"poison") == 1
    assert out_values(client) == ["a", "c"]
    assert client.committed_position("t", 0) == 3


class _Producer:
    """What ``KafkaOutputs`` asks of confluent-kafka's Producer, without transactions;
    `during_flush` runs inside ``flush`` (another handler thread writing meanwhile)."""

    made = 0

    def __init__(self, _settings: dict[str, object]) -> None:
        time.sleep(0.05)  # a slow start: a second thread arrives meanwhile
        type(self).made += 1
        self.queued: list[tuple[object, ...]] = []
        self.during_flush: Callable[[], None] | None = None

    def produce(self, *args: object, **kwargs: object) -> None:
        self.queued.append(args)

    def flush(self, timeout: float = -1) -> int:
        self.queued.clear()
        if self.during_flush is not None:
            self.during_flush, during = None, self.during_flush
            during()  # written after the flush took its records: still queued
        return 0

    def __len__(self) -> int:
        return len(self.queued)


def test_outputs_of_concurrent_handlers_share_one_producer_and_all_are_confirmed() -> None:
    from redrive.consumer.producer import KafkaOutputs

    _Producer.made = 0
    outputs = KafkaOutputs({}, None, lambda: None, factory=_Producer)  # type: ignore[arg-type]
    threads = [
        threading.Thread(target=outputs.send, args=(Output("out", value=str(i)),)) for i in range(4)
    ]
    for t in threads:
        t.start()
    for t in threads:
        t.join()
    assert _Producer.made == 1
    made = outputs.producer()
    assert isinstance(made, _Producer)
    made.during_flush = lambda: outputs.send(Output("out", value="late"))
    outputs.commit({})
    assert outputs.pending  # "late" is not confirmed: the next commit waits for it
    outputs.commit({})
    assert not outputs.pending


def test_kafka_refusing_an_output_in_a_transaction_aborts_it_counting_no_attempt() -> None:
    client = FakeClient(clock=FakeClock())
    client.add("t", ["a", "b"])
    recorder = Recorder()
    attempts: list[tuple[str, int]] = []

    def handle(msg: Message) -> Output:
        attempts.append((msg.value.decode(), msg.attempt))
        return Output("out", value=msg.value)

    loop = loop_for(handle, client, commit=Commit.transaction(),
                    retry=Retry.seek(BackOff.fixed(1.0, max_attempts=1)),
                    recoverer=dead_letter())  # fmt: skip
    loop.bus.subscribe(recorder)
    producer(client).fail_next_send = "Broker: Not enough replicas"
    loop.start()
    loop.run_until_idle()
    assert out_values(client) == ["a", "b"]
    assert out_values(client, "t-dlt") == []  # one attempt allowed, none used up
    assert not recorder.of(Failed)
    assert {n for _, n in attempts} == {1}
    assert len(recorder.of(Aborted)) == 1
    assert client.committed_position("t", 0) == 2


def test_a_producer_fenced_during_recovery_stops_the_listener_keeping_the_attempts() -> None:
    from redrive.errors import ProducerFenced
    from redrive.recover.base import Context, Recoverer

    class Fenced(Recoverer):
        def recover(self, msg: Message, exc: BaseException, ctx: Context) -> None:
            raise ProducerFenced("fenced while beginning the transaction")

    client = FakeClient(clock=FakeClock())
    client.add("t", ["poison"])

    def handle(msg: Message) -> Output:
        raise ConnectionError("down")

    loop = loop_for(handle, client, commit=Commit.transaction(),
                    retry=Retry.seek(BackOff.fixed(1.0, max_attempts=2)),
                    recoverer=Fenced())  # fmt: skip
    loop.start()
    with pytest.raises(ProducerFenced):
        loop.run_until_idle()
    _, metadata = client.committed_log[-1][T0]
    assert metadata is not None and '"f":2' in metadata  # the next owner recovers it at once


def test_a_revocation_keeps_the_window_of_the_partitions_the_consumer_keeps() -> None:
    client = FakeClient(clock=FakeClock())
    client.add("t", ["a", "revoke"])
    client.add("t", ["b"], partition=1)

    def handle(msg: Message) -> Output:
        if msg.value == b"revoke":
            client.revoke([TopicPartition("t", 1)])  # t[0] stays: a's position is committed
        return Output("out", value=msg.value)

    loop = loop_for(handle, client, commit=Commit.transaction())
    loop.start()
    loop.run_until_idle()
    kept = [commit[T0] for commit in client.committed_log if T0 in commit]
    assert (1, W3) in kept  # committed at the revocation, still owned: not a clean hand-over
    assert all(metadata == W3 for _, metadata in kept)


class _TxnProducer(_Producer):
    """A transactional producer whose commit times out `timeouts` times (retriable)."""

    def __init__(self, settings: dict[str, object]) -> None:
        super().__init__(settings)
        self.calls: list[str] = []
        self.timeouts = 0

    def init_transactions(self, timeout: float = -1) -> None:
        self.calls.append("init")

    def begin_transaction(self) -> None:
        self.calls.append("begin")

    def commit_transaction(self, timeout: float = -1) -> None:
        self.calls.append("commit")
        if self.timeouts:
            self.timeouts -= 1
            time.sleep(min(timeout, 0.02))
            raise KafkaException(KafkaError(KafkaError._TIMED_OUT, "timed out", retriable=True))

    def abort_transaction(self, timeout: float = -1) -> None:
        self.calls.append("abort")

    def poll(self, timeout: float = -1) -> int:
        return 0


@pytest.mark.parametrize("timeouts", [2, 1000])
def test_a_commit_that_times_out_is_retried_never_aborted_within_one_deadline(
    timeouts: int,
) -> None:
    from redrive.consumer.producer import KafkaOutputs
    from redrive.errors import ProducerFenced

    outputs = KafkaOutputs({}, "txn", lambda: None, timeout=0.3, factory=_TxnProducer)  # type: ignore[arg-type]
    outputs.send(Output("out", value="a"))
    made = outputs.producer()
    assert isinstance(made, _TxnProducer)
    made.timeouts = timeouts
    if timeouts == 2:  # the coordinator answers in time: committed
        outputs.commit({})
        assert made.calls == ["init", "begin", "commit", "commit", "commit"]
        return
    with pytest.raises(ProducerFenced, match="outcome is unknown"):
        outputs.commit({})  # it may be committing: not aborted, the listener stops
    assert "abort" not in made.calls
    assert made.timeouts > 0  # stopped at the deadline, not after a count of retries


def test_lost_partitions_abort_the_open_transaction_holding_their_work() -> None:
    client = FakeClient(clock=FakeClock())
    client.add("t", ["a", "lose"])
    lost: list[int] = []

    def handle(msg: Message) -> Output | None:
        if msg.value == b"lose" and not lost:
            lost.append(msg.offset)
            client.lose([T0])  # a's output is in the open transaction
            return None
        return Output("out", value=msg.value)

    loop = loop_for(handle, client, commit=Commit.transaction())
    loop.start()
    loop.run_once()
    assert [r.value() for r in producer(client).aborted] == [b"a"]
    assert out_values(client) == []  # never committed by the consumer that lost t[0]
    assert client.committed_position("t", 0) == 0


@pytest.mark.parametrize("batch", [False, True])
def test_a_share_listener_declared_to_return_outputs_is_refused_at_registration(
    batch: bool,
) -> None:
    app = App("127.0.0.1:1", "g")
    register = app.share_batch_listener if batch else app.share_listener

    def handle(msg: Message) -> list[Output]:
        return [Output("out", value=msg.raw_value)]

    with pytest.raises(ConfigError, match="share listeners do not write") as err:
        register("t", group_id="workers")(handle)
    assert err.value.setting == "handler"

    def plain(msg: Message) -> None:
        pass

    register("t", group_id="workers")(plain)  # one that writes nothing is welcome


def test_after_a_failure_the_rest_of_the_poll_waits_for_the_retry_on_every_partition() -> None:
    client = FakeClient(clock=FakeClock())
    client.add("t", ["a0"])
    client.add("t", ["b0"], partition=1)
    seen: list[str] = []
    failures = {"a1": 1}

    def handle(msg: Message) -> Output:
        value = msg.value.decode()
        seen.append(value)
        if failures.get(value):
            failures[value] -= 1
            raise TimeoutError("downstream slow")
        return Output("out", value=value)

    loop = loop_for(handle, client, commit=Commit.transaction(), retry=RETRY)
    loop.start()
    loop.run_until_idle()
    client.add("t", ["a1"])
    client.add("t", ["b1", "b2"], partition=1)
    seen.clear()
    loop.run_once()  # one poll: a1 (fails), b1, b2
    assert seen == ["a1"]  # b1 and b2 would be aborted with it: not handed over
    loop.run_until_idle()
    assert seen.count("b1") == 1 and seen.count("a1") == 2
    assert sorted(out_values(client)) == ["a0", "a1", "b0", "b1", "b2"]
    assert client.committed_position("t", 1) == 3


def test_no_commit_outside_the_transaction_lists_a_staged_dead_letter_as_final() -> None:
    """b's dead letter is only staged in the open transaction when c's running mark is
    committed outside it: that commit must not tell a new owner to skip b (a crash now
    aborts the dead letter)."""
    clock = FakeClock()
    client = FakeClient(clock=clock)
    client.add("t", ["a", "b", "c", "d"])
    states = {1: Attempt(failures=3, exhausted=True, error_text="ValueError: x", first_failure=1.0),
              2: Attempt(failures=1, limit=3, error_text="ValueError: y", first_failure=1.0)}  # fmt: skip
    client.commit({TopicPartition("t", 0): (0, encode(states, 0))})
    seen: list[tuple[int, int, str | None]] = []

    def handle(msg: Message) -> Output:
        pos, meta = client.commits[TopicPartition("t", 0)]
        seen.append((msg.offset, pos, meta))
        return Output("out", value=msg.value)

    loop = loop_for(handle, client, commit=Commit.transaction(), clock=clock,
                    retry=Retry.seek(BackOff.fixed(1.0, max_attempts=3)), recoverer=DeadLetter(),
                    max_poll_records=10)  # fmt: skip
    loop.start()
    loop.run_once()
    ((pos, meta),) = [(pos, meta) for offset, pos, meta in seen if offset == 2]
    state = decode(meta, pos)  # what the broker held while c ran (a crash point)
    assert state is not None and 2 in state.records and 1 not in state.done
