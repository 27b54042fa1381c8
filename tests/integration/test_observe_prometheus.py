"""Prometheus metrics (O3) as a real Prometheus server sees them: it scrapes a running
listener through a scenario with failures, retries and dead letters, and its HTTP API must
give back what the scenario did. The shipped alert rules pass ``promtool test rules``."""

from __future__ import annotations

import json
import shutil
import socket
import subprocess
import threading
import urllib.parse
import urllib.request
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path

import pytest

from redrive import App, BackOff, Message, Retry, admin
from redrive.events import DeadLettered, Failed, Recorder, Succeeded
from redrive.observe import Metrics, Probes, serve
from redrive.observe.metrics import METRICS

from .helpers import FAST, http_get, running, wait_for

pytestmark = pytest.mark.integration

HERE = Path(__file__).parent


class Flaky(Exception):
    """Fails once."""


class Poison(Exception):
    """Fails every time."""


def _binary(name: str) -> str:
    path = shutil.which(name)
    if path is None:
        pytest.fail(f"{name} is not installed: `make prometheus` installs Debian's prometheus")
    return path


def _free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


@contextmanager
def prometheus(target: str, workdir: Path) -> Iterator[str]:
    """A Prometheus server scraping `target` every second (free port, data in `workdir`);
    always stopped on the way out."""
    port = _free_port()
    config = workdir / "prometheus.yml"
    config.write_text(
        "global: {scrape_interval: 1s, evaluation_interval: 1s}\n"
        "scrape_configs:\n"
        f"  - job_name: redrive\n    static_configs: [{{targets: ['{target}']}}]\n"
    )
    log = (workdir / "prometheus.log").open("w")
    proc = subprocess.Popen(
        [_binary("prometheus"), f"--config.file={config}",
         f"--storage.tsdb.path={workdir / 'data'}", f"--web.listen-address=127.0.0.1:{port}",
         "--log.level=warn"],
        stdout=log, stderr=subprocess.STDOUT,
    )  # fmt: skip
    url = f"http://127.0.0.1:{port}"
    try:
        wait_for(lambda: http_get(f"{url}/-/ready")[0] == 200 or proc.poll() is not None,
                 what="Prometheus ready")  # fmt: skip
        assert proc.poll() is None, (workdir / "prometheus.log").read_text()
        yield url
    finally:
        proc.terminate()
        try:
            proc.wait(15)
        except subprocess.TimeoutExpired:
            proc.kill()
            proc.wait(15)
        log.close()


def _query(url: str, promql: str) -> list[tuple[dict[str, str], float]]:
    status, body = http_get(f"{url}/api/v1/query?{urllib.parse.urlencode({'query': promql})}")
    assert status == 200, body
    return [(r["metric"], float(r["value"][1])) for r in json.loads(body)["data"]["result"]]


def _value(url: str, promql: str) -> float | None:
    got = _query(url, promql)
    return got[0][1] if len(got) == 1 else None


def test_o3_prometheus_scrapes_what_the_scenario_did(kafka, make_topic, names, tmp_path) -> None:
    topic = make_topic()
    values = ['{"n": 0}', '{"n": 1}', '"flaky"', '{"n": 2}', '"poison"', "{not json", '{"n": 3}']
    admin.produce(kafka, topic, values)
    app = App(kafka, names.group(), kafka=FAST, lag_interval=1.0)
    flaked = threading.Event()

    @app.listener(topic, name="orders", value_deserializer="json",
                  retry=Retry(BackOff.fixed(0.2, max_attempts=3)))  # fmt: skip
    def handle(msg: Message) -> None:
        if msg.value == "poison":
            raise Poison("cannot ever handle this")
        if msg.value == "flaky" and not flaked.is_set():
            flaked.set()
            raise Flaky("downstream timed out")

    metrics = Metrics().attach(app)
    probes = Probes().attach(app)
    recorder = Recorder()
    app.bus.subscribe(recorder)
    with (
        serve(0, host="127.0.0.1", metrics=metrics, probes=probes) as server,
        prometheus(f"127.0.0.1:{server.port}", tmp_path) as url,
        running(app),
    ):
        wait_for(lambda: (admin.committed_offsets(kafka, app.group_id or "", topic)
                          == {0: len(values)} and len(recorder.of(DeadLettered)) == 2),
                 what="every record handled or dead-lettered, and committed")  # fmt: skip
        failed = recorder.of(Failed)
        expect = {
            'redrive_records_received_total{listener="orders"}': None,  # re-polls: >= 7
            'redrive_records_handled_total{listener="orders"}': 5,
            'redrive_records_failed_total{exception="Flaky"}': 1,
            'redrive_records_failed_total{exception="Poison"}': 3,
            'redrive_records_failed_total{exception="DeserializationError"}': 1,
            'redrive_records_retried_total{mode="seek"}': 3,  # flaky once, poison twice
            "redrive_records_dead_lettered_total": 2,
            'redrive_records_recovered_total{outcome="dead_letter"}': 2,
            "redrive_deserialization_failures_total": 1,
            "redrive_handling_duration_seconds_count": None,  # once per poll with records
            'redrive_consumer_lag_records{partition="0"}': 0,
            "redrive_assigned_partitions": 1,
            "redrive_paused_partitions": 0,
            "redrive_listener_running": 1,
            "redrive_circuit_breaker_open": 0,
            'up{job="redrive"}': 1,
        }
        assert len(failed) == 5 and len(recorder.of(Succeeded)) == 5, "the scenario ran as planned"

        differ: dict[str, tuple[float | None, float | None]] = {}

        def scraped() -> bool:
            differ.clear()
            for promql, want in expect.items():
                got = _value(url, f"sum({promql})")
                if got is None or (want is not None and got != want):
                    differ[promql] = (got, want)
            return not differ

        try:
            wait_for(scraped, timeout=30, what="Prometheus to scrape the final values")
        except AssertionError as exc:
            raise AssertionError(f"{exc}; (scraped, expected): {differ}") from None
        assert _value(url, 'sum(redrive_records_received_total{listener="orders"})') >= 7
        assert _value(url, "sum(redrive_commits_total)") >= 1
        ready = http_get(f"http://127.0.0.1:{server.port}/readyz")
        live = http_get(f"http://127.0.0.1:{server.port}/livez")
        assert ready[0] == 200 and live[0] == 200, (ready, live)
        series = _query(url, '{__name__=~"redrive_.+", job="redrive"}')
    # One sample of each metric, as Prometheus stored it (the closing note quotes them).
    first: dict[str, str] = {}
    for labels, value in sorted(series, key=lambda s: sorted(s[0].items())):
        name = labels.pop("__name__")
        if name.endswith(("_created", "_bucket")):
            continue
        labels.pop("job")
        labels.pop("instance")
        labels.pop("topic", None)
        labels.pop("group", None)
        text = ",".join(f'{k}="{v}"' for k, v in sorted(labels.items()))
        first.setdefault(name, f"{name}{{{text}}} {value:g}")
    print("\n" + "\n".join(first[k] for k in sorted(first)))
    for name, kind, _labels, _text in METRICS:
        stored = name if kind != "histogram" else f"{name}_count"
        if name in (
            "redrive_partition_paused_until_timestamp_seconds",
            "redrive_retry_topic_lateness_seconds",
            "redrive_handler_duration_seconds",
        ):
            continue  # only while paused / for retry-topic listeners / with per_record=True
        assert stored in first, f"{stored} was not scraped"


def test_o3_shipped_alert_rules_pass_promtool() -> None:
    out = subprocess.run(
        [_binary("promtool"), "test", "rules", "alerts_test.yml"],
        cwd=HERE / "prometheus", capture_output=True, text=True, timeout=60,
    )  # fmt: skip
    assert out.returncode == 0, out.stdout + out.stderr
    assert "SUCCESS" in out.stdout
