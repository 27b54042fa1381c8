"""The chaos plan (record kinds from the seed), what the consumers' handler does with each
kind and attempt, and the command's usage errors."""

from __future__ import annotations

import pytest

from redrive.chaos.app import Poisoned, outcome
from redrive.chaos.plan import Plan, parse
from redrive.cli import main
from redrive.message import Message


def test_kinds_come_from_the_seed() -> None:
    plan = Plan(records=20_000, transient=0.05, poison=0.01, seed=3)
    kinds = plan.kinds()
    assert kinds == Plan(records=20_000, transient=0.05, poison=0.01, seed=3).kinds()
    assert kinds != Plan(records=20_000, transient=0.05, poison=0.01, seed=4).kinds()
    assert 800 < sum(k in ("t1", "t2") for k in kinds) < 1200
    assert 120 < sum(k in ("pf", "pr") for k in kinds) < 280
    key, value = next(iter(plan.values(kinds)))
    assert (key, parse(value)) == (b"key-0", (0, kinds[0]))


@pytest.mark.parametrize(
    ("kind", "attempt", "error"),
    [("ok", 1, None), ("t1", 1, ConnectionError), ("t1", 2, None), ("t2", 2, ConnectionError),
     ("t2", 3, None), ("pf", 1, ValueError), ("pr", 5, Poisoned)],
)  # fmt: skip
def test_the_handler_fails_by_kind_and_attempt(kind: str, attempt: int, error: type | None) -> None:
    msg = Message("t", 0, 5, raw_value=f"42:{kind}".encode(), attempt=attempt)
    ident, exc = outcome(msg)
    assert ident == 42
    assert (type(exc) if exc else None) is error


@pytest.mark.parametrize(
    ("argv", "says"),
    [(["--mode", "exactly"], "unknown mode 'exactly'"),
     (["--records", "0"], "--records must be >= 1"),
     (["--transient", "0.9", "--poison", "0.2"], "--transient and --poison are shares")],
)  # fmt: skip
def test_usage_errors_exit_2(
    argv: list[str], says: str, capsys: pytest.CaptureFixture[str]
) -> None:
    assert main(["chaos", *argv]) == 2
    assert says in capsys.readouterr().err
