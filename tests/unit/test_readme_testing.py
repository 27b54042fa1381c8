"""The README's "Testing your listeners" example runs as written, and its test passes."""

from __future__ import annotations

import re
from pathlib import Path

README = Path(__file__).parents[2] / "README.md"


def _example() -> str:
    text = README.read_text()
    section = text[text.index("## Testing your listeners") :]
    found = re.search(r"```python\n(.*?)```", section, flags=re.S)
    assert found, "the section shows an example"
    return found.group(1)


def test_the_testing_example_passes() -> None:
    namespace: dict[str, object] = {"__name__": "readme_testing"}
    exec(compile(_example(), "README.md", "exec"), namespace)
    tests = [f for name, f in namespace.items() if name.startswith("test_") and callable(f)]
    assert len(tests) == 1
    for test in tests:
        test()
