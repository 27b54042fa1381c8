"""Records a handler writes: it returns them, redrive produces them.

A handler (record or batch listener) returns an ``Output``, or a list or tuple of them, and
redrive writes them::

    @app.listener("orders", commit=Commit.transaction(), value_deserializer="json")
    def bill(msg: Message) -> list[Output]:
        return [Output("invoices", key=msg.raw_key, value=invoice_for(msg.value))]

With ``Commit.transaction()`` the outputs, the dead letters and the consumer's positions
commit in one Kafka transaction: a ``read_committed`` reader sees each output once. With any
other commit policy they are idempotent produces that the broker confirms before the
positions of their records are committed (at-least-once: a crash between the two writes
them again). A handler returning ``None`` writes nothing; other return values are ignored,
as they always were.
"""

from __future__ import annotations

import inspect
import re
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from typing import Any

Header = tuple[str, bytes | None]


@dataclass(frozen=True, slots=True)
class Output:
    """One record to write: ``topic``, ``value`` and ``key`` (bytes, or str written as
    UTF-8), ``headers``, and ``partition`` (None: the producer's partitioner picks one from
    the key, so records with the same key keep their order)."""

    topic: str
    value: bytes | str | None = None
    key: bytes | str | None = None
    headers: Sequence[Header] = ()
    partition: int | None = None

    def __post_init__(self) -> None:
        if not isinstance(self.topic, str) or not self.topic:
            raise TypeError(f"Output.topic must be a non-empty str, got {self.topic!r}")


def outputs_of(result: object) -> Sequence[Output]:
    """The outputs in a handler's return value: an ``Output``, or a list or tuple of them.
    Anything else is no output; a list that mixes outputs with other values is a mistake."""
    if result is None:
        return ()
    if isinstance(result, Output):
        return (result,)
    if isinstance(result, list | tuple) and result and isinstance(result[0], Output):
        for item in result:
            if not isinstance(item, Output):
                raise TypeError(
                    f"a handler returned a list of Output with {item!r} in it: return only "
                    "Output records (or None)"
                )
        return result
    return ()


def declares_outputs(handler: Callable[..., Any]) -> bool:
    """True when `handler`'s return annotation names ``Output`` (``-> Output``,
    ``-> list[Output]``, ``-> "Output | None"``...)."""
    try:
        returns = inspect.signature(handler).return_annotation
    except (TypeError, ValueError):
        return False
    if returns is inspect.Signature.empty:
        return False
    return (
        re.search(r"\bOutput\b", returns if isinstance(returns, str) else repr(returns)) is not None
    )


def encoded(data: bytes | str | None) -> bytes | None:
    return data.encode() if isinstance(data, str) else data
