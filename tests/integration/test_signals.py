"""`redrive run` stops on SIGTERM and SIGINT in every phase (C4; issue 11).

Each test writes a small module into a temp dir and runs ``python -m redrive run svc:app``
from there, against the session's broker (or an address where nothing answers). The child
says where it is by a log line or a marker file its handler writes; the test then sends the
signal and measures the time to exit. What bounds that time is the listener's
``drain_timeout`` (and the time to commit and leave the group), never the code's
``connect_timeout`` (60 s in these modules).
"""

from __future__ import annotations

import json
import os
import signal
import socket
import subprocess
import sys
import threading
import time
from collections.abc import Callable, Iterator
from pathlib import Path

import pytest

from redrive import App, Message, admin
from redrive.errors import KafkaUnavailable

from .helpers import wait_for

pytestmark = pytest.mark.integration

UNREACHABLE = "127.0.0.1:1"

HEADER = """\
import os
import time
from pathlib import Path

from redrive import App, BackOff, DeadLetter, Message, Retry

MARKS = Path(os.environ["SVC_MARKS"])
FAST = {"session.timeout.ms": 6000, "heartbeat.interval.ms": 500}


def mark(name: str) -> None:  # the event the test waits for
    (MARKS / name).write_text(str(time.time()))


"""


class Child:
    """``python -m redrive run svc:app ARGS`` in `tmp`, its output in ``out.log``."""

    def __init__(self, tmp: Path, kafka: str, body: str, *args: str) -> None:
        self.dir = tmp
        self.marks = tmp / "marks"
        self.marks.mkdir(parents=True)
        (tmp / "svc.py").write_text(HEADER + body)
        self.out = tmp / "out.log"
        env = {**os.environ, "REDRIVE_BOOTSTRAP_SERVERS": kafka, "SVC_MARKS": str(self.marks)}
        with self.out.open("wb") as out:
            self.proc = subprocess.Popen(
                [sys.executable, "-m", "redrive", "run", "svc:app", *args],
                cwd=tmp, env=env, stdout=out, stderr=subprocess.STDOUT,
            )  # fmt: skip
        self.signalled = 0.0

    def log(self) -> str:
        return self.out.read_text(errors="replace")

    def _alive(self, what: str) -> bool:
        if self.proc.poll() is not None:
            raise AssertionError(f"the child exited ({self.proc.returncode}) before {what}:\n"
                                 + self.log())  # fmt: skip
        return True

    def wait_log(self, text: str, timeout: float = 30.0) -> None:
        wait_for(lambda: self._alive(text) and text in self.log(), timeout, f"log line {text!r}")

    def wait_mark(self, name: str, timeout: float = 30.0) -> None:
        path = self.marks / name
        wait_for(lambda: self._alive(name) and path.exists(), timeout, f"marker {name}")

    def send(self, sig: signal.Signals = signal.SIGTERM) -> None:
        self.signalled = self.signalled or time.monotonic()
        self.proc.send_signal(sig)

    def exit(self, timeout: float) -> tuple[int, float]:
        """The exit code and the seconds from the first signal to the exit."""
        try:
            code = self.proc.wait(timeout)
        except subprocess.TimeoutExpired:
            raise AssertionError(f"still running {timeout:g} s after the signal:\n"
                                 + self.log()) from None  # fmt: skip
        return code, time.monotonic() - self.signalled

    def kill(self) -> None:
        if self.proc.poll() is None:
            self.proc.kill()
            self.proc.wait()


@pytest.fixture
def child(tmp_path: Path) -> Iterator[Callable]:
    started: list[Child] = []

    def start(kafka: str, body: str, *args: str) -> Child:
        c = Child(tmp_path / f"c{len(started)}", kafka, body, *args)
        started.append(c)
        return c

    try:
        yield start
    finally:
        for c in started:
            c.kill()


def took(phase: str, seconds: float) -> None:
    print(f"time to exit, {phase}: {seconds:.2f} s")  # shown with -rP: the report's figures


# -- connecting ---------------------------------------------------------------------------

CONNECTING = """\
app = App(group_id="g", connect_timeout=60)


@app.listener("orders")
def handle(msg: Message) -> None: ...
"""


@pytest.mark.parametrize("sig", [signal.SIGTERM, signal.SIGINT])
def test_signal_while_connecting_stops_at_once(child, sig) -> None:
    c = child(UNREACHABLE, CONNECTING, "--log-format", "json")
    c.wait_log("Connect to ipv4#127.0.0.1:1 failed")  # librdkafka tried: start-up is waiting
    c.send(sig)
    code, seconds = c.exit(10)
    took(f"connecting ({sig.name})", seconds)
    assert code == 0, c.log()
    assert seconds < 3  # not the code's connect_timeout of 60 s
    out = c.log()
    assert "stopped while waiting for Kafka: no listener was started" in out
    for line in out.splitlines():  # librdkafka's lines too: through logging, as JSON
        json.loads(line)


def test_two_signals_while_connecting_exit_at_once(child) -> None:
    c = child(UNREACHABLE, CONNECTING)
    c.wait_log("Connect to ipv4#127.0.0.1:1 failed")
    c.send()
    c.send()
    code, seconds = c.exit(10)
    took("connecting, two signals", seconds)
    assert code in (0, 143), c.log()  # the first may have finished before the second came
    assert seconds < 3


def test_give_up_after(child) -> None:
    c = child(UNREACHABLE, CONNECTING, "--give-up-after", "1")
    c.signalled = time.monotonic()
    code, seconds = c.exit(15)
    assert code == 2, c.log()
    assert "no Kafka broker answered at 127.0.0.1:1 within 1 s" in c.log()


def test_stop_ends_the_wait_for_the_broker_in_process() -> None:
    app = App(UNREACHABLE, "g", connect_timeout=None)  # wait as long as it takes

    @app.listener("orders")
    def handle(msg: Message) -> None: ...

    timer = threading.Timer(1.0, app.stop)
    timer.start()
    began = time.monotonic()
    try:
        app.start()  # returns once stop() is seen: nothing started
    finally:
        timer.cancel()
    assert time.monotonic() - began < 1.0 + 1.5
    assert not app.loops
    app.join(1)  # nothing to wait for, no error


def test_the_address_is_read_when_the_app_starts() -> None:
    app = App("127.0.0.1:9", "g", connect_timeout=0.5)

    @app.listener("orders")
    def handle(msg: Message) -> None: ...

    app.bootstrap_servers = UNREACHABLE  # what redrive run --bootstrap-servers does
    with pytest.raises(KafkaUnavailable, match="no Kafka broker answered at 127.0.0.1:1 within"):
        app.start()
    assert app.specs[0].kafka["bootstrap.servers"] == UNREACHABLE


class Forwarder:
    """A TCP port that refuses connections until ``listen()``, then forwards them to
    `target` (a broker that is down at first, then comes up)."""

    def __init__(self, target: str) -> None:
        host, port = target.rsplit(":", 1)
        self.target = (host, int(port))
        self.sock = socket.socket()
        self.sock.bind(("127.0.0.1", 0))  # bound, not listening: connections are refused
        self.address = f"127.0.0.1:{self.sock.getsockname()[1]}"
        self.closed = threading.Event()
        self.conns: list[socket.socket] = []

    def listen(self) -> None:
        self.sock.listen()
        threading.Thread(target=self._accept, daemon=True).start()

    def _accept(self) -> None:
        while not self.closed.is_set():
            try:
                conn, _ = self.sock.accept()
            except OSError:
                return
            upstream = socket.create_connection(self.target)
            self.conns += [conn, upstream]
            for a, b in ((conn, upstream), (upstream, conn)):
                threading.Thread(target=self._pump, args=(a, b), daemon=True).start()

    @staticmethod
    def _pump(src: socket.socket, dst: socket.socket) -> None:
        try:
            while data := src.recv(65536):
                dst.sendall(data)
        except OSError:
            pass
        finally:
            for s in (src, dst):
                try:
                    s.shutdown(socket.SHUT_RDWR)
                except OSError:
                    pass

    def close(self) -> None:
        self.closed.set()
        self.sock.close()
        for conn in self.conns:
            conn.close()


def test_broker_down_at_start_is_waited_for(kafka, child, make_topic) -> None:
    topic = make_topic()
    admin.produce(kafka, topic, ["m1"])
    body = f"""\
app = App({UNREACHABLE!r}, group_id="g-{topic}", connect_timeout=1, kafka=FAST)


@app.listener({topic!r})
def handle(msg: Message) -> None:
    mark("handled")
"""
    proxy = Forwarder(kafka)
    try:
        # the command line wins over the code's address; the code's connect_timeout=1 is
        # replaced by redrive run's "keep trying"
        c = child(UNREACHABLE, body, "--bootstrap-servers", proxy.address)
        c.wait_log("still trying", timeout=20)  # past 1 s, and past 10 s: no exit
        failures = c.log().count(f"Connect to ipv4#{proxy.address} failed")
        assert 1 <= failures <= 2, c.log()  # one a kind per 30 s, not 20 a second
        proxy.listen()
        c.wait_mark("handled", timeout=60)
        assert "answered after" in c.log()
        c.send()
        code, seconds = c.exit(30)
        took("consuming after the broker came up", seconds)
        assert code == 0, c.log()
    finally:
        proxy.close()


# -- waiting for partitions ----------------------------------------------------------------


def test_signal_while_waiting_for_partitions(kafka, child, names) -> None:
    body = f"""\
app = App(group_id={names.group()!r}, connect_timeout=60, kafka=FAST)


@app.listener({names.topic("missing")!r})  # never created: no partition is ever assigned
def handle(msg: Message) -> None: ...
"""
    c = child(kafka, body)
    c.wait_log("handle: started, group")
    c.send()
    code, seconds = c.exit(20)
    took("waiting for partitions", seconds)
    assert code == 0, c.log()
    assert seconds < 5


# -- handling a record ---------------------------------------------------------------------


def _one_record(kafka: str, make_topic, names, handler: str, **options: object) -> tuple[str, str]:
    topic = make_topic()
    admin.produce(kafka, topic, ["m1", "m2"])
    group = names.group()
    opts = "".join(f", {k}={v}" for k, v in options.items())
    body = f"""\
app = App(group_id={group!r}, connect_timeout=60, kafka=FAST)


@app.listener({topic!r}, max_poll_records=1{opts})
def handle(msg: Message) -> None:
{handler}
"""
    return topic, body


def test_signal_while_handling_finishes_the_record_and_commits(kafka, child, make_topic, names):
    handler = """\
    if msg.value == b"m1":
        mark("inside")
        time.sleep(3)
        mark("done")
"""
    topic, body = _one_record(kafka, make_topic, names, handler)
    c = child(kafka, body)
    c.wait_mark("inside")
    c.send()
    code, seconds = c.exit(30)
    took("handling a record (3 s handler, finished)", seconds)
    assert code == 0, c.log()
    assert (c.marks / "done").exists()
    assert seconds < 3 + 5
    assert admin.committed_offsets(kafka, names.group(), topic) == {0: 1}  # m2 not taken


def test_handler_still_running_after_drain_timeout_is_abandoned(kafka, child, make_topic, names):
    handler = """\
    mark("inside")
    time.sleep(600)
"""
    topic, body = _one_record(kafka, make_topic, names, handler, drain_timeout=2.0)
    c = child(kafka, body)
    c.wait_mark("inside")
    c.send()
    code, seconds = c.exit(30)
    took("handling a record (stuck handler, drain_timeout=2)", seconds)
    assert code == 2, c.log()
    assert "listener(s) handle still busy (in a handler) 2 s (drain_timeout) after" in c.log()
    assert 2 <= seconds < 2 + 4
    assert admin.committed_offsets(kafka, names.group(), topic)[0] in (None, 0)


@pytest.mark.parametrize("sig", [signal.SIGTERM, signal.SIGINT])
def test_second_signal_exits_at_once(kafka, child, make_topic, names, sig) -> None:
    handler = """\
    mark("inside")
    time.sleep(600)
"""
    topic, body = _one_record(kafka, make_topic, names, handler)
    c = child(kafka, body)
    c.wait_mark("inside")
    c.send(sig)
    c.wait_log("stopping gracefully (send it again to exit at once)")
    c.send(sig)
    code, seconds = c.exit(10)
    took(f"second {sig.name} while a handler runs", seconds)
    assert code == 128 + sig, c.log()
    assert seconds < 3
    assert f"received {sig.name} again: exiting at once with code {128 + sig}" in c.log()


# -- backing off, recovering -----------------------------------------------------------------


def test_signal_while_backing_off(kafka, child, make_topic, names) -> None:
    handler = """\
    mark("failed")
    raise ConnectionError("downstream unavailable")
"""
    topic, body = _one_record(
        kafka, make_topic, names, handler,
        retry="Retry.seek(BackOff.fixed(60.0, max_attempts=5))",
    )  # fmt: skip
    c = child(kafka, body)
    c.wait_log("retry in 60.00s")  # failed, partition paused for a minute
    c.send()
    code, seconds = c.exit(20)
    took("backing off (partition paused)", seconds)
    assert code == 0, c.log()
    assert seconds < 5
    assert admin.committed_offsets(kafka, names.group(), topic)[0] in (None, 0)


def test_signal_while_retrying_a_dead_letter_write(kafka, child, make_topic, names) -> None:
    handler = """\
    raise ValueError("bad record")  # fatal: straight to the dead-letter topic, which is missing
"""
    # Named by a function, the dead-letter topic is not created at start: it stays missing.
    recoverer = "DeadLetter(topic=lambda msg: msg.topic + '-dlt')"
    topic, body = _one_record(kafka, make_topic, names, handler, recoverer=recoverer)
    c = child(kafka, body)
    c.wait_log("failed, retrying in")  # the dead-letter write failed; recovery waits
    c.send()
    code, seconds = c.exit(20)
    took("retrying a dead-letter write (topic missing)", seconds)
    assert code == 0, c.log()
    assert seconds < 5
    assert admin.committed_offsets(kafka, names.group(), topic)[0] in (None, 0)


# -- draining concurrency --------------------------------------------------------------------


def _concurrent(kafka: str, make_topic, names, handler: str, drain: float) -> tuple[str, str]:
    topic = make_topic(partitions=4)
    for p in range(4):
        admin.produce(kafka, topic, [f"p{p}"], partition=p)
    body = f"""\
app = App(group_id={names.group()!r}, connect_timeout=60, kafka=FAST)


@app.listener({topic!r}, concurrency=4, drain_timeout={drain})
def handle(msg: Message) -> None:
    mark("inside-" + msg.value.decode())
{handler}
"""
    return topic, body


def test_signal_while_concurrent_handlers_run_drains_them(kafka, child, make_topic, names):
    topic, body = _concurrent(kafka, make_topic, names, "    time.sleep(3)\n", drain=30.0)
    c = child(kafka, body)
    for p in range(4):
        c.wait_mark(f"inside-p{p}")
    c.send()
    code, seconds = c.exit(30)
    took("draining concurrency (3 s handlers)", seconds)
    assert code == 0, c.log()
    assert seconds < 3 + 5
    assert admin.committed_offsets(kafka, names.group(), topic) == {p: 1 for p in range(4)}


def test_concurrent_handlers_past_drain_timeout_are_abandoned(kafka, child, make_topic, names):
    topic, body = _concurrent(kafka, make_topic, names, "    time.sleep(600)\n", drain=2.0)
    c = child(kafka, body)
    for p in range(4):
        c.wait_mark(f"inside-p{p}")
    c.send()
    code, seconds = c.exit(30)
    took("draining concurrency (stuck handlers, drain_timeout=2)", seconds)
    assert code == 0, c.log()  # abandoned per C4: nothing of them committed, group left
    assert 2 <= seconds < 2 + 5
    assert "running records abandoned at stop" in c.log()
    assert set(admin.committed_offsets(kafka, names.group(), topic).values()) <= {None, 0}


# -- the run guard -------------------------------------------------------------------------


def test_unguarded_app_run_is_refused_with_the_fix(kafka, child, names) -> None:
    body = f"""\
app = App(group_id={names.group()!r})


@app.listener({names.topic()!r})
def handle(msg: Message) -> None: ...


app.run()
"""
    c = child(kafka, body)
    c.signalled = time.monotonic()
    code, seconds = c.exit(20)
    assert code == 2, c.log()
    out = c.log()
    assert "App.run() was called while `redrive run svc:app` imported 'svc'" in out
    assert 'if __name__ == "__main__": app.run()' in out
    assert ": started, group" not in out  # nothing ran
