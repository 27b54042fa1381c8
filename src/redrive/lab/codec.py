"""Events as JSON-ready dicts and back, for the lab's ``--json`` output and for events a
child process reports over a file."""

from __future__ import annotations

from dataclasses import dataclass, fields
from typing import Any

import redrive.events as events
from redrive.message import TopicPartition


@dataclass(frozen=True, slots=True)
class LabNote(events.Event):
    """Something the lab itself did to the run (killed a consumer, created a topic)."""

    text: str


def _kinds() -> dict[str, type[events.Event]]:
    # From the module namespaces, not Event.__subclasses__(): dataclass(slots=True) replaces
    # each class, and the replaced originals may still be listed as subclasses.
    found: dict[str, type[events.Event]] = {"LabNote": LabNote}
    for value in vars(events).values():
        if isinstance(value, type) and issubclass(value, events.Event):
            found[value.__name__] = value
    return found


def _encode(value: Any) -> Any:
    if isinstance(value, TopicPartition):
        return {"topic": value.topic, "partition": value.partition}
    if isinstance(value, tuple | list):
        return [_encode(v) for v in value]
    return value


def _decode(value: Any) -> Any:
    if isinstance(value, dict) and set(value) == {"topic", "partition"}:
        return TopicPartition(value["topic"], value["partition"])
    if isinstance(value, list):
        return tuple(_decode(v) for v in value)
    return value


def to_dict(event: events.Event) -> dict[str, Any]:
    """``{"kind": "Committed", "listener": ..., "ts": ..., <fields>}``."""
    out: dict[str, Any] = {"kind": event.kind}
    for f in fields(event):
        if not f.metadata.get("local"):  # records stay in the process
            out[f.name] = _encode(getattr(event, f.name))
    return out


def from_dict(data: dict[str, Any]) -> events.Event:
    """The event ``to_dict`` made; raises ValueError for an unknown kind."""
    kinds = _kinds()
    kind = data.get("kind")
    if kind not in kinds:
        raise ValueError(f"unknown event kind {kind!r}")
    return kinds[kind](**{k: _decode(v) for k, v in data.items() if k != "kind"})
