"""Concurrency settings: bad ones fail at registration, naming the setting; and what records
handled at once still promise (the circuit breaker's count)."""

from __future__ import annotations

import threading
import time

import pytest

from redrive import App, Commit, ConfigError, ListenerStopped, Message, Retry
from redrive.consumer.loop import Loop
from redrive.consumer.spec import ListenerSpec
from redrive.recover.base import Call
from redrive.recover.breaker import CircuitBreaker
from redrive.testing import FakeClient

# -- registration --------------------------------------------------------------------------


@pytest.mark.parametrize(
    ("options", "setting"),
    [
        ({"concurrency": 0}, "concurrency"),
        ({"concurrency": "8"}, "concurrency"),
        ({"concurrency": 4, "ordering": "offset"}, "ordering"),
        ({"concurrency": 4, "max_in_flight": 0}, "max_in_flight"),
    ],
)
def test_invalid_concurrency_settings(options: dict[str, object], setting: str) -> None:
    app = App("127.0.0.1:1", "g")
    with pytest.raises(ConfigError) as err:
        app.listener("t", **options)
    assert err.value.setting == setting


def test_batch_listeners_take_no_concurrency() -> None:
    with pytest.raises(ConfigError, match="record listeners"):
        App("127.0.0.1:1", "g").batch_listener("t", concurrency=4)


@pytest.mark.parametrize("commit", [Commit.manual(), Commit.per_record()])
def test_manual_acks_and_per_record_commits_do_not_combine_with_concurrency(commit: Commit) -> None:
    app = App("127.0.0.1:1", "g")
    with pytest.raises(ConfigError, match=f"Commit.{commit.name}\\(\\) does not combine"):
        app.listener("t", concurrency=4, commit=commit)(lambda m: None)


# -- the circuit breaker -------------------------------------------------------------------


def test_records_recovered_under_concurrency_are_no_successes_for_the_circuit_breaker() -> None:
    client = FakeClient()
    client.add("t", [b"x"] * 50)
    recovered: list[int] = []  # by the loop thread, when it settles a failure
    called = threading.Condition()  # notified by the workers, once per handler call
    calls = 0

    def fails(msg: Message) -> None:
        nonlocal calls
        with called:
            calls += 1
            called.notify_all()
        raise RuntimeError("broken deployment")

    spec = ListenerSpec(
        name="c", topics=("t",), group_id="g", handler=fails, batch=False,
        max_poll_records=5, key_deserializer=None, value_deserializer=None,
        commit=Commit.per_poll(), retry=Retry.none(),
        recoverer=CircuitBreaker(Call(lambda m, e: recovered.append(m.offset)), in_a_row=3),
        poll_timeout=0.01, concurrency=2,
    )  # fmt: skip
    loop = Loop(spec, client)
    loop.start()
    deadline = time.monotonic() + 10
    try:
        with pytest.raises(ListenerStopped):
            while time.monotonic() < deadline:
                loop.run_once()
                # Step again at once while a handler call is not settled yet (its outcome
                # may still be on its way); otherwise wait for the next call.
                with called:
                    called.wait_for(lambda: calls > len(recovered), deadline - time.monotonic())
    finally:
        loop.close()
    assert len(recovered) < 10
