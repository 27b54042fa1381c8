"""Dead-letter headers (D2), with Spring Kafka's names and binary encodings.

Spring Kafka's DeadLetterPublishingRecoverer writes ``kafka_dlt-original-partition`` as a
4-byte big-endian int, ``-offset`` and ``-timestamp`` as 8-byte big-endian longs, and the
rest as UTF-8 text. redrive adds ``redrive_dlt-attempts`` (4-byte int) and
``redrive_dlt-first-failure`` (8-byte long, epoch milliseconds).
"""

from __future__ import annotations

import struct
import traceback
from collections.abc import Iterable
from typing import Any

ORIGINAL_TOPIC = "kafka_dlt-original-topic"
ORIGINAL_PARTITION = "kafka_dlt-original-partition"
ORIGINAL_OFFSET = "kafka_dlt-original-offset"
ORIGINAL_TIMESTAMP = "kafka_dlt-original-timestamp"
ORIGINAL_TIMESTAMP_TYPE = "kafka_dlt-original-timestamp-type"
ORIGINAL_CONSUMER_GROUP = "kafka_dlt-original-consumer-group"
EXCEPTION_FQCN = "kafka_dlt-exception-fqcn"
EXCEPTION_CAUSE_FQCN = "kafka_dlt-exception-cause-fqcn"
EXCEPTION_MESSAGE = "kafka_dlt-exception-message"
EXCEPTION_STACKTRACE = "kafka_dlt-exception-stacktrace"
ATTEMPTS = "redrive_dlt-attempts"
FIRST_FAILURE = "redrive_dlt-first-failure"

INT_HEADERS = {ORIGINAL_PARTITION, ATTEMPTS}
LONG_HEADERS = {ORIGINAL_OFFSET, ORIGINAL_TIMESTAMP, FIRST_FAILURE}
STACKTRACE_LIMIT = 8192
TIMESTAMP_TYPES = {0: "NO_TIMESTAMP_TYPE", 1: "CreateTime", 2: "LogAppendTime"}

# Headers a dead-letter write replaces rather than piles up (a replayed record that fails
# again gets fresh ones).
REPLACED_PREFIXES = ("kafka_dlt-", "redrive_dlt-")


def fqcn(exc_type: type[BaseException]) -> str:
    module = exc_type.__module__
    return exc_type.__qualname__ if module == "builtins" else f"{module}.{exc_type.__qualname__}"


def _name(exc: BaseException) -> str:
    # An exception standing for one seen by another process carries that one's type name.
    name = getattr(exc, "fqcn", None)
    return name if isinstance(name, str) and name else fqcn(type(exc))


def root_cause(exc: BaseException) -> BaseException:
    seen = {id(exc)}
    while True:
        nxt = exc.__cause__ or (None if exc.__suppress_context__ else exc.__context__)
        if nxt is None or id(nxt) in seen:
            return exc
        seen.add(id(nxt))
        exc = nxt


def stacktrace(exc: BaseException, limit: int = STACKTRACE_LIMIT) -> str:
    # Long lines (huge exception messages) are cut first, so the frames and the exception
    # types survive the overall cap.
    line_limit = max(limit // 8, 80)
    text = "".join(
        line if len(line) <= line_limit else f"{line[:line_limit]}...(truncated)\n"
        for chunk in traceback.format_exception(exc)
        for line in chunk.splitlines(keepends=True)
    )
    if len(text) > limit:  # keep the end: the innermost frames and the message
        text = "...(truncated)\n" + text[-(limit - 16) :]
    return text


def dead_letter_headers(
    *,
    topic: str,
    partition: int,
    offset: int,
    timestamp: int,
    timestamp_type: int,
    group_id: str,
    exc: BaseException,
    attempts: int,
    first_failure: float,
    original: Iterable[tuple[str, bytes | None]] = (),
) -> list[tuple[str, bytes]]:
    """The headers of a dead letter: the original ones (less old dead-letter headers), then
    origin and cause."""
    kept = [
        (k, v if v is not None else b"") for k, v in original if not k.startswith(REPLACED_PREFIXES)
    ]
    cause = root_cause(exc)
    return [
        *kept,
        (ORIGINAL_TOPIC, topic.encode()),
        (ORIGINAL_PARTITION, struct.pack(">i", partition)),
        (ORIGINAL_OFFSET, struct.pack(">q", offset)),
        (ORIGINAL_TIMESTAMP, struct.pack(">q", timestamp)),
        (ORIGINAL_TIMESTAMP_TYPE, TIMESTAMP_TYPES.get(timestamp_type, "CreateTime").encode()),
        (ORIGINAL_CONSUMER_GROUP, group_id.encode()),
        (EXCEPTION_FQCN, _name(exc).encode()),
        (EXCEPTION_CAUSE_FQCN, _name(cause).encode()),
        (EXCEPTION_MESSAGE, str(exc).encode()[:4096]),
        (EXCEPTION_STACKTRACE, stacktrace(exc).encode()),
        (ATTEMPTS, struct.pack(">i", attempts)),
        (FIRST_FAILURE, struct.pack(">q", int(first_failure * 1000))),
    ]


def decode(headers: Iterable[tuple[str, bytes | None]]) -> dict[str, Any]:
    """Decode the dead-letter headers (last one wins) into Python values."""
    out: dict[str, Any] = {}
    for k, v in headers:
        if not k.startswith(REPLACED_PREFIXES) or v is None:
            continue
        if k in INT_HEADERS and len(v) == 4:
            out[k] = struct.unpack(">i", v)[0]
        elif k in LONG_HEADERS and len(v) == 8:
            out[k] = struct.unpack(">q", v)[0]
        else:
            out[k] = v.decode("utf-8", errors="replace")
    return out
