"""Key and value deserializers: bytes (default), str, json, or your own function."""

from __future__ import annotations

import json
from collections.abc import Callable
from typing import Any

from redrive.errors import ConfigError

Deserializer = Callable[[bytes | None], Any]


def _bytes(data: bytes | None) -> Any:
    return data


def _str(data: bytes | None) -> Any:
    return None if data is None else data.decode("utf-8")


def _json(data: bytes | None) -> Any:
    return None if data is None else json.loads(data)


BUILT_IN: dict[str, Deserializer] = {"bytes": _bytes, "str": _str, "json": _json}


def resolve(name: str, value: str | Deserializer) -> Deserializer | None:
    """A deserializer from a built-in name or a callable; None for plain bytes (no work)."""
    if callable(value):
        return value
    if value not in BUILT_IN:
        raise ConfigError(name, f"must be one of {sorted(BUILT_IN)} or a function, got {value!r}")
    return None if value == "bytes" else BUILT_IN[value]
