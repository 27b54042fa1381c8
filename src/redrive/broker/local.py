"""A real, single-node Apache Kafka broker (KRaft) on 127.0.0.1, started by redrive.

The broker's jars are resolved once from Maven Central with Maven into a user cache
(``$XDG_CACHE_HOME/redrive/kafka/<version>``, by default ``~/.cache/redrive``) and run with
the machine's Java 17 or newer. ``LocalKafka`` is a context manager whose exit always stops
the broker::

    with LocalKafka() as kafka:
        print(kafka.bootstrap_servers)   # 127.0.0.1:<port>

Settings are tuned for fast tests and demos: no initial rebalance delay, a low minimum
session timeout, replication factors of 1, and topic auto-creation off.
"""

from __future__ import annotations

import contextlib
import fcntl
import os
import re
import shutil
import signal
import socket
import subprocess
import tempfile
import time
from collections.abc import Iterator, Mapping
from pathlib import Path
from types import TracebackType

from redrive.errors import BrokerError
from redrive.workers import _die_with_parent

KAFKA_VERSION = "4.3.1"
"""The Apache Kafka release the local broker runs (pinned)."""

LOG4J_VERSION = "2.25.3"
SLF4J_VERSION = "2.0.17"

_POM = """<project xmlns="http://maven.apache.org/POM/4.0.0">
  <modelVersion>4.0.0</modelVersion>
  <groupId>dev.redrive</groupId>
  <artifactId>local-kafka</artifactId>
  <version>{kafka}</version>
  <dependencies>
    <dependency>
      <groupId>org.apache.kafka</groupId><artifactId>kafka_2.13</artifactId>
      <version>{kafka}</version>
    </dependency>
    <dependency>
      <groupId>org.apache.logging.log4j</groupId><artifactId>log4j-slf4j2-impl</artifactId>
      <version>{log4j}</version>
    </dependency>
    <dependency>
      <groupId>org.apache.logging.log4j</groupId><artifactId>log4j-core</artifactId>
      <version>{log4j}</version>
    </dependency>
    <dependency>
      <groupId>org.slf4j</groupId><artifactId>slf4j-api</artifactId>
      <version>{slf4j}</version>
    </dependency>
  </dependencies>
</project>
"""

_LOG4J2 = """Configuration:
  Appenders:
    Console:
      name: STDOUT
      PatternLayout:
        pattern: "[%d] %p %m (%c)%n"
  Loggers:
    Root:
      level: {level}
      AppenderRef:
        - ref: STDOUT
"""

# Tuned for tests and demos on one machine: no waiting before the first rebalance, short
# sessions allowed, replication factor 1 everywhere, and no topics created by accident.
FAST_SETTINGS: Mapping[str, str] = {
    "group.initial.rebalance.delay.ms": "0",
    "group.min.session.timeout.ms": "1000",
    "group.consumer.min.session.timeout.ms": "1000",
    "group.consumer.session.timeout.ms": "10000",
    "group.consumer.min.heartbeat.interval.ms": "500",
    "group.consumer.heartbeat.interval.ms": "1000",
    "offsets.topic.replication.factor": "1",
    "offsets.topic.num.partitions": "4",
    "transaction.state.log.replication.factor": "1",
    "transaction.state.log.min.isr": "1",
    "share.coordinator.state.topic.replication.factor": "1",
    "share.coordinator.state.topic.min.isr": "1",
    "default.replication.factor": "1",
    "num.partitions": "1",
    "auto.create.topics.enable": "false",
    "log.flush.interval.messages": "9223372036854775807",
    "num.network.threads": "2",
    "num.io.threads": "4",
    # Share groups (KIP-932) are on in Kafka 4.3 (feature share.version=1 at format). These
    # lower the floors so tests can use short acquisition locks and notice a dead member
    # fast; a group's own values stay the broker defaults (lock 30 s, limit 5) unless set.
    "group.share.min.record.lock.duration.ms": "1000",
    "group.share.min.session.timeout.ms": "1000",
    "group.share.session.timeout.ms": "10000",
    "group.share.min.heartbeat.interval.ms": "500",
    "group.share.heartbeat.interval.ms": "1000",
}


QUICK_RESTART: Mapping[str, str] = {
    "broker.session.timeout.ms": "3000",
    "broker.heartbeat.interval.ms": "500",
}
"""Settings for a broker that is restarted on purpose (``redrive chaos``): after a SIGKILL
the controller fences the broker's old registration after 3 s, not Kafka's 9 s, before it
lets the broker in again."""


def cache_root() -> Path:
    """Where redrive keeps the broker's jars and the state of `redrive broker up`."""
    base = os.environ.get("XDG_CACHE_HOME") or str(Path.home() / ".cache")
    return Path(base) / "redrive"


def java_binary() -> str:
    """The `java` to run the broker with; checks that it is version 17 or newer."""
    home = os.environ.get("JAVA_HOME")
    java = str(Path(home) / "bin" / "java") if home else shutil.which("java")
    if not java or not Path(java).exists():
        raise BrokerError(
            "Java 17 or newer is needed to run the local Kafka broker, and `java` was not "
            "found (PATH or JAVA_HOME). Install a JDK 17 (e.g. `apt-get install "
            "openjdk-17-jre-headless`), or set REDRIVE_BOOTSTRAP_SERVERS to use an "
            "existing Kafka cluster."
        )
    try:
        out = subprocess.run(
            [java, "-version"], capture_output=True, text=True, timeout=30, check=False
        )
    except OSError as exc:
        raise BrokerError(f"could not run {java} -version: {exc}") from exc
    match = re.search(r'version "(\d+)(?:\.(\d+))?', out.stderr + out.stdout)
    if not match:
        raise BrokerError(f"could not read the Java version from `{java} -version`")
    major = int(match.group(1))
    if major == 1 and match.group(2):  # "1.8.0_x" style
        major = int(match.group(2))
    if major < 17:
        raise BrokerError(
            f"Java 17 or newer is needed to run the local Kafka broker; {java} is Java "
            f"{major}. Install a JDK 17 and put it first on PATH (or set JAVA_HOME), or set "
            "REDRIVE_BOOTSTRAP_SERVERS to use an existing Kafka cluster."
        )
    return java


def resolve_jars(version: str = KAFKA_VERSION, cache: Path | None = None) -> Path:
    """Return the folder holding the broker's jars, resolving them with Maven if needed.

    The second call finds them in the cache and downloads nothing. A file lock makes
    concurrent first calls (parallel test sessions) safe.
    """
    home = (cache or cache_root()) / "kafka" / version
    pom = _POM.format(kafka=version, log4j=LOG4J_VERSION, slf4j=SLF4J_VERSION)
    hint = ", or set REDRIVE_BOOTSTRAP_SERVERS to use an existing Kafka cluster"
    return maven_libs(home, pom, f"kafka_2.13-{version}.jar", f"Apache Kafka {version}", hint=hint)


def maven_libs(home: Path, pom: str, marker: str, what: str, *, hint: str = "") -> Path:
    """``home/libs``: the runtime jars of the project `pom`, resolved with Maven once (the
    jar `marker` tells they are there); a file lock makes concurrent first calls safe.
    `hint` ends the advice given when Maven is missing."""
    libs = home / "libs"
    if (libs / marker).exists():
        return libs
    home.mkdir(parents=True, exist_ok=True)
    with open(home / ".lock", "w") as lock:
        fcntl.flock(lock, fcntl.LOCK_EX)
        if (libs / marker).exists():
            return libs
        mvn = shutil.which("mvn")
        if mvn is None:
            raise BrokerError(
                f"Maven (`mvn`) is needed once to download {what} from Maven "
                f"Central into {home}, and it was not found on PATH. Install Maven (e.g. "
                f"`apt-get install maven`){hint}."
            )
        (home / "pom.xml").write_text(pom)
        staging = home / "libs.partial"
        shutil.rmtree(staging, ignore_errors=True)
        repo = home / "m2"
        cmd = [
            mvn, "-B", "-q", f"-Dmaven.repo.local={repo}", "-f", str(home / "pom.xml"),
            "dependency:copy-dependencies", f"-DoutputDirectory={staging}",
            "-DincludeScope=runtime",
        ]  # fmt: skip
        proc = subprocess.run(cmd, capture_output=True, text=True, check=False)
        if proc.returncode != 0:
            tail = "\n".join((proc.stdout + proc.stderr).strip().splitlines()[-15:])
            raise BrokerError(
                f"Maven could not resolve {what} from Maven Central "
                f"(exit {proc.returncode}):\n{tail}"
            )
        shutil.rmtree(libs, ignore_errors=True)
        staging.rename(libs)
        shutil.rmtree(repo, ignore_errors=True)  # the jars are in libs; keep one copy
    return libs


def free_port() -> int:
    with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


def port_in_use(port: int) -> bool:
    with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as s:
        s.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
        try:
            s.bind(("127.0.0.1", port))
        except OSError:
            return True
    return False


def _answers_metadata(bootstrap: str, timeout: float) -> bool:
    """True when a broker at `bootstrap` answers a metadata request."""
    from confluent_kafka.admin import AdminClient

    admin = AdminClient({"bootstrap.servers": bootstrap, "log_level": 0})
    try:
        md = admin.list_topics(timeout=timeout)
    except Exception:
        return False
    return bool(md.brokers)


class LocalKafka:
    """One Apache Kafka broker+controller in KRaft mode on 127.0.0.1.

    ``port=None`` picks a free port. ``data_dir=None`` uses a fresh temporary folder that is
    removed on stop. ``settings`` override broker settings (``server.properties`` keys).
    ``features`` sets feature levels when the storage is formatted (``{"share.version": 0}``
    gives a broker without share groups).

    ``start()`` formats a new cluster. ``restart()`` stops the broker (SIGTERM, or SIGKILL
    with ``kill=True``) and starts it again on the same port, controller port and data
    folder without formatting, as a real broker restart does: records, topics and committed
    offsets are still there (what ``redrive chaos`` does to the broker)::

        with LocalKafka() as kafka:
            kafka.restart(kill=True)   # an unclean stop; the log is recovered at start
    """

    def __init__(
        self,
        port: int | None = None,
        *,
        data_dir: Path | None = None,
        version: str = KAFKA_VERSION,
        settings: Mapping[str, str] | None = None,
        cache: Path | None = None,
        ready_timeout: float = 60.0,
        heap: str = "768m",
        features: Mapping[str, int] | None = None,
        die_with_parent: bool = False,
    ) -> None:
        self.port = port
        self.die_with_parent = die_with_parent
        """SIGTERM the broker when the thread that started it dies, even by SIGKILL
        (Linux's parent-death signal), so a killed driver leaves no broker behind."""
        self.version = version
        self.settings = dict(settings or {})
        self.cache = cache
        self.ready_timeout = ready_timeout
        self.heap = heap
        self.features = dict(features or {})
        self._own_data_dir = data_dir is None
        self.data_dir = data_dir
        self.process: subprocess.Popen[bytes] | None = None
        self.startup_seconds: float | None = None
        self.controller_port: int | None = None

    @property
    def bootstrap_servers(self) -> str:
        if self.port is None:
            raise BrokerError("the local broker has not been started")
        return f"127.0.0.1:{self.port}"

    @property
    def log_path(self) -> Path:
        assert self.data_dir is not None
        return self.data_dir / "broker.log"

    def __enter__(self) -> LocalKafka:
        self.start()
        return self

    def __exit__(
        self,
        exc_type: type[BaseException] | None,
        exc: BaseException | None,
        tb: TracebackType | None,
    ) -> None:
        self.stop()

    def start(self, *, detach: bool = False) -> None:
        """Format a new cluster, start the broker and wait until it answers a metadata
        request."""
        self._launch(fresh=True)

    def restart(self, *, kill: bool = False, timeout: float = 20.0) -> None:
        """Stop the broker (SIGTERM and wait, or SIGKILL at once with `kill`) and start it
        again on the same ports and data folder, keeping its records and offsets."""
        if self.data_dir is None or self.port is None:
            raise BrokerError("restart() needs a broker that was started")
        self._halt(kill=kill, timeout=timeout)
        self._launch(fresh=False)

    def _launch(self, *, fresh: bool) -> None:
        began = time.monotonic()
        java = java_binary()
        libs = resolve_jars(self.version, self.cache)
        if self.port is None:
            self.port = free_port()
        elif port_in_use(self.port):
            raise BrokerError(
                f"port {self.port} on 127.0.0.1 is already in use, so the local Kafka broker "
                "cannot listen there. Stop what uses it (is a broker already up? try "
                "`redrive broker status`), or choose another port with --port."
            )
        if fresh or self.controller_port is None:
            self.controller_port = free_port()
        elif port_in_use(self.controller_port):
            raise BrokerError(
                f"the broker's controller port {self.controller_port} was taken while it was "
                "stopped: it cannot start again with the same cluster"
            )
        controller_port = self.controller_port
        if self.data_dir is None:
            self.data_dir = Path(tempfile.mkdtemp(prefix="redrive-kafka-"))
        self.data_dir.mkdir(parents=True, exist_ok=True)
        logs = self.data_dir / "kafka-logs"
        if fresh:
            shutil.rmtree(logs, ignore_errors=True)
        props = {
            "process.roles": "broker,controller",
            "node.id": "1",
            "controller.quorum.voters": f"1@127.0.0.1:{controller_port}",
            "listeners": f"PLAINTEXT://127.0.0.1:{self.port},CONTROLLER://127.0.0.1:{controller_port}",
            "advertised.listeners": f"PLAINTEXT://127.0.0.1:{self.port}",
            "controller.listener.names": "CONTROLLER",
            "listener.security.protocol.map": "PLAINTEXT:PLAINTEXT,CONTROLLER:PLAINTEXT",
            "inter.broker.listener.name": "PLAINTEXT",
            "log.dirs": str(logs),
            **FAST_SETTINGS,
            **self.settings,
        }
        config = self.data_dir / "server.properties"
        config.write_text("".join(f"{k}={v}\n" for k, v in props.items()))
        log4j = self.data_dir / "log4j2.yaml"
        log4j.write_text(_LOG4J2.format(level=os.environ.get("REDRIVE_BROKER_LOG_LEVEL", "INFO")))
        jvm = [
            java, f"-Xmx{self.heap}", "-Xms128m", "-XX:+UseSerialGC", "-XX:TieredStopAtLevel=1",
            "-Djava.awt.headless=true", f"-Dlog4j2.configurationFile={log4j}",
            "-cp", str(libs / "*"),
        ]  # fmt: skip
        if fresh:
            fmt = subprocess.run(
                # "=": a random id may start with "-", which the tool would read as an option
                [*jvm, "kafka.tools.StorageTool", "format", f"--cluster-id={_cluster_id()}",
                 f"--config={config}", *(f"--feature={k}={v}" for k, v in self.features.items())],
                capture_output=True, text=True, check=False,
            )  # fmt: skip
            if fmt.returncode != 0:
                raise BrokerError(
                    "formatting the broker's KRaft storage failed:\n"
                    + (fmt.stdout + fmt.stderr)[-2000:]
                )
        with open(self.log_path, "ab" if not fresh else "wb") as out:
            self.process = subprocess.Popen(
                [*jvm, "kafka.Kafka", str(config)],
                stdout=out,
                stderr=subprocess.STDOUT,
                stdin=subprocess.DEVNULL,
                start_new_session=True,  # its own process group: stop() takes it all down
                preexec_fn=_die_with_parent() if self.die_with_parent else None,
            )
        try:
            self._wait_ready()
        except BaseException:
            self.stop()
            raise
        self.startup_seconds = time.monotonic() - began

    def _wait_ready(self) -> None:
        assert self.process is not None
        deadline = time.monotonic() + self.ready_timeout
        while time.monotonic() < deadline:
            code = self.process.poll()
            if code is not None:
                raise BrokerError(
                    f"the local Kafka broker exited during start (exit {code}). Last lines of "
                    f"its log:\n{self.log_tail()}\nFull log: {self.log_path}"
                )
            if _port_open(self.port) and _answers_metadata(self.bootstrap_servers, 2.0):
                return
            time.sleep(0.1)
        raise BrokerError(
            f"the local Kafka broker did not answer within {self.ready_timeout:.0f} s. Last "
            f"lines of its log:\n{self.log_tail()}\nFull log: {self.log_path}"
        )

    def _halt(self, *, kill: bool, timeout: float) -> None:
        """Stop the broker's processes, keeping its data."""
        if self.process is None:
            return
        if kill:
            with contextlib.suppress(ProcessLookupError):
                os.killpg(self.process.pid, signal.SIGKILL)
        stop_process_group(self.process.pid, timeout)
        with contextlib.suppress(subprocess.TimeoutExpired):
            self.process.wait(timeout=1)
        self.process = None

    def log_tail(self, lines: int = 20) -> str:
        try:
            text = self.log_path.read_text(errors="replace")
        except OSError:
            return "(no log)"
        return "\n".join(text.strip().splitlines()[-lines:])

    def stop(self, timeout: float = 20.0) -> None:
        """Stop the broker (SIGTERM, then SIGKILL) and remove a temporary data folder."""
        self._halt(kill=False, timeout=timeout)
        if self._own_data_dir and self.data_dir is not None:
            shutil.rmtree(self.data_dir, ignore_errors=True)
            self.data_dir = None


def stop_process_group(pid: int, timeout: float = 20.0) -> None:
    """SIGTERM the process group led by `pid`, wait, then SIGKILL what is left."""
    try:
        os.killpg(pid, signal.SIGTERM)
    except ProcessLookupError:
        return
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        if not _alive(pid):
            return
        time.sleep(0.05)
    with contextlib.suppress(ProcessLookupError):
        os.killpg(pid, signal.SIGKILL)
    for _ in range(100):
        if not _alive(pid):
            return
        time.sleep(0.05)


def _alive(pid: int) -> bool:
    try:
        waited, _ = os.waitpid(pid, os.WNOHANG)
        if waited == pid:
            return False
    except ChildProcessError:
        pass  # not our child: fall back to a signal-0 probe
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    try:  # a zombie still answers signal 0; it is dead for our purpose
        with open(f"/proc/{pid}/stat") as f:
            return f.read().split(")")[-1].split()[0] != "Z"
    except OSError:
        return False


def _port_open(port: int | None) -> bool:
    if port is None:
        return False
    with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as s:
        s.settimeout(0.5)
        return s.connect_ex(("127.0.0.1", port)) == 0


def _cluster_id() -> str:
    import base64
    import uuid

    # Like Kafka's own Uuid.randomUuid: an id starting with "-" would be read as an option
    # by kafka-storage's argument parser (1 start in 64 failed with "expected one argument").
    while True:
        cid = base64.urlsafe_b64encode(uuid.uuid4().bytes).decode().rstrip("=")
        if not cid.startswith("-"):
            return cid


@contextlib.contextmanager
def kafka_for_run(bootstrap_servers: str | None = None, **kwargs: object) -> Iterator[str]:
    """Yield a bootstrap address: the given one, ``REDRIVE_BOOTSTRAP_SERVERS``, or a local
    broker started now and stopped on exit."""
    servers = bootstrap_servers or os.environ.get("REDRIVE_BOOTSTRAP_SERVERS")
    if servers:
        yield servers
        return
    with LocalKafka(**kwargs) as kafka:  # type: ignore[arg-type]
        yield kafka.bootstrap_servers
