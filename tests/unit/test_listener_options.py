"""Listener options are checked at registration: a mistake names the option, the value and
the fix before anything connects or runs (App("127.0.0.1:1") never reaches a broker here)."""

from __future__ import annotations

import dataclasses
import inspect
import re
from collections.abc import Callable
from pathlib import Path
from typing import Any

import pytest

from redrive import (
    App,
    BackOff,
    Call,
    Commit,
    ConfigError,
    DeadLetter,
    Message,
    Retry,
    RetryTopics,
    Skip,
    Stop,
)
from redrive.options import OPTION_NAMES, ListenerOptions
from redrive.recover.base import Recoverer


def _noop(msg: Any) -> None:
    pass


def _app() -> App:
    return App("127.0.0.1:1", "g")


REGISTER: dict[str, Callable[[App], Callable[..., Any]]] = {
    "listener": lambda app: app.listener,
    "batch_listener": lambda app: app.batch_listener,
}


# -- the mistakes users made ---------------------------------------------------------------


def test_a_string_commit_names_the_commit_policy_to_use() -> None:
    with pytest.raises(ConfigError) as err:
        _app().listener("t", commit="per_record")  # type: ignore[arg-type]
    assert str(err.value) == (
        "invalid setting 'commit': must be a Commit policy, got 'per_record'; "
        "use Commit.per_record()"
    )


def test_a_back_off_given_as_retry_says_to_wrap_it_in_a_retry() -> None:
    with pytest.raises(ConfigError) as err:
        _app().listener("t", retry=BackOff.fixed(1.0, max_attempts=3))  # type: ignore[arg-type]
    assert str(err.value) == (
        "invalid setting 'retry': must be a Retry policy, got BackOff(initial=1.0, "
        "multiplier=1.0, max_delay=1.0, jitter=False, max_attempts=3, max_elapsed=None) "
        "(type BackOff); a BackOff goes inside a Retry: "
        "pass retry=Retry(backoff=BackOff.fixed(...))"
    )


def test_a_recoverer_name_asks_for_a_recoverer_object() -> None:
    with pytest.raises(ConfigError) as err:
        _app().batch_listener("t", recoverer="dlt")  # type: ignore[arg-type]
    assert str(err.value) == (
        "invalid setting 'recoverer': must be a Recoverer, got 'dlt'; pass a recoverer object "
        "such as DeadLetter(), Skip(), Stop(), Call(fn), or subclass redrive.recover.Recoverer"
    )


def test_a_misspelt_deserializer_lists_the_accepted_ones() -> None:
    with pytest.raises(ConfigError) as err:
        _app().listener("t", value_deserializer="jsn")  # type: ignore[arg-type]
    assert str(err.value) == (
        "invalid setting 'value_deserializer': must be one of ['bytes', 'json', 'str'] "
        "or a function, got 'jsn'"
    )


@pytest.mark.parametrize("method", ["listener", "batch_listener"])
def test_a_misspelt_option_names_the_public_method(method: str) -> None:
    with pytest.raises(TypeError) as err:
        REGISTER[method](_app())("t", max_poll_record=3)
    assert str(err.value) == f"App.{method}() got an unexpected keyword argument 'max_poll_record'"


def test_options_are_keyword_only() -> None:
    with pytest.raises(TypeError, match=r"App.listener\(\) takes 2 positional arguments"):
        _app().listener("t", "g")  # type: ignore[call-arg]


# -- every option: wrong types and values ------------------------------------------------

WRONG: list[tuple[str, object, str]] = [
    ("group_id", 5, "must be a non-empty str or None, got 5 (type int)"),
    ("group_id", "", "must be a non-empty str or None, got ''"),
    ("max_poll_records", True, "must be a whole number >= 1, got True (type bool)"),
    ("max_poll_records", 3.0, "must be a whole number >= 1, got 3.0 (type float)"),
    ("max_poll_records", "3", "must be a whole number >= 1, got '3'"),
    ("max_poll_records", 0, "must be a whole number >= 1, got 0"),
    ("key_deserializer", 3, "must be one of ['bytes', 'json', 'str'] or a function, got 3 (type int)"),
    ("value_deserializer", str, "got the class str; use the name 'str'"),
    ("commit", "sometimes", "got 'sometimes': one of Commit.per_poll(), Commit.per_record(), Commit.interval(seconds), Commit.manual() or Commit.transaction()"),
    ("commit", Commit.per_record, "; call it: Commit.per_record()"),
    ("commit", "interval", "; use Commit.interval(seconds)"),
    ("retry", Retry, "must be a Retry policy, got the class Retry; pass an instance: Retry()"),
    ("retry", Retry.none, "; call it: Retry.none()"),
    ("retry", 3, "got 3 (type int): Retry(), Retry.none(), Retry.seek(backoff) or Retry.in_place(backoff)"),
    ("recoverer", Skip, "must be a recoverer object, got the class Skip; pass an instance: Skip()"),
    ("recoverer", print, "; wrap a function: Call(fn)"),
    ("recoverer", object(), "pass a recoverer object such as DeadLetter(), Skip(), Stop(), Call(fn)"),
    ("kafka", [("fetch.max.bytes", 1)], "must be a mapping such as"),
    ("kafka", {1: 1}, "setting names must be non-empty str, got 1 (type int)"),
    ("poll_timeout", 0, "must be > 0 seconds, got 0"),
    ("poll_timeout", True, "must be > 0 seconds, got True (type bool)"),
    ("poll_timeout", "1", "must be > 0 seconds, got '1'"),
    ("poll_timeout", float("inf"), "must be > 0 seconds, got inf"),
    ("name", "", "must be a non-empty str or None, got ''"),
    ("name", b"n", "must be a non-empty str or None, got b'n' (type bytes)"),
    ("retry_topics", (1, 5), "must be a RetryTopics (e.g. RetryTopics((1, 5, 30))) or None, got (1, 5) (type tuple)"),
    ("concurrency", 0, "must be a whole number >= 1, got 0"),
    ("concurrency", True, "must be a whole number >= 1, got True (type bool)"),
    ("ordering", "offset", "must be 'partition', 'key' or 'none', got 'offset'"),
    ("max_in_flight", 0, "must be a whole number >= 1 or None, got 0"),
    ("max_in_flight", False, "must be a whole number >= 1 or None, got False (type bool)"),
    ("drain_timeout", -1, "must be >= 0 seconds, got -1"),
    ("drain_timeout", None, "must be >= 0 seconds, got None"),
    ("missing_topics", "ignore", "must be 'wait', 'fail' or 'create', got 'ignore'"),
    ("missing_topics", True, "must be 'wait', 'fail' or 'create', got True (type bool)"),
]  # fmt: skip


def test_every_option_has_wrong_values_tested() -> None:
    assert {option for option, _, _ in WRONG} == set(OPTION_NAMES)


@pytest.mark.parametrize("method", ["listener", "batch_listener"])
@pytest.mark.parametrize(("option", "value", "problem"), WRONG, ids=lambda v: repr(v)[:30])
def test_a_wrong_value_names_the_option_and_what_is_accepted(
    method: str, option: str, value: object, problem: str
) -> None:
    with pytest.raises(ConfigError) as err:
        REGISTER[method](_app())("t", **{option: value})
    assert err.value.setting == option
    assert problem in err.value.problem


def test_a_wrong_kafka_value_names_the_setting() -> None:
    with pytest.raises(ConfigError) as err:
        _app().listener("t", kafka={"fetch.max.bytes": [1]})  # type: ignore[dict-item]
    assert str(err.value) == (
        "invalid setting 'kafka:fetch.max.bytes': must be a str, int, float or bool, "
        "got [1] (type list)"
    )


def test_options_are_checked_before_the_handler_is_given() -> None:
    app = _app()
    with pytest.raises(ConfigError):
        app.listener("t", max_poll_records=0)
    assert app.specs == []


# -- checks across options and the App stay in App --------------------------------------


def test_retry_topics_and_a_recoverer_do_not_combine() -> None:
    with pytest.raises(ConfigError, match="ends its chain in <topic>-dlt; drop recoverer="):
        _app().listener("t", retry_topics=RetryTopics((1.0,)), recoverer=Skip())


@pytest.mark.parametrize(
    ("option", "value"), [("concurrency", 2), ("ordering", "key"), ("max_in_flight", 100)]
)
def test_batch_listeners_take_no_concurrency_options(option: str, value: object) -> None:
    with pytest.raises(ConfigError, match=f"'{option}': applies to record listeners"):
        _app().batch_listener("t", **{option: value})  # type: ignore[arg-type]


def test_reserved_kafka_settings_are_refused() -> None:
    with pytest.raises(ConfigError, match="'kafka:group.id': is set by redrive"):
        _app().listener("t", kafka={"group.id": "x"})


# -- what is accepted ---------------------------------------------------------------------


class OwnRecoverer(Recoverer):
    """A user's own recoverer."""

    def recover(self, msg: Message, exc: BaseException, ctx: object) -> None:
        pass

    def close(self) -> None:
        pass


@pytest.mark.parametrize(
    "recoverer", [DeadLetter(), Skip(), Stop(), Call(lambda m, e: None), OwnRecoverer()]
)
def test_recoverer_objects_are_accepted(recoverer: Any) -> None:
    app = _app()
    app.listener("t", recoverer=recoverer)(_noop)
    assert app.specs[0].recoverer is recoverer


def test_every_option_reaches_the_listener_spec() -> None:
    app = _app()
    recoverer, commit = Skip(), Commit.interval(2.0)
    retry = Retry(backoff=BackOff.fixed(0.5, max_attempts=2))

    def decode(data: bytes | None) -> Any:
        return data

    app.listener(
        "t",
        group_id="other",
        max_poll_records=7,
        key_deserializer=decode,
        value_deserializer="str",
        commit=commit,
        retry=retry,
        recoverer=recoverer,
        kafka={"fetch.max.bytes": 1024, "check.crcs": True},
        poll_timeout=0.25,
        name="mine",
        concurrency=3,
        ordering="key",
        max_in_flight=9,
        drain_timeout=0,
    )(_noop)
    [spec] = app.specs
    assert (spec.name, spec.group_id, spec.max_poll_records) == ("mine", "other", 7)
    assert spec.key_deserializer is decode
    assert spec.value_deserializer is not None and spec.value_deserializer(b"x") == "x"
    assert (spec.commit, spec.retry, spec.recoverer) == (commit, retry, recoverer)
    assert spec.kafka["fetch.max.bytes"] == 1024 and spec.kafka["check.crcs"] is True
    assert spec.kafka["group.id"] == "other"
    assert (spec.poll_timeout, spec.concurrency, spec.ordering) == (0.25, 3, "key")
    assert (spec.max_in_flight, spec.drain_timeout) == (9, 0)


def test_retry_topics_reach_the_listener_spec() -> None:
    app = _app()
    app.listener("t", retry_topics=RetryTopics((1.0,)), name="main")(_noop)
    assert [spec.topics for spec in app.specs] == [("t",), ("t-retry",)]


# -- one list of options ------------------------------------------------------------------


@pytest.mark.parametrize("method", [App.listener, App.batch_listener])
def test_the_methods_take_exactly_the_options_of_the_dataclass(method: Any) -> None:
    params = list(inspect.signature(method).parameters.values())
    assert [p.name for p in params[:2]] == ["self", "topics"]
    options = params[2:]
    assert all(p.kind is inspect.Parameter.KEYWORD_ONLY for p in options)
    declared = [(f.name, str(f.type), f.default) for f in dataclasses.fields(ListenerOptions)]
    assert [(p.name, str(p.annotation), p.default) for p in options] == declared


def test_default_options_are_valid() -> None:
    assert ListenerOptions() == ListenerOptions(max_poll_records=500)


def test_the_readme_table_lists_every_option_in_order() -> None:
    readme = (Path(__file__).parents[2] / "README.md").read_text()
    table = readme[readme.index("| Option | Type | Default | Meaning |") :].split("\n\n")[0]
    names = re.findall(r"^\| `(\w+)` \|", table, flags=re.M)
    assert tuple(names) == OPTION_NAMES
