"""The dead-letter circuit breaker, without a broker."""

from __future__ import annotations

import pytest

from redrive import CircuitBreaker, ConfigError, ListenerStopped, Message
from redrive.events import EventBus
from redrive.recover.base import Context, ListenerContext, Recoverer


class Collect(Recoverer):
    def __init__(self) -> None:
        self.recovered: list[int] = []
        self.closed = False

    def recover(self, msg: Message, exc: BaseException, ctx: Context) -> None:
        self.recovered.append(msg.offset)

    def close(self) -> None:
        self.closed = True


class Handled:
    """Stands for the loop's counter of handled records."""

    def __init__(self) -> None:
        self.count = 0

    def __call__(self) -> int:
        return self.count


def setup(**kwargs: object) -> tuple[CircuitBreaker, Collect, Handled, Context]:
    inner = Collect()
    breaker = CircuitBreaker(inner, **kwargs)  # type: ignore[arg-type]
    handled = Handled()
    breaker.start(ListenerContext("l", "g", {}, handled))
    return breaker, inner, handled, Context("l", "g", 1, 0.0, EventBus(), {})


def fail(breaker: CircuitBreaker, ctx: Context, offset: int) -> None:
    breaker.recover(Message("t", 0, offset), ValueError(f"bad {offset}"), ctx)


def ok(handled: Handled, n: int = 1) -> None:
    handled.count += n


def test_trips_at_the_nth_failure_in_a_row_and_leaves_it_unrecovered() -> None:
    breaker, inner, handled, ctx = setup(in_a_row=3)
    fail(breaker, ctx, 0)
    ok(handled)  # a success resets the run
    fail(breaker, ctx, 2)
    fail(breaker, ctx, 3)
    with pytest.raises(ListenerStopped) as info:
        fail(breaker, ctx, 5)
    assert inner.recovered == [0, 2, 3]
    text = str(info.value)
    assert "circuit breaker" in text and "3 records in a row" in text
    assert "t[0]@5" in text and "uncommitted" in text and "ValueError: bad 5" in text


def test_trips_on_the_share_of_a_full_window() -> None:
    breaker, inner, handled, ctx = setup(in_a_row=None, share=0.5, window=4)
    fail(breaker, ctx, 0)
    fail(breaker, ctx, 1)  # 2 of 2, but the window is not full yet
    ok(handled)
    with pytest.raises(ListenerStopped, match="3 of the last 4 records failed"):
        fail(breaker, ctx, 3)  # 3 of a full window of 4 would be > 0.5
    assert inner.recovered == [0, 1]


def test_share_stays_open_below_the_limit() -> None:
    breaker, inner, handled, ctx = setup(in_a_row=None, share=0.5, window=4)
    for offset in range(0, 20, 2):
        ok(handled)
        fail(breaker, ctx, offset + 1)  # every other record fails: exactly 0.5
    assert len(inner.recovered) == 10


def test_a_failed_recovery_is_not_counted() -> None:
    class Broken(Collect):
        def recover(self, msg: Message, exc: BaseException, ctx: Context) -> None:
            raise OSError("dlt down")

    breaker = CircuitBreaker(Broken(), in_a_row=2)
    breaker.start(ListenerContext("l", "g", {}, Handled()))
    ctx = Context("l", "g", 1, 0.0, EventBus(), {})
    for _ in range(5):
        with pytest.raises(OSError):
            fail(breaker, ctx, 0)


@pytest.mark.parametrize(
    ("kwargs", "setting"),
    [
        ({"in_a_row": 0}, "circuit_breaker.in_a_row"),
        ({"share": 1.5}, "circuit_breaker.share"),
        ({"window": 0}, "circuit_breaker.window"),
        ({"in_a_row": None}, "circuit_breaker"),
    ],
)
def test_invalid_settings_name_the_setting(kwargs: dict[str, object], setting: str) -> None:
    with pytest.raises(ConfigError) as info:
        CircuitBreaker(Collect(), **kwargs)  # type: ignore[arg-type]
    assert info.value.setting == setting


def test_many_successes_open_the_window_again() -> None:
    breaker, inner, handled, ctx = setup(in_a_row=None, share=0.5, window=4)
    fail(breaker, ctx, 0)
    fail(breaker, ctx, 1)
    ok(handled, 1_000_000)  # counted cheaply, at most a window's worth kept
    fail(breaker, ctx, 2)
    fail(breaker, ctx, 3)  # 2 of the last 4
    assert inner.recovered == [0, 1, 2, 3]


def test_close_closes_the_wrapped_recoverer() -> None:
    breaker, inner, _, _ = setup()
    breaker.close()
    assert inner.closed
