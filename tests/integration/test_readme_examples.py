"""The README's first example and its Listeners example run as written against a broker.

Each runs as a script, with the address from ``REDRIVE_BOOTSTRAP_SERVERS``; its guarded
``app.run()`` is replaced by a bounded run: start, wait until every listener's group has
committed the end of its topics, stop.
"""

from __future__ import annotations

import json
import re
from pathlib import Path

import pytest

from redrive import App, admin

from .helpers import wait_for

pytestmark = pytest.mark.integration

README = Path(__file__).parents[2] / "README.md"


def _block(after: str) -> str:
    text = README.read_text()
    start = text.index(after)
    return re.search(r"```python\n(.*?)```", text[start:], flags=re.S).group(1)  # type: ignore[union-attr]


@pytest.fixture
def readme_topics(kafka: str) -> None:
    admin.create_topics(kafka, {"orders": 1, "payments": 1})


def _run_until_committed(self: App) -> None:
    self.start()
    try:
        for spec in self.specs:
            for topic in spec.topics:
                end = admin.end_offsets(self.bootstrap_servers, topic)
                wait_for(
                    lambda s=spec, t=topic, e=end: (
                        admin.committed_offsets(self.bootstrap_servers, s.group_id, t) == e
                    ),
                    what=f"{spec.group_id} to commit the end of {topic}",
                )
    finally:
        self.stop()
        self.join(60)


def _exec(source: str) -> dict[str, object]:
    """Run `source` as a script (its ``if __name__ == "__main__": app.run()`` included)."""
    namespace: dict[str, object] = {"__name__": "__main__"}
    exec(compile(source, "README.md", "exec"), namespace)
    return namespace


@pytest.fixture(autouse=True)
def _address_from_the_environment(kafka: str, monkeypatch: pytest.MonkeyPatch) -> None:
    """The examples leave the address out of the code: the environment gives it."""
    monkeypatch.setenv("REDRIVE_BOOTSTRAP_SERVERS", kafka)


def test_first_example_runs(kafka, readme_topics, monkeypatch, capsys) -> None:
    admin.produce(kafka, "orders", [json.dumps({"customer": "c0", "amount": 1})])
    monkeypatch.setattr(App, "run", _run_until_committed)
    _exec(_block("# redrive\n"))
    assert "{'customer': 'c0', 'amount': 1}" in capsys.readouterr().out


def test_listeners_example_runs(kafka, readme_topics, monkeypatch, tmp_path) -> None:
    orders = [{"customer": "c1", "amount": 9.5}, {"customer": "c1", "amount": 0.5},
              {"customer": "c2", "amount": 3}]  # fmt: skip
    admin.produce(kafka, "orders", [json.dumps(o) for o in orders])
    admin.produce(kafka, "payments", [b"p1"])
    monkeypatch.setattr(App, "run", _run_until_committed)
    monkeypatch.chdir(tmp_path)
    ns = _exec(_block("## Listeners\n"))
    totals = ns["totals"]
    assert isinstance(totals, dict)
    assert totals["c1"] == 10.0 and totals["c2"] == 3
    audit = (tmp_path / "audit.log").read_bytes().splitlines()
    assert b"p1" in audit and json.dumps(orders[0]).encode() in audit


def test_production_example_runs(kafka, readme_topics, monkeypatch) -> None:
    admin.produce(kafka, "orders", [json.dumps({"customer": "c3", "amount": 2})])
    monkeypatch.setattr(App, "run", _run_until_committed)
    ns = _exec(_block("## Running in production\n"))
    metrics = ns["metrics"]
    registry = metrics.registry  # type: ignore[attr-defined]
    assert registry.get_sample_value("redrive_records_handled_total", {"listener": "handle"}) >= 1
    assert ns["probes"].ready().detail == "stopping: handle"  # type: ignore[attr-defined]


def test_exactly_once_example_runs(kafka, readme_topics, monkeypatch) -> None:
    from collections import Counter

    from .txn import read

    admin.create_topics(kafka, {"invoices": 1})
    orders = [{"customer": "e1", "amount": 10}, {"customer": "e2", "amount": -1},
              {"customer": "e1", "amount": 5}]  # fmt: skip
    admin.produce(kafka, "orders", [json.dumps(o) for o in orders])
    monkeypatch.setattr(App, "run", _run_until_committed)
    _exec(_block("## Exactly once: outputs in Kafka transactions\n"))
    invoices = Counter(r.value() for r in read(kafka, "invoices") if r.key() in (b"e1", b"e2"))
    assert invoices == {b'{"customer": "e1", "due": 12.0}': 1, b'{"customer": "e1", "due": 6.0}': 1}
    dead = [r.value() for r in read(kafka, "orders-dlt")]
    assert dead.count(json.dumps(orders[1]).encode()) == 1
