"""Back-off policies (R1) and attempt state (R3): pure values, no sleeping."""

from __future__ import annotations

import random

import pytest

from redrive import BackOff, ConfigError, Retry
from redrive.retry.attempts import METADATA_LIMIT, Attempt, decode, encode


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
    state = Attempt(3, 1, 1_700_000_000.123, running=True, due=1_700_000_009.5)
    state.note(ValueError("x" * 500), limit=5)
    text = encode({42: state, 40: Attempt(1)}, 500)
    assert text is not None and len(text) < 400  # far below the 4096-byte metadata limit
    back = decode(text, 42)
    assert back is not None and back.window == 500
    assert list(back.records) == [42]  # 40 is before the position: final, left out
    got = back.records[42]
    assert (got.failures, got.interruptions, got.running, got.first_failure, got.limit,
            got.due) == (3, 1, True, 1_700_000_000.123, 5, 1_700_000_009.5)  # fmt: skip
    assert got.error_text.startswith("ValueError: xxx") and len(got.error_text) == 200
    assert got.attempt == 5 and not got.used_up
    assert decode("not redrive's", 42) is None
    assert decode("{broken", 42) is None


def test_many_records_fit_the_metadata_limit_the_rest_start_over() -> None:
    states = {o: Attempt(2, error_text="E: " + "x" * 190) for o in range(100)}
    text = encode(states, 0)
    assert text is not None and len(text) <= METADATA_LIMIT
    back = decode(text, 0)
    assert back is not None and 10 < len(back.records) < 100
    assert list(back.records) == list(range(len(back.records)))  # the oldest are kept


def test_only_observed_failures_use_up_the_attempts() -> None:
    assert Attempt(5, limit=5).used_up
    assert not Attempt(4, 3, limit=5).used_up  # interruptions are counted apart
    assert Attempt(9).used_up is False  # no limit known: unlimited retries
