"""The everyday chores from the command line, against a real broker (K1-K7): topics,
produce, consume; an unreachable broker, secrets, a closed pipe. Each command runs as a
subprocess, as a user runs it."""

from __future__ import annotations

import json
import os
import re
import socket
import subprocess
import sys
import time
from pathlib import Path
from typing import Any

import pytest

from redrive import admin

from .helpers import wait_for

pytestmark = pytest.mark.integration


def redrive(
    *args: str, kafka: str | None = None, stdin: str = "", timeout: float = 60
) -> subprocess.CompletedProcess[str]:
    env = {k: v for k, v in os.environ.items() if k != "REDRIVE_BOOTSTRAP_SERVERS"}
    where = ["--bootstrap-servers", kafka] if kafka else []
    return subprocess.run(
        [sys.executable, "-m", "redrive", *args, *where],
        input=stdin, capture_output=True, text=True, timeout=timeout, env=env,
    )  # fmt: skip


def ok(*args: str, **kw: Any) -> str:
    done = redrive(*args, **kw)
    assert done.returncode == 0, done.stderr
    return done.stdout


def json_lines(text: str) -> list[dict[str, Any]]:
    return [json.loads(line) for line in text.splitlines()]


def test_k1_topics_create_ls_describe_delete(kafka, names) -> None:
    a, b = names.topic("a"), names.topic("b")
    out = ok("topics", "create", a, b, "--partitions", "3", "--config", "retention.ms=3600000",
             kafka=kafka)  # fmt: skip
    assert out.splitlines() == [f"created {a} (3 partition(s))", f"created {b} (3 partition(s))"]

    again = redrive("topics", "create", a, kafka=kafka)
    assert again.returncode == 1
    assert again.stderr == (
        f"redrive topics: topic '{a}' already exists; --if-not-exists keeps existing topics\n"
    )
    assert ok("topics", "create", a, "--if-not-exists", kafka=kafka) == f"{a} exists (kept)\n"

    admin.produce(kafka, a, [("k", "v")], partition=2)
    ok("consume", a, "--group", names.group(), "--timeout", "1", kafka=kafka)  # commits
    listed = {
        t["name"]: t["partitions"] for t in json.loads(ok("topics", "ls", "--json", kafka=kafka))
    }
    assert listed[a] == listed[b] == 3
    assert not any(name.startswith("__") for name in listed)
    everything = json.loads(ok("topics", "ls", "--all", "--json", kafka=kafka))
    assert "__consumer_offsets" in {t["name"] for t in everything}
    assert [a, "3"] in [line.split() for line in ok("topics", "ls", kafka=kafka).splitlines()]

    info = json.loads(ok("topics", "describe", a, "--json", kafka=kafka))
    assert [(p["partition"], p["end_offset"]) for p in info["partitions"]] == [
        (0, 0),
        (1, 0),
        (2, 1),
    ]
    assert all(p["leader"] >= 0 and p["leader"] in p["in_sync"] for p in info["partitions"])
    assert info["configs"]["retention.ms"] == {"value": "3600000", "source": "topic"}
    text = ok("topics", "describe", a, kafka=kafka)
    assert text.splitlines()[0] == f"{a}: 3 partition(s), 1 record(s)"
    assert any(line.split() == ["retention.ms", "3600000", "topic"] for line in text.splitlines())

    missing = redrive("topics", "describe", names.topic("nope"), kafka=kafka)
    assert (missing.returncode, missing.stderr) == (
        1, f"redrive topics: topic '{names.topic('nope')}' does not exist\n"
    )  # fmt: skip

    unasked = redrive("topics", "delete", a, kafka=kafka)  # stdin is no terminal
    assert unasked.returncode == 1 and "without --yes" in unasked.stderr
    assert admin.topic_partitions(kafka, a) == 3
    assert ok("topics", "delete", a, b, "--yes", kafka=kafka) == f"deleted {a}\ndeleted {b}\n"
    wait_for(lambda: not {a, b} & set(admin.list_topics(kafka)), what="topics deleted")


def test_k2_produce_from_stdin_and_a_file_then_consume_as_json_lines(
    kafka, make_topic, tmp_path: Path
) -> None:
    topic = make_topic(partitions=2)
    lines = '{"id": "c1", "n": 1}\n\n{"id": 7, "n": 2}\n'
    out = ok("produce", topic, "--key-field", "id", "--header", "source=cli",
             "--header", "trace=a=b", stdin=lines, kafka=kafka)  # fmt: skip
    assert out.startswith(f"acknowledged 2 record(s) to {topic} ")
    plain = tmp_path / "plain.txt"
    plain.write_text("first\nsecond\n")
    out = ok("produce", topic, "--file", str(plain), "--partition", "1", "--key", "k", kafka=kafka)
    assert re.fullmatch(rf"acknowledged 2 record\(s\) to {topic} \[1\]@(\d+)\.\.(\d+)\n", out)

    bad = redrive("produce", topic, "--json", stdin='{"ok": 1}\n{nope\n', kafka=kafka)
    assert bad.returncode == 1
    assert "line 2 is not valid JSON" in bad.stderr and "nothing sent" in bad.stderr
    assert sum(admin.end_offsets(kafka, topic).values()) == 4

    got = json_lines(ok("consume", topic, "--json", "--max", "4", "--timeout", "10", kafka=kafka))
    seen = sorted((r["key"], r["value"], tuple(map(tuple, r["headers"]))) for r in got)
    assert seen == [
        ("7", '{"id": 7, "n": 2}', (("source", "cli"), ("trace", "a=b"))),
        ("c1", '{"id": "c1", "n": 1}', (("source", "cli"), ("trace", "a=b"))),
        ("k", "first", ()),
        ("k", "second", ()),
    ]
    from_file = [r for r in got if r["key"] == "k"]
    assert [(r["partition"], r["topic"]) for r in from_file] == [(1, topic), (1, topic)]
    assert [r["offset"] for r in from_file] == sorted(r["offset"] for r in from_file)

    only = json_lines(ok("consume", topic, "--json", "--max", "1", "--partition", "1",
                         "--from", str(from_file[1]["offset"]), kafka=kafka))  # fmt: skip
    assert [r["value"] for r in only] == ["second"]
    text = ok("consume", topic, "--partition", "1", "--from", str(from_file[0]["offset"]),
              "--max", "1", "--timeout", "10", kafka=kafka)  # fmt: skip
    assert f"1@{from_file[0]['offset']} key=k first" in text.splitlines()


def test_k3_consume_from_the_end_waits_for_new_records_until_the_timeout(kafka, make_topic) -> None:
    topic = make_topic()
    admin.produce(kafka, topic, ["old-1", "old-2"])
    started = time.monotonic()
    done = redrive("consume", topic, "--from", "end", "--timeout", "1.5", "--json", kafka=kafka)
    took = time.monotonic() - started
    assert (done.returncode, done.stdout, done.stderr) == (0, "", "0 record(s)\n")
    assert 1.5 <= took < 15


def test_k4_a_group_commits_what_was_printed_and_goes_on_from_there(
    kafka, make_topic, names
) -> None:
    topic = make_topic()
    group = names.group()
    admin.produce(kafka, topic, ["a", "b", "c"])
    first = json_lines(ok("consume", topic, "--group", group, "--max", "2", "--json", kafka=kafka))
    assert [r["value"] for r in first] == ["a", "b"]
    assert admin.committed_offsets(kafka, group, topic) == {0: 2}
    rest = json_lines(
        ok("consume", topic, "--group", group, "--timeout", "3", "--json", kafka=kafka)
    )
    assert [r["value"] for r in rest] == ["c"]
    assert admin.committed_offsets(kafka, group, topic) == {0: 3}
    assert (
        ok("consume", topic, "--json", "--max", "3", "--timeout", "10", kafka=kafka).count("\n")
        == 3
    )  # no group: from 0


def _closed_port() -> str:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return f"127.0.0.1:{s.getsockname()[1]}"


@pytest.mark.parametrize(
    "args",
    [("topics", "ls"), ("topics", "create", "t"), ("produce", "t"), ("consume", "t")],
    ids=lambda a: " ".join(a),
)
def test_k5_an_unreachable_broker_is_one_line_naming_it_and_exit_2(args) -> None:
    where = _closed_port()
    started = time.monotonic()
    done = redrive(*args, "--timeout", "2", kafka=where, stdin="x\n")
    assert time.monotonic() - started < 10
    assert done.returncode == 2
    (line,) = done.stderr.splitlines()
    assert line.startswith(f"redrive: no Kafka broker answered at {where} within 2 s (")
    assert "Connection refused" in line
    assert done.stdout == ""


def test_k6_secrets_never_reach_the_output(kafka, make_topic, tmp_path: Path) -> None:
    secret = "s3cr3t-never-shown"
    config = tmp_path / "client.properties"
    config.write_text(
        "security.protocol=SASL_PLAINTEXT\nsasl.mechanism=PLAIN\nsasl.username=alice\n"
        f"sasl.password={secret}\ndebug=security,broker,conf\n"
    )
    topic = make_topic()
    for args in (
        ("topics", "ls"),
        ("topics", "describe", topic, "--log-format", "json"),
        ("produce", topic),
        ("consume", topic),
    ):
        done = redrive(*args, "-v", "--command-config", str(config), "--timeout", "2",
                       kafka=kafka, stdin="x\n")  # fmt: skip
        assert done.returncode == 2, done.stderr  # the broker speaks no SASL: refused
        assert "SASL" in done.stderr.splitlines()[-1]
        assert "sasl.password" in done.stderr  # librdkafka's debug lines went through logging
        assert secret not in done.stdout + done.stderr


@pytest.mark.parametrize(
    "command",
    [("dlt", "ls", "{topic}", "--json"), ("consume", "{topic}", "--json", "--timeout", "5")],
)
def test_k7_a_reader_that_goes_away_ends_the_command_quietly(kafka, make_topic, command) -> None:
    topic = make_topic()
    admin.produce(kafka, topic, [f"record {i}" for i in range(3000)])  # more than a pipe holds
    env = {k: v for k, v in os.environ.items() if k != "REDRIVE_BOOTSTRAP_SERVERS"}
    with subprocess.Popen(
        [sys.executable, "-m", "redrive", *(a.format(topic=topic) for a in command),
         "--bootstrap-servers", kafka],
        stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True, env=env,
    ) as child:  # fmt: skip
        assert child.stdout is not None and child.stderr is not None
        assert child.stdout.readline()  # `| head -1`
        child.stdout.close()
        try:
            assert child.wait(timeout=60) == 141
        finally:
            child.kill()
        assert child.stderr.read() == ""  # no BrokenPipeError traceback


def test_k8_version_and_verbose_after_the_sub_command(kafka, make_topic) -> None:
    assert ok("--version").startswith("redrive ")
    topic = make_topic()
    assert topic in ok("topics", "ls", "-v", kafka=kafka)
    assert topic in ok("topics", "-v", "ls", "--log-format", "json", kafka=kafka)


README = Path(__file__).parents[2] / "README.md"


def test_k9_the_readme_commands_run_as_written(kafka, names, tmp_path: Path) -> None:
    text = README.read_text()
    start = text.index("## Command line: topics, produce, consume")
    block = re.search(r"```sh\n(.*?)```", text[start:], flags=re.S)
    assert block is not None
    topic, group = names.topic("orders"), names.group("audit")
    script = block.group(1).replace("orders", topic).replace("audit", group)
    (tmp_path / f"{topic}.jsonl").write_text('{"id": "o3", "amount": 1}\n')
    env = {**os.environ, "REDRIVE_BOOTSTRAP_SERVERS": kafka}
    done = subprocess.run(
        ["bash", "-euo", "pipefail", "-c",
         f'redrive() {{ "{sys.executable}" -m redrive "$@"; }}\n{script}'],
        cwd=tmp_path, env=env, capture_output=True, text=True, timeout=120,
    )  # fmt: skip
    assert done.returncode == 0, done.stderr
    assert f"created {topic} (3 partition(s))" in done.stdout
    assert f"acknowledged 1 record(s) to {topic} [0]@" in done.stdout
    values = [json.loads(line)["value"] for line in done.stdout.splitlines() if line[:1] == "{"]
    assert sorted(values) == ['{"id": "o1", "amount": 9.5}', '{"id": "o2", "amount": 3}',
                              '{"id": "o3", "amount": 1}']  # fmt: skip
    assert f"deleted {topic}" in done.stdout
