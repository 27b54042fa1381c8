"""Outputs and transactions (T1) on the fake client: what a ``read_committed`` reader of the
output topics sees (the FakeClient's logs hold only committed outputs), what aborted
transactions held, and the committed positions."""

from __future__ import annotations

import pytest

from redrive import App, BackOff, BatchFailed, Commit, ConfigError, Message, Output, Retry
from redrive.events import Aborted, DeadLettered, Recorder
from redrive.message import TopicPartition
from redrive.publish import Publisher
from redrive.recover import DeadLetter
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


def test_outputs_the_broker_refuses_rewind_and_their_records_are_handled_again() -> None:
    client = FakeClient(clock=FakeClock())
    client.add("t", ["a", "b"])
    seen: list[str] = []

    def handle(msg: Message) -> Output:
        seen.append(msg.value.decode())
        return Output("out", value=msg.value)

    loop = loop_for(handle, client)
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
