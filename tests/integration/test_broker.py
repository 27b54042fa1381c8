"""The local broker launcher: cache reuse, clean stop, and the errors users see."""

from __future__ import annotations

import os
import socket
import subprocess
from pathlib import Path

import pytest

from redrive.broker import LocalKafka, resolve_jars
from redrive.broker.local import KAFKA_VERSION, _alive
from redrive.errors import BrokerError

pytestmark = pytest.mark.integration


def test_second_start_uses_the_cache_and_stop_leaves_nothing(
    kafka: str, monkeypatch: pytest.MonkeyPatch
) -> None:
    libs = resolve_jars()  # the session broker already resolved the jars
    before = {p.name: p.stat().st_mtime_ns for p in libs.iterdir()}
    monkeypatch.setenv(
        "JAVA_HOME", os.environ.get("JAVA_HOME") or str(Path(_java()).resolve().parents[1])
    )
    monkeypatch.setenv("PATH", "/nonexistent")  # no mvn reachable: a download would fail loudly
    broker = LocalKafka()
    broker.start()
    monkeypatch.undo()
    pid = broker.process.pid if broker.process else -1
    data = broker.data_dir
    assert broker.startup_seconds is not None
    broker.stop()
    assert not _alive(pid)
    assert data is not None and not data.exists()
    assert {p.name: p.stat().st_mtime_ns for p in libs.iterdir()} == before
    ps = subprocess.run(["ps", "-eo", "pid,args"], capture_output=True, text=True).stdout
    assert str(data) not in ps


def _java() -> str:
    import shutil

    java = shutil.which("java")
    assert java
    return java


def test_port_taken_is_refused_with_the_fix(kafka: str) -> None:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        s.listen()
        port = s.getsockname()[1]
        with pytest.raises(BrokerError) as err:
            LocalKafka(port).start()
    assert str(err.value).startswith(f"port {port} on 127.0.0.1 is already in use")
    assert "--port" in str(err.value)


def test_java_missing_is_named(monkeypatch: pytest.MonkeyPatch, tmp_path: Path) -> None:
    monkeypatch.delenv("JAVA_HOME", raising=False)
    monkeypatch.setenv("PATH", str(tmp_path))
    with pytest.raises(BrokerError) as err:
        LocalKafka().start()
    assert str(err.value).startswith(
        "Java 17 or newer is needed to run the local Kafka broker, and `java` was not found"
    )


def test_java_too_old_is_named(monkeypatch: pytest.MonkeyPatch, tmp_path: Path) -> None:
    fake = tmp_path / "java"
    fake.write_text("#!/bin/sh\necho 'openjdk version \"11.0.2\" 2019-01-15' >&2\n")
    fake.chmod(0o755)
    monkeypatch.delenv("JAVA_HOME", raising=False)
    monkeypatch.setenv("PATH", str(tmp_path))
    with pytest.raises(BrokerError, match=r"is Java 11\."):
        LocalKafka().start()


def test_maven_missing_and_nothing_cached(monkeypatch: pytest.MonkeyPatch, tmp_path: Path) -> None:
    monkeypatch.setenv("JAVA_HOME", str(Path(_java()).resolve().parents[1]))
    monkeypatch.setenv("PATH", str(tmp_path))
    with pytest.raises(BrokerError) as err:
        LocalKafka(cache=tmp_path / "empty-cache").start()
    assert "Maven (`mvn`) is needed once to download Apache Kafka" in str(err.value)


def test_broker_that_exits_during_start_shows_its_log(tmp_path: Path) -> None:
    broker = LocalKafka(settings={"num.io.threads": "not-a-number"})
    with pytest.raises(BrokerError) as err:
        broker.start()
    text = str(err.value)
    assert "exited during start" in text or "formatting the broker's KRaft storage failed" in text
    assert broker.process is None


def test_version_is_a_4x_release() -> None:
    assert KAFKA_VERSION.startswith("4.")
