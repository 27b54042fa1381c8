"""The public surface is small, sorted, and importable from the package root."""

from __future__ import annotations

import redrive
from redrive.errors import (
    BrokerError,
    ClientError,
    CommitFailed,
    ConfigError,
    KafkaUnavailable,
    ListenerStopped,
    RecoveryFailed,
    RedriveError,
)


def test_all_is_sorted_and_importable() -> None:
    assert redrive.__all__ == sorted(redrive.__all__)
    for name in redrive.__all__:
        assert getattr(redrive, name) is not None


def test_every_error_has_one_root_and_misuse_errors_match_builtins() -> None:
    for err in (BrokerError, ClientError, CommitFailed, ConfigError, KafkaUnavailable,
                ListenerStopped, RecoveryFailed):  # fmt: skip
        assert issubclass(err, RedriveError)
    assert issubclass(ConfigError, ValueError)
    assert issubclass(BrokerError, RuntimeError)
    assert issubclass(KafkaUnavailable, ConnectionError)


def test_package_is_typed() -> None:
    from pathlib import Path

    assert (Path(redrive.__file__).parent / "py.typed").exists()
