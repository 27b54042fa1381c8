"""The real Spring Kafka, for the interoperability tests: the Maven project in
``interop/spring`` built once into ``~/.cache/redrive/interop/<hash of its sources>/`` (its
Maven repository in ``~/.cache/redrive/interop/m2``) and run as a child process."""

from __future__ import annotations

import hashlib
import json
import os
import shutil
import subprocess
import tempfile
import time
from pathlib import Path
from typing import Any

from redrive.broker.local import cache_root

PROJECT = Path(__file__).resolve().parents[2] / "interop" / "spring"
BUILD_TIMEOUT = 900.0


class Unavailable(Exception):
    """Java or Maven is missing: the tests skip with this reason."""


def missing_tools() -> str | None:
    """Why the Spring program cannot be built or run here, or None."""
    absent = [t for t in ("java", "mvn") if shutil.which(t) is None]
    return f"{' and '.join(absent)} not found on PATH" if absent else None


def source_hash() -> str:
    h = hashlib.sha256()
    files = [PROJECT / "pom.xml", *sorted((PROJECT / "src").rglob("*.java"))]
    for f in files:
        h.update(str(f.relative_to(PROJECT)).encode() + b"\0" + f.read_bytes() + b"\0")
    return h.hexdigest()[:16]


def build(log: list[str] | None = None) -> Path:
    """The path of ``app.jar`` (its ``lib/`` beside it), built with Maven unless cached.

    ``log`` gets one line saying whether it was built and how long that took."""
    reason = missing_tools()
    if reason:
        raise Unavailable(reason)
    root = cache_root() / "interop"
    home = root / source_hash()
    jar = home / "app.jar"
    if jar.exists():
        if log is not None:
            log.append(f"spring interop app cached at {jar}")
        return jar
    root.mkdir(parents=True, exist_ok=True)
    started = time.monotonic()
    with tempfile.TemporaryDirectory(dir=root, prefix="build-") as tmp:
        work = Path(tmp) / "spring"
        shutil.copytree(PROJECT, work, ignore=shutil.ignore_patterns("target"))
        cmd = [
            "mvn", "-q", "-B", f"-Dmaven.repo.local={root / 'm2'}", "-DskipTests",
            "-f", str(work / "pom.xml"), "package",
        ]  # fmt: skip
        done = subprocess.run(cmd, capture_output=True, text=True, timeout=BUILD_TIMEOUT)
        if done.returncode != 0:
            raise RuntimeError(
                f"building {PROJECT} failed ({' '.join(cmd)}):\n{done.stdout[-4000:]}"
                f"\n{done.stderr[-4000:]}"
            )
        staged = Path(tmp) / "out"
        staged.mkdir()
        shutil.copy2(work / "target" / "app.jar", staged / "app.jar")
        shutil.copytree(work / "target" / "lib", staged / "lib")
        try:
            staged.rename(home)  # atomic: a parallel build that won leaves its copy in place
        except OSError:
            if not jar.exists():
                raise
    if log is not None:
        log.append(f"spring interop app built in {time.monotonic() - started:.1f} s at {jar}")
    return jar


def run(jar: Path, mode: str, timeout: float = 150.0, **opts: object) -> list[dict[str, Any]]:
    """Run one mode of the Spring program; its JSON lines. The child is killed (with its
    process group) if it outlives `timeout` or the test is interrupted."""
    args = ["java", "-jar", str(jar), mode]
    for k, v in opts.items():
        args += [f"--{k.replace('_', '-')}", str(v)]
    proc = subprocess.Popen(
        args, stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True, start_new_session=True
    )
    try:
        out, err = proc.communicate(timeout=timeout)
    finally:
        if proc.poll() is None:
            os.killpg(proc.pid, 9)
            proc.wait()
    if proc.returncode != 0:
        raise RuntimeError(f"{' '.join(args)} exited {proc.returncode}:\n{err[-6000:]}")
    return [json.loads(line) for line in out.splitlines() if line.startswith("{")]
