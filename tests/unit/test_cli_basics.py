"""CLI basics that need no broker: --version, global options before or after the
sub-command, usage errors."""

from __future__ import annotations

import confluent_kafka
import pytest

from redrive import __version__, cli


def test_version_names_redrive_confluent_kafka_and_librdkafka(capsys) -> None:
    with pytest.raises(SystemExit) as exit:
        cli.main(["--version"])
    assert exit.value.code == 0
    out = capsys.readouterr().out
    assert out.startswith(f"redrive {__version__} (confluent-kafka ")
    assert f"librdkafka {confluent_kafka.libversion()[0]})" in out


@pytest.mark.parametrize(
    "argv",
    [
        ["-v", "topics", "ls"],
        ["topics", "-v", "ls"],
        ["topics", "ls", "-v"],
        ["dlt", "ls", "t", "--verbose"],
        ["consume", "t", "-v", "--json"],
        ["broker", "status", "-v"],
    ],
)
def test_verbose_is_accepted_before_or_after_the_sub_command(argv: list[str]) -> None:
    assert cli.build_parser().parse_args(argv).verbose is True


def test_without_verbose_it_is_off_and_log_format_works_anywhere() -> None:
    parser = cli.build_parser()
    assert parser.parse_args(["topics", "ls"]).verbose is False
    assert parser.parse_args(["topics", "ls", "--log-format", "json"]).log_format == "json"
    assert parser.parse_args(["--log-format", "json", "topics", "ls"]).log_format == "json"


@pytest.mark.parametrize(
    "argv, message",
    [
        (["topics", "create", "t", "--partitions", "0"], "1 or more"),
        (["topics", "create", "t", "--config", "retention.ms"], "expected key=value"),
        (["produce", "t", "--key", "k", "--key-field", "id"], "not allowed with"),
        (["consume", "t", "--from", "middle"], "beginning, end or an offset"),
    ],
)
def test_usage_errors_exit_2_with_the_reason(argv, message, capsys) -> None:
    with pytest.raises(SystemExit) as exit:
        cli.main(argv)
    assert exit.value.code == 2
    assert message in capsys.readouterr().err
