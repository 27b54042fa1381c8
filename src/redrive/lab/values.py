"""Values as a person writes them, for check tables, verdict lines and labels.

``[b'm2']`` reads ``[m2]``, ``{0: 3}`` of topic orders reads ``{orders[0]: 3}``, ``None``
reads ``none``, ``('consumer-1', 1)`` reads ``(consumer-1, 1)``::

    >>> plain([b"m2"]), plain({0: 3}, partitions_of="orders"), plain(None)
    ('[m2]', '{orders[0]: 3}', 'none')
"""

from __future__ import annotations

from typing import Any


def plain(value: Any, *, partitions_of: str | None = None) -> str:
    """`value` without Python's quotes and byte prefixes. With `partitions_of` (a topic's
    short name), integer keys of a dict are that topic's partitions."""
    if value is None:
        return "none"
    if isinstance(value, bool):
        return "yes" if value else "no"
    if isinstance(value, bytes):
        return _bytes(value)
    if isinstance(value, float):
        return f"{value:g}"
    if isinstance(value, str | int):
        return str(value)
    if isinstance(value, dict):
        items = ", ".join(
            f"{_key(k, partitions_of)}: {plain(v, partitions_of=partitions_of)}"
            for k, v in value.items()
        )
        return "{" + items + "}"
    if isinstance(value, tuple):
        return "(" + ", ".join(plain(v, partitions_of=partitions_of) for v in value) + ")"
    if isinstance(value, list | set | frozenset):
        ordered = sorted(value, key=str) if isinstance(value, set | frozenset) else value
        return "[" + ", ".join(plain(v, partitions_of=partitions_of) for v in ordered) + "]"
    return str(value)


def _key(key: Any, partitions_of: str | None) -> str:
    if partitions_of is not None and isinstance(key, int) and not isinstance(key, bool):
        return f"{partitions_of}[{key}]"
    return plain(key)


def _bytes(value: bytes) -> str:
    """Text when the bytes are printable UTF-8, else hex (``0x00000004``)."""
    try:
        text = value.decode("utf-8")
    except UnicodeDecodeError:
        return "0x" + value.hex()
    return text if text.isprintable() else "0x" + value.hex()
