"""The README's quick start, run as written: its shell commands in a shell, its module as
``quickstart.py``, against the session's broker.

Two liberties, both about the shared broker: ``redrive broker up`` and ``down`` are left out
(``REDRIVE_BOOTSTRAP_SERVERS`` points at the session's broker instead), and the topic
``orders`` gets a name of its own for this test (other README tests use ``orders`` too).
``redrive run`` is stopped as the quick start says: SIGINT (Ctrl-C) once it logs the dead
letter.
"""

from __future__ import annotations

import os
import re
import signal
import subprocess
import sys
import time
from pathlib import Path

import pytest

pytestmark = pytest.mark.integration

README = Path(__file__).parents[2] / "README.md"


def _quick_start() -> tuple[list[str], str]:
    """The shell commands (a heredoc stays with its command) and the module's source."""
    text = README.read_text()
    start = text.index("## Quick start")
    section = text[start : text.index("\n## ", start + 1)]
    module = re.search(r"`quickstart.py`:\n\n```python\n(.*?)```", section, flags=re.S)
    assert module, "the quick start shows quickstart.py"
    commands: list[str] = []
    for block in re.findall(r"```sh\n(.*?)```", section, flags=re.S):
        lines = iter(block.splitlines())
        for line in lines:
            if not line.strip():
                continue
            command = [line]
            if (heredoc := re.search(r"<<'(\w+)'", line)) is not None:
                for more in lines:
                    command.append(more)
                    if more == heredoc.group(1):
                        break
            commands.append("\n".join(command))
    return commands, module.group(1)


def test_the_quick_start_ends_with_a_dead_letter(kafka, names, tmp_path) -> None:
    commands, module = _quick_start()
    assert [c.split()[:2] for c in commands] == [
        ["redrive", "broker"], ["redrive", "topics"], ["redrive", "produce"],
        ["redrive", "run"], ["redrive", "dlt"], ["redrive", "broker"],
    ]  # fmt: skip
    topic = names.topic("orders")

    def own(text: str) -> str:
        return re.sub(r"\borders\b", topic, text)

    (tmp_path / "quickstart.py").write_text(own(module))
    env = {
        **os.environ,
        "REDRIVE_BOOTSTRAP_SERVERS": kafka,
        "PATH": f"{Path(sys.executable).parent}{os.pathsep}{os.environ['PATH']}",
        "PYTHONUNBUFFERED": "1",
    }
    listed = ""
    for command in map(own, commands):
        if command.startswith("redrive broker"):
            continue  # the session's broker stands for the local one
        if command.startswith("redrive run"):
            _run_until_dead_lettered(command, tmp_path, env)
            continue
        done = subprocess.run(["bash", "-c", command], cwd=tmp_path, env=env,
                              capture_output=True, text=True, timeout=60)  # fmt: skip
        assert done.returncode == 0, f"{command}\n{done.stdout}\n{done.stderr}"
        listed = done.stdout
    assert "KeyError" in listed and topic in listed, listed  # o2, from the source topic
    assert listed.count("KeyError") == 1


def _run_until_dead_lettered(command: str, cwd: Path, env: dict[str, str]) -> None:
    out = cwd / "run.log"
    with out.open("w") as log:
        proc = subprocess.Popen(["bash", "-c", f"exec {command}"], cwd=cwd, env=env,
                                stdout=log, stderr=subprocess.STDOUT)  # fmt: skip
    try:
        deadline = time.monotonic() + 60
        while "dead-lettered" not in out.read_text():
            assert proc.poll() is None, out.read_text()
            assert time.monotonic() < deadline, f"no dead letter within 60 s:\n{out.read_text()}"
            time.sleep(0.1)
        proc.send_signal(signal.SIGINT)  # Ctrl-C
        assert proc.wait(30) == 0, out.read_text()
    finally:
        if proc.poll() is None:
            proc.kill()
            proc.wait()
    logged = out.read_text()
    assert "shipping 3 x apple" in logged and "shipping 2 x pear" in logged, logged
    assert "fatal: not retried): KeyError: 'sku'" in logged, logged
