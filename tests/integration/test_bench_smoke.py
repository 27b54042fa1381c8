"""`redrive bench` keeps working: a small run against the session's broker, checking the
shape of its JSON, never its speed. Peers that are not installed are reported as skipped."""

from __future__ import annotations

import importlib.util
import json

import pytest

from redrive.cli import main

pytestmark = pytest.mark.integration


def test_bench_smoke_json_shape(kafka, capsys) -> None:
    code = main(["bench", "--bootstrap-servers", kafka, "--records", "3000", "--rounds", "1",
                 "--partitions", "3", "--io-records", "600", "--workers-records", "20000",
                 "--json"])  # fmt: skip
    assert code == 0
    result = json.loads(capsys.readouterr().out)
    rows = {r["contender"]: r for r in result["throughput"]}
    assert {"tuned", "no-commit", "baseline", "redrive-record", "redrive-batch",
            "redrive-record+bus", "redrive-record+metrics", "redrive-record+tracing",
            "redrive-outputs", "redrive-transaction"} <= set(rows)  # fmt: skip
    for name, needs in [("faststream-aiokafka", "faststream"),
                        ("faststream-confluent", "faststream"),
                        ("aiokafka-getmany", "aiokafka")]:  # fmt: skip
        installed = importlib.util.find_spec(needs) is not None
        assert (name in rows) == installed and (name in result["skipped"]) != installed
    # Apache Kafka's Java consumer: the machine that runs the broker has Java and Maven
    java = rows["java-consumer"]
    assert java["records_per_s"] > 0 and java["peak_rss_mib"] > 50 and java["cpu_s"] >= 0
    assert java["thread_us"] is None  # in a JVM: no handling thread of ours to measure
    assert all(rows[c]["thread_us"] > 0 for c in ("tuned", "redrive-record", "redrive-batch"))
    for r in rows.values():
        assert r["records_per_s"] > 0 and r["cpu_s"] >= 0 and r["peak_rss_mib"] > 0
        assert isinstance(r["ratio"], float)
    assert rows["tuned"]["ratio"] == 1.0  # the reference: the tuned loop
    assert [m["mode"] for m in result["io"]["modes"]] == [
        "sequential",
        "ordering=partition",
        "ordering=key",
    ]
    assert all(m["records_per_s"] > 0 for m in result["io"]["modes"])
    assert result["sizes"]["records"] == 3000 and result["versions"]["confluent-kafka"]
    workers = result["workers"]  # redrive run --workers 1 and 2, a CPU-bound handler
    assert [m["workers"] for m in workers["modes"]] == [1, 2] and workers["spin"] > 0
    assert all(m["records_per_s"] > 0 and m["cpu_s"] > 0 for m in workers["modes"])
    assert isinstance(workers["scaling"], float)
