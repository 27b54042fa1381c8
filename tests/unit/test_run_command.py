"""`redrive run`'s parts that need no broker: the run guard, the options, the address order,
the README's examples, librdkafka's log lines and the JSON log format."""

from __future__ import annotations

import io
import json
import logging
import re
from pathlib import Path

import pytest

from redrive import App, Message
from redrive.app import importing_for_run
from redrive.cli import build_parser
from redrive.errors import UsageError
from redrive.observe.logs import KAFKA_LOGGER, Collapse, configure

README = Path(__file__).parents[2] / "README.md"
BLOCKS = re.findall(r"```python\n(.*?)```", README.read_text(), flags=re.S)


def _noop(msg: Message) -> None: ...


def test_app_run_while_redrive_run_imports_is_refused_with_the_fix() -> None:
    app = App("127.0.0.1:1", "g")
    app.listener("orders")(_noop)
    with importing_for_run("svc:app"), pytest.raises(UsageError) as err:
        app.run(handle_signals=False)
    assert "`redrive run svc:app` imported 'svc'" in str(err.value)
    assert 'if __name__ == "__main__": app.run()' in str(err.value)
    assert isinstance(err.value, RuntimeError)
    assert not app.loops  # nothing was started


def test_every_readme_example_guards_app_run_and_takes_the_address_from_outside() -> None:
    runs = [b for b in BLOCKS if "app.run()" in b]
    assert len(runs) >= 8
    for block in runs:
        assert re.search(r'^if __name__ == "__main__":.*\n    app\.run\(\)', block, re.M), block
        assert "\napp.run()" not in block, block
    for block in BLOCKS:
        assert "App(bootstrap_servers=" not in block and 'App("' not in block, block


def test_the_code_wins_over_the_environment(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("REDRIVE_BOOTSTRAP_SERVERS", "env:9092")
    assert App(group_id="g").bootstrap_servers == "env:9092"
    assert App("code:9092", "g").bootstrap_servers == "code:9092"
    monkeypatch.delenv("REDRIVE_BOOTSTRAP_SERVERS")
    assert App(group_id="g").bootstrap_servers == "127.0.0.1:9092"


def test_run_options() -> None:
    args = build_parser().parse_args(["run", "svc:app"])
    assert (args.bootstrap_servers, args.give_up_after, args.log_level, args.log_format) == (
        None, None, None, "text"
    )  # fmt: skip
    args = build_parser().parse_args(
        ["run", "svc:app", "--bootstrap-servers", "h:1", "--give-up-after", "2.5",
         "--log-level", "debug", "--log-format", "json"]
    )  # fmt: skip
    assert (args.bootstrap_servers, args.give_up_after, args.log_level, args.log_format) == (
        "h:1", 2.5, "DEBUG", "json"
    )  # fmt: skip
    for bad in (["--give-up-after", "0"], ["--give-up-after", "soon"], ["--log-format", "xml"]):
        with pytest.raises(SystemExit):
            build_parser().parse_args(["run", "svc:app", *bad])


def _record(text: str, *args: object, level: int = logging.ERROR) -> logging.LogRecord:
    return logging.LogRecord(KAFKA_LOGGER, level, __file__, 1, text, args, None)


def test_librdkafka_lines_once_per_kind_and_interval() -> None:
    now = [0.0]
    collapse = Collapse(window=10.0, clock=lambda: now[0])
    line = "FAIL [%s] Connect to ipv4#127.0.0.1:1 failed (after %dms in state CONNECT)"
    shown = []
    for i in range(20 * 30):  # 30 s of 20 lines a second, their numbers changing
        now[0] = i / 20
        rec = _record(line, "rdkafka#consumer-1", i % 3)
        if collapse.filter(rec):
            shown.append((now[0], rec.getMessage()))
    assert [t for t, _ in shown] == [0.0, 10.0, 20.0]
    assert shown[1][1].endswith("(repeated 200 times in the last 10s)")
    assert collapse.filter(_record("another kind of line"))  # other lines are not held back


def test_json_log_lines(monkeypatch: pytest.MonkeyPatch) -> None:
    root = logging.getLogger()
    saved = root.handlers[:], root.level
    try:
        configure("warning", "json")
        (handler,) = [h for h in root.handlers if getattr(h, "_redrive", False)]
        assert root.level == logging.WARNING
        out = io.StringIO()
        monkeypatch.setattr("sys.stderr", out)
        logging.getLogger("redrive.app").warning("no broker at %s", "h:1")
        logging.getLogger("redrive.app").info("not shown")
        (line,) = out.getvalue().splitlines()
        got = json.loads(line)
        assert (got["level"], got["logger"], got["message"]) == ("WARNING", "redrive.app",
                                                                 "no broker at h:1")  # fmt: skip
        assert got["time"].endswith("Z")
    finally:
        root.handlers[:], root.level = saved


def test_the_global_log_format_reaches_run(monkeypatch: pytest.MonkeyPatch) -> None:
    assert build_parser().parse_args(["--log-format", "json", "run", "svc:app"]).log_format == (
        "json"
    )
    assert build_parser().parse_args(["run", "svc:app", "--log-format", "json"]).log_format == (
        "json"
    )


def test_secret_settings_are_redacted_for_the_debug_log() -> None:
    from redrive.app import redact

    shown = redact({
        "sasl.mechanism": "OAUTHBEARER", "sasl.username": "svc",
        "sasl.oauthbearer.config": "clientId=a clientSecret=b", "sasl.password": "pw",
        "ssl.key.password": "k", "ssl.ca.location": "/etc/ca.pem", "group.id": "g",
    })  # fmt: skip
    assert shown == {
        "sasl.mechanism": "OAUTHBEARER", "sasl.username": "svc",
        "sasl.oauthbearer.config": "***", "sasl.password": "***", "ssl.key.password": "***",
        "ssl.ca.location": "/etc/ca.pem", "group.id": "g",
    }  # fmt: skip
