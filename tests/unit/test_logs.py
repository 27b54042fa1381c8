"""Logs that explain: the set-up, librdkafka's lines through Python logging, and repeated
lines collapsed (an unreachable broker is retried about 20 times a second)."""

from __future__ import annotations

import json
import logging

import pytest

from redrive.errors import ConfigError
from redrive.observe.logs import KAFKA_LOGGER, Collapse, configure, kafka_logging


class Clock:
    def __init__(self) -> None:
        self.now = 0.0

    def __call__(self) -> float:
        return self.now


def _record(
    text: str, name: str = "redrive.kafka", level: int = logging.ERROR
) -> logging.LogRecord:
    return logging.LogRecord(name, level, __file__, 1, "%s", (text,), None)


def _through(f: Collapse, text: str, **kw: object) -> str | None:
    record = _record(text, **kw)  # type: ignore[arg-type]
    return record.getMessage() if f.filter(record) else None


def test_the_first_line_passes_then_one_summary_per_window() -> None:
    clock = Clock()
    f = Collapse(window=10.0, clock=clock)
    fail = "Connect to ipv4#127.0.0.1:1 failed: Connection refused"
    assert _through(f, fail) == fail
    passed = []
    for _ in range(160):  # 16 a second for 10 s (1/16: exact in binary)
        clock.now += 0.0625
        passed.append(_through(f, fail))
    assert [p for p in passed if p is not None] == [f"{fail} (repeated 160 times in the last 10s)"]
    clock.now += 0.0625
    assert _through(f, fail) is None  # the next window has begun


def test_different_lines_levels_and_loggers_are_not_collapsed() -> None:
    f = Collapse(window=10.0, clock=Clock())
    assert _through(f, "a") == "a"
    assert _through(f, "b") == "b"
    assert _through(f, "a", level=logging.WARNING) == "a"
    assert _through(f, "a", name="other") == "a"
    assert _through(f, "a") is None


def test_a_line_that_comes_back_after_a_quiet_window_is_logged_plainly() -> None:
    clock = Clock()
    f = Collapse(window=10.0, clock=clock)
    assert _through(f, "broker down") == "broker down"
    clock.now += 60
    assert _through(f, "broker down") == "broker down"


def test_kafka_logging_routes_to_the_collapsing_logger_and_keeps_a_logger_of_yours() -> None:
    settings = kafka_logging({"bootstrap.servers": "b:9092"})
    assert settings["logger"] is logging.getLogger(KAFKA_LOGGER)
    assert any(isinstance(f, Collapse) for f in settings["logger"].filters)
    mine = logging.getLogger("mine")
    assert kafka_logging({"logger": mine})["logger"] is mine


@pytest.fixture
def restore_root() -> object:
    root = logging.getLogger()
    handlers, level = list(root.handlers), root.level
    yield root
    root.handlers[:] = handlers
    root.setLevel(level)


def test_configure_text_has_time_level_logger_and_message(restore_root, capsys) -> None:
    configure("INFO")
    configure("INFO")  # twice: still one line per record
    logging.getLogger("redrive.test").info("hello %s", "world")
    logging.getLogger("redrive.test").debug("hidden")
    (line,) = capsys.readouterr().err.splitlines()
    assert line.endswith(" INFO    redrive.test: hello world")
    assert line[:4].isdigit() and line[10] == " "  # 2025-01-31 12:00:00.000+00:00 ...


def test_configure_json_is_one_object_per_line(restore_root, capsys) -> None:
    configure("DEBUG", fmt="json")
    logging.getLogger("redrive.test").debug("a\nb")
    (line,) = capsys.readouterr().err.splitlines()
    got = json.loads(line)
    assert {k: got[k] for k in ("level", "logger", "message")} == {
        "level": "DEBUG", "logger": "redrive.test", "message": "a\nb"
    }  # fmt: skip
    assert got["time"].endswith("Z")


def test_configure_refuses_an_unknown_level_or_format(restore_root) -> None:
    with pytest.raises(ConfigError, match="'log level'"):
        configure("LOUD")
    with pytest.raises(ConfigError, match="'log format'"):
        configure("INFO", fmt="xml")  # type: ignore[arg-type]
