"""The examples of the README's "Retries and dead letters" section run (imported as a
module, so their guarded ``app.run()`` does not block on a broker), and the defaults it shows
are the real ones."""

from __future__ import annotations

import re
from pathlib import Path

import pytest

from redrive import App, Retry
from redrive.recover.breaker import default_recoverer

README = Path(__file__).parents[2] / "README.md"


def section() -> str:
    text = README.read_text()
    start = text.index("## Retries and dead letters\n")
    return text[start : text.index("\n## ", start + 1)]


BLOCKS = re.findall(r"```python\n(.*?)```", section(), flags=re.S)


def test_the_section_has_examples() -> None:
    assert len(BLOCKS) >= 6


@pytest.mark.parametrize("source", BLOCKS, ids=[f"example{i}" for i in range(len(BLOCKS))])
def test_example_runs_up_to_app_run(source: str) -> None:
    assert source.count("app.run()") <= 1
    # imported, not run as a script: the guarded app.run() does not block
    namespace: dict[str, object] = {"__name__": "readme_example"}
    exec(compile(source, "README.md", "exec"), namespace)
    app = namespace.get("app")
    if app is not None:
        assert isinstance(app, App)
        assert app.specs, "the example registers no listener"
        for spec in app.specs:
            assert spec.retry.describe() and spec.recoverer.describe()


def test_the_start_up_log_shown_is_the_real_one() -> None:
    text = section()
    assert f"retry={Retry().describe()} (default)" in text
    assert f"recoverer={default_recoverer().describe()} (default)" in text
