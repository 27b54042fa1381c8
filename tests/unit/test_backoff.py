"""Back-off policies (R1) and attempt state (R3): pure values, no sleeping."""

from __future__ import annotations

import random

import pytest

from redrive import BackOff, ConfigError, Retry
from redrive.retry.attempts import Attempt


def delays(backoff: BackOff, elapsed: float = 0.0) -> list[float | None]:
    return [backoff.next_delay(n, elapsed) for n in range(1, 8)]


def test_none_never_retries() -> None:
    assert BackOff.none().next_delay(1) is None
    assert Retry.none().next_delay(RuntimeError(), 1, 0.0) is None


def test_fixed_delay_until_the_attempts_are_used() -> None:
    assert delays(BackOff.fixed(2.0, max_attempts=4)) == [2.0, 2.0, 2.0, None, None, None, None]


def test_exponential_doubles_up_to_the_cap_without_jitter() -> None:
    b = BackOff.exponential(0.5, max_delay=3.0, jitter=False, max_attempts=7)
    assert delays(b) == [0.5, 1.0, 2.0, 3.0, 3.0, 3.0, None]


def test_exponential_full_jitter_draws_between_zero_and_the_delay() -> None:
    b = BackOff.exponential(1.0, multiplier=3.0, max_delay=20.0, max_attempts=None)
    rng = random.Random(7)
    drawn = {n: [b.next_delay(n, rng=rng) for _ in range(300)] for n in (1, 2, 3, 4)}
    for n, ceiling in {1: 1.0, 2: 3.0, 3: 9.0, 4: 20.0}.items():
        values = [d for d in drawn[n] if d is not None]
        assert len(values) == 300
        assert all(0.0 <= d <= ceiling for d in values)
        assert max(values) > 0.8 * ceiling  # spread over the whole range (full jitter)
        assert min(values) < 0.2 * ceiling


def test_elapsed_time_limit_stops_before_the_delay_would_pass_it() -> None:
    b = BackOff.fixed(10.0, max_attempts=None, max_elapsed=25.0)
    assert b.next_delay(1, elapsed=0.0) == 10.0
    assert b.next_delay(2, elapsed=15.0) == 10.0
    assert b.next_delay(3, elapsed=15.1) is None  # 25.1 s would pass the limit


def test_attempts_and_elapsed_both_limit() -> None:
    b = BackOff.fixed(1.0, max_attempts=3, max_elapsed=100.0)
    assert b.next_delay(3, elapsed=0.0) is None
    assert b.next_delay(2, elapsed=99.5) is None


def test_unlimited_retries_are_allowed() -> None:
    b = BackOff.fixed(1.0, max_attempts=None)
    assert b.next_delay(10_000, elapsed=1e9) == 1.0


@pytest.mark.parametrize(
    ("kwargs", "setting"),
    [
        ({"initial": -1.0}, "backoff.initial"),
        ({"multiplier": 0.5}, "backoff.multiplier"),
        ({"initial": 5.0, "max_delay": 1.0}, "backoff.max_delay"),
        ({"max_attempts": 0}, "backoff.max_attempts"),
        ({"max_elapsed": -1.0}, "backoff.max_elapsed"),
    ],
)
def test_invalid_values_name_the_setting(kwargs: dict[str, float], setting: str) -> None:
    with pytest.raises(ConfigError) as info:
        BackOff(**kwargs)  # type: ignore[arg-type]
    assert info.value.setting == setting
    assert setting in str(info.value)


def test_per_exception_backoff_walks_the_cause_chain() -> None:
    slow = BackOff.fixed(30.0, max_attempts=2)
    retry = Retry(backoff=BackOff.fixed(1.0, max_attempts=5), per_exception={TimeoutError: slow})
    assert retry.backoff_for(RuntimeError()) == retry.backoff
    try:
        try:
            try:
                raise TimeoutError("db")
            except TimeoutError as inner:
                raise OSError("pool") from inner
        except OSError as mid:
            raise RuntimeError("handler") from mid
    except RuntimeError as outer:
        exc = outer
    assert retry.backoff_for(exc) is slow  # two links deep
    assert retry.next_delay(exc, 1, 0.0) == 30.0
    assert retry.next_delay(exc, 2, 0.0) is None  # the per-exception limit applies
    assert retry.next_delay(RuntimeError(), 2, 0.0) == 1.0


def test_per_exception_rejects_what_is_not_a_type_and_a_backoff() -> None:
    with pytest.raises(ConfigError, match="retry.per_exception"):
        Retry(per_exception={"TimeoutError": BackOff.fixed(1.0)})  # type: ignore[dict-item]


def test_retry_mode_is_checked() -> None:
    with pytest.raises(ConfigError, match="retry.mode"):
        Retry(mode="sometimes")  # type: ignore[arg-type]


def test_defaults_are_described_for_the_start_up_log() -> None:
    assert Retry().describe().startswith("seek exponential 1s..30s x2 full jitter, 10 attempts")
    assert BackOff.none().describe() == "no retry"
    assert BackOff.fixed(2.0, max_attempts=None).describe() == "fixed 2s, until it works"


def test_attempt_state_round_trips_through_commit_metadata() -> None:
    state = Attempt(3, 1_700_000_000.123, due=1_700_000_009.5)
    state.note(ValueError("x" * 500), limit=5)
    text = state.to_metadata(42)
    assert len(text) < 400  # far below the broker's 4096-byte metadata limit
    back = Attempt.from_metadata(text, 42)
    assert back is not None
    assert (back.count, back.first_failure, back.limit, back.due) == (
        3, 1_700_000_000.123, 5, 1_700_000_009.5
    )  # fmt: skip
    assert back.error_text.startswith("ValueError: xxx") and len(back.error_text) == 200
    assert not back.used_up
    assert Attempt.from_metadata(text, 43) is None  # state of another record: ignored
    assert Attempt.from_metadata("not redrive's", 42) is None
    assert Attempt.from_metadata("{broken", 42) is None


def test_an_interrupted_last_attempt_uses_up_the_attempts() -> None:
    started = Attempt(5, 0.0, limit=5)  # a previous owner started attempt 5 of 5
    assert started.used_up
    assert Attempt(4, 0.0, limit=5).used_up is False
    assert Attempt(9, 0.0).used_up is False  # no limit known: unlimited retries
