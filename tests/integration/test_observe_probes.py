"""Health probes (O3) over HTTP against a real broker: ``/livez`` fails while a handler
blocks the loop past its poll interval and recovers when it returns; ``/readyz`` is ready
once the listener started and flips as soon as the App is asked to stop."""

from __future__ import annotations

import re
import signal
import threading

import pytest

from redrive import App, Message, admin
from redrive.events import Delivered, Recorder
from redrive.observe import Probes, serve

from .helpers import http_get, wait_for
from .test_signals import child  # noqa: F401 - the fixture: `redrive run` in a child process

pytestmark = pytest.mark.integration

# max.poll.interval.ms must be >= session.timeout.ms; 3 s keeps the blocked wait short
SHORT = {"session.timeout.ms": 3000, "heartbeat.interval.ms": 500, "max.poll.interval.ms": 3000}


def test_o3_livez_fails_while_a_handler_blocks_past_the_poll_interval_and_readyz_flips_at_stop(
    kafka, make_topic, names
) -> None:
    topic = make_topic()
    app = App(kafka, names.group(), kafka=SHORT)
    release = [threading.Event(), threading.Event()]
    handled: list[str] = []

    @app.listener(topic, name="slow", value_deserializer="str")
    def handle(msg: Message) -> None:
        if msg.value.startswith("block"):
            release[int(msg.value[-1])].wait(60)
        handled.append(msg.value)

    recorder = Recorder()
    app.bus.subscribe(recorder)
    probes = Probes().attach(app)
    with serve(0, host="127.0.0.1", probes=probes) as server:
        base = f"http://127.0.0.1:{server.port}"
        assert http_get(f"{base}/readyz") == (503, "failing: not started: slow\n")
        assert http_get(f"{base}/livez")[0] == 200
        app.start()
        try:
            wait_for(lambda: http_get(f"{base}/readyz")[0] == 200, what="ready")
            admin.produce(kafka, topic, ["block-0"])
            wait_for(lambda: recorder.of(Delivered), what="the blocking record handed over")
            wait_for(lambda: http_get(f"{base}/livez")[0] == 503, timeout=30,
                     what="livez failing while the handler blocks")  # fmt: skip
            code, text = http_get(f"{base}/livez")
            assert code == 503 and text.startswith("failing: slow: no poll for "), text
            assert "(limit 3 s)" in text  # the listener's max.poll.interval.ms
            release[0].set()
            wait_for(lambda: http_get(f"{base}/livez")[0] == 200, what="livez back once it returns")
            assert handled == ["block-0"]

            admin.produce(kafka, topic, ["block-1"])
            wait_for(lambda: len(recorder.of(Delivered)) == 2, what="the second record handed over")
            assert http_get(f"{base}/readyz")[0] == 200
            app.stop()  # the handler still blocks: the stop is under way
            assert http_get(f"{base}/readyz") == (503, "failing: stopping: slow\n")
            assert http_get(f"{base}/livez")[0] == 200, "a listener that is stopping is not stuck"
            assert handled == ["block-0"]
        finally:
            release[1].set()
            app.stop()
            app.join(60)
        assert handled == ["block-0", "block-1"]
        assert http_get(f"{base}/readyz")[0] == 503


def test_o3_redrive_run_metrics_port_serves_metrics_and_probes(kafka, make_topic, child) -> None:  # noqa: F811
    topic = make_topic()
    body = f"""
app = App(group_id="served", kafka=FAST)


@app.listener({topic!r}, value_deserializer="str")
def handle(msg: Message) -> None:
    mark(msg.value)
"""
    c = child(kafka, body, "--metrics-port", "0", "--metrics-host", "127.0.0.1")
    c.wait_log("serving /metrics, /livez and /readyz on http://127.0.0.1:")
    port = int(re.search(r"http://127\.0\.0\.1:(\d+)", c.log()).group(1))  # type: ignore[union-attr]
    base = f"http://127.0.0.1:{port}"
    wait_for(lambda: http_get(f"{base}/readyz")[0] == 200, what="ready")
    admin.produce(kafka, topic, ["one"])
    c.wait_mark("one")
    handled = 'redrive_records_handled_total{listener="handle"} 1.0'
    wait_for(lambda: handled in http_get(f"{base}/metrics")[1], what="the record counted")
    assert http_get(f"{base}/livez")[0] == 200
    c.send(signal.SIGTERM)
    assert c.exit(30)[0] == 0
