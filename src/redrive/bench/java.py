"""Apache Kafka's own Java consumer as a contender: ``ConsumerPerformance`` (kafka-tools).

Its jars are resolved with Maven once, like the local broker's, into the same user cache
(``<cache>/kafka/<version>/tools``). It runs in a JVM of its own, started by the contender's
child process; throughput is its own ``fetch.nMsg.sec`` (the time from the group join to the
last record, as the Python contenders' window), CPU seconds and peak RSS are the JVM's from
the kernel's accounting, less the CPU of a JVM that starts, joins and reads a single record.
"""

from __future__ import annotations

import resource
import subprocess
from dataclasses import dataclass
from pathlib import Path

from redrive.broker.local import KAFKA_VERSION, SLF4J_VERSION, cache_root, java_binary, maven_libs

MAIN = "org.apache.kafka.tools.ConsumerPerformance"

_POM = """<project xmlns="http://maven.apache.org/POM/4.0.0">
  <modelVersion>4.0.0</modelVersion>
  <groupId>dev.redrive</groupId>
  <artifactId>kafka-tools</artifactId>
  <version>{kafka}</version>
  <dependencies>
    <dependency>
      <groupId>org.apache.kafka</groupId><artifactId>kafka-tools</artifactId>
      <version>{kafka}</version>
    </dependency>
    <dependency>
      <groupId>org.slf4j</groupId><artifactId>slf4j-api</artifactId>
      <version>{slf4j}</version>
    </dependency>
    <dependency>
      <groupId>org.slf4j</groupId><artifactId>slf4j-nop</artifactId>
      <version>{slf4j}</version>
    </dependency>
  </dependencies>
</project>
"""


MARKER = f"slf4j-nop-{SLF4J_VERSION}.jar"  # the last jar of the list: all are there


def tools_libs(version: str = KAFKA_VERSION) -> Path:
    """The folder of kafka-tools' jars, resolved with Maven on first use."""
    home = cache_root() / "kafka" / version / "tools"
    pom = _POM.format(kafka=version, slf4j=SLF4J_VERSION)
    return maven_libs(home, pom, MARKER, f"Apache Kafka's tools {version}")


def tools_resolved(version: str = KAFKA_VERSION) -> bool:
    return (cache_root() / "kafka" / version / "tools" / "libs" / MARKER).exists()


def consumer_performance(bootstrap: str, topic: str, group: str, records: int) -> Run:
    """Run ConsumerPerformance for `records` records in a JVM of its own."""
    cmd = [java_binary(), "-Xmx512m", "-cp", str(tools_libs() / "*"), MAIN,
           "--bootstrap-server", bootstrap, "--topic", topic, "--group", group,
           "--num-records", str(records), "--timeout", "60000"]  # fmt: skip
    before = resource.getrusage(resource.RUSAGE_CHILDREN)
    proc = subprocess.run(cmd, capture_output=True, text=True, timeout=600, check=False)
    after = resource.getrusage(resource.RUSAGE_CHILDREN)
    if proc.returncode != 0:
        tail = " | ".join(proc.stderr.strip().splitlines()[-5:])
        raise RuntimeError(f"ConsumerPerformance failed (exit {proc.returncode}): {tail}")
    lines = [ln for ln in proc.stdout.splitlines() if ln.strip()]
    stats = dict(zip([h.strip() for h in lines[0].split(",")],
                     [v.strip() for v in lines[-1].split(",")], strict=True))  # fmt: skip
    cpu = (after.ru_utime + after.ru_stime) - (before.ru_utime + before.ru_stime)
    return Run(
        records=int(stats["data.consumed.in.nMsg"]),
        seconds=float(stats["fetch.time.ms"]) / 1000,
        cpu_s=cpu,
        peak_rss_mib=after.ru_maxrss / 1024,  # the largest child so far: the JVMs only
    )


@dataclass(frozen=True)
class Run:
    records: int
    seconds: float  # from the group join to the last record (ConsumerPerformance's fetch time)
    cpu_s: float  # the JVM's, from start to exit
    peak_rss_mib: float
