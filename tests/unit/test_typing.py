"""`mypy --strict` rejects listener mistakes and accepts correct usage (tests/typing/).

``tests/typing/mistakes.py`` tags each line that must fail with ``# E:`` and a fragment;
``tests/typing/usage.py`` must be clean. Both are type-checked, never run.
"""

from __future__ import annotations

import re
import subprocess
import sys
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[2]
CASES = ROOT / "tests" / "typing"
MISTAKES = CASES / "mistakes.py"
USAGE = CASES / "usage.py"
_ERROR = re.compile(r"^(?P<path>[^:]+):(?P<line>\d+): error: (?P<message>.*)$")


@pytest.fixture(scope="module")
def errors() -> dict[tuple[str, int], list[str]]:
    """mypy's errors for both files, by (file name, line)."""
    result = subprocess.run(
        [sys.executable, "-m", "mypy", "--strict", "--config-file", str(ROOT / "pyproject.toml"),
         "--no-pretty", "--no-error-summary", str(MISTAKES), str(USAGE)],
        cwd=ROOT, capture_output=True, text=True, timeout=170, check=False,
    )  # fmt: skip
    assert result.returncode in (0, 1), result.stdout + result.stderr  # 2: mypy itself failed
    found: dict[tuple[str, int], list[str]] = {}
    for line in result.stdout.splitlines():
        if match := _ERROR.match(line):
            key = (Path(match["path"]).name, int(match["line"]))
            found.setdefault(key, []).append(match["message"])
    return found


def _expected() -> list[tuple[int, str]]:
    tagged = []
    for number, line in enumerate(MISTAKES.read_text().splitlines(), start=1):
        if "# E: " in line:
            tagged.append((number, line.split("# E: ", 1)[1].strip()))
    return tagged


def test_the_mistakes_file_tags_mistakes() -> None:
    assert len(_expected()) >= 10


@pytest.mark.parametrize(("line", "fragment"), _expected(), ids=lambda v: str(v)[:40])
def test_each_mistake_is_reported_at_its_line(
    errors: dict[tuple[str, int], list[str]], line: int, fragment: str
) -> None:
    messages = errors.get((MISTAKES.name, line), [])
    assert any(fragment in m for m in messages), f"line {line}: {fragment!r} not in {messages}"


def test_nothing_else_in_the_mistakes_file_is_reported(
    errors: dict[tuple[str, int], list[str]],
) -> None:
    tagged = {line for line, _ in _expected()}
    untagged = {k: v for k, v in errors.items() if k[0] == MISTAKES.name and k[1] not in tagged}
    assert untagged == {}


def test_correct_usage_is_clean(errors: dict[tuple[str, int], list[str]]) -> None:
    assert {k: v for k, v in errors.items() if k[0] == USAGE.name} == {}
