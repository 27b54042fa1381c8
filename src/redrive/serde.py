"""Key and value deserializers: bytes (default), str, json, or your own function."""

from __future__ import annotations

import json
from collections.abc import Callable
from typing import Any, Literal

from redrive.errors import ConfigError

Deserializer = Callable[[bytes | None], Any]
"""Your own decoder: the raw bytes of a key or value (None for a null one) to anything."""

DeserializerName = Literal["bytes", "str", "json"]
"""A built-in decoder: "bytes" (as is), "str" (UTF-8) or "json"."""

DeserializerOption = DeserializerName | Deserializer
"""What a listener's ``key_deserializer`` and ``value_deserializer`` accept."""


def _bytes(data: bytes | None) -> Any:
    return data


def _str(data: bytes | None) -> Any:
    return None if data is None else data.decode("utf-8")


def _json(data: bytes | None) -> Any:
    return None if data is None else json.loads(data)


BUILT_IN: dict[str, Deserializer] = {"bytes": _bytes, "str": _str, "json": _json}


def check_deserializer(option: str, value: object) -> None:
    """Raise ``ConfigError`` unless ``value`` is a built-in name or a decoding function."""
    if value is str or value is bytes:  # str(b"x") is "b'x'": callable, and wrong
        raise ConfigError(
            option, f"must be one of {sorted(BUILT_IN)} or a function, got the class "
            f"{value.__name__}; use the name {value.__name__!r}",
        )  # fmt: skip
    if callable(value):
        return
    if not isinstance(value, str) or value not in BUILT_IN:
        got = repr(value) if isinstance(value, str) else f"{value!r} (type {type(value).__name__})"
        raise ConfigError(option, f"must be one of {sorted(BUILT_IN)} or a function, got {got}")


def resolve(option: str, value: DeserializerOption) -> Deserializer | None:
    """A deserializer from a built-in name or a callable; None for plain bytes (no work)."""
    check_deserializer(option, value)
    if callable(value):
        return value
    return None if value == "bytes" else BUILT_IN[value]
