"""Exception classification (F5): retryable or fatal, by type, walking the cause chain."""

from __future__ import annotations

import json

import pytest

from redrive import BatchFailed, Classifier, DeserializationError
from redrive.retry.classify import DEFAULT_FATAL, cause_chain


class InvalidOrder(Exception):
    pass


class Flaky(ValueError):
    pass


def chained(*excs: BaseException) -> BaseException:
    """excs[0] raised from excs[1] raised from ... (explicit causes)."""
    for outer, inner in zip(excs, excs[1:], strict=False):
        outer.__cause__ = inner
    return excs[0]


def test_default_fatal_list() -> None:
    c = Classifier()
    for exc in (
        DeserializationError("bad"),
        ValueError("bad"),
        TypeError("bad"),
        KeyError("k"),
        AttributeError("a"),
        NotImplementedError(),
    ):
        assert c.is_fatal(exc), exc
    with pytest.raises(json.JSONDecodeError) as info:
        json.loads("{nope")
    assert c.is_fatal(info.value)
    assert c.is_fatal(UnicodeDecodeError("utf-8", b"\xff", 0, 1, "bad"))


@pytest.mark.parametrize("exc", [RuntimeError(), ConnectionError(), TimeoutError(), OSError()])
def test_unknown_and_transient_errors_are_retryable(exc: BaseException) -> None:
    assert not Classifier().is_fatal(exc)


def test_the_cause_chain_is_walked() -> None:
    c = Classifier()
    assert c.is_fatal(chained(RuntimeError("wrapper"), OSError("io"), KeyError("k")))


def test_implicit_context_counts_unless_suppressed() -> None:
    c = Classifier()
    try:
        try:
            {}["missing"]
        except KeyError:
            raise RuntimeError("while handling")  # noqa: B904 - the implicit context is the point
    except RuntimeError as exc:
        assert c.is_fatal(exc)
    try:
        try:
            {}["missing"]
        except KeyError:
            raise RuntimeError("from None") from None
    except RuntimeError as exc:
        assert not c.is_fatal(exc)


def test_outermost_decision_wins() -> None:
    c = Classifier(retryable=(TimeoutError,))
    # a retryable wrapper of a fatal cause: the wrapper decides
    assert not c.is_fatal(chained(TimeoutError(), KeyError("k")))
    # a fatal wrapper of a retryable cause
    assert c.is_fatal(chained(KeyError("k"), TimeoutError()))


def test_include_and_exclude_lists() -> None:
    c = Classifier(fatal=(InvalidOrder,), retryable=(Flaky,))
    assert c.is_fatal(InvalidOrder())
    assert not c.is_fatal(Flaky())  # excluded from the default-fatal ValueError
    assert c.is_fatal(ValueError())
    assert not Classifier(default_fatal=()).is_fatal(ValueError())


def test_batch_failed_is_a_signal_its_cause_decides() -> None:
    c = Classifier()
    assert c.is_fatal(BatchFailed(index=0, cause=KeyError("k")))
    assert not c.is_fatal(BatchFailed(index=0, cause=ConnectionError()))


def test_cycles_end_the_walk() -> None:
    a, b = RuntimeError("a"), RuntimeError("b")
    a.__cause__, b.__cause__ = b, a
    assert list(cause_chain(a)) == [a, b]
    assert not Classifier().is_fatal(a)


def test_default_fatal_list_is_documented_in_the_description() -> None:
    text = Classifier().describe()
    assert all(t.__name__ in text for t in DEFAULT_FATAL)
